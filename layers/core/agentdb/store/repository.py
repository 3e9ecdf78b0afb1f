"""Control-plane queries, grouped by what they are about. All SQL is parameterised; table and
column names come from constants here, never from input."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentdb.providers.base import Tenant, TenantKind
from agentdb.store.db import Database


@dataclass(frozen=True)
class UserRecord:
    id: str
    plan: str
    plan_changed_at: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class WorkspaceRecord:
    id: str
    owner_user_id: str | None
    name: str | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class MemberRecord:
    workspace_id: str
    user_id: str
    role: str


@dataclass(frozen=True)
class DatabaseRecord:
    id: str
    tenant: Tenant
    ownership_type: str
    provider: str
    project_id: str | None
    branch_id: str | None
    database_name: str
    role_name: str | None
    status: str
    status_detail: str | None
    encrypted_uri: str | None = field(repr=False)


@dataclass(frozen=True)
class RouteRecord:
    """A tenant database as a tool call needs it: status, routing, encrypted URIs."""

    status: str
    provider: str
    ownership_type: str
    project_id: str | None
    branch_id: str | None
    database_name: str
    encrypted_uri: str | None = field(repr=False)
    encrypted_readonly_uri: str | None = field(repr=False)


@dataclass(frozen=True)
class ToolAccess:
    """Everything one tool call needs to authorise and route, fetched in a single query."""

    workspace_exists: bool
    owner_user_id: str | None
    member_role: str | None
    agent_db: RouteRecord | None
    global_db: RouteRecord | None
    owner_budget_exceeded: bool
    caller_budget_exceeded: bool
    # With a RateTake: whether this call fit under the caller's and the workspace's limits (None: not counted).
    user_within_limit: bool | None = None
    workspace_within_limit: bool | None = None
    opened_window: bool = False  # this call was the first of the caller's window


@dataclass(frozen=True)
class RateTake:
    """Count one call against the caller's and the workspace's fixed-window limits (0: no limit)."""

    window_start: datetime
    user_limit: int
    workspace_limit: int


@dataclass(frozen=True)
class BudgetRecord:
    user_id: str
    custom_budget_cents: int | None
    budget_exceeded: bool
    current_period_start: datetime
    total_cost_cents: int
    last_sync: datetime | None


# Advisory-lock namespace of one tenant's database work: lifecycle and billing take the same lock.
TENANT_LOCK_NAMESPACE: dict[TenantKind, int] = {"global": 7301, "workspace": 7302}

_DB_TABLES: dict[TenantKind, tuple[str, str]] = {
    "global": ("user_global_database", "user_id"),
    "workspace": ("workspace_database", "workspace_id"),
}

_DB_COLUMNS = (
    "id, ownership_type, provider, neon_project_id, neon_branch_id, database_name, role_name,"
    " status, status_detail, neon_connection_uri"
)


def _db_record(tenant: Tenant, row: list[Any]) -> DatabaseRecord:
    return DatabaseRecord(
        id=row[0],
        tenant=tenant,
        ownership_type=row[1],
        provider=row[2],
        project_id=row[3],
        branch_id=row[4],
        database_name=row[5],
        role_name=row[6],
        status=row[7],
        status_detail=row[8],
        encrypted_uri=row[9],
    )


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Advisory locks ---------------------------------------------------------------------------
    def try_lock(self, namespace: int, key: str) -> bool:
        """Session-level advisory lock on (namespace, hash(key)); released by unlock() or disconnect."""
        rows = self.db.run("SELECT pg_try_advisory_lock(:ns, hashtext(:key))", ns=namespace, key=key)
        return bool(rows[0][0])

    def unlock(self, namespace: int, key: str) -> None:
        self.db.run("SELECT pg_advisory_unlock(:ns, hashtext(:key))", ns=namespace, key=key)

    @contextmanager
    def advisory_lock(self, namespace: int, key: str, wait_seconds: float) -> Iterator[bool]:
        """Hold (namespace, key) across Lambdas, waiting up to ``wait_seconds`` with backoff; yields
        whether it was taken (the caller decides what not getting it means)."""
        deadline = time.monotonic() + wait_seconds
        delay = 0.02
        while not self.try_lock(namespace, key):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield True
        finally:
            self.unlock(namespace, key)

    # Users ------------------------------------------------------------------------------------
    def get_user(self, user_id: str) -> UserRecord | None:
        rows = self.db.run(
            "SELECT id, plan, plan_changed_at, deleted_at FROM users WHERE id = :id",
            id=user_id,
        )
        return UserRecord(*rows[0]) if rows else None

    def upsert_user(self, user_id: str, plan: str | None, default_plan: str, at: datetime) -> UserRecord:
        """Create the user, or revive a tombstoned one. A plan change newer than ``at`` is kept."""
        rows = self.db.run(
            "INSERT INTO users (id, plan) VALUES (:id, COALESCE(:plan, :default_plan))"
            " ON CONFLICT (id) DO UPDATE SET plan = CASE"
            "  WHEN users.plan_changed_at IS NOT NULL AND users.plan_changed_at > :at THEN users.plan"
            "  ELSE COALESCE(:plan, CASE WHEN users.deleted_at IS NULL THEN users.plan ELSE :default_plan END) END,"
            "  deleted_at = NULL, updated_at = now()"
            " RETURNING id, plan, plan_changed_at, deleted_at",
            id=user_id,
            plan=plan,
            default_plan=default_plan,
            at=at,
        )
        return UserRecord(*rows[0])

    def insert_user_with_plan(self, user_id: str, plan: str, at: datetime) -> None:
        """A plan change for a user we have not been told about yet: remember it for user.created."""
        self.db.run(
            "INSERT INTO users (id, plan, plan_changed_at) VALUES (:id, :plan, :at) ON CONFLICT (id) DO NOTHING",
            id=user_id,
            plan=plan,
            at=at,
        )

    def tombstone_user(self, user_id: str, at: datetime) -> None:
        self.db.run(
            "INSERT INTO users (id, deleted_at) VALUES (:id, :at)"
            " ON CONFLICT (id) DO UPDATE SET deleted_at = GREATEST(users.deleted_at, :at), updated_at = now()",
            id=user_id,
            at=at,
        )

    def set_plan(self, user_id: str, plan: str, at: datetime) -> bool:
        """Store the plan unless a newer change was already applied. Returns whether it changed."""
        rows = self.db.run(
            "UPDATE users SET plan = :plan, plan_changed_at = :at, updated_at = now()"
            " WHERE id = :id AND deleted_at IS NULL AND (plan_changed_at IS NULL OR plan_changed_at <= :at)"
            " RETURNING id",
            id=user_id,
            plan=plan,
            at=at,
        )
        return bool(rows)

    # Budgets ----------------------------------------------------------------------------------
    def ensure_budget(self, user_id: str) -> None:
        self.db.run(
            "INSERT INTO user_db_budget (user_id) VALUES (:id) ON CONFLICT (user_id) DO NOTHING",
            id=user_id,
        )

    def get_budget(self, user_id: str) -> BudgetRecord | None:
        rows = self.db.run(
            "SELECT user_id, custom_budget_cents, budget_exceeded, current_period_start,"
            " COALESCE(total_cost_cents, 0), last_sync FROM user_db_budget WHERE user_id = :id",
            id=user_id,
        )
        return BudgetRecord(*rows[0]) if rows else None

    def set_custom_budget(self, user_id: str, cents: int | None) -> bool:
        rows = self.db.run(
            "UPDATE user_db_budget SET custom_budget_cents = :cents, updated_at = now()"
            " WHERE user_id = :id RETURNING user_id",
            id=user_id,
            cents=cents,
        )
        return bool(rows)

    # Workspaces -------------------------------------------------------------------------------
    def get_workspace(self, workspace_id: str) -> WorkspaceRecord | None:
        rows = self.db.run(
            "SELECT id, owner_user_id, name, deleted_at FROM workspaces WHERE id = :id",
            id=workspace_id,
        )
        return WorkspaceRecord(*rows[0]) if rows else None

    def upsert_workspace(self, workspace_id: str, owner_user_id: str | None, name: str | None) -> WorkspaceRecord:
        rows = self.db.run(
            "INSERT INTO workspaces (id, owner_user_id, name) VALUES (:id, :owner, :name)"
            " ON CONFLICT (id) DO UPDATE SET"
            "  owner_user_id = COALESCE(:owner, workspaces.owner_user_id),"
            "  name = COALESCE(:name, workspaces.name), deleted_at = NULL, updated_at = now()"
            " RETURNING id, owner_user_id, name, deleted_at",
            id=workspace_id,
            owner=owner_user_id,
            name=name,
        )
        return WorkspaceRecord(*rows[0])

    def ensure_workspace_placeholder(self, workspace_id: str) -> WorkspaceRecord:
        """A row for a workspace we heard of (e.g. a member event) before its creation event."""
        self.db.run(
            "INSERT INTO workspaces (id) VALUES (:id) ON CONFLICT (id) DO NOTHING",
            id=workspace_id,
        )
        record = self.get_workspace(workspace_id)
        assert record is not None
        return record

    def tombstone_workspace(self, workspace_id: str, at: datetime) -> None:
        self.db.run(
            "INSERT INTO workspaces (id, deleted_at) VALUES (:id, :at)"
            " ON CONFLICT (id) DO UPDATE SET deleted_at = GREATEST(workspaces.deleted_at, :at), updated_at = now()",
            id=workspace_id,
            at=at,
        )
        self.db.run("DELETE FROM workspace_members WHERE workspace_id = :id", id=workspace_id)

    def live_workspaces_owned_by(self, user_id: str) -> list[str]:
        rows = self.db.run(
            "SELECT id FROM workspaces WHERE owner_user_id = :id AND deleted_at IS NULL ORDER BY id",
            id=user_id,
        )
        return [r[0] for r in rows]

    # Members ----------------------------------------------------------------------------------
    def upsert_member(self, workspace_id: str, user_id: str, role: str) -> MemberRecord:
        rows = self.db.run(
            "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES (:ws, :user, :role)"
            " ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = :role, updated_at = now()"
            " RETURNING workspace_id, user_id, role",
            ws=workspace_id,
            user=user_id,
            role=role,
        )
        return MemberRecord(*rows[0])

    def delete_member(self, workspace_id: str, user_id: str) -> bool:
        rows = self.db.run(
            "DELETE FROM workspace_members WHERE workspace_id = :ws AND user_id = :user RETURNING user_id",
            ws=workspace_id,
            user=user_id,
        )
        return bool(rows)

    def delete_memberships_of(self, user_id: str) -> None:
        self.db.run("DELETE FROM workspace_members WHERE user_id = :id", id=user_id)

    def list_members(self, workspace_id: str) -> list[MemberRecord]:
        rows = self.db.run(
            "SELECT workspace_id, user_id, role FROM workspace_members WHERE workspace_id = :ws ORDER BY user_id",
            ws=workspace_id,
        )
        return [MemberRecord(*r) for r in rows]

    # Tenant database records ------------------------------------------------------------------
    def get_database(self, tenant: Tenant) -> DatabaseRecord | None:
        table, key = _DB_TABLES[tenant.kind]
        rows = self.db.run(f"SELECT {_DB_COLUMNS} FROM {table} WHERE {key} = :id", id=tenant.id)
        return _db_record(tenant, rows[0]) if rows else None

    def insert_database(self, tenant: Tenant, provider: str, ownership_type: str = "platform") -> DatabaseRecord:
        """Insert a 'provisioning' record, or return the existing one."""
        table, key = _DB_TABLES[tenant.kind]
        self.db.run(
            f"INSERT INTO {table} ({key}, provider, ownership_type, status)"
            " VALUES (:id, :provider, :ownership, 'provisioning')"
            f" ON CONFLICT ({key}) DO NOTHING",
            id=tenant.id,
            provider=provider,
            ownership=ownership_type,
        )
        record = self.get_database(tenant)
        assert record is not None
        return record

    def mark_database_ready(
        self,
        tenant: Tenant,
        *,
        project_id: str,
        branch_id: str | None,
        database_name: str,
        role_name: str,
        encrypted_uri: str,
        encrypted_readonly_uri: str | None = None,
    ) -> DatabaseRecord:
        table, key = _DB_TABLES[tenant.kind]
        rows = self.db.run(
            f"UPDATE {table} SET status = 'ready', status_detail = NULL, neon_project_id = :project,"
            " neon_branch_id = :branch, database_name = :dbname, role_name = :role,"
            " neon_connection_uri = :uri, readonly_connection_uri = :ro_uri, updated_at = now()"
            f" WHERE {key} = :id RETURNING {_DB_COLUMNS}",
            id=tenant.id,
            project=project_id,
            branch=branch_id,
            dbname=database_name,
            role=role_name,
            uri=encrypted_uri,
            ro_uri=encrypted_readonly_uri,
        )
        return _db_record(tenant, rows[0])

    def set_database_status(self, tenant: Tenant, status: str, detail: str | None = None) -> None:
        table, key = _DB_TABLES[tenant.kind]
        self.db.run(
            f"UPDATE {table} SET status = :status, status_detail = :detail, updated_at = now() WHERE {key} = :id",
            id=tenant.id,
            status=status,
            detail=detail,
        )

    def delete_database_record(self, tenant: Tenant) -> None:
        table, key = _DB_TABLES[tenant.kind]
        self.db.run(f"DELETE FROM {table} WHERE {key} = :id", id=tenant.id)

    def attach_user_owned_database(
        self, tenant: Tenant, *, project_id: str, database_name: str, encrypted_uri: str
    ) -> DatabaseRecord:
        """Record a database the user brought (ownership 'user'): we route to it but never delete it."""
        table, key = _DB_TABLES[tenant.kind]
        rows = self.db.run(
            f"INSERT INTO {table} ({key}, provider, ownership_type, status, neon_project_id, database_name,"
            " neon_connection_uri) VALUES (:id, 'external', 'user', 'ready', :project, :dbname, :uri)"
            f" ON CONFLICT ({key}) DO UPDATE SET ownership_type = 'user', provider = 'external', status = 'ready',"
            " neon_project_id = :project, database_name = :dbname, neon_connection_uri = :uri, updated_at = now()"
            f" RETURNING {_DB_COLUMNS}",
            id=tenant.id,
            project=project_id,
            dbname=database_name,
            uri=encrypted_uri,
        )
        return _db_record(tenant, rows[0])

    # Tools ------------------------------------------------------------------------------------
    def tool_access(self, workspace_id: str | None, user_id: str, rate: RateTake | None = None) -> ToolAccess:
        """Authorisation, routing and budget state for one call, in one round trip. With ``rate`` the same
        statement also counts the call in the shared rate-limit windows (``rate_limit_counters``): the
        caller's always, the workspace's only when the caller is its owner or a member, so that nobody can
        spend another workspace's allowance."""
        counting = rate is not None and (rate.user_limit > 0 or rate.workspace_limit > 0)
        sql = _tool_access_sql(
            count_user=counting and rate is not None and rate.user_limit > 0,
            count_workspace=counting and rate is not None and rate.workspace_limit > 0 and workspace_id is not None,
        )
        params: dict[str, Any] = {"ws": workspace_id, "user": user_id}
        if counting and rate is not None:
            params["window_start"] = rate.window_start
            if rate.user_limit > 0:
                params.update(user_key=f"tools:user:{user_id}", user_limit=rate.user_limit)
            if rate.workspace_limit > 0 and workspace_id is not None:
                params.update(ws_key=f"tools:workspace:{workspace_id}", ws_limit=rate.workspace_limit)
        r = self.db.run(sql, **params)[0]
        return ToolAccess(
            workspace_exists=bool(r[0]),
            owner_user_id=r[1],
            member_role=r[2],
            agent_db=RouteRecord(*r[3:11]) if r[3] is not None else None,
            global_db=RouteRecord(*r[11:19]) if r[11] is not None else None,
            owner_budget_exceeded=bool(r[19]),
            caller_budget_exceeded=bool(r[20]),
            user_within_limit=(r[21] is not None) if "user_key" in params else None,
            workspace_within_limit=(r[22] is not None) if "ws_key" in params else None,
            opened_window=r[21] == 1,
        )

    def record_tool_call(
        self,
        *,
        user_id: str,
        workspace_id: str | None,
        server_id: str,
        tool_name: str,
        duration_ms: int,
        row_count: int | None,
        outcome: str,
        error_code: str | None,
    ) -> None:
        self.db.run(
            "INSERT INTO tool_audit_log"
            " (user_id, workspace_id, server_id, tool_name, duration_ms, row_count, outcome, error_code)"
            " VALUES (:user, :ws, :server, :tool, :ms, :rows, :outcome, :code)",
            user=user_id,
            ws=workspace_id,
            server=server_id,
            tool=tool_name,
            ms=duration_ms,
            rows=row_count,
            outcome=outcome,
            code=error_code,
        )

    def prune_tool_audit_log(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` audit rows older than ``before``, oldest first; returns how many went."""
        rows = self.db.run(
            "DELETE FROM tool_audit_log WHERE id IN"
            " (SELECT id FROM tool_audit_log WHERE at < :before ORDER BY at LIMIT :limit) RETURNING 1",
            before=before,
            limit=limit,
        )
        return len(rows)

    def set_readonly_uri(self, tenant: Tenant, encrypted_uri: str | None) -> None:
        table, key = _DB_TABLES[tenant.kind]
        self.db.run(
            f"UPDATE {table} SET readonly_connection_uri = :uri, updated_at = now() WHERE {key} = :id",
            id=tenant.id,
            uri=encrypted_uri,
        )

    # Events -----------------------------------------------------------------------------------
    def event_processed(self, event_id: str) -> bool:
        return bool(self.db.run("SELECT 1 FROM processed_events WHERE event_id = :id", id=event_id))

    def record_event(self, event_id: str, detail_type: str) -> None:
        self.db.run(
            "INSERT INTO processed_events (event_id, detail_type) VALUES (:id, :type) ON CONFLICT DO NOTHING",
            id=event_id,
            type=detail_type,
        )


_TAKE_CTE = (
    "{name} AS (INSERT INTO rate_limit_counters AS c (key, window_start, count)"
    " SELECT CAST(:{key} AS text), CAST(:window_start AS timestamptz), 1 {where}"
    " ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1 WHERE c.count < :{limit}"
    " RETURNING c.count)"
)
_IS_MEMBER = (
    "WHERE EXISTS (SELECT 1 FROM workspaces w LEFT JOIN workspace_members m"
    " ON m.workspace_id = w.id AND m.user_id = CAST(:user AS text)"
    " WHERE w.id = CAST(:ws AS text) AND w.deleted_at IS NULL"
    " AND (w.owner_user_id = CAST(:user AS text) OR m.user_id IS NOT NULL))"
)


@functools.cache
def _tool_access_sql(*, count_user: bool, count_workspace: bool) -> str:
    """The tool-access query, with the rate-limit counting CTEs it needs (an INSERT ... ON CONFLICT that
    returns a row only while the window's count is below the limit: atomic across every Lambda)."""
    ctes = []
    if count_user:
        ctes.append(_TAKE_CTE.format(name="user_take", key="user_key", limit="user_limit", where=""))
    if count_workspace:
        ctes.append(_TAKE_CTE.format(name="ws_take", key="ws_key", limit="ws_limit", where=_IS_MEMBER))
    return (
        ("WITH " + ", ".join(ctes) + " " if ctes else "")
        + "SELECT w.id IS NOT NULL AND w.deleted_at IS NULL, w.owner_user_id, m.role,"
        " wd.status, wd.provider, wd.ownership_type, wd.neon_project_id, wd.neon_branch_id, wd.database_name,"
        " wd.neon_connection_uri, wd.readonly_connection_uri,"
        " gd.status, gd.provider, gd.ownership_type, gd.neon_project_id, gd.neon_branch_id, gd.database_name,"
        " gd.neon_connection_uri, gd.readonly_connection_uri,"
        " COALESCE(ob.budget_exceeded, false), COALESCE(cb.budget_exceeded, false),"
        + (" (SELECT count FROM user_take)," if count_user else " NULL,")
        + (" (SELECT count FROM ws_take)" if count_workspace else " NULL")
        + " FROM (SELECT CAST(:ws AS text) AS ws, CAST(:user AS text) AS uid) x"
        " LEFT JOIN workspaces w ON w.id = x.ws"
        " LEFT JOIN workspace_members m ON m.workspace_id = x.ws AND m.user_id = x.uid"
        " LEFT JOIN workspace_database wd ON wd.workspace_id = x.ws"
        " LEFT JOIN user_global_database gd ON gd.user_id = x.uid"
        " LEFT JOIN user_db_budget ob ON ob.user_id = w.owner_user_id"
        " LEFT JOIN user_db_budget cb ON cb.user_id = x.uid"
    )
