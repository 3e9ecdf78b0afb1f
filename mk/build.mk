# `make build`: sam validate --lint, sam build (no Docker), then import every built function the way
# Lambda would (its code, the CoreLayer and the runtime's boto3 on the path, nothing else) under
# CPython 3.12. Included by the main Makefile (PYTHON, VENV, BIN come from there).
#
# aws-sam-cli and cfn-lint live in their own venv: their pins conflict with the dev venv's.

SAM_VENV       := .venv-sam
SAM_BIN        := $(SAM_VENV)/bin
SAM            := $(SAM_BIN)/sam
SAM_BUILD_DIR  := .aws-sam/build
SAM_LAYERS     := CoreLayer
# What the Lambda Python runtime provides on its own (the layer leaves it out): installed beside the
# sam venv only for the import check.
LAMBDA_RUNTIME_DIR  := $(SAM_VENV)/lambda-runtime
LAMBDA_RUNTIME_PKGS ?= boto3==1.44.5
# A python3.12 for the import check (and for sam's python3.12 runtime lookup). Override with
# `make build PYTHON312=/path/to/python3.12`; otherwise the first 3.12 found on PATH or under pyenv.
PYTHON312      ?= $(eval PYTHON312 := $(shell \
	for c in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 \
	         /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	  "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys.executable)' 2>/dev/null \
	    && break; \
	done))$(PYTHON312)
# sam must not see the dev PYTHONPATH the main Makefile exports; it needs no AWS account for these
# commands, only a region, and sends no telemetry. PATH gets a directory holding only python3.12 (sam's
# python builder looks for one as soon as a function has a requirements.txt). The layer Makefile runs pip
# with PYTHON: the sam venv's, a pip that is sure to exist.
SAM_ENV = env -u PYTHONPATH SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	PYTHON="$(CURDIR)/$(SAM_BIN)/python" \
	PATH="$(CURDIR)/$(SAM_VENV)/py312:$$PATH"

.PHONY: build sam-venv validate import-check py312

$(SAM_BIN)/.installed: requirements-build.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "sam needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_BIN)/pip install --quiet --upgrade pip
	$(SAM_BIN)/pip install --quiet -r requirements-build.txt
	rm -rf $(LAMBDA_RUNTIME_DIR)
	$(SAM_BIN)/pip install --quiet --no-warn-conflicts --no-compile --target $(LAMBDA_RUNTIME_DIR) \
		--implementation cp --python-version 3.12 --only-binary=:all: $(LAMBDA_RUNTIME_PKGS)
	@touch $@

sam-venv: $(SAM_BIN)/.installed

py312: $(SAM_BIN)/.installed
	@test -n "$(PYTHON312)" && "$(PYTHON312)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || { \
	  echo "error: no Python 3.12 found$(if $(PYTHON312), ($(PYTHON312) is not 3.12)) - Lambda runs python3.12." >&2; \
	  echo "       Install one (e.g. pyenv install 3.12) or pass PYTHON312=/path/to/python3.12." >&2; \
	  exit 1; }
	@mkdir -p $(SAM_VENV)/py312
	@ln -sfn "$(PYTHON312)" $(SAM_VENV)/py312/python3.12

validate: $(SAM_BIN)/.installed
	$(SAM_ENV) $(SAM) validate --lint --template-file template.yaml

build: validate py312
	$(SAM_ENV) $(SAM) build --template-file template.yaml --cached --parallel
	@$(MAKE) --no-print-directory import-check

import-check: py312
	@test -d $(SAM_BUILD_DIR) || { echo "error: $(SAM_BUILD_DIR) is missing: run make build" >&2; exit 1; }
	@layer_path=""; for l in $(SAM_LAYERS); do layer_path="$$layer_path:$(CURDIR)/$(SAM_BUILD_DIR)/$$l/python"; done; \
	status=0; checked=0; \
	for dir in $(SAM_BUILD_DIR)/*/; do \
	  fn=$$(basename "$$dir"); \
	  case " $(SAM_LAYERS) " in *" $$fn "*) continue;; esac; \
	  checked=$$((checked + 1)); \
	  if env -i PATH=/usr/bin:/bin HOME="$$HOME" LANG=C.UTF-8 \
	       AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 POWERTOOLS_TRACE_DISABLED=true \
	       POWERTOOLS_SERVICE_NAME=agentdb POWERTOOLS_METRICS_NAMESPACE=agentdb \
	       PYTHONPATH="$(CURDIR)/$$dir$$layer_path:$(CURDIR)/$(LAMBDA_RUNTIME_DIR)" \
	       "$(CURDIR)/$(SAM_VENV)/py312/python3.12" -S -B -c \
	       'import importlib, pathlib, sys; [importlib.import_module(p.stem) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.py"))]; import app; sys.exit(0 if callable(getattr(app, "handler", None)) else "app.handler is not callable")' "$$dir"; \
	  then echo "import-check: $$fn ok (python3.12: every module, app.handler)"; \
	  else echo "import-check: $$fn FAILED: 'import app' in $$dir with the built layer (python3.12)" >&2; status=1; fi; \
	done; \
	test $$checked -gt 0 || { echo "import-check: no built function under $(SAM_BUILD_DIR)" >&2; exit 1; }; \
	if env -i PATH=/usr/bin:/bin HOME="$$HOME" LANG=C.UTF-8 AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
	     POWERTOOLS_TRACE_DISABLED=true PYTHONPATH="$${layer_path#:}:$(CURDIR)/$(LAMBDA_RUNTIME_DIR)" \
	     "$(CURDIR)/$(SAM_VENV)/py312/python3.12" -S -B -c \
	     'import importlib, pkgutil, agentdb; mods = [m.name for m in pkgutil.walk_packages(agentdb.__path__, "agentdb.")]; [importlib.import_module(m) for m in mods]; import mcp.client.streamable_http, aws_xray_sdk.core; print(f"import-check: CoreLayer ok (python3.12: {len(mods)} agentdb modules, mcp, aws_xray_sdk)")'; \
	then :; else echo "import-check: CoreLayer FAILED: a module of the layer does not import under python3.12" >&2; status=1; fi; \
	exit $$status
