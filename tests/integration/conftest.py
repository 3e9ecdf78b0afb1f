"""Fixtures for tests that run the lifecycle against a real Postgres server."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pg8000.native
import pytest

from agentdb.config import Settings, load_settings
from agentdb.container import Services
from agentdb.pgurl import parse_pg_url
from agentdb.store.migrate import migrate


@pytest.fixture
def tenant_prefix() -> str:
    """A name prefix unique to the test, so leftovers are attributable and checkable."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def cp_env(scratch_database: str, pg_admin_url: str, tenant_prefix: str) -> dict[str, str]:
    migrate(scratch_database)
    return {
        "DATABASE_URL": scratch_database,
        "POSTGRES_ADMIN_URL": pg_admin_url,
        "DB_PROVIDER": "postgres",
        "KEYRING": "local",
        "LOCAL_ENCRYPTION_KEY": secrets.token_hex(32),
        "TENANT_NAME_PREFIX": tenant_prefix,
        "PROVISION_LOCK_WAIT_SECONDS": "10",
    }


@pytest.fixture
def settings(cp_env: dict[str, str]) -> Settings:
    return load_settings(cp_env)


@pytest.fixture
def make_services(settings: Settings) -> Iterator[Callable[[], Services]]:
    """Build independent Services (own connections), as separate Lambda containers would have."""
    built: list[Services] = []

    def factory() -> Services:
        services = Services(settings)
        built.append(services)
        return services

    yield factory
    for services in built:
        services.store.db.close()
        provider: Any = services.__dict__.get("provider")
        if provider is not None and hasattr(provider, "_admin"):
            provider._admin.close()


@pytest.fixture
def services(make_services: Callable[[], Services]) -> Services:
    return make_services()


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


@pytest.fixture
def server(pg_admin_url: str, tenant_prefix: str) -> Iterator[ServerInspector]:
    inspector = ServerInspector(pg_admin_url, tenant_prefix)
    yield inspector
    inspector.drop_all()


def connect(uri: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_pg_url(uri).connect_kwargs(timeout=10))
