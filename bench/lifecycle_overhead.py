"""Lifecycle overhead per event with the postgres provider, against raw CREATE/DROP DATABASE.

Baselines (same run, same server): raw CREATE ROLE + CREATE DATABASE + REVOKE/GRANT, then DROP DATABASE
+ DROP ROLE on an open admin connection; and the postgres provider's create() + delete() called
directly (the raw SQL plus the read-only role). Measured: the lifecycle handler applying
workspace.created then workspace.deleted events (control-plane records, locks, encryption, the same
provider calls). Overhead = median(handler pair) - median(provider pair). Target: ≤ 20 ms median.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pg8000.native

from bench.common import median_ms, write_result

ROUNDS = int(os.environ.get("BENCH_LIFECYCLE_ROUNDS", "15"))


def run() -> dict[str, Any]:
    from agentdb.container import get_services
    from agentdb.pgurl import parse_pg_url
    from bench.stack import local_stack
    from tests.lambda_harness import FakeLambdaContext, eventbridge_event, load_function

    with local_stack() as stack:
        conn = pg8000.native.Connection(**parse_pg_url(stack.admin_url).connect_kwargs())
        lifecycle = load_function("lifecycle")
        owner = {"userId": "bench-owner"}
        lifecycle.handler(eventbridge_event("user.created", owner), FakeLambdaContext())

        from agentdb.providers.base import Tenant

        provider = get_services().provider
        raw, direct, handled = [], [], []
        for i in range(ROUNDS + 2):  # the first two rounds warm both paths and are dropped
            name = f"bench_raw_{uuid.uuid4().hex[:12]}"
            t0 = time.perf_counter()
            conn.run(f"CREATE ROLE {name} LOGIN PASSWORD 'x'")
            conn.run(f"CREATE DATABASE {name} OWNER {name}")
            conn.run(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            conn.run(f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name}")
            conn.run(f"DROP DATABASE {name} WITH (FORCE)")
            conn.run(f"DROP ROLE {name}")
            t_raw = time.perf_counter()
            made = provider.create(Tenant("workspace", f"bench-direct-{i}"))
            provider.delete(Tenant("workspace", f"bench-direct-{i}"), made.project_id)
            t1 = time.perf_counter()
            ws = {"workspaceId": f"bench-ws-{i}", "ownerUserId": "bench-owner"}
            lifecycle.handler(eventbridge_event("workspace.created", ws), FakeLambdaContext())
            deleted = eventbridge_event("workspace.deleted", {"workspaceId": ws["workspaceId"]})
            lifecycle.handler(deleted, FakeLambdaContext())
            t2 = time.perf_counter()
            if i >= 2:
                raw.append(t_raw - t0)
                direct.append(t1 - t_raw)
                handled.append(t2 - t1)
        conn.close()
        provider._admin.close()  # type: ignore[attr-defined]
    raw_ms, direct_ms, handled_ms = median_ms(raw), median_ms(direct), median_ms(handled)
    result = {
        "benchmark": "lifecycle_overhead",
        "rounds": ROUNDS,
        "raw_create_drop_database_sql_ms": raw_ms,
        "provider_create_delete_ms": direct_ms,
        "handler_created_deleted_ms": handled_ms,
        "overhead_ms": round(handled_ms - direct_ms, 2),
        "ratio_to_provider": round(handled_ms / direct_ms, 3) if direct_ms else None,
        "target_overhead_ms": 20,
        "within_target": handled_ms - direct_ms <= 20,
        "note": (
            "overhead = handler (workspace.created + workspace.deleted events) minus the same provider calls made"
            " directly; the provider's work is the raw CREATE/DROP plus the tenant's read-only role and grants"
        ),
    }
    write_result("lifecycle_overhead", result)
    return result
