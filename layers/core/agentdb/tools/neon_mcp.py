"""The ``neon-mcp`` tool backend: Neon's hosted MCP server (``NEON_MCP_URL``) over streamable HTTP.

Connection. One MCP client session per ``(project, read-only)`` pair, opened with the ``mcp`` package's
streamable-HTTP client against ``<NEON_MCP_URL>?projectId=<project>&category=querying,schema`` plus
``&readonly=true`` for read-only access. Those are the query parameters the hosted server reads
(``projectId`` scopes the connection to one project, ``category`` limits the tools to the SQL and schema
ones, ``readonly=true`` hides write tools and runs SQL in a ``READ ONLY`` transaction); any other query
parameters already on ``NEON_MCP_URL`` are kept. Every request carries ``Authorization: Bearer <key>``. The
protocol is the initialize handshake (``mode="legacy"``): the hosted server speaks the 2025 handshake era.

Calls. Our tools map to the hosted ones: ``run_sql`` → ``run_sql {sql}``, ``run_sql_transaction`` →
``run_sql_transaction {sqlStatements}``, ``list_tables`` → ``get_database_tables`` (its ``schema`` filter is
applied here: the hosted tool has none), ``describe_table_schema`` → ``describe_table_schema {tableName}``.
Routing comes from the target, never from the caller: ``projectId``, and ``branchId``/``databaseName`` when
the target has them. ``run_sql_transaction`` gets one statement prepended that sets the statement, lock
and idle-in-transaction timeouts for the transaction (``set_config(..., true)``); its result is dropped.
(``run_sql`` is one statement on the hosted side: only this client's ``timeout`` bounds it.)

Schemas. Before a call, the outgoing arguments are validated against the hosted tool's input schema,
discovered with ``tools/list`` and cached in ``mcp_tool_schema_cache`` (``ToolSchemaCache``; server type
``"neon-hosted"`` for ``mcp.neon.tech``, ``"neon-mcp:<host><path>"`` for another URL) and in memory, both
for ``schema_ttl_seconds``. A routing property the schema no longer declares is left out only when it is
``projectId`` (the URL scopes the connection, and the hosted server fills it in); losing ``branchId`` or
``databaseName`` is an error, never a silent switch to the default branch or database. When the server
rejects a call for its arguments (JSON-RPC ``-32602``, or an ``isError`` result saying so) or the cached
schema no longer fits, the schemas are discovered again once and the call retried once.

Results. The hosted server answers with one text block holding JSON: rows as objects for ``run_sql``
(→ ``columns``/``rows``/``row_count``), one such array per statement for ``run_sql_transaction`` (→
``statements``, and the last statement's rows at the top, as the direct backend does), table and
column descriptions for the catalog tools (→ ``data``, in the direct backend's shape where the hosted
answer has the facts). ``limits.max_rows``/``max_result_bytes`` cut rows with ``truncated=True``; the
hosted server sends the full result first (bounded by ``max_response_bytes``). ``isError`` results are
SQL errors: ``ToolOutcome.error`` with the SQLSTATE when the text carries one.

Failures. Timeouts, transport failures, 429 and 5xx → ``UpstreamUnavailable("Neon MCP server
unavailable: ...")``; 401/403 → ``UpstreamError`` (code ``upstream_unauthorized``); an answer above
``max_response_bytes`` → ``UpstreamError`` (``result_too_large``); arguments the server still refuses after
the refresh → ``UpstreamError`` (``upstream_schema_mismatch``); other protocol errors → ``UpstreamError``.
A target without a Neon project id is a ``ConfigError``. A reused session that turns out
stale (the server forgot it, or the connection was refused) is reopened once and the call retried; a
connection that broke mid-call is retried only for calls that cannot have changed anything (read-only
targets and catalog tools). The API key is never part of a message or a log line.

Time. ``timeout`` bounds a whole ``call()``: schema discovery, session open, the call, a reconnect or a
schema refresh and retry all share it (the default, 15 s, stays under the functions' 30 s limit).

Threads. Lambda handlers are synchronous and ``mcp`` is asyncio-based: each backend runs one event loop on
one daemon thread (started on first use) that owns the sessions, and ``call()`` waits for its result.
``reuse_session=False`` opens and closes a session inside every call on that same loop. ``close()``
closes every session, stops the loop and joins the thread (and the loop's executor threads).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentdb.errors import AgentDBError, ConfigError, UpstreamError, UpstreamUnavailable
from agentdb.tools.backend import Limits, SqlError, ToolName, ToolOutcome, ToolTarget, fill_capped

if TYPE_CHECKING:  # asyncio and ssl too: importing this module stays cheap when the backend is not used
    import asyncio
    import ssl

    import mcp_types
    from mcp.client.client import Client

    from agentdb.store.tool_schemas import ToolSchemaCache

T = TypeVar("T")
log = logging.getLogger(__name__)

HOSTED_TOOLS: dict[str, str] = {
    "run_sql": "run_sql",
    "run_sql_transaction": "run_sql_transaction",
    "list_tables": "get_database_tables",
    "describe_table_schema": "describe_table_schema",
}
CATEGORIES = "querying,schema"
HOSTED_SERVER_TYPE = "neon-hosted"
_OUR_QUERY_PARAMS = frozenset({"projectId", "category", "readonly"})
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")
_SQLSTATE_IN_TEXT = re.compile(r"SQLSTATE[\s:=]*\(?([0-9A-Z]{5})\b")
_REJECTION = re.compile(r"MCP error -32602|Invalid arguments for tool|Input validation error:", re.IGNORECASE)
_TABLE_TYPES = {"BASE TABLE": "table", "VIEW": "view", "FOREIGN": "foreign table", "LOCAL TEMPORARY": "temporary"}
_MESSAGE_CAP = 2000
_UNAVAILABLE = "Neon MCP server unavailable"
_GRACE = 2.0  # seconds the caller waits beyond a call's deadline for the loop to unwind it
_CLOSE_WAIT = 2.0  # seconds a session gets to end politely (DELETE) before it is cancelled

# JSON-RPC error codes (mcp_types.jsonrpc), repeated here so that this module imports without mcp.
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001
_INVALID_REQUEST = -32600
_INVALID_PARAMS = -32602


@dataclass
class BackendStats:
    """Counters for tests and benchmarks."""

    calls: int = 0
    sessions_opened: int = 0
    list_tools: int = 0
    schema_refreshes: int = 0
    reconnects: int = 0


class NeonMcpBackend:
    name = "neon-mcp"

    def __init__(
        self,
        url: str,
        api_key: str,
        schema_cache: ToolSchemaCache | None,
        *,
        timeout: float = 15.0,
        reuse_session: bool = True,
        schema_ttl_seconds: float = 3600,
        server_type: str | None = None,
        max_sessions: int = 16,
        max_response_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not url:
            raise ConfigError("configuration: NEON_MCP_URL must be set")
        if not api_key:
            raise ConfigError("configuration: NEON_API_KEY must be set for TOOL_BACKEND=neon-mcp")
        self._url = url
        self._api_key = api_key
        self._cache = schema_cache
        self._timeout = timeout
        self._reuse = reuse_session
        self._ttl = schema_ttl_seconds
        self.server_type = server_type or default_server_type(url)
        self._max_sessions = max(1, max_sessions)
        self._max_response_bytes = max_response_bytes
        self._schemas: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._schemas_lock = threading.Lock()
        self._runner = _LoopThread("agentdb-neon-mcp")
        self._sessions: OrderedDict[tuple[str, bool], _Session] = OrderedDict()  # loop thread only
        self._opening: dict[tuple[str, bool], asyncio.Lock] = {}  # loop thread only
        self._ssl: ssl.SSLContext | None = None  # loop thread only
        self.stats = BackendStats()

    def __repr__(self) -> str:  # never the key
        return f"NeonMcpBackend(url={self._url!r}, reuse_session={self._reuse})"

    # Interface ----------------------------------------------------------------------------------
    def call(self, target: ToolTarget, tool: ToolName, arguments: dict[str, Any], limits: Limits) -> ToolOutcome:
        if not target.project_id:
            raise ConfigError("TOOL_BACKEND=neon-mcp serves Neon projects only: this database has no Neon project id")
        hosted = HOSTED_TOOLS[tool]
        idempotent = target.read_only or tool in ("list_tables", "describe_table_schema")
        self.stats.calls += 1
        deadline = time.monotonic() + self._timeout  # one budget for the whole call, retries included
        schema, fresh = self._schema(target, hosted, deadline)
        refreshed = False
        while True:
            try:
                outgoing = _arguments(tool, arguments, target, limits, schema)
                result = self._runner.run(
                    functools.partial(
                        self._with_session,
                        target,
                        idempotent,
                        functools.partial(_call_tool, hosted, outgoing),
                        deadline,
                    ),
                    timeout=_left(deadline) + _GRACE,
                )
                if result.is_error and _is_rejection(_texts(result)):
                    raise _Rejected(_redact(" ".join(_texts(result)), self._api_key)[:_MESSAGE_CAP])
                return _outcome(tool, result, arguments, limits, self._api_key)
            except _Rejected as rejected:
                if refreshed or (fresh and isinstance(rejected, _Incompatible)):
                    raise UpstreamError(
                        f"the Neon MCP server does not accept our arguments for {hosted}: {rejected.reason}",
                        code="upstream_schema_mismatch",
                    ) from None
                log.info("neon-mcp: %s rejected for its arguments; discovering the tool schemas again", hosted)
                self.stats.schema_refreshes += 1
                schema, fresh = self._schema(target, hosted, deadline, refresh=True)
                refreshed = True

    def close(self) -> None:
        """Close every MCP session, stop the event loop and join its threads."""
        self._runner.stop(self._close_sessions)

    def endpoint(self, target: ToolTarget) -> str:
        """The MCP URL for a target: NEON_MCP_URL scoped to its project, tool categories and access."""
        parts = urlsplit(self._url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _OUR_QUERY_PARAMS]
        query += [("projectId", target.project_id or ""), ("category", CATEGORIES)]
        if target.read_only:
            query.append(("readonly", "true"))
        return urlunsplit(parts._replace(query=urlencode(query, safe=",")))

    # Schemas --------------------------------------------------------------------------------------
    def _schema(
        self, target: ToolTarget, hosted: str, deadline: float, *, refresh: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """The hosted tool's input schema and whether it was discovered just now."""
        if not refresh:
            with self._schemas_lock:
                entry = self._schemas.get(hosted)
            if entry is not None and self._fresh(entry[1]):
                return entry[0], False
            if self._cache is not None:
                try:
                    rows = self._cache.get(self.server_type)
                except Exception as exc:  # the cache is an optimisation: never fail a call over it
                    log.warning("neon-mcp: reading the tool schema cache failed (%s)", type(exc).__name__)
                    rows = {}
                with self._schemas_lock:
                    for row in rows.values():
                        self._schemas[row.tool_name] = (row.schema, row.discovered_at)
                cached = rows.get(hosted)
                if cached is not None and self._fresh(cached.discovered_at):
                    return cached.schema, False
        discovered = self._runner.run(
            functools.partial(self._with_session, target, True, _list_tools, deadline), timeout=_left(deadline) + _GRACE
        )
        self.stats.list_tools += 1
        now = datetime.now(UTC)
        with self._schemas_lock:
            for name, schema in discovered.items():
                self._schemas[name] = (schema, now)
        if self._cache is not None and discovered:
            try:
                self._cache.put_many(self.server_type, discovered)
            except Exception as exc:
                log.warning("neon-mcp: writing the tool schema cache failed (%s)", type(exc).__name__)
        log.info("neon-mcp: discovered %d tool schemas on %s", len(discovered), self.server_type)
        if hosted not in discovered:
            raise UpstreamError(
                f"the Neon MCP server does not offer the {hosted} tool on this connection", code="upstream_error"
            )
        return discovered[hosted], True

    def _fresh(self, discovered_at: datetime) -> bool:
        if discovered_at.tzinfo is None:
            discovered_at = discovered_at.replace(tzinfo=UTC)
        return (datetime.now(UTC) - discovered_at).total_seconds() < self._ttl

    # Sessions (loop thread) -------------------------------------------------------------------------
    async def _with_session(
        self, target: ToolTarget, idempotent: bool, op: Callable[[Client], Awaitable[T]], deadline: float
    ) -> T:
        """Run ``op`` on an MCP session for the target by ``deadline``; failures become AgentDB errors."""
        import asyncio

        url = self.endpoint(target)
        if not self._reuse:
            watch = _HttpWatch()
            done: list[T] = []
            try:
                async with asyncio.timeout(_left(deadline)):
                    self.stats.sessions_opened += 1
                    async with self._open(url, watch) as client:
                        done.append(await op(client))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if done:  # the call went through; only ending the session failed
                    log.info("neon-mcp: closing a one-call session failed (%s)", type(exc).__name__)
                    return done[0]
                raise self._classify(exc, watch.statuses, None, url, established=False).error from None
            return done[0]

        key = (target.project_id or "", target.read_only)
        for attempt in range(2):
            try:
                async with asyncio.timeout(_left(deadline)):
                    session, new = await self._session(key, url)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                raise self._classify(exc, [], None, url, established=False).error from None
            mark = len(session.watch.statuses)
            try:
                async with asyncio.timeout(_left(deadline)):
                    assert session.client is not None
                    return await op(session.client)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                failure = await session.failure_after(exc)
                verdict = self._classify(exc, session.watch.statuses[mark:], failure, url, established=True)
                if verdict.kind in ("stale", "unreachable", "broken", "auth", "too_large"):
                    await self._drop(session)
                retry = not new and (
                    verdict.kind in ("stale", "unreachable") or (verdict.kind == "broken" and idempotent)
                )
                if attempt == 0 and retry:
                    self.stats.reconnects += 1
                    log.info("neon-mcp: the reused session failed (%s); reconnecting once", verdict.kind)
                    continue
                raise verdict.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _session(self, key: tuple[str, bool], url: str) -> tuple[_Session, bool]:
        import asyncio

        session = self._sessions.get(key)
        if session is not None and session.healthy:
            self._sessions.move_to_end(key)
            return session, False
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            session = self._sessions.get(key)
            if session is not None and session.healthy:
                return session, False
            if session is not None:
                await self._drop(session)
            session = _Session(key=key, url=url)
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            session.task = asyncio.create_task(self._hold(session, ready), name=f"neon-mcp-session-{key[0]}")
            self.stats.sessions_opened += 1
            try:
                await asyncio.shield(ready)  # raises what the holder failed with
            except BaseException as exc:
                session.stop.set()
                session.task.cancel()
                with contextlib.suppress(BaseException):
                    await session.task
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise self._classify(exc, session.watch.statuses, None, url, established=False).error from None
            self._sessions[key] = session
            while len(self._sessions) > self._max_sessions:
                _, oldest = self._sessions.popitem(last=False)
                await self._drop(oldest)
            return session, True

    async def _hold(self, session: _Session, ready: asyncio.Future[None]) -> None:
        """Own one session: enter its client, wait until told to stop, exit it (in this same task)."""
        import asyncio

        try:
            async with self._open(session.url, session.watch) as client:
                session.client = client
                if not ready.done():
                    ready.set_result(None)
                await session.stop.wait()
        except BaseException as exc:  # recorded for the caller, who classifies it
            session.failure = exc
            if not ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    ready.cancel()
                else:
                    ready.set_exception(exc)
        finally:
            session.client = None
            session.closed.set()

    async def _drop(self, session: _Session) -> None:
        import asyncio

        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        session.stop.set()
        task = session.task
        if task is None or task.done():
            return
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(session.closed.wait()), timeout=_CLOSE_WAIT)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _close_sessions(self) -> None:
        import asyncio

        sessions = list(self._sessions.values())
        self._sessions.clear()
        self._opening.clear()
        await asyncio.gather(*(self._drop(s) for s in sessions), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _open(self, url: str, watch: _HttpWatch) -> AsyncIterator[Client]:
        import httpx2
        import mcp_types
        from mcp.client.client import Client
        from mcp.client.streamable_http import streamable_http_client

        if self._ssl is None:  # building one costs ~70 ms (CA bundle): once per backend, not per session
            self._ssl = httpx2.create_ssl_context()
        # read= is for the server-sent event streams; each MCP request is bounded by self._timeout.
        timeout = httpx2.Timeout(self._timeout, read=max(300.0, self._timeout))
        headers = {"Authorization": f"Bearer {self._api_key}"}
        async with httpx2.AsyncClient(
            headers=headers, timeout=timeout, verify=self._ssl, event_hooks={"response": [watch.saw]}
        ) as http:
            transport = streamable_http_client(
                url, http_client=http, terminate_on_close=True, max_sse_event_size=self._max_response_bytes
            )
            client = Client(
                transport,
                mode="legacy",
                read_timeout_seconds=self._timeout,
                cache=None,
                client_info=mcp_types.Implementation(name="agentdb", version="1"),
            )
            async with client:
                yield client

    # Errors --------------------------------------------------------------------------------------
    def _classify(
        self,
        exc: BaseException,
        statuses: list[int],
        failure: BaseException | None,
        url: str,
        *,
        established: bool = False,
    ) -> _Verdict:
        """What a failure means; ``established``: it happened on a session that had been working."""
        from mcp.shared.exceptions import MCPError

        key = self._api_key
        errors = list(_leaves(exc)) + (list(_leaves(failure)) if failure is not None else [])
        for error in errors:
            if isinstance(error, AgentDBError | _Rejected):
                return _Verdict("known", error)
        auth = next((s for s in statuses if s in (401, 403)), None)
        if auth is not None:
            return _Verdict(
                "auth",
                UpstreamError(f"the Neon MCP server refused the API key (HTTP {auth})", code="upstream_unauthorized"),
            )
        mcp_errors = [e for e in errors if isinstance(e, MCPError)]
        for error in mcp_errors:
            if error.code == _INVALID_PARAMS:
                return _Verdict("rejected", _Rejected(_redact(error.message, key)))
        if established and (
            404 in statuses
            or any(e.code == _INVALID_REQUEST and "session terminated" in e.message.lower() for e in mcp_errors)
        ):
            return _Verdict("stale", UpstreamUnavailable(f"{_UNAVAILABLE}: the MCP session expired"))
        names = {type(e).__name__ for e in errors}
        if names & {"ConnectError", "ConnectTimeout"} or any(isinstance(e, ConnectionRefusedError) for e in errors):
            return _Verdict("unreachable", UpstreamUnavailable(f"{_UNAVAILABLE}: cannot connect to {_host(url)}"))
        if (
            any(isinstance(e, TimeoutError) for e in errors)
            or names & {"ReadTimeout", "WriteTimeout", "PoolTimeout"}
            or any(e.code == _REQUEST_TIMEOUT for e in mcp_errors)
        ):
            return _Verdict("timeout", UpstreamUnavailable(f"{_UNAVAILABLE}: no answer within {self._timeout:g} s"))
        if any("byte limit" in str(e) for e in errors if type(e).__name__ == "SSEError" or isinstance(e, MCPError)):
            return _Verdict(
                "too_large",
                UpstreamError(
                    f"the Neon MCP server's answer exceeded {self._max_response_bytes} bytes", code="result_too_large"
                ),
            )
        overloaded = next((s for s in statuses if s == 429 or s >= 500), None)
        if overloaded is not None:
            return _Verdict("overloaded", UpstreamUnavailable(f"{_UNAVAILABLE}: HTTP {overloaded}"))
        if (
            any(e.code == _CONNECTION_CLOSED for e in mcp_errors)
            or any(isinstance(e, OSError | EOFError) for e in errors)
            or names & {"ReadError", "WriteError", "RemoteProtocolError", "SSEError", "NetworkError"}
        ):
            return _Verdict("broken", UpstreamUnavailable(f"{_UNAVAILABLE}: the connection broke during the call"))
        client_error = next((s for s in statuses if 400 <= s < 500), None)
        if client_error is not None:
            hint = " (check NEON_MCP_URL)" if client_error in (404, 405) else ""
            return _Verdict("upstream", UpstreamError(f"the Neon MCP server answered HTTP {client_error}{hint}"))
        if mcp_errors:
            return _Verdict(
                "upstream",
                UpstreamError(f"the Neon MCP server reported an error: {_redact(mcp_errors[0].message, key)}"),
            )
        log.warning("neon-mcp: unexpected failure (%s)", ", ".join(sorted(names)) or type(exc).__name__)
        return _Verdict("broken", UpstreamUnavailable(f"{_UNAVAILABLE}: unexpected client failure"))


# Sessions and the event-loop thread -------------------------------------------------------------
class _HttpWatch:
    """Remembers the HTTP error statuses of a session's POSTs (the MCP client turns them into one code)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    async def saw(self, response: Any) -> None:
        if response.status_code >= 400 and response.request.method == "POST":
            self.statuses.append(response.status_code)


@dataclass(eq=False)
class _Session:
    key: tuple[str, bool]
    url: str
    watch: _HttpWatch = field(default_factory=_HttpWatch)
    client: Client | None = None
    task: asyncio.Task[None] | None = None
    failure: BaseException | None = None
    stop: asyncio.Event = field(default_factory=lambda: _asyncio().Event())
    closed: asyncio.Event = field(default_factory=lambda: _asyncio().Event())

    @property
    def healthy(self) -> bool:
        return self.client is not None and self.task is not None and not self.task.done() and self.failure is None

    async def failure_after(self, exc: BaseException) -> BaseException | None:
        """After a call failed: the session's own failure, if its transport is going down too."""
        import asyncio

        if self.failure is None and self.task is not None and not self.task.done() and _closed_connection(exc):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.closed.wait()), timeout=1.0)
        return self.failure


class _LoopThread:
    """One asyncio loop on one daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        import asyncio

        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()
                thread = threading.Thread(target=self._main, args=(loop, started), name=self._name, daemon=True)
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, factory: Callable[[], Awaitable[T]], *, timeout: float) -> T:
        import asyncio
        import concurrent.futures

        loop = self._ensure()

        async def main() -> T:
            return await factory()

        future = asyncio.run_coroutine_threadsafe(main(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UpstreamUnavailable(f"{_UNAVAILABLE}: the call did not finish in time") from None
        except concurrent.futures.CancelledError:
            raise UpstreamUnavailable(f"{_UNAVAILABLE}: the call was cancelled") from None

    def stop(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        import asyncio

        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if cleanup is not None:
            done = asyncio.run_coroutine_threadsafe(cleanup(), loop)
            with contextlib.suppress(Exception):
                done.result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)


# MCP operations (loop thread) ----------------------------------------------------------------------
async def _call_tool(name: str, arguments: dict[str, Any], client: Client) -> mcp_types.CallToolResult:
    import mcp_types

    # session.send_request, not client.call_tool: that one lists the tools first to validate output schemas.
    request = mcp_types.CallToolRequest(params=mcp_types.CallToolRequestParams(name=name, arguments=arguments))
    return await client.session.send_request(request, mcp_types.CallToolResult)


async def _list_tools(client: Client) -> dict[str, dict[str, Any]]:
    import mcp_types

    schemas: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    for _ in range(20):
        page = await client.session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor))
        for tool in page.tools:
            schemas[tool.name] = dict(tool.input_schema)
        cursor = page.next_cursor
        if not cursor:
            break
    return schemas


# Arguments ------------------------------------------------------------------------------------------
class _Rejected(Exception):
    """The hosted server (or its cached schema) does not accept the arguments."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Incompatible(_Rejected):
    """The cached schema, checked here before sending, does not fit our arguments."""


@dataclass(frozen=True)
class _Verdict:
    kind: str
    error: Exception


def _arguments(
    tool: str, arguments: dict[str, Any], target: ToolTarget, limits: Limits, schema: dict[str, Any]
) -> dict[str, Any]:
    if tool == "run_sql":
        outgoing: dict[str, Any] = {"sql": arguments["sql"]}
    elif tool == "run_sql_transaction":
        outgoing = {"sqlStatements": [_timeouts_statement(limits), *arguments["sqlStatements"]]}
    elif tool == "describe_table_schema":
        outgoing = {"tableName": arguments["tableName"]}
    else:
        outgoing = {}
    declared = schema.get("properties")
    properties: dict[str, Any] = declared if isinstance(declared, dict) else {}
    closed = schema.get("additionalProperties") is False
    routing = {"projectId": target.project_id, "branchId": target.branch_id, "databaseName": target.database_name}
    for name, value in routing.items():
        if not value:
            continue
        if name in properties or not closed:
            outgoing[name] = value
        elif name != "projectId":  # the URL scopes the project; a branch or database must never be dropped
            raise _Incompatible(f"the tool no longer accepts {name}")
    _validate(outgoing, schema)
    return outgoing


def _validate(arguments: dict[str, Any], schema: dict[str, Any]) -> None:
    from jsonschema import exceptions as jsonschema_exceptions
    from jsonschema.validators import validator_for

    try:
        validator = validator_for(schema)(schema)
        error = jsonschema_exceptions.best_match(validator.iter_errors(arguments))
    except Exception as exc:  # an unusable schema: let the server judge the call
        log.warning("neon-mcp: cannot use the cached input schema (%s)", type(exc).__name__)
        return
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise _Incompatible(f"{where}: {error.validator} check failed against the cached input schema")


def _timeouts_statement(limits: Limits) -> str:
    return (
        f"SELECT set_config('statement_timeout', '{int(limits.statement_timeout_ms)}', true),"
        f" set_config('lock_timeout', '{int(limits.lock_timeout_ms)}', true),"
        f" set_config('idle_in_transaction_session_timeout', '{int(limits.idle_in_transaction_timeout_ms)}', true)"
    )


# Results --------------------------------------------------------------------------------------------
def _texts(result: mcp_types.CallToolResult) -> list[str]:
    return [str(getattr(block, "text", "")) for block in result.content if getattr(block, "type", None) == "text"]


def _is_rejection(texts: list[str]) -> bool:
    """An ``isError`` result that is the SDK's argument validation, not a SQL error (which has a code)."""
    if any(isinstance(parsed := _json(t), dict) and ("code" in parsed or "name" in parsed) for t in texts):
        return False
    return bool(_REJECTION.search(" ".join(texts)))


def _outcome(
    tool: str, result: mcp_types.CallToolResult, arguments: dict[str, Any], limits: Limits, key: str
) -> ToolOutcome:
    texts = _texts(result)
    if result.is_error:
        return ToolOutcome(error=_sql_error(texts, key))
    if result.structured_content is not None:
        body: Any = result.structured_content
    else:
        body = _json(texts[0]) if texts else None
    if tool == "run_sql":
        return _table(body, limits) if isinstance(body, list) else ToolOutcome(data=body)
    if tool == "run_sql_transaction":
        if not isinstance(body, list) or not body:
            return ToolOutcome(data=body)
        parts = [_table(rows if isinstance(rows, list) else [], limits) for rows in body[1:]]  # [0]: timeouts
        if not parts:
            return ToolOutcome(statements=[])
        last = parts[-1]
        last.statements = [
            {"columns": p.columns, "rows": p.rows, "rowCount": p.row_count, "truncated": p.truncated} for p in parts
        ]
        return last
    if tool == "list_tables":
        return _tables(body, arguments.get("schema"))
    return _description(body, arguments["tableName"])


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _table(rows: list[Any], limits: Limits) -> ToolOutcome:
    outcome = ToolOutcome()

    def values() -> Iterator[list[Any]]:
        for row in rows:
            if not isinstance(row, dict):
                row = {"value": row}
            if not outcome.columns:  # the first row names the columns
                outcome.columns = list(row)
            yield [row.get(column) for column in outcome.columns]

    return fill_capped(outcome, values(), limits)


def _tables(body: Any, schema: str | None) -> ToolOutcome:
    tables = []
    for entry in body if isinstance(body, list) else []:
        if not isinstance(entry, dict):
            continue
        if schema is not None and entry.get("table_schema") != schema:
            continue
        kind = str(entry.get("table_type") or "")
        tables.append(
            {
                "schema": entry.get("table_schema"),
                "name": entry.get("table_name"),
                "type": _TABLE_TYPES.get(kind, kind.lower()),
                "rowEstimate": None,
                "sizeBytes": None,
            }
        )
    return ToolOutcome(
        columns=["schema", "name", "type", "rowEstimate", "sizeBytes"],
        rows=[list(t.values()) for t in tables],
        row_count=len(tables),
        data={"tables": tables},
    )


def _description(body: Any, table_name: str) -> ToolOutcome:
    raw = body.get("raw") if isinstance(body, dict) else None
    if not isinstance(raw, dict) or not raw.get("columns"):
        return ToolOutcome(error=SqlError("42P01", f"table {table_name!r} does not exist"))
    schema, _, name = table_name.rpartition(".")
    columns = [
        {
            "name": c.get("name"),
            "type": c.get("type"),
            "nullable": c.get("nullable"),
            "default": c.get("default"),
            "description": c.get("description"),
        }
        for c in raw["columns"]
        if isinstance(c, dict)
    ]
    constraints = [c for c in raw.get("constraints") or [] if isinstance(c, dict)]
    primary = next((c for c in constraints if c.get("type") == "PRIMARY KEY"), None)
    data = {
        "schema": schema or "public",
        "name": name,
        "columns": columns,
        "primaryKey": _constraint_columns(str(primary.get("definition") or "")) if primary else [],
        "foreignKeys": [
            {
                "name": c.get("name"),
                "columns": _constraint_columns(str(c.get("definition") or "")),
                "definition": c.get("definition"),
            }
            for c in constraints
            if c.get("type") == "FOREIGN KEY"
        ],
        "constraints": [
            {"name": c.get("name"), "type": str(c.get("type") or "").lower(), "definition": c.get("definition")}
            for c in constraints
            if c.get("type") not in ("PRIMARY KEY", "FOREIGN KEY")
        ],
        "indexes": [
            {
                "name": i.get("name"),
                "definition": i.get("definition"),
                "unique": "UNIQUE INDEX" in str(i.get("definition") or ""),
                "primary": primary is not None and i.get("name") == primary.get("name"),
                "size": i.get("size"),
            }
            for i in raw.get("indexes") or []
            if isinstance(i, dict)
        ],
        "size": {"total": raw.get("totalSize"), "table": raw.get("tableSize"), "indexes": raw.get("indexSize")},
        "formatted": body.get("formatted") if isinstance(body, dict) else None,
    }
    return ToolOutcome(
        columns=["name", "type", "nullable", "default"],
        rows=[[c["name"], c["type"], c["nullable"], c["default"]] for c in columns],
        row_count=len(columns),
        data=data,
    )


def _constraint_columns(definition: str) -> list[str]:
    """``PRIMARY KEY (a, "B")`` / ``FOREIGN KEY (a) REFERENCES t(b)`` → the constrained columns."""
    match = re.search(r"\(([^)]*)\)", definition)
    if not match:
        return []
    return [part.strip().strip('"') for part in match.group(1).split(",") if part.strip()]


def _sql_error(texts: list[str], key: str) -> SqlError:
    message: str | None = None
    sqlstate: str | None = None
    detail = hint = None
    for text in texts:
        parsed = _json(text)
        if isinstance(parsed, dict):
            code = parsed.get("code")
            if isinstance(code, str) and _SQLSTATE.match(code):
                sqlstate = code
            detail = parsed.get("detail") or detail
            hint = parsed.get("hint") or hint
            if message is None and isinstance(parsed.get("message"), str):
                message = parsed["message"]
        elif message is None and text.strip():
            message = text.strip()
    if sqlstate is None:
        found = _SQLSTATE_IN_TEXT.search(" ".join(texts))
        sqlstate = found.group(1) if found else None
    message = message or "the Neon MCP server reported an error"
    if detail and "DETAIL:" not in message:
        message += f" DETAIL: {detail}"
    if hint and "HINT:" not in message:
        message += f" HINT: {hint}"
    return SqlError(sqlstate=sqlstate, message=_redact(message, key)[:_MESSAGE_CAP])


# Helpers --------------------------------------------------------------------------------------------
def default_server_type(url: str) -> str:
    """``mcp_tool_schema_cache.server_type`` for an MCP URL (its host and path, never credentials)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "mcp.neon.tech":
        return HOSTED_SERVER_TYPE
    port = f":{parts.port}" if parts.port else ""
    return f"neon-mcp:{host}{port}{parts.path or '/'}"


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def _redact(text: str, key: str) -> str:
    return text.replace(key, "[redacted]") if key else text


def _leaves(exc: BaseException | None) -> Iterator[BaseException]:
    """An exception and, through exception groups and explicit causes, every exception inside it."""
    seen: set[int] = set()
    stack = [exc] if exc is not None else []
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        if current.__cause__ is not None:
            stack.append(current.__cause__)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _asyncio() -> Any:
    import asyncio

    return asyncio


def _closed_connection(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError

    # "Connection closed" is what every waiter hears when the transport itself went down; a single request
    # whose answer stream broke is resolved with its own message while the session carries on.
    return any(
        isinstance(e, MCPError) and e.code == _CONNECTION_CLOSED and e.message == "Connection closed"
        for e in _leaves(exc)
    )
