"""Powertools Logger, Metrics and Tracer, wired once and shared by every handler and use case.

The Tracer is built on the first invocation, not at import: the X-Ray SDK it loads costs ~0.5 s
of import time (it pulls in botocore), and with tracing disabled (locally, in tests) it is never
loaded at all. In Lambda with ``Tracing: Active`` the first invocation builds it and every later
one reuses it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

logger = Logger(service="agentdb")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "agentdb"), service="agentdb")

Handler = TypeVar("Handler", bound=Callable[..., Any])
_tracer: Tracer | None = None


def tracing_enabled() -> bool:
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes", "on")
    return not disabled and bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL")


def get_tracer() -> Tracer:
    global _tracer
    if _tracer is None:
        from aws_lambda_powertools import Tracer

        _tracer = Tracer(service="agentdb")
    return _tracer


def lambda_handler(fn: Handler) -> Handler:
    """Logger context, metrics flushing and (when enabled) X-Ray tracing around a Lambda handler."""
    with_metrics = metrics.log_metrics(logger.inject_lambda_context(clear_state=True)(fn))
    traced: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(event: Any, context: Any) -> Any:
        if not tracing_enabled():
            return with_metrics(event, context)
        if not traced:
            traced.append(get_tracer().capture_lambda_handler(with_metrics, capture_response=False))
        return traced[0](event, context)

    return wrapper  # type: ignore[return-value]


__all__ = ["MetricUnit", "get_tracer", "lambda_handler", "logger", "metrics"]
