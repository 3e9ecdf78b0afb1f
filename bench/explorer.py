"""Explorer benchmark: one warm page of 100 rows through the explorer handler, against the same page's
SELECT run raw with pg8000 on an open connection to the same tenant database (measured in the same run).

A page is two statements through the SQL tools' path (the catalog lookup, then the keyset SELECT), each
with its control-plane query (authorise, route, count the rate limit) and its audit row; the difference
between the two medians is what that path costs per page. Also: a page deep into a 100,000-row table by
keyset cursor against the same page by offset, both through the handler.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bench.common import median_ms, write_result

ROUNDS = int(os.environ.get("BENCH_EXPLORER_ROUNDS", "200"))
TABLE_ROWS = 100_000


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run() -> dict[str, Any]:
    import pg8000.native

    from agentdb.pgurl import parse_pg_url
    from bench.stack import local_stack, provision_workspace
    from tests.lambda_harness import FakeLambdaContext, http_event, load_function

    with local_stack(RATE_LIMIT_PER_USER="0", RATE_LIMIT_PER_WORKSPACE="0"):
        uri = provision_workspace()
        raw = pg8000.native.Connection(**parse_pg_url(uri).connect_kwargs())
        raw.run("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL, score int)")
        raw.run(f"INSERT INTO items SELECT g, 'item ' || g, g % 97 FROM generate_series(1, {TABLE_ROWS}) g")
        raw.run("ANALYZE items")
        explorer = load_function("explorer")
        context = FakeLambdaContext()
        path, route = "/workspaces/bench-ws/database/query", "/workspaces/{workspaceId}/database/query"

        def page(body: dict[str, Any]) -> dict[str, Any]:
            event = http_event(
                "POST",
                path,
                route=route,
                body=body,
                sub="bench-user",
                scope="",
                path_params={"workspaceId": "bench-ws"},
            )
            response = explorer.handler(event, context)
            assert response["statusCode"] == 200, response
            data: dict[str, Any] = json.loads(response["body"])["data"]
            return data

        first = {"table": "items", "limit": 100}
        deep_offset = {"table": "items", "limit": 100, "offset": 90_000}
        cursor = page(deep_offset | {"limit": 100, "offset": 89_900})["nextCursor"]
        deep_cursor = {"table": "items", "limit": 100, "cursor": cursor}
        assert page(deep_cursor)["rows"] == page(deep_offset)["rows"]
        raw_sql = "SELECT id, label, score FROM items ORDER BY id LIMIT 101"
        for _ in range(20):  # warm: imports, connections, caches
            page(first)
            raw.run(raw_sql)
        raw_s, page_s, offset_s, cursor_s = [], [], [], []
        for _ in range(ROUNDS):  # interleaved, so that drift in machine load hits every series alike
            raw_s.append(_timed(lambda: raw.run(raw_sql)))
            page_s.append(_timed(lambda: page(first)))
            offset_s.append(_timed(lambda: page(deep_offset)))
            cursor_s.append(_timed(lambda: page(deep_cursor)))
        raw.close()
    raw_ms, page_ms = median_ms(raw_s), median_ms(page_s)
    result = {
        "rounds": ROUNDS,
        "table_rows": TABLE_ROWS,
        "raw_pg8000_page_ms": raw_ms,
        "handler_page_ms": page_ms,
        "page_overhead_ms": round(page_ms - raw_ms, 3),
        "handler_page_at_offset_90000_ms": median_ms(offset_s),
        "handler_page_by_cursor_at_90000_ms": median_ms(cursor_s),
        "note": (
            "a page = JWT identity, request validation, two run_sql calls through ToolService (catalog lookup,"
            " then SELECT ... ORDER BY pk LIMIT 101), each with one control-plane query and one audit row"
        ),
    }
    write_result("explorer", result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
