# The two commands of the quick start: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell sha1sum pyproject.toml | cut -c1-12)
# Debian packages the test suite needs (installed only when missing).
TEST_DEBS := chromium
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Interop runtimes: the 1.x line of the official Python MCP SDK cannot share a venv with 2.x, and
# the TypeScript client and a third-party stdio server come from npm (versions pinned by lockfiles).
MCP1_VENV := .venv-mcp1
MCP1_STAMP := $(MCP1_VENV)/.installed-mcp1
# fastmcp (its client, on mcp 2.x) in a venv of its own: it pulls in a tree the IdP does not need.
FASTMCP_VENV := .venv-fastmcp
FASTMCP_STAMP := $(FASTMCP_VENV)/.installed-fastmcp
NPM_DIRS := tests/interop/ts tests/gateway/npm tests/conformance tests/idp/upstream_oidc tests/browser/npm
NPM_STAMPS := $(foreach d,$(NPM_DIRS),$(d)/node_modules/.package-lock.json)

.PHONY: run test bench install install-dev system-deps interop-deps screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The IdP, the SDK, cbst-gateway, and the official MCP SDK that examples/server.py is built on.
$(STAMP): | $(BIN)/python
	$(BIN)/pip install -q -e '.[mcp]'
	touch $@

$(DEV_STAMP): | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

## make run: start the IdP on the embedded default (SQLite ./idp.db, keystore ./keys), issuer http://127.0.0.1:8000
run: install
	$(BIN)/idp serve

system-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get install -y -q --no-install-recommends $$missing || (apt-get update -q && apt-get install -y -q --no-install-recommends $$missing)) >/dev/null; \
	fi

$(MCP1_STAMP):
	$(PYTHON) -m venv $(MCP1_VENV)
	$(MCP1_VENV)/bin/pip install -q 'mcp>=1.10,<2' 'httpx>=0.28' 'cryptography>=44'
	touch $@

$(FASTMCP_STAMP):
	$(PYTHON) -m venv $(FASTMCP_VENV)
	$(FASTMCP_VENV)/bin/pip install -q 'fastmcp-slim[client]==4.1.6'
	touch $@

%/node_modules/.package-lock.json: %/package-lock.json
	@command -v npm >/dev/null || { echo "installing Node.js and npm"; apt-get install -y -q nodejs npm >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm >/dev/null); }
	cd $* && npm ci --no-audit --no-fund --loglevel=error
	touch $@

interop-deps: $(MCP1_STAMP) $(FASTMCP_STAMP) $(NPM_STAMPS)

## make test: the whole suite, on SQLite and on the local PostgreSQL
test: install-dev system-deps interop-deps
	$(BIN)/ruff check idp sdk gateway
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

BENCH_STAMP := $(VENV)/.installed-bench-$(shell sha1sum pyproject.toml | cut -c1-12)
$(BENCH_STAMP): | $(BIN)/python
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

## make bench: token endpoint and authorization code + refresh vs node-oidc-provider, JWS cost vs raw primitives, SDK verification, middleware overhead
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/sdk_verify.py
	$(BIN)/python bench/mcp_overhead.py

## make screenshots: regenerate docs/screenshots/ (the IdP's pages in the system Chromium)
screenshots: install-dev system-deps
	PYTHONPATH=. $(BIN)/python tests/browser/screenshots.py

clean:
	rm -rf $(VENV) $(MCP1_VENV) $(FASTMCP_VENV) .pytest_cache .hypothesis $(foreach d,$(NPM_DIRS),$(d)/node_modules)
