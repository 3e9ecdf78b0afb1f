"""The cost model, worked by hand: prices, pro-rating, rounding to whole cents, budgets, fan-out sizing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agentdb.billing.batching import batch_count, chunks, request_capacity, seconds_per_request, usable_seconds
from agentdb.billing.figures import next_figures
from agentdb.billing.pricing import (
    Pricing,
    day_start,
    dollars,
    is_over_budget,
    limit_cents,
    month_start,
    round_cents,
    tier_limits,
    to_decimal,
)
from agentdb.config import load_settings
from agentdb.providers.base import Consumption, month_fraction
from agentdb.store.billing import StoredFigures

DEFAULT = Pricing(compute_per_cu_hour=Decimal("0.16"), storage_per_gb_month=Decimal("0.35"))


def test_default_prices_come_from_the_settings() -> None:
    assert Pricing.from_settings(load_settings({})) == DEFAULT
    custom = Pricing.from_settings(
        load_settings({"NEON_COMPUTE_PRICE_PER_CU_HOUR": "0.1", "NEON_STORAGE_PRICE_PER_GB_MONTH": "0.2"})
    )
    assert custom == Pricing(Decimal("0.1"), Decimal("0.2"))


@pytest.mark.parametrize(
    ("cu_hours", "gb_months", "cents", "worked"),
    [
        (0, 0, 0, "nothing used"),
        (1, 0, 16, "1 CU-h x $0.16 = $0.16"),
        (10, 2, 230, "10 x 0.16 = $1.60; 2 x 0.35 = $0.70; $2.30"),
        (0, 1, 35, "10 GB kept 3 days = 10 x 3/30 = 1 GB-month x $0.35"),
        (0, 0.25, 9, "0.5 GB kept 15 days = 0.25 GB-month x 0.35 = 8.75 c -> 9 c"),
        (180, 5, 3055, "0.25 CU all month (720 h) = 180 CU-h = $28.80; 5 GB all month = $1.75"),
        (0.03125, 0, 1, "0.03125 x 0.16 = $0.005 = 0.5 c -> 1 c (half up)"),
        (0.03, 0, 0, "0.03 x 0.16 = $0.0048 = 0.48 c -> 0 c"),
        (0.025, 0.01, 1, "0.4 c + 0.35 c = 0.75 c -> 1 c: parts added before rounding (0 + 0 otherwise)"),
        (0.29, 0, 5, "0.29 x 0.16 = $0.0464 -> 5 c"),
        (-3, -1, 0, "negative figures count as zero"),
    ],
)
def test_cost_in_whole_cents(cu_hours: float, gb_months: float, cents: int, worked: str) -> None:
    assert DEFAULT.cost_cents(cu_hours, gb_months) == cents, worked


def test_arithmetic_is_decimal_not_binary_float() -> None:
    # As floats, 1.005 * 100 = 100.49999999999999 and would round to 100 cents.
    one_dollar = Pricing(Decimal(1), Decimal(1))
    assert one_dollar.cost_cents(1.005, 0) == 101
    # 0.1 + 0.2 != 0.3 in binary; here it is exactly 30 cents.
    assert Pricing(Decimal("0.1"), Decimal("0.2")).cost_cents(1, 1) == 30
    assert to_decimal(0.16) == Decimal("0.16")
    cost = DEFAULT.cost(10, 2)
    assert cost.compute_dollars == Decimal("1.60") and cost.storage_dollars == Decimal("0.70")
    assert cost.dollars == Decimal("2.30") and cost.cents == 230


def test_round_cents_is_half_up() -> None:
    assert [round_cents(Decimal(v)) for v in ("0.49", "0.5", "1.5", "2.5", "2.4999")] == [0, 1, 2, 3, 2]


def test_pro_rating_of_storage() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert month_fraction(start, start + timedelta(days=3)) == pytest.approx(0.1)
    assert month_fraction(start, start + timedelta(days=30)) == pytest.approx(1.0)
    assert month_fraction(start, start - timedelta(days=1)) == 0.0
    ten_gb_three_days = 10 * month_fraction(start, start + timedelta(days=3))
    assert DEFAULT.cost_cents(0, ten_gb_three_days) == 35


def test_bad_quantities_are_refused() -> None:
    with pytest.raises(ValueError):
        to_decimal(float("nan"))
    with pytest.raises(TypeError):
        to_decimal(True)


# Budgets ----------------------------------------------------------------------------------------


def test_tier_budgets_and_custom_override() -> None:
    settings = load_settings({})
    assert tier_limits(settings) == {"free": 200, "pro": 2000, "team": 5000, "enterprise": 10000}
    assert limit_cents(settings, "team", None) == 5000
    assert limit_cents(settings, "team", 123) == 123
    assert limit_cents(settings, "enterprise", 0) == 0
    assert limit_cents(settings, None, None) == 200
    configured = load_settings({"BUDGET_PRO_CENTS": "2500"})
    assert limit_cents(configured, "pro", None) == 2500


def test_reaching_the_limit_is_over_it() -> None:
    assert is_over_budget(200, 200)
    assert is_over_budget(201, 200)
    assert not is_over_budget(199, 200)
    assert is_over_budget(0, 0)
    assert dollars(1234) == "$12.34" and dollars(5) == "$0.05"


def test_period_boundaries_are_utc() -> None:
    at = datetime(2026, 3, 17, 13, 45, 12, tzinfo=UTC)
    assert month_start(at) == datetime(2026, 3, 1, tzinfo=UTC)
    assert day_start(at) == datetime(2026, 3, 17, tzinfo=UTC)


# Fan-out sizing ---------------------------------------------------------------------------------


def test_batches_of_at_most_100_projects() -> None:
    ids = [f"p{i}" for i in range(250)]
    assert [len(c) for c in chunks(ids)] == [100, 100, 50]
    assert [batch_count(n) for n in (0, 1, 100, 101, 250, 30_000)] == [0, 1, 1, 2, 3, 300]
    with pytest.raises(ValueError):
        chunks(ids, 0)


@pytest.mark.parametrize(
    ("rpm", "remaining", "capacity", "worked"),
    [
        (50, 900, 390, "margin 120 s; 1.2 s/request floored at 2 s: 780 / 2"),
        (30, 900, 390, "60/30 = 2 s per request: 780 / 2"),
        (10, 900, 130, "6 s per request: 780 / 6"),
        (1, 900, 13, "60 s per request: 780 / 60"),
        (50, 30, 12, "margin 20% of 30 s = 6 s: 24 / 2"),
        (1, 30, 0, "24 s left cannot fit one 60 s request"),
        (50, 0, 0, "no time"),
    ],
)
def test_request_capacity_of_one_invocation(rpm: int, remaining: float, capacity: int, worked: str) -> None:
    assert request_capacity(rpm, remaining) == capacity, worked


def test_seconds_per_request_and_usable_time() -> None:
    assert seconds_per_request(50) == 2.0
    assert seconds_per_request(6) == 10.0
    assert usable_seconds(900) == 780
    assert usable_seconds(100) == 80


def test_tenant_lock_namespaces_match_the_lifecycle() -> None:
    from agentdb.billing import service as billing
    from agentdb.lifecycle import service as lifecycle
    from agentdb.store.repository import TENANT_LOCK_NAMESPACE

    # Billing and lifecycle take the very same per-tenant lock: one table, in the store.
    assert billing.TENANT_LOCK_NAMESPACE is TENANT_LOCK_NAMESPACE is lifecycle.TENANT_LOCK_NAMESPACE
    assert TENANT_LOCK_NAMESPACE == {"global": 7301, "workspace": 7302}


# Figures from one reading -----------------------------------------------------------------------

PERIOD = datetime(2026, 3, 1, tzinfo=UTC)


def stored(
    *,
    compute: str = "0",
    counter: str | None = None,
    since: datetime | None = None,
    period: datetime | None = PERIOD,
    created: datetime = PERIOD - timedelta(days=40),
) -> StoredFigures:
    return StoredFigures(
        kind="global",
        tenant_id="u",
        cost_cents=0,
        compute_cu_hours=Decimal(compute),
        storage_gb_months=Decimal(0),
        counter_cu_hours=Decimal(counter) if counter is not None else None,
        counter_since=since,
        last_sync=None,
        period_start=period,
        created_at=created,
    )


def reading(cu: float, gbm: float = 0.0, *, cumulative: bool = False, since: datetime | None = None) -> Consumption:
    return Consumption(
        project_id="p", compute_cu_hours=cu, storage_gb_months=gbm, compute_cumulative=cumulative, compute_since=since
    )


def test_period_figures_replace_the_old_ones() -> None:
    new = next_figures(stored(compute="7"), reading(10, 2), PERIOD, DEFAULT)
    assert new.compute_cu_hours == Decimal(10) and new.storage_gb_months == Decimal(2) and new.cost_cents == 230


def test_cumulative_counter_bills_the_difference() -> None:
    origin = PERIOD - timedelta(days=90)
    prev = stored(compute="2", counter="50", since=origin)
    new = next_figures(prev, reading(60.5, cumulative=True, since=origin), PERIOD, DEFAULT)
    assert new.compute_cu_hours == Decimal("12.5")  # 2 + (60.5 - 50)
    assert new.counter_cu_hours == Decimal("60.5") and new.counter_since == origin
    assert new.cost_cents == 200  # 12.5 x 0.16 = $2.00


def test_cumulative_counter_reset_and_stale_samples() -> None:
    origin, later = PERIOD - timedelta(days=90), PERIOD + timedelta(days=3)
    prev = stored(compute="2", counter="50", since=origin)
    reset = next_figures(prev, reading(4, cumulative=True, since=later), PERIOD, DEFAULT)
    assert reset.compute_cu_hours == Decimal(6) and reset.counter_since == later  # 2 + 4 since the reset
    stale = next_figures(prev, reading(40, cumulative=True, since=origin), PERIOD, DEFAULT)
    assert stale.compute_cu_hours == Decimal(2) and stale.counter_cu_hours == Decimal(50)  # older sample ignored
    no_origin = next_figures(stored(compute="2", counter="50"), reading(4, cumulative=True), PERIOD, DEFAULT)
    assert no_origin.compute_cu_hours == Decimal(6)  # went back, no origin reported: a reset


def test_first_counter_reading_counts_only_when_it_started_in_the_period() -> None:
    old_db = stored(compute="0", counter=None)
    assert next_figures(old_db, reading(30, cumulative=True), PERIOD, DEFAULT).compute_cu_hours == 0  # baseline
    new_db = stored(compute="0", counter=None, created=PERIOD + timedelta(days=2))
    assert next_figures(new_db, reading(30, cumulative=True), PERIOD, DEFAULT).compute_cu_hours == 30
    since_in_period = reading(30, cumulative=True, since=PERIOD + timedelta(hours=1))
    assert next_figures(old_db, since_in_period, PERIOD, DEFAULT).compute_cu_hours == 30


def test_a_new_period_starts_the_cumulative_compute_from_zero() -> None:
    origin = PERIOD - timedelta(days=90)
    last_month = stored(compute="80", counter="50", since=origin, period=PERIOD - timedelta(days=31))
    new = next_figures(last_month, reading(55, cumulative=True, since=origin), PERIOD, DEFAULT)
    assert new.compute_cu_hours == Decimal(5)
