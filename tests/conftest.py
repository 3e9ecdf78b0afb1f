"""Shared fixtures: one real Postgres server for the session (embedded, or $DATABASE_URL when set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "agentdb-test")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "agentdb")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
    os.environ[_var] = "testing"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL to a real Postgres server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    from local.embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"))
    url = server.start()
    yield url
    server.destroy()


@pytest.fixture
def scratch_database(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the server (dropped afterwards); yields its superuser URL."""
    import pg8000.native

    from agentdb.pgurl import parse_pg_url

    admin = parse_pg_url(pg_admin_url)
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = pg8000.native.Connection(**admin.connect_kwargs())
    conn.run(f'CREATE DATABASE "{name}"')
    url = admin.with_credentials(admin.user, admin.password or "", name)
    try:
        yield url
    finally:
        conn.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
