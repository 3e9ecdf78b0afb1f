"""Reconciliation: make the provider and the control plane agree again (README "Reconciliation").

Three kinds of drift, and what a run does about each (a dry run only reports):

* ``orphan``: the provider holds a database (or, for postgres, a bare login role) under our prefix that no
  record claims. Older than ``RECONCILE_GRACE_SECONDS`` it is deleted; younger it is kept (a provisioning may
  be creating it). Its age is the provider's creation time, or, when the provider cannot tell, how long
  reconciliation has seen it as an orphan (``reconcile_orphans``).
* ``missing``: a ready platform record whose database the provider does not hold: marked ``failed`` and
  provisioned again.
* ``stuck``: a record left in ``provisioning``, ``deleting`` or ``failed`` for ``RECONCILE_STUCK_SECONDS``:
  the lifecycle finishes it (provisions it, or deletes it when its tenant is gone).

Races with live lifecycle work: the provider is listed *before* the records are read, and the lifecycle
inserts a record before it creates a database and deletes the database before the record, so a database
listed with no record is never one a running provisioning made. Every action then runs under the tenant's
advisory lock (the one lifecycle events take) and re-checks the record there; a record changed after the
listing is not treated as missing. When the tenant of an orphan cannot be told (a shortened Neon name,
an unlabelled postgres database of an id the control plane has never heard of), no lifecycle work can be
running for it, and it is deleted without the lock.

A run acts on at most ``RECONCILE_MAX_CHANGES`` orphans and missing databases each: more than that points
at a misconfiguration (a changed ``TENANT_NAME_PREFIX``, a restored control plane), so that kind of drift
is reported and left for an operator.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from agentdb.config import Settings
from agentdb.errors import AgentDBError
from agentdb.lifecycle.service import LifecycleService
from agentdb.observability import MetricUnit, logger, metrics
from agentdb.providers.base import DatabaseProvider, ManagedDatabase, Tenant, as_utc
from agentdb.store.reconcile import RECONCILE_LOCK, ReconcileStore, RecordState
from agentdb.store.repository import TENANT_LOCK_NAMESPACE, Store

Drift = Literal["orphan", "missing", "stuck"]
RETRIED_STATUSES = ("provisioning", "deleting", "failed")
# Time an action may take (a Neon project operation); no new action starts with less than this left.
ACTION_SECONDS = 60.0

# CloudWatch metric per (drift, action); "found" counts drift whatever was done about it.
_METRICS = {
    ("orphan", "found"): "ReconcileOrphansFound",
    ("orphan", "deleted"): "ReconcileOrphansDeleted",
    ("missing", "found"): "ReconcileMissingFound",
    ("missing", "reprovisioned"): "ReconcileMissingReprovisioned",
    ("stuck", "found"): "ReconcileStuckFound",
    ("stuck", "provisioned"): "ReconcileStuckRetried",
    ("stuck", "deleted"): "ReconcileStuckRetried",
}


class ReconcileIncomplete(AgentDBError):
    """Some repairs failed (the report says which); the next run tries again."""

    status, code = 502, "reconcile_incomplete"


@dataclass
class Finding:
    """One drift and what the run did about it (no secret: names, ids, ages)."""

    drift: Drift
    action: str  # deleted | kept | reprovisioned | provisioned | would_* | skipped | deferred | refused | failed
    tenant: str | None
    project_id: str | None
    name: str | None = None
    status: str | None = None
    age_seconds: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "drift": self.drift,
            "action": self.action,
            "tenant": self.tenant,
            "projectId": self.project_id,
            "name": self.name,
            "status": self.status,
            "ageSeconds": round(self.age_seconds) if self.age_seconds is not None else None,
            "reason": self.reason,
        }
        return {k: v for k, v in data.items() if v is not None}


@dataclass
class ReconcileReport:
    provider: str
    dry_run: bool
    listed: int = 0  # databases/roles the provider holds under our prefix
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    skipped_run: str | None = None  # why the whole run did nothing (another run holds the lock)

    def count(self, drift: Drift, action: str | None = None) -> int:
        return sum(1 for f in self.findings if f.drift == drift and (action is None or f.action == action))

    @property
    def failures(self) -> int:
        return sum(1 for f in self.findings if f.action == "failed")

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for f in self.findings:
            by_action = out.setdefault(f.drift, {})
            by_action[f.action] = by_action.get(f.action, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "provider": self.provider,
            "dryRun": self.dry_run,
            "listed": self.listed,
            "records": self.records,
            "counts": self.counts(),
            "failures": self.failures,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.skipped_run:
            data["skipped"] = self.skipped_run
        return data


class ReconcileService:
    def __init__(
        self,
        store: Store,
        reconcile_store: ReconcileStore,
        provider: DatabaseProvider,
        lifecycle: LifecycleService,
        settings: Settings,
    ) -> None:
        self.store = store
        self.rstore = reconcile_store
        self.provider = provider
        self.lifecycle = lifecycle
        self.settings = settings
        self.max_changes = settings.reconcile_max_changes

    def run(self, *, dry_run: bool | None = None, remaining: Callable[[], float] | None = None) -> ReconcileReport:
        """One reconciliation pass. ``remaining``: seconds the caller has left (no new action starts with
        less than ACTION_SECONDS); None = unbounded."""
        dry = self.settings.reconcile_dry_run if dry_run is None else dry_run
        report = ReconcileReport(provider=self.provider.name, dry_run=dry)
        if not self.store.try_lock(*RECONCILE_LOCK):
            report.skipped_run = "another reconciliation is running"
            logger.info("reconciliation skipped: another run holds the lock")
            return report
        started = time.perf_counter()
        try:
            self._run(report, remaining or (lambda: float("inf")))
        finally:
            self.store.unlock(*RECONCILE_LOCK)
        self._emit(report)
        logger.info(
            "reconciliation finished",
            extra={
                "provider": report.provider,
                "dry_run": dry,
                "listed": report.listed,
                "records": report.records,
                "counts": report.counts(),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return report

    # The pass ----------------------------------------------------------------------------------------
    def _run(self, report: ReconcileReport, remaining: Callable[[], float]) -> None:
        listed_at = self.rstore.now()
        managed = self.provider.list_managed()  # before the records: see the module docstring
        records = self.rstore.records()
        report.listed, report.records = len(managed), len(records)
        self._orphans(report, managed, records, listed_at, remaining)
        self._missing(report, managed, records, listed_at, remaining)
        self._stuck(report, records, remaining)

    def _orphans(
        self,
        report: ReconcileReport,
        managed: list[ManagedDatabase],
        records: list[RecordState],
        listed_at: datetime,
        remaining: Callable[[], float],
    ) -> None:
        claimed_ids = {r.project_id for r in records if r.project_id and r.status == "ready"}
        # A record still in flight (no project yet, or not ready) claims by name what the provider makes for it.
        in_flight = {self.provider.resource_name(r.tenant) for r in records if r.status != "ready" or not r.project_id}
        orphans = [m for m in managed if m.project_id not in claimed_ids and m.name not in in_flight]
        if report.dry_run:
            first_seen = self.rstore.first_seen(self.provider.name)
        else:
            first_seen = self.rstore.note_orphans(self.provider.name, ((m.project_id, m.name) for m in orphans))
        tenants = self._tenants_by_name() if any(m.tenant is None for m in orphans) else {}
        ages = [self._age(m, first_seen.get(m.project_id), listed_at) for m in orphans]
        refuse = sum(1 for age in ages if age >= self.settings.reconcile_grace_seconds) > self.max_changes
        for item, age in zip(orphans, ages, strict=True):
            tenant = item.tenant or tenants.get(item.name)
            finding = Finding(
                "orphan", "kept", tenant.context_key if tenant else None, item.project_id, item.name, age_seconds=age
            )
            report.findings.append(finding)
            if age < self.settings.reconcile_grace_seconds:
                finding.reason = "younger than the grace period"
            elif refuse:
                finding.action, finding.reason = "refused", f"more than {self.max_changes} orphans are due"
            elif report.dry_run:
                finding.action = "would_delete"
            elif remaining() < ACTION_SECONDS:
                finding.action, finding.reason = "deferred", "out of time"
            else:
                self._act(finding, functools.partial(self._delete_orphan, item, tenant))
                if finding.action == "deleted":
                    self.rstore.forget_orphan(self.provider.name, item.project_id)
            self._log(finding)

    def _delete_orphan(self, item: ManagedDatabase, tenant: Tenant | None) -> str:
        if tenant is None:
            self.provider.delete_managed(item)
            return "deleted"
        wait = self.settings.provision_lock_wait_seconds
        with self.store.advisory_lock(TENANT_LOCK_NAMESPACE[tenant.kind], tenant.id, wait) as locked:
            if not locked:
                return "skipped:tenant busy (a lifecycle operation holds its lock)"
            record = self.store.get_database(tenant)
            if record is not None and (record.project_id in (None, item.project_id) or record.status != "ready"):
                return "skipped:a record claims it now"
            self.provider.delete_managed(item)
        return "deleted"

    def _missing(
        self,
        report: ReconcileReport,
        managed: list[ManagedDatabase],
        records: list[RecordState],
        listed_at: datetime,
        remaining: Callable[[], float],
    ) -> None:
        present = {m.project_id for m in managed if m.kind == "database"}
        missing = [
            r
            for r in records
            if r.provider == self.provider.name
            and r.ownership_type == "platform"
            and r.status == "ready"
            and r.project_id
            and r.project_id not in present
            and r.changed_at < listed_at
        ]
        refuse = len(missing) > self.max_changes
        for r in missing:
            finding = Finding("missing", "reprovisioned", r.tenant.context_key, r.project_id, status=r.status)
            report.findings.append(finding)
            if refuse:
                finding.action, finding.reason = "refused", f"more than {self.max_changes} databases are missing"
            elif report.dry_run:
                finding.action = "would_reprovision"
            elif remaining() < ACTION_SECONDS:
                finding.action, finding.reason = "deferred", "out of time"
            else:
                mark = functools.partial(self.rstore.mark_missing, r.tenant, str(r.project_id), listed_at)
                self._act(finding, functools.partial(self._repair, r.tenant, mark))
                if finding.action == "created":
                    finding.action = "reprovisioned"
            self._log(finding)

    def _stuck(self, report: ReconcileReport, records: list[RecordState], remaining: Callable[[], float]) -> None:
        stuck = [
            r
            for r in records
            if r.provider == self.provider.name
            and r.ownership_type == "platform"
            and r.status in RETRIED_STATUSES
            and r.age_seconds >= self.settings.reconcile_stuck_seconds
        ]
        for r in stuck:
            finding = Finding(
                "stuck", "retried", r.tenant.context_key, r.project_id, status=r.status, age_seconds=r.age_seconds
            )
            report.findings.append(finding)
            if report.dry_run:
                finding.action = "would_retry"
            elif remaining() < ACTION_SECONDS:
                finding.action, finding.reason = "deferred", "out of time"
            else:
                self._act(finding, functools.partial(self._repair, r.tenant, functools.partial(self._unchanged, r)))
                if finding.action == "created":
                    finding.action = "provisioned"
            self._log(finding)

    def _unchanged(self, seen: RecordState) -> bool:
        """The record is still in the state (and since the time) the pass saw it in."""
        now = self.rstore.record(seen.tenant)
        return now is not None and (now.status, now.changed_at) == (seen.status, seen.changed_at)

    def _repair(self, tenant: Tenant, still_needed: Callable[[], bool]) -> str:
        outcome = self.lifecycle.repair_database(
            tenant, still_needed=still_needed, lock_wait_seconds=self.settings.provision_lock_wait_seconds
        )
        if outcome.action == "ignored":
            return f"skipped:{outcome.data.get('reason', 'changed meanwhile')}"
        return outcome.action

    # Helpers -----------------------------------------------------------------------------------------
    def _act(self, finding: Finding, action: Callable[[], str]) -> None:
        """Run one repair; its result (``action`` or ``action:reason``) or its failure goes on the finding."""
        try:
            result = action()
        except AgentDBError as exc:
            finding.action, finding.reason = "failed", exc.code
        except Exception as exc:  # one tenant's failure must not stop the pass; logged, counted, retried next run
            finding.action, finding.reason = "failed", type(exc).__name__
        else:
            finding.action, _, reason = result.partition(":")
            finding.reason = reason or finding.reason

    def _age(self, item: ManagedDatabase, first_seen: datetime | None, now: datetime) -> float:
        """Seconds since the provider made ``item``, else since reconciliation first saw it (0: just now)."""
        since: datetime | None = None
        if item.created_at:
            try:
                since = datetime.fromisoformat(item.created_at.replace("Z", "+00:00"))
            except ValueError:
                since = None
        since = since or first_seen
        return max((as_utc(now) - as_utc(since)).total_seconds(), 0.0) if since else 0.0

    def _tenants_by_name(self) -> dict[str, Tenant]:
        """Provider name -> tenant, for every id the control plane has heard of (to lock unlabelled orphans)."""
        return {self.provider.resource_name(t): t for t in self.rstore.known_tenants()}

    def _log(self, finding: Finding) -> None:
        level = logger.warning if finding.action in ("failed", "refused") else logger.info
        level("reconciliation", extra={"reconcile": finding.to_dict()})

    def _emit(self, report: ReconcileReport) -> None:
        totals: dict[str, int] = {name: 0 for name in _METRICS.values()}
        for f in report.findings:
            totals[_METRICS[(f.drift, "found")]] += 1
            name = _METRICS.get((f.drift, f.action))
            if name and not report.dry_run:
                totals[name] += 1
        totals["ReconcileFailures"] = report.failures
        totals["ReconcileRefused"] = sum(1 for f in report.findings if f.action == "refused")
        for name, value in totals.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
