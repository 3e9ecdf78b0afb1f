"""Reconciliation on real parts: each kind of drift is made on purpose, then repaired (or only reported).

The postgres provider runs on the embedded Postgres server; the Neon provider on the Neon double over HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentdb.config import Settings
from agentdb.container import Services
from agentdb.crypto import connection_uri_context
from agentdb.observability import metrics
from agentdb.providers.base import ManagedDatabase, Tenant
from agentdb.providers.neon import NeonProvider
from agentdb.providers.postgres import PostgresProvider
from agentdb.reconcile.service import ReconcileReport, ReconcileService
from agentdb.store.reconcile import ReconcileStore
from agentdb.store.repository import TENANT_LOCK_NAMESPACE
from local.neon_double import NeonDouble
from tests.support import ServerInspector, connect

KEY = "neon-key-reconcile"
HOUR = timedelta(hours=1)


def reconciler(services: Services, **overrides: Any) -> ReconcileService:
    settings = services.settings.model_copy(update=overrides) if overrides else services.settings
    return ReconcileService(
        services.store, ReconcileStore(services.store.db), services.provider, services.lifecycle, settings
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def findings(report: ReconcileReport, drift: str) -> dict[str, str]:
    """tenant (or name, when the tenant is unknown) -> action."""
    return {(f.tenant or f.name or ""): f.action for f in report.findings if f.drift == drift}


def backdate_record(services: Services, tenant: Tenant, by: timedelta) -> None:
    table, key = (
        ("user_global_database", "user_id") if tenant.kind == "global" else ("workspace_database", "workspace_id")
    )
    services.store.db.run(
        f"UPDATE {table} SET updated_at = now() - CAST(:by AS interval) WHERE {key} = :id",
        by=f"{int(by.total_seconds())} seconds",
        id=tenant.id,
    )


def status_of(services: Services, tenant: Tenant) -> str | None:
    record = services.store.get_database(tenant)
    return record.status if record else None


def tenant_uri(services: Services, tenant: Tenant) -> str:
    record = services.store.get_database(tenant)
    assert record is not None and record.encrypted_uri
    return services.keyring.decrypt(record.encrypted_uri, connection_uri_context(tenant.context_key))


# Postgres provider ---------------------------------------------------------------------------------------
@pytest.fixture
def pg(services: Services) -> PostgresProvider:
    provider = services.provider
    assert isinstance(provider, PostgresProvider)
    return provider


def relabel(pg: PostgresProvider, tenant: Tenant, created_at: datetime | None) -> None:
    """Set (or, with None, remove) the creation label the provider puts on a tenant database."""
    name = pg.database_name(tenant)
    label = (
        None
        if created_at is None
        else json.dumps({"managed_by": "agentdb", "kind": tenant.kind, "id": tenant.id, "created_at": iso(created_at)})
    )
    sql = pg._admin.run(
        "SELECT format('COMMENT ON DATABASE %I IS %L', CAST(:db AS text), CAST(:label AS text))", db=name, label=label
    )[0][0]
    pg._admin.run(sql)


def test_postgres_orphan_older_than_grace_is_deleted_and_a_younger_one_kept(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    services.lifecycle.create_user("alice")
    old, young = Tenant("workspace", "ghost-old"), Tenant("workspace", "ghost-young")
    pg.create(old)  # on the server, no record: orphans
    pg.create(young)
    relabel(pg, old, datetime.now(UTC) - 2 * HOUR)
    before = set(server.databases())

    report = reconciler(services, reconcile_grace_seconds=3600).run()

    assert findings(report, "orphan") == {old.context_key: "deleted", young.context_key: "kept"}
    assert [f for f in report.findings if f.drift != "orphan"] == []
    assert set(server.databases()) == before - {pg.database_name(old)}
    assert pg.role_name(old) not in server.roles() and pg.readonly_role_name(old) not in server.roles()
    assert pg.role_name(young) in server.roles()
    connect(tenant_uri(services, Tenant("global", "alice"))).close()  # the tenant with a record is untouched
    assert report.to_dict()["counts"]["orphan"] == {"deleted": 1, "kept": 1}
    assert any(m["Name"] == "ReconcileOrphansDeleted" for m in _metric_names())


def _metric_names() -> list[dict[str, Any]]:
    flushed = metrics.serialize_metric_set()
    return [m for d in flushed["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]


def test_postgres_unlabelled_orphan_and_bare_role_are_aged_from_first_sight(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    ghost = Tenant("global", "ghost-unlabelled")
    pg.create(ghost)
    relabel(pg, ghost, None)  # made before databases were labelled: the server cannot tell its age
    bare_role = pg.role_name(Tenant("workspace", "half-made"))  # a create that died after its first statement
    pg._admin.run(f'CREATE ROLE "{bare_role}" LOGIN')
    service = reconciler(services, reconcile_grace_seconds=3600)

    first = service.run()
    assert findings(first, "orphan") == {pg.database_name(ghost): "kept", bare_role: "kept"}
    assert all(f.age_seconds == 0 for f in first.findings)
    assert len(server.databases()) == 1 and bare_role in server.roles()

    services.store.db.run("UPDATE reconcile_orphans SET first_seen_at = first_seen_at - interval '2 hours'")
    second = service.run()
    assert findings(second, "orphan") == {pg.database_name(ghost): "deleted", bare_role: "deleted"}
    assert server.databases() == [] and server.roles() == []
    assert services.store.db.run("SELECT count(*) FROM reconcile_orphans")[0][0] == 0


def test_postgres_orphan_of_a_known_user_is_deleted_under_its_lock(
    services: Services, pg: PostgresProvider, make_services: Callable[[], Services], server: ServerInspector
) -> None:
    tenant = Tenant("workspace", "ws-locked")
    pg.create(tenant)
    relabel(pg, tenant, datetime.now(UTC) - 2 * HOUR)
    holder = make_services()  # another Lambda, in the middle of a lifecycle operation on this tenant
    with holder.store.advisory_lock(TENANT_LOCK_NAMESPACE["workspace"], tenant.id, 1) as locked:
        assert locked
        report = reconciler(services, provision_lock_wait_seconds=0.2).run()
    (finding,) = report.findings
    assert (finding.action, finding.reason) == ("skipped", "tenant busy (a lifecycle operation holds its lock)")
    assert server.databases() == [pg.database_name(tenant)]
    assert findings(reconciler(services).run(), "orphan") == {tenant.context_key: "deleted"}


def test_postgres_orphan_claimed_by_a_provisioning_record_is_kept(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    tenant = Tenant("workspace", "ws-inflight")
    services.store.upsert_workspace(tenant.id, None, None)
    services.store.insert_database(tenant, "postgres")  # provisioning: the database is being made right now
    pg.create(tenant)
    relabel(pg, tenant, datetime.now(UTC) - 2 * HOUR)
    report = reconciler(services).run()
    assert report.findings == []
    assert server.databases() == [pg.database_name(tenant)]


def test_postgres_missing_database_is_marked_failed_then_reprovisioned(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    services.lifecycle.create_user("bob")
    services.lifecycle.create_workspace("ws-gone", "bob")
    tenant = Tenant("workspace", "ws-gone")
    name = pg.database_name(tenant)
    pg._admin.run(f'DROP DATABASE "{name}" WITH (FORCE)')  # lost at the provider (an operator, a restore)
    old_uri = tenant_uri(services, tenant)
    seen: list[str | None] = []
    real = services.lifecycle.provider
    original_create = real.create

    def spy(t: Tenant) -> Any:
        seen.append(status_of(services, t))  # the record's status while it is provisioned again
        return original_create(t)

    real.create = spy  # type: ignore[method-assign]
    report = reconciler(services).run()
    real.create = original_create  # type: ignore[method-assign]

    assert findings(report, "missing") == {tenant.context_key: "reprovisioned"}
    assert seen == ["failed"]
    assert status_of(services, tenant) == "ready" and name in server.databases()
    new_uri = tenant_uri(services, tenant)
    assert new_uri != old_uri
    connect(new_uri).close()
    assert reconciler(services).run().findings == []  # converged


def test_postgres_stuck_provisioning_and_deleting_are_retried(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    lc = services.lifecycle
    # provisioning: the Lambda died mid-create (half of it made: the owner role)
    stuck_new = Tenant("global", "carol")
    services.store.upsert_user("carol", None, "free", datetime.now(UTC))
    services.store.insert_database(stuck_new, "postgres")
    pg._admin.run(f'CREATE ROLE "{pg.role_name(stuck_new)}" LOGIN')
    backdate_record(services, stuck_new, HOUR)
    # deleting: the workspace was deleted but the provider call failed
    lc.create_user("dan")
    lc.create_workspace("ws-del", "dan")
    stuck_del = Tenant("workspace", "ws-del")
    services.store.tombstone_workspace("ws-del", datetime.now(UTC))
    services.store.set_database_status(stuck_del, "deleting", "delete failed: upstream_unavailable")
    backdate_record(services, stuck_del, HOUR)
    # a provisioning record that is only seconds old is a live operation: left alone
    fresh = Tenant("global", "erin")
    services.store.upsert_user("erin", None, "free", datetime.now(UTC))
    services.store.insert_database(fresh, "postgres")

    report = reconciler(services, reconcile_stuck_seconds=1800).run()

    assert findings(report, "stuck") == {stuck_new.context_key: "provisioned", stuck_del.context_key: "deleted"}
    assert status_of(services, stuck_new) == "ready"
    connect(tenant_uri(services, stuck_new)).close()
    assert status_of(services, stuck_del) is None
    assert pg.database_name(stuck_del) not in server.databases()
    assert status_of(services, fresh) == "provisioning"


def test_postgres_failed_reprovisioning_keeps_a_failed_record_for_the_next_run(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    services.lifecycle.create_user("fay")
    tenant = Tenant("global", "fay")
    pg._admin.run(f'DROP DATABASE "{pg.database_name(tenant)}" WITH (FORCE)')
    real = services.lifecycle.provider
    original_create = real.create

    def broken(t: Tenant) -> Any:
        from agentdb.errors import UpstreamUnavailable

        raise UpstreamUnavailable("the tenant Postgres server is unavailable")

    real.create = broken  # type: ignore[method-assign]
    report = reconciler(services).run()
    real.create = original_create  # type: ignore[method-assign]
    (finding,) = report.findings
    assert (finding.drift, finding.action, finding.reason) == ("missing", "failed", "upstream_unavailable")
    assert status_of(services, tenant) == "failed"
    backdate_record(services, tenant, HOUR)
    assert findings(reconciler(services).run(), "stuck") == {tenant.context_key: "provisioned"}
    connect(tenant_uri(services, tenant)).close()


def test_postgres_dry_run_reports_every_drift_and_changes_nothing(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    lc = services.lifecycle
    lc.create_user("gus")
    lc.create_workspace("ws-missing", "gus")
    missing = Tenant("workspace", "ws-missing")
    pg._admin.run(f'DROP DATABASE "{pg.database_name(missing)}" WITH (FORCE)')
    orphan = Tenant("workspace", "ghost")
    pg.create(orphan)
    relabel(pg, orphan, datetime.now(UTC) - 2 * HOUR)
    stuck = Tenant("global", "hal")
    services.store.upsert_user("hal", None, "free", datetime.now(UTC))
    services.store.insert_database(stuck, "postgres")
    backdate_record(services, stuck, HOUR)
    databases, roles = sorted(server.databases()), sorted(server.roles())

    report = reconciler(services).run(dry_run=True)

    assert findings(report, "orphan") == {orphan.context_key: "would_delete"}
    assert findings(report, "missing") == {missing.context_key: "would_reprovision"}
    assert findings(report, "stuck") == {stuck.context_key: "would_retry"}
    assert report.to_dict()["dryRun"] is True
    assert sorted(server.databases()) == databases and sorted(server.roles()) == roles
    assert status_of(services, missing) == "ready" and status_of(services, stuck) == "provisioning"
    assert services.store.db.run("SELECT count(*) FROM reconcile_orphans")[0][0] == 0
    # RECONCILE_DRY_RUN=true makes it the default
    assert reconciler(services, reconcile_dry_run=True).run().dry_run is True


def test_postgres_too_many_orphans_are_reported_not_deleted(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    for i in range(3):
        tenant = Tenant("workspace", f"mass-{i}")
        pg.create(tenant)
        relabel(pg, tenant, datetime.now(UTC) - 2 * HOUR)
    report = reconciler(services, reconcile_max_changes=2).run()
    assert {f.action for f in report.findings} == {"refused"}
    assert len(server.databases()) == 3
    assert report.to_dict()["counts"] == {"orphan": {"refused": 3}}


def test_postgres_one_run_at_a_time(services: Services, make_services: Callable[[], Services]) -> None:
    other = make_services()
    assert other.store.try_lock(7303, "reconcile")
    try:
        report = reconciler(services).run()
    finally:
        other.store.unlock(7303, "reconcile")
    assert report.skipped_run == "another reconciliation is running" and report.findings == []


def test_postgres_listing_reads_labels_and_skips_foreign_names(
    services: Services, pg: PostgresProvider, server: ServerInspector
) -> None:
    tenant = Tenant("workspace", "Label:Me@x.y")
    pg.create(tenant)
    foreign = pg._name_prefix() + "w_not_one_of_ours"
    pg._admin.run(f'CREATE DATABASE "{foreign}"')
    try:
        managed = pg.list_managed()
        assert [m.name for m in managed] == [pg.database_name(tenant)]
        (item,) = managed
        assert item.tenant == tenant and item.kind == "database" and item.created_at
        with pytest.raises(Exception, match="refusing"):
            pg.delete_managed(ManagedDatabase(project_id=foreign, name=foreign))
    finally:
        pg._admin.run(f'DROP DATABASE "{foreign}"')


# Neon provider (the double) ------------------------------------------------------------------------------
@pytest.fixture
def neon_double() -> Iterator[NeonDouble]:
    double = NeonDouble(KEY)
    double.start()
    yield double
    double.stop()
    assert double.violations == [] and double.response_violations == []


@pytest.fixture
def neon(cp_env: dict[str, str], neon_double: NeonDouble) -> Iterator[Services]:
    env = {**cp_env, "DB_PROVIDER": "neon", "NEON_API_URL": neon_double.base_url, "NEON_API_KEY": KEY}
    services = Services(Settings.model_validate(env))
    yield services
    services.store.db.close()
    provider = services.__dict__.get("provider")
    if isinstance(provider, NeonProvider):
        provider.client.close()


def project_id_of(services: Services, tenant: Tenant) -> str:
    record = services.store.get_database(tenant)
    assert record is not None and record.project_id
    return record.project_id


def test_neon_orphans_duplicates_missing_and_stuck_are_repaired(neon: Services, neon_double: NeonDouble) -> None:
    lc, prefix = neon.lifecycle, neon.settings.tenant_name_prefix
    lc.create_user("ivy")
    lc.create_workspace("ws-keep", "ivy")
    lc.create_workspace("ws-lost", "ivy")
    keep, lost = Tenant("workspace", "ws-keep"), Tenant("workspace", "ws-lost")
    kept_project = project_id_of(neon, keep)
    lost_project = project_id_of(neon, lost)
    two_hours_ago = iso(datetime.now(UTC) - 2 * HOUR)
    old_orphan = neon_double.seed_project(f"{prefix}agent-ghost", created_at=two_hours_ago)["project"]["id"]
    young_orphan = neon_double.seed_project(f"{prefix}global-newbie")["project"]["id"]
    # a second project under ws-keep's name (a lost race): an orphan, though its tenant has a record
    duplicate = neon_double.seed_project(f"{prefix}agent-ws-keep", created_at=two_hours_ago)["project"]["id"]
    foreign = neon_double.seed_project("someone-else", created_at=two_hours_ago)["project"]["id"]
    neon.provider.client.delete_project(lost_project)  # type: ignore[attr-defined]
    stuck = Tenant("global", "jay")
    neon.store.upsert_user("jay", None, "free", datetime.now(UTC))
    neon.store.insert_database(stuck, "neon")
    backdate_record(neon, stuck, HOUR)

    report = reconciler(neon, reconcile_grace_seconds=3600).run()

    orphans = {f.project_id: f.action for f in report.findings if f.drift == "orphan"}
    assert orphans == {old_orphan: "deleted", young_orphan: "kept", duplicate: "deleted"}
    assert findings(report, "missing") == {lost.context_key: "reprovisioned"}
    assert findings(report, "stuck") == {stuck.context_key: "provisioned"}
    assert set(neon_double.projects) >= {kept_project, young_orphan, foreign}
    assert not {old_orphan, duplicate, lost_project} & set(neon_double.projects)
    assert project_id_of(neon, keep) == kept_project
    assert project_id_of(neon, lost) in neon_double.projects and status_of(neon, lost) == "ready"
    assert project_id_of(neon, stuck) in neon_double.projects and status_of(neon, stuck) == "ready"
    assert "postgresql://" in tenant_uri(neon, lost)

    again = reconciler(neon, reconcile_grace_seconds=3600).run()
    assert [(f.drift, f.action) for f in again.findings] == [("orphan", "kept")]  # only the young one


def test_neon_dry_run_changes_nothing(neon: Services, neon_double: NeonDouble) -> None:
    prefix = neon.settings.tenant_name_prefix
    neon.lifecycle.create_user("kit")
    tenant = Tenant("global", "kit")
    neon.provider.client.delete_project(project_id_of(neon, tenant))  # type: ignore[attr-defined]
    old = iso(datetime.now(UTC) - 2 * HOUR)
    orphan = neon_double.seed_project(f"{prefix}agent-ghost", created_at=old)["project"]["id"]
    projects = set(neon_double.projects)
    deletes_before = neon_double.calls("DELETE /projects/{project_id}")

    report = reconciler(neon).run(dry_run=True)

    assert {(f.drift, f.action) for f in report.findings} == {
        ("orphan", "would_delete"),
        ("missing", "would_reprovision"),
    }
    assert set(neon_double.projects) == projects and orphan in projects
    assert (
        neon_double.calls("POST /projects") == 1
        and neon_double.calls("DELETE /projects/{project_id}") == deletes_before
    )
    assert status_of(neon, tenant) == "ready"


def test_neon_reconcile_and_a_live_provisioning_do_not_collide(neon: Services, neon_double: NeonDouble) -> None:
    """A provisioning holding the tenant's lock makes the reconciler wait, then see the record and leave it."""
    prefix = neon.settings.tenant_name_prefix
    tenant = Tenant("workspace", "ws-race")
    neon_double.seed_project(f"{prefix}agent-ws-race", created_at=iso(datetime.now(UTC) - 2 * HOUR))
    neon.store.upsert_workspace("ws-race", None, None)
    other = Services(neon.settings)
    service = reconciler(neon, provision_lock_wait_seconds=5)
    entered, records_read = threading.Event(), threading.Event()
    read_records = service.rstore.records

    def records() -> Any:
        found = read_records()
        records_read.set()
        return found

    service.rstore.records = records  # type: ignore[method-assign]

    def provision() -> None:  # a lifecycle event: takes the lock, then the record appears
        with other.store.advisory_lock(TENANT_LOCK_NAMESPACE["workspace"], tenant.id, 1):
            entered.set()
            assert records_read.wait(5)
            other.store.insert_database(tenant, "neon")

    worker = threading.Thread(target=provision)
    worker.start()
    assert entered.wait(5)
    try:
        report = service.run()
    finally:
        worker.join()
        other.store.db.close()
    (finding,) = report.findings
    assert (finding.action, finding.reason) == ("skipped", "a record claims it now")
    assert len(neon_double.projects_named(f"{prefix}agent-ws-race")) == 1


def test_postgres_unlabelled_orphan_of_a_known_id_is_deleted_under_its_lock(
    services: Services, pg: PostgresProvider, make_services: Callable[[], Services], server: ServerInspector
) -> None:
    """No label to name the tenant: it comes from the ids the control plane knows (here a deleted
    workspace whose database was left behind), so the deletion still takes that tenant's lock."""
    tenant = Tenant("workspace", "Left:Behind")
    services.store.tombstone_workspace(tenant.id, datetime.now(UTC))
    pg.create(tenant)
    relabel(pg, tenant, None)
    services.store.db.run(
        "INSERT INTO reconcile_orphans (provider, resource_id, name, first_seen_at)"
        " VALUES ('postgres', :id, :id, now() - interval '2 hours')",
        id=pg.database_name(tenant),
    )
    assert pg.list_managed()[0].tenant is None

    holder = make_services()
    with holder.store.advisory_lock(TENANT_LOCK_NAMESPACE["workspace"], tenant.id, 1):
        busy = reconciler(services, provision_lock_wait_seconds=0.2).run()
    assert [(f.tenant, f.action) for f in busy.findings] == [(tenant.context_key, "skipped")]
    done = reconciler(services).run()
    assert [(f.tenant, f.action) for f in done.findings] == [(tenant.context_key, "deleted")]
    assert server.databases() == [] and server.roles() == []
