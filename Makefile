# agentdb — developer commands. `make dev` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
export PYTHONPATH := $(CURDIR)/layers/core:$(CURDIR)
export PYTHONDONTWRITEBYTECODE :=

.PHONY: venv dev token dbs test lint typecheck unit build bench clean

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

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q

test: lint typecheck unit  ## everything CI runs for the code

bench: venv
	$(BIN)/python -m bench.run $(BENCH)

clean:
	rm -rf $(VENV) .venv-sam .aws-sam build

include mk/build.mk
