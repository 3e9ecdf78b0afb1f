"""The one small interface every tenant-database provider implements.

A provider is told *which tenant* (a user's global database or a workspace's agent database) and
derives every name it creates from that tenant deterministically, so that a retried or duplicated
create finds what an earlier attempt made instead of making a second one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
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
    """A database the provider holds under our name prefix (for reconciliation)."""

    project_id: str
    name: str
    created_at: str | None = None


@dataclass(frozen=True)
class Consumption:
    """Resource use of one tenant database over a period."""

    project_id: str
    compute_cu_hours: float
    storage_gb_months: float
    written_bytes: int = 0
    transfer_bytes: int = 0


class DatabaseProvider(Protocol):
    name: str

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
