"""A Neon API v2 test double: a real HTTP server that checks every request against Neon's OpenAPI spec.

For tests and for local development (``python -m local.neon_double --port 4010``). It serves the
parts of the API agentdb uses (projects, operations, connection URIs, endpoints) in the shapes the
spec gives, and records every way a request broke the spec in ``double.violations``:

* the method and path must exist in the spec; ``Authorization`` must be ``Bearer <api_key>`` (else 401);
* path and query parameters and JSON bodies are validated with jsonschema against the operation's
  schemas (``$ref``, ``nullable``, ``allOf``/``oneOf`` handled). Request bodies are checked strictly:
  a property the spec does not define is a violation, so a misspelt field cannot pass unnoticed.

Its own answers are validated against the spec's response schemas too (``double.response_violations``).

Faults: ``script(route, [...])`` queues answers for a route (``"POST /projects"``), ``hang(route, s)``
delays one answer past a client's timeout, ``project_limit`` produces 422 PROJECTS_LIMIT_EXCEEDED,
``operation_final_status = "failed"`` makes operations fail.

Consumption history: ``GET /consumption_history/v2/projects`` and the legacy
``GET /consumption_history/projects`` answer per project (``project_ids`` repeated or comma-separated,
``org_id``, ``limit`` and ``cursor`` pagination, newest project first), per timeframe of the requested
``granularity`` (``from`` and ``to`` rounded down to it; 406 when the range is older than the
granularity reaches back: 168 hours, 60 days, a year). Totals come from ``seed_consumption(project_id,
compute_unit_seconds=..., root_branch_bytes_month=...)`` spread evenly over the timeframes, else from a
deterministic rate derived from the project id. ``consumption_v2_status`` / ``consumption_legacy_status``
= 403 or 406 make the endpoint refuse (a plan without it). ``consumption_rate_limit_per_minute=N``
answers 429 with ``Retry-After`` past N requests in a fixed, epoch-aligned minute of ``clock`` (a
simulated clock works) on ``rate_limited_routes`` (the consumption routes). ``seed_projects(n)`` makes
thousands of projects in about a second.

Operations start ``running`` and finish after ``operation_polls`` observations (GET of the operation
or a listing), so a client that does not wait for them sees ``init`` endpoints and 423 Locked.

With ``backing_pg_url`` (a superuser URL), each project gets a real database and login role on that
server and its connection URIs point there; disabling an endpoint refuses connections (pause is
observable) and deleting the project drops both. The real names are derived from the project id,
because every project of the double shares one server.

Spec lookup: ``$NEON_OPENAPI_SPEC``, then ``tests/fixtures/neon-openapi.yaml`` in the repo, then
``../shared/neon/openapi.yaml`` beside the repo.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import random
import re
import secrets
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT7

from local.serving import serve_until_stopped

JSON = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_REPO_SPEC = REPO_ROOT / "tests" / "fixtures" / "neon-openapi.yaml"
SHARED_SPEC = REPO_ROOT.parent / "shared" / "neon" / "openapi.yaml"
SPEC_ENV = "NEON_OPENAPI_SPEC"
BASE_PATH = "/api/v2"

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_SCHEMA_DROP = {"example", "examples", "description", "discriminator", "deprecated", "readOnly", "writeOnly"}


# Spec ------------------------------------------------------------------------------------------------
def find_spec() -> Path:
    """The spec file: ``$NEON_OPENAPI_SPEC``, else the in-repo copy, else ``../shared/neon/openapi.yaml``."""
    override = os.environ.get(SPEC_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{SPEC_ENV}={override} does not name a file")
        return path
    for candidate in (IN_REPO_SPEC, SHARED_SPEC):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Neon OpenAPI spec not found: set {SPEC_ENV}, or provide {IN_REPO_SPEC} or {SHARED_SPEC}")


def _date_time_format(checker: FormatChecker) -> FormatChecker:
    @checker.checks("date-time", raises=ValueError)
    def _is_date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if "T" not in value.upper():
            raise ValueError("not an RFC 3339 date-time")
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
        if parsed.tzinfo is None:
            raise ValueError("an RFC 3339 date-time needs a time zone")
        return True

    return checker


_FORMATS = _date_time_format(FormatChecker())


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    spec: JSON
    parameters: tuple[JSON, ...]

    @property
    def route(self) -> str:
        return f"{self.method} {self.template}"


class OpenAPISpec:
    """Routing and jsonschema validation from an OpenAPI 3.0 document."""

    _URI = {True: "urn:neon-openapi:strict", False: "urn:neon-openapi:lenient"}

    def __init__(self, doc: JSON) -> None:
        self.doc = doc
        components = doc.get("components", {}).get("schemas", {})
        self._composed = self._composed_component_names(doc)
        self._registries: dict[bool, Registry[Any]] = {}
        for strict in (True, False):
            converted = {
                name: self._convert(schema, strict=strict, composed=name in self._composed)
                for name, schema in components.items()
            }
            resource = DRAFT7.create_resource({"components": {"schemas": converted}})
            self._registries[strict] = Registry().with_resource(self._URI[strict], resource)
        self._validators: dict[tuple[str, bool], Draft7Validator] = {}
        self._validators_lock = threading.Lock()
        self.operations: list[Operation] = []
        for template, item in doc.get("paths", {}).items():
            shared = [self.deref(p) for p in item.get("parameters", [])]
            for method in _METHODS:
                if method not in item:
                    continue
                op = item[method]
                params = {(p["name"], p["in"]): p for p in shared}
                for p in op.get("parameters", []):
                    p = self.deref(p)
                    params[(p["name"], p["in"])] = p
                self.operations.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        regex=re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"),
                        literal_segments=sum(1 for s in template.split("/") if s and not s.startswith("{")),
                        spec=op,
                        parameters=tuple(params.values()),
                    )
                )
        # Literal segments win over templated ones: /projects/shared before /projects/{project_id}.
        self.operations.sort(key=lambda o: -o.literal_segments)
        self._by_route = {o.route: o for o in self.operations}

    @classmethod
    def load(cls, path: str | Path | None = None) -> OpenAPISpec:
        return _load_spec(str(path or find_spec()))

    # Schema conversion ---------------------------------------------------------------------------
    @staticmethod
    def _composed_component_names(doc: JSON) -> set[str]:
        """Component schemas used as allOf/anyOf/oneOf members: they must stay open to other members."""
        names: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                        for member in value:
                            if isinstance(member, dict) and isinstance(member.get("$ref"), str):
                                names.add(member["$ref"].rsplit("/", 1)[-1])
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(doc)
        return names

    def _convert(self, schema: Any, *, strict: bool, composed: bool = False) -> Any:
        """OpenAPI 3.0 schema -> JSON Schema draft 7 (nullable, absolute $refs, optional strictness)."""
        if not isinstance(schema, dict):
            return schema
        out: JSON = {}
        for key, value in schema.items():
            if key in _SCHEMA_DROP or key.startswith("x-") or key == "nullable":
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                out[key] = self._URI[strict] + value
            elif key == "properties" and isinstance(value, dict):
                out[key] = {name: self._convert(s, strict=strict) for name, s in value.items()}
            elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                out[key] = self._convert(value, strict=strict)
            elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
                out[key] = [self._convert(s, strict=strict, composed=True) for s in value]
            else:
                out[key] = value
        if strict and not composed and "properties" in out and "additionalProperties" not in out and "$ref" not in out:
            out["additionalProperties"] = False
        if schema.get("nullable") is True:
            return {"anyOf": [{"type": "null"}, out]}
        return out

    def deref(self, node: Any) -> Any:
        """Follow a local ``$ref`` (parameters, responses, request bodies)."""
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 20:
            target: Any = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node, seen = target, seen + 1
        return node

    def _validator(self, key: str, schema: Any, *, strict: bool) -> Draft7Validator:
        with self._validators_lock:
            validator = self._validators.get((key, strict))
            if validator is None:
                validator = Draft7Validator(
                    self._convert(schema, strict=strict), registry=self._registries[strict], format_checker=_FORMATS
                )
                self._validators[(key, strict)] = validator
            return validator

    def _errors(self, key: str, schema: Any, instance: Any, *, strict: bool, where: str) -> list[str]:
        validator = self._validator(key, schema, strict=strict)
        problems = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            location = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            problems.append(f"{where}{location}: {error.message[:300]}")
        return problems

    # Routing and validation ----------------------------------------------------------------------
    def operation(self, route: str) -> Operation:
        try:
            return self._by_route[route]
        except KeyError:
            raise KeyError(f"no operation {route!r} in the Neon spec") from None

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path params, path exists under another method)."""
        path_exists = False
        for op in self.operations:
            found = op.regex.match(path)
            if found is None:
                continue
            path_exists = True
            if op.method == method:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}, True
        return None, {}, path_exists

    def validate_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        content_type: str | None,
        raw_body: bytes,
    ) -> tuple[list[str], Any]:
        """Problems with a request (empty when it conforms) and its parsed JSON body."""
        problems: list[str] = []
        declared = {(p["name"], p["in"]) for p in op.parameters}
        for name in query:
            if (name, "query") not in declared:
                problems.append(f"query parameter {name!r} is not defined for {op.route}")
        for param in op.parameters:
            where, name = param["in"], param["name"]
            schema = self.deref(param.get("schema", {}))
            key = f"{op.route} {where}:{name}"
            if where == "path":
                value: Any = path_params.get(name)
            elif where == "query":
                raw = query.get(name)
                if raw is None:
                    if param.get("required"):
                        problems.append(f"required query parameter {name!r} is missing")
                    continue
                value = _coerce_query(raw, schema, self)
            else:
                continue  # headers and cookies: not used by agentdb
            if value is None:
                if param.get("required"):
                    problems.append(f"required {where} parameter {name!r} is missing")
                continue
            problems += self._errors(key, schema, value, strict=True, where=f"{where} parameter {name}")
        body: Any = None
        request_body = self.deref(op.spec.get("requestBody")) if op.spec.get("requestBody") else None
        if raw_body:
            if request_body is None:
                problems.append(f"{op.route} takes no request body")
            elif not (content_type or "").lower().startswith("application/json"):
                problems.append(f"request body must be application/json, not {content_type!r}")
            else:
                try:
                    body = json.loads(raw_body)
                except ValueError as exc:
                    problems.append(f"request body is not valid JSON: {exc}")
                    return problems, None
                schema = request_body.get("content", {}).get("application/json", {}).get("schema", {})
                problems += self._errors(f"{op.route} body", schema, body, strict=True, where="body")
        elif request_body is not None and request_body.get("required"):
            problems.append(f"{op.route} requires a JSON request body")
        return problems, body

    def response_schema(self, op: Operation, status: int) -> Any | None:
        responses = op.spec.get("responses", {})
        response = responses.get(status, responses.get(str(status), responses.get("default")))
        if response is None:
            return None
        response = self.deref(response)
        content = response.get("content", {}).get("application/json")
        return {} if content is None else content.get("schema", {})

    def validate_response(self, route: str, status: int, body: Any) -> list[str]:
        """Problems with a response body for ``route`` ("POST /projects") and ``status``."""
        op = self.operation(route)
        schema = self.response_schema(op, status)
        if schema is None:
            return [f"{route}: status {status} is not declared in the spec"]
        return self._errors(f"{route} -> {status}", schema, body, strict=False, where=f"{route} -> {status} body")


def _coerce_query(raw: list[str], schema: JSON, spec: OpenAPISpec) -> Any:
    """Query strings -> the JSON types the parameter schema expects (invalid text is left for jsonschema)."""
    if schema.get("type") == "array":
        item_schema = spec.deref(schema.get("items", {}))
        values = [v for part in raw for v in part.split(",")] if len(raw) == 1 else raw
        return [_coerce_scalar(v, item_schema) for v in values]
    return _coerce_scalar(raw[-1], schema)


def _coerce_scalar(value: str, schema: JSON) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


@functools.lru_cache(maxsize=4)
def _load_spec(path: str) -> OpenAPISpec:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        doc = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader
    return OpenAPISpec(doc)


# Double state -------------------------------------------------------------------------------------
@dataclass
class Scripted:
    """One scripted answer. ``passthrough`` answers normally after ``delay`` and ``before``."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    before: Callable[[], None] | None = None
    passthrough: bool = False


ScriptItem = int | tuple[int, dict[str, str]] | Scripted

_DEFAULT_ERRORS = {
    423: ("LOCKED", "project already has running conflicting operations, scheduling of new ones is prohibited"),
    429: ("TOO_MANY_REQUESTS", "too many requests"),
    500: ("INTERNAL_ERROR", "internal server error"),
    502: ("BAD_GATEWAY", "bad gateway"),
    503: ("SERVICE_UNAVAILABLE", "service unavailable, please retry"),
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    body: Any
    authorized: bool
    status: int


@dataclass
class _Op:
    data: JSON
    polls_left: int
    effects: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class _Project:
    data: JSON
    branch: JSON
    endpoints: dict[str, JSON]
    roles: dict[str, JSON]
    passwords: dict[str, str]
    databases: dict[str, JSON]
    operations: list[_Op] = field(default_factory=list)
    real_db: dict[str, str] = field(default_factory=dict)  # neon database name -> backing database
    real_role: dict[str, str] = field(default_factory=dict)  # neon role name -> backing role


def _q(query: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    """The last value of a query parameter."""
    values = query.get(name)
    return values[-1] if values else default


class _Reply(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_WORDS = [
    *("shiny", "wind", "winter", "boat", "morning", "bread", "quiet", "river", "bold", "sun", "misty", "lake"),
    *("young", "frost", "dark", "cloud", "red", "leaf", "still", "wave", "green", "hill", "cold", "star"),
]


def _neon_id(prefix: str = "", digits: int = 6) -> str:
    rng = random.SystemRandom()
    number = "".join(rng.choice("0123456789") for _ in range(digits))
    return f"{prefix}{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{number}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _real_name(kind: str, project_id: str, name: str) -> str:
    readable = re.sub(r"[^a-z0-9_]", "_", f"neon_{kind}_{project_id}_{name}".lower())[:50]
    return f"{readable}_{hashlib.sha256(f'{project_id}/{name}'.encode()).hexdigest()[:10]}"


class _Backing:
    """Real databases and roles on a Postgres server, standing in for Neon computes."""

    def __init__(self, admin_url: str) -> None:
        from agentdb.pgurl import parse_pg_url

        self.admin = parse_pg_url(admin_url)
        self._lock = threading.Lock()  # CREATE DATABASE copies template1: one at a time

    def _run(self, *statements: str, params: Iterable[tuple[str, JSON]] = ()) -> None:
        import pg8000.native

        with self._lock:
            conn = pg8000.native.Connection(**self.admin.connect_kwargs(timeout=30, application_name="neon-double"))
            try:
                for sql in statements:
                    conn.run(sql)
                for sql, args in params:
                    conn.run(sql, **args)
            finally:
                conn.close()

    def url(self, role: str, password: str, database: str) -> str:
        return self.admin.with_credentials(role, password, database)

    def create(self, database: str, role: str, password: str) -> None:
        self._run(
            f"CREATE ROLE {_quote_ident(role)} LOGIN PASSWORD '{password.replace(chr(39), chr(39) * 2)}'",
            f"CREATE DATABASE {_quote_ident(database)} OWNER {_quote_ident(role)}",
            f"REVOKE CONNECT, TEMPORARY ON DATABASE {_quote_ident(database)} FROM PUBLIC",
        )

    def drop_database(self, database: str) -> None:
        self._run(f"DROP DATABASE IF EXISTS {_quote_ident(database)} WITH (FORCE)")

    def drop_role(self, role: str) -> None:
        self._run(f"DROP ROLE IF EXISTS {_quote_ident(role)}")

    def terminate(self, database: str) -> None:
        self._run(
            params=[
                (
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()",
                    {"d": database},
                )
            ]
        )

    def allow_connections(self, database: str, allow: bool) -> None:
        self._run(f"ALTER DATABASE {_quote_ident(database)} ALLOW_CONNECTIONS {'true' if allow else 'false'}")
        if not allow:
            self.terminate(database)


class NeonDouble:
    """The double. ``start()`` returns the base URL (``http://127.0.0.1:PORT/api/v2``)."""

    def __init__(
        self,
        api_key: str = "neon-double-key",
        *,
        spec_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        operation_polls: int = 1,
        project_limit: int | None = None,
        backing_pg_url: str | None = None,
        region_id: str = "aws-us-east-1",
        lock_during_operations: bool = True,
        validate_responses: bool = True,
        consumption_rate_limit_per_minute: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.spec = OpenAPISpec.load(spec_path)
        self.host, self.port = host, port
        self.operation_polls = operation_polls
        self.operation_final_status = "finished"
        self.project_limit = project_limit
        self.region_id = region_id
        self.lock_during_operations = lock_during_operations
        self.validate_responses = validate_responses
        self.violations: list[str] = []
        self.response_violations: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.projects: dict[str, _Project] = {}
        self._backing = _Backing(backing_pg_url) if backing_pg_url else None
        self._scripts: dict[str, deque[Scripted]] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._next_db_id = 1000
        # Consumption history (see "Consumption" below).
        self.clock = clock
        self.consumption_rate_limit_per_minute = consumption_rate_limit_per_minute
        self.rate_limited_routes: set[str] = set(CONSUMPTION_ROUTES)
        self.consumption_v2_status: int | None = None  # 403 or 406: answer v2 with it (plan lacks v2)
        self.consumption_legacy_status: int | None = None  # 403 or 406: answer the legacy endpoint with it
        self.consumption_max_page_size: int | None = None  # cap pages below the client's `limit`
        self.consumption: dict[str, dict[str, int]] = {}  # project id -> seeded totals per metric
        self._rate_windows: dict[float, int] = {}
        self._project_seq: dict[str, int] = {}
        self._next_seq = 0

    # Lifecycle -------------------------------------------------------------------------------------
    def start(self) -> str:
        handler = type("NeonDoubleHandler", (_Handler,), {"double": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="neon-double", daemon=True
        )
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{BASE_PATH}"

    def stop(self) -> None:
        """Stop serving; with a backing server, drop every database and role the double made."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._backing is not None:
            with self._lock:
                for project in list(self.projects.values()):
                    self._drop_backing(project)

    def __enter__(self) -> NeonDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Fault injection and inspection ------------------------------------------------------------------
    def script(self, route: str, responses: Iterable[ScriptItem]) -> None:
        """Queue answers for ``route`` (e.g. ``"POST /projects"``); once used up, answers are normal.

        Items: a status (``503``), ``(status, headers)`` (``(429, {"Retry-After": "2"})``) or a Scripted.
        """
        self.spec.operation(route)  # a typo in a test must not silently script nothing
        queue = self._scripts.setdefault(route, deque())
        for item in responses:
            if isinstance(item, Scripted):
                queue.append(item)
            elif isinstance(item, tuple):
                queue.append(Scripted(status=item[0], headers=dict(item[1])))
            else:
                queue.append(Scripted(status=item))

    def hang(self, route: str, seconds: float, times: int = 1) -> None:
        """Delay the next ``times`` answers on ``route`` by ``seconds`` (then answer normally)."""
        self.script(route, [Scripted(delay=seconds, passthrough=True) for _ in range(times)])

    def before(self, route: str, action: Callable[[], None]) -> None:
        """Run ``action`` (in the server thread) just before the next request on ``route`` is handled."""
        self.script(route, [Scripted(before=action, passthrough=True)])

    def calls(self, route: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.route == route)

    def requests_for(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def pending_operations(self, project_id: str) -> list[JSON]:
        with self._lock:
            project = self.projects.get(project_id)
            return [] if project is None else [dict(o.data) for o in project.operations if o.polls_left > 0]

    def projects_named(self, name: str) -> list[JSON]:
        with self._lock:
            return [dict(p.data) for p in self.projects.values() if p.data["name"] == name]

    def endpoints(self, project_id: str) -> list[JSON]:
        with self._lock:
            return [dict(e) for e in self.projects[project_id].endpoints.values()]

    def seed_project(
        self,
        name: str,
        *,
        org_id: str | None = None,
        created_at: str | None = None,
        database_name: str | None = None,
        role_name: str | None = None,
    ) -> JSON:
        """Make a project directly (as another client would); returns its CreatedProject body."""
        spec: JSON = {"name": name}
        if org_id:
            spec["org_id"] = org_id
        branch = {k: v for k, v in (("database_name", database_name), ("role_name", role_name)) if v}
        if branch:
            spec["branch"] = branch
        with self._lock:
            result = self._create_project({"project": spec})
            if created_at:
                project = self.projects[result["project"]["id"]]
                project.data["created_at"] = project.data["updated_at"] = created_at
                result["project"] = self._project_json(project)
            return result

    def seed_projects(self, count: int, *, org_id: str | None = None, name_prefix: str = "bulk-") -> list[str]:
        """Make ``count`` projects at once, cheaply (no operations, no backing database); returns their ids.

        For load tests and benchmarks (30,000 projects in about a second): ids are deterministic
        (``<name_prefix><n>``), the projects are complete enough for every read route.
        """
        ids: list[str] = []
        with self._lock:
            start = len(self.projects)
            for n in range(start, start + count):
                project_id = f"{name_prefix}{n:07d}"
                spec: JSON = {"name": project_id}
                if org_id:
                    spec["org_id"] = org_id
                self._create_project({"project": spec}, project_id=project_id, with_operations=False, backing=False)
                ids.append(project_id)
        return ids

    def seed_consumption(self, project_id: str, **totals: int) -> None:
        """Set a project's consumption totals, by metric name, for any window asked about.

        v2 names (``compute_unit_seconds``, ``root_branch_bytes_month``, ``child_branch_bytes_month``,
        ``public_network_transfer_bytes`` ...) and legacy ones (``compute_time_seconds``,
        ``data_storage_bytes_hour``, ``written_data_bytes``, ``synthetic_storage_size_bytes`` ...). A total
        is spread evenly over the timeframes of the answer (they add up to it exactly). The legacy
        metrics default to ones derived from the v2 seeds (``_legacy_totals``). The project's own
        counters (GET /projects/{id}) are set from the same seeds.
        """
        with self._lock:
            seeded = self.consumption.setdefault(project_id, {})
            seeded.update({k: int(v) for k, v in totals.items()})
            project = self.projects.get(project_id)
            if project is not None:
                legacy = _legacy_totals(seeded)
                project.data.update(
                    compute_time_seconds=legacy["compute_time_seconds"],
                    cpu_used_sec=legacy["compute_time_seconds"],
                    active_time_seconds=legacy["active_time_seconds"],
                    active_time=legacy["active_time_seconds"],
                    data_storage_bytes_hour=legacy["data_storage_bytes_hour"],
                    written_data_bytes=legacy["written_data_bytes"],
                    data_transfer_bytes=seeded.get("public_network_transfer_bytes", 0),
                    synthetic_storage_size=legacy["synthetic_storage_size_bytes"],
                )

    def rate_limited_answers(self) -> int:
        """How many requests the double's rate limit answered with 429."""
        with self._lock:
            return sum(1 for r in self.requests if r.status == 429 and r.route in self.rate_limited_routes)

    def _check_rate_limit(self, route: str) -> None:
        """Fixed windows of 60 s on ``self.clock`` (epoch-aligned); past the limit: 429 with Retry-After."""
        limit = self.consumption_rate_limit_per_minute
        if not limit or route not in self.rate_limited_routes:
            return
        now = self.clock()
        start = (now // 60) * 60
        with self._lock:
            count = self._rate_windows.get(start, 0)
            if count >= limit:
                retry_after = max(1, math.ceil(start + 60 - now))
                raise _Reply(
                    429,
                    "TOO_MANY_REQUESTS",
                    f"too many requests: {limit} per minute",
                    headers={"Retry-After": str(retry_after)},
                )
            if count == 0:
                self._rate_windows = {k: v for k, v in self._rate_windows.items() if k >= start}
            self._rate_windows[start] = count + 1

    # HTTP ------------------------------------------------------------------------------------------
    def _handle(self, request: _Handler) -> None:
        split = urlsplit(request.path)
        method = request.command.upper()
        length = int(request.headers.get("Content-Length") or 0)
        raw_body = request.rfile.read(length) if length > 0 else b""
        query = parse_qs(split.query, keep_blank_values=True)
        path = split.path
        auth = request.headers.get("Authorization") or ""
        authorized = auth == f"Bearer {self.api_key}"
        op: Operation | None = None
        body: Any = None
        status: int = 500
        payload: Any = {"code": "INTERNAL_ERROR", "message": "double failure"}
        headers: dict[str, str] = {}
        try:
            if not path.startswith(BASE_PATH + "/"):
                raise _Reply(404, "NOT_FOUND", f"no such path {path!r} (the API lives under {BASE_PATH})")
            api_path = path[len(BASE_PATH) :]
            op, path_params, path_exists = self.spec.match(method, api_path)
            if op is None:
                problem = f"{method} {api_path} is not in the Neon spec" + (" (wrong method)" if path_exists else "")
                self._violation(problem)
                raise _Reply(405 if path_exists else 404, "NOT_FOUND", problem)
            if not authorized:
                raise _Reply(401, "", "authentication required: the API key is missing or invalid")
            self._check_rate_limit(op.route)
            problems, body = self.spec.validate_request(
                op, path_params, query, request.headers.get("Content-Type"), raw_body
            )
            if problems:
                for problem in problems:
                    self._violation(f"{op.route}: {problem}")
                raise _Reply(400, "INVALID_REQUEST", "; ".join(problems)[:2000])
            scripted = self._next_script(op.route)
            if scripted is not None:
                if scripted.delay and self._stopping.wait(scripted.delay):
                    return
                if scripted.before is not None:
                    scripted.before()
                if not scripted.passthrough:
                    code, message = _DEFAULT_ERRORS.get(scripted.status, ("", f"scripted status {scripted.status}"))
                    default_body: Any = {"code": code, "message": message} if scripted.status >= 400 else {}
                    status = scripted.status
                    payload = default_body if scripted.body is None else scripted.body
                    headers = dict(scripted.headers)
                    raise _Stop
            handler = _ROUTES.get(op.route)
            if handler is None:
                self._violation(f"{op.route}: not implemented by the Neon double")
                raise _Reply(501, "NOT_IMPLEMENTED", f"{op.route} is not implemented by the Neon double")
            with self._lock:
                status, payload = handler(self, path_params, query, body)
        except _Reply as reply:
            status, headers = reply.status, reply.headers
            payload = {"code": reply.code, "message": reply.message, "request_id": str(uuid.uuid4())}
        except _Stop:
            pass
        if op is not None and self.validate_responses:
            for problem in self.spec.validate_response(op.route, status, payload):
                with self._lock:
                    self.response_violations.append(problem)
        with self._lock:
            self.requests.append(
                RecordedRequest(method, path, op.route if op else None, query, body, authorized, status)
            )
        request.send_json(status, payload, headers)

    def _violation(self, problem: str) -> None:
        with self._lock:
            self.violations.append(problem)

    def _next_script(self, route: str) -> Scripted | None:
        with self._lock:
            queue = self._scripts.get(route)
            return queue.popleft() if queue else None

    # Shapes ----------------------------------------------------------------------------------------
    def _shape(self, schema_name: str, data: JSON) -> JSON:
        """Only the properties the spec's schema names (Project and ProjectListItem differ)."""
        properties = self.spec.doc["components"]["schemas"][schema_name]["properties"]
        return {k: v for k, v in data.items() if k in properties}

    def _project_json(self, project: _Project) -> JSON:
        return self._shape("Project", project.data)

    def _project_list_item(self, project: _Project) -> JSON:
        return self._shape("ProjectListItem", project.data)

    def _host(self, endpoint_id: str, *, pooled: bool) -> str:
        if self._backing is not None:
            return self._backing.admin.display_host
        region = self.region_id.removeprefix("aws-").removeprefix("azure-")
        return f"{endpoint_id}{'-pooler' if pooled else ''}.{region}.aws.neon.tech"

    def _uri(self, project: _Project, endpoint_id: str, database: str, role: str, *, pooled: bool) -> str:
        password = project.passwords[role]
        if self._backing is not None:
            return self._backing.url(project.real_role[role], password, project.real_db[database])
        return f"postgresql://{role}:{password}@{self._host(endpoint_id, pooled=pooled)}/{database}?sslmode=require"

    def _connection_details(self, project: _Project, endpoint_id: str, database: str, role: str) -> JSON:
        backing = self._backing
        return {
            "connection_uri": self._uri(project, endpoint_id, database, role, pooled=False),
            "connection_parameters": {
                "database": project.real_db[database] if backing else database,
                "password": project.passwords[role],
                "role": project.real_role[role] if backing else role,
                "host": self._host(endpoint_id, pooled=False),
                "pooler_host": self._host(endpoint_id, pooled=True),
            },
        }

    def _operation(
        self,
        project: _Project,
        action: str,
        *,
        endpoint_id: str | None = None,
        effects: Iterable[Callable[[], None]] = (),
    ) -> JSON:
        now = _now()
        data: JSON = {
            "id": str(uuid.uuid4()),
            "project_id": project.data["id"],
            "branch_id": project.branch["id"],
            "action": action,
            "status": "running",
            "failures_count": 0,
            "created_at": now,
            "updated_at": now,
            "total_duration_ms": 0,
        }
        if endpoint_id:
            data["endpoint_id"] = endpoint_id
        op = _Op(data=data, polls_left=max(self.operation_polls, 0), effects=list(effects))
        project.operations.append(op)
        if op.polls_left == 0:
            self._finish(op)
        return dict(op.data)

    def _observe(self, op: _Op) -> None:
        if op.polls_left > 0:
            op.polls_left -= 1
            if op.polls_left == 0:
                self._finish(op)

    def _finish(self, op: _Op) -> None:
        op.data["status"] = self.operation_final_status
        op.data["updated_at"] = _now()
        op.data["total_duration_ms"] = 1000
        if self.operation_final_status == "finished":
            for effect in op.effects:
                effect()
        else:
            op.data["error"] = "operation failed (injected by the Neon double)"
            op.data["failures_count"] = 1

    def _project(self, project_id: str) -> _Project:
        project = self.projects.get(project_id)
        if project is None:
            raise _Reply(404, "NOT_FOUND", f"project {project_id} not found")
        return project

    def _endpoint(self, project: _Project, endpoint_id: str) -> JSON:
        endpoint = project.endpoints.get(endpoint_id)
        if endpoint is None:
            raise _Reply(404, "NOT_FOUND", f"endpoint {endpoint_id} not found")
        return endpoint

    def _check_unlocked(self, project: _Project) -> None:
        if self.lock_during_operations and any(o.polls_left > 0 for o in project.operations):
            code, message = _DEFAULT_ERRORS[423]
            raise _Reply(423, code, message)

    # Handlers --------------------------------------------------------------------------------------
    def _create_project(
        self, body: JSON, *, project_id: str | None = None, with_operations: bool = True, backing: bool = True
    ) -> JSON:
        spec = body.get("project") or {}
        if self.project_limit is not None and len(self.projects) >= self.project_limit:
            raise _Reply(
                422,
                "PROJECTS_LIMIT_EXCEEDED",
                f"You have reached the limit of {self.project_limit} projects. Delete a project or upgrade your plan.",
            )
        now = _now()
        fixed = project_id is not None and not with_operations  # bulk seeding: derived ids, no randomness
        if project_id is None:
            project_id = _neon_id()
            while project_id in self.projects:
                project_id = _neon_id()
        branch_spec = spec.get("branch") or {}
        database = branch_spec.get("database_name") or "neondb"
        role = branch_spec.get("role_name") or f"{database}_owner"
        region = spec.get("region_id") or self.region_id
        proxy_host = f"{region.removeprefix('aws-')}.aws.neon.tech"
        branch_id = f"br-{project_id}" if fixed else _neon_id("br-", 8)
        endpoint_id = f"ep-{project_id}" if fixed else _neon_id("ep-", 8)
        data: JSON = {
            "id": project_id,
            "platform_id": "aws",
            "region_id": region,
            "name": spec.get("name") or project_id,
            "provisioner": spec.get("provisioner") or "k8s-neonvm",
            "default_endpoint_settings": {"autoscaling_limit_min_cu": 0.25, "autoscaling_limit_max_cu": 0.25},
            "settings": spec.get("settings") or {},
            "pg_version": spec.get("pg_version") or 17,
            "proxy_host": proxy_host,
            "branch_logical_size_limit": 512,
            "branch_logical_size_limit_bytes": 536870912,
            "store_passwords": spec.get("store_passwords", True),
            "active_time": 0,
            "active_time_seconds": 0,
            "compute_time_seconds": 0,
            "cpu_used_sec": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "data_storage_bytes_hour": 0,
            "consumption_period_start": now,
            "consumption_period_end": now,
            "creation_source": "console",
            "history_retention_seconds": spec.get("history_retention_seconds", 86400),
            "created_at": now,
            "updated_at": now,
            "owner_id": "neon-double-owner",
        }
        if spec.get("org_id"):
            data["org_id"] = spec["org_id"]
        branch: JSON = {
            "id": branch_id,
            "project_id": project_id,
            "name": branch_spec.get("name") or "main",
            "current_state": "init",
            "pending_state": "ready",
            "state_changed_at": now,
            "creation_source": "console",
            "default": True,
            "protected": False,
            "cpu_used_sec": 0,
            "active_time_seconds": 0,
            "compute_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "created_at": now,
            "updated_at": now,
        }
        endpoint: JSON = {
            "host": self._host(endpoint_id, pooled=False),
            "id": endpoint_id,
            "project_id": project_id,
            "branch_id": branch_id,
            "autoscaling_limit_min_cu": 0.25,
            "autoscaling_limit_max_cu": 0.25,
            "region_id": region,
            "type": "read_write",
            "current_state": "init",
            "pending_state": "active",
            "settings": {},
            "pooler_enabled": False,
            "pooler_mode": "transaction",
            "disabled": False,
            "passwordless_access": True,
            "creation_source": "console",
            "created_at": now,
            "updated_at": now,
            "proxy_host": proxy_host,
            "suspend_timeout_seconds": 0,
            "provisioner": "k8s-neonvm",
        }
        password = "npg_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        self._next_db_id += 1
        project = _Project(
            data=data,
            branch=branch,
            endpoints={endpoint_id: endpoint},
            roles={
                role: {
                    "branch_id": branch_id,
                    "name": role,
                    "protected": False,
                    "created_at": now,
                    "updated_at": now,
                }
            },
            passwords={role: password},
            databases={
                database: {
                    "id": self._next_db_id,
                    "branch_id": branch_id,
                    "name": database,
                    "owner_name": role,
                    "created_at": now,
                    "updated_at": now,
                }
            },
        )
        if self._backing is not None and backing:
            project.real_db[database] = _real_name("db", project_id, database)
            project.real_role[role] = _real_name("role", project_id, role)
            self._backing.create(project.real_db[database], project.real_role[role], password)
        self.projects[project_id] = project
        self._project_seq[project_id] = self._next_seq
        self._next_seq += 1
        if not with_operations:
            branch.update(current_state="ready")
            branch.pop("pending_state", None)
            endpoint.update(current_state="idle")
            endpoint.pop("pending_state", None)
            return {"project": {"id": project_id}}

        def branch_ready() -> None:
            branch.update(current_state="ready", state_changed_at=_now())
            branch.pop("pending_state", None)

        def compute_started() -> None:
            endpoint.update(current_state="active", started_at=_now(), last_active=_now())
            endpoint.pop("pending_state", None)

        operations = [
            self._operation(project, "create_timeline", effects=[branch_ready]),
            self._operation(project, "start_compute", endpoint_id=endpoint_id, effects=[compute_started]),
        ]
        role_json = dict(project.roles[role], password=password)
        return {
            "project": self._project_json(project),
            "connection_uris": [self._connection_details(project, endpoint_id, database, role)],
            "roles": [role_json],
            "databases": [dict(project.databases[database])],
            "operations": operations,
            "branch": dict(branch),
            "endpoints": [dict(endpoint)],
        }

    def _drop_backing(self, project: _Project) -> None:
        if self._backing is None:
            return
        for real_db in project.real_db.values():
            self._backing.drop_database(real_db)
        for real_role in project.real_role.values():
            self._backing.drop_role(real_role)
        project.real_db.clear()
        project.real_role.clear()

    def h_list_projects(self, _p: dict[str, str], query: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        search = (_q(query, "search") or "").lower()
        org_id = _q(query, "org_id")
        limit = int(_q(query, "limit") or 10)
        cursor = _q(query, "cursor")
        if _q(query, "recoverable") == "true":
            return 200, {"projects": [], "applications": {}, "integrations": {}}
        matching = [
            p
            for p in self.projects.values()
            if p.data.get("org_id") == org_id
            and (not search or search in p.data["name"].lower() or search in p.data["id"])
        ]
        if cursor:
            ids = [p.data["id"] for p in matching]
            matching = matching[ids.index(cursor) + 1 :] if cursor in ids else []
        page = matching[:limit]
        body: JSON = {
            "projects": [self._project_list_item(p) for p in page],
            "applications": {},
            "integrations": {},
        }
        if page:
            body["pagination"] = {"cursor": page[-1].data["id"]}
        return 200, body

    def h_create_project(self, _p: dict[str, str], _q: dict[str, list[str]], body: Any) -> tuple[int, JSON]:
        return 201, self._create_project(body)

    def h_get_project(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        return 200, {"project": self._project_json(self._project(params["project_id"]))}

    def h_delete_project(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        self._drop_backing(project)
        del self.projects[params["project_id"]]
        return 200, {"project": self._project_json(project)}

    def h_list_operations(self, params: dict[str, str], query: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        for op in project.operations:
            self._observe(op)
        ops = list(reversed(project.operations))
        cursor = _q(query, "cursor")
        if cursor:
            ids = [o.data["id"] for o in ops]
            ops = ops[ids.index(cursor) + 1 :] if cursor in ids else []
        page = ops[: int(_q(query, "limit") or 1000)]
        body: JSON = {"operations": [dict(o.data) for o in page]}
        if page:
            body["pagination"] = {"cursor": page[-1].data["id"]}
        return 200, body

    def h_get_operation(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        for op in project.operations:
            if op.data["id"] == params["operation_id"]:
                self._observe(op)
                return 200, {"operation": dict(op.data)}
        raise _Reply(404, "NOT_FOUND", f"operation {params['operation_id']} not found")

    def h_connection_uri(self, params: dict[str, str], query: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        database = _q(query, "database_name") or ""
        role = _q(query, "role_name") or ""
        branch_id = _q(query, "branch_id", project.branch["id"])
        if branch_id != project.branch["id"]:
            raise _Reply(404, "NOT_FOUND", f"branch {branch_id} not found")
        endpoint_id = _q(query, "endpoint_id")
        if endpoint_id is None:
            endpoint_id = next(e["id"] for e in project.endpoints.values() if e["type"] == "read_write")
        self._endpoint(project, endpoint_id)
        if database not in project.databases:
            raise _Reply(404, "NOT_FOUND", f"database {database!r} not found")
        if role not in project.roles:
            raise _Reply(404, "NOT_FOUND", f"role {role!r} not found")
        pooled = _q(query, "pooled") == "true"
        return 200, {"uri": self._uri(project, endpoint_id, database, role, pooled=pooled)}

    def h_list_endpoints(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        return 200, {"endpoints": [dict(e) for e in project.endpoints.values()]}

    def h_get_endpoint(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        return 200, {"endpoint": dict(self._endpoint(project, params["endpoint_id"]))}

    def h_update_endpoint(self, params: dict[str, str], _q: dict[str, list[str]], body: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        endpoint = self._endpoint(project, params["endpoint_id"])
        self._check_unlocked(project)
        changes = dict(body["endpoint"])
        ops: list[JSON] = []
        if "disabled" in changes:
            disabled = bool(changes["disabled"])
            if self._backing is not None:
                for real in project.real_db.values():
                    self._backing.allow_connections(real, not disabled)
            if disabled and not endpoint["disabled"] and endpoint["current_state"] != "idle":

                def suspended() -> None:
                    endpoint.update(current_state="idle", suspended_at=_now())
                    endpoint.pop("pending_state", None)

                endpoint["pending_state"] = "idle"
                ops.append(self._operation(project, "suspend_compute", endpoint_id=endpoint["id"], effects=[suspended]))
        for key, value in changes.items():
            if key != "branch_id":
                endpoint[key] = value
        endpoint["updated_at"] = _now()
        if not ops:
            ops.append(self._operation(project, "apply_config", endpoint_id=endpoint["id"]))
        return 200, {"endpoint": dict(endpoint), "operations": ops}

    def h_suspend_endpoint(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        endpoint = self._endpoint(project, params["endpoint_id"])
        self._check_unlocked(project)
        if self._backing is not None:
            for real in project.real_db.values():
                self._backing.terminate(real)

        def suspended() -> None:
            endpoint.update(current_state="idle", suspended_at=_now())
            endpoint.pop("pending_state", None)

        endpoint["pending_state"] = "idle"
        op = self._operation(project, "suspend_compute", endpoint_id=endpoint["id"], effects=[suspended])
        return 200, {"endpoint": dict(endpoint), "operations": [op]}

    def h_start_endpoint(self, params: dict[str, str], _q: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        project = self._project(params["project_id"])
        endpoint = self._endpoint(project, params["endpoint_id"])
        self._check_unlocked(project)
        if endpoint["disabled"]:
            raise _Reply(422, "ENDPOINT_DISABLED", f"compute endpoint {endpoint['id']} is disabled")

        def started() -> None:
            endpoint.update(current_state="active", started_at=_now(), last_active=_now())
            endpoint.pop("pending_state", None)

        endpoint["pending_state"] = "active"
        op = self._operation(project, "start_compute", endpoint_id=endpoint["id"], effects=[started])
        return 200, {"endpoint": dict(endpoint), "operations": [op]}

    # Consumption history ---------------------------------------------------------------------------
    def _consumption_window(self, query: dict[str, list[str]]) -> list[tuple[datetime, datetime]]:
        """The timeframes a request covers; 406 when the range does not fit the granularity."""
        granularity = _q(query, "granularity") or "daily"
        start = _floor_to(_parse_time(_q(query, "from") or ""), granularity)
        end = _floor_to(_parse_time(_q(query, "to") or ""), granularity)
        now = datetime.fromtimestamp(self.clock(), UTC)
        if start < _HISTORY_START or end < start or now - start > _GRANULARITY_REACH[granularity]:
            raise _Reply(
                406,
                "",
                f"the range {_iso(start)}..{_iso(end)} is not valid for {granularity} granularity "
                f"(limited to the last {_GRANULARITY_REACH[granularity]}, from {_iso(_HISTORY_START)})",
            )
        return _timeframes(start, end, granularity)

    def _consumption_page(
        self, query: dict[str, list[str]], *, org_id: str | None
    ) -> tuple[list[_Project], str | None]:
        """The page of projects a consumption request covers, newest first, and the next cursor."""
        wanted = _list_param(query, "project_ids")
        if wanted:
            candidates = [self.projects[i] for i in dict.fromkeys(wanted) if i in self.projects]
        else:
            candidates = list(self.projects.values())
        matching = [p for p in candidates if p.data.get("org_id") == org_id]
        matching.sort(key=lambda p: -self._project_seq.get(p.data["id"], 0))
        cursor = _q(query, "cursor")
        if cursor:
            ids = [p.data["id"] for p in matching]
            matching = matching[ids.index(cursor) + 1 :] if cursor in ids else []
        limit = int(_q(query, "limit") or 10)
        if self.consumption_max_page_size:
            limit = min(limit, self.consumption_max_page_size)
        page = matching[:limit]
        return page, (page[-1].data["id"] if page else None)

    def _totals(self, project_id: str, hours: float) -> dict[str, int]:
        totals = dict(self.consumption.get(project_id) or _generated_totals(project_id, hours))
        return totals

    def h_consumption_v2(self, _p: dict[str, str], query: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        if self.consumption_v2_status is not None:
            status = self.consumption_v2_status
            raise _Reply(status, "", f"consumption history v2 is not available for this account (HTTP {status})")
        metrics = _list_param(query, "metrics")
        unknown = sorted(set(metrics) - V2_METRICS)
        if unknown:
            self._violation(f"{CONSUMPTION_V2_ROUTE}: unsupported metrics {unknown}")
            raise _Reply(400, "INVALID_REQUEST", f"unsupported metrics: {', '.join(unknown)}")
        frames = self._consumption_window(query)
        page, cursor = self._consumption_page(query, org_id=_q(query, "org_id"))
        hours = sum((b - a).total_seconds() for a, b in frames) / 3600
        projects = []
        for project in page:
            totals = self._totals(project.data["id"], hours)
            consumption = [
                {
                    "timeframe_start": _iso(a),
                    "timeframe_end": _iso(b),
                    "metrics": [
                        {"metric_name": m, "value": _split(int(totals.get(m, 0)), len(frames), i)} for m in metrics
                    ],
                }
                for i, (a, b) in enumerate(frames)
            ]
            projects.append({"project_id": project.data["id"], "periods": [self._period(project, frames, consumption)]})
        body: JSON = {"projects": projects}
        if cursor:
            body["pagination"] = {"cursor": cursor}
        return 200, body

    def h_consumption_legacy(self, _p: dict[str, str], query: dict[str, list[str]], _b: Any) -> tuple[int, JSON]:
        if self.consumption_legacy_status is not None:
            status = self.consumption_legacy_status
            raise _Reply(status, "", f"consumption history is not available for this account (HTTP {status})")
        metrics = _list_param(query, "metrics")
        unknown = sorted(set(metrics) - LEGACY_METRICS)
        if unknown:
            self._violation(f"{CONSUMPTION_LEGACY_ROUTE}: unsupported metrics {unknown}")
            raise _Reply(400, "INVALID_REQUEST", f"unsupported metrics: {', '.join(unknown)}")
        wanted = list(dict.fromkeys([*_LEGACY_ALWAYS, *metrics]))
        if _q(query, "include_v1_metrics") == "true" and not metrics:
            wanted.append("data_storage_bytes_hour")
        frames = self._consumption_window(query)
        page, cursor = self._consumption_page(query, org_id=_q(query, "org_id"))
        hours = sum((b - a).total_seconds() for a, b in frames) / 3600
        projects = []
        for project in page:
            totals = _legacy_totals(self._totals(project.data["id"], hours))
            consumption = []
            for i, (a, b) in enumerate(frames):
                frame: JSON = {"timeframe_start": _iso(a), "timeframe_end": _iso(b)}
                for m in wanted:
                    value = int(totals.get(m, 0))
                    frame[m] = value if m in _POINT_IN_TIME else _split(value, len(frames), i)
                consumption.append(frame)
            projects.append({"project_id": project.data["id"], "periods": [self._period(project, frames, consumption)]})
        body: JSON = {"projects": projects}
        if cursor:
            body["pagination"] = {"cursor": cursor}
        return 200, body

    def _period(self, project: _Project, frames: list[tuple[datetime, datetime]], consumption: list[JSON]) -> JSON:
        start = frames[0][0] if frames else datetime.fromtimestamp(self.clock(), UTC)
        return {
            "period_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"neon-double/{project.data['id']}/{start:%Y-%m}")),
            "period_plan": "scale",
            "period_start": _iso(_floor_to(start, "monthly")),
            "consumption": consumption,
        }


# Consumption ---------------------------------------------------------------------------------------
CONSUMPTION_V2_ROUTE = "GET /consumption_history/v2/projects"
CONSUMPTION_LEGACY_ROUTE = "GET /consumption_history/projects"
CONSUMPTION_ROUTES = frozenset({CONSUMPTION_V2_ROUTE, CONSUMPTION_LEGACY_ROUTE})
V2_METRICS = frozenset(
    {
        "compute_unit_seconds",
        "root_branch_bytes_month",
        "child_branch_bytes_month",
        "instant_restore_bytes_month",
        "public_network_transfer_bytes",
        "private_network_transfer_bytes",
        "extra_branches_month",
        "snapshot_storage_bytes_month",
    }
)
LEGACY_METRICS = frozenset(
    {
        "active_time_seconds",
        "compute_time_seconds",
        "written_data_bytes",
        "synthetic_storage_size_bytes",
        "data_storage_bytes_hour",
        "logical_size_bytes",
        "logical_size_bytes_hour",
    }
)
_LEGACY_ALWAYS = ("active_time_seconds", "compute_time_seconds", "written_data_bytes", "synthetic_storage_size_bytes")
_POINT_IN_TIME = frozenset({"synthetic_storage_size_bytes", "logical_size_bytes"})  # sizes: not split over time
_HISTORY_START = datetime(2024, 3, 1, tzinfo=UTC)
_GRANULARITY_REACH = {"hourly": timedelta(hours=168), "daily": timedelta(days=60), "monthly": timedelta(days=366)}
# Neon's byte-month: byte-hours over a 744-hour (31-day) month.
_NEON_MONTH_HOURS = 744


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor_to(value: datetime, granularity: str) -> datetime:
    value = value.replace(minute=0, second=0, microsecond=0)
    if granularity in ("daily", "monthly"):
        value = value.replace(hour=0)
    if granularity == "monthly":
        value = value.replace(day=1)
    return value


def _step(value: datetime, granularity: str) -> datetime:
    if granularity == "hourly":
        return value + timedelta(hours=1)
    if granularity == "daily":
        return value + timedelta(days=1)
    return (value.replace(day=28) + timedelta(days=4)).replace(day=1)


def _timeframes(start: datetime, end: datetime, granularity: str) -> list[tuple[datetime, datetime]]:
    frames: list[tuple[datetime, datetime]] = []
    at = start
    while at < end and len(frames) < 10_000:
        nxt = _step(at, granularity)
        frames.append((at, nxt))
        at = nxt
    return frames


def _generated_totals(project_id: str, hours: float) -> dict[str, int]:
    """Deterministic use for a project nobody seeded: a steady rate derived from its id."""
    digest = int.from_bytes(hashlib.sha256(project_id.encode()).digest()[:8], "big")
    cu_seconds_per_hour = digest % 901  # up to 0.25 CU busy all the time
    size = 10_000_000 + ((digest >> 16) % 1000) * 1_000_000  # 10 MB .. ~1 GB
    return {
        "compute_unit_seconds": int(cu_seconds_per_hour * hours),
        "root_branch_bytes_month": int(size * hours / _NEON_MONTH_HOURS),
        "child_branch_bytes_month": 0,
        "synthetic_storage_size_bytes": size,
    }


def _legacy_totals(v2: dict[str, int]) -> dict[str, int]:
    """Legacy metrics for a project from its (seeded or generated) v2 totals, unless seeded themselves.

    compute_time_seconds (CPU-seconds) = compute_unit_seconds (1 CU = 1 vCPU); data_storage_bytes_hour =
    (root + child) byte-months * 720 (a 30-day month, as agentdb counts); the size defaults to root.
    """
    storage = v2.get("root_branch_bytes_month", 0) + v2.get("child_branch_bytes_month", 0)
    compute = v2.get("compute_time_seconds", v2.get("compute_unit_seconds", 0))
    return {
        "compute_time_seconds": compute,
        "active_time_seconds": v2.get("active_time_seconds", compute * 4),
        "written_data_bytes": v2.get("written_data_bytes", 0),
        "data_storage_bytes_hour": v2.get("data_storage_bytes_hour", storage * 720),
        "synthetic_storage_size_bytes": v2.get("synthetic_storage_size_bytes", v2.get("root_branch_bytes_month", 0)),
        "logical_size_bytes": v2.get("logical_size_bytes", v2.get("root_branch_bytes_month", 0)),
        "logical_size_bytes_hour": v2.get("logical_size_bytes_hour", storage * 720),
    }


def _split(total: int, parts: int, index: int) -> int:
    """The ``index``-th of ``parts`` near-equal integer shares of ``total`` (they add up to it)."""
    base, extra = divmod(total, parts)
    return base + (1 if index < extra else 0)


def _list_param(query: dict[str, list[str]], name: str) -> list[str]:
    return [v for raw in query.get(name, []) for v in raw.split(",") if v]


class _Stop(Exception):
    """A scripted answer is ready: skip the normal handler."""


_Route = Callable[[NeonDouble, dict[str, str], dict[str, list[str]], Any], tuple[int, JSON]]

_ROUTES: dict[str, _Route] = {
    "GET /projects": NeonDouble.h_list_projects,
    "POST /projects": NeonDouble.h_create_project,
    "GET /projects/{project_id}": NeonDouble.h_get_project,
    "DELETE /projects/{project_id}": NeonDouble.h_delete_project,
    "GET /projects/{project_id}/operations": NeonDouble.h_list_operations,
    "GET /projects/{project_id}/operations/{operation_id}": NeonDouble.h_get_operation,
    "GET /projects/{project_id}/connection_uri": NeonDouble.h_connection_uri,
    "GET /projects/{project_id}/endpoints": NeonDouble.h_list_endpoints,
    "GET /projects/{project_id}/endpoints/{endpoint_id}": NeonDouble.h_get_endpoint,
    "PATCH /projects/{project_id}/endpoints/{endpoint_id}": NeonDouble.h_update_endpoint,
    "POST /projects/{project_id}/endpoints/{endpoint_id}/suspend": NeonDouble.h_suspend_endpoint,
    "POST /projects/{project_id}/endpoints/{endpoint_id}/start": NeonDouble.h_start_endpoint,
    CONSUMPTION_V2_ROUTE: NeonDouble.h_consumption_v2,
    CONSUMPTION_LEGACY_ROUTE: NeonDouble.h_consumption_legacy,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    double: NeonDouble

    def do_GET(self) -> None:
        self.double._handle(self)

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def send_json(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


# CLI ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Neon API v2 test double (validates requests against the spec)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4010)
    parser.add_argument("--api-key", default=os.environ.get("NEON_API_KEY") or "neon-double-key")
    parser.add_argument("--backing-pg-url", default=os.environ.get("NEON_DOUBLE_BACKING_PG_URL"))
    parser.add_argument("--operation-polls", type=int, default=1)
    parser.add_argument("--project-limit", type=int, default=None)
    parser.add_argument("--consumption-rate-limit", type=int, default=None, help="requests per minute (429 past it)")
    args = parser.parse_args(argv)
    core = str(REPO_ROOT / "layers" / "core")
    if args.backing_pg_url and core not in sys.path:
        sys.path.insert(0, core)
    double = NeonDouble(
        args.api_key,
        host=args.host,
        port=args.port,
        operation_polls=args.operation_polls,
        project_limit=args.project_limit,
        backing_pg_url=args.backing_pg_url,
        consumption_rate_limit_per_minute=args.consumption_rate_limit,
    )
    return serve_until_stopped(
        double.start,
        double.stop,
        "Neon double listening on {url} (NEON_API_URL={url}; API key from --api-key)",
        lambda: [f"spec violation: {problem}" for problem in double.violations],
    )


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "NeonDouble",
    "OpenAPISpec",
    "RecordedRequest",
    "Scripted",
    "find_spec",
]
