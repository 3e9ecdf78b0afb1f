"""The `direct` tool backend: pg8000 straight to the tenant database.

Guards, in the order a call meets them (the SQL guard in sqlguard.py runs before this):
- every call is one transaction (``BEGIN [READ ONLY]`` … ``COMMIT``/``ROLLBACK``), never left open;
- statement, lock and idle-in-transaction timeouts are set with ``set_config(..., true)`` (transaction
  scope) before *every* statement, so nothing a statement does can lift them for the next one;
- row-returning statements are wrapped so that the server returns at most ``max_rows + 1`` rows whose
  JSON text adds up to at most ``max_result_bytes + 1`` bytes: a ten-million-row or multi-gigabyte result
  is cut on the server, and this process never holds more than the cap;
- the connection's socket timeout is the statement timeout plus a margin, below the Lambda timeout.
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from agentdb.errors import UpstreamUnavailable
from agentdb.pgurl import parse_pg_url
from agentdb.tools.backend import Limits, SqlError, ToolName, ToolOutcome, ToolTarget, fill_capped
from agentdb.tools.sqlguard import StatementKind, classify

if TYPE_CHECKING:
    import pg8000.native

T = TypeVar("T")
_WRAP_FAILED = ("0A000", "42601")  # feature_not_supported, syntax_error: the statement can't be a subquery
_SOCKET_MARGIN_SECONDS = 5.0


class _SqlFailure(Exception):
    def __init__(self, error: SqlError) -> None:
        super().__init__(error.message)
        self.error = error


class DirectBackend:
    name = "direct"

    def __init__(self, *, max_connections: int = 8) -> None:
        self._max = max_connections
        self._connections: OrderedDict[tuple[str, bool], pg8000.native.Connection] = OrderedDict()
        self._lock = threading.Lock()

    # Interface ----------------------------------------------------------------------------------
    def call(self, target: ToolTarget, tool: ToolName, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        read_only = target.read_only or tool in ("list_tables", "describe_table_schema")
        try:
            if tool == "run_sql":
                return self._statements(target, [arguments["sql"]], limits, read_only, single=True)
            if tool == "run_sql_transaction":
                return self._statements(target, list(arguments["sqlStatements"]), limits, read_only, single=False)
            if tool == "list_tables":
                return self._transaction(
                    target, limits, True, lambda c, _: (_list_tables(c, arguments.get("schema")), False)
                )
            return self._transaction(
                target, limits, True, lambda c, _: (_describe_table(c, arguments["tableName"]), False)
            )
        except _SqlFailure as failure:
            return ToolOutcome(error=failure.error)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections.values():
                _close_quietly(conn)
            self._connections.clear()

    # Statements ---------------------------------------------------------------------------------
    def _statements(
        self, target: ToolTarget, statements: list[str], limits: Limits, read_only: bool, *, single: bool
    ) -> ToolOutcome:
        direct: set[int] = set()  # statements that could not be wrapped: run as they are

        end = "ROLLBACK" if read_only else "COMMIT"

        def body(conn: pg8000.native.Connection, begin: str | None) -> tuple[ToolOutcome, bool]:
            results, ended = [], False
            for index, statement in enumerate(statements):
                # The first statement travels with BEGIN and the timeouts; each later one gets them again.
                prefix = begin if index == 0 and begin else _timeouts_sql(limits)
                last_one = index == len(statements) - 1
                outcome, ended = _execute(
                    conn, statement, limits, wrap=index not in direct, prefix=prefix, end=end if last_one else None
                )
                results.append(outcome)
            last = results[-1]
            if not single:
                last.statements = [
                    {"columns": r.columns, "rows": r.rows, "rowCount": r.row_count, "truncated": r.truncated}
                    for r in results
                ]
            return last, ended

        try:
            return self._transaction(target, limits, read_only, body, begin_in_body=True)
        except _WrapRefused as refused:
            # The statement is valid but cannot be a subquery (e.g. SELECT … INTO): replay the whole call
            # once with that statement run unwrapped. The failed attempt was rolled back.
            direct.add(statements.index(refused.statement))
            return self._transaction(target, limits, read_only, body, begin_in_body=True)

    # Transactions and connections ------------------------------------------------------------------
    def _transaction(
        self,
        target: ToolTarget,
        limits: Limits,
        read_only: bool,
        body: Callable[[pg8000.native.Connection, str | None], tuple[T, bool]],
        *,
        begin_in_body: bool = False,
    ) -> T:
        """Run ``body`` in one transaction. The body returns (result, ended): ended when it sent the
        COMMIT/ROLLBACK itself, in the same round trip as its last statement. With ``begin_in_body`` the
        body is handed the BEGIN (and timeouts) to send with its first statement, saving a round trip;
        otherwise BEGIN has been sent and it is handed None."""
        import pg8000.exceptions

        # BEGIN and the timeouts travel in one round trip (simple query protocol, no parameters).
        begin = ("BEGIN READ ONLY; " if read_only else "BEGIN; ") + _timeouts_sql(limits)
        conn = self._connection(target, limits)
        if not begin_in_body:
            try:
                conn.run(begin)
            except (pg8000.exceptions.InterfaceError, OSError):
                # The connection broke between the staleness check and BEGIN: nothing ran, reconnect once.
                self._discard(target)
                conn = self._connection(target, limits)
                conn.run(begin)
        try:
            result, ended = body(conn, begin if begin_in_body else None)
            if not ended:
                conn.run("ROLLBACK" if read_only else "COMMIT")
            return result
        except pg8000.exceptions.DatabaseError as exc:
            self._rollback(target, conn)
            raise _SqlFailure(_sql_error(exc)) from None
        except (pg8000.exceptions.InterfaceError, OSError):
            self._discard(target)
            raise UpstreamUnavailable("the tenant database connection failed during the call") from None
        except BaseException:
            self._rollback(target, conn)
            raise

    def _rollback(self, target: ToolTarget, conn: pg8000.native.Connection) -> None:
        try:
            conn.run("ROLLBACK")
        except Exception:
            self._discard(target)

    def _connection(self, target: ToolTarget, limits: Limits) -> pg8000.native.Connection:
        import pg8000.exceptions
        import pg8000.native

        key = (target.cache_key, target.read_only)
        with self._lock:
            conn = self._connections.get(key)
            if conn is not None and not _looks_closed(conn):
                self._connections.move_to_end(key)
                return conn
        if conn is not None:  # the server closed it while it sat idle (restart, idle or session timeout)
            self._discard(target)
        timeout = limits.statement_timeout_ms / 1000 + _SOCKET_MARGIN_SECONDS
        try:
            kwargs = parse_pg_url(target.connection_uri()).connect_kwargs(
                timeout=timeout, application_name="agentdb-tools"
            )
            conn = pg8000.native.Connection(**kwargs)
        except pg8000.exceptions.DatabaseError as exc:
            state = _sql_error(exc).sqlstate or ""
            raise UpstreamUnavailable(
                f"the tenant database refused the connection (SQLSTATE {state})", code="database_unavailable"
            ) from None
        except (pg8000.exceptions.InterfaceError, OSError):
            raise UpstreamUnavailable("the tenant database is unreachable", code="database_unavailable") from None
        with self._lock:
            self._connections[key] = conn
            while len(self._connections) > self._max:
                _, oldest = self._connections.popitem(last=False)
                _close_quietly(oldest)
        return conn

    def _discard(self, target: ToolTarget) -> None:
        with self._lock:
            conn = self._connections.pop((target.cache_key, target.read_only), None)
        if conn is not None:
            _close_quietly(conn)


class _WrapRefused(Exception):
    def __init__(self, statement: str) -> None:
        super().__init__("statement cannot be wrapped")
        self.statement = statement


def _looks_closed(conn: pg8000.native.Connection) -> bool:
    """True when an idle connection has something to read: between calls the server sends nothing
    unless it is closing the connection (a FATAL error, then EOF). A zero-timeout poll costs microseconds
    and lets a call's first message carry BEGIN and the statement together, with no retry needed."""
    sock = getattr(conn, "_usock", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed or invalid descriptor
        return True
    return bool(readable)


def _close_quietly(conn: pg8000.native.Connection) -> None:
    with contextlib.suppress(Exception):  # a broken socket may refuse a polite close
        conn.close()


def _timeouts_sql(limits: Limits) -> str:
    """Transaction-scoped timeouts. A query (not SET), so it also closes the window in which
    SET TRANSACTION READ WRITE could still undo BEGIN READ ONLY."""
    return (
        f"SELECT set_config('statement_timeout', '{int(limits.statement_timeout_ms)}', true),"
        f" set_config('lock_timeout', '{int(limits.lock_timeout_ms)}', true),"
        f" set_config('idle_in_transaction_session_timeout', '{int(limits.idle_in_transaction_timeout_ms)}', true)"
    )


def _sql_error(exc: BaseException) -> SqlError:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    message = str(fields.get("M") or "SQL error")
    if fields.get("D"):
        message += f" DETAIL: {fields['D']}"
    if fields.get("H"):
        message += f" HINT: {fields['H']}"
    return SqlError(sqlstate=fields.get("C"), message=message)


# Row-returning statements, capped on the server -------------------------------------------------
def _capped(source: str, limits: Limits) -> str:
    """Each row as JSON text, cut so that all rows together stay within the byte budget."""
    budget = limits.max_result_bytes + 1
    return (
        f"SELECT left(j, greatest(0, {budget} - (running - len))::int), len"
        " FROM (SELECT j, len, sum(len) OVER (ROWS UNBOUNDED PRECEDING) AS running"
        " FROM (SELECT j, octet_length(j) AS len"
        f" FROM (SELECT row_to_json(q)::text AS j FROM {source} OFFSET 0) t) a) b"
        f" LIMIT {limits.max_rows + 1}"
    )


def _execute(
    conn: pg8000.native.Connection, statement: str, limits: Limits, *, wrap: bool, prefix: str, end: str | None
) -> tuple[ToolOutcome, bool]:
    """Run one statement after ``prefix`` (BEGIN and/or the timeouts, whose one row is dropped). A wrapped
    statement carries the prefix and ``end`` (COMMIT/ROLLBACK) in the same round trip; returns whether it
    ended the transaction. If the statement fails, the rest of the message is skipped and the caller's
    ROLLBACK ends the transaction."""
    import pg8000.exceptions

    kind = classify(statement)
    if wrap and kind.kind is StatementKind.QUERY and kind.wrappable:
        sql = _capped(f"({statement}) AS q", limits)
    elif wrap and kind.kind is StatementKind.DML and kind.has_returning:
        sql = f"WITH q AS ({statement}) " + _capped("q", limits)
    else:
        conn.run(prefix)  # a plain statement's result must not mix with the prefix's row
        return _plain(conn, statement, limits), False
    try:
        # pg8000 gathers the rows of every statement in a message: the prefix's one row comes first.
        rows = (conn.run(f"{prefix}; {sql}; {end}" if end else f"{prefix}; {sql}") or [])[1:]
    except pg8000.exceptions.DatabaseError as exc:
        if _sql_error(exc).sqlstate in _WRAP_FAILED and _wrapping_was_the_problem(exc):
            raise _WrapRefused(statement) from None
        raise
    outcome = _from_json_rows(rows, limits)
    if not outcome.columns and kind.kind is StatementKind.QUERY:
        outcome.columns = _describe_columns(conn, statement, limits, in_transaction=end is None)
    return outcome, end is not None


def _wrapping_was_the_problem(exc: BaseException) -> bool:
    message = str(_sql_error(exc).message)
    return any(
        fragment in message
        for fragment in ("must be at the top level", "INTO is not allowed here", "syntax error at or near")
    )


def _describe_columns(
    conn: pg8000.native.Connection, statement: str, limits: Limits, *, in_transaction: bool
) -> list[str]:
    """Column names of a query that returned no rows (its JSON rows carried none)."""
    if not in_transaction:  # the call's transaction already ended: describe in a read-only one
        conn.run("BEGIN READ ONLY; " + _timeouts_sql(limits))
    try:
        conn.run(f"SELECT * FROM ({statement}) AS q LIMIT 0")
        return [c["name"] for c in (conn.columns or [])]
    finally:
        if not in_transaction:
            conn.run("ROLLBACK")


def _from_json_rows(rows: list[list[Any]], limits: Limits) -> ToolOutcome:
    outcome = ToolOutcome()
    used = 0
    for text, full_length in rows:
        if (
            len(outcome.rows) >= limits.max_rows
            or len(text.encode()) < full_length
            or used + full_length > (limits.max_result_bytes)
        ):
            outcome.truncated = True
            break
        pairs = json.loads(text, object_pairs_hook=_Pairs)  # the row keeps duplicate column names
        if not outcome.columns:
            outcome.columns = [k for k, _ in pairs]
        outcome.rows.append([_plain_json(v) for _, v in pairs])
        used += full_length
    outcome.row_count = len(outcome.rows)
    return outcome


class _Pairs(list[Any]):
    """A JSON object as its (key, value) pairs, in order, duplicates kept."""


def _plain_json(value: Any) -> Any:
    if isinstance(value, _Pairs):
        return {k: _plain_json(v) for k, v in value}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


def _plain(conn: pg8000.native.Connection, statement: str, limits: Limits) -> ToolOutcome:
    """Statements that are not wrapped (DDL, DML without RETURNING, EXPLAIN, SHOW …)."""
    rows = conn.run(statement)
    outcome = ToolOutcome()
    if rows is None:
        outcome.row_count = conn.row_count if conn.row_count and conn.row_count > 0 else 0
        return outcome
    outcome.columns = [c["name"] for c in (conn.columns or [])]
    return fill_capped(outcome, ([to_jsonable(v) for v in row] for row in rows), limits)


def to_jsonable(value: Any) -> Any:
    """Python values pg8000 returns → JSON values, the way row_to_json would write them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return str(value)


# Catalog tools: parameterised queries only ---------------------------------------------------------
_LIST_TABLES = """
SELECT n.nspname, c.relname,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                      WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
       pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND (CAST(:schema AS text) IS NULL OR n.nspname = CAST(:schema AS text))
ORDER BY 1, 2
"""


def _list_tables(conn: pg8000.native.Connection, schema: str | None) -> ToolOutcome:
    rows = conn.run(_LIST_TABLES, schema=schema) or []
    tables = [{"schema": s, "name": n, "type": t, "rowEstimate": est, "sizeBytes": size} for s, n, t, est, size in rows]
    return ToolOutcome(
        columns=["schema", "name", "type", "rowEstimate", "sizeBytes"],
        rows=[list(t.values()) for t in tables],
        row_count=len(tables),
        data={"tables": tables},
    )


_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '', a.attgenerated <> ''
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_CONSTRAINTS = """
SELECT conname, contype, pg_get_constraintdef(oid),
       ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute ON attrelid = conrelid AND attnum = k.n ORDER BY k.i)
FROM pg_constraint WHERE conrelid = :oid ORDER BY contype, conname
"""
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary, pg_relation_size(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = :oid ORDER BY c.relname
"""


def _describe_table(conn: pg8000.native.Connection, table_name: str) -> ToolOutcome:
    found = conn.run(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, pg_total_relation_size(c.oid), pg_relation_size(c.oid),"
        " CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:name)",
        name=table_name,
    )
    if not found:
        return ToolOutcome(error=SqlError("42P01", f"table {table_name!r} does not exist"))
    oid, schema, name, _kind, total, heap, estimate = found[0]
    columns = [
        {"name": n, "type": t, "nullable": nullable, "default": default, "identity": ident, "generated": gen}
        for n, t, nullable, default, ident, gen in conn.run(_COLUMNS, oid=oid)
    ]
    constraints = conn.run(_CONSTRAINTS, oid=oid)
    primary: list[str] = next((cols for _, kind, _, cols in constraints if kind == "p"), [])
    foreign = [{"name": n, "columns": cols, "definition": d} for n, kind, d, cols in constraints if kind == "f"]
    others = [
        {"name": n, "type": {"u": "unique", "c": "check", "x": "exclusion"}.get(kind, kind), "definition": d}
        for n, kind, d, _ in constraints
        if kind not in ("p", "f")
    ]
    indexes = [
        {"name": n, "definition": d, "unique": u, "primary": p, "sizeBytes": s}
        for n, d, u, p, s in conn.run(_INDEXES, oid=oid)
    ]
    data = {
        "schema": schema,
        "name": name,
        "columns": columns,
        "primaryKey": primary,
        "foreignKeys": foreign,
        "constraints": others,
        "indexes": indexes,
        "rowEstimate": estimate,
        "sizeBytes": {"total": total, "table": heap},
    }
    return ToolOutcome(
        columns=["name", "type", "nullable", "default"],
        rows=[[c["name"], c["type"], c["nullable"], c["default"]] for c in columns],
        row_count=len(columns),
        data=data,
    )
