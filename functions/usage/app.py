"""Usage function: the consumption sync, the billing-period reset, and the usage API.

Event kinds (thin: parse → one BillingService use case → shape the answer):

* EventBridge Scheduler, input ``{"action": "sync"}`` every 15 minutes: sync every billed database (fanned
  out to the usage queue when it does not fit in one invocation), then reconcile paused state.
* EventBridge Scheduler, input ``{"action": "reset"}`` monthly: start the new billing period, resume.
  ``{"action": "reset", "userIds": [...]}`` (an operator's manual reset) starts those users' periods now.
* ``{"action": "enforce", "userId": "..."}``: finish pausing or resuming one user's databases.
* SQS batches from the usage queue (``{"kind": "sync", "projectIds": [...]}`` /
  ``{"kind": "enforce", "userId": ...}``), with partial batch failures reported per message.
* HTTP (``GET /users/{userId}/db-usage``): served by usage_routes.py, imported on the first HTTP request.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.container import get_services
from agentdb.errors import InvalidInput
from agentdb.observability import lambda_handler, logger

# Time kept back from the function's remaining time for the answer and the log flush.
_RESERVE_SECONDS = 5.0
_MAX_PROJECTS_PER_MESSAGE = 100


def _deadline(context: LambdaContext) -> Any:
    from agentdb.billing.service import Deadline

    return Deadline.from_context(context, _RESERVE_SECONDS)


def _handle_scheduled(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    action = event.get("action")
    billing = get_services().billing
    logger.append_keys(action=action)
    if action == "sync":
        from agentdb.billing.service import SyncIncomplete

        report = billing.sync_all(deadline=_deadline(context))
        if report.failed_requests:  # visible as a failed invocation: retried, then dead-lettered
            raise SyncIncomplete(f"{report.failed_requests} consumption request(s) failed; the rest is synced")
        return {"action": "sync", **report.to_dict()}
    if action == "reset":
        user_ids = event.get("userIds")
        if user_ids is not None and (
            not isinstance(user_ids, list) or not all(isinstance(u, str) and u for u in user_ids)
        ):
            raise InvalidInput("userIds must be a list of user ids")
        return {"action": "reset", **billing.reset_period(user_ids=user_ids, deadline=_deadline(context)).to_dict()}
    if action == "enforce":
        user_id = event.get("userId")
        if not isinstance(user_id, str) or not user_id:
            raise InvalidInput("userId must be a non-empty string")
        outcome = billing.enforce(user_id, deadline=_deadline(context))
        return {"action": "enforce", "userId": user_id, "budget": outcome.to_dict() if outcome else None}
    raise InvalidInput(f"unknown action {action!r}; use sync, reset or enforce")


def _handle_sqs(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    billing = get_services().billing
    deadline = _deadline(context)

    def record_handler(record: SQSRecord) -> None:
        try:
            body = json.loads(record.body)
        except ValueError:
            raise InvalidInput("usage work message is not JSON") from None
        kind = body.get("kind") if isinstance(body, dict) else None
        if kind == "sync":
            ids = body.get("projectIds")
            if (
                not isinstance(ids, list)
                or not all(isinstance(i, str) for i in ids)
                or len(ids) > _MAX_PROJECTS_PER_MESSAGE
            ):
                raise InvalidInput("projectIds must be a list of at most 100 project ids")
            billing.sync_projects(ids, deadline=deadline)
        elif kind == "enforce" and isinstance(body.get("userId"), str):
            billing.enforce(body["userId"], deadline=deadline)
        else:
            raise InvalidInput(f"unknown usage work message kind {kind!r}")

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(process_partial_response(event, record_handler, processor, context))


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return _handle_sqs(event, context)
    if "action" in event:
        return _handle_scheduled(event, context)
    import usage_routes  # the function's own directory is on sys.path, as in Lambda

    return usage_routes.app.resolve(event, context)
