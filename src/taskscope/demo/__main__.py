"""``python -m taskscope.demo``: run the demo order service (about two seconds)."""

from taskscope.demo import main

if __name__ == "__main__":
    main()
