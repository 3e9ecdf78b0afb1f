"""Turn a postgresql:// URL into pg8000 connection keyword arguments.

Handles TLS (sslmode), Unix sockets (``?host=/path``) and URL-encoded credentials. TLS for real
endpoints verifies the certificate: pg8000's ``ssl_context=True`` would encrypt without verifying.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from agentdb.errors import InvalidInput

_VERIFYING_MODES = {"require", "verify-ca", "verify-full"}


@dataclass(frozen=True)
class PgUrl:
    user: str
    password: str | None
    host: str | None
    port: int
    database: str
    unix_sock_dir: str | None
    sslmode: str | None

    def connect_kwargs(self, *, timeout: float | None = None, application_name: str = "agentdb") -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "application_name": application_name,
        }
        if timeout is not None:
            kwargs["timeout"] = timeout
        if self.unix_sock_dir:
            kwargs["unix_sock"] = f"{self.unix_sock_dir.rstrip('/')}/.s.PGSQL.{self.port}"
        else:
            kwargs["host"] = self.host or "localhost"
            kwargs["port"] = self.port
            if self.sslmode in _VERIFYING_MODES:
                kwargs["ssl_context"] = ssl.create_default_context()
        return kwargs

    def with_credentials(self, user: str, password: str, database: str) -> str:
        """A URL to the same server for another role and database."""
        return build_url(user, password, self.host, self.port, database, self.unix_sock_dir, self.sslmode)

    @property
    def display_host(self) -> str:
        return self.host or self.unix_sock_dir or "localhost"


def build_url(
    user: str,
    password: str | None,
    host: str | None,
    port: int,
    database: str,
    unix_sock_dir: str | None = None,
    sslmode: str | None = None,
) -> str:
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    netloc = f"{auth}@{host or ''}:{port}" if host else f"{auth}@:{port}"
    query = []
    if unix_sock_dir:
        query.append("host=" + quote(unix_sock_dir, safe="/"))
    if sslmode:
        query.append("sslmode=" + sslmode)
    return f"postgresql://{netloc}/{quote(database, safe='')}" + ("?" + "&".join(query) if query else "")


def parse_pg_url(url: str) -> PgUrl:
    """Parse a libpq-style URL. Raises InvalidInput (without echoing the URL, which may hold a password)."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("scheme")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        sock_dir = query.get("host") if query.get("host", "").startswith("/") else None
        host = parts.hostname or (None if sock_dir else query.get("host"))
        return PgUrl(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password is not None else None,
            host=host,
            port=parts.port or int(query.get("port", 5432)),
            database=unquote(parts.path.lstrip("/")) or unquote(parts.username or "postgres"),
            unix_sock_dir=sock_dir,
            sslmode=query.get("sslmode"),
        )
    except ValueError as exc:
        raise InvalidInput("not a valid postgresql:// URL") from exc
