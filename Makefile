# Everything a fresh machine needs, from Python 3.11+ alone: `make serve`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test bench stubs lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tollgate needs Python 3.11 or newer (PYTHON=$(PYTHON))")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## serve: install, then run the service on 127.0.0.1:50051 with the bundled rulesets and sample data
serve: $(STAMP)
	$(BIN)/tollgate serve $(ARGS)

## test: install, then check the stubs are fresh, lint, type-check and run the whole test suite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/tollgate rules test
	$(BIN)/pytest -n auto $(ARGS)  # one pytest-xdist worker per core: serially the suite takes 7 of its 10 minutes

## bench: the benchmarks in benchmarks/ (pytest-benchmark)
bench: $(STAMP)
	$(BIN)/pytest benchmarks $(ARGS)

## stubs: regenerate the protobuf/gRPC stubs in tollgate/api/ from proto/
stubs: $(STAMP)
	$(BIN)/python scripts/generate_stubs.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
