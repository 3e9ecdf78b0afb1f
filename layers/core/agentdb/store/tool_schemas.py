"""Discovered MCP tool input schemas, cached in the control plane (table ``mcp_tool_schema_cache``).

A tool backend that talks to a remote MCP server (the ``neon-mcp`` backend) discovers the server's tool
input schemas with ``tools/list`` and keeps them here, so that a fresh Lambda container validates its
outgoing arguments without asking the server again. Rows are keyed by ``(server_type, tool_name)``;
``server_type`` names the remote server, not our virtual servers: the neon-mcp backend writes
``"neon-hosted"`` for Neon's hosted server and ``"neon-mcp:<host><path>"`` for any other URL. Freshness is
the reader's call: every row carries ``discovered_at`` (the database clock), and the backend treats a row
older than its TTL as missing. The schema's version is its content: ``fingerprint()`` hashes it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentdb.store.db import Database


@dataclass(frozen=True)
class CachedToolSchema:
    tool_name: str
    schema: dict[str, Any]
    discovered_at: datetime  # timezone-aware (TIMESTAMPTZ)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.schema)


def fingerprint(schema: dict[str, Any]) -> str:
    """A stable short hash of a schema's content (key order does not matter)."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ToolSchemaCache:
    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, server_type: str) -> dict[str, CachedToolSchema]:
        """Every cached schema of one server, by tool name (empty when nothing was discovered yet)."""
        rows = self._db.run(
            "SELECT tool_name, tool_schema, discovered_at FROM mcp_tool_schema_cache WHERE server_type = :server",
            server=server_type,
        )
        out: dict[str, CachedToolSchema] = {}
        for tool_name, schema, discovered_at in rows:
            if isinstance(schema, str):  # a driver that hands JSONB back as text
                schema = json.loads(schema)
            if isinstance(schema, dict) and discovered_at is not None:
                out[tool_name] = CachedToolSchema(tool_name, schema, discovered_at)
        return out

    def put(self, server_type: str, tool_name: str, schema: dict[str, Any]) -> CachedToolSchema:
        """Insert or replace one tool's schema; ``discovered_at`` becomes now."""
        return self.put_many(server_type, {tool_name: schema})[tool_name]

    def put_many(self, server_type: str, schemas: dict[str, dict[str, Any]]) -> dict[str, CachedToolSchema]:
        """Insert or replace several tools' schemas in one statement (tools not named are kept)."""
        if not schemas:
            return {}
        names = sorted(schemas)
        rows = self._db.run(
            "INSERT INTO mcp_tool_schema_cache (id, server_type, tool_name, tool_schema, discovered_at)"
            " SELECT t.id, CAST(:server AS text), t.tool, CAST(t.schema AS jsonb), now()"
            " FROM unnest(CAST(:ids AS text[]), CAST(:tools AS text[]), CAST(:schemas AS text[]))"
            " AS t(id, tool, schema)"
            " ON CONFLICT (server_type, tool_name)"
            " DO UPDATE SET tool_schema = EXCLUDED.tool_schema, discovered_at = EXCLUDED.discovered_at"
            " RETURNING tool_name, discovered_at",
            server=server_type,
            ids=[uuid.uuid4().hex for _ in names],
            tools=names,
            schemas=[json.dumps(schemas[name], sort_keys=True) for name in names],
        )
        return {name: CachedToolSchema(name, schemas[name], at) for name, at in rows}

    def delete(self, server_type: str) -> int:
        """Forget every schema of one server; returns how many rows went."""
        rows = self._db.run(
            "DELETE FROM mcp_tool_schema_cache WHERE server_type = :server RETURNING tool_name", server=server_type
        )
        return len(rows)
