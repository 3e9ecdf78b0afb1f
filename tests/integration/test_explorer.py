"""The database explorer on real Postgres: tables, pagination, injection, tenancy, budgets, masking."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agentdb.container import Services
from agentdb.crypto import connection_uri_context
from agentdb.errors import BudgetExceeded, Forbidden, InvalidInput, NotFound, RateLimited
from agentdb.explorer.models import QueryRequest
from agentdb.explorer.service import Scope, SqlFailed
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import Tenant
from agentdb.tools.catalog import AGENT_SERVER, GLOBAL_SERVER
from tests.support import module_control_plane

ROWS = 2503  # thousands of rows, and not a multiple of any page size used below


@pytest.fixture(scope="module")
def env(pg_admin_url: str) -> Iterator[Services]:
    """One set of tenants for the module (provisioning is the slow part)."""
    settings = {
        "SQL_STATEMENT_TIMEOUT_MS": "10000",
        "SQL_MAX_ROWS": "1000",
        "SQL_MAX_RESULT_BYTES": "65536",
        "RATE_LIMIT_PER_USER": "0",
        "RATE_LIMIT_PER_WORKSPACE": "0",
    }
    with module_control_plane(pg_admin_url, **settings) as (services, _):
        lc = services.lifecycle
        for user in ("owner", "other", "reader"):
            lc.create_user(user)
        lc.create_workspace("ws-a", "owner")
        lc.create_workspace("ws-other", "other")
        lc.put_member("ws-a", "reader", "read", create_placeholder=False)
        sql(services, "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL, score int, note text)")
        sql(
            services,
            "INSERT INTO items SELECT g, 'item ' || g, g % 7,"
            " CASE WHEN g % 5 = 0 THEN NULL ELSE repeat('x', g % 40) END"
            f" FROM generate_series(1, {ROWS}) g",
        )
        sql(services, "ANALYZE items")
        yield services


@pytest.fixture
def services(env: Services) -> Iterator[Services]:
    yield env
    env.store.db.run("UPDATE user_db_budget SET budget_exceeded = false")


def sql(services: Services, statement: str, *, user: str = "owner", ws: str | None = "ws-a") -> list[list[Any]]:
    """Set-up and checks straight through the SQL tools (not through the explorer under test)."""
    server = AGENT_SERVER if ws is not None else GLOBAL_SERVER
    result = services.tools.execute(user, ws or "ws-a", server, "run_sql", {"sql": statement})
    assert result["isError"] is False, result
    return result["structuredContent"]["rows"]


OWNER = Scope.workspace("owner", "ws-a")


def query(services: Services, scope: Scope = OWNER, **body: Any) -> dict[str, Any]:
    return services.explorer.query(scope, QueryRequest.model_validate(body)).to_dict()


def all_pages(services: Services, scope: Scope = OWNER, **body: Any) -> tuple[list[list[Any]], int]:
    """Follow nextCursor to the end; returns every row and the number of pages."""
    rows: list[list[Any]] = []
    pages, cursor = 0, None
    while True:
        page = query(services, scope, **body, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert page["rowCount"] == len(page["rows"])
        rows += page["rows"]
        cursor = page["nextCursor"]
        if cursor is None:
            return rows, pages
        assert pages < 200, "pagination does not end"


# Tables -----------------------------------------------------------------------------------------
def test_tables_lists_relations_with_estimates_and_sizes(services: Services) -> None:
    listing = services.explorer.tables(OWNER)
    assert listing["database"] == "agent" and listing["truncated"] is False
    items = next(t for t in listing["tables"] if t["name"] == "items")
    assert items["schema"] == "public" and items["type"] == "table"
    assert items["rowEstimate"] == ROWS  # analysed: the planner's estimate is exact here
    assert items["sizeBytes"] > 8192
    assert all(t["schema"] not in ("pg_catalog", "information_schema") for t in listing["tables"])


def test_tables_of_a_never_analysed_table_estimate_zero_rows(services: Services) -> None:
    sql(services, "CREATE TABLE fresh (id int)")
    fresh = next(t for t in services.explorer.tables(OWNER)["tables"] if t["name"] == "fresh")
    assert fresh["rowEstimate"] == 0
    sql(services, "DROP TABLE fresh")


# Pagination -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("limit", "direction"), [(100, "asc"), (1000, "desc"), (333, "asc")])
def test_cursor_pagination_over_thousands_of_rows_loses_and_repeats_nothing(
    services: Services, limit: int, direction: str
) -> None:
    rows, pages = all_pages(services, table="items", limit=limit, orderBy={"column": "id", "direction": direction})
    ids = [r[0] for r in rows]
    assert ids == sorted(range(1, ROWS + 1), reverse=direction == "desc")
    # limit 1000 meets the 64 KiB result cap: pages come back shorter (truncated) and still lose nothing.
    assert pages >= -(-ROWS // limit)


def test_a_page_cut_by_the_result_size_cap_is_flagged_and_continued(services: Services) -> None:
    first = query(services, table="items", limit=1000)  # ~90 KB of rows against a 64 KiB cap
    assert first["truncated"] is True and 0 < first["rowCount"] < 1000 and first["nextCursor"]
    second = query(services, table="items", limit=1000, cursor=first["nextCursor"])
    assert second["rows"][0][0] == first["rows"][-1][0] + 1


def test_cursor_pagination_by_a_non_unique_column_uses_the_key_as_tie_breaker(services: Services) -> None:
    rows, _ = all_pages(services, table="items", limit=250, orderBy={"column": "label", "direction": "desc"})
    assert sorted(r[0] for r in rows) == list(range(1, ROWS + 1))
    labels = [r[1] for r in rows]
    assert labels == sorted(labels, reverse=True)
    rows, _ = all_pages(services, table="items", limit=400, orderBy={"column": "score"})  # ties everywhere
    assert sorted(r[0] for r in rows) == list(range(1, ROWS + 1))
    assert [(r[2], r[0]) for r in rows] == sorted((r[2], r[0]) for r in rows)


def test_nullable_order_column_falls_back_to_offset_cursors(services: Services) -> None:
    rows, _ = all_pages(services, table="items", limit=300, orderBy={"column": "note", "direction": "desc"})
    assert sorted(r[0] for r in rows) == list(range(1, ROWS + 1))
    assert [r[3] for r in rows].count(None) == ROWS // 5


def test_offset_pagination_and_a_table_without_a_primary_key(services: Services) -> None:
    sql(services, "CREATE TABLE log (at int, msg text)")
    sql(services, "INSERT INTO log SELECT g / 3, 'm' || (g % 3) FROM generate_series(1, 1500) g")
    seen: list[tuple[int, str]] = []
    for offset in range(0, 1500, 200):
        page = query(services, table="log", limit=200, offset=offset)
        seen += [(r[0], r[1]) for r in page["rows"]]
        assert (page["nextCursor"] is None) == (offset + 200 >= 1500)
    assert len(seen) == 1500 and len(set(seen)) == 1500  # ordered by every column: a stable order
    rows, _ = all_pages(services, table="log", limit=350)  # offset cursors
    assert sorted((r[0], r[1]) for r in rows) == sorted(seen)
    sql(services, "DROP TABLE log")


def test_a_table_without_columns_pages_by_offset(services: Services) -> None:
    sql(services, "CREATE TABLE hollow ()")
    sql(services, "INSERT INTO hollow SELECT FROM generate_series(1, 5)")
    try:
        rows, pages = all_pages(services, table="hollow", limit=2)
        assert rows == [[]] * 5 and pages == 3
    finally:
        sql(services, "DROP TABLE hollow")


def test_page_shape_columns_and_json_values(services: Services) -> None:
    page = query(services, table="items", limit=2, orderBy={"column": "id"})
    assert page["columns"] == [
        {"name": "id", "type": "integer"},
        {"name": "label", "type": "text"},
        {"name": "score", "type": "integer"},
        {"name": "note", "type": "text"},
    ]
    assert page["rows"] == [[1, "item 1", 1, "x"], [2, "item 2", 2, "xx"]]
    assert page["truncated"] is False and isinstance(page["nextCursor"], str)


def test_csv_export(services: Services) -> None:
    page = services.explorer.query(OWNER, QueryRequest.model_validate({"table": "items", "limit": 5, "offset": 3}))
    text = page.to_csv()
    lines = text.split("\r\n")
    assert lines[0] == "id,label,score,note"
    assert lines[1] == "4,item 4,4,xxxx"
    assert lines[2] == "5,item 5,5,"  # NULL is an empty cell
    assert page.next_cursor is not None and page.truncated is False


# Identifiers: quoted, never pasted --------------------------------------------------------------
WEIRD_NAMES = [
    ('t"; DROP TABLE items; --', 'c"; DROP TABLE items; --'),
    ("it's", "o'clock"),
    ("a.b", "x.y"),
    ("Ünïcödé 表", "名前"),
    ("$q$", "$$"),
    ("MiXeD", "CaSe"),
]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.mark.parametrize(("table", "column"), WEIRD_NAMES)
def test_real_tables_with_hostile_names_are_read_safely(services: Services, table: str, column: str) -> None:
    sql(services, f"CREATE SCHEMA IF NOT EXISTS {_q('s.' + table)}")
    for schema in ("public", "s." + table):
        sql(services, f"CREATE TABLE {_q(schema)}.{_q(table)} (id int PRIMARY KEY, {_q(column)} text)")
        sql(services, f"INSERT INTO {_q(schema)}.{_q(table)} SELECT g, {_lit(schema)} FROM generate_series(1, 5) g")
    try:
        names = {(t["schema"], t["name"]) for t in services.explorer.tables(OWNER)["tables"]}
        assert ("public", table) in names and ("s." + table, table) in names
        page = query(services, table=table, limit=3, orderBy={"column": column, "direction": "desc"})
        assert page["columns"][1]["name"] == column
        assert page["rows"][0][1] == "public"
        rows, _ = all_pages(services, table=table, schema="s." + table, limit=2, orderBy={"column": column})
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5] and {r[1] for r in rows} == {"s." + table}
        assert sql(services, "SELECT count(*) FROM items") == [[ROWS]]  # nothing dropped
    finally:
        sql(services, f"DROP SCHEMA {_q('s.' + table)} CASCADE")
        sql(services, f"DROP TABLE public.{_q(table)}")


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@pytest.mark.parametrize(
    "body",
    [
        {"table": 'items"; DROP TABLE items; --'},
        {"table": "items; DROP TABLE items"},
        {"table": "public.items"},  # a dotted name is one identifier, not schema.table
        {"table": "ITEMS"},
        {"table": "items", "schema": 'public"; DROP TABLE items; --'},
        {"table": "items", "schema": "pg_catalog"},
        {"table": "pg_class"},
        {"table": "pg_roles"},
        {"table": "tables", "schema": "information_schema"},
        {"table": "$x$ OR 1=1 --"},
    ],
)
def test_unknown_or_hostile_names_are_404_and_change_nothing(services: Services, body: dict[str, Any]) -> None:
    with pytest.raises(NotFound) as caught:
        query(services, **body)
    assert caught.value.code == "not_found" and "no table or view" in caught.value.message
    assert sql(services, "SELECT count(*) FROM items") == [[ROWS]]


def test_a_table_in_several_schemas_but_not_public_needs_the_schema(services: Services) -> None:
    for schema in ("s1", "s2"):
        sql(services, f"CREATE SCHEMA {schema}")
        sql(services, f"CREATE TABLE {schema}.twin (id int PRIMARY KEY)")
        sql(services, f"INSERT INTO {schema}.twin VALUES ({schema[1]})")
    try:
        with pytest.raises(InvalidInput) as caught:
            query(services, table="twin")
        assert "name the schema" in caught.value.message
        assert query(services, table="twin", schema="s2")["rows"] == [[2]]
    finally:
        sql(services, "DROP SCHEMA s1, s2 CASCADE")


@pytest.mark.parametrize("column", ['id"; DROP TABLE items; --', "ID", "items.id", "nope"])
def test_unknown_order_columns_are_400(services: Services, column: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        query(services, table="items", orderBy={"column": column})
    assert "orderBy.column" in caught.value.message
    assert sql(services, "SELECT count(*) FROM items") == [[ROWS]]


def test_nul_characters_are_refused_cleanly(services: Services) -> None:
    with pytest.raises(InvalidInput):
        query(services, table="items\x00; DROP TABLE items")
    assert sql(services, "SELECT count(*) FROM items") == [[ROWS]]


# Cursors ----------------------------------------------------------------------------------------
def _cursor(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_forged_and_foreign_cursors_are_400_and_inject_nothing(services: Services) -> None:
    first = query(services, table="items", limit=10, orderBy={"column": "id"})
    genuine = json.loads(base64.urlsafe_b64decode(first["nextCursor"] + "=="))
    assert genuine["k"] == ["10"]
    forged = [
        "not base64 !",
        _cursor({"v": 1}),
        _cursor([1, 2]),
        _cursor({**genuine, "k": ["10", "11"]}),  # wrong arity
        _cursor({**genuine, "k": [10]}),  # not text
        _cursor({**genuine, "f": "0" * 16}),  # another query's cursor
        _cursor({"v": 1, "f": genuine["f"], "o": -5}),
        _cursor({"v": 1, "f": genuine["f"], "o": True}),
        _cursor({**genuine, "extra": 1}),
    ]
    for cursor in forged:
        with pytest.raises(InvalidInput) as caught:
            query(services, table="items", limit=10, orderBy={"column": "id"}, cursor=cursor)
        assert caught.value.code == "invalid_input" and "cursor is not valid" in caught.value.message, cursor
    # A cursor of the same query whose value is SQL: a literal, cast to the key's type → a clean SQL error.
    for value in ["10) OR (1=1", "1; DROP TABLE items; --", "$q$ || pg_sleep(5) || $q$"]:
        with pytest.raises(SqlFailed) as failed:
            query(
                services, table="items", limit=10, orderBy={"column": "id"}, cursor=_cursor({**genuine, "k": [value]})
            )
        assert failed.value.sqlstate == "22P02" and failed.value.status == 400
    # The cursor of one order does not continue another.
    with pytest.raises(InvalidInput):
        query(
            services, table="items", limit=10, orderBy={"column": "id", "direction": "desc"}, cursor=first["nextCursor"]
        )
    assert sql(services, "SELECT count(*) FROM items") == [[ROWS]]


def test_text_key_cursor_values_round_trip_exactly(services: Services) -> None:
    sql(services, "CREATE TABLE tags (name text PRIMARY KEY)")
    names = ["$q$", "$$", "a'b", 'a"b', "x) OR (1=1", "é", "\\", "$qabc$", "end$q"]
    sql(services, "INSERT INTO tags VALUES " + ", ".join(f"({_lit(n)})" for n in names))
    rows, pages = all_pages(services, table="tags", limit=1)
    assert sorted(r[0] for r in rows) == sorted(names) and pages == len(names)
    sql(services, "DROP TABLE tags")


# Execute ----------------------------------------------------------------------------------------
def test_execute_runs_one_statement_through_the_tools_path(services: Services) -> None:
    result = services.explorer.execute(OWNER, "SELECT id, label FROM items WHERE id <= 2 ORDER BY id")
    assert result == {
        "columns": ["id", "label"],
        "rows": [[1, "item 1"], [2, "item 2"]],
        "rowCount": 2,
        "truncated": False,
    }
    with pytest.raises(SqlFailed) as failed:
        services.explorer.execute(OWNER, "SELECT * FROM missing_table")
    assert failed.value.code == "sql_error" and failed.value.sqlstate == "42P01"
    with pytest.raises(SqlFailed) as refused:
        services.explorer.execute(OWNER, "SELECT 1; DROP TABLE items")
    assert refused.value.code == "sql_refused" and refused.value.status == 400
    audit = services.store.db.run(
        "SELECT tool_name, outcome FROM tool_audit_log WHERE workspace_id = 'ws-a' ORDER BY id DESC LIMIT 3"
    )
    assert [a[1] for a in audit] == ["refused", "sql_error", "ok"] and {a[0] for a in audit} == {"run_sql"}


def test_read_member_reads_but_cannot_write(services: Services) -> None:
    reader = Scope.workspace("reader", "ws-a")
    assert query(services, reader, table="items", limit=1)["rows"][0][0] == 1
    assert any(t["name"] == "items" for t in services.explorer.tables(reader)["tables"])
    for statement in ("DELETE FROM items", "DROP TABLE items", "UPDATE items SET label = 'x'"):
        with pytest.raises(SqlFailed) as caught:
            services.explorer.execute(reader, statement)
        assert caught.value.status == 400
    assert sql(services, "SELECT count(*), count(*) FILTER (WHERE label = 'x') FROM items") == [[ROWS, 0]]


# Tenancy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "ws"), [("other", "ws-a"), ("nobody", "ws-a"), ("owner", "ws-other"), ("owner", "ws-missing")]
)
def test_cross_tenant_attempts_are_404_and_leak_nothing(services: Services, user: str, ws: str) -> None:
    scope = Scope.workspace(user, ws)
    for attempt in (
        lambda: services.explorer.tables(scope),
        lambda: query(services, scope, table="items"),
        lambda: services.explorer.execute(scope, "SELECT count(*) FROM items"),
        lambda: services.explorer.connection(scope),
    ):
        with pytest.raises(NotFound) as caught:
            attempt()
        assert "items" not in caught.value.message and "item 1" not in caught.value.message


def test_global_database_is_the_callers_own_only(services: Services) -> None:
    sql(services, "CREATE TABLE IF NOT EXISTS prefs (k text PRIMARY KEY, v text)", ws=None)
    sql(services, "INSERT INTO prefs VALUES ('theme', 'dark') ON CONFLICT DO NOTHING", ws=None)
    mine = Scope.global_database("owner", "owner")
    listing = services.explorer.tables(mine)
    assert listing["database"] == "global" and [t["name"] for t in listing["tables"]] == ["prefs"]
    assert query(services, mine, table="prefs")["rows"] == [["theme", "dark"]]
    with pytest.raises(Forbidden):
        Scope.global_database("other", "owner")
    theirs = Scope.global_database("other", "other")  # their own global database does not have it
    assert services.explorer.tables(theirs)["tables"] == []
    with pytest.raises(NotFound):
        query(services, theirs, table="prefs")


# Budget and rate limits -------------------------------------------------------------------------
def test_budget_exceeded_is_402_for_every_database_operation(services: Services) -> None:
    services.store.db.run("UPDATE user_db_budget SET budget_exceeded = true WHERE user_id = 'owner'")
    for attempt in (
        lambda: services.explorer.tables(OWNER),
        lambda: query(services, table="items"),
        lambda: services.explorer.execute(OWNER, "SELECT 1"),
        lambda: services.explorer.tables(Scope.global_database("owner", "owner")),
    ):
        with pytest.raises(BudgetExceeded) as caught:
            attempt()
        assert caught.value.status == 402
    # A read member of the owner's workspace is paused too: it is the owner's budget.
    with pytest.raises(BudgetExceeded):
        services.explorer.tables(Scope.workspace("reader", "ws-a"))


def test_explorer_calls_count_against_the_rate_limit(env: Services, pg_admin_url: str) -> None:
    limited = Services(env.settings.model_copy(update={"rate_limit_per_user": 3, "rate_limit_window_seconds": 3600}))
    try:
        limited.explorer.tables(Scope.workspace("reader", "ws-a"))
        query(limited, Scope.workspace("reader", "ws-a"), table="items", limit=1)  # two statements
        with pytest.raises(RateLimited) as caught:
            limited.explorer.execute(Scope.workspace("reader", "ws-a"), "SELECT 1")
        assert caught.value.status == 429 and caught.value.retry_after >= 1
    finally:
        limited.store.db.run("DELETE FROM rate_limit_counters")
        limited.close()


# Connection -------------------------------------------------------------------------------------
def test_connection_facts_are_masked_and_match_the_record(
    services: Services, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    record = services.store.get_database(Tenant("workspace", "ws-a"))
    assert record is not None and record.encrypted_uri
    uri = services.keyring.decrypt(record.encrypted_uri, connection_uri_context("workspace:ws-a"))
    real = parse_pg_url(uri)
    assert real.password and len(real.password) >= 16
    facts = services.explorer.connection(OWNER)
    assert facts == {
        "provider": "postgres",
        "host": real.display_host,
        "port": real.port,
        "database": real.database,
        "role": real.user,
        "password": "********",
        "pooled": False,
        "status": "ready",
        "sslmode": real.sslmode,
    }
    reader = services.explorer.connection(Scope.workspace("reader", "ws-a"))
    assert reader["password"] == "********" and reader["database"] == real.database
    assert reader["role"] != real.user and reader["role"].endswith("_ro")  # the read-only role a reader uses
    haystack = json.dumps([facts, reader]) + caplog.text + "".join(capsys.readouterr())
    assert real.password not in haystack and uri not in haystack and "postgresql://" not in haystack


def test_connection_of_a_database_still_provisioning_has_no_address(services: Services) -> None:
    tenant = Tenant("workspace", "ws-a")
    services.store.set_database_status(tenant, "provisioning")
    try:
        facts = services.explorer.connection(OWNER)
        assert facts["status"] == "provisioning" and facts["password"] == "********"
    finally:
        services.store.set_database_status(tenant, "ready")
