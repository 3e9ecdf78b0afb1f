"""Apply the ordered SQL migrations in ``migrations/`` (``NNNN_name.sql``).

Safe to run twice and concurrently: a session advisory lock serialises runners, each migration
commits together with its ledger row, and a migration whose file changed after it was applied is
reported instead of silently ignored.
"""

from __future__ import annotations

import hashlib
import sys
from importlib import resources

from agentdb.errors import ConfigError
from agentdb.store.db import Database

_LOCK_KEY = 7_300_001  # arbitrary, constant: "agentdb migrations"


def available_migrations() -> list[tuple[str, str]]:
    """(version, sql) pairs in order."""
    folder = resources.files("agentdb.store") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def migrate(url: str | Database) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    db = url if isinstance(url, Database) else Database(url, application_name="agentdb-migrate")
    applied_now: list[str] = []
    db.run("SELECT pg_advisory_lock(:key)", key=_LOCK_KEY)
    try:
        db.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {row[0]: row[1] for row in db.run("SELECT version, checksum FROM schema_migrations")}
        for version, sql in available_migrations():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise ConfigError(f"migration {version} changed after it was applied; add a new migration instead")
                continue
            with db.transaction():
                for statement in _statements(sql):
                    db.run(statement)
                db.run(
                    "INSERT INTO schema_migrations (version, checksum) VALUES (:v, :c)",
                    v=version,
                    c=checksum,
                )
            applied_now.append(version)
    finally:
        db.run("SELECT pg_advisory_unlock(:key)", key=_LOCK_KEY)
        if not isinstance(url, Database):
            db.close()
    return applied_now


def _statements(sql: str) -> list[str]:
    """Split a migration on semicolons at line ends (our migrations use no dollar-quoted bodies)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";").strip()]


def main() -> None:
    """``python -m agentdb.store.migrate`` — apply migrations to the configured control plane."""
    from agentdb.container import control_plane_url

    applied = migrate(control_plane_url())
    sys.stdout.write(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}\n")


if __name__ == "__main__":
    main()
