"""Audit-log retention on real Postgres: batches, the time budget, and retention turned off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentdb.container import Services
from agentdb.tools.audit import AuditRetention

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _audit_rows(services: Services, *ages_in_days: float) -> None:
    for days in ages_in_days:
        services.store.db.run(
            "INSERT INTO tool_audit_log (at, user_id, server_id, tool_name, duration_ms, outcome)"
            " VALUES (:at, 'u', 's', 'run_sql', 1, 'ok')",
            at=NOW - timedelta(days=days),
        )


def _ages(services: Services) -> list[int]:
    rows = services.store.db.run("SELECT at FROM tool_audit_log ORDER BY at")
    return [round((NOW - at).total_seconds() / 86400) for (at,) in rows]


def test_old_rows_go_in_batches_and_recent_ones_stay(services: Services) -> None:
    _audit_rows(services, 400, 300, 100, 31, 30, 29, 1)
    report = AuditRetention(services.store, 30, batch_rows=2).run(now=NOW)
    assert (report.deleted, report.complete) == (4, True)  # three batches: 2, 2, 0
    assert _ages(services) == [30, 29, 1]  # exactly 30 days old is not older than 30 days


def test_a_run_out_of_time_stops_between_batches_and_the_next_goes_on(services: Services) -> None:
    _audit_rows(services, 50, 49, 48, 47, 46)
    budget = iter([60.0, 60.0, 1.0])  # seconds left before each batch: two batches fit, then stop
    first = AuditRetention(services.store, 30, batch_rows=2).run(now=NOW, remaining=lambda: next(budget))
    assert (first.deleted, first.complete) == (4, False)
    second = AuditRetention(services.store, 30, batch_rows=2).run(now=NOW)
    assert (second.deleted, second.complete) == (1, True)
    assert _ages(services) == []


def test_zero_keeps_every_row(services: Services) -> None:
    _audit_rows(services, 5000, 1)
    report = AuditRetention(services.store, 0).run(now=NOW)
    assert (report.deleted, report.before) == (0, None)
    assert len(_ages(services)) == 2
