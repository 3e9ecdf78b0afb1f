"""Lifecycle overhead per event with the postgres provider, against raw CREATE/DROP DATABASE.

Baseline (same run, same server): CREATE ROLE + CREATE DATABASE + REVOKE/GRANT, then DROP DATABASE
+ DROP ROLE, on an open admin connection. Measured: the lifecycle handler applying workspace.created
then workspace.deleted events (control-plane records, locks, encryption, the same provider calls).
Overhead = median(handler pair) - median(raw pair). Target (issue 2): ≤ 20 ms median.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pg8000.native

from bench.common import median_ms, write_result

ROUNDS = int(os.environ.get("BENCH_LIFECYCLE_ROUNDS", "15"))


def run() -> dict[str, Any]:
    from agentdb.config import get_settings
    from agentdb.container import get_services
    from agentdb.pgurl import parse_pg_url
    from agentdb.store.migrate import migrate
    from local.embedded_pg import EmbeddedPostgres
    from tests.lambda_harness import FakeLambdaContext, eventbridge_event, load_function

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="agentdb-bench-")))
    admin_url = server.start()
    try:
        admin = parse_pg_url(admin_url)
        conn = pg8000.native.Connection(**admin.connect_kwargs())
        conn.run("CREATE DATABASE bench_cp")
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
            }
        )
        get_settings.cache_clear()
        get_services.cache_clear()
        lifecycle = load_function("lifecycle")
        owner = {"userId": "bench-owner"}
        lifecycle.handler(eventbridge_event("user.created", owner), FakeLambdaContext())

        raw, handled = [], []
        for i in range(ROUNDS + 2):  # the first two rounds warm both paths and are dropped
            name = f"bench_raw_{uuid.uuid4().hex[:12]}"
            t0 = time.perf_counter()
            conn.run(f"CREATE ROLE {name} LOGIN PASSWORD 'x'")
            conn.run(f"CREATE DATABASE {name} OWNER {name}")
            conn.run(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            conn.run(f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name}")
            conn.run(f"DROP DATABASE {name} WITH (FORCE)")
            conn.run(f"DROP ROLE {name}")
            t1 = time.perf_counter()
            ws = {"workspaceId": f"bench-ws-{i}", "ownerUserId": "bench-owner"}
            lifecycle.handler(eventbridge_event("workspace.created", ws), FakeLambdaContext())
            lifecycle.handler(
                eventbridge_event("workspace.deleted", {"workspaceId": ws["workspaceId"]}), FakeLambdaContext()
            )
            t2 = time.perf_counter()
            if i >= 2:
                raw.append(t1 - t0)
                handled.append(t2 - t1)
        raw_ms, handled_ms = median_ms(raw), median_ms(handled)
        result = {
            "benchmark": "lifecycle_overhead",
            "rounds": ROUNDS,
            "raw_create_drop_ms": raw_ms,
            "handler_created_deleted_ms": handled_ms,
            "overhead_ms": round(handled_ms - raw_ms, 2),
            "ratio": round(handled_ms / raw_ms, 3) if raw_ms else None,
            "target_overhead_ms": 20,
            "within_target": handled_ms - raw_ms <= 20,
        }
        conn.close()
        get_services().store.db.close()
        write_result("lifecycle_overhead", result)
        return result
    finally:
        server.destroy()
