"""A local stand-in for API Gateway (HTTP API), EventBridge and Lambda, routed only by template.yaml.

- HTTP: each HttpApi route of the template, with API Gateway's JWT authorizer emulated (HS256 under the
  local secret, issuer ``agentdb-local``, audience ``agentdb``, ``exp`` required, route scopes checked
  against the ``scope`` claim), a payload format 2.0 event, and the 2.0 response rules.
- ``POST /_local/events``: one EventBridge event, or PutEvents-style ``{"Entries": [...]}``, dispatched
  to every function whose rule pattern matches, synchronously. Where AWS would retry a failed invocation
  and finally send the event to the rule's dead-letter queue, this answers 502 with the error instead.
- ``POST /_local/invoke/<FunctionLogicalId>``: a raw event to one function (like ``sam local invoke``).

The ``/_local`` routes need no token: bind the gateway to loopback only.

Lambda is emulated as one warm container per function: each handler module is loaded once, by file
path, under a module name unique to the gateway and function (every function has its own ``app.py``),
and invocations of one function are serialized while different functions run concurrently. All
functions share one process, so they share the layer's module state and ``os.environ``; the template's
per-function Environment is not applied (the local stack sets the environment itself). Top-level
imports resolve from the invoking function's code dir first (as Lambda's sys.path does), at import time
and at invocation time, without putting any code dir on the process-wide sys.path.
"""

from __future__ import annotations

import base64
import contextvars
import decimal
import importlib.abc
import importlib.util
import itertools
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt

from local.settings import JWT_ALGORITHM, JWT_AUDIENCE, JWT_ISSUER
from local.template import (
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    EventRule,
    Function,
    HttpRoute,
    Template,
    load_template,
)

LOCAL_API_ID = "local"
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit

Handler = Callable[[Any, Any], Any]

_IMPORT_LOCK = threading.Lock()  # guards sys.meta_path and the sibling registry
_GATEWAY_IDS = itertools.count(1)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Lambda


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, fn: Function, request_id: str) -> None:
        self.function_name = fn.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{fn.logical_id}"
        self.memory_limit_in_mb = str(fn.memory_mb)  # a string in the real runtime too
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{fn.logical_id}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + fn.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class InvocationError(Exception):
    """A function failed: ``error_type`` and ``message`` are what Lambda would report."""

    def __init__(self, function: str, error_type: str, message: str) -> None:
        super().__init__(f"{function}: {error_type}: {message}")
        self.function = function
        self.error_type = error_type
        self.message = message

    def as_json(self) -> dict[str, str]:
        return {"type": self.error_type, "message": self.message}


class FunctionRuntime:
    """One warm container: the handler is imported on first use, invocations are serial."""

    def __init__(self, fn: Function, module_name: str) -> None:
        self.fn = fn
        self.module_name = module_name
        self.module: ModuleType | None = None
        self.siblings: dict[str, ModuleType] = {}  # top-level modules imported from the code dir
        self._sibling_names: set[str] = set()  # found by _CodeDirFinder, not yet recorded
        self._handler: Handler | None = None
        self._lock = threading.Lock()

    def invoke(self, event: Any) -> Any:
        """Run the handler on a copy of ``event``; return its JSON-marshalled result or raise InvocationError."""
        payload = json.loads(json.dumps(event))  # the function gets its own copy, as over the wire
        request_id = str(uuid.uuid4())
        with self._lock:
            current = _CURRENT.set(self)
            try:
                self._activate_siblings()
                handler = self._handler or self._init(request_id)
                result = self._run(handler, payload, request_id)
            finally:
                self._record_siblings()
                _CURRENT.reset(current)
        try:
            return json.loads(json.dumps(result, default=_lambda_json_default))
        except (TypeError, ValueError) as exc:
            _log(f"[{self.fn.logical_id}] {request_id} Runtime.MarshalError: {exc}")
            raise InvocationError(
                self.fn.logical_id, "Runtime.MarshalError", f"Unable to marshal response: {exc}"
            ) from exc

    def _run(self, handler: Handler, payload: Any, request_id: str) -> Any:
        context = LambdaContext(self.fn, request_id)
        started = time.monotonic()
        try:
            return handler(payload, context)
        except (Exception, SystemExit) as exc:
            self._print_traceback(request_id, "invocation failed")
            raise InvocationError(self.fn.logical_id, type(exc).__name__, str(exc)) from exc
        finally:
            elapsed = time.monotonic() - started
            if elapsed > self.fn.timeout_seconds:
                _log(
                    f"[{self.fn.logical_id}] warning: ran {elapsed:.1f}s, over its Timeout of "
                    f"{self.fn.timeout_seconds:g}s: Lambda would have stopped it"
                )

    def _init(self, request_id: str) -> Handler:
        # A failed init is not cached: like Lambda, the next invocation tries again.
        try:
            module = self._import()
        except (Exception, SystemExit) as exc:
            self._print_traceback(request_id, "init failed")
            raise InvocationError(self.fn.logical_id, "Runtime.ImportModuleError", str(exc)) from exc
        handler = getattr(module, self.fn.function, None)
        if not callable(handler):
            message = f"Handler '{self.fn.function}' missing on module '{self.fn.module}'"
            _log(f"[{self.fn.logical_id}] {request_id} Runtime.HandlerNotFound: {message}")
            raise InvocationError(self.fn.logical_id, "Runtime.HandlerNotFound", message)
        self.module, self._handler = module, handler
        return handler

    def _import(self) -> ModuleType:
        path = self.fn.module_file
        if not path.is_file():
            raise ImportError(f"Unable to import module '{self.fn.module}': no file {path}")
        spec = importlib.util.spec_from_file_location(self.module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"Unable to import module '{self.fn.module}' from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = module
        try:
            spec.loader.exec_module(module)  # its `import helpers` goes through _CodeDirFinder
        except BaseException:
            sys.modules.pop(self.module_name, None)
            raise
        return module

    def _activate_siblings(self) -> None:
        """Make ``import helpers`` in this function mean this function's helpers.py.

        sys.modules is process-wide: put this function's own top-level modules back and evict other
        functions' modules of the same name, so a lazy import falls through to _CodeDirFinder.
        """
        with _IMPORT_LOCK:
            for name, modules in _SIBLINGS.items():
                mine = self.siblings.get(name)
                if mine is not None:
                    sys.modules[name] = mine
                elif any(sys.modules.get(name) is m for m in modules):
                    sys.modules.pop(name, None)

    def _record_siblings(self) -> None:
        with _IMPORT_LOCK:
            for name in self._sibling_names - set(self.siblings):
                module = sys.modules.get(name)
                file = getattr(module, "__file__", None)
                if module is None or not file or not Path(file).resolve().is_relative_to(self.fn.code_dir):
                    continue
                others = _SIBLINGS.setdefault(name, [])
                if any(
                    Path(str(getattr(m, "__file__", ""))).resolve().parent != Path(file).resolve().parent
                    for m in others
                ):
                    _log(
                        f"[{self.fn.logical_id}] warning: another function also has a top-level module "
                        f"{name!r}; concurrent invocations of the two may see each other's"
                    )
                others.append(module)
                self.siblings[name] = module
            self._sibling_names.clear()

    def _print_traceback(self, request_id: str, what: str) -> None:
        _log(f"[{self.fn.logical_id}] {request_id} {what}:\n{traceback.format_exc().rstrip()}")


class _CodeDirFinder(importlib.abc.MetaPathFinder):
    """Resolve top-level imports from the code dir of the function running in this thread.

    Lambda puts the code dir first on sys.path; a process-wide sys.path entry would let one function
    import another's ``helpers``, so this finder consults only the invoking function's directory.
    """

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        runtime = _CURRENT.get()
        if runtime is None or path is not None:
            return None
        base = runtime.fn.code_dir / fullname
        if (base / "__init__.py").is_file():
            spec = importlib.util.spec_from_file_location(
                fullname, base / "__init__.py", submodule_search_locations=[str(base)]
            )
        elif base.with_name(fullname + ".py").is_file():
            spec = importlib.util.spec_from_file_location(fullname, base.with_name(fullname + ".py"))
        else:
            return None
        runtime._sibling_names.add(fullname)
        return spec


_CURRENT: contextvars.ContextVar[FunctionRuntime | None] = contextvars.ContextVar("local_function", default=None)
_SIBLINGS: dict[str, list[ModuleType]] = {}  # top-level module name -> every function's module of that name


def _install_finder() -> None:
    with _IMPORT_LOCK:
        if not any(isinstance(f, _CodeDirFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _CodeDirFinder())


def _lambda_json_default(value: Any) -> Any:
    # The Python runtime's marshaller accepts Decimal; anything else non-JSON is a Runtime.MarshalError.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# --------------------------------------------------------------------------------------------------
# Requests and responses


@dataclass
class Request:
    method: str
    raw_path: str
    raw_query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        body = json.dumps(payload, default=str).encode()
        return cls(status, [("content-type", "application/json")], body)

    def json_body(self) -> Any:
        return json.loads(self.body)


def _message(status: int, message: str) -> Response:
    return Response.json(status, {"message": message})


# --------------------------------------------------------------------------------------------------
# EventBridge


def pattern_matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge pattern matching: exact values, prefix/suffix, anything-but, exists, numeric, $or."""
    for key, rule in pattern.items():
        if key == "$or":
            if not any(pattern_matches(alt, event) for alt in rule):
                return False
            continue
        present = key in event
        value = event.get(key)
        if isinstance(rule, Mapping):
            if not isinstance(value, Mapping) or not pattern_matches(rule, value):
                return False
        elif isinstance(rule, list):
            if not _values_match(rule, value, present):
                return False
        else:
            return False  # not a valid pattern leaf: EventBridge would reject the rule
    return True


def _values_match(rules: list[Any], value: Any, present: bool) -> bool:
    values = value if isinstance(value, list) else [value]
    for rule in rules:
        if isinstance(rule, Mapping) and "exists" in rule:
            if bool(rule["exists"]) == (present and value is not None):
                return True
        elif present and any(_value_matches(rule, v) for v in values):
            return True
    return False


def _value_matches(rule: Any, value: Any) -> bool:
    if not isinstance(rule, Mapping):
        if isinstance(rule, bool) or isinstance(value, bool) or rule is None or value is None:
            return rule is value
        return bool(rule == value)
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(str(rule["prefix"]))
    if "suffix" in rule:
        return isinstance(value, str) and value.endswith(str(rule["suffix"]))
    if "equals-ignore-case" in rule:
        return isinstance(value, str) and value.casefold() == str(rule["equals-ignore-case"]).casefold()
    if "anything-but" in rule:
        but = rule["anything-but"]
        if isinstance(but, Mapping):
            return not _value_matches(but, value)
        return not any(_value_matches(b, value) for b in (but if isinstance(but, list) else [but]))
    if "numeric" in rule:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        ops = {"<": float.__lt__, "<=": float.__le__, "=": float.__eq__, ">": float.__gt__, ">=": float.__ge__}
        spec = rule["numeric"]
        return all(ops[spec[i]](float(value), float(spec[i + 1])) for i in range(0, len(spec) - 1, 2))
    if "wildcard" in rule:
        regex = ".*".join(re.escape(part) for part in str(rule["wildcard"]).split("*"))
        return isinstance(value, str) and re.fullmatch(regex, value, re.DOTALL) is not None
    return False


def normalize_event(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One EventBridge event as a target receives it, from an event or a PutEvents entry; ValueError if invalid."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if "Source" in raw or "DetailType" in raw:
        event: dict[str, Any] = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": raw.get("DetailType"),
            "source": raw.get("Source"),
            "account": LOCAL_ACCOUNT_ID,
            "time": raw.get("Time") or now,
            "region": LOCAL_REGION,
            "resources": list(raw.get("Resources") or []),
            "detail": raw.get("Detail", "{}"),
        }
    else:
        event = dict(raw)
        event.setdefault("version", "0")
        event.setdefault("id", str(uuid.uuid4()))
        event.setdefault("account", LOCAL_ACCOUNT_ID)
        event.setdefault("time", now)
        event.setdefault("region", LOCAL_REGION)
        event.setdefault("resources", [])
        event.setdefault("detail", {})
    if isinstance(event["detail"], str):
        try:
            event["detail"] = json.loads(event["detail"])
        except json.JSONDecodeError:
            raise ValueError("Detail is not valid JSON") from None
    if not isinstance(event["detail"], dict):
        raise ValueError("detail must be a JSON object")
    for key in ("source", "detail-type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise ValueError(f"{key} must be a non-empty string")
    return event


def _input_path(event: Any, path: str) -> Any:
    """A rule target's InputPath (``$.detail`` style: dotted keys only)."""
    value = event
    for part in path.removeprefix("$").strip(".").split("."):
        if part:
            value = value.get(part) if isinstance(value, Mapping) else None
    return value


# --------------------------------------------------------------------------------------------------
# API Gateway


def _claim_string(value: Any) -> str:
    """Claims reach the function as strings, as API Gateway passes them (lists as ``[a b]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_claim_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _token_scopes(claims: Mapping[str, Any]) -> set[str]:
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(str(v) for v in value)
    return scopes


def _join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


class LocalGateway:
    """API Gateway + EventBridge + Lambda for one template, in this process."""

    def __init__(
        self,
        template_path: Path | str,
        *,
        jwt_secret: str,
        repo_root: Path | str | None = None,
        parameter_overrides: Mapping[str, str] | None = None,
    ) -> None:
        if not jwt_secret:
            raise ValueError("jwt_secret is required")
        self.template: Template = load_template(
            template_path, base_dir=repo_root, parameter_overrides=parameter_overrides
        )
        self._jwt_secret = jwt_secret
        _install_finder()
        tag = next(_GATEWAY_IDS)
        self.functions: dict[str, FunctionRuntime] = {
            fid: FunctionRuntime(fn, f"_agentdb_local_fn_{tag}_{fid}") for fid, fn in self.template.functions.items()
        }
        # A layer's content is on Lambda's sys.path (/opt/python); locally its source dir stands in.
        for layer_dir in self.template.layer_dirs:
            if layer_dir.is_dir() and all(Path(p or ".").resolve() != layer_dir for p in sys.path):
                sys.path.append(str(layer_dir))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def routes(self) -> list[HttpRoute]:
        return self.template.routes

    @property
    def rules(self) -> list[EventRule]:
        return self.template.rules

    # ---- serving

    def serve(self, host: str = "127.0.0.1", port: int = 3000) -> None:
        """Serve until interrupted (KeyboardInterrupt propagates after the socket is closed)."""
        server = self._make_server(host, port)
        try:
            server.serve_forever()
        finally:
            server.server_close()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; return the base URL (port 0 picks a free port)."""
        if self._server is not None:
            raise RuntimeError("gateway already started")
        server = self._make_server(host, port)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="local-gateway", daemon=True)
        self._thread.start()
        return f"http://{host}:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def _make_server(self, host: str, port: int) -> ThreadingHTTPServer:
        handler = type("BoundHandler", (_HttpHandler,), {"gateway": self})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        return server

    # ---- dispatch (no sockets: the tests can call it directly)

    def handle(self, request: Request) -> Response:
        path = request.raw_path or "/"
        if path == "/_local" or path.startswith("/_local/"):
            return self._local(request, path)
        return self._http(request)

    def invoke(self, function_id: str, event: Any) -> Any:
        """Invoke one function by logical id; raises KeyError (unknown) or InvocationError."""
        return self.functions[function_id].invoke(event)

    def dispatch_event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Invoke every function whose rule matches ``event`` (already normalized), in template order."""
        matched: list[dict[str, Any]] = []
        for rule in self.template.rules:
            if not pattern_matches(rule.pattern, event):
                continue
            payload: Any = event
            if rule.input is not None:
                payload = rule.input
            elif rule.input_path:
                payload = _input_path(event, rule.input_path)
            entry: dict[str, Any] = {"function": rule.function, "rule": rule.name, "eventId": event.get("id")}
            try:
                entry.update(ok=True, result=self.invoke(rule.function, payload))
            except InvocationError as exc:
                entry.update(ok=False, error=exc.as_json())
            matched.append(entry)
        return matched

    def _local(self, request: Request, path: str) -> Response:
        if path == "/_local/events":
            if request.method != "POST":
                return _message(405, "Method Not Allowed")
            return self._events(request)
        if path.startswith("/_local/invoke/"):
            if request.method != "POST":
                return _message(405, "Method Not Allowed")
            return self._invoke_route(request, unquote(path.removeprefix("/_local/invoke/")))
        return _message(404, "Not Found")

    def _events(self, request: Request) -> Response:
        try:
            body = json.loads(request.body or b"null")
            raws = body["Entries"] if isinstance(body, dict) and "Entries" in body else [body]
            if not isinstance(raws, list) or not raws or not all(isinstance(r, dict) for r in raws):
                raise ValueError('expected an EventBridge event or {"Entries": [...]}')
            events = [normalize_event(raw) for raw in raws]
        except ValueError as exc:  # JSONDecodeError is a ValueError
            return _message(400, f"invalid event: {exc}")
        matched = [entry for event in events for entry in self.dispatch_event(event)]
        status = 200 if all(entry["ok"] for entry in matched) else 502
        return Response.json(status, {"matched": matched})

    def _invoke_route(self, request: Request, function_id: str) -> Response:
        if function_id not in self.functions:
            return _message(404, f"Function not found: {function_id}")
        try:
            event = json.loads(request.body) if request.body.strip() else {}
        except ValueError:
            return _message(400, "the request body must be JSON (the event)")
        try:
            return Response.json(200, self.invoke(function_id, event))
        except InvocationError as exc:
            return Response.json(502, {"function": function_id, "error": exc.as_json()})

    def _http(self, request: Request) -> Response:
        cors, origin = self.template.cors, request.header("origin")
        if cors is None or origin is None:
            return self._route(request)
        allowed = cors.allow_origin(origin)
        if request.method == "OPTIONS" and request.header("access-control-request-method"):
            # Preflight: answered by API Gateway itself, no route, no authorizer.
            response = Response(204)
            if allowed:
                response.headers.append(("access-control-allow-origin", allowed))
                response.headers.append(("access-control-allow-methods", ",".join(cors.allow_methods)))
                if cors.allow_headers:
                    response.headers.append(("access-control-allow-headers", ",".join(cors.allow_headers)))
                if cors.max_age is not None:
                    response.headers.append(("access-control-max-age", str(cors.max_age)))
                if cors.allow_credentials:
                    response.headers.append(("access-control-allow-credentials", "true"))
            return response
        response = self._route(request)
        if allowed:
            # The API's CORS configuration replaces whatever CORS headers the function returned.
            response.headers = [(k, v) for k, v in response.headers if not k.lower().startswith("access-control-")]
            response.headers.append(("access-control-allow-origin", allowed))
            if cors.expose_headers:
                response.headers.append(("access-control-expose-headers", ",".join(cors.expose_headers)))
            if cors.allow_credentials:
                response.headers.append(("access-control-allow-credentials", "true"))
        return response

    def _route(self, request: Request) -> Response:
        found = self.template.find_route(request.method, request.raw_path or "/")
        if found is None:
            return _message(404, "Not Found")
        route, path_params = found
        claims: dict[str, Any] | None = None
        if route.authorizer is not None:
            claims = self._verify(request.header("authorization"))
            if claims is None:
                return _message(401, "Unauthorized")
            if route.scopes and not _token_scopes(claims) & set(route.scopes):
                return _message(403, "Forbidden")
        request_id = str(uuid.uuid4())
        event = self._v2_event(request, route, path_params, claims, request_id)
        try:
            result = self.invoke(route.function, event)
            response = _v2_response(result)
        except InvocationError:
            response = _message(500, "Internal Server Error")  # the traceback went to stderr
        except ValueError as exc:
            _log(f"[{route.function}] malformed Lambda proxy response: {exc}")
            response = _message(500, "Internal Server Error")
        response.headers.append(("apigw-requestid", request_id))
        return response

    def _verify(self, authorization: str | None) -> dict[str, Any] | None:
        if not authorization:
            return None
        token = authorization.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        return claims if isinstance(claims, dict) else None

    def _v2_event(
        self,
        request: Request,
        route: HttpRoute,
        path_params: dict[str, str],
        claims: dict[str, Any] | None,
        request_id: str,
    ) -> dict[str, Any]:
        cookie_values = [v for k, v in request.headers if k.lower() == "cookie"]
        headers = _join_headers((k, v) for k, v in request.headers if k.lower() != "cookie")
        headers.setdefault("x-forwarded-for", request.source_ip)
        headers.setdefault("x-forwarded-proto", "http")
        domain = headers.get("host", "localhost")
        headers.setdefault("x-forwarded-port", domain.rsplit(":", 1)[1] if ":" in domain else "80")
        now = datetime.now(UTC)
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": request.raw_path or "/",
            "rawQueryString": request.raw_query,
        }
        cookies = [c.strip() for value in cookie_values for c in value.split(";") if c.strip()]
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        query = parse_qsl(request.raw_query, keep_blank_values=True)
        if query:
            event["queryStringParameters"] = _join_query(query)
        context: dict[str, Any] = {
            "accountId": LOCAL_ACCOUNT_ID,
            "apiId": LOCAL_API_ID,
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0].split(":", 1)[0],
            "http": {
                "method": request.method,
                "path": request.raw_path or "/",
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
        if claims is not None:
            context["authorizer"] = {
                "jwt": {"claims": {k: _claim_string(v) for k, v in claims.items()}, "scopes": None}
            }
        event["requestContext"] = context
        if path_params:
            event["pathParameters"] = path_params
        if request.body:
            try:
                event["body"] = request.body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(request.body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["isBase64Encoded"] = False
        return event


def _join_query(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in pairs:
        params[name] = f"{params[name]},{value}" if name in params else value
    return params


def _v2_response(result: Any) -> Response:
    """Payload format 2.0: a dict with statusCode is a proxy response; anything else is a 200 JSON body."""
    if not (isinstance(result, dict) and "statusCode" in result):
        text = result if isinstance(result, str) else json.dumps(result)
        return Response(200, [("content-type", "application/json")], text.encode())
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError("statusCode must be an integer HTTP status")
    raw_headers = result.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise ValueError("headers must be an object")
    headers = [(str(k), _claim_string(v)) for k, v in raw_headers.items()]
    cookies = result.get("cookies") or []
    if not isinstance(cookies, list):
        raise ValueError("cookies must be a list of strings")
    headers.extend(("set-cookie", str(c)) for c in cookies)
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise ValueError("body must be a string")
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError:
            raise ValueError("isBase64Encoded is true but body is not base64") from None
    else:
        data = body.encode("utf-8")
    return Response(status, headers, data)


# --------------------------------------------------------------------------------------------------
# HTTP server glue


class _HttpHandler(BaseHTTPRequestHandler):
    gateway: LocalGateway
    protocol_version = "HTTP/1.1"
    server_version = "agentdb-local-gateway"

    def _serve(self) -> None:
        started = time.perf_counter()
        parts = urlsplit(self.path)
        raw_path = parts.path or "/"
        try:
            body = self._read_body()
        except _BodyError as exc:
            response = _message(exc.status, exc.message)
            self.close_connection = True
        else:
            request = Request(
                method=self.command,
                raw_path=raw_path,
                raw_query=parts.query,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                protocol=self.request_version,
            )
            try:
                response = self.gateway.handle(request)
            except Exception:  # a gateway bug: never leak it to the client
                _log(f"gateway error on {self.command} {raw_path}:\n{traceback.format_exc().rstrip()}")
                response = _message(500, "Internal Server Error")
        # One line per request (before replying, so it precedes the client seeing the response); never
        # headers, query strings or bodies: they carry tokens and connection URIs.
        _log(f"{self.command} {raw_path} {response.status} {(time.perf_counter() - started) * 1000:.1f}ms")
        self._write(response)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("content-length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(400, "Bad Request") from None
        if length > MAX_REQUEST_BYTES:
            raise _BodyError(413, "Request Entity Too Large")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).strip()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise _BodyError(400, "Bad Request") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_REQUEST_BYTES:
                raise _BodyError(413, "Request Entity Too Large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)  # CRLF after each chunk

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log (it would print query strings); _serve logs instead."""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
