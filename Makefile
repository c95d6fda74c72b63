# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint check bench mutate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/audit-watch demo

# Branch coverage is measured and printed; below `fail_under` (pyproject.toml) the run fails.
test: lint $(STAMP)
	$(BIN)/python -m pytest -q --cov --cov-report=term:skip-covered

# Lint and import order, types, and the layering of the stages (see ARCHITECTURE.md).
lint: $(STAMP)
	$(BIN)/ruff check audit_watch tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

check: $(STAMP)
	$(BIN)/audit-watch check

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_rules.py

# Mutation testing of the alert-state path (not part of `make test`; about an hour on two
# cores). Mutants that survive name a gap in the tests, or are equivalent: `mutmut results`,
# `mutmut show NAME`. Niced: it keeps both cores busy.
mutate: $(STAMP)
	rm -rf mutants
	nice -n 10 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

clean:
	rm -rf demo/ .pytest_cache mutants/ .coverage .coverage.*
