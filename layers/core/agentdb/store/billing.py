"""Control-plane queries of the billing use cases: consumption figures, budgets, paused state, leases.

A user's databases are their global database and the agent databases of the workspaces they own; only
platform-owned ones are billed, synced and paused (a user-owned database is the user's own business).
All SQL is parameterised; table and column names come from constants here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentdb.providers.base import Tenant, TenantKind
from agentdb.store.db import Database

_TABLES: dict[TenantKind, tuple[str, str]] = {
    "global": ("user_global_database", "user_id"),
    "workspace": ("workspace_database", "workspace_id"),
}


@dataclass(frozen=True)
class SyncTarget:
    """One billed database to sync, with the budget it counts against."""

    kind: TenantKind
    tenant_id: str
    project_id: str
    user_id: str  # the owner: the user whose budget pays for it
    period_start: datetime  # the owner's current billing period
    last_sync: datetime | None

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.kind, self.tenant_id)


@dataclass(frozen=True)
class StoredFigures:
    """A database's figures as last written (read under the owner's budget row lock)."""

    kind: TenantKind
    tenant_id: str
    cost_cents: int
    compute_cu_hours: Decimal
    storage_gb_months: Decimal
    counter_cu_hours: Decimal | None
    counter_since: datetime | None
    last_sync: datetime | None
    period_start: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class NewFigures:
    cost_cents: int
    compute_cu_hours: Decimal
    storage_gb_months: Decimal
    counter_cu_hours: Decimal | None
    counter_since: datetime | None


@dataclass(frozen=True)
class BudgetRow:
    user_id: str
    plan: str
    custom_budget_cents: int | None
    budget_exceeded: bool
    period_start: datetime
    total_cost_cents: int
    carried_cost_cents: int
    last_sync: datetime | None
    user_deleted: bool


@dataclass(frozen=True)
class BillableDatabase:
    """A database the budget enforcement pauses and resumes."""

    kind: TenantKind
    tenant_id: str
    project_id: str
    status: str
    paused_at: datetime | None

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.kind, self.tenant_id)


@dataclass(frozen=True)
class UsageRow:
    kind: TenantKind
    tenant_id: str
    workspace_name: str | None
    cost_cents: int
    compute_cu_hours: Decimal
    storage_gb_months: Decimal
    last_sync: datetime | None
    paused_at: datetime | None
    status: str


_BUDGET_COLUMNS = (
    "b.user_id, u.plan, b.custom_budget_cents, b.budget_exceeded, b.current_period_start,"
    " COALESCE(b.total_cost_cents, 0), b.carried_cost_cents, b.last_sync, u.deleted_at IS NOT NULL"
)

# The billed databases of every user, with their owner: one row per database.
_OWNED = (
    "SELECT 'global' AS kind, g.user_id AS tenant_id, g.user_id AS owner, g.neon_project_id AS project_id,"
    " g.status, g.paused_at, g.last_consumption_sync, g.created_at, g.ownership_type, false AS ws_deleted"
    " FROM user_global_database g"
    " UNION ALL"
    " SELECT 'workspace', d.workspace_id, w.owner_user_id, d.neon_project_id,"
    " d.status, d.paused_at, d.last_consumption_sync, d.created_at, d.ownership_type, w.deleted_at IS NOT NULL"
    " FROM workspace_database d JOIN workspaces w ON w.id = d.workspace_id"
)

_SYNC_TARGETS = (
    f"SELECT o.kind, o.tenant_id, o.project_id, o.owner, b.current_period_start, o.last_consumption_sync"
    f" FROM ({_OWNED}) o JOIN user_db_budget b ON b.user_id = o.owner JOIN users u ON u.id = o.owner"
    " WHERE o.ownership_type = 'platform' AND o.status = 'ready' AND o.project_id IS NOT NULL"
    " AND NOT o.ws_deleted AND u.deleted_at IS NULL"
)
_SYNC_ORDER = " ORDER BY o.last_consumption_sync NULLS FIRST, o.kind, o.tenant_id"


class BillingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            yield

    # Sync -------------------------------------------------------------------------------------
    def sync_targets(
        self,
        *,
        user_id: str | None = None,
        project_ids: list[str] | None = None,
        synced_before: datetime | None = None,
    ) -> list[SyncTarget]:
        """Billed, ready databases of live users, least recently synced first. ``synced_before`` leaves out
        databases synced at or after that time (a duplicate delivery of work done a moment ago)."""
        sql, params = _SYNC_TARGETS, dict[str, object]()
        if user_id is not None:
            sql += " AND o.owner = :user"
            params["user"] = user_id
        if project_ids is not None:
            if not project_ids:
                return []
            sql += " AND o.project_id = ANY(CAST(:ids AS text[]))"
            params["ids"] = list(project_ids)
        if synced_before is not None:
            sql += " AND (o.last_consumption_sync IS NULL OR o.last_consumption_sync < :before)"
            params["before"] = synced_before
        rows = self.db.run(sql + _SYNC_ORDER, **params)
        return [SyncTarget(*r) for r in rows]

    def lock_budget(self, user_id: str) -> BudgetRow | None:
        """The user's budget row, locked for the rest of the transaction (serialises billing writers)."""
        rows = self.db.run(
            f"SELECT {_BUDGET_COLUMNS} FROM user_db_budget b JOIN users u ON u.id = b.user_id"
            " WHERE b.user_id = :user FOR UPDATE OF b",
            user=user_id,
        )
        return BudgetRow(*rows[0]) if rows else None

    def stored_figures(self, user_id: str) -> dict[tuple[str, str], StoredFigures]:
        rows = self.db.run(
            "SELECT 'global', g.user_id, COALESCE(g.current_period_cost_cents, 0), g.compute_cu_hours,"
            " g.storage_gb_months, g.compute_counter_cu_hours, g.compute_counter_since, g.last_consumption_sync,"
            " g.consumption_period_start, g.created_at"
            " FROM user_global_database g WHERE g.user_id = :user AND g.ownership_type = 'platform'"
            " UNION ALL"
            " SELECT 'workspace', d.workspace_id, COALESCE(d.current_period_cost_cents, 0), d.compute_cu_hours,"
            " d.storage_gb_months, d.compute_counter_cu_hours, d.compute_counter_since, d.last_consumption_sync,"
            " d.consumption_period_start, d.created_at"
            " FROM workspace_database d JOIN workspaces w ON w.id = d.workspace_id"
            " WHERE w.owner_user_id = :user AND d.ownership_type = 'platform'",
            user=user_id,
        )
        return {(r[0], r[1]): StoredFigures(*r) for r in rows}

    def write_figures(
        self, kind: TenantKind, tenant_id: str, figures: NewFigures, *, period_start: datetime, synced_at: datetime
    ) -> None:
        table, key = _TABLES[kind]
        self.db.run(
            f"UPDATE {table} SET current_period_cost_cents = :cents, compute_cu_hours = :cu,"
            " storage_gb_months = :gbm, compute_counter_cu_hours = :counter, compute_counter_since = :since,"
            " consumption_period_start = :period, last_consumption_sync = :at"
            f" WHERE {key} = :id",
            id=tenant_id,
            cents=figures.cost_cents,
            cu=figures.compute_cu_hours,
            gbm=figures.storage_gb_months,
            counter=figures.counter_cu_hours,
            since=figures.counter_since,
            period=period_start,
            at=synced_at,
        )

    def refresh_total(self, user_id: str, synced_at: datetime) -> int:
        """Recompute the user's total from the per-database figures of the current period (never an
        increment, so a rerun cannot count anything twice) and note the sync time. Returns the total."""
        rows = self.db.run(
            "UPDATE user_db_budget b SET total_cost_cents = b.carried_cost_cents + COALESCE(("
            "  SELECT SUM(COALESCE(s.c, 0)) FROM ("
            "   SELECT g.current_period_cost_cents AS c FROM user_global_database g"
            "    WHERE g.user_id = b.user_id AND g.ownership_type = 'platform'"
            "      AND g.consumption_period_start = b.current_period_start"
            "   UNION ALL"
            "   SELECT d.current_period_cost_cents FROM workspace_database d JOIN workspaces w ON w.id = d.workspace_id"
            "    WHERE w.owner_user_id = b.user_id AND d.ownership_type = 'platform'"
            "      AND d.consumption_period_start = b.current_period_start) s), 0),"
            " last_sync = GREATEST(b.last_sync, CAST(:at AS timestamptz)), updated_at = now()"
            " WHERE b.user_id = :user RETURNING b.total_cost_cents",
            user=user_id,
            at=synced_at,
        )
        return int(rows[0][0]) if rows else 0

    # Budgets ----------------------------------------------------------------------------------
    def budget(self, user_id: str) -> BudgetRow | None:
        rows = self.db.run(
            f"SELECT {_BUDGET_COLUMNS} FROM user_db_budget b JOIN users u ON u.id = b.user_id WHERE b.user_id = :user",
            user=user_id,
        )
        return BudgetRow(*rows[0]) if rows else None

    def set_exceeded(self, user_id: str, exceeded: bool) -> None:
        self.db.run(
            "UPDATE user_db_budget SET budget_exceeded = :flag, updated_at = now()"
            " WHERE user_id = :user AND budget_exceeded IS DISTINCT FROM :flag",
            user=user_id,
            flag=exceeded,
        )

    def billable_databases(self, user_id: str) -> list[BillableDatabase]:
        """The user's platform-owned databases, global first. A deleted workspace's database is listed
        only while it is still paused (so it can be resumed before its deletion finishes)."""
        rows = self.db.run(
            f"SELECT o.kind, o.tenant_id, o.project_id, o.status, o.paused_at FROM ({_OWNED}) o"
            " WHERE o.owner = :user AND o.ownership_type = 'platform' AND o.project_id IS NOT NULL"
            " AND (NOT o.ws_deleted OR o.paused_at IS NOT NULL)"
            " ORDER BY o.kind, o.tenant_id",
            user=user_id,
        )
        return [BillableDatabase(*r) for r in rows]

    def set_paused(self, kind: TenantKind, tenant_id: str, paused_at: datetime | None) -> None:
        table, key = _TABLES[kind]
        self.db.run(f"UPDATE {table} SET paused_at = :at WHERE {key} = :id", id=tenant_id, at=paused_at)

    def database_state(self, kind: TenantKind, tenant_id: str) -> tuple[str, datetime | None] | None:
        """(status, paused_at) of one database record, or None when it is gone."""
        table, key = _TABLES[kind]
        rows = self.db.run(f"SELECT status, paused_at FROM {table} WHERE {key} = :id", id=tenant_id)
        return (rows[0][0], rows[0][1]) if rows else None

    def users_needing_enforcement(self, tier_limits: dict[str, int], *, limit: int = 1000) -> list[str]:
        """Users whose paused state is not what their spend asks for: over budget (total >= limit, as
        ``billing.pricing.is_over_budget``) with the flag unset or a serving database, or under it with
        the flag set or a paused database."""
        rows = self.db.run(
            "WITH b AS ("
            " SELECT b.user_id, b.budget_exceeded AS flag,"
            "  COALESCE(b.total_cost_cents, 0) >= COALESCE(b.custom_budget_cents, CASE u.plan"
            "   WHEN 'pro' THEN CAST(:pro AS int) WHEN 'team' THEN CAST(:team AS int)"
            "   WHEN 'enterprise' THEN CAST(:enterprise AS int) ELSE CAST(:free AS int) END) AS over"
            " FROM user_db_budget b JOIN users u ON u.id = b.user_id WHERE u.deleted_at IS NULL),"
            f" o AS ({_OWNED})"
            " SELECT b.user_id FROM b WHERE"
            " (b.over AND (NOT b.flag OR EXISTS (SELECT 1 FROM o WHERE o.owner = b.user_id"
            "   AND o.ownership_type = 'platform' AND o.status = 'ready' AND o.project_id IS NOT NULL"
            "   AND NOT o.ws_deleted AND o.paused_at IS NULL)))"
            " OR (NOT b.over AND (b.flag OR EXISTS (SELECT 1 FROM o WHERE o.owner = b.user_id"
            "   AND o.paused_at IS NOT NULL)))"
            " ORDER BY b.user_id LIMIT :limit",
            free=tier_limits.get("free", 0),
            pro=tier_limits.get("pro", 0),
            team=tier_limits.get("team", 0),
            enterprise=tier_limits.get("enterprise", 0),
            limit=limit,
        )
        return [r[0] for r in rows]

    # Billing periods --------------------------------------------------------------------------
    def users_to_reset(self, before: datetime) -> list[str]:
        rows = self.db.run(
            "SELECT user_id FROM user_db_budget WHERE current_period_start < :before ORDER BY user_id",
            before=before,
        )
        return [r[0] for r in rows]

    def reset_period(self, user_id: str, new_start: datetime, *, only_if_started_before: datetime | None) -> bool:
        """Start a new period at ``new_start``: zero the user's spend and every figure of their databases.
        Cumulative compute counters keep their last reading (the baseline of the new period). With
        ``only_if_started_before``, a period that already started at or after it is left alone (a rerun
        of the monthly reset). Returns whether the period was reset. The paused state is untouched: the
        budget enforcement resumes afterwards."""
        with self.db.transaction():
            budget = self.lock_budget(user_id)
            if budget is None:
                return False
            if only_if_started_before is not None and budget.period_start >= only_if_started_before:
                return False
            self.db.run(
                "UPDATE user_db_budget SET current_period_start = :start, total_cost_cents = 0,"
                " carried_cost_cents = 0, last_sync = NULL, updated_at = now() WHERE user_id = :user",
                user=user_id,
                start=new_start,
            )
            zero = (
                " SET current_period_cost_cents = 0, compute_cu_hours = 0, storage_gb_months = 0,"
                " consumption_period_start = :start, last_consumption_sync = NULL"
            )
            self.db.run(f"UPDATE user_global_database{zero} WHERE user_id = :user", user=user_id, start=new_start)
            self.db.run(
                f"UPDATE workspace_database d{zero} FROM workspaces w"
                " WHERE w.id = d.workspace_id AND w.owner_user_id = :user",
                user=user_id,
                start=new_start,
            )
        return True

    # Usage view -------------------------------------------------------------------------------
    def usage_rows(self, user_id: str) -> list[UsageRow]:
        """The user's billed databases with their figures of the current period (zero when the
        figures belong to an earlier one), global first, then workspaces by id."""
        rows = self.db.run(
            "SELECT o.kind, o.tenant_id, o.name,"
            " CASE WHEN o.period = b.current_period_start THEN COALESCE(o.cents, 0) ELSE 0 END,"
            " CASE WHEN o.period = b.current_period_start THEN o.cu ELSE 0 END,"
            " CASE WHEN o.period = b.current_period_start THEN o.gbm ELSE 0 END,"
            " o.synced, o.paused_at, o.status"
            " FROM ("
            "  SELECT 'global' AS kind, g.user_id AS tenant_id, CAST(NULL AS text) AS name, g.user_id AS owner,"
            "   g.current_period_cost_cents AS cents, g.compute_cu_hours AS cu, g.storage_gb_months AS gbm,"
            "   g.consumption_period_start AS period, g.last_consumption_sync AS synced, g.paused_at, g.status"
            "  FROM user_global_database g WHERE g.ownership_type = 'platform'"
            "  UNION ALL"
            "  SELECT 'workspace', d.workspace_id, w.name, w.owner_user_id, d.current_period_cost_cents,"
            "   d.compute_cu_hours, d.storage_gb_months, d.consumption_period_start, d.last_consumption_sync,"
            "   d.paused_at, d.status"
            "  FROM workspace_database d JOIN workspaces w ON w.id = d.workspace_id"
            "  WHERE d.ownership_type = 'platform' AND w.deleted_at IS NULL"
            " ) o JOIN user_db_budget b ON b.user_id = o.owner"
            " WHERE o.owner = :user ORDER BY o.kind, o.tenant_id",
            user=user_id,
        )
        return [UsageRow(*r) for r in rows]

    # Leases -----------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take the named lease unless another holder has it and it has not expired."""
        rows = self.db.run(
            "INSERT INTO billing_leases (name, holder, expires_at)"
            " VALUES (:name, :holder, now() + CAST(:ttl AS double precision) * interval '1 second')"
            " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
            " WHERE billing_leases.expires_at < now() OR billing_leases.holder = EXCLUDED.holder"
            " RETURNING holder",
            name=name,
            holder=holder,
            ttl=float(ttl_seconds),
        )
        return bool(rows)

    def release_lease(self, name: str, holder: str) -> None:
        self.db.run("DELETE FROM billing_leases WHERE name = :name AND holder = :holder", name=name, holder=holder)


def as_decimal(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))
