# Everything a fresh clone needs: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test test-fast bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# What the benchmarks compare against (the CPU build of PyTorch), only for `make bench`. Where
# the newest torch pip can see is a CUDA build (PyPI on Linux), name PyTorch's CPU index:
#   make bench TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_SPEC := 'torch>=2.2,<2.14'
$(BENCH_STAMP): $(STAMP)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet $(TORCH_SPEC) --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(PY) -m hil.demo

# Both tiers: the fast one (in-process) and the system one (sockets, subprocesses, a browser),
# on pytest workers (pytest-xdist), a test file to a worker so module fixtures run once. One
# worker more than the machine has cores: most system tests wait on real time now and then (agents
# starting, a serial line at its baud rate, a browser), which the others use. On this 2-core CI:
# 771 s with two workers, 604 s with three, 621 s with four, every test passing each time. The cores
# as a container's CPU quota has them, at most eight workers (scripts/test_workers.sh).
# TEST_WORKERS=0 runs them in this process, one after the other.
ifeq ($(origin TEST_WORKERS),undefined)
TEST_WORKERS := $(shell sh scripts/test_workers.sh)
endif
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# The project's modules are compiled once first: where PYTHONDONTWRITEBYTECODE is set (as on this CI),
# each of the hundreds of agents, workers and CLIs the system tests start compiled them again. Best
# effort: a file that does not compile is said here and again, with its line, by the tests.
test: $(STAMP)
	bash scripts/ensure_test_tools.sh
	-$(PY) -m compileall -q -j 0 flight ground hil bench deploy scripts tests
	$(PY) -m pytest -q $(PYTEST_PAR) --durations=15

# The fast tier alone: no sockets, subprocesses or browser (tests/conftest.py).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not system" $(PYTEST_PAR)

bench: $(BENCH_STAMP)
	bash scripts/ensure_test_tools.sh
	@for m in bench/*.py; do \
	  n=$$(basename $$m .py); case $$n in _*) continue;; esac; \
	  echo "== bench.$$n"; $(PY) -m bench.$$n || exit 1; \
	done

docs: $(STAMP)
	$(PY) -m flight.cli dictionary --markdown > docs/dictionary.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
