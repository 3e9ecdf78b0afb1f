"""The database explorer over HTTP through the local gateway, with user tokens."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from agentdb.api.schemas import ErrorEnvelope
from agentdb.container import get_services
from agentdb.explorer.models import ConnectionEnvelope, ExecuteEnvelope, QueryEnvelope, TablesEnvelope
from tests.e2e.conftest import Stack
from tests.support import ServerInspector

ROWS = 1234


def setup_tenants(stack: Stack) -> None:
    admin = stack.admin()
    for user in ("ann", "bob", "rita"):
        assert stack.client.post("/users", json={"userId": user}, headers=admin).status_code == 201
    for ws, owner in (("ws-ann", "ann"), ("ws-bob", "bob")):
        body = {"workspaceId": ws, "ownerUserId": owner}
        assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201
    member = stack.client.put("/workspaces/ws-ann/members/rita", json={"role": "read"}, headers=admin)
    assert member.status_code in (200, 201), member.text


def error(response: httpx.Response) -> dict[str, Any]:
    body = ErrorEnvelope.model_validate(response.json())
    return body.error.model_dump(exclude_unset=True)


def test_explorer_over_http(stack: Stack, server: ServerInspector) -> None:
    setup_tenants(stack)
    c, ann, bob, rita = stack.client, stack.user("ann"), stack.user("bob"), stack.user("rita")
    base = "/workspaces/ws-ann/database"

    # execute: set-up through the explorer itself
    created = c.post(f"{base}/execute", json={"sql": "CREATE TABLE notes (id int PRIMARY KEY, body text)"}, headers=ann)
    assert created.status_code == 200, created.text
    ExecuteEnvelope.model_validate(created.json())
    filled = c.post(
        f"{base}/execute",
        json={"sql": f"INSERT INTO notes SELECT g, 'note, \"' || g || '\"' FROM generate_series(1, {ROWS}) g"},
        headers=ann,
    )
    assert filled.status_code == 200 and filled.json()["data"]["rowCount"] == ROWS
    selected = c.post(f"{base}/execute", json={"sql": "SELECT count(*) AS n FROM notes"}, headers=ann)
    assert selected.json()["data"] == {"columns": ["n"], "rows": [[ROWS]], "rowCount": 1, "truncated": False}

    # tables
    tables = c.get(f"{base}/tables", headers=ann)
    assert tables.status_code == 200, tables.text
    listing = TablesEnvelope.model_validate(tables.json()).data
    assert listing.database == "agent" and [t.name for t in listing.tables] == ["notes"]
    assert listing.tables[0].sizeBytes > 0

    # query: every row, by cursor, in both orders
    for direction in ("asc", "desc"):
        ids: list[int] = []
        cursor = None
        while True:
            body: dict[str, Any] = {"table": "notes", "limit": 500, "orderBy": {"column": "id", "direction": direction}}
            if cursor:
                body["cursor"] = cursor
            page = c.post(f"{base}/query", json=body, headers=ann)
            assert page.status_code == 200, page.text
            data = QueryEnvelope.model_validate(page.json()).data
            ids += [r[0] for r in data.rows]
            cursor = data.nextCursor
            if cursor is None:
                break
        assert ids == sorted(range(1, ROWS + 1), reverse=direction == "desc")

    # query: by offset; csv with the page headers
    page = c.post(f"{base}/query", json={"table": "notes", "limit": 10, "offset": 1230}, headers=ann)
    assert [r[0] for r in page.json()["data"]["rows"]] == [1231, 1232, 1233, 1234]
    assert page.json()["data"]["nextCursor"] is None
    exported = c.post(f"{base}/query", json={"table": "notes", "limit": 3, "format": "csv"}, headers=ann)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["x-agentdb-truncated"] == "false" and exported.headers["x-agentdb-next-cursor"]
    assert list(csv.reader(io.StringIO(exported.text))) == [
        ["id", "body"],
        ["1", 'note, "1"'],
        ["2", 'note, "2"'],
        ["3", 'note, "3"'],
    ]
    following = c.post(
        f"{base}/query",
        json={"table": "notes", "limit": 2, "cursor": exported.headers["x-agentdb-next-cursor"]},
        headers=ann,
    )
    assert [r[0] for r in following.json()["data"]["rows"]] == [4, 5]

    # bad requests: 400 with a clear message
    for body, fragment in (
        ({"table": "notes", "limit": 1001}, "limit"),
        ({"table": "notes", "offset": 0, "cursor": "abc"}, "mutually exclusive"),
        ({"table": "notes", "format": "xml"}, "format"),
        ({"table": "notes", "cursor": "forged!"}, "cursor"),
        ({"table": "notes", "orderBy": {"column": 'id"; DROP TABLE notes; --'}}, "orderBy.column"),
    ):
        bad = c.post(f"{base}/query", json=body, headers=ann)
        assert bad.status_code == 400, (body, bad.text)
        assert fragment in error(bad)["message"]
    missing = c.post(f"{base}/query", json={"table": 'notes"; DROP TABLE notes; --'}, headers=ann)
    assert missing.status_code == 404 and error(missing)["code"] == "not_found"
    sql_error = c.post(f"{base}/execute", json={"sql": "SELECT * FROM nope"}, headers=ann)
    assert sql_error.status_code == 400
    assert error(sql_error) == {"code": "sql_error", "message": 'relation "nope" does not exist', "sqlstate": "42P01"}
    refused = c.post(f"{base}/execute", json={"sql": "SELECT 1; SELECT 2"}, headers=ann)
    assert refused.status_code == 400 and error(refused)["code"] == "sql_refused"

    # read member: reads, cannot write
    assert c.post(f"{base}/query", json={"table": "notes", "limit": 1}, headers=rita).status_code == 200
    write = c.post(f"{base}/execute", json={"sql": "DELETE FROM notes"}, headers=rita)
    assert write.status_code == 400 and error(write)["code"] in ("sql_refused", "sql_error")

    # cross-tenant: another user's workspace and global database
    for method, path, body in (
        ("GET", f"{base}/tables", None),
        ("POST", f"{base}/query", {"table": "notes"}),
        ("POST", f"{base}/execute", {"sql": "DROP TABLE notes"}),
        ("GET", f"{base}/connection", None),
    ):
        denied = c.request(method, path, json=body, headers=bob)
        assert denied.status_code == 404, (path, denied.text)
        assert "notes" not in denied.text
    assert c.get("/users/ann/global-database/tables", headers=bob).status_code == 403
    assert c.post("/users/ann/global-database/query", json={"table": "notes"}, headers=bob).status_code == 403
    assert c.get(f"{base}/tables").status_code == 401
    count = c.post(f"{base}/execute", json={"sql": "SELECT count(*) FROM notes"}, headers=ann)
    assert count.json()["data"]["rows"] == [[ROWS]]  # nothing dropped or deleted

    # global database: the caller's own
    mine = c.get("/users/bob/global-database/tables", headers=bob)
    assert mine.status_code == 200 and mine.json()["data"] == {"database": "global", "tables": [], "truncated": False}
    none = c.post("/users/bob/global-database/query", json={"table": "notes"}, headers=bob)
    assert none.status_code == 404

    # connection: masked
    facts = c.get(f"{base}/connection", headers=ann)
    assert facts.status_code == 200
    data = ConnectionEnvelope.model_validate(facts.json()).data
    assert data.password == "********" and data.status == "ready" and data.provider == "postgres"
    assert "postgresql://" not in facts.text

    # budget exceeded: 402 for every database operation
    get_services().store.db.run("UPDATE user_db_budget SET budget_exceeded = true WHERE user_id = 'ann'")
    for method, path, body in (
        ("GET", f"{base}/tables", None),
        ("POST", f"{base}/query", {"table": "notes"}),
        ("POST", f"{base}/execute", {"sql": "SELECT 1"}),
        ("GET", "/users/ann/global-database/tables", None),
    ):
        paused = c.request(method, path, json=body, headers=ann)
        assert paused.status_code == 402 and error(paused)["code"] == "budget_exceeded", (path, paused.text)
    get_services().tools.backend.close()  # type: ignore[attr-defined]


def test_explorer_is_rate_limited_with_retry_after(
    stack: Stack, server: ServerInspector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_USER", "3")  # read on the first request (settings load lazily)
    monkeypatch.setenv("RATE_LIMIT_WINDOW_SECONDS", "3600")
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "cy"}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-cy", "ownerUserId": "cy"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201
    c, cy = stack.client, stack.user("cy")
    assert c.get("/workspaces/ws-cy/database/tables", headers=cy).status_code == 200  # 1 statement
    missing = c.post("/workspaces/ws-cy/database/query", json={"table": "none"}, headers=cy)  # 1 (catalog)
    assert missing.status_code == 404
    assert c.get("/users/cy/global-database/tables", headers=cy).status_code == 200  # 1: the third
    limited = c.post("/workspaces/ws-cy/database/execute", json={"sql": "SELECT 1"}, headers=cy)
    assert limited.status_code == 429 and error(limited)["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 3600
    assert c.get("/workspaces/ws-cy/database/connection", headers=cy).status_code == 200  # runs no statement
    get_services().tools.backend.close()  # type: ignore[attr-defined]
