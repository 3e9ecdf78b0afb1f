"""The database explorer: tables, pages of rows, one SQL statement, masked connection facts.

One code path: every statement runs through :meth:`ToolService.execute` as a ``run_sql`` call, so the
explorer gets the SQL tools' authorisation (owner/members; ``read`` members read-only), budget (402) and
rate limits (429), SQL guard, timeouts, row and byte caps, audit log and both backends. This module only
builds the statements (:mod:`agentdb.explorer.sql`: identifiers from the catalog, quoted; values as
literals) and shapes the results.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentdb.crypto import connection_uri_context, readonly_uri_context
from agentdb.errors import Conflict, Forbidden, InvalidInput, NotFound
from agentdb.explorer.sql import (
    TABLES_SQL,
    Cursor,
    Relation,
    choose_order,
    decode_cursor,
    describe_sql,
    select_page,
)
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import Tenant
from agentdb.tools.catalog import AGENT_SERVER, GLOBAL_SERVER

if TYPE_CHECKING:
    from agentdb.crypto import Keyring
    from agentdb.explorer.models import QueryRequest
    from agentdb.tools.service import ToolService

MASKED_PASSWORD = "********"  # noqa: S105 - the mask shown instead of the password


class SqlFailed(InvalidInput):
    """The database refused the statement (``sql_error``) or the SQL guard did (``sql_refused``)."""

    code = "sql_error"

    def __init__(self, message: str, *, sqlstate: str | None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class Scope:
    """Which database: a workspace's (as ``user_id``, owner or member) or ``user_id``'s own global one."""

    user_id: str
    workspace_id: str | None

    @classmethod
    def workspace(cls, caller: str, workspace_id: str) -> Scope:
        return cls(caller, workspace_id)

    @classmethod
    def global_database(cls, caller: str, user_id: str) -> Scope:
        """The caller's global database; the path's ``userId`` must be the caller."""
        if caller != user_id:
            raise Forbidden("you can only explore your own global database")
        return cls(caller, None)

    @property
    def server_id(self) -> str:
        return GLOBAL_SERVER if self.workspace_id is None else AGENT_SERVER

    @property
    def database(self) -> str:
        return "global" if self.workspace_id is None else "agent"


@dataclass(frozen=True)
class Page:
    """One page of rows, as JSON data or as CSV text with the page facts for the response headers."""

    columns: list[dict[str, str]]
    rows: list[list[Any]]
    truncated: bool
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "rowCount": len(self.rows),
            "truncated": self.truncated,
            "nextCursor": self.next_cursor,
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([c["name"] for c in self.columns])
        writer.writerows([_csv_value(v) for v in row] for row in self.rows)
        return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class ExplorerService:
    def __init__(self, tools: ToolService, keyring: Keyring) -> None:
        self.tools = tools
        self.keyring = keyring

    # Tables -----------------------------------------------------------------------------------
    def tables(self, scope: Scope) -> dict[str, Any]:
        result = self._run(scope, TABLES_SQL)
        tables = [
            {"schema": s, "name": n, "type": t, "rowEstimate": int(est or 0), "sizeBytes": int(size or 0)}
            for s, n, t, est, size in result["rows"]
        ]
        return {"database": scope.database, "tables": tables, "truncated": bool(result["truncated"])}

    # Rows -------------------------------------------------------------------------------------
    def query(self, scope: Scope, request: QueryRequest) -> Page:
        if request.offset is not None and request.cursor is not None:
            raise InvalidInput("offset and cursor are mutually exclusive: send one of them")
        relation = self._relation(scope, request.table, request.schema_)
        order_by = request.orderBy
        order = choose_order(relation, order_by.column if order_by else None, order_by.direction if order_by else "asc")
        offset, after = request.offset or 0, None
        if request.cursor is not None:
            cursor = decode_cursor(request.cursor, order, relation)
            offset, after = cursor.offset or 0, cursor.values
        select = select_page(relation, order, limit=request.limit, offset=offset, after=after)
        result = self._run(scope, select.sql)
        width = len(relation.columns)
        received: list[list[Any]] = result["rows"]
        rows = [row[:width] for row in received[: request.limit]]
        # The executor caps rows and bytes; it flags `truncated` only when a row was left out, so either
        # way there is more after the rows received, and a cursor from the last one loses nothing.
        more = len(received) > request.limit or bool(result["truncated"])
        next_cursor = None
        if more and rows:
            fingerprint = order.fingerprint(relation)
            if order.keyset:
                last = received[len(rows) - 1][width:]
                next_cursor = Cursor(fingerprint, values=tuple(str(v) for v in last)).encode()
            else:
                next_cursor = Cursor(fingerprint, offset=offset + len(rows)).encode()
        columns = [{"name": c.name, "type": c.type} for c in relation.columns]
        return Page(columns, rows, truncated=more and len(rows) < request.limit, next_cursor=next_cursor)

    def _relation(self, scope: Scope, table: str, schema: str | None) -> Relation:
        """The table as the catalog has it (exact, case-sensitive names). Unknown → 404."""
        found = self._run(scope, describe_sql(table, schema))["rows"]
        if not found:
            where = f"{schema}.{table}" if schema is not None else table
            raise NotFound(f"no table or view {where!r} in the {scope.database} database")
        if schema is None and len(found) > 1 and found[0][0] != "public":
            schemas = ", ".join(repr(r[0]) for r in found)
            raise InvalidInput(f"table {table!r} is in several schemas ({schemas}): name the schema")
        return Relation.from_row(*found[0])

    # SQL --------------------------------------------------------------------------------------
    def execute(self, scope: Scope, sql: str) -> dict[str, Any]:
        """One statement, exactly as an agent's run_sql call would run it."""
        result = self._run(scope, sql)
        return {k: result[k] for k in ("columns", "rows", "rowCount", "truncated")}

    def _run(self, scope: Scope, sql: str) -> dict[str, Any]:
        result = self.tools.execute(scope.user_id, scope.workspace_id, scope.server_id, "run_sql", {"sql": sql})
        structured: dict[str, Any] = result.get("structuredContent") or {}
        if result.get("isError"):
            error = structured.get("error") or {}
            raise SqlFailed(
                str(error.get("message") or "SQL error"),
                sqlstate=error.get("sqlstate"),
                code="sql_refused" if error.get("code") == "sql_refused" else "sql_error",
            )
        return structured

    # Connection -------------------------------------------------------------------------------
    def connection(self, scope: Scope) -> dict[str, Any]:
        """Where the database is and as which role, never the password or the URI.

        Authorised like a tool call (the same grant; not counted against the rate limits: no statement
        runs). A ``read`` member is shown the read-only role they would connect as."""
        if scope.workspace_id is None:
            raise InvalidInput("connection facts are available for workspace databases")
        grant = self.tools.authorize(scope.user_id, scope.workspace_id)
        record = grant.access.agent_db
        if record is None:
            raise Conflict("this workspace's database is not provisioned", code="database_not_provisioned")
        facts: dict[str, Any] = {
            "provider": record.provider,
            "host": None,
            "port": None,
            "database": record.database_name,
            "role": None,
            "password": MASKED_PASSWORD,
            "pooled": False,
            "status": record.status,
            "sslmode": None,
        }
        use_readonly = grant.read_only(AGENT_SERVER) and record.encrypted_readonly_uri is not None
        token = record.encrypted_readonly_uri if use_readonly else record.encrypted_uri
        if token is None:
            return facts
        context = (readonly_uri_context if use_readonly else connection_uri_context)(
            Tenant("workspace", scope.workspace_id).context_key
        )
        url = parse_pg_url(self.keyring.decrypt(token, context))
        host = url.display_host
        facts.update(
            host=host,
            port=url.port,
            database=url.database,
            role=url.user,
            pooled="-pooler" in host,
            sslmode=url.sslmode,
        )
        return facts
