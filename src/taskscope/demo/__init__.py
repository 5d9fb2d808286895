"""The demo service: a small order pipeline with typical asyncio mistakes planted on purpose.

Run it under taskscope with ``taskscope demo`` (or ``taskscope run -m taskscope.demo``);
run it alone with ``python -m taskscope.demo``. taskscope treats this package as user
code, so its findings point at the lines below marked ``PLANTED MISTAKE``.
"""

from ._service import OrderService as OrderService
from ._service import main as main

__all__ = ["OrderService", "main"]
