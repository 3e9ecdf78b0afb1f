"""Consumption sync of 30,000 Neon projects at Neon's rate limit, on a simulated clock.

The real code path: ``NeonProvider.consumption`` in batches of 100 project ids, over real HTTP to the
Neon double (``local.neon_double``), which enforces 50 requests per minute and answers 429 past it. Both
sides run on one simulated clock: the shared ``ConsumptionRateLimiter`` sleeps on it and the double counts
its windows on it, so the minutes spent waiting for the rate limit pass at once and the benchmark takes
seconds. Reported:

* calls made and 429s drawn (target: 0);
* simulated wall time: the time the rate limit imposes (300 calls at 50 a minute);
* real elapsed time: the client, HTTP and double work, which in production would add to the waiting;
* projected wall time = simulated + real (an upper bound: requests also proceed while a window is open);
* whether that fits one 15-minute Lambda invocation (target: all 30,000 within 15 minutes).

The window is the last 30 days (daily granularity, 31 timeframes per project: the largest answers a
month-to-date sync gets). The double validates its first batch of answers against the spec's response
schemas, then stops (jsonschema on 100 projects x 31 timeframes is slower than everything else together).
The limiter here counts in process; in a deployment it counts in the control plane (RateLimitStore),
one more statement per call.
"""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import median_ms, write_result

PROJECTS = int(os.environ.get("BENCH_CONSUMPTION_PROJECTS", "30000"))
RATE_LIMIT = int(os.environ.get("BENCH_CONSUMPTION_RATE_LIMIT", "50"))
WINDOW_DAYS = int(os.environ.get("BENCH_CONSUMPTION_WINDOW_DAYS", "30"))
INVOCATION_SECONDS = 15 * 60
BATCH = 100
API_KEY = "bench-neon-consumption-key"
ORG = "org-bench-consumption"


class SimClock:
    """Simulated time: ``time()`` reads it, ``sleep(s)`` moves it forward at once."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)


def run() -> dict[str, Any]:
    from agentdb.billing.ratelimit import ConsumptionRateLimiter
    from agentdb.config import Settings
    from agentdb.providers.neon import NeonClient, NeonProvider
    from local.neon_double import CONSUMPTION_ROUTES, CONSUMPTION_V2_ROUTE, NeonDouble

    clock = SimClock(time.time())
    double = NeonDouble(API_KEY, clock=clock.time, consumption_rate_limit_per_minute=RATE_LIMIT)
    url = double.start()
    try:
        seed_started = time.perf_counter()
        ids = double.seed_projects(PROJECTS, org_id=ORG)
        seed_seconds = time.perf_counter() - seed_started

        settings = Settings.model_validate(
            {"DB_PROVIDER": "neon", "NEON_API_URL": url, "NEON_API_KEY": API_KEY, "NEON_ORG_ID": ORG}
        )
        client = NeonClient(url, API_KEY, org_id=ORG, sleep=clock.sleep, timeout=30)
        limiter = ConsumptionRateLimiter(None, RATE_LIMIT, clock=clock.time, sleep=clock.sleep)
        provider = NeonProvider(settings, client, rate_limiter=limiter, now=clock.now)
        end = clock.now()
        start = end - timedelta(days=WINDOW_DAYS)

        synced: dict[str, Any] = {}
        batch_seconds: list[float] = []
        sim_started = clock.time()
        real_started = time.perf_counter()
        for i in range(0, len(ids), BATCH):
            t0 = time.perf_counter()
            synced.update(provider.consumption(ids[i : i + BATCH], start, end))
            batch_seconds.append(time.perf_counter() - t0)
            if i == 0:
                double.validate_responses = False  # the first batch's answers were checked against the spec
        real_elapsed = time.perf_counter() - real_started
        simulated = clock.time() - sim_started
        client.close()

        calls = sum(double.calls(route) for route in CONSUMPTION_ROUTES)
        v2_calls = double.calls(CONSUMPTION_V2_ROUTE)
        rate_limited = double.rate_limited_answers()
        projected = simulated + real_elapsed
        # The budget is shared by every Lambda, so fanning out adds no throughput: one invocation syncs
        # at most (its length in minutes x the per-minute limit) batches.
        capacity = int(INVOCATION_SECONDS / 60 * RATE_LIMIT * BATCH)
        result: dict[str, Any] = {
            "benchmark": "consumption",
            "projects": PROJECTS,
            "batch_size": BATCH,
            "rate_limit_per_minute": RATE_LIMIT,
            "window": {"days": WINDOW_DAYS, "granularity": "daily"},
            "seed_seconds": round(seed_seconds, 2),
            "projects_synced": len(synced),
            "all_synced": len(synced) == PROJECTS and all(c.source == "v2" for c in synced.values()),
            "calls_made": calls,
            "v2_calls": v2_calls,
            "expected_calls": math.ceil(PROJECTS / BATCH),
            "rate_limited_429s": rate_limited,
            "limiter_waits": limiter.waits,
            "simulated_wall_seconds": round(simulated, 1),
            "simulated_wall_minutes": round(simulated / 60, 2),
            # Starting right at a window's start: every window but the last is waited out in full.
            "worst_case_wait_minutes": math.ceil(calls / RATE_LIMIT) - 1,
            "real_elapsed_seconds": round(real_elapsed, 2),
            "batch_median_ms": median_ms(batch_seconds),
            "projected_wall_seconds": round(projected, 1),
            "projected_wall_minutes": round(projected / 60, 2),
            "invocation_limit_seconds": INVOCATION_SECONDS,
            "fits_one_invocation": projected <= INVOCATION_SECONDS,
            "plan": "one invocation" if projected <= INVOCATION_SECONDS else "fan out over successive invocations",
            "projects_per_invocation_at_limit": capacity,
            "target": "all 30,000 synced within 15 minutes of wall time, no 429",
            "within_target": len(synced) == PROJECTS and rate_limited == 0 and projected <= INVOCATION_SECONDS,
            "spec_violations": len(double.violations) + len(double.response_violations),
            "fallback_projections_minutes": {
                # Same batching on the legacy endpoint; one GET per project on the project counters.
                "legacy": round(math.ceil(PROJECTS / BATCH) / RATE_LIMIT, 1),
                "project_counters": round(PROJECTS / RATE_LIMIT, 1),
            },
        }
    finally:
        double.stop()
    write_result("consumption", result)
    return result


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
