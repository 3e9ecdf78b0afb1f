"""The postgres provider on its own: names, pause/resume, listing, idempotent create and delete."""

from __future__ import annotations

import pg8000.exceptions
import pytest

from agentdb.providers.base import Tenant
from agentdb.providers.postgres import PostgresProvider, scram_sha256_verifier
from agentdb.store import Database
from tests.support import ServerInspector, connect


@pytest.fixture
def provider(pg_admin_url: str, tenant_prefix: str) -> PostgresProvider:
    return PostgresProvider(Database(pg_admin_url), prefix=tenant_prefix)


def test_create_is_idempotent_and_the_latest_credentials_work(
    provider: PostgresProvider, server: ServerInspector
) -> None:
    tenant = Tenant("workspace", "ws-p")
    first = provider.create(tenant)
    second = provider.create(tenant)
    assert first.project_id == second.project_id
    connect(second.connection_uri).close()
    assert second.readonly_connection_uri
    ro = connect(second.readonly_connection_uri)
    with pytest.raises(pg8000.exceptions.DatabaseError) as refused:
        ro.run("CREATE TABLE x (id int)")
    assert refused.value.args[0]["C"] in ("25006", "42501")  # read-only transaction / no privilege
    ro.close()
    assert len(server.databases()) == 1 and len(server.roles()) == 2


def test_pause_refuses_connections_and_resume_restores_them(
    provider: PostgresProvider, server: ServerInspector
) -> None:
    tenant = Tenant("global", "paused-user")
    made = provider.create(tenant)
    held = connect(made.connection_uri)
    provider.pause(tenant, made.project_id)
    provider.pause(tenant, made.project_id)  # idempotent
    with pytest.raises(Exception):
        held.run("SELECT 1")  # open sessions were ended
    with pytest.raises(pg8000.exceptions.DatabaseError):
        connect(made.connection_uri)
    provider.resume(tenant, made.project_id)
    provider.resume(tenant, made.project_id)
    connect(made.connection_uri).close()
    connect(made.readonly_connection_uri or "").close()


def test_list_managed_and_delete(provider: PostgresProvider, server: ServerInspector) -> None:
    made = [provider.create(Tenant("workspace", f"ws-{i}")) for i in range(3)]
    assert sorted(m.project_id for m in provider.list_managed()) == sorted(m.project_id for m in made)
    for i, m in enumerate(made):
        provider.delete(Tenant("workspace", f"ws-{i}"), m.project_id)
        provider.delete(Tenant("workspace", f"ws-{i}"), m.project_id)
    assert provider.list_managed() == [] and server.roles() == []


def test_scram_verifier_is_what_postgres_accepts(provider: PostgresProvider, server: ServerInspector) -> None:
    verifier = scram_sha256_verifier("correct horse")
    assert verifier.startswith("SCRAM-SHA-256$4096:") and "correct horse" not in verifier
    made = provider.create(Tenant("global", "scram"))
    assert made.connection_uri.count(":") >= 2  # the URI carries the password; the server only the verifier
    stored = provider._admin.run("SELECT rolpassword FROM pg_authid WHERE rolname = :r", r=made.role_name)[0][0]
    assert stored.startswith("SCRAM-SHA-256$")
