"""Billing use cases: consumption sync, budget enforcement (pause/resume), period reset, usage view.

* **Sync** asks the provider for each database's consumption from its owner's period start to now,
  prices it (``pricing``), writes the figures per database and recomputes the owner's total from them.
  Figures are absolute for the period (never increments), every write happens under the owner's budget
  row lock, an older sample never replaces a newer one, and a sample taken before a period reset is
  discarded: a rerun, or two syncs at once, give the same totals.
* **Enforcement** (``reevaluate``) compares the spend with the limit. Over it: the ``budget_exceeded`` flag
  is set first (tools and the explorer answer 402 at once), then each serving database is paused and its
  ``paused_at`` recorded. Under it: each paused database is resumed and its mark cleared, then the flag.
  Each step is recorded as soon as it is done, so a retry after a failure halfway does only what is left,
  and nothing is paused or resumed twice. Every sync ends with a reconcile pass over the users whose
  state is not what their spend asks for, so whatever a failure left behind is finished within one sync
  interval.
* **Reset** starts a new period (monthly: 00:00 UTC on the 1st), zeroes the spend and resumes.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agentdb.billing.batching import (
    MAX_PROJECTS_PER_REQUEST,
    chunks,
    request_capacity,
    seconds_per_request,
    usable_seconds,
)
from agentdb.billing.figures import next_figures
from agentdb.billing.pricing import Pricing, day_start, is_over_budget, limit_cents, month_start, tier_limits
from agentdb.billing.queue import WorkQueue, enforce_message, sync_message
from agentdb.errors import AgentDBError, NotFound, UpstreamUnavailable
from agentdb.observability import MetricUnit, logger, metrics
from agentdb.providers.base import Consumption, DatabaseProvider, month_fraction
from agentdb.store.billing import BillableDatabase, BillingStore, BudgetRow, SyncTarget, UsageRow
from agentdb.store.repository import TENANT_LOCK_NAMESPACE

if TYPE_CHECKING:
    from agentdb.config import Settings
    from agentdb.store.repository import Store

#: The usage API re-syncs a user whose last sync is older than this.
STALE_AFTER = timedelta(minutes=5)
#: The scheduled and fanned-out syncs skip a database synced this recently (a duplicate delivery, a retry).
FRESH_WINDOW = timedelta(seconds=60)
#: Pausing or resuming one database is started only with at least this much time left.
ENFORCE_OP_RESERVE_SECONDS = 5.0
#: Time a lifecycle request (PUT /users/{id}/plan, /budget; user.plan_changed) spends resuming or pausing
#: before it hands the rest to the usage function (30 s function and API Gateway limits).
LIFECYCLE_ENFORCE_SECONDS = 15.0

SYNC_LEASE = "consumption-sync"
BILLING_LOCK_NAMESPACE = 7310  # per user: one budget enforcement at a time
# The lifecycle's per-tenant locks (lifecycle/service.py): a database is not paused while it is provisioned
# or deleted. tests/unit/test_pricing.py checks the two stay equal.


def utcnow() -> datetime:
    return datetime.now(UTC)


class SyncIncomplete(UpstreamUnavailable):
    """Some consumption requests failed or did not fit in the time left; a retry finishes them."""

    code = "sync_incomplete"


class Deadline:
    """The time an invocation has left (``None``: unbounded)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + max(seconds, 0.0)

    @classmethod
    def from_context(cls, context: Any, reserve_seconds: float = 0.0) -> Deadline:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        if getter is None:
            return cls(None)
        return cls(getter() / 1000.0 - reserve_seconds)

    @classmethod
    def none(cls) -> Deadline:
        return cls(None)

    def remaining(self) -> float:
        return math.inf if self._end is None else max(self._end - self._clock(), 0.0)

    def allows(self, seconds: float) -> bool:
        return self.remaining() > seconds


@dataclass
class SyncReport:
    mode: str = "inline"  # inline | fanout | skipped
    databases: int = 0  # databases the sync set out to cover
    requests: int = 0  # consumption requests (batches of <= 100) they make
    capacity: int | None = None  # requests one invocation can make (None: unbounded)
    synced: int = 0  # databases whose figures were written
    missing: int = 0  # databases the provider did not report (deleted meanwhile)
    discarded: int = 0  # figures dropped because the owner's period was reset meanwhile
    remaining: int = 0  # databases not reached before the time ran out
    failed_requests: int = 0
    batches_enqueued: int = 0
    users: int = 0
    enforced: list[str] = field(default_factory=list)
    enforcement_failed: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.failed_requests == 0 and self.remaining == 0

    def to_dict(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


@dataclass
class BudgetOutcome:
    user_id: str
    total_cents: int
    limit_cents: int
    over: bool  # spend has reached the limit
    exceeded: bool  # the flag tools read (402)
    paused: int  # databases paused now
    serving: int  # databases serving now
    changed: list[str] = field(default_factory=list)  # databases paused or resumed by this call
    pending: bool = False  # not finished (time or a lock): handed to the usage function / next sync

    def to_dict(self) -> dict[str, Any]:
        return {
            "totalCents": self.total_cents,
            "limitCents": self.limit_cents,
            "exceeded": self.exceeded,
            "pausedDatabases": self.paused,
            "servingDatabases": self.serving,
            "pending": self.pending,
        }


@dataclass
class ResetReport:
    reset: list[str] = field(default_factory=list)
    period_start: datetime | None = None
    sync: SyncReport = field(default_factory=SyncReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reset": self.reset,
            "periodStart": self.period_start.isoformat() if self.period_start else None,
            "enforced": self.sync.enforced,
            "enforcementFailed": self.sync.enforcement_failed,
        }


class BillingService:
    def __init__(
        self,
        store: Store,
        provider: DatabaseProvider,
        settings: Settings,
        *,
        queue: WorkQueue | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.billing = BillingStore(store.db)
        self.provider = provider
        self.settings = settings
        self.queue = queue
        self.pricing = Pricing.from_settings(settings)
        self.requests_per_minute = int(settings.neon_consumption_requests_per_minute)
        self._clock = clock

    # Sync -------------------------------------------------------------------------------------
    def sync_all(self, *, deadline: Deadline | None = None) -> SyncReport:
        """The scheduled sync of every billed database. Done here when it fits in the time left at the
        rate limit, else fanned out to the queue in batches of <= 100 databases. Then the reconcile pass."""
        deadline = deadline or Deadline.none()
        holder = uuid.uuid4().hex
        ttl = deadline.remaining() if math.isfinite(deadline.remaining()) else 900.0
        if not self.billing.acquire_lease(SYNC_LEASE, holder, ttl + 30.0):
            logger.info("consumption sync skipped: another one is running")
            return SyncReport(mode="skipped")
        try:
            now = self._clock()
            self._reset_overdue(now, report_to=None)
            targets = self.billing.sync_targets(synced_before=now - FRESH_WINDOW)
            batches = self._batches(targets)
            report = SyncReport(databases=len(targets), requests=len(batches))
            if math.isfinite(deadline.remaining()):
                report.capacity = request_capacity(self.requests_per_minute, deadline.remaining())
            if self.queue is not None and report.capacity is not None and len(batches) > report.capacity:
                report.mode = "fanout"
                messages = [sync_message([t.project_id for t in batch]) for _, batch in batches]
                report.batches_enqueued = self.queue.send(messages)
                metrics.add_metric(name="UsageSyncBatchesEnqueued", unit=MetricUnit.Count, value=len(messages))
            else:
                if report.capacity is not None and len(batches) > report.capacity:
                    logger.warning(
                        "consumption sync does not fit in one invocation and no queue is configured;"
                        " syncing the least recently synced databases first",
                        extra={"requests": len(batches), "capacity": report.capacity},
                    )
                self._run(batches, report, deadline)
            self._reconcile(report, deadline)
        finally:
            self.billing.release_lease(SYNC_LEASE, holder)
        self._log_report("consumption sync", report)
        return report

    def sync_projects(
        self, project_ids: Sequence[str], *, deadline: Deadline | None = None, skip_fresh: bool = True
    ) -> SyncReport:
        """Sync the given databases (one fanned-out batch). Raises SyncIncomplete when a request failed
        or the time ran out, so the batch is delivered again (databases synced meanwhile are skipped)."""
        deadline = deadline or Deadline.none()
        now = self._clock()
        ids = list(dict.fromkeys(p for p in project_ids if isinstance(p, str) and p))
        targets = self.billing.sync_targets(project_ids=ids, synced_before=(now - FRESH_WINDOW) if skip_fresh else None)
        batches = self._batches(targets)
        report = SyncReport(databases=len(targets), requests=len(batches))
        self._run(batches, report, deadline)
        self._log_report("consumption batch synced", report)
        if not report.complete:
            raise SyncIncomplete(
                f"{report.failed_requests} consumption request(s) failed, {report.remaining} database(s) not reached"
            )
        return report

    def sync_user(self, user_id: str, *, deadline: Deadline | None = None) -> SyncReport:
        """Sync one user's databases now (the usage API's re-sync), then enforce their budget."""
        deadline = deadline or Deadline.none()
        now = self._clock()
        targets = self.billing.sync_targets(user_id=user_id)
        batches = self._batches(targets)
        report = SyncReport(databases=len(targets), requests=len(batches))
        if not targets:
            self._record(user_id, None, [], {}, now, report)
            self._enforce_if_needed(user_id, report, deadline)
        self._run(batches, report, deadline)
        return report

    def _batches(self, targets: Sequence[SyncTarget]) -> list[tuple[datetime, list[SyncTarget]]]:
        """One consumption request per batch: <= 100 databases whose owners' periods begin the same UTC
        day (asked from that day's start: Neon rounds to its daily granularity anyway, and a database
        created later that day has no use before it existed). Least recently synced first."""
        groups: dict[datetime, list[SyncTarget]] = {}
        for target in targets:
            groups.setdefault(day_start(target.period_start), []).append(target)
        return [(start, chunk) for start, group in groups.items() for chunk in chunks(group, MAX_PROJECTS_PER_REQUEST)]

    def _run(
        self,
        batches: list[tuple[datetime, list[SyncTarget]]],
        report: SyncReport,
        deadline: Deadline,
    ) -> None:
        per_request = seconds_per_request(self.requests_per_minute)
        for index, (start, batch) in enumerate(batches):
            if math.isfinite(deadline.remaining()) and usable_seconds(deadline.remaining()) < per_request:
                report.remaining += sum(len(b) for _, b in batches[index:])
                logger.warning("consumption sync stopped: out of time", extra={"remaining": report.remaining})
                break
            self._sync_batch(start, batch, report, deadline)

    def _sync_batch(self, start: datetime, batch: list[SyncTarget], report: SyncReport, deadline: Deadline) -> None:
        sampled_at = self._clock()  # before the request: a sample is never newer than this
        try:
            readings = self.provider.consumption([t.project_id for t in batch], start, sampled_at)
        except AgentDBError as exc:
            report.failed_requests += 1
            metrics.add_metric(name="UsageSyncRequestFailed", unit=MetricUnit.Count, value=1)
            logger.warning(
                "consumption request failed", extra={"code": exc.code, "databases": len(batch), "error": exc.message}
            )
            return
        by_user: dict[str, list[SyncTarget]] = {}
        for target in batch:
            by_user.setdefault(target.user_id, []).append(target)
        for user_id, targets in by_user.items():
            if self._record(user_id, targets[0].period_start, targets, readings, sampled_at, report):
                self._enforce_if_needed(user_id, report, deadline)

    def _record(
        self,
        user_id: str,
        period_start: datetime | None,
        targets: list[SyncTarget],
        readings: dict[str, Consumption],
        sampled_at: datetime,
        report: SyncReport,
    ) -> bool:
        """Write one user's figures and total in one transaction, under their budget row lock. Returns
        whether their paused state may need changing: False when the sample was discarded (the period was
        reset after it was taken) or when they are under budget with the flag unset (the flag is cleared
        only once every database serves again, so then nothing is paused)."""
        with self.billing.transaction():
            budget = self.billing.lock_budget(user_id)
            if budget is None or (period_start is not None and budget.period_start != period_start):
                report.discarded += len(targets)
                return False
            stored = self.billing.stored_figures(user_id)
            for target in targets:
                reading = readings.get(target.project_id)
                prev = stored.get((target.kind, target.tenant_id))
                if reading is None or prev is None:
                    report.missing += 1
                    continue
                if (
                    prev.last_sync is not None
                    and prev.last_sync >= sampled_at
                    and prev.period_start == budget.period_start
                ):
                    continue  # a newer sample is already written
                figures = next_figures(prev, reading, budget.period_start, self.pricing)
                self.billing.write_figures(
                    target.kind, target.tenant_id, figures, period_start=budget.period_start, synced_at=sampled_at
                )
                report.synced += 1
            total = self.billing.refresh_total(user_id, sampled_at)
            limit = limit_cents(self.settings, budget.plan, budget.custom_budget_cents)
            over = is_over_budget(total, limit)
            if over and not budget.budget_exceeded:
                # Set with the figures: tools answer 402 from now on, before any database is paused.
                self.billing.set_exceeded(user_id, True)
                metrics.add_metric(name="BudgetExceeded", unit=MetricUnit.Count, value=1)
                logger.info("budget exceeded", extra={"user_id": user_id, "total_cents": total, "limit_cents": limit})
        report.users += 1
        if targets:
            metrics.add_metric(name="ConsumptionSynced", unit=MetricUnit.Count, value=len(targets))
        return over or budget.budget_exceeded

    def _enforce_if_needed(self, user_id: str, report: SyncReport, deadline: Deadline) -> None:
        if not self._needs_enforcement(user_id):
            return
        try:
            outcome = self.reevaluate(user_id, deadline=deadline)
        except AgentDBError as exc:  # the reconcile pass of the next sync finishes it
            report.enforcement_failed.append(user_id)
            logger.warning("budget enforcement failed", extra={"user_id": user_id, "code": exc.code})
            return
        if outcome is not None and outcome.changed:
            report.enforced.append(user_id)

    def _needs_enforcement(self, user_id: str) -> bool:
        budget = self.billing.budget(user_id)
        if budget is None:
            return False
        over = is_over_budget(
            budget.total_cost_cents, limit_cents(self.settings, budget.plan, budget.custom_budget_cents)
        )
        databases = self.billing.billable_databases(user_id)
        if over:
            return not budget.budget_exceeded or any(self._should_pause(d) for d in databases)
        return budget.budget_exceeded or any(d.paused_at is not None for d in databases)

    # Enforcement ------------------------------------------------------------------------------
    def reevaluate(self, user_id: str, *, deadline: Deadline | None = None, defer: bool = True) -> BudgetOutcome | None:
        """Bring the user's databases in line with their spend: pause all when it has reached the limit,
        resume all when it is under. Idempotent; safe to retry after a failure halfway. Returns None for a
        user without a budget. Work that does not fit before ``deadline`` (or waits on a lock another
        invocation holds) is handed to the usage function when ``defer`` and a queue is configured, else
        left to the reconcile pass of the next sync (``pending``)."""
        deadline = deadline or Deadline.none()
        with self._lock(BILLING_LOCK_NAMESPACE, user_id) as locked:
            if not locked:
                outcome = self._outcome(user_id, pending=True)
                if outcome is not None and defer:
                    self._defer(user_id)
                return outcome
            budget = self.billing.budget(user_id)
            if budget is None:
                return None
            limit = limit_cents(self.settings, budget.plan, budget.custom_budget_cents)
            over = is_over_budget(budget.total_cost_cents, limit)
            databases = self.billing.billable_databases(user_id)
            changed: list[str] = []
            pending = False
            if over:
                if not budget.budget_exceeded:
                    self.billing.set_exceeded(user_id, True)
                for db in (d for d in databases if self._should_pause(d)):
                    if not deadline.allows(ENFORCE_OP_RESERVE_SECONDS):
                        pending = True
                        break
                    pending |= not self._apply(db, pause=True, changed=changed)
            else:
                for db in (d for d in databases if d.paused_at is not None):
                    if not deadline.allows(ENFORCE_OP_RESERVE_SECONDS):
                        pending = True
                        break
                    pending |= not self._apply(db, pause=False, changed=changed)
                if not pending and budget.budget_exceeded:
                    self.billing.set_exceeded(user_id, False)  # last: tools answer 402 until every database serves
                    logger.info("budget no longer exceeded", extra={"user_id": user_id, "limit_cents": limit})
        if pending and defer:
            self._defer(user_id)
        return self._outcome(user_id, pending=pending, changed=changed)

    @staticmethod
    def _should_pause(db: BillableDatabase) -> bool:
        return db.paused_at is None and db.status == "ready"

    def _apply(self, db: BillableDatabase, *, pause: bool, changed: list[str]) -> bool:
        """Pause or resume one database and record it. Returns False when it has to wait (the lifecycle
        holds the database's lock). A provider failure propagates; what was done before it stays recorded."""
        with self._lock(TENANT_LOCK_NAMESPACE[db.kind], db.tenant_id) as locked:
            if not locked:
                return False
            state = self.billing.database_state(db.kind, db.tenant_id)
            if state is None:
                return True  # deleted meanwhile
            status, paused_at = state
            label = db.tenant.context_key
            if pause:
                if paused_at is not None or status != "ready":
                    return True
                self.provider.pause(db.tenant, db.project_id)
                self.billing.set_paused(db.kind, db.tenant_id, self._clock())
                metrics.add_metric(name="DatabasePaused", unit=MetricUnit.Count, value=1)
            else:
                if paused_at is None:
                    return True
                if status == "ready":  # a database being deleted is not woken up again
                    self.provider.resume(db.tenant, db.project_id)
                self.billing.set_paused(db.kind, db.tenant_id, None)
                metrics.add_metric(name="DatabaseResumed", unit=MetricUnit.Count, value=1)
            changed.append(label)
            logger.info("tenant database paused" if pause else "tenant database resumed", extra={"tenant": label})
            return True

    def _outcome(self, user_id: str, *, pending: bool, changed: list[str] | None = None) -> BudgetOutcome | None:
        budget = self.billing.budget(user_id)
        if budget is None:
            return None
        limit = limit_cents(self.settings, budget.plan, budget.custom_budget_cents)
        databases = self.billing.billable_databases(user_id)
        return BudgetOutcome(
            user_id=user_id,
            total_cents=budget.total_cost_cents,
            limit_cents=limit,
            over=is_over_budget(budget.total_cost_cents, limit),
            exceeded=budget.budget_exceeded,
            paused=sum(1 for d in databases if d.paused_at is not None),
            serving=sum(1 for d in databases if d.paused_at is None and d.status == "ready"),
            changed=changed or [],
            pending=pending,
        )

    def _defer(self, user_id: str) -> None:
        if self.queue is None:
            return
        try:
            self.queue.send([enforce_message(user_id)])
        except AgentDBError:
            logger.warning(
                "could not hand the budget enforcement on; the next sync finishes it", extra={"user_id": user_id}
            )

    def _reconcile(self, report: SyncReport, deadline: Deadline) -> None:
        """Finish what earlier failures left: users whose paused state differs from what their spend asks."""
        for user_id in self.billing.users_needing_enforcement(tier_limits(self.settings)):
            if not deadline.allows(ENFORCE_OP_RESERVE_SECONDS):
                break
            try:
                outcome = self.reevaluate(user_id, deadline=deadline, defer=False)
            except AgentDBError as exc:
                report.enforcement_failed.append(user_id)
                logger.warning("budget enforcement failed", extra={"user_id": user_id, "code": exc.code})
                continue
            if outcome is not None and outcome.changed and user_id not in report.enforced:
                report.enforced.append(user_id)

    def enforce(self, user_id: str, *, deadline: Deadline | None = None) -> BudgetOutcome | None:
        """The queue's ``enforce`` message: finish a user's pause or resume; raises when it cannot yet."""
        outcome = self.reevaluate(user_id, deadline=deadline, defer=False)
        if outcome is not None and outcome.pending:
            raise SyncIncomplete(f"budget enforcement of {user_id!r} is not finished yet")
        return outcome

    # Billing periods --------------------------------------------------------------------------
    def reset_period(self, *, user_ids: Sequence[str] | None = None, deadline: Deadline | None = None) -> ResetReport:
        """Start a new billing period and resume what the budget paused.

        Without ``user_ids`` (the monthly schedule): every user whose period began before this month's
        first day starts one at 00:00 UTC on the 1st; rerunning it changes nothing. With ``user_ids``
        (an operator's manual reset): those users' periods start now."""
        deadline = deadline or Deadline.none()
        now = self._clock()
        report = ResetReport()
        if user_ids is None:
            report.period_start = month_start(now)
            self._reset_overdue(now, report_to=report)
        else:
            report.period_start = now
            for user_id in dict.fromkeys(user_ids):
                if self.billing.reset_period(user_id, now, only_if_started_before=None):
                    report.reset.append(user_id)
        metrics.add_metric(name="BillingPeriodReset", unit=MetricUnit.Count, value=len(report.reset))
        for user_id in report.reset:
            self._enforce_if_needed(user_id, report.sync, deadline)
        self._reconcile(report.sync, deadline)
        logger.info(
            "billing period reset",
            extra={
                "users": len(report.reset),
                "period_start": _iso(report.period_start),
                "resumed": report.sync.enforced,
            },
        )
        return report

    def _reset_overdue(self, now: datetime, report_to: ResetReport | None) -> list[str]:
        """Periods that should have been reset by the monthly schedule (its invocation failed or has not
        run yet): reset them now, so a missed reset never holds a user's spend over into a new month.
        Resuming follows in the reconcile pass."""
        start = month_start(now)
        done = [
            u
            for u in self.billing.users_to_reset(start)
            if self.billing.reset_period(u, start, only_if_started_before=start)
        ]
        if done:
            logger.info("overdue billing periods reset", extra={"users": len(done), "period_start": start.isoformat()})
        if report_to is not None:
            report_to.reset.extend(done)
        return done

    # Usage view -------------------------------------------------------------------------------
    def usage(self, user_id: str, *, deadline: Deadline | None = None) -> dict[str, Any]:
        """The user's cost breakdown for the current period, re-synced first when the last sync is older
        than five minutes. When the re-sync cannot be done (Neon unavailable or throttled), the stored
        figures are returned with ``stale: true``."""
        user = self.store.get_user(user_id)
        budget = self.billing.budget(user_id)
        if user is None or user.deleted_at is not None or budget is None:
            raise NotFound(f"user {user_id!r} not found")
        refreshed, stale_reason = False, None
        last = budget.last_sync
        if last is None or self._clock() - last > STALE_AFTER:
            try:
                report = self.sync_user(user_id, deadline=deadline)
            except AgentDBError as exc:
                stale_reason = exc.code
            else:
                refreshed = report.complete
                if report.failed_requests:
                    stale_reason = "upstream_unavailable"
                elif report.remaining:
                    stale_reason = "out_of_time"
            if stale_reason:
                logger.warning(
                    "usage re-sync failed; serving stored figures", extra={"user_id": user_id, "code": stale_reason}
                )
            budget = self.billing.budget(user_id) or budget
        return self._usage_view(user_id, budget, self.billing.usage_rows(user_id), refreshed, stale_reason)

    def _usage_view(
        self, user_id: str, budget: BudgetRow, rows: list[UsageRow], refreshed: bool, stale_reason: str | None
    ) -> dict[str, Any]:
        limit = limit_cents(self.settings, budget.plan, budget.custom_budget_cents)
        window_start = day_start(budget.period_start)

        def view(row: UsageRow) -> dict[str, Any]:
            fraction = month_fraction(window_start, row.last_sync) if row.last_sync else 0.0
            gb_months = Decimal(row.storage_gb_months or 0)
            return {
                "cost": _usd(int(row.cost_cents)),
                "costCents": int(row.cost_cents),
                "computeHours": round(float(row.compute_cu_hours or 0), 4),
                "storageGb": round(float(gb_months) / fraction, 4) if fraction > 0 else 0.0,
                "storageGbMonths": round(float(gb_months), 6),
                "paused": row.paused_at is not None,
                "status": row.status,
                "lastSync": _iso(row.last_sync),
            }

        global_db = next((view(r) for r in rows if r.kind == "global"), None)
        agent_dbs = [
            {"workspaceId": r.tenant_id, "workspaceName": r.workspace_name, **view(r)}
            for r in rows
            if r.kind == "workspace"
        ]
        return {
            "userId": user_id,
            "plan": budget.plan,
            "currency": "USD",
            "periodStart": _iso(budget.period_start),
            "lastSync": _iso(budget.last_sync),
            "refreshed": refreshed,
            "stale": stale_reason is not None,
            **({"staleReason": stale_reason} if stale_reason else {}),
            "globalDb": global_db,
            "agentDbs": agent_dbs,
            "deletedDbsCostCents": budget.carried_cost_cents,
            "total": _usd(budget.total_cost_cents),
            "limit": _usd(limit),
            "totalCents": budget.total_cost_cents,
            "limitCents": limit,
            "limitSource": "custom" if budget.custom_budget_cents is not None else "plan",
            "remainingCents": max(limit - budget.total_cost_cents, 0),
            "exceeded": budget.budget_exceeded,
            "pricing": {
                "computePerCuHourUsd": float(self.pricing.compute_per_cu_hour),
                "storagePerGbMonthUsd": float(self.pricing.storage_per_gb_month),
            },
        }

    # Helpers ----------------------------------------------------------------------------------
    def _lock(self, namespace: int, key: str) -> AbstractContextManager[bool]:
        """A control-plane advisory lock, waited for up to PROVISION_LOCK_WAIT_SECONDS."""
        return self.store.advisory_lock(namespace, key, self.settings.provision_lock_wait_seconds)

    @staticmethod
    def _log_report(message: str, report: SyncReport) -> None:
        logger.info(message, extra={k: v for k, v in report.to_dict().items() if v not in (0, [], None)})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _usd(cents: int) -> float:
    """Cents as US dollars (the issue's `cost`/`total`/`limit`); the `...Cents` fields are exact."""
    return round(cents / 100, 2)
