# Two commands: `make demo` runs the whole system on embedded defaults; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE_CLIENT := tests/integration/opcua_node_client
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml frontend/package-lock.json $(NODE_CLIENT)/package-lock.json | sha256sum | cut -c1-12)
# Compiled bytecode makes imports ~3x faster; some environments switch it off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test install lock lint clean

demo: install
	$(BIN)/gasops demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.lock pyproject.toml frontend/package-lock.json $(NODE_CLIENT)/package-lock.json
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4"
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --quiet -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --quiet --no-deps -e .
	@# Browser assets (GraphiQL, React) from the npm registry, served locally, never from a CDN;
	@# and node-opcua, the independent OPC UA client the integrator-server tests run.
	@if command -v npm >/dev/null; then \
		npm ci --prefix frontend --no-audit --no-fund --ignore-scripts --loglevel=error; \
		npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund --ignore-scripts --loglevel=error; \
	else echo "npm not found: GraphiQL's page will say its files are missing (the API works)"; fi
	rm -f $(VENV)/.installed-*
	touch $@

# Re-resolve the lock file after changing dependencies in pyproject.toml.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv>=0.4"
	$(BIN)/uv pip compile pyproject.toml --extra dev --quiet -o requirements.lock

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
