# Two commands on a fresh Debian machine: `make demo` and `make test`.
# Each makes sure PostgreSQL and RabbitMQ are up (installing them if missing), creates the
# virtualenv and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test demo services venv lint bench asyncapi clean

test: services $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

demo: services $(STAMP)
	$(BIN)/integration-service migrate
	$(BIN)/integration-service demo

services:
	@bash scripts/ensure-services.sh

venv: $(STAMP)

# Re-installs when pyproject.toml changes; a half-made venv (no pip) is made again.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python && $(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check service consumers providers sandbox tests bench
	$(BIN)/lint-imports

bench: services $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

asyncapi: $(STAMP)
	$(BIN)/integration-service asyncapi > asyncapi.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
