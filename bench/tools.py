"""SQL tool benchmarks (issue 3), each against a baseline measured in the same run:

- warm `run_sql SELECT 1` through the tool_execute handler vs raw pg8000 `SELECT 1` on an open
  connection to the same tenant database (target: handler overhead ≤ 1 ms median);
- warm listing through the system_tools handler vs its one control-plane query run raw
  (target: ≤ 1 ms beyond that query);
- peak memory while a ten-million-row query is capped, in a fresh process, above the idle process
  (target: ≤ 64 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import median_ms, write_result

ROUNDS = int(os.environ.get("BENCH_TOOL_ROUNDS", "300"))
REPO = Path(__file__).resolve().parent.parent


def _timed(fn: Any, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def latency() -> dict[str, Any]:
    import pg8000.native

    from agentdb.container import get_services
    from agentdb.pgurl import parse_pg_url
    from bench.stack import local_stack, provision_workspace
    from tests.lambda_harness import FakeLambdaContext, http_event, load_function

    # Limits too high to refuse a call, so the counting (part of the access query) is measured too.
    with local_stack(RATE_LIMIT_PER_USER="1000000", RATE_LIMIT_PER_WORKSPACE="1000000"):
        services = get_services()
        uri = provision_workspace()
        raw = pg8000.native.Connection(**parse_pg_url(uri).connect_kwargs())
        execute, listing = load_function("tool_execute"), load_function("system_tools")
        body = {"serverId": "system:postgres-agent", "toolName": "run_sql", "arguments": {"sql": "SELECT 1"}}
        exec_event = http_event(
            "POST", "/mcp/tools/execute", body={**body, "workspaceId": "bench-ws"}, sub="bench-user", scope=""
        )
        list_event = http_event(
            "GET", "/mcp/system-tools", query={"workspaceId": "bench-ws"}, sub="bench-user", scope=""
        )
        context = FakeLambdaContext()

        def call_execute() -> None:
            response = execute.handler(exec_event, context)
            assert response["statusCode"] == 200, response

        def call_listing() -> None:
            response = listing.handler(list_event, context)
            assert response["statusCode"] == 200, response

        for _ in range(20):  # warm: imports, connections, caches
            call_execute()
            call_listing()
            raw.run("SELECT 1")
            services.store.tool_access("bench-ws", "bench-user")
        # Interleave rounds so that drift in machine load hits baseline and measurement alike.
        raw_s, exec_s, access_s, list_s = [], [], [], []
        for _ in range(ROUNDS):
            raw_s += _timed(lambda: raw.run("SELECT 1"), 1)
            exec_s += _timed(call_execute, 1)
            access_s += _timed(lambda: services.store.tool_access("bench-ws", "bench-user"), 1)
            list_s += _timed(call_listing, 1)
        raw.close()
        audit_rows = services.store.db.run("SELECT count(*) FROM tool_audit_log")[0][0]
    raw_ms, exec_ms = median_ms(raw_s), median_ms(exec_s)
    access_ms, list_ms = median_ms(access_s), median_ms(list_s)
    return {
        "rounds": ROUNDS,
        "raw_pg8000_select1_ms": raw_ms,
        "handler_run_sql_select1_ms": exec_ms,
        "run_sql_overhead_ms": round(exec_ms - raw_ms, 3),
        "run_sql_target_overhead_ms": 1.0,
        "run_sql_within_target": exec_ms - raw_ms <= 1.0,
        "listing_query_raw_ms": access_ms,
        "handler_listing_ms": list_ms,
        "listing_overhead_ms": round(list_ms - access_ms, 3),
        "listing_target_overhead_ms": 1.0,
        "listing_within_target": list_ms - access_ms <= 1.0,
        "audit_rows_written": audit_rows,
        "note": (
            "run_sql through the handler = JWT identity, request validation, one control-plane query (authorise,"
            " route, count the user's and the workspace's rate limits), SQL guard, one tenant round trip (BEGIN,"
            " timeouts, the capped statement, COMMIT), one audit INSERT, the CallToolResult envelope, the log line"
            " and the EMF metrics"
        ),
    }


_MEMORY_PROBE = r"""
import json, os, resource, sys
from agentdb.tools.backend import Limits, ToolTarget
from agentdb.tools.direct import DirectBackend
from agentdb.providers.base import Tenant

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

uri = sys.argv[1]
backend = DirectBackend()
target = ToolTarget(Tenant("workspace", "m"), "postgres", None, None, "m", False, lambda: uri, "m")
limits = Limits()
backend.call(target, "run_sql", {"sql": "SELECT 1"}, limits)  # warm: imports, connection
idle = rss_mib()
outcome = backend.call(target, "run_sql", {"sql": "SELECT g, md5(g::text) FROM generate_series(1, 10000000) g"}, limits)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"idle_mib": round(idle, 1), "peak_mib": round(peak, 1), "rows": outcome.row_count,
                  "truncated": outcome.truncated}))
"""


def memory() -> dict[str, Any]:
    from bench.stack import local_stack, provision_workspace

    with local_stack():
        uri = provision_workspace("mem-user", "mem-ws")
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'layers' / 'core'}:{REPO}"}
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, uri], capture_output=True, text=True, env=env, check=True
        )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    above = round(probe["peak_mib"] - probe["idle_mib"], 1)
    return {
        "ten_million_rows_capped": probe,
        "peak_above_idle_mib": above,
        "target_mib": 64,
        "within_target": above <= 64,
    }


def run() -> dict[str, Any]:
    result = {"benchmark": "tools", **latency(), "memory": memory()}
    write_result("tools", result)
    return result
