"""End to end over HTTP through the local gateway: create users and workspaces, delete them, and
prove that no tenant database or role is left on the server."""

from __future__ import annotations

import json
from pathlib import Path

from agentdb.container import get_services
from agentdb.crypto import connection_uri_context
from agentdb.providers.base import Tenant
from tests.e2e.conftest import Stack
from tests.support import ServerInspector, connect

EVENTS = Path(__file__).resolve().parents[2] / "events" / "lifecycle"


def post_event(stack: Stack, detail_type: str, detail: dict[str, str]) -> dict[str, object]:
    event = json.loads((EVENTS / "user-created.json").read_text())  # the sample's envelope, new content
    event.pop("id")
    event.update({"detail-type": detail_type, "detail": detail})
    response = stack.client.post("/_local/events", json=event)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_lifecycle_over_http_and_events_leaves_nothing_behind(stack: Stack, server: ServerInspector) -> None:
    c, admin = stack.client, stack.admin()
    assert c.post("/users", json={"userId": "alice", "plan": "pro"}, headers=admin).status_code == 201
    assert c.post("/users", json={"userId": "bob"}, headers=admin).status_code == 201
    for ws, owner in (("w1", "alice"), ("w2", "alice"), ("w3", "bob")):
        r = c.post("/workspaces", json={"workspaceId": ws, "ownerUserId": owner, "name": ws.upper()}, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["database"]["status"] == "ready"
    r = c.put("/workspaces/w3/members/alice", json={"role": "read"}, headers=admin)
    assert r.status_code == 200 and r.json()["data"]["role"] == "read"

    result = post_event(stack, "user.created", {"userId": "carol", "plan": "team"})
    assert result["matched"][0]["ok"] is True  # type: ignore[index]
    post_event(stack, "workspace.created", {"workspaceId": "w4", "ownerUserId": "carol"})
    assert len(server.databases()) == 7 and len(server.roles()) == 14

    # Every database is real, reachable with its own stored credentials, and isolated.
    services = get_services()
    uri_w1 = services.keyring.decrypt(
        services.store.get_database(Tenant("workspace", "w1")).encrypted_uri,  # type: ignore[union-attr,arg-type]
        connection_uri_context("workspace:w1"),
    )
    conn = connect(uri_w1)
    conn.run("CREATE TABLE t (id int)")
    conn.close()

    # Admin routes refuse users and anonymous callers before the function runs.
    assert c.post("/users", json={"userId": "mallory"}, headers=stack.user("mallory")).status_code == 403
    assert c.post("/users", json={"userId": "mallory"}).status_code == 401
    r = c.post("/users", json={"userId": "x", "plan": "gold"}, headers=admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input"

    assert c.delete("/workspaces/w1", headers=admin).status_code == 200
    r = c.delete("/users/alice", headers=admin)
    assert r.status_code == 200 and r.json()["data"]["deletedWorkspaces"] == ["w2"]
    post_event(stack, "user.deleted", {"userId": "carol"})
    assert c.delete("/users/bob", headers=admin).status_code == 200
    assert c.delete("/users/bob", headers=admin).status_code == 200  # idempotent

    assert server.databases() == []
    assert server.roles() == []
    body = json.dumps([c.get("/nope", headers=admin).json()])
    assert "postgresql://" not in body


def test_local_invoke_runs_a_function_with_a_raw_event(stack: Stack, server: ServerInspector) -> None:
    event = json.loads((EVENTS / "user-created.json").read_text())
    r = stack.client.post("/_local/invoke/LifecycleFunction", json=event)
    assert r.status_code == 200, r.text
    assert r.json()["action"] in ("created", "exists")
    assert len(server.databases()) == 1
    delete = json.loads((EVENTS / "user-deleted.json").read_text())
    assert stack.client.post("/_local/invoke/LifecycleFunction", json=delete).status_code == 200
    assert server.databases() == []
