"""The local stack: ``python -m local.dev --port 3000 [--host 127.0.0.1]`` (what `make dev` runs).

Starts an embedded Postgres under ``.local/pg`` (unless ``DATABASE_URL`` is set), applies the control
plane's migrations and serves template.yaml's API through the local gateway. The embedded server listens
on a fixed port (``EMBEDDED_PG_PORT``, default 54329) because the tenant URIs stored in the control
plane contain it. Ctrl-C stops the gateway and the embedded Postgres.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from local.settings import REPO_ROOT, local_encryption_key, local_jwt_secret, state_dir

CONTROL_PLANE_DB = "agentdb"
DEFAULT_EMBEDDED_PG_PORT = 54329

_ENV_DEFAULTS = {
    "KEYRING": "local",
    "DB_PROVIDER": "postgres",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "agentdb-local",
    "POWERTOOLS_SERVICE_NAME": "agentdb",
    "POWERTOOLS_DEV": "false",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _say(message: str) -> None:
    print(message, flush=True)


def set_environment(local_dir: Path) -> None:
    """Defaults the handlers read; set before any handler (or agentdb's cached settings) is imported."""
    os.environ["LOCAL_JWT_SECRET"] = local_jwt_secret(local_dir)
    if not (os.environ.get("LOCAL_ENCRYPTION_KEY") or os.environ.get("NEON_CONNECTION_ENCRYPTION_KEY")):
        os.environ["LOCAL_ENCRYPTION_KEY"] = local_encryption_key(local_dir)
    for name, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return a URL to it with the same credentials."""
    import pg8000.native

    from agentdb.pgurl import parse_pg_url

    admin = parse_pg_url(admin_url)
    conn = pg8000.native.Connection(**admin.connect_kwargs(timeout=30))
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :name", name=name):
            conn.run(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return admin.with_credentials(admin.user, admin.password or "", name)


def run_migrations(url: str) -> None:
    try:
        from agentdb.store.migrate import migrate
    except ImportError as exc:
        _say(f"warning: migrations skipped (agentdb.store.migrate is not available: {exc.name or exc})")
        return
    applied = migrate(url)
    _say(f"migrations: {len(applied)} applied" if applied else "migrations: up to date")


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.dev", description="Run the agentdb API locally.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    args = parser.parse_args(argv)

    local_dir = state_dir()
    set_environment(local_dir)
    # Ctrl-C even when started from a context that ignores SIGINT (a background job); `kill` likewise.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    from agentdb.pgurl import parse_pg_url
    from local.embedded_pg import EmbeddedPostgres

    server: EmbeddedPostgres | None = None
    try:
        if os.environ.get("DATABASE_URL"):
            where = f"DATABASE_URL (server {parse_pg_url(os.environ['DATABASE_URL']).display_host})"
        else:
            port = int(os.environ.get("EMBEDDED_PG_PORT", DEFAULT_EMBEDDED_PG_PORT))
            _say(f"starting embedded Postgres on 127.0.0.1:{port} ...")
            server = EmbeddedPostgres(local_dir / "pg", port=port)
            os.environ["DATABASE_URL"] = ensure_database(server.start(), CONTROL_PLANE_DB)
            where = f"embedded Postgres on 127.0.0.1:{port}, data in {local_dir / 'pg'}"
        os.environ.setdefault("POSTGRES_ADMIN_URL", os.environ["DATABASE_URL"])
        run_migrations(os.environ["DATABASE_URL"])

        from local.gateway import LocalGateway

        gateway = LocalGateway(args.template, jwt_secret=os.environ["LOCAL_JWT_SECRET"], repo_root=REPO_ROOT)
        url = f"http://{args.host}:{args.port}"
        _say(
            "\n".join(
                [
                    "",
                    f"agentdb local API on {url}",
                    f"  {len(gateway.routes)} routes, {len(gateway.rules)} event rules, "
                    f"{len(gateway.functions)} functions from {args.template.name}",
                    f"  control plane: {where}",
                    f"  local state (secrets, database): {local_dir}/",
                    "  admin token:  make token SUB=platform SCOPE=agentdb/admin",
                    "  user token:   make token SUB=<userId>",
                    f"  events:       curl -X POST {url}/_local/events -d @events/lifecycle/<event>.json",
                    "  Ctrl-C to stop",
                    "",
                ]
            )
        )
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            _say(f"warning: serving on {args.host}: /_local/* routes need no token")
        gateway.serve(args.host, args.port)
    except KeyboardInterrupt:
        _say("\nstopping")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
