"""Secrets of the local stack, shared by `make dev` and `make token`.

Each comes from its environment variable when set, else from a file under ``.local/`` that is created
with a random value (mode 600) the first time it is needed. Both commands read the same file, so a
token minted before `make dev` starts is accepted after it starts, and tenant URIs encrypted in one run
decrypt in the next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
JWT_ISSUER = "agentdb-local"
JWT_AUDIENCE = "agentdb"
JWT_ALGORITHM = "HS256"


def state_dir(repo_root: Path | None = None) -> Path:
    """Where the local stack keeps its data: ``<repo>/.local`` (git-ignored)."""
    return (repo_root or REPO_ROOT) / ".local"


def local_jwt_secret(directory: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``LOCAL_JWT_SECRET``, else ``.local/jwt-secret`` (created when missing)."""
    env = os.environ if environ is None else environ
    if env.get("LOCAL_JWT_SECRET"):
        return env["LOCAL_JWT_SECRET"]
    return _read_or_create((directory or state_dir()) / "jwt-secret", lambda: secrets.token_urlsafe(48), _non_empty)


def local_encryption_key(directory: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``LOCAL_ENCRYPTION_KEY`` (or its alias), else ``.local/encryption-key``: 64 hex chars, created when missing."""
    env = os.environ if environ is None else environ
    for name in ("LOCAL_ENCRYPTION_KEY", "NEON_CONNECTION_ENCRYPTION_KEY"):
        if env.get(name):
            return env[name]
    return _read_or_create((directory or state_dir()) / "encryption-key", lambda: secrets.token_hex(32), _is_hex_key)


def _non_empty(value: str) -> bool:
    return bool(value)


def _is_hex_key(value: str) -> bool:
    try:
        return len(bytes.fromhex(value)) == 32
    except ValueError:
        return False


def _read_or_create(path: Path, generate: Callable[[], str], valid: Callable[[str], bool]) -> str:
    """Read ``path``, or create it atomically (a complete file or none): concurrent first runs agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate() + "\n")
            with contextlib.suppress(FileExistsError):  # another process won the race: use its value
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    value = path.read_text(encoding="utf-8").strip()
    if not valid(value):
        # Never echo the value: it is a secret, even when malformed.
        raise RuntimeError(f"{path} does not hold a valid value; delete it to generate a new one")
    return value
