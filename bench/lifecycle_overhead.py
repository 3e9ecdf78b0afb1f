"""Lifecycle overhead per event with the postgres provider, against raw CREATE/DROP DATABASE.

Baseline (same run, same server): raw CREATE ROLE + CREATE DATABASE + REVOKE/GRANT, then DROP DATABASE
+ DROP ROLE on an open admin connection. Measured: the lifecycle handler applying workspace.created
then workspace.deleted events, with a stopwatch around the provider's create/delete inside it, so the
overhead (everything but the provider's own SQL) is measured directly rather than as a difference of
two noisy ~150 ms figures. Target: overhead ≤ 20 ms median.
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
    from agentdb.providers.base import Tenant
    from bench.stack import local_stack
    from tests.lambda_harness import FakeLambdaContext, eventbridge_event, load_function

    with local_stack() as stack:
        conn = pg8000.native.Connection(**parse_pg_url(stack.admin_url).connect_kwargs())
        lifecycle = load_function("lifecycle")
        lifecycle.handler(eventbridge_event("user.created", {"userId": "bench-owner"}), FakeLambdaContext())
        provider = get_services().provider

        # Time spent inside the provider during each handler call: a stopwatch around the real methods.
        inside: list[float] = []
        real_create, real_delete = provider.create, provider.delete

        def timed_create(tenant: Tenant) -> Any:
            t = time.perf_counter()
            try:
                return real_create(tenant)
            finally:
                inside.append(time.perf_counter() - t)

        def timed_delete(tenant: Tenant, project_id: str | None = None) -> None:
            t = time.perf_counter()
            try:
                real_delete(tenant, project_id)
            finally:
                inside.append(time.perf_counter() - t)

        provider.create, provider.delete = timed_create, timed_delete  # type: ignore[method-assign]
        raw, handled, overhead = [], [], []
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
            inside.clear()
            ws = {"workspaceId": f"bench-ws-{i}", "ownerUserId": "bench-owner"}
            lifecycle.handler(eventbridge_event("workspace.created", ws), FakeLambdaContext())
            deleted = eventbridge_event("workspace.deleted", {"workspaceId": ws["workspaceId"]})
            lifecycle.handler(deleted, FakeLambdaContext())
            t2 = time.perf_counter()
            if i >= 2:
                raw.append(t1 - t0)
                handled.append(t2 - t1)
                overhead.append((t2 - t1) - sum(inside))
        conn.close()
        provider._admin.close()  # type: ignore[attr-defined]
    raw_ms, handled_ms, overhead_ms = median_ms(raw), median_ms(handled), median_ms(overhead)
    result = {
        "benchmark": "lifecycle_overhead",
        "rounds": ROUNDS,
        "raw_create_drop_database_sql_ms": raw_ms,
        "handler_created_deleted_ms": handled_ms,
        "provider_share_ms": round(handled_ms - overhead_ms, 2),
        "overhead_ms": overhead_ms,
        "overhead_ratio_to_raw_sql": round(overhead_ms / raw_ms, 3) if raw_ms else None,
        "target_overhead_ms": 20,
        "within_target": overhead_ms <= 20,
        "note": (
            "per round: a workspace.created then a workspace.deleted event through the handler; overhead = the"
            " handler's time minus the time spent inside provider.create/delete (the same SQL as the raw"
            " baseline plus the tenant's read-only role), i.e. control-plane records, locks, encryption,"
            " event parsing, logging and metrics"
        ),
    }
    write_result("lifecycle_overhead", result)
    return result
