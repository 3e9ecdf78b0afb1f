"""Control-plane queries of reconciliation (drift between the provider and the records) and key rotation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentdb.providers.base import Tenant, TenantKind
from agentdb.store.db import Database
from agentdb.store.repository import _DB_TABLES

# Serialises reconciliation runs (a scheduled run and a manual one must not both act).
RECONCILE_LOCK = (7303, "reconcile")

URI_COLUMNS = ("neon_connection_uri", "readonly_connection_uri")


@dataclass(frozen=True)
class RecordState:
    """A tenant database record as reconciliation sees it."""

    tenant: Tenant
    provider: str
    ownership_type: str
    status: str
    project_id: str | None
    changed_at: datetime  # last status change (updated_at, else created_at), control-plane clock
    age_seconds: float  # now() - changed_at, computed by the control plane


@dataclass(frozen=True)
class UriRow:
    """One tenant database record's encrypted URIs (key rotation)."""

    kind: TenantKind
    row_id: str
    tenant_id: str
    tokens: dict[str, str | None] = field(repr=False)


class ReconcileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def now(self) -> datetime:
        """The control plane's clock (record timestamps come from it)."""
        value: datetime = self.db.run("SELECT now()")[0][0]
        return value

    # Records ----------------------------------------------------------------------------------------
    def records(self) -> list[RecordState]:
        """Every tenant database record (both kinds), whatever its provider."""
        found: list[RecordState] = []
        for kind, (table, key) in _DB_TABLES.items():
            rows = self.db.run(
                f"SELECT {key}, provider, ownership_type, status, neon_project_id, COALESCE(updated_at, created_at),"
                " EXTRACT(EPOCH FROM now() - COALESCE(updated_at, created_at))"
                f" FROM {table} ORDER BY {key}"
            )
            found += [RecordState(Tenant(kind, r[0]), r[1], r[2], r[3], r[4], r[5], float(r[6])) for r in rows]
        return found

    def record(self, tenant: Tenant) -> RecordState | None:
        table, key = _DB_TABLES[tenant.kind]
        rows = self.db.run(
            "SELECT provider, ownership_type, status, neon_project_id, COALESCE(updated_at, created_at),"
            " EXTRACT(EPOCH FROM now() - COALESCE(updated_at, created_at))"
            f" FROM {table} WHERE {key} = :id",
            id=tenant.id,
        )
        if not rows:
            return None
        r = rows[0]
        return RecordState(tenant, r[0], r[1], r[2], r[3], r[4], float(r[5]))

    def mark_missing(self, tenant: Tenant, project_id: str, listed_at: datetime) -> bool:
        """ready -> failed, only if the record still names ``project_id`` and was last changed before the
        provider was listed (a database made after the listing is not missing). Returns whether it did."""
        table, key = _DB_TABLES[tenant.kind]
        rows = self.db.run(
            f"UPDATE {table} SET status = 'failed', updated_at = now(),"
            " status_detail = 'database missing at the provider (reconciliation)'"
            f" WHERE {key} = :id AND status = 'ready' AND neon_project_id = :project"
            " AND COALESCE(updated_at, created_at) < :listed_at RETURNING 1",
            id=tenant.id,
            project=project_id,
            listed_at=listed_at,
        )
        return bool(rows)

    def known_tenants(self) -> list[Tenant]:
        """Every user and workspace id the control plane has heard of, tombstoned ones included."""
        users = self.db.run("SELECT id FROM users ORDER BY id")
        workspaces = self.db.run("SELECT id FROM workspaces ORDER BY id")
        return [Tenant("global", r[0]) for r in users] + [Tenant("workspace", r[0]) for r in workspaces]

    # Orphans ------------------------------------------------------------------------------------------
    def first_seen(self, provider: str) -> dict[str, datetime]:
        rows = self.db.run("SELECT resource_id, first_seen_at FROM reconcile_orphans WHERE provider = :p", p=provider)
        return {r[0]: r[1] for r in rows}

    def note_orphans(self, provider: str, orphans: Iterable[tuple[str, str]]) -> dict[str, datetime]:
        """Remember the current orphans ((resource id, name) pairs), forget the rest; returns when each was
        first seen."""
        ids: list[str] = []
        names: list[str] = []
        for resource_id, name in orphans:
            ids.append(resource_id)
            names.append(name)
        with self.db.transaction():
            self.db.run(
                "DELETE FROM reconcile_orphans WHERE provider = :p AND NOT (resource_id = ANY(CAST(:ids AS text[])))",
                p=provider,
                ids=ids,
            )
            if ids:
                self.db.run(
                    "INSERT INTO reconcile_orphans (provider, resource_id, name)"
                    " SELECT :p, i, n FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[])) AS u(i, n)"
                    " ON CONFLICT (provider, resource_id) DO UPDATE SET last_seen_at = now(), name = EXCLUDED.name",
                    p=provider,
                    ids=ids,
                    names=names,
                )
        return self.first_seen(provider)

    def forget_orphan(self, provider: str, resource_id: str) -> None:
        self.db.run(
            "DELETE FROM reconcile_orphans WHERE provider = :p AND resource_id = :id", p=provider, id=resource_id
        )

    # Key rotation -------------------------------------------------------------------------------------
    def uri_batch(self, kind: TenantKind, after_id: str | None, limit: int) -> list[UriRow]:
        """The next ``limit`` records of one table in primary-key order (keyset pagination), with tokens."""
        table, key = _DB_TABLES[kind]
        rows: list[list[Any]] = self.db.run(
            f"SELECT id, {key}, {', '.join(URI_COLUMNS)} FROM {table}"
            " WHERE (CAST(:after AS text) IS NULL OR id > CAST(:after AS text)) ORDER BY id LIMIT :limit",
            after=after_id,
            limit=limit,
        )
        return [UriRow(kind, r[0], r[1], dict(zip(URI_COLUMNS, r[2:], strict=True))) for r in rows]

    def replace_token(self, kind: TenantKind, row_id: str, column: str, old: str, new: str) -> bool:
        """Compare-and-set one encrypted URI: written only if the column still holds ``old`` (a concurrent
        lifecycle write wins). Returns whether it was written. ``updated_at`` is left alone: it tracks status
        changes, which reconciliation's stuck and missing checks compare."""
        if column not in URI_COLUMNS:
            raise ValueError(f"not a URI column: {column}")
        table, _ = _DB_TABLES[kind]
        rows = self.db.run(
            f"UPDATE {table} SET {column} = :new WHERE id = :id AND {column} = :old RETURNING 1",
            id=row_id,
            old=old,
            new=new,
        )
        return bool(rows)
