"""The mcp_endpoint Lambda handler with its sample events (as `sam local invoke -e` passes them), real Postgres."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from agentdb.container import get_services
from tests.lambda_harness import REPO, FakeLambdaContext, load_function
from tests.support import ServerInspector

SAMPLES = REPO / "events" / "mcp_endpoint"


@pytest.fixture
def functions(function_env: dict[str, str]) -> tuple[ModuleType, ModuleType]:
    return load_function("lifecycle"), load_function("mcp_endpoint")


def sample(name: str) -> dict[str, Any]:
    event = json.loads((SAMPLES / f"{name}.json").read_text())
    assert isinstance(event, dict)
    return event


def invoke(fn: ModuleType, event: dict[str, Any]) -> tuple[int, Any]:
    response = fn.handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"]) if response["body"] else None


def test_sample_events_invoke_cleanly(functions: tuple[ModuleType, ModuleType], server: ServerInspector) -> None:
    lifecycle, endpoint = functions
    for name in ("http-post-users", "http-post-workspaces"):
        event = json.loads((REPO / "events" / "lifecycle" / f"{name}.json").read_text())
        assert lifecycle.handler(event, FakeLambdaContext())["statusCode"] in (200, 201)
    status, body = invoke(endpoint, sample("http-post-initialize"))
    assert status == 200 and body["result"]["serverInfo"]["name"] == "agentdb"
    status, body = invoke(endpoint, sample("http-post-tools-list"))
    assert status == 200 and len(body["result"]["tools"]) == 8
    for _ in range(3):  # warm invocations of the same container
        status, body = invoke(endpoint, sample("http-post-tools-call"))
        assert status == 200 and body["id"] == 3
        assert body["result"]["isError"] is False
        assert body["result"]["structuredContent"]["rows"] == [[1]]
    calls = get_services().store.db.run("SELECT count(*) FROM tool_audit_log WHERE user_id = 'user-sample-1'")
    assert calls == [[3]]


def test_samples_match_the_route() -> None:
    for path in sorted(SAMPLES.glob("*.json")):
        event = json.loads(path.read_text())
        assert event["routeKey"] == event["requestContext"]["routeKey"] == "POST /mcp", path.name
        assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/mcp", path.name
        assert event["queryStringParameters"] == {"workspaceId": "ws-sample-1"}, path.name
        assert event["rawQueryString"] == "workspaceId=ws-sample-1", path.name
        assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "user-sample-1", path.name
        assert "application/json" in event["headers"]["accept"], path.name
        assert json.loads(event["body"])["jsonrpc"] == "2.0", path.name
