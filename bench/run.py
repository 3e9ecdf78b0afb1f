"""`make bench`: run every benchmark and print a summary; results go to bench/results/*.json."""

from __future__ import annotations

import json
import sys

from bench import cold_import, lifecycle_overhead


def main() -> None:
    for bench in (cold_import, lifecycle_overhead):
        result = bench.run()
        sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
