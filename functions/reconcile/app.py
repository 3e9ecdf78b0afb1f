"""Reconcile function: the daily reconciliation of drift, and key rotation on demand (thin: parse -> one use
case -> its report).

* EventBridge Scheduler, input ``{"action": "reconcile"}`` daily: ReconcileService.run. ``"dryRun": true``
  reports without acting (``RECONCILE_DRY_RUN=true`` makes that the default).
* ``{"action": "rotate-keys"}`` (an operator's invocation, README "Key rotation"): KeyRotation.run; optional
  ``"limit"`` (records this run). A run that does not finish in time reports ``complete: false``: invoke again.
* ``{"action": "prune-audit-log"}`` daily: AuditRetention.run deletes audit rows older than
  ``AUDIT_LOG_RETENTION_DAYS`` (README "Audit log").

A run that could not repair something raises after logging its report, so the invocation counts as failed
(retried, then dead-lettered, with an alarm).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.container import get_services
from agentdb.errors import InvalidInput
from agentdb.observability import lambda_handler, logger

# Time kept back from the function's remaining time for the answer and the log flush.
_RESERVE_SECONDS = 30.0


def _remaining(context: LambdaContext) -> Callable[[], float]:
    from agentdb.billing.service import Deadline

    return Deadline.from_context(context, _RESERVE_SECONDS).remaining


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise InvalidInput("the event must be a JSON object")
    action = event.get("action", "reconcile")
    logger.append_keys(action=action)
    if action == "reconcile":
        dry_run = event.get("dryRun")
        if dry_run is not None and not isinstance(dry_run, bool):
            raise InvalidInput("dryRun must be true or false")
        report = get_services().reconcile.run(dry_run=dry_run, remaining=_remaining(context))
        result = {"action": "reconcile", **report.to_dict()}
        if report.failures:
            from agentdb.reconcile.service import ReconcileIncomplete

            raise ReconcileIncomplete(f"{report.failures} repair(s) failed; the report is in the log")
        return result
    if action == "rotate-keys":
        limit = event.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInput("limit must be a positive integer")
        rotation = get_services().key_rotation.run(limit=limit, remaining=_remaining(context))
        return {"action": "rotate-keys", **rotation.to_dict()}
    if action == "prune-audit-log":
        pruned = get_services().audit_retention.run(remaining=_remaining(context))
        return {"action": "prune-audit-log", **pruned.to_dict()}
    raise InvalidInput(f"unknown action {action!r}; use reconcile, rotate-keys or prune-audit-log")
