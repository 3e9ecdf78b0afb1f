"""The `neon` provider: one Neon project per tenant, through the Neon API v2.

Built from Neon's published OpenAPI spec (``shared/neon/openapi.yaml``). Two rules make retries safe:

* Project names are deterministic (``<prefix>global-<userId>`` / ``<prefix>agent-<workspaceId>``) and
  ``create`` searches before it creates, because ``POST /projects`` is not safe to retry blindly.
* Only requests whose effect does not depend on how often they run are retried after a timeout. 423,
  429 and 503 mean Neon did not act, so they are retried for every request (with jittered exponential
  backoff, honouring ``Retry-After``).

Secrets: the API key lives only in the ``Authorization`` header; connection URIs are returned to the
caller and never logged or put into an exception message.

This module imports httpx at load time; nothing imports it unless ``DB_PROVIDER=neon``.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from agentdb.config import Settings
from agentdb.errors import ConfigError, Conflict, NotFound, UpstreamError, UpstreamUnavailable
from agentdb.providers.base import ManagedDatabase, ProvisionedDatabase, Tenant

logger = logging.getLogger("agentdb.providers.neon")

JSON = dict[str, Any]

# ProjectCreateRequest.project.name.maxLength in the spec.
PROJECT_NAME_MAX_LENGTH = 256
# GET /projects `limit`: 1..400.
_LIST_PAGE_SIZE = 400
_MAX_PAGES = 1000

_RETRY_ALWAYS = frozenset({423, 429, 503})  # Neon did not act on the request: safe for any method
_OPS_OK = frozenset({"finished", "skipped"})
_OPS_FAILED = frozenset({"failed", "error", "cancelled"})
_QUOTA_CODES = frozenset({"PROJECTS_LIMIT_EXCEEDED"})
_URI_RE = re.compile(r"postgres(?:ql)?://\S+", re.IGNORECASE)


class NeonNotFound(NotFound):
    """Neon answered 404: the project (or operation, endpoint, database) does not exist (any more)."""

    code = "provider_not_found"


def _sanitize(text: str, secret: str | None = None, limit: int = 300) -> str:
    """Neon's own error text, with anything that looks like a connection URI or the key removed."""
    cleaned = _URI_RE.sub("[redacted-uri]", text)
    if secret:
        cleaned = cleaned.replace(secret, "[redacted]")
    return cleaned[:limit]


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After``: delta-seconds or an HTTP date. None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class NeonClient:
    """A small, typed client for the parts of Neon API v2 that agentdb uses."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        org_id: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        retry_after_cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ConfigError("configuration: NEON_API_KEY must be set")
        self.base_url = base_url.rstrip("/")
        self.org_id = org_id or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.page_size = _LIST_PAGE_SIZE
        self._api_key = api_key
        self._sleep = sleep
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self._random = random.Random()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "agentdb",
            },
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never show the key
        return f"NeonClient(base_url={self.base_url!r}, org_id={self.org_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NeonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Transport ----------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: JSON | None = None,
        idempotent: bool | None = None,
    ) -> JSON:
        """Send one API call, retrying what is safe to retry; return the JSON body.

        ``idempotent`` says whether running the call twice has the same effect as once (default: GET
        and DELETE). Only idempotent calls are retried after a read timeout or a 5xx other than 503.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "DELETE")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        what = f"{method} {path}"
        attempt = 0
        while True:
            delay: float
            try:
                response = self._http.request(method, path, params=query or None, json=json)
            except httpx.TimeoutException as exc:
                # A connect timeout never reached Neon; a read timeout may have.
                retryable = idempotent or isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                if not retryable or attempt >= self.max_retries:
                    raise UpstreamUnavailable(
                        f"Neon API did not answer {what} within {self.timeout:g}s"
                        + (f" (after {attempt + 1} attempts)" if attempt else "")
                    ) from None
                delay = self._backoff(attempt)
                logger.warning("neon api timeout on %s; retrying in %.2fs (attempt %d)", what, delay, attempt + 1)
            except httpx.TransportError as exc:
                retryable = idempotent or isinstance(exc, httpx.ConnectError)
                if not retryable or attempt >= self.max_retries:
                    raise UpstreamUnavailable(
                        f"could not reach the Neon API for {what}: {type(exc).__name__}"
                    ) from None
                delay = self._backoff(attempt)
                logger.warning(
                    "neon api transport error on %s (%s); retrying in %.2fs", what, type(exc).__name__, delay
                )
            else:
                status = response.status_code
                if status < 400:
                    return self._json(response, what)
                retryable = status in _RETRY_ALWAYS or (idempotent and status >= 500)
                if not retryable or attempt >= self.max_retries:
                    raise self._error(response, what, exhausted=retryable, attempts=attempt + 1)
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                delay = min(retry_after, self._retry_after_cap) if retry_after is not None else self._backoff(attempt)
                logger.warning(
                    "neon api answered %d on %s; retrying in %.2fs (attempt %d)", status, what, delay, attempt + 1
                )
            self._sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        ceiling = min(self._backoff_cap, self._backoff_base * (2**attempt))
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    def _json(self, response: httpx.Response, what: str) -> JSON:
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise UpstreamError(f"Neon API returned a non-JSON answer to {what}") from None
        if not isinstance(body, dict):
            raise UpstreamError(f"Neon API returned an unexpected answer to {what}")
        return body

    def _error(self, response: httpx.Response, what: str, *, exhausted: bool, attempts: int) -> Exception:
        status = response.status_code
        neon_code, neon_message = "", ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            neon_code = str(body.get("code") or "")
            neon_message = _sanitize(str(body.get("message") or ""), self._api_key)
        detail = ": ".join(p for p in (neon_code, neon_message) if p)
        suffix = f" ({detail})" if detail else ""
        if neon_code in _QUOTA_CODES:
            return UpstreamUnavailable(
                "Neon refused to create another project: the account's project limit is reached. "
                "Raise the Neon plan's project limit or delete unused projects" + suffix,
                code="provider_quota_exceeded",
            )
        if exhausted:
            return UpstreamUnavailable(f"Neon API still answered HTTP {status} to {what} after {attempts} attempts")
        if status == 401:
            return UpstreamError(
                "Neon rejected the API key (HTTP 401): check NEON_API_KEY", code="provider_auth_failed"
            )
        if status == 403:
            return UpstreamError(
                f"Neon API key is not allowed to do {what} (HTTP 403){suffix}", code="provider_auth_failed"
            )
        if status == 404:
            return NeonNotFound(f"Neon: not found ({what})")
        return UpstreamError(f"Neon API error on {what}: HTTP {status}{suffix}")

    # Projects -----------------------------------------------------------------------------------
    def iter_projects(
        self, *, search: str | None = None, org_id: str | None = None, limit: int | None = None
    ) -> Iterator[JSON]:
        """Every project matching ``search`` (partial name or id), following the pagination cursor."""
        limit = limit or self.page_size
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self.request(
                "GET",
                "/projects",
                params={"search": search, "org_id": org_id or self.org_id, "limit": limit, "cursor": cursor},
            )
            projects = page.get("projects") or []
            fresh = [p for p in projects if p.get("id") not in seen]
            for project in fresh:
                seen.add(project["id"])
                yield project
            next_cursor = (page.get("pagination") or {}).get("cursor")
            if len(projects) < limit or not fresh or not next_cursor or next_cursor == cursor:
                return
            cursor = next_cursor

    def list_projects(
        self, *, search: str | None = None, org_id: str | None = None, limit: int | None = None
    ) -> list[JSON]:
        return list(self.iter_projects(search=search, org_id=org_id, limit=limit))

    def create_project(
        self,
        name: str,
        *,
        region_id: str | None = None,
        pg_version: int | None = None,
        org_id: str | None = None,
        database_name: str | None = None,
        role_name: str | None = None,
        store_passwords: bool = True,
    ) -> JSON:
        """POST /projects (not retried after a timeout). Returns the CreatedProject body."""
        project: JSON = {"name": name, "store_passwords": store_passwords}
        if region_id:
            project["region_id"] = region_id
        if pg_version is not None:
            project["pg_version"] = pg_version
        if org_id or self.org_id:
            project["org_id"] = org_id or self.org_id
        branch: JSON = {}
        if database_name:
            branch["database_name"] = database_name
        if role_name:
            branch["role_name"] = role_name
        if branch:
            project["branch"] = branch
        return self.request("POST", "/projects", json={"project": project}, idempotent=False)

    def get_project(self, project_id: str) -> JSON:
        return dict(self.request("GET", f"/projects/{_seg(project_id)}")["project"])

    def delete_project(self, project_id: str) -> JSON:
        """DELETE /projects/{id}. Raises NeonNotFound when it is already gone."""
        return self.request("DELETE", f"/projects/{_seg(project_id)}")

    def get_connection_uri(
        self,
        project_id: str,
        *,
        database_name: str,
        role_name: str,
        branch_id: str | None = None,
        endpoint_id: str | None = None,
        pooled: bool = True,
    ) -> str:
        """A connection URI (a secret). ``pooled`` gives the PgBouncer ``-pooler`` host."""
        body = self.request(
            "GET",
            f"/projects/{_seg(project_id)}/connection_uri",
            params={
                "branch_id": branch_id,
                "endpoint_id": endpoint_id,
                "database_name": database_name,
                "role_name": role_name,
                "pooled": pooled,
            },
        )
        uri = body.get("uri")
        if not isinstance(uri, str) or not uri:
            raise UpstreamError("Neon API returned no connection URI")
        return uri

    # Operations ---------------------------------------------------------------------------------
    def list_operations(self, project_id: str, *, limit: int = 100) -> list[JSON]:
        """The first page of the project's operations (Neon lists the newest first)."""
        body = self.request("GET", f"/projects/{_seg(project_id)}/operations", params={"limit": limit})
        return list(body.get("operations") or [])

    def get_operation(self, project_id: str, operation_id: str) -> JSON:
        body = self.request("GET", f"/projects/{_seg(project_id)}/operations/{_seg(operation_id)}")
        return dict(body["operation"])

    def wait_for_operations(self, project_id: str, operations: list[JSON], *, timeout: float = 60.0) -> None:
        """Poll until every operation is finished (or skipped).

        A failed, errored or cancelled operation raises UpstreamError; running out of ``timeout``
        raises UpstreamUnavailable (retrying later may find them done).
        """
        pending: dict[str, JSON] = {}
        for op in operations:
            self._check_operation(op)
            if op.get("status") not in _OPS_OK:
                pending[str(op["id"])] = op
        started = self._clock()
        slept = 0.0
        delay = 0.2
        while pending:
            for op_id in list(pending):
                op = self.get_operation(project_id, op_id)
                self._check_operation(op)
                if op.get("status") in _OPS_OK:
                    del pending[op_id]
            if not pending:
                return
            if max(self._clock() - started, slept) >= timeout:
                actions = ", ".join(sorted({str(op.get("action")) for op in pending.values()}))
                raise UpstreamUnavailable(
                    f"Neon operations ({actions}) on project {project_id} did not finish within {timeout:g}s"
                )
            self._sleep(delay)
            slept += delay
            delay = min(delay * 1.5, 2.0)

    def _check_operation(self, op: JSON) -> None:
        status = op.get("status")
        if status in _OPS_FAILED:
            error = _sanitize(str(op.get("error") or ""), self._api_key, limit=200)
            raise UpstreamError(
                f"Neon operation {op.get('action')} on project {op.get('project_id')} {status}"
                + (f": {error}" if error else "")
            )

    # Endpoints ----------------------------------------------------------------------------------
    def list_endpoints(self, project_id: str) -> list[JSON]:
        body = self.request("GET", f"/projects/{_seg(project_id)}/endpoints")
        return list(body.get("endpoints") or [])

    def update_endpoint(self, project_id: str, endpoint_id: str, fields: JSON) -> JSON:
        """PATCH an endpoint (EndpointUpdateRequest). Absolute values, so safe to repeat."""
        return self.request(
            "PATCH",
            f"/projects/{_seg(project_id)}/endpoints/{_seg(endpoint_id)}",
            json={"endpoint": fields},
            idempotent=True,
        )

    def suspend_endpoint(self, project_id: str, endpoint_id: str) -> JSON:
        return self.request(
            "POST", f"/projects/{_seg(project_id)}/endpoints/{_seg(endpoint_id)}/suspend", idempotent=True
        )

    def start_endpoint(self, project_id: str, endpoint_id: str) -> JSON:
        return self.request(
            "POST", f"/projects/{_seg(project_id)}/endpoints/{_seg(endpoint_id)}/start", idempotent=True
        )


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def project_name(tenant: Tenant, prefix: str) -> str:
    """``<prefix>global-<id>`` / ``<prefix>agent-<id>``; over the spec's maxLength, truncated plus a hash."""
    name = tenant.resource_name(prefix)
    if len(name) <= PROJECT_NAME_MAX_LENGTH:
        return name
    digest = hashlib.sha256(tenant.id.encode()).hexdigest()[:12]
    return f"{name[: PROJECT_NAME_MAX_LENGTH - len(digest) - 1]}-{digest}"


def _age_key(project: JSON) -> tuple[str, str]:
    return (str(project.get("created_at") or ""), str(project.get("id") or ""))


_name_locks: dict[str, threading.Lock] = {}
_name_locks_guard = threading.Lock()


@contextmanager
def _name_lock(name: str) -> Iterator[None]:
    """Serialise creates of one project name within this process (threads of one container)."""
    with _name_locks_guard:
        lock = _name_locks.setdefault(name, threading.Lock())
    with lock:
        yield


class NeonProvider:
    """DatabaseProvider on Neon: one project per tenant, found again by its deterministic name."""

    name = "neon"

    def __init__(self, settings: Settings, client: NeonClient | None = None, *, api_key: str | None = None) -> None:
        self._settings = settings
        self._prefix = settings.tenant_name_prefix
        self._wait = settings.neon_operation_wait_seconds
        if client is None:
            client = NeonClient(
                settings.neon_api_url,
                api_key or settings.require("neon_api_key"),
                org_id=settings.neon_org_id,
                timeout=settings.neon_timeout_seconds,
                max_retries=settings.neon_max_retries,
            )
        self.client = client

    # Names --------------------------------------------------------------------------------------
    def project_name(self, tenant: Tenant) -> str:
        return project_name(tenant, self._prefix)

    def database_name(self, tenant: Tenant) -> str:
        return tenant.safe_identifier(self._prefix)

    def role_name(self, tenant: Tenant) -> str:
        return tenant.safe_identifier(self._prefix)

    def _find(self, name: str) -> list[JSON]:
        """Projects named exactly ``name``, oldest first (search is a partial match)."""
        matches = [p for p in self.client.iter_projects(search=name) if p.get("name") == name]
        return sorted(matches, key=_age_key)

    # Interface ----------------------------------------------------------------------------------
    def create(self, tenant: Tenant) -> ProvisionedDatabase:
        name = self.project_name(tenant)
        database, role = self.database_name(tenant), self.role_name(tenant)
        branch_id: str | None = None
        with _name_lock(name):
            existing = self._find(name)
            if existing:
                project = existing[0]
                self._wait_pending(project["id"])
            else:
                try:
                    created = self.client.create_project(
                        name,
                        region_id=self._settings.neon_region_id,
                        pg_version=self._settings.neon_pg_version,
                        org_id=self._settings.neon_org_id,
                        database_name=database,
                        role_name=role,
                    )
                except UpstreamUnavailable as exc:
                    if exc.code == "provider_quota_exceeded":
                        raise
                    # No answer does not mean no project: the POST may have landed.
                    found = self._find(name)
                    if not found:
                        raise
                    project = found[0]
                    self._wait_pending(project["id"])
                else:
                    project = created["project"]
                    branch_id = (created.get("branch") or {}).get("id")
                    self.client.wait_for_operations(project["id"], created.get("operations") or [], timeout=self._wait)
                    winner = self._settle_duplicates(name, project)
                    if winner["id"] != project["id"]:
                        project, branch_id = winner, None
        project_id = str(project["id"])
        if branch_id is None:
            branch_id = self._default_branch_id(project_id)
        try:
            uri = self.client.get_connection_uri(
                project_id, database_name=database, role_name=role, branch_id=branch_id, pooled=True
            )
        except NeonNotFound:
            raise Conflict(
                f"Neon project {project_id} is named {name!r} but has no database {database!r} for role {role!r}"
            ) from None
        return ProvisionedDatabase(
            project_id=project_id,
            branch_id=branch_id,
            database_name=database,
            role_name=role,
            connection_uri=uri,
        )

    def _settle_duplicates(self, name: str, mine: JSON) -> JSON:
        """Another process may have created the same name concurrently: the oldest project wins.

        Every racer reaches the same verdict, so exactly one project survives; a loser deletes the
        project it made itself and adopts the winner.
        """
        matches = {p["id"]: p for p in self._find(name)}
        matches.setdefault(mine["id"], mine)
        winner = min(matches.values(), key=_age_key)
        if winner["id"] == mine["id"]:
            return mine
        logger.warning("neon project name %s created twice concurrently; keeping %s", name, winner["id"])
        with suppress(NeonNotFound):
            self.client.delete_project(mine["id"])
        self._wait_pending(winner["id"])
        return winner

    def _wait_pending(self, project_id: str) -> None:
        """Wait for the project's unfinished operations (an old failure in its history is not ours)."""
        ops = self.client.list_operations(project_id)
        pending = [op for op in ops if op.get("status") not in _OPS_OK | _OPS_FAILED]
        if pending:
            self.client.wait_for_operations(project_id, pending, timeout=self._wait)

    def _default_branch_id(self, project_id: str) -> str | None:
        endpoints = self.client.list_endpoints(project_id)
        for endpoint in endpoints:
            if endpoint.get("type") == "read_write":
                return str(endpoint["branch_id"])
        return str(endpoints[0]["branch_id"]) if endpoints else None

    def delete(self, tenant: Tenant, project_id: str | None = None) -> None:
        name = self.project_name(tenant)
        doomed: dict[str, JSON] = {}
        if project_id:
            try:
                project = self.client.get_project(project_id)
            except NeonNotFound:
                project = None
            if project is not None:
                if project.get("name") != name:
                    raise Conflict(
                        f"refusing to delete Neon project {project_id}: it is named {project.get('name')!r}, "
                        f"not {name!r}"
                    )
                doomed[project_id] = project
        for project in self._find(name):
            doomed.setdefault(project["id"], project)
        for pid in doomed:
            try:
                self.client.delete_project(pid)
            except NeonNotFound:
                continue  # already gone: done

    def connection_uri(self, tenant: Tenant, project_id: str) -> str:
        return self.client.get_connection_uri(
            project_id,
            database_name=self.database_name(tenant),
            role_name=self.role_name(tenant),
            pooled=True,
        )

    def pause(self, tenant: Tenant, project_id: str) -> None:
        """Disable every compute endpoint (no connection can wake it) and suspend it.

        Never done with a quota of 0: in Neon 0 means *unlimited*.
        """
        for endpoint in self.client.list_endpoints(project_id):
            if not endpoint.get("disabled"):
                result = self.client.update_endpoint(project_id, endpoint["id"], {"disabled": True})
                self.client.wait_for_operations(project_id, result.get("operations") or [], timeout=self._wait)
        for endpoint in self.client.list_endpoints(project_id):
            if endpoint.get("current_state") != "idle":
                result = self.client.suspend_endpoint(project_id, endpoint["id"])
                self.client.wait_for_operations(project_id, result.get("operations") or [], timeout=self._wait)

    def resume(self, tenant: Tenant, project_id: str) -> None:
        """Undo pause(): enable every disabled endpoint again and start it.

        An enabled endpoint that is merely idle is left alone: Neon starts it on the next connection.
        """
        for endpoint in self.client.list_endpoints(project_id):
            if not endpoint.get("disabled"):
                continue
            result = self.client.update_endpoint(project_id, endpoint["id"], {"disabled": False})
            self.client.wait_for_operations(project_id, result.get("operations") or [], timeout=self._wait)
            if (result.get("endpoint") or {}).get("current_state") != "active":
                result = self.client.start_endpoint(project_id, endpoint["id"])
                self.client.wait_for_operations(project_id, result.get("operations") or [], timeout=self._wait)

    def list_managed(self) -> list[ManagedDatabase]:
        """Every project named like one of ours: ``<prefix>global-…`` or ``<prefix>agent-…``.

        Matching the kind as well as the prefix keeps another deployment whose prefix merely starts
        with ours (``agentdb-stg-``) out of our reconciliation.
        """
        starts = (f"{self._prefix}global-", f"{self._prefix}agent-")
        return [
            ManagedDatabase(project_id=str(p["id"]), name=str(p["name"]), created_at=p.get("created_at"))
            for p in sorted(self.client.iter_projects(search=self._prefix or None), key=_age_key)
            if str(p.get("name", "")).startswith(starts)
        ]
