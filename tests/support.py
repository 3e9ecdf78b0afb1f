"""Test helpers: look at the tenant Postgres server directly, as an operator would; a control plane of a
test module's own."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pg8000.native

from agentdb.pgurl import parse_pg_url

if TYPE_CHECKING:
    from agentdb.container import Services


class ServerInspector:
    """Looks at the tenant server directly, as an operator would."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.pattern = prefix.replace("-", "_").replace("_", r"\_") + "%"

    def _run(self, sql: str, **params: Any) -> list[list[Any]]:
        conn = pg8000.native.Connection(**parse_pg_url(self.admin_url).connect_kwargs())
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def databases(self) -> list[str]:
        return [r[0] for r in self._run("SELECT datname FROM pg_database WHERE datname LIKE :p", p=self.pattern)]

    def roles(self) -> list[str]:
        return [r[0] for r in self._run("SELECT rolname FROM pg_roles WHERE rolname LIKE :p", p=self.pattern)]

    def drop_all(self) -> None:
        for name in self.databases():
            self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for name in self.roles():
            self._run(f'DROP ROLE IF EXISTS "{name}"')


def connect(uri: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_pg_url(uri).connect_kwargs(timeout=10))


@contextmanager
def module_control_plane(pg_admin_url: str, **settings: str) -> Iterator[tuple[Services, ServerInspector]]:
    """A fresh, migrated control-plane database and a tenant-name prefix of its own, for a test module that
    provisions its tenants once (provisioning is the slow part). ``settings`` are extra environment
    settings (``SQL_MAX_ROWS="50"``...). Every tenant database and role is dropped afterwards."""
    from agentdb.config import load_settings
    from agentdb.container import Services
    from agentdb.store.migrate import migrate

    admin = parse_pg_url(pg_admin_url)
    name = f"t_{uuid.uuid4().hex[:16]}"
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    conn = pg8000.native.Connection(**admin.connect_kwargs())
    conn.run(f'CREATE DATABASE "{name}"')
    cp_url = admin.with_credentials(admin.user, admin.password or "", name)
    migrate(cp_url)
    env = {
        "DATABASE_URL": cp_url,
        "POSTGRES_ADMIN_URL": pg_admin_url,
        "LOCAL_ENCRYPTION_KEY": secrets.token_hex(32),
        "TENANT_NAME_PREFIX": prefix,
        **settings,
    }
    services = Services(load_settings(env))
    inspector = ServerInspector(pg_admin_url, prefix)
    try:
        yield services, inspector
    finally:
        services.close()
        inspector.drop_all()
        conn.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
