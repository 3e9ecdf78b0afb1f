"""The `neon` provider: one Neon project per tenant, through the Neon API v2.

Built from Neon's published OpenAPI spec (``shared/neon/openapi.yaml``). Two rules make retries safe:

* Project names are deterministic (``<prefix>global-<userId>`` / ``<prefix>agent-<workspaceId>``) and
  ``create`` searches before it creates, because ``POST /projects`` is not safe to retry blindly.
* Only requests whose effect does not depend on how often they run are retried after a timeout. 423,
  429 and 503 mean Neon did not act, so they are retried for every request (with jittered exponential
  backoff, honouring ``Retry-After``).

Consumption (``NeonProvider.consumption``): ``/consumption_history/v2/projects`` for up to 100 projects
per request (cursor pages followed), falling back to the legacy ``/consumption_history/projects`` and then
to each project's own counters where the plan lacks v2 (a 403, remembered per container). Every request
it sends first passes the shared ``ConsumptionRateLimiter``, so Neon does not answer 429 in normal
operation.

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
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from agentdb.config import Settings
from agentdb.errors import ConfigError, Conflict, NotFound, UpstreamError, UpstreamUnavailable
from agentdb.providers.base import (
    BYTES_PER_GB,
    HOURS_PER_MONTH,
    Consumption,
    ManagedDatabase,
    ProvisionedDatabase,
    Tenant,
    as_utc,
)

if TYPE_CHECKING:
    from agentdb.billing.ratelimit import ConsumptionRateLimiter

logger = logging.getLogger("agentdb.providers.neon")

JSON = dict[str, Any]

# ProjectCreateRequest.project.name.maxLength in the spec.
PROJECT_NAME_MAX_LENGTH = 256
# GET /projects `limit`: 1..400.
_LIST_PAGE_SIZE = 400
_MAX_PAGES = 1000
# /consumption_history[/v2]/projects: up to 100 project ids per request, `limit` 1..100.
CONSUMPTION_BATCH = 100

_RETRY_ALWAYS = frozenset({423, 429, 503})  # Neon did not act on the request: safe for any method
_OPS_OK = frozenset({"finished", "skipped"})
_OPS_FAILED = frozenset({"failed", "error", "cancelled"})
_QUOTA_CODES = frozenset({"PROJECTS_LIMIT_EXCEEDED"})
_URI_RE = re.compile(r"postgres(?:ql)?://\S+", re.IGNORECASE)


class NeonNotFound(NotFound):
    """Neon answered 404: the project (or operation, endpoint, database) does not exist (any more)."""

    code = "provider_not_found"


class NeonRefused(UpstreamError):
    """Neon answered a status the caller said it handles itself (``request(..., handled=...)``)."""

    def __init__(self, message: str, *, http_status: int, neon_code: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.neon_code = neon_code


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
        before_send: Callable[[], object] | None = None,
        handled: Collection[int] = (),
    ) -> JSON:
        """Send one API call, retrying what is safe to retry; return the JSON body.

        ``idempotent`` says whether running the call twice has the same effect as once (default: GET
        and DELETE). Only idempotent calls are retried after a read timeout or a 5xx other than 503.
        ``before_send`` runs before every attempt, retries included (a rate limiter's ``acquire``).
        A status in ``handled`` raises NeonRefused (with the status) instead of a mapped domain error.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "DELETE")
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        what = f"{method} {path}"
        attempt = 0
        while True:
            delay: float
            if before_send is not None:
                before_send()
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
                if status in handled:
                    raise self._refused(response, what)
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

    def _refused(self, response: httpx.Response, what: str) -> NeonRefused:
        neon_code, neon_message = "", ""
        with suppress(ValueError):
            body = response.json()
            if isinstance(body, dict):
                neon_code = str(body.get("code") or "")
                neon_message = _sanitize(str(body.get("message") or ""), self._api_key)
        detail = ": ".join(p for p in (neon_code, neon_message) if p)
        return NeonRefused(
            f"Neon API answered HTTP {response.status_code} to {what}" + (f" ({detail})" if detail else ""),
            http_status=response.status_code,
            neon_code=neon_code,
        )

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

    def get_project(self, project_id: str, *, before_send: Callable[[], object] | None = None) -> JSON:
        return dict(self.request("GET", f"/projects/{_seg(project_id)}", before_send=before_send)["project"])

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

    # Consumption --------------------------------------------------------------------------------
    def iter_consumption(
        self,
        path: str,
        project_ids: list[str],
        params: dict[str, Any],
        *,
        page_size: int = CONSUMPTION_BATCH,
        before_send: Callable[[], object] | None = None,
        handled: Collection[int] = (),
    ) -> Iterator[JSON]:
        """The per-project entries of a consumption history answer for ``project_ids`` (at most 100),
        following ``pagination.cursor``.

        Stops as soon as every requested project has been seen, or a page is empty, or Neon gives no
        (or the same) cursor: a batch whose projects all fit on one page costs one call.
        """
        if len(project_ids) > CONSUMPTION_BATCH:
            raise ValueError(f"at most {CONSUMPTION_BATCH} project ids per consumption request")
        wanted = set(project_ids)
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = self.request(
                "GET",
                path,
                params={
                    **params,
                    "project_ids": ",".join(project_ids),
                    "limit": max(1, min(page_size, CONSUMPTION_BATCH)),
                    "cursor": cursor,
                },
                before_send=before_send,
                handled=handled,
            )
            projects = [p for p in page.get("projects") or [] if isinstance(p, dict)]
            for entry in projects:
                pid = str(entry.get("project_id"))
                if pid in wanted and pid not in seen:
                    seen.add(pid)
                    yield entry
            next_cursor = (page.get("pagination") or {}).get("cursor")
            if not projects or seen >= wanted or not next_cursor or next_cursor == cursor:
                return
            cursor = str(next_cursor)
        raise UpstreamError(f"Neon consumption history for {path} did not end after {_MAX_PAGES} pages")

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


# Consumption ------------------------------------------------------------------------------------
V2_PATH = "/consumption_history/v2/projects"
LEGACY_PATH = "/consumption_history/projects"
V2_METRICS = (
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "public_network_transfer_bytes",
)
LEGACY_METRICS = (
    "active_time_seconds",
    "compute_time_seconds",
    "written_data_bytes",
    "synthetic_storage_size_bytes",
    "data_storage_bytes_hour",
)
GRANULARITIES = ("hourly", "daily", "monthly")
# How far back each granularity reaches (the spec: 168 hours, 60 days, a year), less one step of margin
# because `from` is rounded down to the granularity.
_REACH = {"hourly": timedelta(hours=167), "daily": timedelta(days=59), "monthly": timedelta(days=334)}
# Hourly timeframes for windows up to two days; longer windows go daily (a month of hourly timeframes
# for 100 projects would be ~72,000 entries per page).
_HOURLY_MAX_WINDOW = timedelta(hours=48)
_PLAN_LACKS_IT = 403  # "Not available for this account": the plan has no such endpoint
_RANGE_INVALID = 406  # "The from and to range is not valid for the selected granularity"


def choose_granularity(start: datetime, end: datetime, now: datetime) -> str:
    """The finest granularity Neon serves for ``[start, end]`` without an oversized answer.

    Hourly for windows up to 48 hours that begin within the last 167 hours; daily when the start is within
    the last 59 days; monthly beyond that (a year at most).
    """
    age = now - start
    if end - start <= _HOURLY_MAX_WINDOW and age <= _REACH["hourly"]:
        return "hourly"
    if age <= _REACH["daily"]:
        return "daily"
    return "monthly"


def _floor_to(value: datetime, granularity: str) -> datetime:
    value = value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity in ("daily", "monthly"):
        value = value.replace(hour=0)
    if granularity == "monthly":
        value = value.replace(day=1)
    return value


def _ceil_to(value: datetime, granularity: str) -> datetime:
    floor = _floor_to(value, granularity)
    if floor == value.astimezone(UTC):
        return floor
    if granularity == "hourly":
        return floor + timedelta(hours=1)
    if granularity == "daily":
        return floor + timedelta(days=1)
    return (floor.replace(day=28) + timedelta(days=4)).replace(day=1)


def align_window(start: datetime, end: datetime, granularity: str) -> tuple[datetime, datetime]:
    """``start`` rounded down and ``end`` rounded up to the granularity: the timeframes that hold the window.

    Neon rounds ``from`` and ``to`` down; rounding ``to`` up first keeps the current, partial timeframe.
    """
    return _floor_to(start, granularity), _ceil_to(end, granularity)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _timeframes(entry: JSON) -> Iterator[JSON]:
    for period in entry.get("periods") or []:
        if isinstance(period, dict):
            for frame in period.get("consumption") or []:
                if isinstance(frame, dict):
                    yield frame


def consumption_from_v2(entry: JSON, start: datetime, end: datetime) -> Consumption:
    """One project of a v2 answer: metric values summed over every period and timeframe.

    CU-hours = compute_unit_seconds / 3600; GB-months = (root + child branch byte-months) / BYTES_PER_GB.
    """
    totals: dict[str, float] = {}
    for frame in _timeframes(entry):
        for metric in frame.get("metrics") or []:
            if isinstance(metric, dict):
                name = str(metric.get("metric_name"))
                totals[name] = totals.get(name, 0.0) + _number(metric.get("value"))
    storage = totals.get("root_branch_bytes_month", 0.0) + totals.get("child_branch_bytes_month", 0.0)
    return Consumption(
        project_id=str(entry["project_id"]),
        compute_cu_hours=totals.get("compute_unit_seconds", 0.0) / 3600.0,
        storage_gb_months=storage / BYTES_PER_GB,
        transfer_bytes=int(totals.get("public_network_transfer_bytes", 0.0)),
        source="v2",
        period_start=start,
        period_end=end,
    )


def consumption_from_legacy(entry: JSON, start: datetime, end: datetime) -> Consumption:
    """One project of a legacy answer.

    CU-hours = compute_time_seconds (CPU-seconds; 1 CU = 1 vCPU) / 3600. GB-months = byte-hours
    / BYTES_PER_GB / HOURS_PER_MONTH, the byte-hours being ``data_storage_bytes_hour`` per timeframe, or,
    where Neon did not send it, ``synthetic_storage_size_bytes`` times the timeframe's hours.
    """
    cpu_seconds = written = byte_hours = 0.0
    for frame in _timeframes(entry):
        cpu_seconds += _number(frame.get("compute_time_seconds"))
        written += _number(frame.get("written_data_bytes"))
        if "data_storage_bytes_hour" in frame:
            byte_hours += _number(frame.get("data_storage_bytes_hour"))
        else:
            frame_start, frame_end = _parse_time(frame.get("timeframe_start")), _parse_time(frame.get("timeframe_end"))
            hours = (frame_end - frame_start).total_seconds() / 3600 if frame_start and frame_end else 0.0
            byte_hours += _number(frame.get("synthetic_storage_size_bytes")) * max(hours, 0.0)
    return Consumption(
        project_id=str(entry["project_id"]),
        compute_cu_hours=cpu_seconds / 3600.0,
        storage_gb_months=byte_hours / BYTES_PER_GB / HOURS_PER_MONTH,
        written_bytes=int(written),
        source="legacy",
        period_start=start,
        period_end=end,
    )


def consumption_from_project(project: JSON, now: datetime) -> Consumption:
    """A project's own counters: its current billing period so far (``consumption_period_start`` to now).

    compute_time_seconds (CPU-seconds) / 3600 = CU-hours; data_storage_bytes_hour / BYTES_PER_GB /
    HOURS_PER_MONTH = GB-months. Neon resets them when a billing period begins, whatever window was asked.
    """
    period_end = _parse_time(project.get("consumption_period_end"))
    return Consumption(
        project_id=str(project["id"]),
        compute_cu_hours=_number(project.get("compute_time_seconds", project.get("cpu_used_sec"))) / 3600.0,
        storage_gb_months=_number(project.get("data_storage_bytes_hour")) / BYTES_PER_GB / HOURS_PER_MONTH,
        written_bytes=int(_number(project.get("written_data_bytes"))),
        transfer_bytes=int(_number(project.get("data_transfer_bytes"))),
        source="project",
        period_start=_parse_time(project.get("consumption_period_start")),
        period_end=min(period_end, now) if period_end else now,
    )


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

    def __init__(
        self,
        settings: Settings,
        client: NeonClient | None = None,
        *,
        api_key: str | None = None,
        rate_limiter: ConsumptionRateLimiter | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
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
        if rate_limiter is None:
            # In-process only: a deployment passes one backed by the control plane (RateLimitStore), so
            # that every Lambda draws on the same budget.
            from agentdb.billing.ratelimit import ConsumptionRateLimiter

            rate_limiter = ConsumptionRateLimiter(None, settings.neon_consumption_requests_per_minute)
        self.rate_limiter = rate_limiter
        self._now = now or (lambda: datetime.now(UTC))
        self.consumption_page_size = CONSUMPTION_BATCH
        # What this account's plan lacks, learnt once per container (a 403), so that later syncs do not
        # spend rate-limited requests asking again. None = not known to be missing.
        self.v2_unavailable: str | None = None
        self.legacy_unavailable: str | None = None
        self._org_id: str | None = settings.neon_org_id or client.org_id
        self._org_looked_up = self._org_id is not None

    def close(self) -> None:
        self.client.close()

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
            ManagedDatabase(
                project_id=str(p["id"]),
                name=str(p["name"]),
                created_at=p.get("created_at"),
                tenant=self._tenant_of(str(p["name"])),
            )
            for p in sorted(self.client.iter_projects(search=self._prefix or None), key=_age_key)
            if str(p.get("name", "")).startswith(starts)
        ]

    def _tenant_of(self, name: str) -> Tenant | None:
        """The tenant a project name was made for; None when the name was shortened (the id is cut)."""
        for kind, head in (("global", f"{self._prefix}global-"), ("workspace", f"{self._prefix}agent-")):
            if name.startswith(head) and len(name) > len(head):
                tenant = Tenant("global" if kind == "global" else "workspace", name[len(head) :])
                return tenant if self.project_name(tenant) == name else None
        return None

    def resource_name(self, tenant: Tenant) -> str:
        return self.project_name(tenant)

    def delete_managed(self, item: ManagedDatabase) -> None:
        """Delete exactly the project ``item`` names (never others of the same name), after checking that
        it still carries one of our names."""
        try:
            project = self.client.get_project(item.project_id)
        except NeonNotFound:
            return
        name = str(project.get("name", ""))
        if name != item.name or not name.startswith((f"{self._prefix}global-", f"{self._prefix}agent-")):
            raise Conflict(f"refusing to delete Neon project {item.project_id}: it is named {name!r}")
        with suppress(NeonNotFound):
            self.client.delete_project(item.project_id)

    # Consumption ----------------------------------------------------------------------------------
    def consumption(self, project_ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        """Use of each project over ``[start, end]``, in batches of 100 project ids per request.

        In order of preference, per batch:

        1. ``GET /consumption_history/v2/projects`` (usage-based plans; needs the organization id, taken
           from NEON_ORG_ID or else from the first project's ``org_id``). A 406 (range invalid for the
           granularity) retries with the next coarser granularity.
        2. On a 403 (the plan lacks v2; remembered for the rest of the container) or when no granularity
           is accepted: the legacy ``GET /consumption_history/projects``.
        3. On its 403 (remembered too) or 406: each project's own counters (``GET /projects/{id}``),
           which cover the project's current billing period, not the window (see ``period_start``).

        Every request passes ``rate_limiter.acquire()`` first (retries included). A requested project
        absent from a consumption answer had no use in the window and gets zeros; one the project
        fallback finds deleted (404) is left out.
        """
        start, end = as_utc(start), as_utc(end)
        ids = list(dict.fromkeys(str(p) for p in project_ids))
        result: dict[str, Consumption] = {}
        for i in range(0, len(ids), CONSUMPTION_BATCH):
            result.update(self._consumption_batch(ids[i : i + CONSUMPTION_BATCH], start, end))
        return result

    def _consumption_batch(self, ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        if self.v2_unavailable is None:
            org_id = self._consumption_org_id(ids)
            if org_id is None and self._org_looked_up:
                self._fall_back("v2", "no Neon organization id (set NEON_ORG_ID): the v2 endpoint needs one")
            elif org_id is not None:
                try:
                    return self._consumption_v2(ids, start, end, org_id)
                except NeonRefused as exc:
                    if exc.http_status == _PLAN_LACKS_IT:
                        self._fall_back("v2", str(exc))
                    else:
                        logger.warning("neon consumption v2 refused every granularity (%s); trying legacy", exc)
        if self.legacy_unavailable is None:
            try:
                return self._consumption_legacy(ids, start, end)
            except NeonRefused as exc:
                if exc.http_status == _PLAN_LACKS_IT:
                    self._fall_back("legacy", str(exc))
                else:
                    logger.warning("neon legacy consumption refused every granularity (%s); using counters", exc)
        return self._consumption_projects(ids)

    def _fall_back(self, which: str, reason: str) -> None:
        logger.warning("neon consumption: %s endpoint unavailable for this account (%s); falling back", which, reason)
        if which == "v2":
            self.v2_unavailable = reason
        else:
            self.legacy_unavailable = reason

    def _consumption_org_id(self, ids: list[str]) -> str | None:
        """NEON_ORG_ID, else the ``org_id`` of the first project of the batch that exists (looked up once)."""
        if self._org_looked_up:
            return self._org_id
        for pid in ids:
            try:
                project = self.client.get_project(pid, before_send=self.rate_limiter.acquire)
            except NeonNotFound:
                continue
            self._org_id = str(project["org_id"]) if project.get("org_id") else None
            self._org_looked_up = True
            return self._org_id
        return None

    def _granularities(self, start: datetime, end: datetime) -> list[str]:
        first = choose_granularity(start, end, self._now())
        return list(GRANULARITIES[GRANULARITIES.index(first) :])

    def _consumption_v2(self, ids: list[str], start: datetime, end: datetime, org_id: str) -> dict[str, Consumption]:
        try:
            return self._consumption_history(V2_PATH, V2_METRICS, consumption_from_v2, "v2", ids, start, end, org_id)
        except NeonNotFound:
            raise UpstreamError(
                f"Neon: this API key's account is not a member of organization {org_id} (check NEON_ORG_ID)",
                code="provider_auth_failed",
            ) from None

    def _consumption_legacy(self, ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        return self._consumption_history(
            LEGACY_PATH, LEGACY_METRICS, consumption_from_legacy, "legacy", ids, start, end, self._org_id
        )

    def _consumption_history(
        self,
        path: str,
        metrics: Sequence[str],
        convert: Callable[[JSON, datetime, datetime], Consumption],
        source: str,
        ids: list[str],
        start: datetime,
        end: datetime,
        org_id: str | None,
    ) -> dict[str, Consumption]:
        """One consumption-history endpoint over the batch, from the finest granularity Neon accepts for
        the window: a 406 (range invalid for that granularity) moves to the next coarser one."""
        refused: NeonRefused | None = None
        for granularity in self._granularities(start, end):
            frm, to = align_window(start, end, granularity)
            params = {
                "from": _iso(frm),
                "to": _iso(to),
                "granularity": granularity,
                "org_id": org_id,
                "metrics": ",".join(metrics),
            }
            try:
                entries = list(
                    self.client.iter_consumption(
                        path,
                        ids,
                        params,
                        page_size=self.consumption_page_size,
                        before_send=self.rate_limiter.acquire,
                        handled=(_PLAN_LACKS_IT, _RANGE_INVALID),
                    )
                )
            except NeonRefused as exc:
                if exc.http_status != _RANGE_INVALID:
                    raise
                refused = exc
                continue
            found = {str(e["project_id"]): convert(e, frm, to) for e in entries}
            return {pid: found.get(pid) or _zero(pid, source, frm, to) for pid in ids}
        assert refused is not None
        raise refused

    def _consumption_projects(self, ids: list[str]) -> dict[str, Consumption]:
        """One ``GET /projects/{id}`` per project (rate-limited like the rest); deleted ones are left out."""
        result: dict[str, Consumption] = {}
        for pid in ids:
            try:
                project = self.client.get_project(pid, before_send=self.rate_limiter.acquire)
            except NeonNotFound:
                continue
            result[pid] = consumption_from_project(project, self._now())
        return result


def _zero(project_id: str, source: str, start: datetime, end: datetime) -> Consumption:
    return Consumption(project_id, 0.0, 0.0, source=source, period_start=start, period_end=end)
