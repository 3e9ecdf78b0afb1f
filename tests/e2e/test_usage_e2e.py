"""The usage API and the usage function through the local gateway: tokens, the route, the scheduled sync,
and a budget that pauses the databases (tools answer 402) and resumes them when raised."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Stack
from tests.support import ServerInspector


def setup_tenants(stack: Stack) -> None:
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "ann", "plan": "pro"}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-ann", "ownerUserId": "ann", "name": "Ann's agent"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201


def run_sql(stack: Stack) -> tuple[int, dict[str, Any]]:
    body = {
        "serverId": "system:postgres-agent",
        "toolName": "run_sql",
        "arguments": {"sql": "SELECT 1 AS one"},
        "workspaceId": "ws-ann",
    }
    response = stack.client.post("/mcp/tools/execute", json=body, headers=stack.user("ann"))
    return response.status_code, response.json()


def test_usage_route(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    c = stack.client
    response = c.get("/users/ann/db-usage", headers=stack.user("ann"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["userId"] == "ann" and data["plan"] == "pro" and data["currency"] == "USD"
    assert data["limitCents"] == 2000 and data["exceeded"] is False and data["refreshed"] is True
    assert data["globalDb"]["paused"] is False and data["globalDb"]["storageGb"] > 0  # an empty database is ~7 MB
    assert [a["workspaceId"] for a in data["agentDbs"]] == ["ws-ann"]
    assert data["agentDbs"][0]["workspaceName"] == "Ann's agent"
    assert data["totalCents"] == data["globalDb"]["costCents"] + data["agentDbs"][0]["costCents"]
    assert data["periodStart"] and data["lastSync"]
    assert c.get("/users/ann/db-usage", headers=stack.admin()).status_code == 200
    other = c.get("/users/ann/db-usage", headers=stack.user("mallory"))
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    assert c.get("/users/ann/db-usage").status_code == 401
    missing = c.get("/users/nobody/db-usage", headers=stack.admin())
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_scheduled_sync_and_a_budget_that_pauses_and_resumes(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    c, admin = stack.client, stack.admin()
    sync = c.post("/_local/invoke/UsageFunction", json={"action": "sync"})
    assert sync.status_code == 200, sync.text
    assert sync.json()["mode"] == "inline" and sync.json()["synced"] == 2
    assert run_sql(stack)[0] == 200

    # A custom budget of 0: whatever was spent has reached it. Everything is paused; tools answer 402.
    response = c.put("/users/ann/budget", json={"customBudgetCents": 0}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["budget"]["exceeded"] is True
    assert response.json()["data"]["budget"]["pausedDatabases"] == 2
    status, body = run_sql(stack)
    assert status == 402 and body["error"]["code"] == "budget_exceeded"
    usage = c.get("/users/ann/db-usage", headers=stack.user("ann")).json()["data"]
    assert usage["exceeded"] is True and usage["limitCents"] == 0 and usage["limitSource"] == "custom"
    assert usage["globalDb"]["paused"] is True and usage["agentDbs"][0]["paused"] is True

    # Raised (back to the pro tier's $20): resumed, tools work again.
    response = c.put("/users/ann/budget", json={"customBudgetCents": None}, headers=admin)
    assert response.json()["data"]["budget"] == {
        "totalCents": usage["totalCents"],
        "limitCents": 2000,
        "exceeded": False,
        "pausedDatabases": 0,
        "servingDatabases": 2,
        "pending": False,
    }
    status, body = run_sql(stack)
    assert status == 200 and body["data"]["isError"] is False

    reset = c.post("/_local/invoke/UsageFunction", json={"action": "reset", "userIds": ["ann"]})
    assert reset.status_code == 200 and reset.json()["reset"] == ["ann"]
    bad = c.post("/_local/invoke/UsageFunction", json={"action": "launch"})
    assert bad.status_code == 502
