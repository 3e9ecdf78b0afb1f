"""`make dbs`: list the tenant databases and roles on the local stack's Postgres server.

Reads the server from DATABASE_URL when set, else from the embedded server under .local/pg. Prints
names only (never a password), so you can watch databases appear and disappear as you call the API.
"""

from __future__ import annotations

import os
import sys

import pg8000.native

from agentdb.pgurl import parse_pg_url
from local.embedded_pg import EmbeddedPostgres
from local.settings import state_dir


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        server = EmbeddedPostgres(state_dir() / "pg")
        if not server.password_file.exists():
            sys.stderr.write("no local server yet: run `make dev` first\n")
            return 1
        url = server.url
    prefix = os.environ.get("TENANT_NAME_PREFIX", "agentdb-").replace("-", "_").replace("_", r"\_") + "%"
    try:
        conn = pg8000.native.Connection(**parse_pg_url(url).connect_kwargs(timeout=5))
    except Exception:
        sys.stderr.write("cannot reach the local Postgres server: is `make dev` running?\n")
        return 1
    databases = conn.run("SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY 1", p=prefix)
    roles = conn.run("SELECT rolname FROM pg_roles WHERE rolname LIKE :p ORDER BY 1", p=prefix)
    conn.close()
    sys.stdout.write(f"tenant databases ({len(databases)}):\n")
    sys.stdout.writelines(f"  {row[0]}\n" for row in databases)
    sys.stdout.write(f"tenant roles ({len(roles)}):\n")
    sys.stdout.writelines(f"  {row[0]}\n" for row in roles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
