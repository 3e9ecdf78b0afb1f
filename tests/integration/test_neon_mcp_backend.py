"""The neon-mcp tool backend against a local MCP server (``local.neon_mcp_double``) over real HTTP.

Every project of the double is a real Postgres database on the test server; the control plane (schema
cache) is a real migrated database too.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pg8000.native
import pytest

from agentdb.errors import ConfigError, UpstreamError, UpstreamUnavailable
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import Tenant
from agentdb.store.db import Database
from agentdb.store.migrate import migrate
from agentdb.store.tool_schemas import ToolSchemaCache, fingerprint
from agentdb.tools.backend import Limits, ToolTarget
from agentdb.tools.neon_mcp import HOSTED_SERVER_TYPE, NeonMcpBackend, default_server_type
from local.neon_mcp_double import NeonMcpDouble, load_schemas

API_KEY = "napi_test_" + secrets.token_hex(20)
LIMITS = Limits()


@pytest.fixture
def projects(pg_admin_url: str) -> Iterator[dict[str, str]]:
    """Two Neon projects of the double: project id → superuser URL of its own real database."""
    admin = parse_pg_url(pg_admin_url)
    conn = pg8000.native.Connection(**admin.connect_kwargs())
    names = {f"proj-{label}-{uuid.uuid4().hex[:6]}": f"p_{uuid.uuid4().hex[:12]}" for label in ("a", "b")}
    for name in names.values():
        conn.run(f'CREATE DATABASE "{name}"')
    try:
        yield {pid: admin.with_credentials(admin.user, admin.password or "", db) for pid, db in names.items()}
    finally:
        for name in names.values():
            conn.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture
def double(projects: dict[str, str]) -> Iterator[NeonMcpDouble]:
    server = NeonMcpDouble(API_KEY, projects)
    server.start()
    yield server
    server.stop()
    assert not server.violations


@pytest.fixture
def schema_cache(scratch_database: str) -> Iterator[ToolSchemaCache]:
    migrate(scratch_database)
    db = Database(scratch_database)
    yield ToolSchemaCache(db)
    db.close()


@pytest.fixture
def make_backend(double: NeonMcpDouble, schema_cache: ToolSchemaCache) -> Iterator[Callable[..., NeonMcpBackend]]:
    built: list[NeonMcpBackend] = []

    def factory(**kwargs: Any) -> NeonMcpBackend:
        kwargs.setdefault("timeout", 5.0)
        url = kwargs.pop("url", double.url)
        key = kwargs.pop("api_key", API_KEY)
        cache = kwargs.pop("schema_cache", schema_cache)
        backend = NeonMcpBackend(url, key, cache, **kwargs)
        built.append(backend)
        return backend

    yield factory
    for backend in built:
        backend.close()


def target(
    projects: dict[str, str], index: int = 0, *, read_only: bool = False, branch_id: str | None = None
) -> ToolTarget:
    project_id = sorted(projects)[index]
    database = parse_pg_url(projects[project_id]).database

    def no_uri() -> str:  # the neon-mcp backend must never need the connection URI
        raise AssertionError("neon-mcp asked for the connection URI")

    return ToolTarget(
        tenant=Tenant("workspace", f"ws-{index}"),
        provider="neon",
        project_id=project_id,
        branch_id=branch_id,
        database_name=database or "neondb",
        read_only=read_only,
        connection_uri=no_uri,
        cache_key=project_id,
    )


def query(url: str, sql: str) -> list[list[Any]]:
    conn = pg8000.native.Connection(**parse_pg_url(url).connect_kwargs())
    try:
        return conn.run(sql) or []
    finally:
        conn.close()


def tool_calls(double: NeonMcpDouble, tool: str | None = None) -> list[Any]:
    return [c for c in double.calls if c.method == "tools/call" and (tool is None or c.tool == tool)]


# SQL ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reuse", [True, False], ids=["reused-session", "fresh-session"])
def test_run_sql_select_ddl_dml(
    make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str], reuse: bool
) -> None:
    backend = make_backend(reuse_session=reuse)
    t = target(projects)
    ddl = backend.call(t, "run_sql", {"sql": "CREATE TABLE items (id int PRIMARY KEY, name text, n bigint)"}, LIMITS)
    assert ddl.error is None and ddl.rows == []
    dml = backend.call(t, "run_sql", {"sql": "INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 20)"}, LIMITS)
    assert dml.error is None
    returning = backend.call(t, "run_sql", {"sql": "UPDATE items SET n = n + 1 WHERE id = 2 RETURNING id, n"}, LIMITS)
    assert returning.columns == ["id", "n"] and returning.rows == [[2, "21"]]  # bigint arrives as text (node-pg)
    select = backend.call(t, "run_sql", {"sql": "SELECT id, name FROM items ORDER BY id"}, LIMITS)
    assert (select.columns, select.rows, select.row_count, select.truncated) == (
        ["id", "name"],
        [[1, "one"], [2, "two"]],
        2,
        False,
    )
    assert query(projects[t.project_id or ""], "SELECT count(*) FROM items") == [[2]]


def test_run_sql_transaction_is_all_or_nothing(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    t = target(projects)
    url = projects[t.project_id or ""]
    ok = backend.call(
        t,
        "run_sql_transaction",
        {
            "sqlStatements": [
                "CREATE TABLE acct (id int PRIMARY KEY, v int)",
                "INSERT INTO acct VALUES (1, 10)",
                "SELECT * FROM acct",
            ]
        },
        LIMITS,
    )
    assert ok.error is None
    assert [s["rows"] for s in ok.statements or []] == [[], [], [[1, 10]]]
    assert ok.columns == ["id", "v"] and ok.rows == [[1, 10]]

    failed = backend.call(
        t,
        "run_sql_transaction",
        {"sqlStatements": ["INSERT INTO acct VALUES (2, 20)", "INSERT INTO acct VALUES (1, 99)"]},
        LIMITS,
    )
    assert failed.error is not None and failed.error.sqlstate == "23505"
    assert query(url, "SELECT id, v FROM acct ORDER BY id") == [[1, 10]]  # the first insert was rolled back

    # The guard statement we prepend sets the transaction's timeouts; the caller never sees its result.
    sent = tool_calls(double, "run_sql_transaction")[-1].arguments["sqlStatements"]
    assert "statement_timeout" in sent[0] and sent[1:] == [
        "INSERT INTO acct VALUES (2, 20)",
        "INSERT INTO acct VALUES (1, 99)",
    ]


def test_statement_timeout_applies_inside_transactions(
    make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]
) -> None:
    backend = make_backend()
    outcome = backend.call(
        target(projects),
        "run_sql_transaction",
        {"sqlStatements": ["SELECT pg_sleep(2)"]},
        Limits(statement_timeout_ms=200),
    )
    assert outcome.error is not None and outcome.error.sqlstate == "57014"  # query_canceled


def test_list_tables_maps_to_get_database_tables(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(
        t,
        "run_sql_transaction",
        {
            "sqlStatements": [
                "CREATE SCHEMA crm",
                "CREATE TABLE crm.contacts (id int)",
                "CREATE VIEW v AS SELECT 1 AS x",
            ]
        },
        LIMITS,
    )
    everything = backend.call(t, "list_tables", {}, LIMITS)
    assert everything.error is None
    assert [(x["schema"], x["name"], x["type"]) for x in everything.data["tables"]] == [
        ("crm", "contacts", "table"),
        ("public", "v", "view"),
    ]
    assert everything.columns == ["schema", "name", "type", "rowEstimate", "sizeBytes"] and everything.row_count == 2
    only_crm = backend.call(t, "list_tables", {"schema": "crm"}, LIMITS)
    assert [x["name"] for x in only_crm.data["tables"]] == ["contacts"]
    names = {c.tool for c in tool_calls(double)}
    assert "get_database_tables" in names and "list_tables" not in names
    assert tool_calls(double, "get_database_tables")[-1].arguments == {
        "projectId": t.project_id,
        "databaseName": t.database_name,
    }


def test_describe_table_schema(make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(
        t,
        "run_sql_transaction",
        {
            "sqlStatements": [
                "CREATE TABLE owners (id int PRIMARY KEY)",
                "CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES owners(id),"
                " name text NOT NULL DEFAULT 'x', UNIQUE (name))",
            ]
        },
        LIMITS,
    )
    outcome = backend.call(t, "describe_table_schema", {"tableName": "pets"}, LIMITS)
    assert outcome.error is None
    data = outcome.data
    assert (data["schema"], data["name"]) == ("public", "pets")
    assert [(c["name"], c["type"], c["nullable"]) for c in data["columns"]] == [
        ("id", "integer", False),
        ("owner", "integer", True),
        ("name", "text", False),
    ]
    assert data["primaryKey"] == ["id"]
    assert [fk["columns"] for fk in data["foreignKeys"]] == [["owner"]]
    assert [c["type"] for c in data["constraints"]] == ["unique"]
    assert {i["name"]: (i["unique"], i["primary"]) for i in data["indexes"]} == {
        "pets_name_key": (True, False),
        "pets_pkey": (True, True),
    }
    assert outcome.columns == ["name", "type", "nullable", "default"] and outcome.row_count == 3
    assert "Columns:" in data["formatted"]

    missing = backend.call(t, "describe_table_schema", {"tableName": "nope"}, LIMITS)
    assert missing.error is not None and missing.error.sqlstate == "42P01"


def test_row_and_byte_caps_set_truncated(make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]) -> None:
    backend = make_backend()
    t = target(projects)
    sql = "SELECT g AS n, repeat('x', 100) AS pad FROM generate_series(1, 50) g"
    by_rows = backend.call(t, "run_sql", {"sql": sql}, Limits(max_rows=10))
    assert (by_rows.row_count, by_rows.truncated, by_rows.rows[-1][0]) == (10, True, 10)
    by_bytes = backend.call(t, "run_sql", {"sql": sql}, Limits(max_result_bytes=1000))
    assert by_bytes.truncated and 0 < by_bytes.row_count < 10
    assert sum(len(str(r)) for r in by_bytes.rows) <= 1200
    whole = backend.call(t, "run_sql", {"sql": sql}, LIMITS)
    assert (whole.row_count, whole.truncated) == (50, False)
    in_transaction = backend.call(
        t, "run_sql_transaction", {"sqlStatements": [sql, "SELECT 1 AS one"]}, Limits(max_rows=5)
    )
    assert in_transaction.statements is not None
    assert [(s["rowCount"], s["truncated"]) for s in in_transaction.statements] == [(5, True), (1, False)]


def test_sql_error_is_a_tool_error(make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]) -> None:
    backend = make_backend()
    outcome = backend.call(target(projects), "run_sql", {"sql": "SELECT * FROM no_such_table"}, LIMITS)
    assert outcome.error is not None
    assert outcome.error.sqlstate == "42P01"
    assert 'relation "no_such_table" does not exist' in outcome.error.message
    assert outcome.rows == [] and not outcome.truncated


# Access and scoping ---------------------------------------------------------------------------------
def test_read_only_target_refuses_writes_and_sends_readonly(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    writer, reader = target(projects), target(projects, read_only=True)
    backend.call(writer, "run_sql", {"sql": "CREATE TABLE notes (body text)"}, LIMITS)
    refused = backend.call(reader, "run_sql", {"sql": "INSERT INTO notes VALUES ('no')"}, LIMITS)
    assert refused.error is not None and refused.error.sqlstate == "25006"  # read_only_sql_transaction
    refused_tx = backend.call(reader, "run_sql_transaction", {"sqlStatements": ["DELETE FROM notes"]}, LIMITS)
    assert refused_tx.error is not None and refused_tx.error.sqlstate == "25006"
    read = backend.call(reader, "run_sql", {"sql": "SELECT count(*) AS n FROM notes"}, LIMITS)
    assert read.error is None and read.rows == [["0"]]

    queries = [c.query for c in tool_calls(double)]
    assert {"projectId": writer.project_id, "category": "querying,schema"} in queries
    assert {"projectId": writer.project_id, "category": "querying,schema", "readonly": "true"} in queries
    assert backend.endpoint(reader).endswith(f"?projectId={reader.project_id}&category=querying,schema&readonly=true")
    assert "readonly" not in backend.endpoint(writer)


def test_project_scoping(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    a, b = target(projects, 0), target(projects, 1)
    backend.call(a, "run_sql", {"sql": "CREATE TABLE only_in_a (x int)"}, LIMITS)
    backend.call(b, "run_sql", {"sql": "CREATE TABLE only_in_b (x int)"}, LIMITS)
    assert [t["name"] for t in backend.call(a, "list_tables", {}, LIMITS).data["tables"]] == ["only_in_a"]
    assert [t["name"] for t in backend.call(b, "list_tables", {}, LIMITS).data["tables"]] == ["only_in_b"]
    for call in tool_calls(double):
        assert call.arguments["projectId"] == call.query["projectId"]
    assert query(projects[b.project_id or ""], "SELECT to_regclass('only_in_a') IS NULL") == [[True]]

    # The caller's arguments never carry routing: whatever the use case left in, the target decides.
    backend.call(a, "run_sql", {"sql": "SELECT 1", "projectId": b.project_id}, LIMITS)
    assert tool_calls(double)[-1].arguments["projectId"] == a.project_id


def test_double_refuses_a_project_other_than_the_urls(double: NeonMcpDouble, projects: dict[str, str]) -> None:
    import asyncio

    import httpx2
    import mcp_types
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    a, b = sorted(projects)

    async def attempt() -> mcp_types.CallToolResult:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {API_KEY}"}) as http,
            Client(streamable_http_client(f"{double.url}?projectId={a}", http_client=http), mode="legacy") as client,
        ):
            return await client.call_tool("run_sql", {"sql": "SELECT 1", "projectId": b})

    result = asyncio.run(attempt())
    assert result.is_error
    assert "does not match this connection's project" in result.content[0].text  # type: ignore[union-attr]


def test_branch_and_database_come_from_the_target(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    t = target(projects, branch_id="br-main-123")
    assert backend.call(t, "run_sql", {"sql": "SELECT current_database() AS db"}, LIMITS).rows == [[t.database_name]]
    assert tool_calls(double)[-1].arguments == {
        "sql": "SELECT current_database() AS db",
        "projectId": t.project_id,
        "branchId": "br-main-123",
        "databaseName": t.database_name,
    }


def test_non_neon_target_is_a_configuration_error(
    make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]
) -> None:
    t = target(projects)
    postgres = ToolTarget(t.tenant, "postgres", None, None, t.database_name, False, connection_uri=lambda: "")
    with pytest.raises(ConfigError):
        make_backend().call(postgres, "run_sql", {"sql": "SELECT 1"}, LIMITS)


# Schemas -------------------------------------------------------------------------------------------
def test_tool_schema_cache_round_trip(schema_cache: ToolSchemaCache) -> None:
    schema = {"type": "object", "properties": {"sql": {"type": "string"}}}
    stored = schema_cache.put_many("neon-hosted", {"run_sql": schema, "other": {"type": "object"}})
    assert set(stored) == {"run_sql", "other"}
    replaced = schema_cache.put("neon-hosted", "other", {"type": "object", "required": []})
    assert replaced.discovered_at >= stored["other"].discovered_at
    cached = schema_cache.get("neon-hosted")
    assert cached["run_sql"].schema == schema and cached["other"].schema == {"type": "object", "required": []}
    assert cached["run_sql"].fingerprint == fingerprint({"properties": {"sql": {"type": "string"}}, "type": "object"})
    assert schema_cache.get("elsewhere") == {}
    assert schema_cache.delete("neon-hosted") == 2 and schema_cache.get("neon-hosted") == {}


def test_schemas_are_cached_and_reused_across_instances(
    make_backend: Callable[..., NeonMcpBackend],
    double: NeonMcpDouble,
    projects: dict[str, str],
    schema_cache: ToolSchemaCache,
) -> None:
    first = make_backend()
    t = target(projects)
    first.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    first.call(t, "list_tables", {}, LIMITS)
    assert double.count("tools/list") == 1 and first.stats.list_tools == 1

    cached = schema_cache.get(first.server_type)
    published = load_schemas()
    for hosted in ("run_sql", "run_sql_transaction", "get_database_tables", "describe_table_schema"):
        assert cached[hosted].schema == published[hosted]
    assert "get_connection_string" not in cached  # category=querying,schema hides it

    second = make_backend()  # a new container: empty memory, same control plane
    second.call(t, "run_sql", {"sql": "SELECT 2"}, LIMITS)
    second.call(target(projects, 1), "describe_table_schema", {"tableName": "x"}, LIMITS)
    assert double.count("tools/list") == 1 and second.stats.list_tools == 0


def test_expired_schemas_are_discovered_again(
    make_backend: Callable[..., NeonMcpBackend],
    double: NeonMcpDouble,
    projects: dict[str, str],
    scratch_database: str,
) -> None:
    t = target(projects)
    make_backend(schema_ttl_seconds=60).call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    query(scratch_database, "UPDATE mcp_tool_schema_cache SET discovered_at = now() - interval '2 minutes'")
    later = make_backend(schema_ttl_seconds=60)
    later.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert double.count("tools/list") == 2 and later.stats.list_tools == 1
    ages = query(scratch_database, "SELECT max(now() - discovered_at) < interval '1 minute' FROM mcp_tool_schema_cache")
    assert ages == [[True]]


@pytest.mark.parametrize("as_result", [False, True], ids=["jsonrpc-error", "isError-result"])
def test_schema_drift_refreshes_once_and_succeeds(
    make_backend: Callable[..., NeonMcpBackend],
    double: NeonMcpDouble,
    projects: dict[str, str],
    schema_cache: ToolSchemaCache,
    as_result: bool,
) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    # The server now fills projectId in from the URL and no longer accepts it as an argument.
    double.drift(remove=["projectId"])
    double.validation_errors_as_results = as_result
    outcome = backend.call(t, "run_sql", {"sql": "SELECT 42 AS answer"}, LIMITS)
    assert outcome.error is None and outcome.rows == [[42]]
    assert backend.stats.schema_refreshes == 1 and double.count("tools/list") == 2
    rejected, accepted = tool_calls(double, "run_sql")[-2:]
    assert "projectId" in rejected.arguments and "projectId" not in accepted.arguments
    assert "projectId" not in schema_cache.get(backend.server_type)["run_sql"].schema["properties"]

    # Later calls (and other instances) use the refreshed schema straight away.
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    make_backend().call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert double.count("tools/list") == 2 and backend.stats.schema_refreshes == 1


@pytest.mark.parametrize("rename", [{"databaseName": "database"}, {"sql": "query"}])
def test_incompatible_drift_fails_after_one_refresh(
    make_backend: Callable[..., NeonMcpBackend],
    double: NeonMcpDouble,
    projects: dict[str, str],
    rename: dict[str, str],
) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    double.drift("run_sql", rename=rename)
    with pytest.raises(UpstreamError) as caught:
        backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert caught.value.code == "upstream_schema_mismatch"
    assert backend.stats.schema_refreshes == 1 and double.count("tools/list") == 2
    assert len(tool_calls(double, "run_sql")) == 2  # the rejected call; nothing was sent after the refresh


# Failures ------------------------------------------------------------------------------------------
def test_server_down_is_upstream_unavailable(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    double.stop()
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert "Neon MCP server unavailable" in caught.value.message and caught.value.status == 503
    assert backend.stats.reconnects == 1  # the reused session failed; one reconnect was tried
    assert time.monotonic() - started < 5

    fresh = make_backend(reuse_session=False)
    with pytest.raises(UpstreamUnavailable):
        fresh.call(t, "list_tables", {}, LIMITS)


def test_unreachable_url_is_upstream_unavailable(
    make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str]
) -> None:
    from local.embedded_pg import free_port

    backend = make_backend(url=f"http://127.0.0.1:{free_port()}/mcp", schema_cache=None)
    with pytest.raises(UpstreamUnavailable, match="Neon MCP server unavailable"):
        backend.call(target(projects), "run_sql", {"sql": "SELECT 1"}, LIMITS)


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-session", "fresh-session"])
def test_slow_server_times_out(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str], reuse: bool
) -> None:
    backend = make_backend(timeout=1.0, reuse_session=reuse)
    t = target(projects)
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    double.delay_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="no answer within 1 s"):
        backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert time.monotonic() - started < 2.5
    double.delay_seconds = 0
    assert backend.call(t, "run_sql", {"sql": "SELECT 7 AS n"}, LIMITS).rows == [[7]]


def test_http_errors_are_upstream_errors(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    t = target(projects)
    with pytest.raises(UpstreamError) as bad_key:
        make_backend(api_key="napi_wrong").call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert type(bad_key.value) is UpstreamError and "HTTP 401" in bad_key.value.message
    assert bad_key.value.code == "upstream_unauthorized"

    double.forbidden_projects.add(t.project_id or "")
    with pytest.raises(UpstreamError, match="HTTP 403"):
        make_backend().call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    double.forbidden_projects.clear()

    backend = make_backend()
    backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    double.fail_http.append(503)
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert backend.call(t, "run_sql", {"sql": "SELECT 1 AS one"}, LIMITS).rows == [[1]]


def test_wrong_path_and_oversized_answers_are_upstream_errors(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    t = target(projects)
    wrong = make_backend(url=(double.url or "").replace("/mcp", "/nope"))
    with pytest.raises(UpstreamError, match=r"HTTP 404 \(check NEON_MCP_URL\)"):
        wrong.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)

    small = make_backend(max_response_bytes=20_000)
    big = "SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 100) g"
    with pytest.raises(UpstreamError) as caught:
        small.call(t, "run_sql", {"sql": big}, LIMITS)
    assert caught.value.code == "result_too_large"
    assert small.call(t, "run_sql", {"sql": "SELECT 1 AS one"}, LIMITS).rows == [[1]]


def test_a_lost_answer_is_retried_only_when_nothing_can_change(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    writer, reader = target(projects), target(projects, read_only=True)
    backend.call(writer, "run_sql", {"sql": "CREATE TABLE ledger (x int)"}, LIMITS)
    backend.call(reader, "run_sql", {"sql": "SELECT 1"}, LIMITS)

    double.cut_answers = 1  # the INSERT runs, its answer is lost: retrying could insert twice
    with pytest.raises(UpstreamUnavailable, match="connection broke"):
        backend.call(writer, "run_sql", {"sql": "INSERT INTO ledger VALUES (1)"}, LIMITS)
    assert query(projects[writer.project_id or ""], "SELECT count(*) FROM ledger") == [[1]]
    assert backend.stats.reconnects == 0

    double.cut_answers = 1  # a read-only call can safely go again
    assert backend.call(reader, "run_sql", {"sql": "SELECT count(*) AS n FROM ledger"}, LIMITS).rows == [["1"]]
    assert backend.stats.reconnects == 1
    assert backend.call(writer, "run_sql", {"sql": "SELECT 2 AS n"}, LIMITS).rows == [[2]]


def test_restarted_server_session_is_reopened_once(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str]
) -> None:
    backend = make_backend()
    t = target(projects)
    backend.call(t, "run_sql", {"sql": "CREATE TABLE once (x int)"}, LIMITS)
    port = double.port
    double.stop()
    replacement = NeonMcpDouble(API_KEY, projects, port=port)  # same URL, but it never saw our session
    replacement.start()
    try:
        outcome = backend.call(t, "run_sql", {"sql": "INSERT INTO once VALUES (1)"}, LIMITS)
        assert outcome.error is None
        assert backend.stats.reconnects == 1 and backend.stats.sessions_opened == 2
        assert query(projects[t.project_id or ""], "SELECT count(*) FROM once") == [[1]]  # ran exactly once
        assert next(h.status for h in replacement.http if h.method == "POST") == 404
    finally:
        replacement.stop()


def test_api_key_never_in_messages_or_logs(
    make_backend: Callable[..., NeonMcpBackend],
    double: NeonMcpDouble,
    projects: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = target(projects)
    good = make_backend()
    # Even a server message that echoes the key back (here: SQL that contains it) is redacted.
    echoed = good.call(t, "run_sql", {"sql": f"SELECT CAST('{API_KEY}' AS int)"}, LIMITS)
    assert echoed.error is not None and echoed.error.sqlstate == "22P02"
    assert API_KEY not in echoed.error.message and "[redacted]" in echoed.error.message

    caplog.set_level(logging.DEBUG)  # every logger, the mcp and HTTP client libraries' included
    caplog.clear()
    texts = [repr(good), repr(good.stats)]
    assert good.call(t, "run_sql", {"sql": "SELECT 1 AS one"}, LIMITS).rows == [[1]]
    for backend in (make_backend(api_key=API_KEY + "x"), good):
        if backend is good:
            double.stop()  # a transport failure on the reused session, then on the reconnect
        with pytest.raises((UpstreamError, UpstreamUnavailable)) as caught:
            backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
        texts += [str(caught.value), repr(caught.value), caught.value.message]
        texts += [repr(e) for e in (caught.value.__cause__, caught.value.__context__) if e is not None]
    texts.append(caplog.text)
    assert "Sending client message" in caplog.text  # the capture did see the MCP client's debug log
    for text in texts:
        assert API_KEY not in text


# Sessions and threads ------------------------------------------------------------------------------
@pytest.mark.parametrize("reuse", [True, False], ids=["reused-session", "fresh-session"])
def test_many_calls(
    make_backend: Callable[..., NeonMcpBackend], double: NeonMcpDouble, projects: dict[str, str], reuse: bool
) -> None:
    backend = make_backend(reuse_session=reuse)
    a, b = target(projects, 0), target(projects, 1, read_only=True)
    for i in range(12):
        assert backend.call(a, "run_sql", {"sql": f"SELECT {i} AS i"}, LIMITS).rows == [[i]]
        assert backend.call(b, "run_sql", {"sql": f"SELECT {i} AS i"}, LIMITS).rows == [[i]]
    handshakes = double.count("initialize")
    if reuse:
        assert backend.stats.sessions_opened == 2 and handshakes == 2  # one per (project, read-only)
    else:
        assert backend.stats.sessions_opened == 25 and handshakes == 25  # 24 calls + one tools/list
        deadline = time.monotonic() + 2  # the double logs a request once its answer has gone out
        while len([h for h in double.http if h.method == "DELETE"]) < 25 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len([h for h in double.http if h.method == "DELETE"]) == 25  # each session was ended


@pytest.mark.parametrize("reuse", [True, False], ids=["reused-session", "fresh-session"])
def test_close_leaves_no_threads(
    make_backend: Callable[..., NeonMcpBackend], projects: dict[str, str], reuse: bool
) -> None:
    before = set(threading.enumerate())
    backend = make_backend(reuse_session=reuse)
    t = target(projects)
    for _ in range(3):
        backend.call(t, "run_sql", {"sql": "SELECT 1"}, LIMITS)
    assert any(th.name == "agentdb-neon-mcp" for th in threading.enumerate())
    backend.close()
    leftover = [th for th in set(threading.enumerate()) - before if th.is_alive() and "neon-mcp-double" not in th.name]
    assert [th.name for th in leftover if not th.name.startswith("AnyIO worker")] == []
    assert not any(th.name == "agentdb-neon-mcp" for th in threading.enumerate())
    # A closed backend starts again on demand.
    assert backend.call(t, "run_sql", {"sql": "SELECT 3 AS n"}, LIMITS).rows == [[3]]


def test_server_type_names_the_server() -> None:
    assert default_server_type("https://mcp.neon.tech/mcp") == HOSTED_SERVER_TYPE
    assert default_server_type("http://user:pw@127.0.0.1:4020/mcp?x=1") == "neon-mcp:127.0.0.1:4020/mcp"
