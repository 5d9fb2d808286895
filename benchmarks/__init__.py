"""taskscope's benchmark suite: what taskscope costs, next to plain asyncio and its peers.

Run ``python -m benchmarks --help``. Every measurement is one fresh process
(``python -m benchmarks.worker``); the parent interleaves configurations per repetition
and compares medians. See docs/benchmarks.md.
"""
