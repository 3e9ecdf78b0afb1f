"""`make rotate-keys`: re-encrypt every stored connection URI of the local stack under the current key.

The current key is ``LOCAL_ENCRYPTION_KEY`` (else ``.local/encryption-key``); tokens made under the keys
in ``LOCAL_ENCRYPTION_PREVIOUS_KEYS`` are decrypted and encrypted again (README "Key rotation"). With
``KEYRING=kms``, ``KMS_KEY_ID`` names the new key. Prints the report (JSON); exit status 1 when a token
could not be rotated, 3 when the run stopped early (``--limit``): run it again to continue.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from local.maintenance import NoLocalStack, local_services


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.rotate_keys", description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="rotate at most this many records this run")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be a positive integer")
    try:
        with local_services() as services:
            report = services.key_rotation.run(limit=args.limit)
    except NoLocalStack as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.failed:
        return 1
    return 0 if report.complete else 3


if __name__ == "__main__":
    raise SystemExit(main())
