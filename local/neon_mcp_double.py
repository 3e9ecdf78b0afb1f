"""A stand-in for Neon's hosted MCP server (``https://mcp.neon.tech/mcp``), built with the ``mcp`` package.

For tests, benchmarks and local development (``python -m local.neon_mcp_double --port 4020 --api-key KEY
--project <project_id>=<postgres URI>``). It speaks MCP over streamable HTTP on 127.0.0.1 (initialize
handshake, ``tools/list``, ``tools/call``; stateful sessions by default, SSE responses like the hosted
server) and behaves the way the hosted server does where agentdb depends on it:

* ``Authorization: Bearer <api_key>`` is required on every request (401 and a ``WWW-Authenticate``
  header otherwise); a project listed in ``forbidden_projects`` answers 403.
* The URL's query string scopes the connection, as on the hosted server: ``projectId=<id>`` (a call whose
  ``projectId`` argument names another project is refused; a call without one gets the URL's),
  ``category=<a>,<b>`` (only tools of those scope categories are listed and callable: ``querying`` =
  run_sql, run_sql_transaction; ``schema`` = get_database_tables, describe_table_schema; ``branches`` =
  get_connection_string) and ``readonly=true`` (only read-only-safe tools; SQL runs in a ``READ ONLY``
  transaction). Any other query
  parameter is recorded in ``violations``: the hosted server would silently ignore it.
* The tools and their input schemas are exactly those of the hosted schemas file
  (``$NEON_MCP_TOOL_SCHEMAS``, else ``tests/fixtures/neon-hosted-mcp-tool-schemas.json``, else
  ``../shared/neon/hosted-mcp-tool-schemas.json``). Arguments are validated with jsonschema; invalid ones
  get the JSON-RPC error ``-32602`` (invalid params), as the MCP SDK's server does.
* SQL runs on real Postgres: ``resolver(project_id)`` gives the project's connection URI (a mapping works
  too); ``databaseName`` picks another database on that server with the same credentials; ``branchId`` is
  accepted and recorded (one branch per project).

Result format (what the hosted server returns, see its ``tools.ts``): one text content block holding
``JSON.stringify(result, null, 2)`` of

* ``run_sql``: the rows as objects, ``[{"col": value, ...}, ...]`` (``[]`` for statements without rows —
  the hosted server reports no affected-row count either; duplicate column names collapse, as in JS);
* ``run_sql_transaction``: one such array per statement, ``[[...], [...]]``;
* ``get_database_tables``: ``[{"table_schema", "table_name", "table_type"}, ...]`` from information_schema;
* ``describe_table_schema``: ``{"raw": {"columns", "indexes", "constraints", "tableSize", "indexSize",
  "totalSize"}, "formatted": "<text>"}`` (a schema-qualified ``tableName`` is honoured; the hosted server
  looks in ``public`` only).

Values follow node-postgres's defaults, which the hosted server uses: ``bigint`` and ``numeric`` become
strings, dates and timestamps ISO 8601 strings, ``json``/``jsonb`` their value; ``bytea`` is written as
``\\x`` hex (the hosted server would write a Buffer object). SQL errors come back as ``isError: true`` with
two text blocks, the message and ``JSON.stringify`` of the driver error (``{"name": "NeonDbError",
"severity", "code": <SQLSTATE>, "detail", "hint", "position"}``), as the hosted ``handleToolError`` does.

Options: ``stateless=True`` (no MCP sessions, as the hosted server's plain POST route) and
``json_response=True`` (JSON bodies instead of SSE).

Test hooks: ``calls`` (every JSON-RPC message: method, tool, arguments, the URL's query), ``http`` (every
HTTP request with its status and the server's time), ``count(method, tool=None)``;
``drift(tool, rename=..., remove=...)`` changes the published input schemas (a renamed property is
accepted only under its new name, a removed ``projectId`` is taken from the URL, as the hosted server does
for project-scoped connections);
``delay_seconds`` holds every tool call back (timeouts); ``fail_http`` queues HTTP error answers;
``cut_answers`` drops the connection instead of sending the next tool results (after the SQL ran);
``validation_errors_as_results`` reports invalid arguments as an ``isError`` result saying ``MCP error
-32602``, the way newer MCP SDK servers do.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from local.serving import serve_until_stopped

if TYPE_CHECKING:
    import mcp_types
    import pg8000.native
    from mcp.server.context import ServerRequestContext

JSON = dict[str, Any]
Resolver = Callable[[str], str | None]

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_REPO_SCHEMAS = REPO_ROOT / "tests" / "fixtures" / "neon-hosted-mcp-tool-schemas.json"
SHARED_SCHEMAS = REPO_ROOT.parent / "shared" / "neon" / "hosted-mcp-tool-schemas.json"
SCHEMAS_ENV = "NEON_MCP_TOOL_SCHEMAS"
MCP_PATH = "/mcp"

# The hosted server's scope categories (``scope`` in its tool definitions) and read-only-safe tools.
TOOL_SCOPES = {
    "run_sql": "querying",
    "run_sql_transaction": "querying",
    "get_database_tables": "schema",
    "describe_table_schema": "schema",
    "get_connection_string": "branches",
}
READ_ONLY_SAFE = frozenset({"run_sql", "run_sql_transaction", "get_database_tables", "describe_table_schema"})
KNOWN_QUERY_PARAMS = frozenset({"projectId", "category", "readonly"})
_DESCRIPTIONS = {
    "run_sql": "Execute a single SQL statement against a Neon database",
    "run_sql_transaction": "Execute a SQL transaction against a Neon database (several statements, all or none)",
    "describe_table_schema": "Describe the schema of a table in a Neon database",
    "get_database_tables": "Get all tables in a Neon database",
    "get_connection_string": "Get a PostgreSQL connection string for a Neon database",
}

_GET_TABLES = """
SELECT table_schema, table_name, table_type
FROM information_schema.tables
WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY table_schema, table_name
"""
_DESCRIBE = (
    """SELECT c.column_name AS name, c.data_type AS type, c.is_nullable = 'YES' AS nullable,
              c.column_default AS "default", pd.description
       FROM information_schema.columns c
       LEFT JOIN pg_catalog.pg_statio_all_tables st ON c.table_schema = st.schemaname AND c.table_name = st.relname
       LEFT JOIN pg_catalog.pg_description pd ON pd.objoid = st.relid AND pd.objsubid = c.ordinal_position
       WHERE c.table_schema = :schema AND c.table_name = :table ORDER BY c.ordinal_position""",
    """SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition,
              pg_size_pretty(pg_relation_size(i.oid)) AS size
       FROM pg_class t JOIN pg_index ix ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace
       WHERE t.relname = :table AND n.nspname = :schema AND t.relkind IN ('r', 'p') ORDER BY i.relname""",
    """SELECT tc.constraint_name AS name, tc.constraint_type AS type, pg_get_constraintdef(cc.oid) AS definition
       FROM information_schema.table_constraints tc
       JOIN pg_catalog.pg_constraint cc ON tc.constraint_name = cc.conname
       JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.connamespace AND cn.nspname = tc.constraint_schema
       WHERE tc.table_schema = :schema AND tc.table_name = :table ORDER BY tc.constraint_name""",
    """SELECT pg_size_pretty(pg_total_relation_size(CAST(:qualified AS regclass))) AS total_size,
              pg_size_pretty(pg_relation_size(CAST(:qualified AS regclass))) AS table_size,
              pg_size_pretty(pg_total_relation_size(CAST(:qualified AS regclass))
                             - pg_relation_size(CAST(:qualified AS regclass))) AS index_size""",
)


def find_schemas() -> Path:
    """The hosted tool schemas: ``$NEON_MCP_TOOL_SCHEMAS``, else the in-repo copy, else ``../shared``."""
    override = os.environ.get(SCHEMAS_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{SCHEMAS_ENV}={override} does not name a file")
        return path
    for candidate in (IN_REPO_SCHEMAS, SHARED_SCHEMAS):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"hosted MCP tool schemas not found: set {SCHEMAS_ENV} or provide {IN_REPO_SCHEMAS}")


def load_schemas(path: str | Path | None = None) -> dict[str, JSON]:
    with open(path or find_schemas(), encoding="utf-8") as fh:
        schemas = json.load(fh)
    if not isinstance(schemas, dict) or not all(isinstance(s, dict) for s in schemas.values()):
        raise ValueError("the tool schemas file must map tool names to JSON Schemas")
    return schemas


@dataclass(frozen=True)
class RecordedCall:
    """One JSON-RPC message the double handled."""

    method: str  # "initialize", "tools/list", "tools/call", "notifications/initialized", ...
    tool: str | None
    arguments: JSON | None
    query: dict[str, str]
    session_id: str | None


@dataclass(frozen=True)
class RecordedHttp:
    method: str
    path: str
    query: dict[str, str]
    status: int | None
    authorized: bool
    seconds: float  # from the request's arrival to the end of the answer (the server's share of a call)


@dataclass
class _Drift:
    rename: dict[str, str] = field(default_factory=dict)
    remove: set[str] = field(default_factory=set)


class _ToolError(Exception):
    """A failure the hosted server reports as a tool result with ``isError: true``."""

    def __init__(self, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NeonMcpDouble:
    """A local MCP server with the hosted Neon tools, executing SQL on real Postgres."""

    def __init__(
        self,
        api_key: str,
        resolver: Resolver | Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        schemas: Mapping[str, JSON] | None = None,
        stateless: bool = False,
        json_response: bool = False,
    ) -> None:
        self.api_key = api_key
        self._resolver: Resolver = resolver.get if isinstance(resolver, Mapping) else resolver
        self.host = host
        self.port = port
        self.stateless = stateless
        self.json_response = json_response
        self._base_schemas = copy.deepcopy(dict(schemas if schemas is not None else load_schemas()))
        self._drift: dict[str, _Drift] = {}
        self.forbidden_projects: set[str] = set()
        self.delay_seconds = 0.0
        # Newer MCP SDK servers report invalid tool arguments as an ``isError`` result, not a JSON-RPC error.
        self.validation_errors_as_results = False
        self.fail_http: deque[int] = deque()  # statuses to answer the next HTTP requests with
        self.cut_answers = 0  # the next N tool-call answers are cut off: the SQL ran, the client never hears
        self.calls: list[RecordedCall] = []
        self.http: list[RecordedHttp] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._pg: dict[str, _PgSlot] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    # Lifecycle ------------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on a background thread; returns the MCP endpoint URL (``http://127.0.0.1:<port>/mcp``)."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: without it a response's separate writes meet delayed ACKs (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            _Gate(self, self._build_app()),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="neon-mcp-double", daemon=True)
        thread.start()
        self._thread = thread
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Neon MCP double did not start")
            time.sleep(0.01)
        self.url = f"http://{self.host}:{self.port}{MCP_PATH}"
        return self.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(3)
            if thread.is_alive():
                server.force_exit = True
                thread.join(5)
        self._server = self._thread = None
        with self._lock:
            slots = list(self._pg.values())
            self._pg.clear()
        for slot in slots:
            with slot.lock:
                conn, slot.conn = slot.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def __enter__(self) -> NeonMcpDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Test hooks -----------------------------------------------------------------------------------
    def count(self, method: str, tool: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.method == method and (tool is None or c.tool == tool))

    def reset_records(self) -> None:
        with self._lock:
            self.calls.clear()
            self.http.clear()

    def drift(
        self, tool: str | None = None, *, rename: Mapping[str, str] | None = None, remove: Iterable[str] = ()
    ) -> None:
        """Change the published input schema of ``tool`` (every tool when None).

        ``rename={"old": "new"}``: the property is published and accepted only as ``new``;
        ``remove=["projectId"]``: the property disappears (a removed ``projectId`` comes from the URL).
        """
        with self._lock:
            for name in [tool] if tool else list(self._base_schemas):
                entry = self._drift.setdefault(name, _Drift())
                entry.rename.update(rename or {})
                entry.remove.update(remove)

    def reset_drift(self) -> None:
        with self._lock:
            self._drift.clear()

    def schemas(self) -> dict[str, JSON]:
        """The input schemas currently published (drift applied)."""
        with self._lock:
            return {name: self._published(name, schema) for name, schema in self._base_schemas.items()}

    def _published(self, name: str, schema: JSON) -> JSON:
        drift = self._drift.get(name)
        schema = copy.deepcopy(schema)
        if drift is None:
            return schema
        props = schema.get("properties", {})
        required = list(schema.get("required", []))
        for prop in drift.remove:
            props.pop(prop, None)
            required = [r for r in required if r != prop]
        for old, new in drift.rename.items():
            if old in props:
                props[new] = props.pop(old)
            required = [new if r == old else r for r in required]
        schema["properties"] = props
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
        return schema

    # The MCP server -------------------------------------------------------------------------------
    def _build_app(self) -> Any:
        from mcp.server.lowlevel import Server

        server: Server[Any] = Server(
            "mcp-server-neon", version="double", on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        server.middleware.append(self._record)
        return server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            json_response=self.json_response,
            stateless_http=self.stateless,
            host=self.host,
        )

    async def _record(self, ctx: ServerRequestContext[Any, Any], call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        params = ctx.params or {}
        tool = params.get("name") if ctx.method == "tools/call" else None
        arguments = params.get("arguments") if ctx.method == "tools/call" else None
        session_id = None
        if ctx.request is not None:
            session_id = ctx.request.headers.get("mcp-session-id")
        with self._lock:
            self.calls.append(
                RecordedCall(ctx.method, tool, copy.deepcopy(arguments), _query_of(ctx), session_id),
            )
        return await call_next(ctx)

    def _visible(self, query: Mapping[str, str]) -> dict[str, JSON]:
        categories = None
        if "category" in query:
            categories = {c.strip() for c in query["category"].split(",") if c.strip()}
        read_only = query.get("readonly", "").strip().lower() == "true"
        with self._lock:
            return {
                name: self._published(name, schema)
                for name, schema in self._base_schemas.items()
                if (categories is None or TOOL_SCOPES.get(name) in categories)
                and (not read_only or name in READ_ONLY_SAFE)
            }

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], _params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        import mcp_types

        tools = [
            mcp_types.Tool(name=name, description=_DESCRIPTIONS.get(name, name), input_schema=schema)
            for name, schema in self._visible(_query_of(ctx)).items()
        ]
        return mcp_types.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        import anyio
        import mcp_types
        from jsonschema import Draft7Validator
        from mcp.shared.exceptions import MCPError

        query = _query_of(ctx)
        tools = self._visible(query)
        name, arguments = params.name, dict(params.arguments or {})
        if name not in tools:
            raise MCPError(code=mcp_types.INVALID_PARAMS, message=f"MCP error -32602: Tool {name} not found")
        errors = sorted(Draft7Validator(tools[name]).iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            message = f"Input validation error: Invalid arguments for tool {name}: {where}: {errors[0].message}"
            if self.validation_errors_as_results:
                text = f"MCP error {mcp_types.INVALID_PARAMS}: {message}"
                return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=text)], is_error=True)
            raise MCPError(code=mcp_types.INVALID_PARAMS, message=message)
        with self._lock:
            drift = self._drift.get(name)
            for old, new in (drift.rename if drift else {}).items():
                if new in arguments:
                    arguments[old] = arguments.pop(new)
        try:
            url_project = query.get("projectId", "").strip()
            if url_project:
                given = arguments.get("projectId")
                if given is not None and given != url_project:
                    raise _ToolError(
                        f'projectId "{given}" does not match this connection\'s project "{url_project}". '
                        "To work on another project, reconnect with access to it."
                    )
                arguments["projectId"] = url_project
            if not arguments.get("projectId"):
                raise _ToolError("Please provide a project ID or ensure you have only one project in your account.")
            if self.delay_seconds:
                await anyio.sleep(self.delay_seconds)
            read_only = query.get("readonly", "").strip().lower() == "true"
            result = await anyio.to_thread.run_sync(self._execute, name, arguments, read_only)
        except _ToolError as failure:
            content: list[mcp_types.ContentBlock] = [mcp_types.TextContent(type="text", text=failure.message)]
            if failure.details is not None:
                content.append(mcp_types.TextContent(type="text", text=json.dumps(failure.details, indent=2)))
            return mcp_types.CallToolResult(content=content, is_error=True)
        return mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text=json.dumps(result, indent=2))])

    # SQL ------------------------------------------------------------------------------------------
    def _execute(self, tool: str, args: JSON, read_only: bool) -> Any:
        uri = self._resolver(args["projectId"])
        if uri is None:
            raise _ToolError(f"Project {args['projectId']} not found")
        if args.get("databaseName"):
            uri = _with_database(uri, args["databaseName"])
        if tool == "run_sql":
            return self._transaction(uri, read_only, [args["sql"]], single=True)[0]
        if tool == "run_sql_transaction":
            return self._transaction(uri, read_only, list(args["sqlStatements"]), single=False)
        if tool == "get_database_tables":
            return self._with_connection(uri, lambda c: _rows(c, _GET_TABLES))
        if tool == "describe_table_schema":
            return self._with_connection(uri, lambda c: _describe(c, args["tableName"]))
        if tool == "get_connection_string":
            return {"uri": "postgresql://redacted@double/", "projectId": args["projectId"]}
        raise _ToolError(f"Tool {tool} is not implemented by the double")

    def _transaction(self, uri: str, read_only: bool, statements: list[str], *, single: bool) -> list[Any]:
        def body(conn: pg8000.native.Connection) -> list[Any]:
            if single and not read_only:
                return [_rows(conn, statements[0])]  # the hosted driver runs one query outside a transaction
            conn.run("BEGIN")
            try:
                if read_only:
                    conn.run("SET TRANSACTION READ ONLY")
                results = [_rows(conn, sql) for sql in statements]
                conn.run("COMMIT")
                return results
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.run("ROLLBACK")
                raise

        return self._with_connection(uri, body)

    def _with_connection(self, uri: str, body: Callable[[pg8000.native.Connection], Any]) -> Any:
        import pg8000.exceptions
        import pg8000.native

        with self._lock:
            slot = self._pg.setdefault(uri, _PgSlot())
        with slot.lock:
            try:
                if slot.conn is None:
                    slot.conn = pg8000.native.Connection(**_connect_kwargs(uri))
                return body(slot.conn)
            except pg8000.exceptions.DatabaseError as exc:
                fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                raise _ToolError(str(fields.get("M") or exc), _neon_db_error(fields)) from None
            except (pg8000.exceptions.InterfaceError, OSError) as exc:
                conn, slot.conn = slot.conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise _ToolError(f"Error connecting to database: {type(exc).__name__}") from None


@dataclass
class _PgSlot:
    """One cached connection per database URI; the lock serialises the calls that share it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: pg8000.native.Connection | None = None


class _Gate:
    """ASGI wrapper: bearer-key check, 403 for forbidden projects, scripted HTTP failures, request log."""

    def __init__(self, double: NeonMcpDouble, app: Any) -> None:
        self.double = double
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        double = self.double
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        for name in query:
            if name not in KNOWN_QUERY_PARAMS:
                double.violations.append(f"unknown query parameter {name!r} (the hosted server ignores it)")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorized = headers.get("authorization") == f"Bearer {double.api_key}"
        status: list[int] = []
        started = time.perf_counter()

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif (
                message["type"] == "http.response.body"
                and double.cut_answers > 0
                and b'"content"' in message.get("body", b"")
            ):
                double.cut_answers -= 1
                raise ConnectionResetError("the double cut this answer off")
            await send(message)

        try:
            if not authorized:
                await _json_reply(
                    watch,
                    401,
                    {"error": "invalid_token", "error_description": "Missing or invalid access token"},
                    {"www-authenticate": 'Bearer error="invalid_token"'},
                )
            elif query.get("projectId") in double.forbidden_projects:
                await _json_reply(watch, 403, {"error": "forbidden", "error_description": "No access to this project"})
            elif double.fail_http:
                code = double.fail_http.popleft()
                await _json_reply(watch, code, {"error": "scripted failure", "status": code})
            else:
                await self.app(scope, receive, watch)
        finally:
            with double._lock:
                double.http.append(
                    RecordedHttp(
                        scope["method"],
                        scope["path"],
                        query,
                        status[0] if status else None,
                        authorized,
                        time.perf_counter() - started,
                    )
                )


async def _json_reply(send: Any, status: int, body: JSON, headers: Mapping[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _query_of(ctx: Any) -> dict[str, str]:
    request = getattr(ctx, "request", None)
    if request is None or not hasattr(request, "query_params"):
        return {}
    return {k: request.query_params.getlist(k)[-1] for k in request.query_params}


def _connect_kwargs(uri: str) -> dict[str, Any]:
    core = str(REPO_ROOT / "layers" / "core")
    if core not in sys.path:
        sys.path.insert(0, core)
    from agentdb.pgurl import parse_pg_url

    return parse_pg_url(uri).connect_kwargs(timeout=30, application_name="neon-mcp-double")


def _with_database(uri: str, database: str) -> str:
    core = str(REPO_ROOT / "layers" / "core")
    if core not in sys.path:
        sys.path.insert(0, core)
    from agentdb.pgurl import parse_pg_url

    parsed = parse_pg_url(uri)
    if parsed.database == database:
        return uri
    return parsed.with_credentials(parsed.user, parsed.password or "", database)


def _neon_db_error(fields: Mapping[str, Any]) -> JSON:
    """What ``JSON.stringify(new NeonDbError(...))`` holds: the server's error fields, named."""
    names = {"S": "severity", "C": "code", "D": "detail", "H": "hint", "P": "position", "W": "where"}
    out: JSON = {"name": "NeonDbError"}
    for key, name in names.items():
        if fields.get(key) is not None:
            out[name] = fields[key]
    return out


# node-postgres's default type parsing, as the hosted server's driver applies it ------------------------
_AS_STRING_OIDS = frozenset({20, 1700})  # int8, numeric


def _js(value: Any, oid: int | None) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if oid in _AS_STRING_OIDS and isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_js(v, None) for v in value]
    if isinstance(value, dict):
        return {str(k): _js(v, None) for k, v in value.items()}
    return str(value)


def _rows(conn: pg8000.native.Connection, sql: str, **params: Any) -> list[JSON]:
    rows = conn.run(sql, **params)
    columns = conn.columns
    if rows is None or columns is None:
        return []
    return [
        {col["name"]: _js(value, col.get("type_oid")) for col, value in zip(columns, row, strict=True)} for row in rows
    ]


def _describe(conn: pg8000.native.Connection, table_name: str) -> JSON:
    schema, _, table = table_name.rpartition(".")
    schema = schema or "public"
    qualified = table_name if "." in table_name else f"public.{table_name}"
    columns = _rows(conn, _DESCRIBE[0], schema=schema, table=table)
    indexes = _rows(conn, _DESCRIBE[1], schema=schema, table=table)
    constraints = _rows(conn, _DESCRIBE[2], schema=schema, table=table)
    sizes = _rows(conn, _DESCRIBE[3], qualified=qualified)[0]  # an unknown table fails here: 42P01
    raw = {
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "tableSize": sizes["table_size"],
        "indexSize": sizes["index_size"],
        "totalSize": sizes["total_size"],
    }
    lines = [f"Table size: {raw['tableSize']}", f"Index size: {raw['indexSize']}", f"Total size: {raw['totalSize']}"]
    lines += ["", "Columns:"]
    for col in columns:
        default = f" DEFAULT {col['default']}" if col["default"] else ""
        lines.append(f"  {col['name']} {col['type']} {'NULL' if col['nullable'] else 'NOT NULL'}{default}")
    if indexes:
        lines += ["", "Indexes:"] + [f"  {i['name']} ({i['size']})\n    {i['definition']}" for i in indexes]
    if constraints:
        lines += ["", "Constraints:"] + [f"  {c['name']} ({c['type']})\n    {c['definition']}" for c in constraints]
    return {"raw": raw, "formatted": "\n".join(lines)}


# CLI ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for Neon's hosted MCP server (streamable HTTP)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4020)
    parser.add_argument("--api-key", default=os.environ.get("NEON_API_KEY") or "neon-mcp-double-key")
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="ID=URI",
        help="a project id and the Postgres URI its SQL runs on (repeatable)",
    )
    parser.add_argument("--stateless", action="store_true", help="no MCP sessions (every POST stands alone)")
    parser.add_argument("--json-response", action="store_true", help="answer with JSON bodies instead of SSE")
    args = parser.parse_args(argv)
    projects: dict[str, str] = {}
    for item in args.project:
        project_id, sep, uri = item.partition("=")
        if not sep or not project_id or not uri:
            parser.error(f"--project expects ID=URI, got {item!r}")
        projects[project_id] = uri
    double = NeonMcpDouble(
        args.api_key,
        projects,
        host=args.host,
        port=args.port,
        stateless=args.stateless,
        json_response=args.json_response,
    )
    return serve_until_stopped(
        double.start,
        double.stop,
        "Neon MCP double listening on {url} (NEON_MCP_URL={url}; API key from --api-key)",
        lambda: [f"violation: {problem}" for problem in double.violations],
    )


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["NeonMcpDouble", "RecordedCall", "RecordedHttp", "find_schemas", "load_schemas"]
