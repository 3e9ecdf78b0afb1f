"""What a tool backend is given and what it returns.

A backend runs one already-authorised, already-validated tool call against one tenant database.
It never decides *which* database: the use case resolves that from the control plane and hands the
backend a ToolTarget. SQL errors are results (``ToolOutcome.error``), not exceptions; exceptions are
for the backend itself failing (tenant server unreachable → UpstreamUnavailable, etc.).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentdb.providers.base import Tenant

ToolName = Literal["run_sql", "run_sql_transaction", "list_tables", "describe_table_schema"]
TOOL_NAMES: tuple[ToolName, ...] = ("run_sql", "run_sql_transaction", "list_tables", "describe_table_schema")


@dataclass(frozen=True)
class Limits:
    statement_timeout_ms: int = 15_000
    lock_timeout_ms: int = 5_000
    idle_in_transaction_timeout_ms: int = 15_000
    max_rows: int = 1000
    max_result_bytes: int = 1_048_576


@dataclass(frozen=True)
class ToolTarget:
    """The tenant database a call runs against, as the control plane records it."""

    tenant: Tenant
    provider: str  # "postgres" | "neon" | "external"
    project_id: str | None
    branch_id: str | None
    database_name: str
    read_only: bool
    # Decrypts (and caches) the connection URI on demand: direct backends need it, neon-mcp does not.
    connection_uri: Callable[[], str] = field(repr=False, compare=False)
    # Key for per-tenant caches (connections): changes when the stored URI changes.
    cache_key: str = field(default="", compare=False)


@dataclass(frozen=True)
class SqlError:
    sqlstate: str | None
    message: str


@dataclass
class ToolOutcome:
    """A tool's result. ``columns``/``rows`` for row-shaped results; ``data`` for catalog answers."""

    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    data: Any = None
    error: SqlError | None = None
    statements: list[dict[str, Any]] | None = None  # run_sql_transaction: one entry per statement


def fill_capped(outcome: ToolOutcome, rows: Iterable[list[Any]], limits: Limits) -> ToolOutcome:
    """Append ``rows`` to ``outcome`` until the row cap or the byte cap (each row sized as its JSON text) would
    be passed, marking it ``truncated`` then; sets ``row_count``. ``rows`` is consumed lazily, so nothing past
    the cap is built."""
    used = 0
    for values in rows:
        size = len(json.dumps(values, default=str))
        if len(outcome.rows) >= limits.max_rows or used + size > limits.max_result_bytes:
            outcome.truncated = True
            break
        outcome.rows.append(values)
        used += size
    outcome.row_count = len(outcome.rows)
    return outcome


class ToolBackend(Protocol):
    name: str

    def call(self, target: ToolTarget, tool: ToolName, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        """Run one tool call. ``arguments`` are already validated against our own input schema."""
        ...

    def close(self) -> None:
        """Close the connections or sessions it keeps."""
        ...
