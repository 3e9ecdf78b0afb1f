"""The reconcile Lambda handler with the events in events/reconcile/, on real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from agentdb.container import get_services
from agentdb.crypto import parse_token
from agentdb.errors import InvalidInput
from agentdb.providers.base import Tenant
from tests.lambda_harness import REPO, FakeLambdaContext, load_function
from tests.support import ServerInspector

EVENTS = REPO / "events" / "reconcile"


class ScheduledContext(FakeLambdaContext):
    """The function's 900 s, as a scheduled invocation starts with."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def sample(name: str) -> dict[str, Any]:
    data = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture
def reconcile(function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("RECONCILE_GRACE_SECONDS", "0")
    return load_function("reconcile")


def test_samples_are_the_documented_actions() -> None:
    assert {p.name for p in EVENTS.glob("*.json")} == {
        "scheduled-reconcile.json",
        "dry-run.json",
        "rotate-keys.json",
        "scheduled-prune-audit-log.json",
    }
    assert sample("scheduled-reconcile.json") == {"action": "reconcile"}
    readme = (REPO / "events" / "README.md").read_text(encoding="utf-8")
    assert all(f"`{p.name}`" in readme for p in EVENTS.glob("*.json"))


def test_scheduled_run_deletes_an_old_orphan_and_a_dry_run_only_reports(
    reconcile: ModuleType, server: ServerInspector
) -> None:
    services = get_services()
    orphan = Tenant("workspace", "ghost")
    services.provider.create(orphan)  # on the server, no record
    assert len(server.databases()) == 1

    dry = reconcile.handler(sample("dry-run.json"), ScheduledContext())
    assert dry["dryRun"] is True and dry["counts"] == {"orphan": {"would_delete": 1}}
    assert len(server.databases()) == 1

    late = reconcile.handler(sample("scheduled-reconcile.json"), FakeLambdaContext())  # 30 s left: too little
    assert late["counts"] == {"orphan": {"deferred": 1}} and len(server.databases()) == 1

    done = reconcile.handler(sample("scheduled-reconcile.json"), ScheduledContext())
    assert done["action"] == "reconcile" and done["dryRun"] is False
    assert done["counts"] == {"orphan": {"deleted": 1}} and done["failures"] == 0
    assert done["findings"][0]["tenant"] == "workspace:ghost"
    assert server.databases() == [] and server.roles() == []


def test_a_failed_repair_fails_the_invocation(reconcile: ModuleType, server: ServerInspector) -> None:
    services = get_services()
    services.lifecycle.create_user("zed")
    tenant = Tenant("global", "zed")
    services.store.db.run(
        "UPDATE user_global_database SET status = 'provisioning', updated_at = :at WHERE user_id = 'zed'",
        at=datetime.now(UTC) - timedelta(hours=2),
    )
    services.store.db.run("UPDATE users SET deleted_at = now() WHERE id = 'zed'")  # gone: finish deleting it
    provider = services.provider
    original = provider.delete

    def refuse(*args: Any, **kwargs: Any) -> None:
        from agentdb.errors import UpstreamUnavailable

        raise UpstreamUnavailable("the tenant Postgres server is unavailable")

    provider.delete = refuse  # type: ignore[method-assign]
    try:
        with pytest.raises(Exception, match="1 repair"):
            reconcile.handler(sample("scheduled-reconcile.json"), ScheduledContext())
    finally:
        provider.delete = original  # type: ignore[method-assign]
    record = services.store.get_database(tenant)
    assert record is not None and record.status == "deleting"  # kept for a later run
    services.store.db.run(
        "UPDATE user_global_database SET updated_at = :at WHERE user_id = 'zed'",
        at=datetime.now(UTC) - timedelta(hours=2),
    )
    again = reconcile.handler(sample("scheduled-reconcile.json"), ScheduledContext())
    assert again["counts"] == {"stuck": {"deleted": 1}}
    assert services.store.get_database(tenant) is None and server.databases() == []


def test_rotate_keys_sample(reconcile: ModuleType, server: ServerInspector) -> None:
    services = get_services()
    services.lifecycle.create_user("amy")
    result = reconcile.handler(sample("rotate-keys.json"), ScheduledContext())
    assert result["action"] == "rotate-keys" and result["complete"] is True
    assert (result["tokens"], result["current"], result["rotated"]) == (2, 2, 0)  # already under the current key
    record = services.store.get_database(Tenant("global", "amy"))
    assert record and parse_token(record.encrypted_uri or "").key_id == services.keyring.current_key_id


def test_prune_audit_log_sample(reconcile: ModuleType, server: ServerInspector) -> None:
    """The daily audit-retention run: rows past AUDIT_LOG_RETENTION_DAYS (default 90) go, newer ones stay."""
    services = get_services()
    for days in (200, 91, 89, 0):
        services.store.db.run(
            "INSERT INTO tool_audit_log (at, user_id, server_id, tool_name, duration_ms, outcome)"
            " VALUES (:at, 'amy', 's', 'run_sql', 1, 'ok')",
            at=datetime.now(UTC) - timedelta(days=days),
        )
    result = reconcile.handler(sample("scheduled-prune-audit-log.json"), ScheduledContext())
    assert result["action"] == "prune-audit-log" and result["retentionDays"] == 90
    assert (result["deleted"], result["complete"]) == (2, True)
    left = services.store.db.run("SELECT count(*) FROM tool_audit_log WHERE at > now() - interval '90 days'")
    assert services.store.db.run("SELECT count(*) FROM tool_audit_log") == left == [[2]]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "explode"}, "unknown action"),
        ({"action": "reconcile", "dryRun": "yes"}, "dryRun must be true or false"),
        ({"action": "rotate-keys", "limit": 0}, "limit must be a positive integer"),
    ],
)
def test_bad_events_are_refused_clearly(reconcile: ModuleType, event: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        reconcile.handler(event, ScheduledContext())
