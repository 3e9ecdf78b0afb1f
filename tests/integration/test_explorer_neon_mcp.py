"""The explorer on the neon-mcp tool backend: the same code path, through a local MCP server over real HTTP.

The double (``local.neon_mcp_double``) runs each project's SQL on a real Postgres database and answers
the way the hosted server does (rows as objects, bigint as text).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pg8000.native
import pytest

from agentdb.config import load_settings
from agentdb.crypto import build_keyring, connection_uri_context
from agentdb.explorer.models import QueryRequest
from agentdb.explorer.service import ExplorerService, Scope
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import Tenant
from agentdb.store import Database, Store
from agentdb.store.migrate import migrate
from agentdb.store.tool_schemas import ToolSchemaCache
from agentdb.tools.neon_mcp import NeonMcpBackend
from agentdb.tools.service import ToolService
from local.neon_mcp_double import NeonMcpDouble

API_KEY = "napi_test_" + secrets.token_hex(20)
ROWS = 1500


@pytest.fixture
def explorer(scratch_database: str, pg_admin_url: str) -> Iterator[tuple[ExplorerService, NeonMcpDouble, str]]:
    admin = parse_pg_url(pg_admin_url)
    conn = pg8000.native.Connection(**admin.connect_kwargs())
    project, dbname = f"proj-{uuid.uuid4().hex[:8]}", f"p_{uuid.uuid4().hex[:12]}"
    conn.run(f'CREATE DATABASE "{dbname}"')
    project_url = admin.with_credentials(admin.user, admin.password or "", dbname)
    double = NeonMcpDouble(API_KEY, {project: project_url})
    double.start()
    migrate(scratch_database)
    settings = load_settings(
        {
            "DATABASE_URL": scratch_database,
            "LOCAL_ENCRYPTION_KEY": secrets.token_hex(32),
            "RATE_LIMIT_PER_USER": "0",
            "RATE_LIMIT_PER_WORKSPACE": "0",
        }
    )
    db = Database(scratch_database)
    store, keyring = Store(db), build_keyring(settings)
    store.upsert_user("ann", None, "free", datetime.now(UTC))
    store.ensure_budget("ann")
    store.upsert_workspace("ws-n", "ann", None)
    tenant = Tenant("workspace", "ws-n")
    store.insert_database(tenant, "neon")
    store.mark_database_ready(
        tenant,
        project_id=project,
        branch_id=None,
        database_name=dbname,
        role_name=admin.user,
        encrypted_uri=keyring.encrypt(project_url, connection_uri_context(tenant.context_key)),
    )
    assert double.url
    backend = NeonMcpBackend(double.url, API_KEY, ToolSchemaCache(db), timeout=10.0)
    yield ExplorerService(ToolService(store, keyring, backend, settings), keyring), double, project_url
    backend.close()
    double.stop()
    db.close()
    conn.run(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    conn.close()
    assert not double.violations


def test_explorer_pages_through_the_neon_mcp_backend(explorer: tuple[ExplorerService, NeonMcpDouble, str]) -> None:
    service, double, project_url = explorer
    scope = Scope.workspace("ann", "ws-n")
    service.execute(scope, "CREATE TABLE big (id bigint PRIMARY KEY, label text NOT NULL, amount numeric)")
    service.execute(
        scope, f"INSERT INTO big SELECT g, 'row ' || g, round(g / 10.0, 1) FROM generate_series(1, {ROWS}) g"
    )
    service.execute(scope, "ANALYZE big")
    listing = service.tables(scope)
    assert [(t["name"], t["rowEstimate"]) for t in listing["tables"]] == [("big", ROWS)]  # bigint text → int

    for direction in ("asc", "desc"):
        ids: list[Any] = []
        cursor = None
        while True:
            body: dict[str, Any] = {"table": "big", "limit": 400, "orderBy": {"column": "id", "direction": direction}}
            page = service.query(scope, QueryRequest.model_validate({**body, **({"cursor": cursor} if cursor else {})}))
            ids += [row[0] for row in page.rows]
            cursor = page.next_cursor
            if cursor is None:
                break
        # The hosted driver answers bigint as text; the keyset cursor carries it as text either way.
        assert ids == [str(i) for i in sorted(range(1, ROWS + 1), reverse=direction == "desc")]
    page = service.query(scope, QueryRequest.model_validate({"table": "big", "limit": 2, "offset": 10}))
    assert page.columns[0] == {"name": "id", "type": "bigint"} and page.rows == [
        ["11", "row 11", "1.1"],
        ["12", "row 12", "1.2"],
    ]

    called = {c.tool for c in double.calls if c.method == "tools/call"}
    assert called == {"run_sql"}  # every statement through the one tool
    facts = service.connection(scope)
    real = parse_pg_url(project_url)
    assert facts["provider"] == "neon" and facts["database"] == real.database and facts["password"] == "********"
    assert real.password is None or real.password not in str(facts)
