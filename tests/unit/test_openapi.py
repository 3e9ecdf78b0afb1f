"""The OpenAPI document: generated from the handlers' own models, kept in the repo, served at GET /openapi.json.

The fuzz run in tests/e2e/test_openapi_fuzz.py checks the other direction: every answer matches it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.openapi import DOCUMENT, build, render
from local.template import load_template
from tests.lambda_harness import REPO, FakeLambdaContext, load_function


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_the_committed_document_is_what_the_code_describes(document: dict[str, Any]) -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(document), "out of date: run `make openapi`"


def test_every_template_route_is_described_once_and_nothing_else(document: dict[str, Any]) -> None:
    template = load_template(REPO / "template.yaml", base_dir=REPO)
    routed = sorted((r.method.lower(), r.path.replace("+}", "}")) for r in template.routes)
    described = sorted((m, p) for m, p, _ in operations(document))
    assert described == routed


def test_every_operation_documents_its_answers(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    public = {"/console", "/console/{proxy}", "/openapi.json"}
    for method, path, op in operations(document):
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        responses = op["responses"]
        assert "422" not in responses, where  # validation failures are answered 400, never 422
        successes = [s for s in responses if s.startswith("2")]
        if path == "/mcp" and method != "post":  # a stateless MCP server has no stream and no session
            assert set(responses) == {"401", "405"}, where
            continue
        assert successes or path == "/console", where  # /console redirects to the page at /console/
        if path in public:
            assert op["security"] == [], where
            continue
        assert "security" not in op, where  # the document-wide bearer token
        assert "401" in responses, where
        if path == "/mcp":
            continue
        for status in ("400", "500"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorEnvelope"
            }, (where, status)
        ok = responses[successes[0]]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        envelope = schemas[ok]
        assert set(envelope["required"]) == {"success", "data"}, where


def test_request_bodies_come_from_the_handlers_models(document: dict[str, Any]) -> None:
    execute = document["paths"]["/mcp/tools/execute"]["post"]
    ref = execute["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(body["required"]) == {"serverId", "toolName", "workspaceId"}
    assert body["properties"]["workspaceId"]["maxLength"] == 128
    budget = document["paths"]["/users/{userId}/budget"]["put"]
    ref = budget["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "customBudgetCents" in document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
    admin = document["paths"]["/users"]["post"]
    assert "agentdb/admin" in admin["description"] and set(admin["responses"]) >= {"200", "201", "403"}


def test_the_function_serves_the_committed_document_with_an_etag() -> None:
    event = json.loads((REPO / "events" / "api_docs" / "http-get-openapi.json").read_text(encoding="utf-8"))
    app = load_function("api_docs")
    response = app.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    assert json.loads(response["body"]) == json.loads(DOCUMENT.read_text(encoding="utf-8"))
    again = app.handler({**event, "headers": {"if-none-match": response["headers"]["ETag"]}}, FakeLambdaContext())
    assert again["statusCode"] == 304 and again["body"] == ""
