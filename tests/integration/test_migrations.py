"""Migrations: ordered, recorded, safe to run twice and concurrently, and a changed file is refused."""

from __future__ import annotations

import threading

import pytest

from agentdb.errors import ConfigError
from agentdb.store import Database
from agentdb.store.migrate import available_migrations, migrate


def test_migrate_twice_applies_once(scratch_database: str) -> None:
    versions = [v for v, _ in available_migrations()]
    assert versions == sorted(versions) and versions[0] == "0001_core"
    assert migrate(scratch_database) == versions
    assert migrate(scratch_database) == []
    db = Database(scratch_database)
    tables = {r[0] for r in db.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    db.close()
    seed = {"user_global_database", "workspace_database", "user_db_budget", "mcp_tool_schema_cache"}
    assert seed | {"users", "workspaces", "workspace_members", "processed_events", "tool_audit_log"} <= tables


def test_concurrent_runners_apply_each_migration_once(scratch_database: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            results.append(migrate(scratch_database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [v for r in results for v in r]
    assert sorted(applied) == [v for v, _ in available_migrations()]


def test_seed_columns_are_kept(scratch_database: str) -> None:
    migrate(scratch_database)
    db = Database(scratch_database)
    cols = {
        r[0] for r in db.run("SELECT column_name FROM information_schema.columns WHERE table_name = 'user_db_budget'")
    }
    db.close()
    assert {"id", "user_id", "custom_budget_cents", "budget_exceeded", "current_period_start", "total_cost_cents",
            "last_sync", "created_at", "updated_at"} <= cols  # fmt: skip


def test_a_migration_changed_after_it_ran_is_refused(scratch_database: str) -> None:
    migrate(scratch_database)
    db = Database(scratch_database)
    db.run("UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001_core'")
    db.close()
    with pytest.raises(ConfigError, match="0001_core changed"):
        migrate(scratch_database)
