# The two quick-start commands: `make pipeline` and `make test`. Each creates the virtual environment
# (.venv) from pyproject.toml and requirements/constraints.txt when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup pipeline test bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mgicon needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -e ".[test,workflow]"
	@touch $(STAMP)

pipeline: setup
	$(VENV)/bin/snakemake
	$(VENV)/bin/snakemake --report results/report.html

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# one worker per core, a module per worker at a time (module fixtures are built once), one thread each
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile

bench: setup
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/evaluate.py

clean-venv:
	rm -rf $(VENV)
