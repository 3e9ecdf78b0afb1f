"""Lifecycle function: platform lifecycle events (EventBridge) and the admin HTTP routes.

Thin by design: parse the event, call one LifecycleService use case, shape the response. The HTTP
routes live in lifecycle_routes.py, imported on the first HTTP request only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.container import get_services
from agentdb.observability import lambda_handler, logger


def _handle_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    """Apply one lifecycle event. Raising makes Lambda retry the event and, at last, dead-letter it."""
    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    envelope = EventBridgeModel.model_validate(event)
    at: datetime = envelope.time
    logger.append_keys(event_id=envelope.id, detail_type=envelope.detail_type)
    detail = envelope.detail if isinstance(envelope.detail, dict) else {}
    outcome = get_services().lifecycle.handle_event(envelope.id, envelope.detail_type, detail, at)
    logger.info("lifecycle event applied", extra={"action": outcome.action})
    return {"action": outcome.action, **outcome.data}


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "detail-type" in event:
        return _handle_eventbridge(event)
    import lifecycle_routes  # the function's own directory is on sys.path, as in Lambda

    return lifecycle_routes.app.resolve(event, context)
