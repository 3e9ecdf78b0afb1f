"""Audit-log retention: the daily maintenance run deletes ``tool_audit_log`` rows older than
``AUDIT_LOG_RETENTION_DAYS``, oldest first, in batches small enough to keep each DELETE short while the
service writes new rows. A run that runs out of time reports ``complete: false``; the next one goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentdb.observability import MetricUnit, logger, metrics
from agentdb.store.repository import Store

BATCH_ROWS = 5000
_BATCH_SECONDS = 5.0  # kept back for one more batch


@dataclass
class PruneReport:
    retention_days: int
    before: str | None
    deleted: int = 0
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "retentionDays": self.retention_days,
            "before": self.before,
            "deleted": self.deleted,
            "complete": self.complete,
        }


class AuditRetention:
    def __init__(self, store: Store, retention_days: int, *, batch_rows: int = BATCH_ROWS) -> None:
        self.store = store
        self.retention_days = retention_days
        self.batch_rows = batch_rows

    def run(self, *, now: datetime | None = None, remaining: Callable[[], float] | None = None) -> PruneReport:
        if self.retention_days <= 0:
            return PruneReport(self.retention_days, None)
        before = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        report = PruneReport(self.retention_days, before.isoformat())
        while True:
            if remaining is not None and remaining() < _BATCH_SECONDS:
                report.complete = False
                break
            deleted = self.store.prune_tool_audit_log(before, self.batch_rows)
            report.deleted += deleted
            if deleted < self.batch_rows:
                break
        metrics.add_metric(name="AuditRowsPruned", unit=MetricUnit.Count, value=report.deleted)
        logger.info("audit log pruned", extra=report.to_dict())
        return report
