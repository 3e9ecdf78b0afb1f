"""`make reconcile [DRY_RUN=1]`: one reconciliation pass against the local stack; prints its report (JSON).

Settings come from the environment as in Lambda (RECONCILE_GRACE_SECONDS, RECONCILE_STUCK_SECONDS,
RECONCILE_MAX_CHANGES, TENANT_NAME_PREFIX, DB_PROVIDER, ...). Exit status 1 when a repair failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from local.maintenance import NoLocalStack, local_services


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.reconcile", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="report drift, change nothing")
    args = parser.parse_args(argv)
    try:
        with local_services() as services:
            report = services.reconcile.run(dry_run=True if args.dry_run else None)
    except NoLocalStack as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
