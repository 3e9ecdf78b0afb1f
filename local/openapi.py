"""Build the one OpenAPI document of the whole HTTP API from the handlers' own models.

Every route in template.yaml is served by a function; a function with a ``<dir>_routes.py`` module holds a
Powertools resolver whose ``get_openapi_schema()`` describes its routes from the same pydantic models that
validate the requests (and the response models declared on each route). This gathers them into one
document, adds what no resolver describes (the MCP endpoint, the console's static files, the document
itself), and refuses to build when a template route is not described or a described route is not in the
template.

    python -m local.openapi           write functions/api_docs/openapi.json (served at GET /openapi.json)
    python -m local.openapi --check   exit 1 when the committed document differs from the code (CI runs this
                                      through tests/unit/test_openapi.py)
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from local.template import HttpRoute, load_template

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = REPO / "functions" / "api_docs" / "openapi.json"
TITLE = "agentdb"
VERSION = "1.0.0"
DESCRIPTION = (
    "The agentdb control plane: lifecycle (admin), SQL tools for agents, the database explorer, usage and"
    " budgets, and a standard MCP endpoint. Every route but the console and this document needs a JWT bearer"
    ' token; admin routes need the `agentdb/admin` scope. Answers are `{"success": true, "data": ...}` or'
    ' `{"success": false, "error": {"code", "message"}}`.'
)
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

# Routes answered without a Powertools resolver, described here by hand.
_JSON_RPC = {
    "type": "object",
    "description": "A JSON-RPC 2.0 message (or a batch) per the MCP specification",
    "additionalProperties": True,
}


def _mcp_not_allowed(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "tags": ["mcp"],
        "summary": summary,
        "description": "Per the MCP streamable HTTP transport, a server without streams or sessions answers 405.",
        "operationId": operation_id,
        "parameters": [{"name": "workspaceId", "in": "query", "required": False, "schema": {"type": "string"}}],
        "responses": {
            "401": {
                "description": "no valid bearer token (answered by the JWT authorizer)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessage"}}},
            },
            "405": {"description": "method not allowed (no body)"},
        },
    }


_EXTRA_PATHS: dict[str, dict[str, Any]] = {
    "/mcp": {
        "post": {
            "tags": ["mcp"],
            "summary": "MCP endpoint (streamable HTTP, stateless, JSON responses)",
            "description": (
                "initialize, tools/list, tools/call and ping for the workspace's two databases (`agent_*` and"
                " `global_*` tools). Send `Accept: application/json, text/event-stream`. Protocol errors are"
                " JSON-RPC errors."
            ),
            "operationId": "mcp_endpoint_post",
            "parameters": [
                {
                    "name": "workspaceId",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _JSON_RPC}}},
            "responses": {
                "200": {
                    "description": "the JSON-RPC response",
                    "content": {"application/json": {"schema": _JSON_RPC}},
                },
                "202": {"description": "a notification or response was accepted; no body"},
                "401": {
                    "description": "no valid bearer token (answered by the JWT authorizer)",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessage"}}},
                },
                "default": {
                    "description": "a JSON-RPC error (400 malformed, 404/405/406/415 per the transport rules)",
                    "content": {"application/json": {"schema": _JSON_RPC}},
                },
            },
        },
        "get": _mcp_not_allowed("mcp_endpoint_get", "No server-sent event stream: this server is stateless"),
        "delete": _mcp_not_allowed("mcp_endpoint_delete", "No session to end: this server is stateless"),
    },
    "/console": {
        "get": {
            "tags": ["console"],
            "summary": "The database console",
            "description": "Redirects to `console/`, the page itself, so that its relative links resolve.",
            "operationId": "console_get",
            "security": [],
            "responses": {
                "308": {
                    "description": "to `console/`",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        }
    },
    "/console/{proxy}": {
        "get": {
            "tags": ["console"],
            "summary": "The console's page and static files (HTML, CSS, JavaScript, images)",
            "operationId": "console_asset_get",
            "security": [],
            "parameters": [{"name": "proxy", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the file", "content": {"*/*": {"schema": {"type": "string"}}}},
                "304": {"description": "unchanged since the ETag sent in If-None-Match"},
                "404": {"description": "no such file", "content": {"text/plain": {"schema": {"type": "string"}}}},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["docs"],
            "summary": "This document",
            "operationId": "openapi_get",
            "security": [],
            "responses": {
                "200": {
                    "description": "the OpenAPI 3.1 document of this API",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "304": {"description": "unchanged since the ETag sent in If-None-Match"},
            },
        }
    },
}


class DocumentError(RuntimeError):
    pass


def _doc_path(route: HttpRoute) -> str:
    return route.path.replace("+}", "}")


def _resolver_documents(template_path: Path) -> list[dict[str, Any]]:
    template = load_template(template_path, base_dir=template_path.parent)
    documents = []
    code_dirs = sorted({f.code_dir for f in template.functions.values()})  # two functions may share one
    for code_dir in code_dirs:
        routes_file = code_dir / f"{code_dir.name}_routes.py"
        if not routes_file.exists():
            continue
        if str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        module = importlib.import_module(routes_file.stem)
        app = getattr(module, "app", None)
        if app is None or not hasattr(app, "get_openapi_schema"):
            continue
        schema = app.get_openapi_schema(title=TITLE, version=VERSION)
        documents.append(schema.model_dump(by_alias=True, exclude_none=True, mode="json"))
    return documents


def _tidy(operation: dict[str, Any]) -> None:
    """Our handlers answer a validation failure with 400 and the error envelope, never FastAPI's 422."""
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    operation["responses"] = dict(sorted(responses.items()))


def build(template_path: Path = REPO / "template.yaml") -> dict[str, Any]:
    template = load_template(template_path, base_dir=template_path.parent)
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for part in _resolver_documents(template_path):
        for path, item in part.get("paths", {}).items():
            for method, operation in item.items():
                if method not in _METHODS:
                    continue
                if method in paths.get(path, {}):
                    raise DocumentError(f"{method.upper()} {path} is described by two resolvers")
                _tidy(operation)
                paths.setdefault(path, {})[method] = operation
        for name, schema in part.get("components", {}).get("schemas", {}).items():
            if name in ("HTTPValidationError", "ValidationError"):
                continue
            if name in schemas and schemas[name] != schema:
                raise DocumentError(f"two different schemas are both named {name!r}: rename one")
            schemas[name] = schema
    routed = {(r.method.lower(), _doc_path(r)) for r in template.routes}
    for path, item in _EXTRA_PATHS.items():
        for method, operation in item.items():
            if (method, path) not in routed:
                continue  # a hand-written description only for a route the template has
            if method in paths.get(path, {}):
                raise DocumentError(f"{method.upper()} {path} is described twice")
            paths.setdefault(path, {})[method] = copy.deepcopy(operation)

    described = {(m, p) for p, item in paths.items() for m in item}
    if routed - described:
        missing = ", ".join(f"{m.upper()} {p}" for m, p in sorted(routed - described))
        raise DocumentError(f"routes in template.yaml that the document does not describe: {missing}")
    if described - routed:
        extra = ", ".join(f"{m.upper()} {p}" for m, p in sorted(described - routed))
        raise DocumentError(f"described routes that template.yaml does not have: {extra}")
    public = {(r.method.lower(), _doc_path(r)) for r in template.routes if r.public}
    for path, item in paths.items():
        for method, operation in item.items():
            if (method, path) in public:
                operation["security"] = []
            else:
                operation.pop("security", None)  # the document-wide bearer requirement
                scopes = next(r.scopes for r in template.routes if (r.method.lower(), _doc_path(r)) == (method, path))
                if scopes:
                    operation["description"] = (
                        operation.get("description", "") + f"\n\nNeeds the scope(s): {', '.join(scopes)}."
                    ).strip()

    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "the API's own origin (the HTTP API's invoke URL)"}],
        "security": [{"bearerAuth": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`sub` is the user id; admin routes need the `agentdb/admin` scope",
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when the committed document is out of date")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.exists() else ""
        if current != text:
            print(f"{DOCUMENT.relative_to(REPO)} is out of date: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(REPO)} ({len(json.loads(text)['paths'])} paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
