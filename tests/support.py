"""Test helpers that look at the tenant Postgres server directly, as an operator would."""

from __future__ import annotations

from typing import Any

import pg8000.native

from agentdb.pgurl import parse_pg_url


class ServerInspector:
    """Looks at the tenant server directly, as an operator would."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.pattern = prefix.replace("-", "_").replace("_", r"\_") + "%"

    def _run(self, sql: str, **params: Any) -> list[list[Any]]:
        conn = pg8000.native.Connection(**parse_pg_url(self.admin_url).connect_kwargs())
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def databases(self) -> list[str]:
        return [r[0] for r in self._run("SELECT datname FROM pg_database WHERE datname LIKE :p", p=self.pattern)]

    def roles(self) -> list[str]:
        return [r[0] for r in self._run("SELECT rolname FROM pg_roles WHERE rolname LIKE :p", p=self.pattern)]

    def drop_all(self) -> None:
        for name in self.databases():
            self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for name in self.roles():
            self._run(f'DROP ROLE IF EXISTS "{name}"')


def connect(uri: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_pg_url(uri).connect_kwargs(timeout=10))
