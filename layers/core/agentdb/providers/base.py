"""The one small interface every tenant-database provider implements.

A provider is told *which tenant* (a user's global database or a workspace's agent database) and
derives every name it creates from that tenant deterministically, so that a retried or duplicated
create finds what an earlier attempt made instead of making a second one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

TenantKind = Literal["global", "workspace"]


@dataclass(frozen=True)
class Tenant:
    kind: TenantKind
    id: str  # the platform's user id (global) or workspace id (workspace): opaque, up to 128 chars

    @property
    def context_key(self) -> str:
        """The tenant in encryption contexts and logs: ``user:<id>`` or ``workspace:<id>``."""
        return f"user:{self.id}" if self.kind == "global" else f"workspace:{self.id}"

    def resource_name(self, prefix: str) -> str:
        """Deterministic provider-side name: ``<prefix>global-<id>`` / ``<prefix>agent-<id>``."""
        return f"{prefix}{'global' if self.kind == 'global' else 'agent'}-{self.id}"

    def safe_identifier(self, prefix: str, max_len: int = 63) -> str:
        """A name safe as a Postgres identifier (and Neon resource name) for any id.

        Ids may contain characters Postgres or Neon would reject or fold (``:``, ``@``, ``.``,
        upper case), and may be longer than 63 bytes. Keep a readable, sanitised part and always
        append a short hash of the exact id, so two different ids never share a name.
        """
        digest = hashlib.sha256(self.id.encode()).hexdigest()[:12]
        readable = re.sub(r"[^a-z0-9_]", "_", self.id.lower())
        head = f"{prefix.replace('-', '_')}{'g' if self.kind == 'global' else 'w'}_"
        room = max_len - len(head) - len(digest) - 1
        return f"{head}{readable[: max(room, 0)]}_{digest}"


@dataclass(frozen=True)
class ProvisionedDatabase:
    """What create() returns. ``connection_uri`` is a secret: encrypt it at once, never log it."""

    project_id: str  # Neon project id, or the Postgres database name for the postgres provider
    branch_id: str | None
    database_name: str
    role_name: str
    connection_uri: str = field(repr=False)
    # A login role that can only read (where the provider can make one); None = use READ ONLY transactions.
    readonly_connection_uri: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ManagedDatabase:
    """A database the provider holds under our name prefix (for reconciliation).

    ``created_at`` is when the provider made it (ISO 8601), None when the provider cannot tell; ``tenant``
    is the tenant it was made for when the provider can tell for sure (None: unknown). ``kind`` is
    ``"database"``, or ``"role"`` for a postgres login role left without its database.
    """

    project_id: str
    name: str
    created_at: str | None = None
    tenant: Tenant | None = None
    kind: Literal["database", "role"] = "database"


# Units shared by every provider (one convention, so costs compare across providers):
#: A GB is 10^9 bytes (decimal). Neon's API spec does not define the unit of its ``*_bytes`` metrics in
#: gigabytes, so the SI definition is used; Neon's older billing pages speak of GiB (2^30 bytes, 7.4% more
#: per unit): change this one constant to follow them.
BYTES_PER_GB = 1_000_000_000
#: The billing month used to turn sizes and byte-hours into GB-months: 30 days.
HOURS_PER_MONTH = 720.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def month_fraction(start: datetime, end: datetime) -> float:
    """How much of a 30-day month ``[start, end]`` covers (0 when ``end`` is not after ``start``)."""
    return max((as_utc(end) - as_utc(start)).total_seconds(), 0.0) / SECONDS_PER_MONTH


@dataclass(frozen=True)
class Consumption:
    """Resource use of one tenant database over a period.

    * ``compute_cu_hours``: compute-unit hours (1 CU = 1 vCPU; Neon's ``compute_unit_seconds`` / 3600).
    * ``storage_gb_months``: GB-months over the period, i.e. the average size in GB (``BYTES_PER_GB``)
      times the fraction of a 30-day month the period covers (``month_fraction``). 10 GB kept for 3 days
      is 10 * 3/30 = 1 GB-month. Neon reports storage already in byte-months; those are divided by
      ``BYTES_PER_GB``.
    * ``source``: where the figures come from: ``"v2"`` (Neon's usage-based consumption API),
      ``"legacy"`` (Neon's legacy consumption API), ``"project"`` (a Neon project's own counters),
      ``"postgres"`` (the server's catalog and statistics).
    * ``period_start`` / ``period_end``: the interval the figures really cover, which can differ from
      the one asked for: Neon rounds to its granularity, and a Neon project's own counters always
      cover its current billing period (``consumption_period_start`` to now).
    * ``compute_cumulative``: when True, ``compute_cu_hours`` is a counter that only grows from
      ``compute_since`` (None: an origin the server does not report), not the use within the period:
      the caller keeps the previous reading and bills the difference; a reading below the previous one
      means the counter was reset, and then the new reading is the use since the reset. The postgres
      provider reports compute this way (``pg_stat_database.active_time`` counts from the last stats
      reset).
    """

    project_id: str
    compute_cu_hours: float
    storage_gb_months: float
    written_bytes: int = 0
    transfer_bytes: int = 0
    source: str = ""
    period_start: datetime | None = None
    period_end: datetime | None = None
    compute_cumulative: bool = False
    compute_since: datetime | None = None


class DatabaseProvider(Protocol):
    name: str

    def close(self) -> None:
        """Close the connection or HTTP client it keeps."""
        ...

    def create(self, tenant: Tenant) -> ProvisionedDatabase:
        """Create (or find, if an earlier attempt made it) the tenant's database. Idempotent."""
        ...

    def delete(self, tenant: Tenant, project_id: str | None = None) -> None:
        """Delete the tenant's database. Already gone counts as done. Idempotent."""
        ...

    def connection_uri(self, tenant: Tenant, project_id: str) -> str:
        """A fresh connection URI for the tenant's database (a secret)."""
        ...

    def pause(self, tenant: Tenant, project_id: str) -> None:
        """Stop the database from serving (budget exceeded). Idempotent."""
        ...

    def resume(self, tenant: Tenant, project_id: str) -> None:
        """Undo pause(). Idempotent."""
        ...

    def list_managed(self) -> list[ManagedDatabase]:
        """Every database this provider holds under our prefix (reconciliation)."""
        ...

    def resource_name(self, tenant: Tenant) -> str:
        """The name the provider gives the tenant's database (what list_managed reports as ``name``)."""
        ...

    def delete_managed(self, item: ManagedDatabase) -> None:
        """Delete exactly what ``item`` names (an orphan: no tenant record). Already gone is done."""
        ...

    def consumption(self, project_ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        """Use of each database in ``project_ids`` over ``[start, end]`` (timezone-aware UTC datetimes).

        One call covers a whole batch; the provider decides how many upstream calls it makes. Every id
        the provider still holds is in the answer (zero use included); an id it does not know (a deleted
        database) may be left out.
        """
        ...
