"""SQL tools over HTTP through the local gateway, with user tokens."""

from __future__ import annotations

from tests.e2e.conftest import Stack
from tests.support import ServerInspector


def setup_tenants(stack: Stack) -> None:
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "ann"}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-ann", "ownerUserId": "ann"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201


def test_list_and_execute_over_http(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    c, ann = stack.client, stack.user("ann")
    listing = c.get("/mcp/system-tools", params={"workspaceId": "ws-ann"}, headers=ann)
    assert listing.status_code == 200, listing.text
    assert len(listing.json()["data"]["tools"]) == 8

    def execute(tool: str, arguments: dict[str, object], user: dict[str, str] = ann) -> tuple[int, dict[str, object]]:
        body = {"serverId": "system:postgres-agent", "toolName": tool, "arguments": arguments, "workspaceId": "ws-ann"}
        response = c.post("/mcp/tools/execute", json=body, headers=user)
        return response.status_code, response.json()

    status, body = execute("run_sql", {"sql": "CREATE TABLE todo (id int, title text)"})
    assert status == 200 and body["success"] is True and body["data"]["isError"] is False  # type: ignore[index]
    status, body = execute("run_sql", {"sql": "INSERT INTO todo VALUES (1, 'write tests') RETURNING *"})
    assert body["data"]["structuredContent"]["rows"] == [[1, "write tests"]]  # type: ignore[index]
    status, body = execute("run_sql", {"sql": "SELECT * FROM missing"})
    assert status == 200 and body["data"]["isError"] is True  # type: ignore[index]
    assert body["data"]["structuredContent"]["error"]["sqlstate"] == "42P01"  # type: ignore[index]
    status, body = execute("drop_everything", {})
    assert status == 404 and body["error"]["code"] == "unknown_tool"  # type: ignore[index]
    status, body = execute("run_sql", {"sql": "SELECT 1"}, user=stack.user("mallory"))
    assert status == 404
    response = c.post("/mcp/tools/execute", json={"toolName": "run_sql"}, headers=ann)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
    assert c.post("/mcp/tools/execute", json={}).status_code == 401
    assert c.get("/mcp/system-tools").status_code == 401
    missing = c.get("/mcp/system-tools", headers=ann)
    assert missing.status_code == 400 and "workspaceId" in missing.json()["error"]["message"]
