"""The standard MCP endpoint (POST /mcp?workspaceId=W) through the local gateway, with the `mcp` SDK's own client.

Both protocol eras the SDK speaks: the initialize handshake (``mode="legacy"``, what desktop clients use
today) and the per-request 2026-07-28 envelope (``mode="auto"``, the SDK's default, which discovers it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from agentdb.container import get_services
from tests.e2e.conftest import Stack
from tests.support import ServerInspector

TOOLS = ("run_sql", "run_sql_transaction", "list_tables", "describe_table_schema")
SELECT_ONE = {"sql": "SELECT 1 AS one"}


def setup_tenants(stack: Stack) -> None:
    admin = stack.admin()
    for user in ("ann", "rita", "mallory"):
        assert stack.client.post("/users", json={"userId": user}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-ann", "ownerUserId": "ann"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201
    member = stack.client.put("/workspaces/ws-ann/members/rita", json={"role": "read"}, headers=admin)
    assert member.status_code in (200, 201), member.text


@contextlib.asynccontextmanager
async def mcp(stack: Stack, user: str, *, workspace: str = "ws-ann", mode: str = "legacy") -> AsyncIterator[Client]:
    """The SDK's client over streamable HTTP, with the user's bearer token on every request."""
    async with httpx2.AsyncClient(headers=stack.user(user), timeout=60) as http:
        transport = streamable_http_client(f"{stack.url}/mcp?workspaceId={workspace}", http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:
            yield client


def run(fn: Callable[[], Awaitable[None]]) -> None:
    anyio.run(fn)


def rows(result: CallToolResult) -> Any:
    assert result.is_error is False, result
    assert isinstance(result.structured_content, dict)
    return result.structured_content["rows"]


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error is True, result
    assert isinstance(result.structured_content, dict)
    error = result.structured_content["error"]
    assert isinstance(error, dict)
    return error


def post(stack: Stack, body: bytes | str, *, user: str = "ann", query: str = "?workspaceId=ws-ann") -> Any:
    headers = {**stack.user(user), "content-type": "application/json", "accept": "application/json, text/event-stream"}
    return stack.client.post(f"/mcp{query}", content=body, headers=headers)


def audit_rows(after: int) -> list[dict[str, Any]]:
    db = get_services().store.db
    return db.run_dicts("SELECT * FROM tool_audit_log WHERE id > :after ORDER BY id", after=after)


def last_audit_id() -> int:
    return int(get_services().store.db.run("SELECT COALESCE(max(id), 0) FROM tool_audit_log")[0][0])


def test_initialize_and_list_tools_on_both_databases(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            assert client.session.protocol_version == "2025-11-25"
            info = client.session.server_info
            assert info is not None and info.name == "agentdb"
            assert client.session.server_capabilities is not None
            assert client.session.server_capabilities.tools is not None
            tools = (await client.list_tools()).tools
        names = [t.name for t in tools]
        assert len(names) == len(set(names)) == 8
        assert set(names) == {f"{prefix}_{tool}" for prefix in ("agent", "global") for tool in TOOLS}
        by_name = {t.name: t for t in tools}
        for tool in TOOLS:
            agent, global_ = by_name[f"agent_{tool}"], by_name[f"global_{tool}"]
            assert agent.description and "this workspace's own database" in agent.description
            assert global_.description and "global database" in global_.description
            assert agent.input_schema == global_.input_schema and agent.input_schema["type"] == "object"
            assert "projectId" not in json.dumps(agent.input_schema)  # routing never comes from the caller
        assert by_name["agent_run_sql"].input_schema["required"] == ["sql"]
        assert by_name["agent_list_tables"].annotations is not None
        assert by_name["agent_list_tables"].annotations.read_only_hint is True

    run(main)


def test_calls_on_both_databases_go_through_the_tool_service(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    start = last_audit_id()

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            created = await client.call_tool("agent_run_sql", {"sql": "CREATE TABLE notes (id int, body text)"})
            assert created.is_error is False
            inserted = await client.call_tool(
                "agent_run_sql", {"sql": "INSERT INTO notes VALUES (1, 'hi') RETURNING *"}
            )
            assert rows(inserted) == [[1, "hi"]]
            assert "untrusted-data" in inserted.content[0].text  # type: ignore[union-attr]
            tx = await client.call_tool(
                "agent_run_sql_transaction",
                {"sqlStatements": ["INSERT INTO notes VALUES (2, 'b')", "SELECT count(*) FROM notes"]},
            )
            assert rows(tx) == [[2]]
            await client.call_tool("global_run_sql", {"sql": "CREATE TABLE prefs (k text)"})
            assert rows(await client.call_tool("global_run_sql", {"sql": "SELECT count(*) FROM prefs"})) == [[0]]
            # The two databases are separate: the agent's table is not in the global database.
            missing = await client.call_tool("global_run_sql", {"sql": "SELECT * FROM notes"})
            assert error_of(missing)["sqlstate"] == "42P01"
            listed = await client.call_tool("agent_list_tables", {})
            assert "notes" in json.dumps(listed.structured_content)
            described = await client.call_tool("agent_describe_table_schema", {"tableName": "notes"})
            assert described.is_error is False and "body" in json.dumps(described.structured_content)

    run(main)
    audit = audit_rows(start)
    assert [(a["server_id"], a["tool_name"], a["outcome"]) for a in audit] == [
        ("system:postgres-agent", "run_sql", "ok"),
        ("system:postgres-agent", "run_sql", "ok"),
        ("system:postgres-agent", "run_sql_transaction", "ok"),
        ("system:postgres-global", "run_sql", "ok"),
        ("system:postgres-global", "run_sql", "ok"),
        ("system:postgres-global", "run_sql", "sql_error"),
        ("system:postgres-agent", "list_tables", "ok"),
        ("system:postgres-agent", "describe_table_schema", "ok"),
    ]
    assert all(a["user_id"] == "ann" and a["workspace_id"] == "ws-ann" for a in audit)


def test_same_result_as_the_execute_route(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    body = {
        "serverId": "system:postgres-agent",
        "toolName": "run_sql",
        "arguments": SELECT_ONE,
        "workspaceId": "ws-ann",
    }
    direct = stack.client.post("/mcp/tools/execute", json=body, headers=stack.user("ann")).json()["data"]

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            result = await client.call_tool("agent_run_sql", SELECT_ONE)
        assert result.structured_content == direct["structuredContent"]
        assert result.is_error is direct["isError"] is False

    run(main)


def test_sql_errors_guard_refusals_and_policy_refusals_are_tool_errors(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    start = last_audit_id()

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            sql_error = error_of(await client.call_tool("agent_run_sql", {"sql": "SELECT * FROM nowhere"}))
            assert sql_error["sqlstate"] == "42P01"
            refused = error_of(await client.call_tool("agent_run_sql", {"sql": "SET ROLE postgres"}))
            assert refused["code"] == "sql_refused"
            bad_arguments = error_of(await client.call_tool("agent_run_sql", {"query": "SELECT 1"}))
            assert bad_arguments["code"] == "invalid_arguments" and bad_arguments["status"] == 400
        async with mcp(stack, "rita") as reader:  # a read-only member of ws-ann
            names = {t.name for t in (await reader.list_tools()).tools}
            assert "agent_run_sql_transaction" not in names and "global_run_sql_transaction" in names
            write = error_of(await reader.call_tool("agent_run_sql", {"sql": "CREATE TABLE t (x int)"}))
            assert write["code"] == "sql_refused"
            forbidden = error_of(await reader.call_tool("agent_run_sql_transaction", {"sqlStatements": ["SELECT 1"]}))
            assert forbidden["code"] == "forbidden" and forbidden["status"] == 403
            assert rows(await reader.call_tool("agent_run_sql", SELECT_ONE)) == [[1]]

    run(main)
    get_services().store.db.run("UPDATE user_db_budget SET budget_exceeded = true WHERE user_id = 'ann'")

    async def over_budget() -> None:
        async with mcp(stack, "ann") as client:
            budget = error_of(await client.call_tool("agent_run_sql", SELECT_ONE))
            assert budget["code"] == "budget_exceeded" and budget["status"] == 402

    run(over_budget)
    outcomes = [(a["user_id"], a["outcome"], a["error_code"]) for a in audit_rows(start)]
    assert outcomes == [
        ("ann", "sql_error", "42P01"),
        ("ann", "refused", "sql_refused"),
        ("ann", "invalid", "invalid_arguments"),
        ("rita", "refused", "sql_refused"),
        ("rita", "denied", "forbidden"),
        ("rita", "ok", None),
        ("ann", "denied", "budget_exceeded"),
    ]


def test_non_members_and_unknown_workspaces_get_a_json_rpc_error(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    start = last_audit_id()

    async def main() -> None:
        for user, workspace in (("mallory", "ws-ann"), ("ann", "ws-nope")):
            async with mcp(stack, user, workspace=workspace) as client:  # initialize needs no workspace access
                with pytest.raises(MCPError) as listing:
                    await client.list_tools()
                assert listing.value.code == -32602
                assert listing.value.data == {"code": "not_found", "status": 404}
                with pytest.raises(MCPError) as call:
                    await client.call_tool("agent_run_sql", SELECT_ONE)
                assert call.value.code == -32602 and "not a member" in call.value.message

    run(main)
    denied = [(a["user_id"], a["workspace_id"], a["outcome"]) for a in audit_rows(start)]
    assert denied == [("mallory", "ws-ann", "denied"), ("ann", "ws-nope", "denied")]


def test_unknown_tools_are_json_rpc_errors(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            for name in ("agent_drop_database", "drop_database", "run_sql", "other_run_sql"):
                with pytest.raises(MCPError) as unknown:
                    await client.call_tool(name, {})
                assert unknown.value.code == -32602 and name in unknown.value.message
                assert unknown.value.data == {"code": "unknown_tool", "status": 404}

    run(main)


def test_a_bad_token_is_401(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": f"Bearer {stack.token('ann')}x"}):
        response = stack.client.post("/mcp?workspaceId=ws-ann", json=initialize, headers=headers)
        assert response.status_code == 401

    async def main() -> None:
        statuses: list[int] = []

        async def saw(response: httpx2.Response) -> None:
            statuses.append(response.status_code)

        hooks = {"response": [saw]}
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer forged"}, event_hooks=hooks) as http:
            transport = streamable_http_client(f"{stack.url}/mcp?workspaceId=ws-ann", http_client=http)
            with pytest.raises(Exception) as failed:  # the SDK wraps its MCPError in exception groups
                async with Client(transport, mode="legacy", cache=None):
                    pytest.fail("the handshake succeeded with a forged token")
        assert statuses == [401]
        assert "Server returned an error response" in repr(failed.value)

    run(main)


def test_no_stream_and_no_session_to_end_is_405(stack: Stack, server: ServerInspector) -> None:
    """A stateless server answers GET (a server-sent stream) and DELETE (end a session) with 405."""
    setup_tenants(stack)
    for method in ("GET", "DELETE"):
        response = stack.client.request(method, "/mcp?workspaceId=ws-ann", headers=stack.user("ann"))
        assert response.status_code == 405, (method, response.text)
        assert stack.client.request(method, "/mcp?workspaceId=ws-ann").status_code == 401


def test_malformed_json_rpc_is_answered_with_json_rpc_errors(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    cases: list[tuple[bytes | str, int, int]] = [
        (b"{not json", 400, -32700),
        (json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]), 400, -32600),  # batches left MCP in 2025-06-18
        (json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}), 400, -32600),
        (json.dumps({"id": 1, "params": {}}), 400, -32600),
        (json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/nothing"}), 200, -32601),
        (json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}}), 200, -32602),
    ]
    for body, status, code in cases:
        response = post(stack, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.text)
        assert response.json()["jsonrpc"] == "2.0"
    notification = post(stack, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert notification.status_code == 202 and notification.content == b""
    assert "mcp-session-id" not in notification.headers
    ping = post(stack, json.dumps({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
    assert ping.status_code == 200 and ping.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}
    no_workspace = post(stack, json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}), query="")
    assert no_workspace.status_code == 400 and "workspaceId" in no_workspace.json()["error"]["message"]


def test_many_sequential_calls_in_one_warm_container(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    start = last_audit_id()
    rounds = 60

    async def main() -> None:
        async with mcp(stack, "ann") as client:
            for i in range(rounds):
                result = await client.call_tool("agent_run_sql", {"sql": f"SELECT {i} AS i"})
                assert rows(result) == [[i]]
        for _ in range(3):  # new client sessions against the same warm function
            async with mcp(stack, "ann") as client:
                assert len((await client.list_tools()).tools) == 8

    run(main)
    assert len(audit_rows(start)) == rounds


def test_the_2026_per_request_protocol_works_too(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)

    async def main() -> None:
        async with mcp(stack, "ann", mode="auto") as client:  # the SDK's default: server/discover first
            assert client.session.protocol_version == "2026-07-28"
            assert len((await client.list_tools()).tools) == 8
            for i in range(5):
                assert rows(await client.call_tool("global_run_sql", {"sql": f"SELECT {i}"})) == [[i]]
            refused = error_of(await client.call_tool("agent_run_sql", {"sql": "SET ROLE postgres"}))
            assert refused["code"] == "sql_refused"
            with pytest.raises(MCPError) as unknown:
                await client.call_tool("agent_nothing", {})
            assert unknown.value.code == -32602
        async with mcp(stack, "mallory", mode="auto") as stranger:
            with pytest.raises(MCPError) as denied:
                await stranger.list_tools()
            assert denied.value.data == {"code": "not_found", "status": 404}

    run(main)
