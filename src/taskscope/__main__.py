"""``python -m taskscope``: the same command line as ``taskscope``."""

import sys

from taskscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
