# The two quickstart commands: `make demo` and `make test`. `make test-slow` runs the tests marked slow
# (trainings to convergence, every benchmark's --quick run), which `make test` leaves out; CI runs both.
# Each creates .venv with Python 3.11, installs divgen with the pinned
# versions of constraints.txt (torch 2.13.0, CPU build) and runs its job.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/divgen demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

clean-venv:
	rm -rf $(VENV)
