"""`make bench`: run every benchmark and print a summary; results go to bench/results/*.json."""

from __future__ import annotations

import json
import sys

from bench import cold_import, consumption, explorer, lifecycle_overhead, mcp_endpoint, neon_mcp, tools


def main() -> None:
    selected = set(sys.argv[1:])
    for bench in (cold_import, lifecycle_overhead, tools, mcp_endpoint, explorer, neon_mcp, consumption):
        name = bench.__name__.rsplit(".", 1)[-1]
        if selected and name not in selected:
            continue
        result = bench.run()
        sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
