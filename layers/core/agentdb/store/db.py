"""A cached pg8000 connection to one database, reconnected when it breaks.

Lambda keeps one connection per warm container. A broken connection (network blip, server
restart, idle timeout) is replaced and the statement retried once, but only outside a transaction:
inside one, the failure is raised because the transaction is gone with the connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from agentdb.pgurl import PgUrl, parse_pg_url

if TYPE_CHECKING:
    import pg8000.native


class Database:
    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        timeout: float = 25.0,
        application_name: str = "agentdb",
    ) -> None:
        self._url_source = url
        self._timeout = timeout
        self._application_name = application_name
        self._conn: pg8000.native.Connection | None = None
        self._prepared: dict[str, pg8000.native.PreparedStatement] = {}
        self.last_columns: list[str] = []
        self._in_transaction = False
        self._lock = threading.RLock()

    @property
    def url(self) -> PgUrl:
        source = self._url_source
        return parse_pg_url(source() if callable(source) else source)

    def _connect(self) -> pg8000.native.Connection:
        import pg8000.native

        kwargs = self.url.connect_kwargs(timeout=self._timeout, application_name=self._application_name)
        return pg8000.native.Connection(**kwargs)

    def connection(self) -> pg8000.native.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run one statement; returns its rows (empty for statements without results).

        Statements with parameters are prepared once per connection and reused: pg8000 would
        otherwise re-parse the SQL text for placeholders in Python on every call.
        """
        import pg8000.exceptions

        with self._lock:
            try:
                return self._execute(sql, params)
            except (pg8000.exceptions.InterfaceError, OSError):
                self._discard()
                if self._in_transaction:
                    raise
                return self._execute(sql, params)

    def _execute(self, sql: str, params: dict[str, Any]) -> list[list[Any]]:
        conn = self.connection()
        if not params:
            rows = conn.run(sql)
            self.last_columns = [c["name"] for c in (conn.columns or [])]
            return rows or []
        statement = self._prepared.get(sql)
        if statement is None:
            statement = self._prepared[sql] = conn.prepare(sql)
        rows = statement.run(**params)
        self.last_columns = [c["name"] for c in (statement.columns or [])]
        return rows or []

    def run_dicts(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.run(sql, **params)
            return [dict(zip(self.last_columns, row, strict=True)) for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN … COMMIT on this connection; ROLLBACK on any error."""
        with self._lock:
            self.run("BEGIN")
            self._in_transaction = True
            try:
                yield self
            except BaseException:
                self._in_transaction = False
                try:
                    self.run("ROLLBACK")
                except Exception:
                    self._discard()
                raise
            else:
                self._in_transaction = False
                self.run("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self._prepared = {}
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail; nothing to do
                conn.close()
