# Two entry points for a fresh machine with only Python and make:
#   make demo   install into .venv and run the demo service under taskscope
#   make test   install into .venv and run lint, type checks and every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest pytest-pure test-versions bench bench-check bench-smoke bench-instructions clean

# The stamp file is rebuilt whenever the project's own dependency list or its C
# accelerators change (an editable install compiles them into src/).
$(VENV)/.installed: pyproject.toml setup.py src/taskscope/_core/_speedups.c \
		src/taskscope/_core/_lock_speedups.c \
		src/taskscope/_core/_trio_speedups.c src/taskscope/_core/_cshared.h \
		src/taskscope/_core/_cframes.h src/taskscope/_core/_cmethods.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/taskscope demo

test: lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed
	$(BIN)/mypy

pytest: $(VENV)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

# The same suite on the pure-Python hot path (what runs where no C compiler is).
pytest-pure: $(VENV)/.installed
	TASKSCOPE_PURE_PYTHON=1 $(BIN)/pytest $(PYTEST_ARGS)

# The suite on every CPython this project supports (3.11, 3.12, 3.13), each in its own
# venv; scripts/find-python locates them on PATH or under pyenv.
test-versions:
	@for v in 3.11 3.12 3.13; do \
	  py=$$(scripts/find-python $$v) || exit 1; \
	  echo "== CPython $$v ($$py)"; \
	  $(MAKE) --no-print-directory pytest PYTHON=$$py VENV=.venv-$$v || exit 1; \
	done

# The peers (aiomonitor, OpenTelemetry) come from the bench extra, installed on demand.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-check: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks --check $(BENCH_ARGS)

bench-smoke: $(VENV)/.installed
	$(BIN)/python -m benchmarks --smoke $(BENCH_ARGS)

# Instructions per operation under valgrind's callgrind: deterministic, for finding costs.
bench-instructions: $(VENV)/.installed
	$(BIN)/python -m benchmarks.instructions $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-3.* .cache .mypy_cache .ruff_cache
