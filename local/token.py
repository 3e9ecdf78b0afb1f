"""Mint a JWT the local gateway accepts: ``python -m local.token --sub X [--scope S] [--ttl SECONDS]``.

HS256 under the local secret (``LOCAL_JWT_SECRET`` or ``.local/jwt-secret``), issuer ``agentdb-local``,
audience ``agentdb``. Prints only the token, so ``TOKEN=$(make token SUB=alice)`` works.
(Run it as a module: executed as a file from ``local/`` it would shadow the stdlib ``token``.)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import jwt

from local.settings import JWT_ALGORITHM, JWT_AUDIENCE, JWT_ISSUER, local_jwt_secret

DEFAULT_TTL_SECONDS = 12 * 3600


def mint_token(
    sub: str,
    *,
    secret: str,
    scope: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: int | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": sub,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if scope:
        claims["scope"] = scope
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.token", description="Print a JWT the local gateway accepts.")
    parser.add_argument("--sub", required=True, help="the user id (the token's sub claim)")
    parser.add_argument("--scope", default=None, help="space-separated scopes, e.g. agentdb/admin")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds (default 12h)")
    args = parser.parse_args(argv)
    if not args.sub.strip():
        parser.error("--sub is empty: make token SUB=<userId> [SCOPE=agentdb/admin]")
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    print(mint_token(args.sub, secret=local_jwt_secret(), scope=args.scope, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
