"""The MCP endpoint's protocol handling, through the real handler module, without a database.

Nothing here may reach the tool service: the tests hand the endpoint a service provider that fails the
test if it is used. Calls that do reach it are in tests/e2e/test_mcp_endpoint_e2e.py and
tests/integration/test_mcp_endpoint_handler.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from agentdb.api.asgi import HttpExchange
from agentdb.tools.catalog import AGENT_SERVER, GLOBAL_SERVER, TOOLS
from agentdb.tools.mcp_server import Caller, McpEndpoint, check_message, exposed_name, resolve
from tests.lambda_harness import REPO, FakeLambdaContext, http_event, load_function

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def no_tools() -> Any:
    raise AssertionError("the tool service must not be reached")


@pytest.fixture(scope="module")
def fn() -> ModuleType:
    return load_function("mcp_endpoint")


def invoke(
    fn: ModuleType,
    body: Any = None,
    *,
    raw: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    sub: str = "ann",
) -> tuple[int, dict[str, str], str]:
    event = http_event(
        "POST",
        "/mcp",
        body=body,
        raw_body=raw,
        sub=sub,
        scope="",
        query={"workspaceId": "ws"} if query is None else query,
    )
    event["headers"]["accept"] = "application/json, text/event-stream"
    event["headers"].update(headers or {})
    response = fn.handler(event, FakeLambdaContext())
    return response["statusCode"], response["headers"], response["body"]


def test_tool_names_round_trip_and_are_unique() -> None:
    names = [exposed_name(server, tool) for server in (AGENT_SERVER, GLOBAL_SERVER) for tool in TOOLS]
    assert len(set(names)) == len(names) == 2 * len(TOOLS)
    assert "agent_run_sql" in names and "global_describe_table_schema" in names
    for server in (AGENT_SERVER, GLOBAL_SERVER):
        for tool in TOOLS:
            assert resolve(exposed_name(server, tool)) == (server, tool)
    for name in ("run_sql", "agent_", "_run_sql", "other_run_sql", "", "agent"):
        assert resolve(name) is None, name
    assert resolve("agent_drop_database") == (AGENT_SERVER, "drop_database")  # the tool service refuses it


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b"", -32700),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600),
        (b"[]", -32600),
        (b'{"jsonrpc": "2.0"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600),
        (b'"ping"', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', -32600),  # the server sends no requests to answer
        (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', -32600),
    ],
)
def test_bodies_that_are_not_one_json_rpc_message(body: bytes, code: int) -> None:
    reply = check_message(body)
    assert reply is not None and reply.status == 400
    payload = json.loads(reply.body)
    assert payload == {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": payload["error"]["message"]}}


def test_one_message_passes_the_check() -> None:
    assert check_message(json.dumps(INITIALIZE).encode()) is None
    assert check_message(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}') is None


def test_initialize_and_ping_through_the_handler(fn: ModuleType) -> None:
    status, headers, body = invoke(fn, INITIALIZE)
    assert status == 200 and headers["content-type"] == "application/json"
    assert "mcp-session-id" not in headers  # stateless: no session to keep
    result = json.loads(body)["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"]["name"] == "agentdb"
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert "agent_" in result["instructions"] and "global_" in result["instructions"]
    status, _, body = invoke(fn, {"jsonrpc": "2.0", "id": "x", "method": "ping"})
    assert (status, json.loads(body)) == (200, {"jsonrpc": "2.0", "id": "x", "result": {}})
    status, _, body = invoke(fn, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert (status, body) == (202, "")


def test_many_warm_invocations_in_a_row(fn: ModuleType) -> None:
    """The SDK's session manager runs once per instance: the endpoint must not depend on keeping one."""
    for i in range(60):
        status, _, body = invoke(fn, {"jsonrpc": "2.0", "id": i, "method": "ping"})
        assert (status, json.loads(body)["id"]) == (200, i)
        if i % 10 == 0:
            assert invoke(fn, INITIALIZE)[0] == 200
            status, _, body = invoke(fn, {"jsonrpc": "2.0", "id": i, "method": "prompts/list"})
            assert json.loads(body)["error"]["code"] == -32601


def test_protocol_errors(fn: ModuleType) -> None:
    status, _, body = invoke(fn, raw="{oops")
    assert status == 400 and json.loads(body)["error"]["code"] == -32700
    status, _, body = invoke(fn, [INITIALIZE])
    assert status == 400 and json.loads(body)["error"]["code"] == -32600
    status, _, body = invoke(fn, {"jsonrpc": "2.0", "id": 7, "method": "no/such/method"})
    assert status == 200 and json.loads(body)["error"] == {
        "code": -32601,
        "message": "Method not found",
        "data": "no/such/method",
    }
    status, _, body = invoke(fn, {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": 5}})
    assert json.loads(body)["error"]["code"] == -32602
    status, _, _ = invoke(fn, INITIALIZE, headers={"accept": "text/html"})
    assert status == 406


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_no_stream_and_no_session_to_end(fn: ModuleType, method: str) -> None:
    """Only POST /mcp is routed; should GET or DELETE be routed to the function, it answers 405."""
    event = http_event(method, "/mcp", sub="ann", scope="", query={"workspaceId": "ws"})
    response = fn.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 405 and response["headers"] == {"allow": "POST"}


def test_workspace_and_identity_are_required(fn: ModuleType) -> None:
    status, _, body = invoke(fn, INITIALIZE, query={})
    assert status == 400 and "workspaceId" in json.loads(body)["error"]["message"]
    status, _, _ = invoke(fn, INITIALIZE, query={"workspaceId": ""})
    assert status == 400
    status, _, body = invoke(fn, INITIALIZE, sub="")
    assert status == 401 and json.loads(body)["error"]["code"] == -32600


def serve(endpoint: McpEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    request = HttpExchange(
        "POST",
        "/mcp",
        "workspaceId=ws",
        {"content-type": "application/json", "accept": "application/json"},
        json.dumps(body).encode(),
    )
    reply = endpoint.handle(request, Caller("ann", "ws"))
    assert reply.status == 200, reply.text
    result = json.loads(reply.body)
    assert isinstance(result, dict)
    return result


def test_unknown_prefixes_never_reach_the_tool_service() -> None:
    endpoint = McpEndpoint(no_tools)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "db_run_sql", "arguments": {}}}
    error = serve(endpoint, call)["error"]
    assert error == {
        "code": -32602,
        "message": "Unknown tool: db_run_sql",
        "data": {"code": "unknown_tool", "status": 404},
    }


class _Broken:
    """A tool service failing in a way nobody planned for, with a secret in the message."""

    def list_tools(self, user_id: str, workspace_id: str) -> Any:
        raise RuntimeError("postgresql://owner:hunter2@db/x is down")

    def execute(self, *args: Any) -> Any:
        raise RuntimeError("postgresql://owner:hunter2@db/x is down")


def test_unexpected_failures_are_a_generic_internal_error() -> None:
    endpoint = McpEndpoint(lambda: _Broken())  # type: ignore[arg-type, return-value]
    listing = serve(endpoint, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    call = serve(endpoint, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "agent_run_sql"}})
    for answer in (listing, call):
        assert answer["error"]["code"] == -32603 and answer["error"]["message"] == "internal error"
        assert "hunter2" not in json.dumps(answer)


def test_only_the_mcp_endpoint_imports_the_mcp_sdk() -> None:
    """Importing a handler module stays cheap; of the functions' first-request modules only this one loads mcp."""
    probe = (
        "import importlib, pathlib, sys\n"
        "fn = pathlib.Path(sys.argv[1])\n"
        "sys.path.insert(0, str(fn))\n"
        "importlib.import_module('app')\n"
        "app_loads = 'mcp' in sys.modules\n"
        "for p in sorted(fn.glob('*.py')):\n"
        "    importlib.import_module(p.stem)\n"
        "print(app_loads, 'mcp' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'layers' / 'core'}:{REPO}", "POWERTOOLS_TRACE_DISABLED": "true"}
    for function_dir in sorted((REPO / "functions").iterdir()):
        if not (function_dir / "app.py").is_file():
            continue
        out = subprocess.run(
            [sys.executable, "-c", probe, str(function_dir)], capture_output=True, text=True, env=env, check=True
        )
        app_loads, routes_load = out.stdout.split()
        assert app_loads == "False", function_dir.name
        assert routes_load == str(function_dir.name == "mcp_endpoint"), function_dir.name


def test_the_template_routes_post_mcp_behind_the_default_jwt_authorizer() -> None:
    from tests.unit.test_template import functions, http_routes, template

    function_id, props = http_routes()["POST /mcp"]
    assert function_id == "McpEndpointFunction"
    assert "Auth" not in props  # the API's DefaultAuthorizer (JWT) applies
    assert template()["Resources"]["HttpApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "JwtAuthorizer"
    endpoint, execute = (
        functions()["McpEndpointFunction"]["Properties"],
        functions()["ToolExecuteFunction"]["Properties"],
    )
    assert endpoint["CodeUri"] == "functions/mcp_endpoint/" and endpoint["Handler"] == "app.handler"
    # The same tool service as POST /mcp/tools/execute: the same settings and permissions.
    assert endpoint["Environment"] == execute["Environment"]
    assert endpoint["Policies"] == execute["Policies"]
