"""Per-call latency of the neon-mcp tool backend against the local MCP server (``local.neon_mcp_double``).

Measured, same run, same Postgres database: ``run_sql SELECT 1`` through ``NeonMcpBackend.call`` with one
MCP session reused across calls, and with a fresh session per call (initialize handshake, initialized
notification, the call, session DELETE). Baseline: pg8000 ``SELECT 1`` on an already open connection.
The MCP server runs in this process on 127.0.0.1 (its own thread and event loop), executes the SQL on
the embedded Postgres over a cached connection and answers with server-sent events, as the hosted
server does: the figures are the client and protocol cost, without any network distance to Neon.
The first call of a backend (session open plus tools/list discovery and the schema cache write) is
reported separately.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median_ms, write_result

CALLS = int(os.environ.get("BENCH_NEON_MCP_CALLS", "50"))
WARMUP = 3
API_KEY = "bench-neon-mcp-key"


def _p90_ms(samples: list[float]) -> float:
    return round(statistics.quantiles(samples, n=10)[-1] * 1000, 2) if len(samples) >= 2 else median_ms(samples)


def run() -> dict[str, Any]:
    import pg8000.native

    from agentdb.pgurl import parse_pg_url
    from agentdb.providers.base import Tenant
    from agentdb.store.db import Database
    from agentdb.store.migrate import migrate
    from agentdb.store.tool_schemas import ToolSchemaCache
    from agentdb.tools.backend import Limits, ToolTarget
    from agentdb.tools.neon_mcp import NeonMcpBackend
    from local.embedded_pg import EmbeddedPostgres
    from local.neon_mcp_double import NeonMcpDouble

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="agentdb-bench-neon-mcp-")))
    admin_url = server.start()
    try:
        admin = parse_pg_url(admin_url)
        conn = pg8000.native.Connection(**admin.connect_kwargs())
        conn.run("CREATE DATABASE bench_project")
        conn.run("CREATE DATABASE bench_cp")
        conn.close()
        project_url = admin.with_credentials(admin.user, admin.password or "", "bench_project")
        cp_url = admin.with_credentials(admin.user, admin.password or "", "bench_cp")
        migrate(cp_url)
        cp = Database(cp_url)
        double = NeonMcpDouble(API_KEY, {"bench-project": project_url})
        url = double.start()
        target = ToolTarget(
            tenant=Tenant("workspace", "bench"),
            provider="neon",
            project_id="bench-project",
            branch_id=None,
            database_name="bench_project",
            read_only=False,
            connection_uri=lambda: project_url,
        )
        limits = Limits()
        arguments = {"sql": "SELECT 1"}
        try:
            raw = pg8000.native.Connection(**parse_pg_url(project_url).connect_kwargs())
            baseline = []
            for i in range(CALLS + WARMUP):
                t0 = time.perf_counter()
                raw.run("SELECT 1")
                if i >= WARMUP:
                    baseline.append(time.perf_counter() - t0)
            raw.close()

            measured: dict[str, list[float]] = {}
            first_call: dict[str, float] = {}
            stats: dict[str, dict[str, int]] = {}
            server_share: dict[str, float] = {}
            requests: dict[str, float] = {}
            for label, reuse in (("reused_session", True), ("fresh_session", False)):
                cp.run("DELETE FROM mcp_tool_schema_cache")
                backend = NeonMcpBackend(url, API_KEY, ToolSchemaCache(cp), reuse_session=reuse, timeout=15)
                samples = []
                try:
                    for i in range(CALLS + WARMUP):
                        if i == WARMUP:
                            time.sleep(0.1)  # the server logs a request once its answer stream has ended
                            double.reset_records()
                        t0 = time.perf_counter()
                        outcome = backend.call(target, "run_sql", arguments, limits)
                        elapsed = time.perf_counter() - t0
                        if outcome.error is not None or outcome.rows != [[1]]:
                            raise RuntimeError(f"unexpected outcome: {outcome}")
                        if i == 0:
                            first_call[label] = round(elapsed * 1000, 2)
                        if i >= WARMUP:
                            samples.append(elapsed)
                    stats[label] = dict(vars(backend.stats))
                    time.sleep(0.1)
                    # The server's share: every request of the measured calls but the long-lived GET streams.
                    served = sum(h.seconds for h in double.http if h.method != "GET")
                    server_share[label] = round(served / CALLS * 1000, 2)
                    requests[label] = round(len([h for h in double.http if h.method != "GET"]) / CALLS, 2)
                finally:
                    backend.close()
                measured[label] = samples
        finally:
            double.stop()
            cp.close()
    finally:
        server.destroy()

    baseline_ms = median_ms(baseline)
    reused_ms, fresh_ms = median_ms(measured["reused_session"]), median_ms(measured["fresh_session"])
    result = {
        "benchmark": "neon_mcp",
        "calls": CALLS,
        "baseline_pg8000_select1_ms": baseline_ms,
        "reused_session_ms": reused_ms,
        "reused_session_p90_ms": _p90_ms(measured["reused_session"]),
        "fresh_session_ms": fresh_ms,
        "fresh_session_p90_ms": _p90_ms(measured["fresh_session"]),
        "overhead_reused_ms": round(reused_ms - baseline_ms, 2),
        "overhead_fresh_ms": round(fresh_ms - baseline_ms, 2),
        "server_share_ms": server_share,
        "http_requests_per_call": requests,
        "first_call_ms": first_call,
        "backend_stats": stats,
        "note": (
            "run_sql SELECT 1 through NeonMcpBackend.call against the local MCP server (mcp 2.3.0, streamable"
            " HTTP with SSE answers, 127.0.0.1), median per call after warm-up; fresh_session opens and closes"
            " an MCP session inside every call; baseline is pg8000 SELECT 1 on an open connection to the same"
            " database. server_share is the MCP server's own time per call (request arrival to end of answer, GET"
            " streams excluded), so the client's share is the difference. first_call includes the session open"
            " and tools/list discovery."
        ),
    }
    write_result("neon_mcp", result)
    return result


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
