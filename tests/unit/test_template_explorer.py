"""The explorer in template.yaml and events/explorer: routes, permissions, samples, and the resolver agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.lambda_harness import load_function
from tests.unit.test_template import ROOT, events_of, functions, http_routes, template

SAMPLES = sorted((ROOT / "events" / "explorer").glob("*.json"))
ROUTES = {
    "GET /workspaces/{workspaceId}/database/tables",
    "POST /workspaces/{workspaceId}/database/query",
    "POST /workspaces/{workspaceId}/database/execute",
    "GET /workspaces/{workspaceId}/database/connection",
    "GET /users/{userId}/global-database/tables",
    "POST /users/{userId}/global-database/query",
}


def test_explorer_function_serves_every_explorer_route_with_the_jwt_authorizer() -> None:
    served = {key for key, (fn, _) in http_routes().items() if fn == "ExplorerFunction"}
    assert served == ROUTES
    for props in events_of("ExplorerFunction", "HttpApi").values():
        assert "Auth" not in props  # the API's default: the JWT authorizer, no admin scope
        assert props["ApiId"] == {"Ref": "HttpApi"}


def test_explorer_function_may_read_its_secrets_and_decrypt_connection_uris() -> None:
    props = functions()["ExplorerFunction"]["Properties"]
    assert props["CodeUri"] == "functions/explorer/" and props["Handler"] == "app.handler"
    statements = props["Policies"][0]["Statement"]
    actions = {s["Action"] for s in statements}
    assert actions == {"secretsmanager:GetSecretValue", "kms:Decrypt"}
    kms = next(s for s in statements if s["Action"] == "kms:Decrypt")
    assert kms["Resource"] == {"Fn::GetAtt": ["AppKey", "Arn"]}
    env = props["Environment"]["Variables"]
    assert env["TOOL_BACKEND"] == {"Ref": "ToolBackend"}  # the same executor settings as the SQL tools
    assert env["SQL_MAX_ROWS"] == {"Ref": "SqlMaxRows"}


def test_cors_exposes_the_csv_page_headers_to_browsers() -> None:
    cors = template()["Resources"]["HttpApi"]["Properties"]["CorsConfiguration"]
    assert {"x-agentdb-truncated", "x-agentdb-next-cursor", "retry-after"} <= set(cors["ExposeHeaders"])


def test_the_resolver_has_exactly_the_template_routes_and_documents_them() -> None:
    load_function("explorer")
    import explorer_routes  # on sys.path once load_function has run

    document = explorer_routes.app.get_openapi_schema()
    resolved = {
        f"{method.upper()} {path}"
        for path, item in (document.paths or {}).items()
        for method in ("get", "post")
        if getattr(item, method) is not None
    }
    assert resolved == ROUTES
    query = document.paths["/workspaces/{workspaceId}/database/query"].post  # type: ignore[index,union-attr]
    assert query is not None and query.tags == ["explorer"]
    assert {200, 400, 402, 403, 404, 409, 429} <= set(query.responses or {})
    assert set(query.responses[200].content or {}) == {"application/json", "text/csv"}  # type: ignore[index]


def test_samples_cover_every_route() -> None:
    assert {json.loads(p.read_text())["routeKey"] for p in SAMPLES} == ROUTES


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_matches_its_route(path: Path) -> None:
    event: dict[str, Any] = json.loads(path.read_text())
    assert event["version"] == "2.0" and event["isBase64Encoded"] is False
    method, route = event["routeKey"].split(" ", 1)
    ctx = event["requestContext"]
    assert ctx["routeKey"] == event["routeKey"] and ctx["http"]["method"] == method
    assert ctx["http"]["path"] == event["rawPath"]
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route)) + "$"
    match = re.match(pattern, event["rawPath"])
    assert match and event["pathParameters"] == match.groupdict()
    assert ctx["authorizer"]["jwt"]["claims"]["sub"] == "user-sample-1"
    assert ("body" in event) == (method == "POST")
    if "body" in event:
        assert isinstance(json.loads(event["body"]), dict)
