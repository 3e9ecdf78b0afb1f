"""Shared fixtures: one real Postgres server for the session (embedded, or $DATABASE_URL when set)."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator

import pytest

from agentdb.config import Settings, get_settings, load_settings
from agentdb.container import Services, get_services
from agentdb.store.migrate import migrate
from tests.support import ServerInspector

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
def function_env(cp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``cp_env`` as the process environment, the way a Lambda function gets its configuration: the cached
    settings and services are rebuilt from it on first use (set more with ``monkeypatch.setenv`` before
    that) and closed afterwards."""
    for key, value in cp_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_services.cache_clear()
    yield cp_env
    get_services().close()
    get_settings.cache_clear()
    get_services.cache_clear()


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
        services.close()


@pytest.fixture
def services(make_services: Callable[[], Services]) -> Services:
    return make_services()


@pytest.fixture
def server(pg_admin_url: str, tenant_prefix: str) -> Iterator[ServerInspector]:
    inspector = ServerInspector(pg_admin_url, tenant_prefix)
    yield inspector
    inspector.drop_all()
