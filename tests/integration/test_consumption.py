"""Consumption sync per provider, and the shared rate limit for Neon's consumption endpoints.

Neon: the provider against the Neon double over real HTTP, on a simulated clock (the limiter and the
client sleep on it, the double counts its rate limit on it), so minutes of rate limiting pass in
milliseconds. Every Neon test ends with the double reporting no spec violation. Postgres: the provider
on real databases of the test server. RateLimitStore: the real control-plane table under concurrency.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pg8000.native
import pytest

from agentdb.billing.ratelimit import ConsumptionRateLimiter, RateLimitWaitExceeded
from agentdb.config import Settings
from agentdb.pgurl import parse_pg_url
from agentdb.providers.base import BYTES_PER_GB, HOURS_PER_MONTH, Consumption, month_fraction
from agentdb.providers.neon import (
    V2_PATH,
    NeonClient,
    NeonProvider,
    NeonRefused,
    align_window,
    choose_granularity,
)
from agentdb.providers.postgres import PostgresProvider
from agentdb.store.db import Database
from agentdb.store.migrate import migrate
from agentdb.store.rate_limits import RateLimitStore
from local.neon_double import CONSUMPTION_LEGACY_ROUTE, CONSUMPTION_V2_ROUTE, NeonDouble

KEY = "neon-key-consumption-1"
ORG = "org-test-1"
PROJECT_ROUTE = "GET /projects/{project_id}"


class SimClock:
    """Simulated time: ``time()`` reads it, ``sleep(s)`` moves it forward at once."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept = 0.0

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)
            self.slept += max(seconds, 0.0)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)


@pytest.fixture
def clock() -> SimClock:
    # At the start of a minute, so the rate-limit windows of a test are predictable.
    return SimClock(float(int(time.time()) // 60 * 60))


@pytest.fixture
def double(clock: SimClock) -> Iterator[NeonDouble]:
    d = NeonDouble(KEY, clock=clock.time)
    d.start()
    yield d
    d.stop()
    assert d.violations == []
    assert d.response_violations == []


@pytest.fixture
def make_provider(double: NeonDouble, clock: SimClock) -> Iterator[Callable[..., NeonProvider]]:
    clients: list[NeonClient] = []

    def make(
        env: dict[str, str] | None = None,
        *,
        limit: int = 50,
        limiter: ConsumptionRateLimiter | None = None,
        page_size: int | None = None,
    ) -> NeonProvider:
        settings = Settings.model_validate(
            {"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url, "NEON_API_KEY": KEY, "NEON_ORG_ID": ORG}
            | (env or {})
        )
        client = NeonClient(settings.neon_api_url, KEY, org_id=settings.neon_org_id, sleep=clock.sleep, timeout=10)
        clients.append(client)
        limiter = limiter or ConsumptionRateLimiter(None, limit, clock=clock.time, sleep=clock.sleep)
        provider = NeonProvider(settings, client, rate_limiter=limiter, now=clock.now)
        if page_size is not None:
            provider.consumption_page_size = page_size
        return provider

    yield make
    for client in clients:
        client.close()


def window(clock: SimClock, days: float = 3) -> tuple[datetime, datetime]:
    end = clock.now()
    return end - timedelta(days=days), end


# Neon: v2 batching and pagination ---------------------------------------------------------------------
def test_a_batch_of_100_projects_is_one_v2_call(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                                clock: SimClock) -> None:  # fmt: skip
    ids = double.seed_projects(100, org_id=ORG)
    start, end = window(clock)
    result = make_provider().consumption(ids, start, end)
    assert set(result) == set(ids)
    assert {c.source for c in result.values()} == {"v2"}
    assert double.calls(CONSUMPTION_V2_ROUTE) == 1
    query = double.requests_for(CONSUMPTION_V2_ROUTE)[0].query
    assert query["org_id"] == [ORG]
    assert query["limit"] == ["100"]
    assert query["granularity"] == ["daily"]
    assert sorted(query["project_ids"][0].split(",")) == sorted(ids)
    assert query["metrics"][0].split(",")[:3] == [
        "compute_unit_seconds",
        "root_branch_bytes_month",
        "child_branch_bytes_month",
    ]
    # The deterministic generator gives every project some use.
    assert all(c.compute_cu_hours >= 0 and c.storage_gb_months > 0 for c in result.values())


def test_250_projects_take_three_calls(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                       clock: SimClock) -> None:  # fmt: skip
    ids = double.seed_projects(250, org_id=ORG)
    result = make_provider().consumption(ids, *window(clock))
    assert len(result) == 250
    assert double.calls(CONSUMPTION_V2_ROUTE) == math.ceil(250 / 100)


def test_small_pages_are_followed_by_cursor(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                            clock: SimClock) -> None:  # fmt: skip
    ids = double.seed_projects(250, org_id=ORG)
    # Our own `limit` of 40: batches of 100, 100, 50 take 3 + 3 + 2 pages.
    result = make_provider(page_size=40).consumption(ids, *window(clock))
    assert set(result) == set(ids)
    assert double.calls(CONSUMPTION_V2_ROUTE) == 3 + 3 + 2
    cursors = [r.query.get("cursor") for r in double.requests_for(CONSUMPTION_V2_ROUTE)]
    assert cursors[0] is None and cursors[1] is not None and cursors[3] is None  # a new batch starts over
    # Neon returning fewer than asked (a server-side cap of 30): 4 + 4 + 2 pages.
    double.requests.clear()
    double.consumption_max_page_size = 30
    result = make_provider().consumption(ids, *window(clock))
    assert set(result) == set(ids)
    assert double.calls(CONSUMPTION_V2_ROUTE) == 4 + 4 + 2


def test_duplicate_ids_are_asked_once(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                      clock: SimClock) -> None:  # fmt: skip
    ids = double.seed_projects(60, org_id=ORG)
    result = make_provider().consumption(ids + ids, *window(clock))
    assert set(result) == set(ids)
    assert double.calls(CONSUMPTION_V2_ROUTE) == 1


def test_v2_metrics_convert_to_cu_hours_and_gb_months(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                                      clock: SimClock) -> None:  # fmt: skip
    a, b, idle = double.seed_projects(3, org_id=ORG)
    double.seed_consumption(
        a,
        compute_unit_seconds=9000,  # 2.5 CU-hours
        root_branch_bytes_month=2_000_000_000,  # 2 GB-months
        child_branch_bytes_month=500_000_000,  # 0.5 GB-month
        public_network_transfer_bytes=123_456,
    )
    double.seed_consumption(b, compute_unit_seconds=1, root_branch_bytes_month=3)
    double.seed_consumption(idle, compute_unit_seconds=0, root_branch_bytes_month=0)
    start, end = window(clock, days=3)
    result = make_provider().consumption([a, b, idle], start, end)
    assert result[a].compute_cu_hours == pytest.approx(2.5)
    assert result[a].storage_gb_months == pytest.approx(2.5)
    assert result[a].transfer_bytes == 123_456
    assert result[b].compute_cu_hours == pytest.approx(1 / 3600)
    assert result[b].storage_gb_months == pytest.approx(3 / BYTES_PER_GB)
    assert result[idle] == Consumption(idle, 0.0, 0.0, source="v2", period_start=result[idle].period_start,
                                       period_end=result[idle].period_end)  # fmt: skip
    # The totals arrive spread over several daily timeframes: the sum is what counts.
    entry_days = align_window(start, end, "daily")
    assert (result[a].period_start, result[a].period_end) == entry_days
    assert (entry_days[1] - entry_days[0]) >= timedelta(days=3)


def test_a_short_window_asks_hourly(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                    clock: SimClock) -> None:  # fmt: skip
    (pid,) = double.seed_projects(1, org_id=ORG)
    double.seed_consumption(pid, compute_unit_seconds=3600, root_branch_bytes_month=1_000_000_000)
    end = clock.now()
    result = make_provider().consumption([pid], end - timedelta(minutes=15), end)
    query = double.requests_for(CONSUMPTION_V2_ROUTE)[0].query
    assert query["granularity"] == ["hourly"]
    frm, to = datetime.fromisoformat(query["from"][0]), datetime.fromisoformat(query["to"][0])
    assert frm.minute == frm.second == 0 and to.minute == to.second == 0 and frm <= end - timedelta(minutes=15) < to
    assert result[pid].compute_cu_hours == pytest.approx(1.0)
    assert result[pid].storage_gb_months == pytest.approx(1.0)


def test_granularity_and_alignment() -> None:
    now = datetime(2026, 7, 15, 14, 30, tzinfo=UTC)
    assert choose_granularity(now - timedelta(hours=1), now, now) == "hourly"
    assert choose_granularity(now - timedelta(days=3), now, now) == "daily"
    assert choose_granularity(datetime(2026, 7, 1, tzinfo=UTC), now, now) == "daily"
    assert choose_granularity(now - timedelta(days=8), now - timedelta(days=7, hours=23), now) == "daily"
    assert choose_granularity(now - timedelta(days=90), now, now) == "monthly"
    assert align_window(datetime(2026, 7, 1, tzinfo=UTC), now, "daily") == (
        datetime(2026, 7, 1, tzinfo=UTC),
        datetime(2026, 7, 16, tzinfo=UTC),
    )
    assert align_window(now - timedelta(minutes=15), now, "hourly") == (
        datetime(2026, 7, 15, 14, tzinfo=UTC),
        datetime(2026, 7, 15, 15, tzinfo=UTC),
    )
    assert align_window(datetime(2026, 5, 20, tzinfo=UTC), now, "monthly") == (
        datetime(2026, 5, 1, tzinfo=UTC),
        datetime(2026, 8, 1, tzinfo=UTC),
    )
    assert align_window(datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 9, tzinfo=UTC), "monthly")[1] == (
        datetime(2027, 1, 1, tzinfo=UTC)
    )
    # Already aligned: unchanged.
    assert align_window(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 2, tzinfo=UTC), "daily") == (
        datetime(2026, 7, 1, tzinfo=UTC),
        datetime(2026, 7, 2, tzinfo=UTC),
    )
    assert month_fraction(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 4, tzinfo=UTC)) == pytest.approx(0.1)


# Neon: org id ---------------------------------------------------------------------------------------------
def test_org_id_comes_from_the_first_project_when_not_configured(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    ids = double.seed_projects(150, org_id="org-found-7")
    provider = make_provider({"NEON_ORG_ID": ""})
    result = provider.consumption(ids, *window(clock))
    assert len(result) == 150 and {c.source for c in result.values()} == {"v2"}
    assert double.calls(PROJECT_ROUTE) == 1  # looked up once, for the whole container
    assert [r.query["org_id"] for r in double.requests_for(CONSUMPTION_V2_ROUTE)] == [["org-found-7"]] * 2
    provider.consumption(ids[:10], *window(clock))
    assert double.calls(PROJECT_ROUTE) == 1


def test_projects_without_an_organization_use_the_legacy_endpoint(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    ids = double.seed_projects(5)  # a personal account: no org
    provider = make_provider({"NEON_ORG_ID": ""})
    result = provider.consumption(ids, *window(clock))
    assert {c.source for c in result.values()} == {"legacy"}
    assert double.calls(CONSUMPTION_V2_ROUTE) == 0
    assert "org_id" not in double.requests_for(CONSUMPTION_LEGACY_ROUTE)[0].query
    assert provider.v2_unavailable is not None


# Neon: 403 / 406 fallbacks --------------------------------------------------------------------------------
def test_403_on_v2_falls_back_to_legacy_and_is_remembered(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    a, b = double.seed_projects(2, org_id=ORG)
    double.seed_consumption(
        a, compute_unit_seconds=7200, root_branch_bytes_month=3_000_000_000, written_data_bytes=10_000
    )
    double.seed_consumption(b, compute_time_seconds=1800, data_storage_bytes_hour=720 * 4_000_000_000)
    double.consumption_v2_status = 403
    provider = make_provider()
    result = provider.consumption([a, b], *window(clock))
    assert {c.source for c in result.values()} == {"legacy"}
    assert result[a].compute_cu_hours == pytest.approx(2.0)  # compute_time_seconds 7200 (CPU-seconds)
    assert result[a].storage_gb_months == pytest.approx(3.0)  # 720 * 3e9 byte-hours / 1e9 / 720
    assert result[a].written_bytes == 10_000
    assert result[b].compute_cu_hours == pytest.approx(0.5)
    assert result[b].storage_gb_months == pytest.approx(4.0)
    assert double.calls(CONSUMPTION_V2_ROUTE) == 1
    assert provider.v2_unavailable is not None
    provider.consumption([a, b], *window(clock))
    assert double.calls(CONSUMPTION_V2_ROUTE) == 1  # not asked again in this container
    assert double.calls(CONSUMPTION_LEGACY_ROUTE) == 2
    metrics = double.requests_for(CONSUMPTION_LEGACY_ROUTE)[0].query["metrics"][0].split(",")
    assert {"compute_time_seconds", "data_storage_bytes_hour"} <= set(metrics)


def test_legacy_storage_from_size_when_byte_hours_are_missing() -> None:
    from agentdb.providers.neon import consumption_from_legacy

    start, end = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 3, tzinfo=UTC)
    entry = {
        "project_id": "p-1",
        "periods": [
            {
                "consumption": [
                    {
                        "timeframe_start": "2026-07-01T00:00:00Z",
                        "timeframe_end": "2026-07-02T00:00:00Z",
                        "compute_time_seconds": 360,
                        "synthetic_storage_size_bytes": 3_000_000_000,
                    },
                    {
                        "timeframe_start": "2026-07-02T00:00:00Z",
                        "timeframe_end": "2026-07-03T00:00:00Z",
                        "compute_time_seconds": 360,
                        "synthetic_storage_size_bytes": 3_000_000_000,
                    },
                ]
            }
        ],
    }
    c = consumption_from_legacy(entry, start, end)
    assert c.compute_cu_hours == pytest.approx(0.2)
    assert c.storage_gb_months == pytest.approx(3.0 * 48 / HOURS_PER_MONTH)  # 3 GB for 2 days = 0.2 GB-month


def test_406_tries_a_coarser_granularity(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                         clock: SimClock) -> None:  # fmt: skip
    (pid,) = double.seed_projects(1, org_id=ORG)
    double.seed_consumption(pid, compute_unit_seconds=3600)
    double.script(CONSUMPTION_V2_ROUTE, [406])
    end = clock.now()
    provider = make_provider()
    result = provider.consumption([pid], end - timedelta(hours=2), end)
    assert [r.query["granularity"] for r in double.requests_for(CONSUMPTION_V2_ROUTE)] == [["hourly"], ["daily"]]
    assert result[pid].source == "v2" and result[pid].compute_cu_hours == pytest.approx(1.0)
    assert provider.v2_unavailable is None  # a range problem, not a missing plan feature


def test_406_on_every_granularity_falls_back_for_this_call_only(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    (pid,) = double.seed_projects(1, org_id=ORG)
    double.seed_consumption(pid, compute_unit_seconds=3600)
    double.consumption_v2_status = 406
    provider = make_provider()
    result = provider.consumption([pid], *window(clock))
    assert result[pid].source == "legacy" and result[pid].compute_cu_hours == pytest.approx(1.0)
    assert [r.query["granularity"] for r in double.requests_for(CONSUMPTION_V2_ROUTE)] == [["daily"], ["monthly"]]
    assert provider.v2_unavailable is None
    double.consumption_v2_status = None
    assert provider.consumption([pid], *window(clock))[pid].source == "v2"


def test_the_double_answers_406_for_a_range_too_old_for_hourly(double: NeonDouble, clock: SimClock) -> None:
    (pid,) = double.seed_projects(1, org_id=ORG)
    client = NeonClient(double.base_url, KEY, sleep=clock.sleep)
    start = clock.now() - timedelta(days=10)
    try:
        with pytest.raises(NeonRefused) as caught:
            list(
                client.iter_consumption(
                    V2_PATH,
                    [pid],
                    {
                        "from": start.strftime("%Y-%m-%dT%H:00:00Z"),
                        "to": clock.now().strftime("%Y-%m-%dT%H:00:00Z"),
                        "granularity": "hourly",
                        "org_id": ORG,
                        "metrics": "compute_unit_seconds",
                    },
                    handled=(406,),
                )
            )
        assert caught.value.http_status == 406
    finally:
        client.close()


def test_403_on_both_falls_back_to_project_counters(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                                    clock: SimClock) -> None:  # fmt: skip
    a, b, gone = double.seed_projects(3, org_id=ORG)
    double.seed_consumption(
        a,
        compute_time_seconds=5400,
        data_storage_bytes_hour=720 * 2_000_000_000,
        written_data_bytes=77,
        public_network_transfer_bytes=88,
    )
    del double.projects[gone]
    double.consumption_v2_status = 403
    double.consumption_legacy_status = 403
    provider = make_provider()
    result = provider.consumption([a, b, gone], *window(clock))
    assert set(result) == {a, b}  # the deleted project is left out
    assert result[a].source == "project"
    assert result[a].compute_cu_hours == pytest.approx(1.5)
    assert result[a].storage_gb_months == pytest.approx(2.0)
    assert (result[a].written_bytes, result[a].transfer_bytes) == (77, 88)
    assert result[a].period_start is not None  # the project's billing period, not the window
    assert result[b].compute_cu_hours == 0.0
    assert provider.v2_unavailable and provider.legacy_unavailable
    before = (double.calls(CONSUMPTION_V2_ROUTE), double.calls(CONSUMPTION_LEGACY_ROUTE))
    provider.consumption([a], *window(clock))
    assert (double.calls(CONSUMPTION_V2_ROUTE), double.calls(CONSUMPTION_LEGACY_ROUTE)) == before


# The shared rate limit --------------------------------------------------------------------------------------
def test_1000_projects_take_10_calls_and_draw_no_429(double: NeonDouble, make_provider: Callable[..., NeonProvider],
                                                     clock: SimClock) -> None:  # fmt: skip
    double.consumption_rate_limit_per_minute = 50
    ids = double.seed_projects(1000, org_id=ORG)
    result = make_provider(limit=50).consumption(ids, *window(clock))
    assert len(result) == 1000
    assert double.calls(CONSUMPTION_V2_ROUTE) == math.ceil(1000 / 100)
    assert double.rate_limited_answers() == 0


def test_12000_projects_span_three_windows_without_a_429(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    double.consumption_rate_limit_per_minute = 50
    double.validate_responses = False  # shapes are checked by the smaller tests; this one is about counting
    ids = double.seed_projects(12_000, org_id=ORG)
    started = clock.time()
    provider = make_provider(limit=50)
    result = provider.consumption(ids, *window(clock))
    assert len(result) == 12_000
    assert double.calls(CONSUMPTION_V2_ROUTE) == 120
    assert double.rate_limited_answers() == 0
    # 120 calls at 50 a minute: two full windows, then the third: two waits of (up to) a minute.
    assert 120 <= clock.time() - started < 121
    assert provider.rate_limiter.acquired == 120 and provider.rate_limiter.waits == 2


def test_without_the_limiter_the_double_answers_429_and_the_client_retries(
    double: NeonDouble, make_provider: Callable[..., NeonProvider], clock: SimClock
) -> None:
    double.consumption_rate_limit_per_minute = 50
    double.validate_responses = False
    ids = double.seed_projects(6000, org_id=ORG)
    result = make_provider(limit=10_000).consumption(ids, *window(clock))
    assert len(result) == 6000
    # Call 51 draws a 429 with Retry-After; the client waits it out (simulated) and goes on in the next window.
    assert double.rate_limited_answers() == 1
    assert double.calls(CONSUMPTION_V2_ROUTE) == 60 + 1


def test_rate_limit_setting_feeds_the_default_limiter(double: NeonDouble) -> None:
    settings = Settings.model_validate(
        {"DB_PROVIDER": "neon", "NEON_API_URL": double.base_url, "NEON_API_KEY": KEY,
         "NEON_CONSUMPTION_REQUESTS_PER_MINUTE": "7"}
    )  # fmt: skip
    provider = NeonProvider(settings)
    try:
        assert provider.rate_limiter.limit == 7 and provider.rate_limiter.store is None
        assert Settings.model_validate({}).neon_consumption_requests_per_minute == 50
    finally:
        provider.client.close()


def test_in_process_limiter_waits_for_the_next_window(clock: SimClock) -> None:
    limiter = ConsumptionRateLimiter(None, 50, clock=clock.time, sleep=clock.sleep)
    started = clock.time()
    stamps = []
    for _ in range(120):
        limiter.acquire()
        stamps.append(clock.time())
    per_window: dict[int, int] = {}
    for t in stamps:
        per_window[int(t // 60)] = per_window.get(int(t // 60), 0) + 1
    assert sorted(per_window.values()) == [20, 50, 50]
    assert 120 <= clock.time() - started < 121


def test_max_wait_gives_up(clock: SimClock) -> None:
    limiter = ConsumptionRateLimiter(None, 1, clock=clock.time, sleep=clock.sleep, max_wait_seconds=5)
    limiter.acquire()
    with pytest.raises(RateLimitWaitExceeded):
        limiter.acquire()


# RateLimitStore on the control plane ----------------------------------------------------------------------
@pytest.fixture
def control_plane(scratch_database: str) -> str:
    migrate(scratch_database)
    return scratch_database


def test_store_take_counts_in_fixed_windows(control_plane: str) -> None:
    db = Database(control_plane)
    try:
        store = RateLimitStore(db)
        t0 = 1_800_000_000.0  # a multiple of 60
        assert [store.take("k", 3, 60, t0 + i)[0] for i in range(4)] == [True, True, True, False]
        allowed, retry_after = store.take("k", 3, 60, t0 + 45.5)
        assert not allowed and retry_after == pytest.approx(14.5)
        assert store.take("other", 3, 60, t0 + 10) == (True, 0.0)  # keys are independent
        assert store.count("k", 60, t0 + 59) == 3  # a refused take does not count
        assert store.take("k", 3, 60, t0 + 60) == (True, 0.0)  # the next window
        assert store.take("k", 0, 60, t0 + 61)[0] is False
        # The first take of a window deletes windows older than an hour.
        store.take("k", 3, 60, t0 + 7200)
        windows = db.run("SELECT key, count FROM rate_limit_counters ORDER BY window_start")
        assert windows == [["k", 1]]
    finally:
        db.close()


def test_store_take_is_atomic_under_concurrency(control_plane: str) -> None:
    now = float(int(time.time()) // 60 * 60 + 1)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        db = Database(control_plane)  # a connection each, like separate Lambdas
        try:
            store = RateLimitStore(db)
            db.run("SELECT 1")
            barrier.wait()
            mine = [store.take("race", 50, 60, now)[0] for _ in range(20)]
            with lock:
                results.extend(mine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 160 and results.count(True) == 50
    db = Database(control_plane)
    try:
        assert RateLimitStore(db).count("race", 60, now) == 50
    finally:
        db.close()


def test_two_limiters_sharing_the_store_never_exceed_the_limit(control_plane: str) -> None:
    """Two 'Lambdas' (threads with their own connections) on one budget: 50 per window, never more."""
    window_seconds, limit, each = 1.0, 50, 75
    acquired: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def lambda_container() -> None:
        db = Database(control_plane)
        try:
            limiter = ConsumptionRateLimiter(
                RateLimitStore(db), limit, key="neon:shared", window_seconds=window_seconds
            )
            for _ in range(each):
                limiter.acquire()
                with lock:
                    acquired.append(time.time())
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=lambda_container) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(acquired) == 2 * each
    db = Database(control_plane)
    try:
        counts = [r[0] for r in db.run("SELECT count FROM rate_limit_counters WHERE key = 'neon:shared'")]
    finally:
        db.close()
    assert sum(counts) == 2 * each
    assert max(counts) <= limit
    assert len(counts) >= math.ceil(2 * each / limit)


def test_shared_limiter_drives_the_neon_sync(control_plane: str, double: NeonDouble,
                                             make_provider: Callable[..., NeonProvider],
                                             clock: SimClock) -> None:  # fmt: skip
    double.consumption_rate_limit_per_minute = 50
    double.validate_responses = False
    ids = double.seed_projects(6000, org_id=ORG)
    db = Database(control_plane)
    try:
        limiter = ConsumptionRateLimiter(RateLimitStore(db), 50, clock=clock.time, sleep=clock.sleep)
        result = make_provider(limiter=limiter).consumption(ids, *window(clock))
    finally:
        db.close()
    assert len(result) == 6000
    assert double.calls(CONSUMPTION_V2_ROUTE) == 60 and double.rate_limited_answers() == 0


# Postgres provider -------------------------------------------------------------------------------------------
def _run(url: str, sql: str, **params: Any) -> list[list[Any]]:
    conn = pg8000.native.Connection(**parse_pg_url(url).connect_kwargs(timeout=30))
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def test_postgres_consumption_reads_size_and_active_time(pg_admin_url: str, scratch_database: str) -> None:
    name = parse_pg_url(scratch_database).database
    provider = PostgresProvider(Database(pg_admin_url))
    try:
        end = datetime.now(UTC)
        start = end - timedelta(days=3)  # a tenth of a 30-day month
        before = provider.consumption([name, "no_such_database_x"], start, end)
        assert set(before) == {name}
        first = before[name]
        assert first.source == "postgres" and first.compute_cumulative
        assert first.compute_cu_hours >= 0
        size = _run(pg_admin_url, "SELECT pg_database_size(:n)", n=name)[0][0]
        assert first.storage_gb_months == pytest.approx(size / BYTES_PER_GB * 0.1, rel=0.05)

        _run(
            scratch_database,
            "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g",
        )
        _run(scratch_database, "SELECT pg_sleep(0.3)")  # 0.3 s active, reported when the session ends
        deadline = time.monotonic() + 10
        while True:
            after = provider.consumption([name], start, end)[name]
            if after.compute_cu_hours - first.compute_cu_hours >= 0.25 / 3600 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert after.storage_gb_months > first.storage_gb_months  # ~10 MB more
        assert after.compute_cu_hours - first.compute_cu_hours >= 0.25 / 3600  # 1 CU while active
        assert provider.consumption([], start, end) == {}
    finally:
        provider._admin.close()
