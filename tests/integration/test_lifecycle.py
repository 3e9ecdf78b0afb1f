"""Lifecycle use cases on a real Postgres server with the postgres provider."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pg8000.exceptions
import pytest

from agentdb.container import Services
from agentdb.crypto import connection_uri_context
from agentdb.errors import InvalidInput, NotFound, UpstreamUnavailable
from agentdb.providers.base import ProvisionedDatabase, Tenant
from agentdb.providers.postgres import PostgresProvider
from tests.support import ServerInspector, connect

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tenant_uri(services: Services, tenant: Tenant) -> str:
    record = services.store.get_database(tenant)
    assert record is not None and record.status == "ready" and record.encrypted_uri
    return services.keyring.decrypt(record.encrypted_uri, connection_uri_context(tenant.context_key))


def test_create_user_provisions_an_isolated_global_database(services: Services, server: ServerInspector) -> None:
    outcome = services.lifecycle.create_user("alice", "pro")
    assert outcome.action == "created"
    assert outcome.data["plan"] == "pro"
    assert outcome.data["globalDatabase"]["status"] == "ready"
    record = services.store.get_database(Tenant("global", "alice"))
    assert record is not None
    assert record.encrypted_uri and "postgresql://" not in record.encrypted_uri
    uri = tenant_uri(services, Tenant("global", "alice"))
    conn = connect(uri)
    conn.run("CREATE TABLE notes (id int)")
    assert conn.run("SELECT current_database()")[0][0] == record.database_name
    conn.close()
    assert server.databases() == [record.database_name]
    assert services.store.get_budget("alice") is not None


def test_tenant_role_cannot_open_another_tenants_database(services: Services, server: ServerInspector) -> None:
    services.lifecycle.create_user("alice")
    services.lifecycle.create_workspace("ws-a", "alice")
    services.lifecycle.create_workspace("ws-b", "alice")
    uri_a = tenant_uri(services, Tenant("workspace", "ws-a"))
    record_b = services.store.get_database(Tenant("workspace", "ws-b"))
    assert record_b is not None
    intruder = uri_a.rsplit("/", 1)[0] + "/" + record_b.database_name
    with pytest.raises(pg8000.exceptions.DatabaseError) as refused:
        connect(intruder)
    assert refused.value.args[0]["C"] == "42501"  # insufficient_privilege: CONNECT revoked from PUBLIC


def test_create_user_twice_is_idempotent_and_keeps_the_working_uri(services: Services, server: ServerInspector) -> None:
    services.lifecycle.create_user("bob")
    uri = tenant_uri(services, Tenant("global", "bob"))
    again = services.lifecycle.create_user("bob")
    assert again.action == "exists"
    assert tenant_uri(services, Tenant("global", "bob")) == uri
    connect(uri).close()  # the password was not reset behind the stored URI
    assert len(server.databases()) == 1


def test_delete_workspace_drops_database_and_role_and_is_idempotent(
    services: Services, server: ServerInspector
) -> None:
    services.lifecycle.create_user("carol")
    services.lifecycle.create_workspace("ws-1", "carol", "Agent one")
    uri = tenant_uri(services, Tenant("workspace", "ws-1"))
    held = connect(uri)  # an open session must not block deletion
    assert len(server.databases()) == 2
    services.lifecycle.delete_workspace("ws-1")
    services.lifecycle.delete_workspace("ws-1")
    assert len(server.databases()) == 1
    assert len(server.roles()) == 2  # owner role + read-only role
    assert services.store.get_database(Tenant("workspace", "ws-1")) is None
    with pytest.raises(Exception):
        held.run("SELECT 1")


def test_user_deleted_removes_global_and_owned_workspace_databases(services: Services, server: ServerInspector) -> None:
    services.lifecycle.create_user("dave")
    services.lifecycle.create_workspace("ws-d1", "dave")
    services.lifecycle.create_workspace("ws-d2", "dave")
    services.lifecycle.create_user("erin")
    services.lifecycle.create_workspace("ws-e1", "erin")
    services.lifecycle.put_member("ws-e1", "dave", "write", create_placeholder=False)
    outcome = services.lifecycle.delete_user("dave")
    assert sorted(outcome.data["deletedWorkspaces"]) == ["ws-d1", "ws-d2"]
    assert len(server.databases()) == 2  # erin's global + ws-e1
    assert len(server.roles()) == 4
    assert services.store.list_members("ws-e1") == []
    assert services.store.get_database(Tenant("global", "dave")) is None


def test_workspace_with_unknown_owner_is_provisioned_and_attached_later(
    services: Services, server: ServerInspector
) -> None:
    outcome = services.lifecycle.create_workspace("ws-early", "frank")
    assert outcome.action == "created"
    services.lifecycle.create_user("frank")
    assert services.store.live_workspaces_owned_by("frank") == ["ws-early"]
    services.lifecycle.delete_user("frank")
    assert server.databases() == []
    assert server.roles() == []


def test_out_of_order_deleted_before_created_leaves_nothing(services: Services, server: ServerInspector) -> None:
    lc = services.lifecycle
    lc.handle_event("e-2", "workspace.deleted", {"workspaceId": "ws-x"}, T0 + timedelta(seconds=5))
    late = lc.handle_event("e-1", "workspace.created", {"workspaceId": "ws-x", "ownerUserId": "gina"}, T0)
    assert late.action == "ignored"
    lc.handle_event("e-4", "user.deleted", {"userId": "gina"}, T0 + timedelta(seconds=5))
    assert lc.handle_event("e-3", "user.created", {"userId": "gina"}, T0).action == "ignored"
    assert server.databases() == []
    assert server.roles() == []
    # A later, explicit re-creation (newer than the deletion) is honoured.
    assert lc.create_user("gina").action == "created"
    assert len(server.databases()) == 1


def test_workspace_created_after_owner_deleted_is_not_provisioned(services: Services, server: ServerInspector) -> None:
    lc = services.lifecycle
    lc.handle_event("u1", "user.created", {"userId": "hank"}, T0)
    lc.handle_event("u2", "user.deleted", {"userId": "hank"}, T0 + timedelta(minutes=1))
    outcome = lc.handle_event(
        "w1", "workspace.created", {"workspaceId": "ws-h", "ownerUserId": "hank"}, T0 + timedelta(minutes=2)
    )
    assert outcome.action == "ignored"
    assert server.databases() == []


def test_duplicate_event_id_is_skipped(services: Services, server: ServerInspector) -> None:
    lc = services.lifecycle
    first = lc.handle_event("dup-1", "user.created", {"userId": "ivy"}, T0)
    lc.delete_user("ivy")
    second = lc.handle_event("dup-1", "user.created", {"userId": "ivy"}, T0)
    assert first.action == "created"
    assert second.action == "ignored" and second.data["reason"] == "duplicate"
    assert server.databases() == []


def test_concurrent_identical_creates_make_one_working_database(
    make_services: Callable[[], Services], server: ServerInspector
) -> None:
    a, b = make_services(), make_services()
    a.lifecycle.create_user("jack")
    results: list[str] = []
    errors: list[BaseException] = []

    def run(services: Services) -> None:
        try:
            results.append(
                services.lifecycle.handle_event(
                    f"evt-{id(services)}", "workspace.created", {"workspaceId": "ws-j", "ownerUserId": "jack"}, T0
                ).action
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == ["created", "exists"]
    assert len(server.databases()) == 2
    connect(tenant_uri(a, Tenant("workspace", "ws-j"))).close()


class SlowProvider(PostgresProvider):
    """Fault injection: holds create() open until released, to interleave a deletion."""

    def __init__(self, real: PostgresProvider) -> None:
        super().__init__(real._admin, prefix=real._prefix)
        self.entered = threading.Event()
        self.release = threading.Event()

    def create(self, tenant: Tenant) -> ProvisionedDatabase:
        made = super().create(tenant)
        self.entered.set()
        assert self.release.wait(10)
        return made


def test_user_deleted_while_workspace_is_provisioning_leaves_no_orphan(
    make_services: Callable[[], Services], server: ServerInspector
) -> None:
    creator, deleter = make_services(), make_services()
    creator.lifecycle.create_user("kim")
    slow = SlowProvider(creator.lifecycle.provider)  # type: ignore[arg-type]
    creator.lifecycle.provider = slow
    errors: list[BaseException] = []

    def create() -> None:
        try:
            creator.lifecycle.create_workspace("ws-k", "kim")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=create)
    worker.start()
    assert slow.entered.wait(10)
    deleting = threading.Thread(target=deleter.lifecycle.delete_user, args=("kim",))
    deleting.start()  # waits on the workspace lock while provisioning holds it
    slow.release.set()
    worker.join()
    deleting.join()
    assert errors == []
    assert server.databases() == []
    assert server.roles() == []
    assert deleter.store.get_database(Tenant("workspace", "ws-k")) is None


class FailingProvider(PostgresProvider):
    """Fault injection: the server makes the database, then the call fails (e.g. a lost connection)."""

    def create(self, tenant: Tenant) -> ProvisionedDatabase:
        super().create(tenant)
        raise UpstreamUnavailable("the tenant Postgres server is unavailable")


def test_failed_provisioning_leaves_nothing_half_made(services: Services, server: ServerInspector) -> None:
    services.lifecycle.create_user("leo")
    real = services.lifecycle.provider
    services.lifecycle.provider = FailingProvider(real._admin, prefix=real._prefix)  # type: ignore[attr-defined]
    with pytest.raises(UpstreamUnavailable):
        services.lifecycle.create_workspace("ws-l", "leo")
    assert services.store.get_database(Tenant("workspace", "ws-l")) is None
    assert len(server.databases()) == 1 and len(server.roles()) == 2
    services.lifecycle.provider = real
    assert services.lifecycle.create_workspace("ws-l", "leo").action == "created"  # a retry succeeds


def test_user_owned_database_is_kept_on_workspace_delete(services: Services, server: ServerInspector) -> None:
    tenant = Tenant("workspace", "ws-byo")
    services.store.upsert_workspace("ws-byo", "mia", None)
    token = services.keyring.encrypt("postgresql://u:p@db.example/x", connection_uri_context(tenant.context_key))
    services.store.attach_user_owned_database(
        tenant, project_id="their-project", database_name="x", encrypted_uri=token
    )
    outcome = services.lifecycle.delete_workspace("ws-byo")
    assert outcome.data["databaseKept"] is True
    assert services.store.get_database(tenant) is None


def test_members_and_placeholder_before_workspace_created(services: Services, server: ServerInspector) -> None:
    lc = services.lifecycle
    lc.handle_event("m1", "workspace.member_added", {"workspaceId": "ws-m", "userId": "nia", "role": "read"}, T0)
    lc.handle_event("m2", "workspace.created", {"workspaceId": "ws-m", "ownerUserId": "oli"}, T0)
    members = services.store.list_members("ws-m")
    assert [(m.user_id, m.role) for m in members] == [("nia", "read")]
    lc.put_member("ws-m", "nia", "admin", create_placeholder=False)
    assert services.store.list_members("ws-m")[0].role == "admin"
    lc.handle_event("m3", "workspace.member_removed", {"workspaceId": "ws-m", "userId": "nia"}, T0)
    assert services.store.list_members("ws-m") == []
    with pytest.raises(NotFound):
        lc.put_member("ws-unknown", "nia", "read", create_placeholder=False)
    with pytest.raises(InvalidInput):
        lc.put_member("ws-m", "nia", "owner", create_placeholder=False)


def test_plan_changes_apply_in_event_time_order(services: Services, server: ServerInspector) -> None:
    lc = services.lifecycle
    lc.handle_event("p0", "user.plan_changed", {"userId": "pat", "plan": "team"}, T0 + timedelta(minutes=2))
    lc.handle_event("p1", "user.created", {"userId": "pat", "plan": "free"}, T0)
    user = services.store.get_user("pat")
    assert user is not None and user.plan == "team"  # the newer change wins over the older creation
    lc.handle_event("p2", "user.plan_changed", {"userId": "pat", "plan": "pro"}, T0 + timedelta(minutes=1))
    user = services.store.get_user("pat")
    assert user is not None and user.plan == "team"
    outcome = lc.change_plan("pat", "enterprise")
    assert outcome.data["plan"] == "enterprise" and outcome.data["limitCents"] == 10000
    assert lc.set_custom_budget("pat", 1234).data["limitCents"] == 1234
    assert lc.set_custom_budget("pat", None).data["limitCents"] == 10000
    with pytest.raises(NotFound):
        lc.change_plan("nobody", "pro")


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "tab\tin", None, 42],
)
def test_invalid_ids_are_refused(services: Services, bad: object) -> None:
    with pytest.raises(InvalidInput):
        services.lifecycle.create_user(bad)  # type: ignore[arg-type]


def test_invalid_event_detail_is_refused_before_anything_runs(services: Services, server: ServerInspector) -> None:
    with pytest.raises(InvalidInput, match="plan"):
        services.lifecycle.handle_event("bad-1", "user.created", {"userId": "q", "plan": "platinum"}, T0)
    with pytest.raises(InvalidInput, match="unknown lifecycle event"):
        services.lifecycle.handle_event("bad-2", "user.renamed", {"userId": "q"}, T0)
    assert services.store.get_user("q") is None
    assert not services.store.event_processed("bad-1")


def test_awkward_ids_get_safe_distinct_databases(services: Services, server: ServerInspector) -> None:
    ids = ["User.Name@example.com", "user.name@example.com", "a:b-c_d", "x" * 128, "ünïcødé-名前"]
    for user_id in ids:
        services.lifecycle.create_user(user_id)
    names = server.databases()
    assert len(names) == len(set(names)) == len(ids)
    assert all(len(n) <= 63 for n in names)
    for user_id in ids:
        connect(tenant_uri(services, Tenant("global", user_id))).close()
    for user_id in ids:
        services.lifecycle.delete_user(user_id)
    assert server.databases() == [] and server.roles() == []
