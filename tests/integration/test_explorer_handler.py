"""The explorer Lambda handler with the sample events of events/explorer, as `sam local invoke -e` passes them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentdb.container import get_services
from tests.lambda_harness import REPO, FakeLambdaContext, http_event, load_function
from tests.support import ServerInspector

SAMPLES = REPO / "events" / "explorer"


@pytest.fixture
def handlers(function_env: dict[str, str]) -> dict[str, Any]:
    return {"lifecycle": load_function("lifecycle"), "explorer": load_function("explorer")}


def invoke(fn: Any, event: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    response = fn.handler(event, FakeLambdaContext())
    return response["statusCode"], response.get("headers") or {}, response["body"]


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return event


def test_sample_events_invoke_cleanly(handlers: dict[str, Any], server: ServerInspector) -> None:
    lifecycle, explorer = handlers["lifecycle"], handlers["explorer"]
    for name in ("http-post-users", "http-post-workspaces"):
        event = json.loads((REPO / "events" / "lifecycle" / f"{name}.json").read_text())
        assert lifecycle.handler(event, FakeLambdaContext())["statusCode"] in (200, 201)
    status, _, body = invoke(explorer, sample("http-post-execute"))
    assert status == 200, body
    status, _, body = invoke(explorer, sample("http-get-tables"))
    assert status == 200 and [t["name"] for t in json.loads(body)["data"]["tables"]] == ["notes"]
    status, _, body = invoke(explorer, sample("http-post-query"))
    assert status == 200 and json.loads(body)["data"]["rows"] == []
    status, _, body = invoke(explorer, sample("http-get-connection"))
    assert status == 200 and json.loads(body)["data"]["password"] == "********"
    status, _, body = invoke(explorer, sample("http-get-global-tables"))
    assert status == 200 and json.loads(body)["data"]["database"] == "global"
    status, _, body = invoke(explorer, sample("http-post-global-query"))
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"  # the global db has no notes
    get_services().tools.execute(
        "user-sample-1", None, "system:postgres-global", "run_sql", {"sql": "CREATE TABLE notes (id int, body text)"}
    )
    status, headers, body = invoke(explorer, sample("http-post-global-query"))
    assert status == 200 and headers["Content-Type"].startswith("text/csv") and body == "id,body\r\n"
    assert headers["X-AgentDB-Truncated"] == "false" and "X-AgentDB-Next-Cursor" not in headers


@pytest.mark.parametrize(
    ("path", "route", "body", "status", "code"),
    [
        (
            "/users/someone-else/global-database/tables",
            "/users/{userId}/global-database/tables",
            None,
            403,
            "forbidden",
        ),
        ("/workspaces/ws-x/database/query", "/workspaces/{workspaceId}/database/query", {"limit": 5}, 400, None),
        ("/workspaces/ws-x/database/execute", "/workspaces/{workspaceId}/database/execute", {"sql": ""}, 400, None),
        ("/workspaces/ws-x/database/tables", "/workspaces/{workspaceId}/database/tables", None, 404, "not_found"),
    ],
)
def test_bad_requests_are_clear_4xx(
    handlers: dict[str, Any], path: str, route: str, body: Any, status: int, code: str | None
) -> None:
    method = "GET" if body is None else "POST"
    params = {k: v for k, v in zip(route.split("/"), path.split("/"), strict=True) if k.startswith("{")}
    event = http_event(
        method,
        path,
        route=route,
        body=body,
        sub="user-1",
        scope="openid",
        path_params={k.strip("{}"): v for k, v in params.items()},
    )
    got, _, text = invoke(handlers["explorer"], event)
    payload = json.loads(text)
    assert got == status and payload["success"] is False, text
    assert payload["error"]["code"] == (code or "invalid_input")
    assert "Traceback" not in text


def test_handler_module_imports_cheaply() -> None:
    """Importing app.py must not import the routes, pydantic models or the resolver (cold starts)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path[:0] = ['layers/core', 'functions/explorer'];"
        "import app; print('explorer_routes' in sys.modules, 'agentdb.explorer.service' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("query", '{"table": "\\ud800"}'),
        ("query", '{"table": "t", "orderBy": {"column": "\\udfff"}}'),
        ("execute", '{"sql": "SELECT \'\\ud800\'"}'),
        ("query", '{"table": "t", "limit": true}'),
        ("query", "[1, 2]"),
    ],
)
def test_bodies_that_are_not_text_or_not_objects_are_400(handlers: dict[str, Any], route: str, raw: str) -> None:
    event = http_event(
        "POST",
        f"/workspaces/ws-x/database/{route}",
        route="/workspaces/{workspaceId}/database/" + route,
        raw_body=raw,
        sub="user-1",
        scope="",
        path_params={"workspaceId": "ws-x"},
    )
    status, _, text = invoke(handlers["explorer"], event)
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_input", text
