"""Turn one provider reading into a database's figures for the period (pure: no I/O).

Providers report compute in one of two ways (``Consumption.compute_cumulative``):

* **over the period** (Neon): ``compute_cu_hours`` is the use between the period start and now. The new
  figure replaces the old one; rerunning a sync gives the same figure, so nothing is counted twice.
* **as a cumulative counter** (postgres: ``pg_stat_database.active_time``): the reading only grows from
  an origin (``compute_since``), so the period's compute grows by the difference to the previous reading.
  The previous reading is kept across period resets as the baseline. A reading below the previous one is
  a counter reset when the origin moved (or the provider reports none), and then the whole reading is new
  use; with the same origin it is an older sample that arrived late, and it is ignored. The first reading
  of a database counts in full when the counter started inside the period (the origin, or the database's
  creation, is not before the period start), else it is only the baseline.

Storage is always over the period (GB-months, pro-rated) and replaces the old figure.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from agentdb.billing.pricing import Pricing, to_decimal
from agentdb.providers.base import Consumption
from agentdb.store.billing import NewFigures, StoredFigures, as_decimal

_PLACES = Decimal("0.000000001")  # figures are kept to 1e-9 CU-hour / GB-month


def _q(value: Decimal) -> Decimal:
    return max(value, Decimal(0)).quantize(_PLACES)


def next_figures(prev: StoredFigures, reading: Consumption, period_start: datetime, pricing: Pricing) -> NewFigures:
    storage = _q(to_decimal(reading.storage_gb_months))
    counter, since = prev.counter_cu_hours, prev.counter_since
    if not reading.compute_cumulative:
        compute = _q(to_decimal(reading.compute_cu_hours))
    else:
        base = as_decimal(prev.compute_cu_hours) if prev.period_start == period_start else Decimal(0)
        value = _q(to_decimal(reading.compute_cu_hours))
        delta = _counter_delta(prev, value, reading.compute_since, period_start)
        if delta is None:  # an older sample: keep what we have
            compute = base
        else:
            compute = base + delta
            counter, since = value, reading.compute_since
    return NewFigures(
        cost_cents=pricing.cost_cents(compute, storage),
        compute_cu_hours=compute,
        storage_gb_months=storage,
        counter_cu_hours=counter,
        counter_since=since,
    )


def _counter_delta(
    prev: StoredFigures, value: Decimal, since: datetime | None, period_start: datetime
) -> Decimal | None:
    """New use since the previous reading; None when the reading is older than the one kept."""
    if prev.counter_cu_hours is None:
        started_in_period = (since is not None and since >= period_start) or prev.created_at >= period_start
        return value if started_in_period else Decimal(0)
    previous = as_decimal(prev.counter_cu_hours)
    if since is not None and prev.counter_since is not None and since != prev.counter_since:
        return value if since > prev.counter_since else None  # reset (newer origin) or a stale sample
    if value >= previous:
        return value - previous
    if since is None or prev.counter_since is None:
        return value  # went back without a reported origin: a reset
    return None
