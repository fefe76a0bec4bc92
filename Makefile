# Everything a fresh clone needs: `make demo` and `make test` create .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m hil.demo

test: $(STAMP)
	bash scripts/ensure_test_tools.sh
	$(PY) -m pytest -q

bench: $(STAMP)
	bash scripts/ensure_test_tools.sh
	@for m in bench/*.py; do \
	  n=$$(basename $$m .py); case $$n in _*) continue;; esac; \
	  echo "== bench.$$n"; $(PY) -m bench.$$n || exit 1; \
	done

docs: $(STAMP)
	$(PY) -m flight.cli dictionary --markdown > docs/dictionary.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
