"""NeonProvider and NeonClient against the Neon double over real HTTP (no real Neon).

Every test ends with the double reporting no spec violation, neither in our requests nor in its answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pg8000.native
import pytest

from agentdb.config import Settings
from agentdb.errors import AgentDBError, ConfigError, Conflict, UpstreamError, UpstreamUnavailable
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import Tenant
from agentdb.providers.neon import PROJECT_NAME_MAX_LENGTH, NeonClient, NeonProvider, project_name
from local.neon_double import NeonDouble, Scripted

KEY = "neon-key-Zq81xv0d3"
PREFIX = "agentdb-"
USER = Tenant("global", "user-1")
WORKSPACE = Tenant("workspace", "ws-1")


class Sleeps(list[float]):
    """Records the delays the client asked for, instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def double() -> Iterator[NeonDouble]:
    d = NeonDouble(KEY)
    d.start()
    yield d
    d.stop()
    assert d.violations == []
    assert d.response_violations == []


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_provider(double: NeonDouble, sleeps: Sleeps) -> Iterator[Callable[..., NeonProvider]]:
    clients: list[NeonClient] = []

    def make(env: dict[str, str] | None = None, *, key: str = KEY, **client_args: Any) -> NeonProvider:
        settings = Settings.model_validate(
            {"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url, "NEON_API_KEY": key, **(env or {})}
        )
        client_args.setdefault("timeout", 2.0)
        client = NeonClient(
            settings.neon_api_url,
            key,
            org_id=settings.neon_org_id,
            max_retries=client_args.pop("max_retries", settings.neon_max_retries),
            sleep=sleeps,
            **client_args,
        )
        clients.append(client)
        return NeonProvider(settings, client)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def provider(make_provider: Callable[..., NeonProvider]) -> NeonProvider:
    return make_provider()


def _pid(double: NeonDouble, name: str) -> str:
    (project,) = double.projects_named(name)
    return str(project["id"])


# Create ------------------------------------------------------------------------------------------
def test_create_waits_for_operations_and_returns_the_pooled_uri(double: NeonDouble, provider: NeonProvider) -> None:
    double.operation_polls = 3
    db = provider.create(USER)

    assert double.pending_operations(db.project_id) == []
    assert [e["current_state"] for e in double.endpoints(db.project_id)] == ["active"]
    project = double.projects[db.project_id]
    assert project.data["name"] == "agentdb-global-user-1"
    assert db.branch_id == project.branch["id"]
    assert db.database_name in project.databases and db.role_name in project.roles
    host = urlsplit(db.connection_uri).hostname or ""
    assert "-pooler." in host
    assert project.passwords[db.role_name] in db.connection_uri
    assert all(r.query["pooled"] == ["true"] for r in double.requests_for("GET /projects/{project_id}/connection_uri"))
    assert "connection_uri" not in repr(db) and project.passwords[db.role_name] not in repr(db)

    (post,) = double.requests_for("POST /projects")
    assert post.body["project"]["region_id"] == "aws-us-east-1"
    assert post.body["project"]["pg_version"] == 17
    assert "org_id" not in post.body["project"]
    assert post.body["project"]["branch"] == {"database_name": db.database_name, "role_name": db.role_name}


def test_second_create_reuses_the_project(double: NeonDouble, provider: NeonProvider) -> None:
    first = provider.create(WORKSPACE)
    second = provider.create(WORKSPACE)
    assert second.project_id == first.project_id
    assert second.branch_id == first.branch_id
    assert second.connection_uri == first.connection_uri
    assert double.calls("POST /projects") == 1
    assert len(double.projects_named("agentdb-agent-ws-1")) == 1
    # search-before-create is by exact name, not the partial match Neon's search does
    provider.create(Tenant("workspace", "ws-10"))
    provider.create(Tenant("workspace", "ws"))
    assert double.calls("POST /projects") == 3


def test_create_adopts_an_existing_project_and_waits_for_its_operations(
    double: NeonDouble, provider: NeonProvider
) -> None:
    double.operation_polls = 4
    names = {"database_name": provider.database_name(USER), "role_name": provider.role_name(USER)}
    pid = double.seed_project("agentdb-global-user-1", **names)["project"]["id"]
    assert len(double.pending_operations(pid)) == 2
    db = provider.create(USER)
    assert db.project_id == pid
    assert db.branch_id == double.projects[pid].branch["id"]
    assert double.pending_operations(pid) == []
    assert double.calls("POST /projects") == 0


def test_an_old_failed_operation_does_not_block_reuse(double: NeonDouble, provider: NeonProvider) -> None:
    double.operation_polls = 0
    double.operation_final_status = "failed"
    names = {"database_name": provider.database_name(USER), "role_name": provider.role_name(USER)}
    pid = double.seed_project("agentdb-global-user-1", **names)["project"]["id"]
    double.operation_final_status = "finished"
    assert provider.create(USER).project_id == pid


def test_a_same_named_project_without_our_database_is_a_conflict(double: NeonDouble, provider: NeonProvider) -> None:
    double.seed_project("agentdb-global-user-1")  # made by something else: database neondb
    with pytest.raises(Conflict, match="has no database"):
        provider.create(USER)
    assert double.calls("POST /projects") == 0


def test_concurrent_creates_make_one_project(double: NeonDouble, make_provider: Callable[..., NeonProvider]) -> None:
    double.operation_polls = 2
    providers = [make_provider() for _ in range(6)]
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(providers))

    def run(p: NeonProvider) -> None:
        barrier.wait()
        try:
            results.append(p.create(USER).project_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(set(results)) == 1 and len(results) == len(providers)
    assert double.calls("POST /projects") == 1
    assert len(double.projects_named("agentdb-global-user-1")) == 1


def test_a_racing_create_elsewhere_is_settled_to_the_oldest(double: NeonDouble, provider: NeonProvider) -> None:
    """Another process creates the same name between our search and our POST: one project survives."""
    name = "agentdb-global-user-1"
    names = {"database_name": provider.database_name(USER), "role_name": provider.role_name(USER)}
    rival: list[str] = []
    double.before(
        "POST /projects",
        lambda: rival.append(double.seed_project(name, created_at="2020-01-01T00:00:00Z", **names)["project"]["id"]),
    )
    db = provider.create(USER)
    assert db.project_id == rival[0]
    assert [p["id"] for p in double.projects_named(name)] == rival
    assert double.calls("DELETE /projects/{project_id}") == 1
    assert provider.create(USER).project_id == rival[0]


def test_lost_create_response_is_not_blindly_retried(
    double: NeonDouble, make_provider: Callable[..., NeonProvider]
) -> None:
    provider = make_provider(timeout=0.3)
    double.hang("POST /projects", 0.8)
    with pytest.raises(UpstreamUnavailable, match="did not answer POST /projects"):
        provider.create(USER)
    deadline = time.monotonic() + 5
    while not double.projects_named("agentdb-global-user-1") and time.monotonic() < deadline:
        time.sleep(0.05)
    again = provider.create(USER)  # the POST did land: the next attempt finds it
    assert again.project_id == _pid(double, "agentdb-global-user-1")
    assert double.calls("POST /projects") == 1


def test_org_id_is_sent_when_configured(double: NeonDouble, make_provider: Callable[..., NeonProvider]) -> None:
    provider = make_provider({"NEON_ORG_ID": "org-test-123"})
    first = provider.create(USER)
    second = provider.create(USER)  # the double filters listings by org_id: reuse proves the search sent it
    assert first.project_id == second.project_id
    assert double.projects[first.project_id].data["org_id"] == "org-test-123"
    (post,) = double.requests_for("POST /projects")
    assert post.body["project"]["org_id"] == "org-test-123"
    assert all(r.query.get("org_id") == ["org-test-123"] for r in double.requests_for("GET /projects"))


def test_long_tenant_ids_get_a_bounded_unique_name(double: NeonDouble, provider: NeonProvider) -> None:
    a, b = Tenant("global", "u" * 300 + "a"), Tenant("global", "u" * 300 + "b")
    assert len(project_name(a, PREFIX)) == PROJECT_NAME_MAX_LENGTH
    assert project_name(a, PREFIX) != project_name(b, PREFIX)
    assert project_name(a, PREFIX).startswith("agentdb-global-uuu")
    assert project_name(USER, PREFIX) == "agentdb-global-user-1"
    assert provider.create(a).project_id != provider.create(b).project_id


# Retries -----------------------------------------------------------------------------------------
def test_423_429_503_are_retried_honouring_retry_after(
    double: NeonDouble, provider: NeonProvider, sleeps: Sleeps
) -> None:
    double.script("POST /projects", [423, (429, {"Retry-After": "3"}), 503])
    db = provider.create(USER)
    assert double.calls("POST /projects") == 4
    assert len(double.projects) == 1 and db.project_id in double.projects
    assert sleeps[:3][1] == 3.0  # Retry-After honoured exactly
    assert 0 < sleeps[0] <= 0.5 and 0 < sleeps[2] <= 2.0  # jittered exponential backoff: base 0.5 s


def test_backoff_grows_and_retry_after_is_capped(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], sleeps: Sleeps
) -> None:
    provider = make_provider(max_retries=6, retry_after_cap=5.0)
    double.script("GET /projects", [503, 503, 503, 503, (429, {"Retry-After": "3600"})])
    assert provider.list_managed() == []
    assert sleeps[4] == 5.0
    backoff = sleeps[:4]
    assert all(0.5 * 0.5 * 2**i <= d <= 0.5 * 2**i for i, d in enumerate(backoff)), backoff


def test_retries_exhausted_is_upstream_unavailable(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], sleeps: Sleeps
) -> None:
    provider = make_provider(max_retries=2)
    double.script("GET /projects", [503, 429, 423])
    with pytest.raises(UpstreamUnavailable) as caught:
        provider.create(USER)
    assert caught.value.status == 503
    assert "after 3 attempts" in caught.value.message
    assert double.calls("GET /projects") == 3 and len(sleeps) == 2
    assert double.calls("POST /projects") == 0


def test_5xx_retried_on_get_but_not_on_post(double: NeonDouble, provider: NeonProvider) -> None:
    double.script("GET /projects", [500, 502])
    double.script("POST /projects", [500])
    with pytest.raises(UpstreamError) as caught:
        provider.create(USER)
    assert not isinstance(caught.value, UpstreamUnavailable)
    assert "HTTP 500" in caught.value.message and "INTERNAL_ERROR" in caught.value.message
    assert double.calls("GET /projects") == 3
    assert double.calls("POST /projects") == 1


def test_timeouts_are_retried_for_reads_then_give_up(
    double: NeonDouble, make_provider: Callable[..., NeonProvider]
) -> None:
    provider = make_provider(timeout=0.2, max_retries=1)
    double.hang("GET /projects", 1.0, times=1)
    assert provider.list_managed() == []  # one hang, then a retry that succeeds
    double.hang("GET /projects", 1.0, times=2)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match=r"did not answer GET /projects within 0\.2s"):
        provider.list_managed()
    assert time.monotonic() - started < 0.9


def test_project_limit_is_quota_exceeded(double: NeonDouble, provider: NeonProvider, sleeps: Sleeps) -> None:
    double.project_limit = 1
    provider.create(USER)
    with pytest.raises(UpstreamUnavailable) as caught:
        provider.create(WORKSPACE)
    assert caught.value.code == "provider_quota_exceeded"
    assert "project limit" in caught.value.message
    assert double.calls("POST /projects") == 2 and sleeps == []


def test_bad_api_key(double: NeonDouble, make_provider: Callable[..., NeonProvider], sleeps: Sleeps) -> None:
    provider = make_provider(key="not-the-key")
    with pytest.raises(UpstreamError, match="Neon rejected the API key") as caught:
        provider.create(USER)
    assert caught.value.code == "provider_auth_failed"
    assert "not-the-key" not in str(caught.value)
    assert len(double.requests) == 1 and sleeps == []


def test_no_key_uri_or_password_in_errors_or_logs(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_provider(max_retries=1)
    db = provider.create(USER)
    password = parse_pg_url(db.connection_uri).password or ""
    assert len(password) > 8
    leaky = {"code": "BAD", "message": f"cannot use {db.connection_uri} with key {KEY}"}

    def uri_unavailable() -> None:
        double.script("GET /projects/{project_id}/connection_uri", [503, 503])
        provider.connection_uri(USER, db.project_id)

    def leaky_error() -> None:
        double.script("GET /projects/{project_id}/endpoints", [Scripted(status=400, body=leaky)])
        provider.pause(USER, db.project_id)

    def quota() -> None:
        double.project_limit = 1
        double.script("GET /projects", [(429, {"Retry-After": "0"})])
        provider.create(WORKSPACE)

    messages: list[str] = []
    for action in (
        uri_unavailable,
        leaky_error,
        quota,
        lambda: make_provider(key=KEY + "x").create(USER),
        lambda: provider.connection_uri(USER, "no-such-project"),
    ):
        with pytest.raises(AgentDBError) as caught:
            action()
        messages += [str(caught.value), repr(caught.value), caught.value.message]
    joined = "\n".join(messages)
    assert "[redacted-uri]" in joined and "[redacted]" in joined
    haystack = joined + "\n" + caplog.text + "\n" + repr(provider.client)
    for secret in (KEY, password, db.connection_uri, "postgresql://"):
        assert secret not in haystack
    assert "retrying" in caplog.text  # the retries were logged, just without secrets


# Operations --------------------------------------------------------------------------------------
def test_failed_operation_is_upstream_error(double: NeonDouble, provider: NeonProvider) -> None:
    double.operation_final_status = "failed"
    with pytest.raises(UpstreamError, match=r"start_compute|create_timeline") as caught:
        provider.create(USER)
    assert "failed" in caught.value.message


def test_operations_that_never_finish_exhaust_the_wait_budget(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], sleeps: Sleeps
) -> None:
    double.operation_polls = 10_000
    provider = make_provider({"NEON_OPERATION_WAIT_SECONDS": "2"})
    with pytest.raises(UpstreamUnavailable, match="did not finish within 2s"):
        provider.create(USER)
    assert 2.0 <= sum(sleeps) < 5.0
    assert double.calls("POST /projects") == 1


# Delete ------------------------------------------------------------------------------------------
def test_delete_twice_and_without_a_hint(double: NeonDouble, provider: NeonProvider) -> None:
    db = provider.create(USER)
    provider.delete(USER, db.project_id)
    assert db.project_id not in double.projects
    provider.delete(USER, db.project_id)  # already gone: fine
    provider.delete(USER)
    assert double.calls("DELETE /projects/{project_id}") == 1
    other = provider.create(WORKSPACE)
    provider.delete(WORKSPACE)  # found by name
    assert other.project_id not in double.projects
    double.script("DELETE /projects/{project_id}", [404])  # gone between our search and our DELETE
    third = provider.create(USER)
    provider.delete(USER, third.project_id)


def test_delete_refuses_a_project_with_another_name(double: NeonDouble, provider: NeonProvider) -> None:
    foreign = double.seed_project("someone-elses-project")["project"]["id"]
    with pytest.raises(Conflict, match="refusing to delete"):
        provider.delete(USER, foreign)
    assert foreign in double.projects
    assert double.calls("DELETE /projects/{project_id}") == 0


# Connection URI, pause, resume --------------------------------------------------------------------
def test_connection_uri_is_pooled(double: NeonDouble, provider: NeonProvider) -> None:
    db = provider.create(WORKSPACE)
    uri = provider.connection_uri(WORKSPACE, db.project_id)
    assert "-pooler." in (urlsplit(uri).hostname or "")
    last = double.requests_for("GET /projects/{project_id}/connection_uri")[-1]
    assert last.query["pooled"] == ["true"]
    assert last.query["database_name"] == [db.database_name] and last.query["role_name"] == [db.role_name]


def test_pause_and_resume_are_idempotent(double: NeonDouble, provider: NeonProvider) -> None:
    double.operation_polls = 2
    db = provider.create(USER)
    mutations = (
        "PATCH /projects/{project_id}/endpoints/{endpoint_id}",
        "POST /projects/{project_id}/endpoints/{endpoint_id}/suspend",
        "POST /projects/{project_id}/endpoints/{endpoint_id}/start",
    )

    def counts() -> list[int]:
        return [double.calls(route) for route in mutations]

    provider.pause(USER, db.project_id)
    assert [(e["disabled"], e["current_state"]) for e in double.endpoints(db.project_id)] == [(True, "idle")]
    (patch,) = double.requests_for(mutations[0])
    assert patch.body == {"endpoint": {"disabled": True}}  # never a quota (0 would mean unlimited)
    after_pause = counts()
    provider.pause(USER, db.project_id)
    assert counts() == after_pause

    provider.resume(USER, db.project_id)
    assert [(e["disabled"], e["current_state"]) for e in double.endpoints(db.project_id)] == [(False, "active")]
    after_resume = counts()
    assert after_resume[2] == 1
    provider.resume(USER, db.project_id)
    assert counts() == after_resume
    assert double.calls("PATCH /projects/{project_id}") == 0
    assert double.pending_operations(db.project_id) == []


def test_pause_suspends_an_endpoint_left_running(double: NeonDouble, provider: NeonProvider) -> None:
    db = provider.create(USER)
    (endpoint,) = double.projects[db.project_id].endpoints.values()
    endpoint["disabled"] = True  # disabled, but its compute still up (e.g. an earlier pause died midway)
    provider.pause(USER, db.project_id)
    assert double.calls("PATCH /projects/{project_id}/endpoints/{endpoint_id}") == 0
    assert double.calls("POST /projects/{project_id}/endpoints/{endpoint_id}/suspend") == 1
    assert endpoint["current_state"] == "idle"


def test_pause_blocks_connections_on_a_backing_postgres(pg_admin_url: str, sleeps: Sleeps) -> None:
    with NeonDouble(KEY, backing_pg_url=pg_admin_url) as double:
        settings = Settings.model_validate(
            {"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url, "NEON_API_KEY": KEY}
        )
        with NeonClient(double.base_url, KEY, sleep=sleeps) as client:
            provider = NeonProvider(settings, client)
            db = provider.create(USER)
            target = parse_pg_url(db.connection_uri)

            def connect() -> pg8000.native.Connection:
                return pg8000.native.Connection(**target.connect_kwargs(timeout=5))

            conn = connect()
            assert conn.run("SELECT current_user")[0][0] == target.user
            provider.pause(USER, db.project_id)
            with pytest.raises(Exception, match="not currently accepting connections"):
                connect()
            with pytest.raises(Exception):  # the open session was terminated
                conn.run("SELECT 1")
            provider.pause(USER, db.project_id)
            provider.resume(USER, db.project_id)
            provider.resume(USER, db.project_id)
            again = connect()
            assert again.run("SELECT 1") == [[1]]
            again.close()
            assert provider.connection_uri(USER, db.project_id) == db.connection_uri

            provider.delete(USER, db.project_id)
            admin = pg8000.native.Connection(**parse_pg_url(pg_admin_url).connect_kwargs())
            try:
                assert admin.run("SELECT 1 FROM pg_database WHERE datname = :d", d=target.database) == []
                assert admin.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=target.user) == []
            finally:
                admin.close()
        assert double.violations == [] and double.response_violations == []


# Reconciliation ------------------------------------------------------------------------------------
def test_list_managed_filters_by_prefix_and_paginates(double: NeonDouble, provider: NeonProvider) -> None:
    ours = ["agentdb-global-u1", "agentdb-agent-w1", "agentdb-agent-w2"]
    for name in ["agentdb-stg-global-x", "other-project", "my-agentdb-global-z", *ours, "agentdbglobal-u3"]:
        double.seed_project(name)
    provider.client.page_size = 2
    managed = provider.list_managed()
    assert sorted(m.name for m in managed) == sorted(ours)
    assert all(m.project_id == _pid(double, m.name) and m.created_at for m in managed)
    assert double.calls("GET /projects") >= 3  # followed the cursor
    assert all(r.query["search"] == ["agentdb-"] for r in double.requests_for("GET /projects"))


def test_provider_builds_its_client_from_settings(double: NeonDouble) -> None:
    env = {"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url, "NEON_API_KEY": KEY, "NEON_TIMEOUT_SECONDS": "3"}
    provider = NeonProvider(Settings.model_validate(env))
    assert provider.client.timeout == 3 and provider.client.base_url == double.base_url
    assert provider.list_managed() == []
    provider.client.close()
    with pytest.raises(ConfigError, match="NEON_API_KEY"):
        NeonProvider(Settings.model_validate({"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url}))
