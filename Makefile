# agentdb — developer commands. `make dev` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
export PYTHONPATH := $(CURDIR)/layers/core:$(CURDIR)
export PYTHONDONTWRITEBYTECODE :=

.PHONY: venv dev token dbs test lint typecheck unit build bench clean browser-deps screenshots
.PHONY: reconcile rotate-keys
.PHONY: openapi

$(BIN)/.installed: requirements-dev.txt layers/core/requirements.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 12) else "agentdb needs Python 3.11 or 3.12 (Lambda runs 3.12); set PYTHON=python3.12")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(BIN)/.installed

dev: venv  ## run the API locally on an embedded Postgres
	$(BIN)/python -m local.dev --port $(PORT)

token: venv  ## print a JWT the local gateway accepts: make token SUB=<userId> [SCOPE=agentdb/admin]
	@$(BIN)/python -m local.token --sub "$(SUB)" $(if $(SCOPE),--scope "$(SCOPE)")

dbs: venv  ## list the tenant databases and roles on the local server
	@$(BIN)/python -m local.dbs

reconcile: venv  ## reconcile the local stack's tenant databases with the control plane: make reconcile [DRY_RUN=1]
	@$(BIN)/python -m local.reconcile $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

rotate-keys: venv  ## re-encrypt every stored connection URI under the current key (README "Key rotation")
	@$(BIN)/python -m local.rotate_keys $(if $(LIMIT),--limit $(LIMIT))

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv browser-deps
	$(BIN)/pytest -q

test: lint typecheck unit  ## everything CI runs for the code

# The console's browser tests drive Debian's chromium (Playwright's own browser download is not used).
# Installed with apt when missing (CI runs as root); elsewhere install chromium yourself or set CHROMIUM.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || test -n "$$CHROMIUM" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  else echo "the browser tests need chromium: apt-get install chromium, or set CHROMIUM=/path/to/chromium" >&2; exit 1; fi; }

screenshots: venv browser-deps  ## the console's screenshots in docs/ (from its browser tests)
	CONSOLE_SCREENSHOTS=$(CURDIR)/docs $(BIN)/pytest -q tests/browser

openapi: venv  ## regenerate functions/api_docs/openapi.json from the handlers (a test fails when it is stale)
	$(BIN)/python -m local.openapi

bench: venv
	$(BIN)/python -m bench.run $(BENCH)

clean:
	rm -rf $(VENV) .venv-sam .aws-sam build

include mk/build.mk
