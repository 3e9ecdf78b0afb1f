"""Cost and budgets on real Postgres: sync, over budget -> paused -> reset/upgrade/raised budget -> resumed,
concurrent syncs, a failure halfway through pausing, fan-out over SQS (moto), the usage API and handler.

The tenant databases are real (the postgres provider): pausing really refuses connections. Consumption
figures come from a stand-in (``Metered``) so the expected costs can be worked out by hand.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pg8000.exceptions
import pytest

from agentdb.billing.queue import SqsWorkQueue
from agentdb.billing.service import STALE_AFTER, BillingService, Deadline, SyncIncomplete
from agentdb.config import get_settings, load_settings
from agentdb.container import Services, get_services
from agentdb.crypto import connection_uri_context
from agentdb.errors import BudgetExceeded, UpstreamUnavailable
from agentdb.providers.base import Consumption, Tenant
from agentdb.tools.catalog import AGENT_SERVER, GLOBAL_SERVER
from tests.lambda_harness import REPO, FakeLambdaContext, http_event, load_function
from tests.support import ServerInspector, connect

# Hand-worked figures (CU-hours, GB-months) and their cost at $0.16 / CU-hour and $0.35 / GB-month.
GLOBAL_FIGURES = (1.0, 0.0)  # 1 x 0.16 = 16 c
WS_A_FIGURES = (10.0, 2.0)  # 1.60 + 0.70 = 230 c
WS_B_FIGURES = (0.03125, 0.0)  # 0.005 $ = 0.5 c -> 1 c (half up)
TOTAL = 16 + 230 + 1  # 247 c: over the free tier's 200 c, under pro's 2000 c


class Metered:
    """The real provider, with consumption figures set by the test; counts pauses and resumes and can be
    told to fail one of them."""

    def __init__(self, inner: Any, figures: dict[str, tuple[float, float]] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.figures = figures if figures is not None else {}
        self.cumulative: set[str] = set()
        self.calls: list[list[str]] = []
        self.pauses: Counter[str] = Counter()
        self.resumes: Counter[str] = Counter()
        self.fail_on: dict[str, int] = {}  # "pause"/"resume" -> fail the n-th call (1-based) from now
        self.on_consumption: Callable[[], None] | None = None
        self.consumption_error: Exception | None = None
        self._lock = threading.Lock()
        self._n = Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def consumption(self, project_ids: list[str], start: datetime, end: datetime) -> dict[str, Consumption]:
        with self._lock:
            self.calls.append(list(project_ids))
        if self.on_consumption is not None:
            self.on_consumption()
        if self.consumption_error is not None:
            raise self.consumption_error
        return {
            p: Consumption(p, *self.figures.get(p, (0.0, 0.0)), compute_cumulative=p in self.cumulative)
            for p in project_ids
        }

    def _maybe_fail(self, op: str) -> None:
        with self._lock:
            self._n[op] += 1
            if self.fail_on.get(op) == self._n[op]:
                del self.fail_on[op]
                raise UpstreamUnavailable(f"simulated provider failure during {op}")

    def pause(self, tenant: Tenant, project_id: str) -> None:
        self._maybe_fail("pause")
        self.inner.pause(tenant, project_id)
        with self._lock:
            self.pauses[project_id] += 1

    def resume(self, tenant: Tenant, project_id: str) -> None:
        self._maybe_fail("resume")
        self.inner.resume(tenant, project_id)
        with self._lock:
            self.resumes[project_id] += 1


def metered(services: Services, figures: dict[str, tuple[float, float]] | None = None) -> Metered:
    """Swap the container's provider for a Metered one (before lifecycle/billing/tools are built)."""
    provider = Metered(services.provider, figures)
    services.__dict__["provider"] = provider
    return provider


def project(services: Services, kind: str, tenant_id: str) -> str:
    record = services.store.get_database(Tenant(kind, tenant_id))  # type: ignore[arg-type]
    assert record is not None and record.project_id
    return record.project_id


def connect_tenant(services: Services, kind: str, tenant_id: str) -> Any:
    tenant = Tenant(kind, tenant_id)  # type: ignore[arg-type]
    record = services.store.get_database(tenant)
    assert record is not None and record.encrypted_uri
    uri = services.keyring.decrypt(record.encrypted_uri, connection_uri_context(tenant.context_key))
    return connect(uri)


def budget(services: Services, user_id: str) -> dict[str, Any]:
    rows = services.store.db.run_dicts("SELECT * FROM user_db_budget WHERE user_id = :u", u=user_id)
    return rows[0]


def db_rows(services: Services) -> dict[str, dict[str, Any]]:
    rows = services.store.db.run_dicts(
        "SELECT 'global:' || user_id AS key, * FROM user_global_database"
        " UNION ALL SELECT 'workspace:' || workspace_id, * FROM workspace_database"
    )
    return {r["key"]: r for r in rows}


@pytest.fixture
def world(services: Services, server: ServerInspector) -> Iterator[tuple[Services, Metered]]:
    """alice (free tier, 200 c) with her global database and two workspaces, ws-a and ws-b."""
    provider = metered(services)
    lc = services.lifecycle
    lc.create_user("alice")
    lc.create_workspace("ws-a", "alice", "Research agent")
    lc.create_workspace("ws-b", "alice", "Writer")
    provider.figures.update(
        {
            project(services, "global", "alice"): GLOBAL_FIGURES,
            project(services, "workspace", "ws-a"): WS_A_FIGURES,
            project(services, "workspace", "ws-b"): WS_B_FIGURES,
        }
    )
    yield services, provider
    backend = services.__dict__.get("tool_backend")
    if backend is not None:
        backend.close()


def run_sql(services: Services, server_id: str = AGENT_SERVER, workspace: str = "ws-a") -> dict[str, Any]:
    return services.tools.execute("alice", workspace, server_id, "run_sql", {"sql": "SELECT 1 AS one"})


def assert_serving(services: Services) -> None:
    for kind, tenant_id in (("global", "alice"), ("workspace", "ws-a"), ("workspace", "ws-b")):
        connect_tenant(services, kind, tenant_id).close()
    assert run_sql(services)["isError"] is False
    assert run_sql(services, GLOBAL_SERVER)["isError"] is False
    assert budget(services, "alice")["budget_exceeded"] is False
    assert all(r["paused_at"] is None for r in db_rows(services).values())


def assert_paused(services: Services) -> None:
    for kind, tenant_id in (("global", "alice"), ("workspace", "ws-a"), ("workspace", "ws-b")):
        with pytest.raises(pg8000.exceptions.DatabaseError):
            connect_tenant(services, kind, tenant_id)  # the tenant server refuses the connection
    with pytest.raises(BudgetExceeded) as refused:
        run_sql(services)
    assert refused.value.status == 402
    with pytest.raises(BudgetExceeded):
        run_sql(services, GLOBAL_SERVER)
    assert budget(services, "alice")["budget_exceeded"] is True
    assert all(r["paused_at"] is not None for r in db_rows(services).values())


# Sync ---------------------------------------------------------------------------------------------


def test_sync_prices_every_database_and_totals_them(world: tuple[Services, Metered]) -> None:
    services, provider = world
    services.lifecycle.change_plan("alice", "pro")
    report = services.billing.sync_all()
    assert report.mode == "inline" and report.databases == 3 and report.requests == 1 and report.synced == 3
    assert len(provider.calls) == 1 and sorted(provider.calls[0]) == sorted(provider.figures)
    rows = db_rows(services)
    assert rows["global:alice"]["current_period_cost_cents"] == 16
    assert rows["workspace:ws-a"]["current_period_cost_cents"] == 230
    assert rows["workspace:ws-b"]["current_period_cost_cents"] == 1
    assert all(r["last_consumption_sync"] is not None for r in rows.values())
    b = budget(services, "alice")
    assert b["total_cost_cents"] == TOTAL and b["last_sync"] is not None and b["budget_exceeded"] is False
    # Rerun: the same totals (figures are absolute for the period, the total is recomputed, not added to).
    provider.calls.clear()
    services.billing.sync_user("alice")
    services.billing.sync_user("alice")
    assert budget(services, "alice")["total_cost_cents"] == TOTAL
    assert db_rows(services)["workspace:ws-a"]["current_period_cost_cents"] == 230
    assert len(provider.calls) == 2


def test_the_usage_view(world: tuple[Services, Metered]) -> None:
    services, provider = world
    services.lifecycle.change_plan("alice", "pro")
    view = services.billing.usage("alice")  # never synced: synced now
    assert len(provider.calls) == 1 and view["refreshed"] is True and view["stale"] is False
    assert view["globalDb"]["costCents"] == 16 and view["globalDb"]["computeHours"] == 1.0
    agents = {a["workspaceId"]: a for a in view["agentDbs"]}
    assert agents["ws-a"]["workspaceName"] == "Research agent"
    assert agents["ws-a"]["costCents"] == 230 and agents["ws-a"]["computeHours"] == 10.0
    assert agents["ws-a"]["storageGbMonths"] == 2.0 and agents["ws-a"]["storageGb"] > 0
    assert agents["ws-b"]["costCents"] == 1
    assert view["totalCents"] == TOTAL == view["globalDb"]["costCents"] + sum(a["costCents"] for a in agents.values())
    assert view["limitCents"] == 2000 and view["limitSource"] == "plan" and view["remainingCents"] == 2000 - TOTAL
    assert view["exceeded"] is False and view["currency"] == "USD" and view["plan"] == "pro"
    # The field names, in US dollars: the same amounts.
    assert view["total"] == TOTAL / 100 and view["limit"] == 20.0
    assert agents["ws-a"]["cost"] == 2.3 and view["globalDb"]["cost"] == 0.16
    assert view["periodStart"].endswith("Z") and view["lastSync"].endswith("Z")
    # Fresh (synced under five minutes ago): served from the control plane, no consumption request.
    services.billing.usage("alice")
    assert len(provider.calls) == 1
    # Older than five minutes: re-synced first.
    services.store.db.run("UPDATE user_db_budget SET last_sync = now() - interval '6 minutes'")
    provider.figures[project(services, "workspace", "ws-b")] = (1.0, 0.0)  # 16 c now
    view = services.billing.usage("alice")
    assert len(provider.calls) == 2 and view["totalCents"] == 16 + 230 + 16
    # Neon down: the stored figures, marked stale.
    services.store.db.run("UPDATE user_db_budget SET last_sync = now() - interval '6 minutes'")
    provider.consumption_error = UpstreamUnavailable("Neon is unavailable")
    view = services.billing.usage("alice")
    assert view["stale"] is True and view["staleReason"] == "upstream_unavailable" and view["totalCents"] == 262


def test_a_sample_taken_before_a_period_reset_is_discarded(world: tuple[Services, Metered]) -> None:
    services, provider = world
    provider.on_consumption = lambda: services.billing.reset_period(user_ids=["alice"])  # reset mid-request
    report = services.billing.sync_user("alice")
    assert report.discarded == 3 and report.synced == 0
    b = budget(services, "alice")
    assert b["total_cost_cents"] == 0 and b["budget_exceeded"] is False
    assert all(r["current_period_cost_cents"] == 0 for r in db_rows(services).values())


def test_a_deleted_workspace_still_counts_for_the_period(world: tuple[Services, Metered]) -> None:
    services, _ = world
    services.lifecycle.change_plan("alice", "pro")
    services.billing.sync_all()
    services.lifecycle.delete_workspace("ws-a")  # 230 c spent this period
    assert budget(services, "alice")["carried_cost_cents"] == 230
    services.store.db.run("DELETE FROM billing_leases")
    services.billing.sync_user("alice")
    assert budget(services, "alice")["total_cost_cents"] == TOTAL
    view = services.billing.usage("alice")
    assert view["deletedDbsCostCents"] == 230 and [a["workspaceId"] for a in view["agentDbs"]] == ["ws-b"]
    services.billing.reset_period(user_ids=["alice"])
    assert budget(services, "alice")["carried_cost_cents"] == 0


# Over budget -> paused -> resumed -------------------------------------------------------------------


def test_over_budget_pauses_everything_and_the_period_reset_resumes(world: tuple[Services, Metered]) -> None:
    services, provider = world
    assert_serving(services)
    report = services.billing.sync_all()
    assert report.enforced == ["alice"]
    assert budget(services, "alice")["total_cost_cents"] == TOTAL
    assert_paused(services)
    assert sum(provider.pauses.values()) == 3
    services.billing.sync_all()  # still over: nothing paused twice
    assert set(provider.pauses.values()) == {1}
    view = services.billing.usage("alice")
    assert view["exceeded"] is True and view["globalDb"]["paused"] is True
    assert all(a["paused"] for a in view["agentDbs"])

    provider.figures = {p: (0.0, 0.0) for p in provider.figures}  # the new period has used nothing yet
    reset = services.billing.reset_period(user_ids=["alice"])
    assert reset.reset == ["alice"] and reset.sync.enforced == ["alice"]
    assert budget(services, "alice")["total_cost_cents"] == 0
    assert_serving(services)
    assert set(provider.resumes.values()) == {1} and len(provider.resumes) == 3
    services.billing.reset_period()  # the monthly reset: alice's period already began this month
    assert budget(services, "alice")["total_cost_cents"] == 0


def test_the_monthly_reset_starts_the_period_on_the_first(world: tuple[Services, Metered]) -> None:
    services, _ = world
    services.billing.sync_all()
    assert_paused(services)
    services.store.db.run("UPDATE user_db_budget SET current_period_start = now() - interval '40 days'")
    report = services.billing.reset_period()
    assert report.reset == ["alice"]
    start = budget(services, "alice")["current_period_start"]
    now = datetime.now(UTC)
    assert (start.day, start.hour, start.minute, start.month) == (1, 0, 0, now.month)
    assert_serving(services)


def test_a_missed_monthly_reset_is_done_by_the_next_sync(world: tuple[Services, Metered]) -> None:
    services, provider = world
    services.billing.sync_all()
    assert_paused(services)
    services.store.db.run("UPDATE user_db_budget SET current_period_start = now() - interval '40 days'")
    provider.figures = {p: (0.0, 0.0) for p in provider.figures}
    services.store.db.run("DELETE FROM billing_leases")
    services.store.db.run("UPDATE user_global_database SET last_consumption_sync = NULL")
    services.store.db.run("UPDATE workspace_database SET last_consumption_sync = NULL")
    services.billing.sync_all()
    assert budget(services, "alice")["total_cost_cents"] == 0
    assert_serving(services)


def test_upgrading_the_plan_resumes_and_downgrading_pauses(world: tuple[Services, Metered]) -> None:
    services, _ = world
    services.billing.sync_all()
    assert_paused(services)
    outcome = services.lifecycle.change_plan("alice", "pro")  # 2000 c > 247 c spent
    assert outcome.data["budget"] == {
        "totalCents": TOTAL,
        "limitCents": 2000,
        "exceeded": False,
        "pausedDatabases": 0,
        "servingDatabases": 3,
        "pending": False,
    }
    assert_serving(services)
    services.lifecycle.change_plan("alice", "free")  # back under the spend
    assert_paused(services)
    # The same through the platform's event.
    services.lifecycle.handle_event(str(uuid.uuid4()), "user.plan_changed", {"userId": "alice", "plan": "team"},
                                    datetime.now(UTC))  # fmt: skip
    assert_serving(services)


def test_custom_budget_raised_resumes_and_lowered_pauses(world: tuple[Services, Metered]) -> None:
    services, provider = world
    services.lifecycle.change_plan("alice", "pro")
    services.billing.sync_all()
    assert_serving(services)
    outcome = services.lifecycle.set_custom_budget("alice", 247)  # reaching the limit is over it
    assert outcome.data["limitCents"] == 247 and outcome.data["budget"]["exceeded"] is True
    assert_paused(services)
    outcome = services.lifecycle.set_custom_budget("alice", 248)
    assert outcome.data["budget"]["exceeded"] is False
    assert_serving(services)
    services.lifecycle.set_custom_budget("alice", 0)
    assert_paused(services)
    services.lifecycle.set_custom_budget("alice", None)  # back to pro's 2000 c
    assert_serving(services)
    assert set(provider.pauses.values()) == {2} and set(provider.resumes.values()) == {2}


# Failure halfway -----------------------------------------------------------------------------------


def test_a_pause_failing_on_the_second_database_is_finished_by_the_retry(world: tuple[Services, Metered]) -> None:
    services, provider = world
    provider.fail_on["pause"] = 2
    report = services.billing.sync_user("alice")  # the failure is logged; the flag is set before any pause
    assert report.enforcement_failed == ["alice"]
    assert budget(services, "alice")["budget_exceeded"] is True
    rows = db_rows(services)
    assert rows["global:alice"]["paused_at"] is not None  # the first one, recorded as done
    assert rows["workspace:ws-a"]["paused_at"] is None and rows["workspace:ws-b"]["paused_at"] is None
    with pytest.raises(BudgetExceeded):
        run_sql(services)  # tools are refused already
    outcome = services.billing.reevaluate("alice")  # the retry
    assert outcome is not None and not outcome.pending and outcome.paused == 3
    assert_paused(services)
    assert dict(provider.pauses) == {p: 1 for p in provider.figures}  # nothing paused twice

    provider.fail_on["resume"] = 2
    with pytest.raises(UpstreamUnavailable):
        services.lifecycle.change_plan("alice", "pro")  # the plan is stored; resuming fails halfway
    assert services.store.get_user("alice").plan == "pro"  # type: ignore[union-attr]
    assert budget(services, "alice")["budget_exceeded"] is True  # cleared only when all serve again
    assert sum(1 for r in db_rows(services).values() if r["paused_at"] is None) == 1
    services.store.db.run("DELETE FROM billing_leases")
    services.billing.sync_all()  # the scheduled sync's reconcile pass finishes it
    assert_serving(services)
    assert dict(provider.resumes) == {p: 1 for p in provider.figures}


def test_a_failed_consumption_request_is_reported_and_retried(world: tuple[Services, Metered]) -> None:
    services, provider = world
    provider.consumption_error = UpstreamUnavailable("Neon is unavailable")
    report = services.billing.sync_all()
    assert report.failed_requests == 1 and report.synced == 0
    with pytest.raises(SyncIncomplete):
        services.billing.sync_projects(list(provider.figures))
    provider.consumption_error = None
    assert services.billing.sync_projects(list(provider.figures)).synced == 3


# Concurrency ---------------------------------------------------------------------------------------


def test_two_syncs_at_once_give_the_same_totals(
    world: tuple[Services, Metered], make_services: Callable[[], Services]
) -> None:
    services, provider = world
    services.lifecycle.change_plan("alice", "enterprise")
    global_project = project(services, "global", "alice")
    provider.cumulative.add(global_project)  # a counter: the sync bills differences, never twice

    def contender() -> Services:
        other = make_services()
        extra = metered(other, provider.figures)
        extra.cumulative = provider.cumulative
        return other

    contenders = [contender(), contender()]
    for attempt in range(3):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(
            s: Services, use_all: bool, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            try:
                barrier.wait()
                if use_all:
                    s.billing.sync_all()
                else:
                    s.billing.sync_user("alice")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s, attempt == 1)) for s in contenders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert budget(services, "alice")["total_cost_cents"] == TOTAL, attempt
        rows = db_rows(services)
        assert [rows[k]["current_period_cost_cents"] for k in ("global:alice", "workspace:ws-a", "workspace:ws-b")] == [
            16,
            230,
            1,
        ]
        services.store.db.run("DELETE FROM billing_leases")
    # The counter reading (1 CU-h since the database was created this period) was billed once.
    assert db_rows(services)["global:alice"]["compute_cu_hours"] == 1
    for s in contenders:
        s.store.db.close()


def test_a_second_scheduled_sync_while_one_runs_is_skipped(world: tuple[Services, Metered]) -> None:
    services, provider = world
    release = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(10)

    provider.on_consumption = hold
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(services.billing.sync_all()))
    runner.start()
    assert entered.wait(10)
    other = Services(services.settings)
    metered(other, provider.figures)
    try:
        assert other.billing.sync_all().mode == "skipped"
    finally:
        release.set()
        runner.join()
        other.store.db.close()
    assert result[0].mode == "inline" and budget(services, "alice")["total_cost_cents"] == TOTAL


# Fan-out --------------------------------------------------------------------------------------------


def add_fake_databases(services: Services, users: int) -> list[str]:
    """Users with a global database and one workspace each, recorded as ready (no real database: the
    consumption stand-in answers for them). Returns their project ids."""
    db = services.store.db
    ids: list[str] = []
    for i in range(users):
        user, ws = f"bulk-{i:04d}", f"bulk-ws-{i:04d}"
        db.run("INSERT INTO users (id, plan) VALUES (:u, 'enterprise')", u=user)
        db.run("INSERT INTO user_db_budget (user_id) VALUES (:u)", u=user)
        db.run(
            "INSERT INTO user_global_database (user_id, provider, status, neon_project_id)"
            " VALUES (:u, 'postgres', 'ready', :p)",
            u=user,
            p=f"fake-g-{i:04d}",
        )
        db.run("INSERT INTO workspaces (id, owner_user_id, name) VALUES (:w, :u, 'bulk')", w=ws, u=user)
        db.run(
            "INSERT INTO workspace_database (workspace_id, provider, status, neon_project_id)"
            " VALUES (:w, 'postgres', 'ready', :p)",
            w=ws,
            p=f"fake-w-{i:04d}",
        )
        ids += [f"fake-g-{i:04d}", f"fake-w-{i:04d}"]
    return ids


class LongContext(FakeLambdaContext):
    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def sqs_queue() -> Iterator[tuple[Any, str]]:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName=f"usage-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        yield client, url


def drain(client: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return messages
        for m in got:
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        messages += got


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m.get("ReceiptHandle", "rh"),
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:usage-work",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@pytest.fixture
def usage_fn(cp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in cp_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("USAGE_QUEUE_URL", raising=False)
    get_settings.cache_clear()
    get_services.cache_clear()
    yield load_function("usage")
    services = get_services()
    services.store.db.close()
    provider = services.__dict__.get("provider")
    if provider is not None:
        getattr(provider, "inner", provider)._admin.close()
    get_settings.cache_clear()
    get_services.cache_clear()


def test_a_sync_larger_than_one_invocation_fans_out_in_batches_of_100(
    cp_env: dict[str, str], sqs_queue: tuple[Any, str], usage_fn: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, url = sqs_queue
    monkeypatch.setenv("USAGE_QUEUE_URL", url)
    monkeypatch.setenv("NEON_CONSUMPTION_REQUESTS_PER_MINUTE", "1")  # 60 s per request
    get_settings.cache_clear()
    get_services.cache_clear()
    services = get_services()
    ids = add_fake_databases(services, 125)  # 250 databases: 3 requests; 30 s left fit none at 1/min
    provider = metered(services, {p: (1.0, 0.0) for p in ids})  # 16 c each

    result = usage_fn.handler({"action": "sync"}, FakeLambdaContext())
    assert result["mode"] == "fanout" and result["requests"] == 3 and result["capacity"] == 0
    assert result["batchesEnqueued"] == 3
    assert provider.calls == []  # nothing synced in the scheduled invocation itself
    messages = drain(client, url)
    bodies = [json.loads(m["Body"]) for m in messages]
    assert len(messages) == 3 == -(-len(ids) // 100)
    assert all(b["kind"] == "sync" and len(b["projectIds"]) <= 100 for b in bodies)
    assert sorted(p for b in bodies for p in b["projectIds"]) == sorted(ids)

    answer = usage_fn.handler(sqs_event(messages), LongContext())  # the consumer has 900 s
    assert answer == {"batchItemFailures": []}
    assert len(provider.calls) == 3 and all(len(c) <= 100 for c in provider.calls)
    rows = services.store.db.run(
        "SELECT count(*), count(last_consumption_sync), sum(current_period_cost_cents) FROM ("
        " SELECT last_consumption_sync, current_period_cost_cents FROM user_global_database"
        " UNION ALL SELECT last_consumption_sync, current_period_cost_cents FROM workspace_database) d"
    )
    assert rows[0] == [250, 250, 250 * 16]
    totals = services.store.db.run("SELECT DISTINCT total_cost_cents FROM user_db_budget")
    assert totals == [[32]]
    # A duplicate delivery of the same batches: skipped as freshly synced, nothing counted twice.
    assert usage_fn.handler(sqs_event(messages), LongContext()) == {"batchItemFailures": []}
    assert len(provider.calls) == 3
    assert services.store.db.run("SELECT DISTINCT total_cost_cents FROM user_db_budget") == [[32]]


def test_a_sync_that_fits_runs_in_the_invocation(
    cp_env: dict[str, str], sqs_queue: tuple[Any, str], usage_fn: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, url = sqs_queue
    monkeypatch.setenv("USAGE_QUEUE_URL", url)
    get_settings.cache_clear()
    get_services.cache_clear()
    services = get_services()
    ids = add_fake_databases(services, 125)
    provider = metered(services, {p: (1.0, 0.0) for p in ids})
    result = usage_fn.handler({"action": "sync"}, FakeLambdaContext())  # 50/min: ~10 requests fit in 30 s
    assert result["mode"] == "inline" and result["synced"] == 250 and 3 <= result["capacity"] <= 10
    assert len(provider.calls) == 3 and drain(client, url) == []


def test_the_queue_is_filled_in_sqs_batches_of_ten(sqs_queue: tuple[Any, str]) -> None:
    client, url = sqs_queue
    queue = SqsWorkQueue(url, client)
    assert queue.send([{"kind": "sync", "projectIds": [str(i)]} for i in range(23)]) == 23
    assert len(drain(client, url)) == 23


# The handler -----------------------------------------------------------------------------------------


def call(fn: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = fn.handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def usage_event(user_id: str, *, sub: str, scope: str = "") -> dict[str, Any]:
    return http_event(
        "GET",
        f"/users/{user_id}/db-usage",
        route="/users/{userId}/db-usage",
        sub=sub,
        scope=scope,
        path_params={"userId": user_id},
    )


def test_usage_route_self_admin_and_others(usage_fn: ModuleType, server: ServerInspector) -> None:
    services = get_services()
    metered(services)
    services.lifecycle.create_user("bob", "team")
    status, body = call(usage_fn, usage_event("bob", sub="bob"))
    assert status == 200 and body["success"] is True
    data = body["data"]
    assert data["limitCents"] == 5000 and data["totalCents"] == 0 and data["globalDb"]["costCents"] == 0
    assert data["agentDbs"] == [] and data["exceeded"] is False and data["lastSync"] is not None
    assert call(usage_fn, usage_event("bob", sub="platform", scope="agentdb/admin"))[0] == 200
    status, body = call(usage_fn, usage_event("bob", sub="mallory"))
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = call(usage_fn, usage_event("nobody", sub="platform", scope="agentdb/admin"))
    assert status == 404 and body["success"] is False


def test_scheduled_and_queue_events_from_the_samples(usage_fn: ModuleType, server: ServerInspector) -> None:
    services = get_services()
    provider = metered(services)
    services.lifecycle.create_user("bob")
    provider.figures[project(services, "global", "bob")] = (20.0, 0.0)  # $3.20 > $2.00
    samples = REPO / "events" / "usage"
    sync = json.loads((samples / "scheduled-sync.json").read_text())
    result = usage_fn.handler(sync, FakeLambdaContext())
    assert result["action"] == "sync" and result["enforced"] == ["bob"]
    assert budget(services, "bob")["budget_exceeded"] is True
    reset = json.loads((samples / "scheduled-reset.json").read_text())
    assert usage_fn.handler(reset, FakeLambdaContext())["action"] == "reset"  # bob's period began this month
    manual = usage_fn.handler({"action": "reset", "userIds": ["bob"]}, FakeLambdaContext())
    assert manual["reset"] == ["bob"] and manual["enforced"] == ["bob"]
    assert budget(services, "bob")["budget_exceeded"] is False
    batch = json.loads((samples / "sqs-sync-batch.json").read_text())
    assert usage_fn.handler(batch, FakeLambdaContext()) == {"batchItemFailures": []}  # unknown ids: nothing to do
    with pytest.raises(Exception) as bad:
        usage_fn.handler({"action": "launch"}, FakeLambdaContext())
    assert "unknown action" in str(bad.value)


def test_a_bad_queue_message_fails_alone(usage_fn: ModuleType, server: ServerInspector) -> None:
    services = get_services()
    metered(services)
    good = {"MessageId": "good", "Body": json.dumps({"kind": "sync", "projectIds": []})}
    bad = {"MessageId": "bad", "Body": "{not json"}
    odd = {"MessageId": "odd", "Body": json.dumps({"kind": "sync", "projectIds": ["x"] * 101})}
    answer = usage_fn.handler(sqs_event([good, bad, odd]), FakeLambdaContext())
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == ["bad", "odd"]


def test_billing_settings_reach_the_service(cp_env: dict[str, str]) -> None:
    settings = load_settings({**cp_env, "NEON_CONSUMPTION_REQUESTS_PER_MINUTE": "7"})
    services = Services(settings)
    try:
        assert isinstance(services.billing, BillingService) and services.billing.requests_per_minute == 7
        assert Deadline(None).allows(10**9) and not Deadline(0).allows(0.1)
        assert timedelta(minutes=5) == STALE_AFTER
    finally:
        services.store.db.close()
