"""How much consumption sync one invocation can do, and how the rest is cut into batches.

A consumption request covers up to ``MAX_PROJECTS_PER_REQUEST`` projects (Neon's consumption endpoints
take at most 100 ``project_ids``) over one period. Requests are limited account-wide to
``NEON_CONSUMPTION_REQUESTS_PER_MINUTE`` (``agentdb.billing.ratelimit``), so a request costs at least
``60 / rpm`` seconds of wall time, and never less than ``MIN_SECONDS_PER_REQUEST`` (the request's own
latency plus the control-plane writes for 100 projects).

One invocation may spend its remaining time minus a safety margin (``SAFETY_MARGIN_SECONDS``, or
``SAFETY_MARGIN_FRACTION`` of the remaining time when that is less), kept for the budget enforcement
that follows the figures and for the reconcile pass:

    capacity (requests) = floor((remaining - margin) / max(60 / rpm, MIN_SECONDS_PER_REQUEST))

With the defaults (900 s function timeout, 50 requests/min): (900 - 120) / 2 = 390 requests, i.e. up to
39,000 projects when they share a billing period. A sync that needs more requests than that is fanned
out: one SQS message per request-sized batch, consumed by the usage function under the same shared
rate limit, so no invocation runs out of time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_PROJECTS_PER_REQUEST = 100
MIN_SECONDS_PER_REQUEST = 2.0
SAFETY_MARGIN_SECONDS = 120.0
SAFETY_MARGIN_FRACTION = 0.2


def chunks(items: Sequence[T], size: int = MAX_PROJECTS_PER_REQUEST) -> list[list[T]]:
    if size < 1:
        raise ValueError("size must be at least 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def seconds_per_request(requests_per_minute: int) -> float:
    return max(60.0 / max(requests_per_minute, 1), MIN_SECONDS_PER_REQUEST)


def usable_seconds(remaining_seconds: float) -> float:
    margin = min(SAFETY_MARGIN_SECONDS, SAFETY_MARGIN_FRACTION * max(remaining_seconds, 0.0))
    return max(remaining_seconds - margin, 0.0)


def request_capacity(requests_per_minute: int, remaining_seconds: float) -> int:
    """How many consumption requests fit in one invocation with ``remaining_seconds`` left."""
    return math.floor(usable_seconds(remaining_seconds) / seconds_per_request(requests_per_minute))


def batch_count(projects: int) -> int:
    return math.ceil(projects / MAX_PROJECTS_PER_REQUEST) if projects > 0 else 0
