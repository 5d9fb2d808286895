"""Build the optional C accelerators; everything else is in pyproject.toml.

``optional=True``: where an extension cannot be compiled (no C compiler, no Python
headers), setuptools warns and installs taskscope as pure Python, which behaves the
same and is slower (docs/benchmarks.md).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "taskscope._core._speedups",
            ["src/taskscope/_core/_speedups.c"],
            depends=[
                "src/taskscope/_core/_cshared.h",
                "src/taskscope/_core/_cframes.h",
                "src/taskscope/_core/_cmethods.h",
            ],
            optional=True,
        ),
        Extension(
            "taskscope._core._lock_speedups",
            ["src/taskscope/_core/_lock_speedups.c"],
            depends=["src/taskscope/_core/_cshared.h"],
            optional=True,
        ),
        Extension(
            "taskscope._core._trio_speedups",
            ["src/taskscope/_core/_trio_speedups.c"],
            depends=[
                "src/taskscope/_core/_cshared.h",
                "src/taskscope/_core/_cframes.h",
                "src/taskscope/_core/_cmethods.h",
            ],
            optional=True,
        ),
    ]
)
