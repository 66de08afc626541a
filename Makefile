# filterd — see README.md.  `make run` and `make test` work from a clean clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CONFIG ?= config/filterd.yaml

.PHONY: run test bench venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m filterd run --config $(CONFIG)

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) tests/bench/run_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
