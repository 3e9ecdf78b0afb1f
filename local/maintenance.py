"""The local stack's control plane for one-off commands (`make reconcile`, `make rotate-keys`).

Uses ``DATABASE_URL`` when set, else the embedded server `make dev` keeps under ``.local/pg`` (started for
the command, and stopped again, when `make dev` is not running), with the same keys and defaults as
`make dev`, and applies pending migrations first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from agentdb.container import Services
from local.dev import CONTROL_PLANE_DB, DEFAULT_EMBEDDED_PG_PORT, ensure_database, set_environment
from local.settings import state_dir


class NoLocalStack(RuntimeError):
    pass


@contextmanager
def local_services() -> Iterator[Services]:
    """Services wired to the local control plane (closed, and the embedded server stopped if this started it)."""
    from agentdb.store.migrate import migrate
    from local.embedded_pg import EmbeddedPostgres

    local_dir = state_dir()
    set_environment(local_dir)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # the report is the output; failures still log
    started: EmbeddedPostgres | None = None
    if not os.environ.get("DATABASE_URL"):
        server = EmbeddedPostgres(
            local_dir / "pg", port=int(os.environ.get("EMBEDDED_PG_PORT", DEFAULT_EMBEDDED_PG_PORT))
        )
        if not server.password_file.exists():
            raise NoLocalStack("no local stack yet: run `make dev` once first (or set DATABASE_URL)")
        if not server._running():
            server.start()
            started = server
        os.environ["DATABASE_URL"] = ensure_database(server.url, CONTROL_PLANE_DB)
    os.environ.setdefault("POSTGRES_ADMIN_URL", os.environ["DATABASE_URL"])
    migrate(os.environ["DATABASE_URL"])
    services = Services()
    try:
        yield services
    finally:
        services.close()
        if started is not None:
            started.stop()
