"""The local stack for benchmarks: an embedded Postgres, a migrated control plane, the environment set."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchStack:
    admin_url: str
    control_plane_url: str


@contextmanager
def local_stack(**extra_env: str) -> Iterator[BenchStack]:
    import pg8000.native

    from agentdb.config import get_settings
    from agentdb.container import get_services
    from agentdb.pgurl import parse_pg_url
    from agentdb.store.migrate import migrate
    from local.embedded_pg import EmbeddedPostgres

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="agentdb-bench-")))
    admin_url = server.start()
    try:
        admin = parse_pg_url(admin_url)
        conn = pg8000.native.Connection(**admin.connect_kwargs())
        conn.run("CREATE DATABASE bench_cp")
        conn.close()
        cp_url = admin.with_credentials(admin.user, admin.password or "", "bench_cp")
        migrate(cp_url)
        os.environ.update(
            {
                "DATABASE_URL": cp_url,
                "POSTGRES_ADMIN_URL": admin_url,
                "DB_PROVIDER": "postgres",
                "KEYRING": "local",
                "LOCAL_ENCRYPTION_KEY": secrets.token_hex(32),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "agentdb-bench",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **extra_env,
            }
        )
        get_settings.cache_clear()
        get_services.cache_clear()
        yield BenchStack(admin_url, cp_url)
        get_services().close()
    finally:
        get_settings.cache_clear()
        get_services.cache_clear()
        server.destroy()


def provision_workspace(user_id: str = "bench-user", workspace_id: str = "bench-ws") -> str:
    """A user and a workspace on the running local stack; returns the workspace database's URI."""
    from agentdb.container import get_services
    from agentdb.crypto import connection_uri_context
    from agentdb.providers.base import Tenant

    services = get_services()
    services.lifecycle.create_user(user_id)
    services.lifecycle.create_workspace(workspace_id, user_id)
    tenant = Tenant("workspace", workspace_id)
    record = services.store.get_database(tenant)
    assert record is not None and record.encrypted_uri
    return services.keyring.decrypt(record.encrypted_uri, connection_uri_context(tenant.context_key))
