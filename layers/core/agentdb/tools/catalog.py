"""The two virtual MCP servers and their tools: names, descriptions, JSON input schemas, annotations.

Static data: listing needs no provider call. The caller never names a project, branch or database;
routing comes from the control plane, so the schemas have no such properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ServerId = Literal["system:postgres-agent", "system:postgres-global"]
AGENT_SERVER: ServerId = "system:postgres-agent"
GLOBAL_SERVER: ServerId = "system:postgres-global"

MAX_SQL_CHARS = 100_000
MAX_TRANSACTION_STATEMENTS = 100


@dataclass(frozen=True)
class ServerInfo:
    id: ServerId
    name: str
    description: str
    database: str  # which database, in words

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description}


SERVERS: dict[str, ServerInfo] = {
    AGENT_SERVER: ServerInfo(
        AGENT_SERVER,
        "Agent Database MCP",
        "This agent's own Postgres database: private to this workspace, for the agent's working data.",
        "this workspace's own database",
    ),
    GLOBAL_SERVER: ServerInfo(
        GLOBAL_SERVER,
        "Globally Shared Database MCP",
        "The user's global Postgres database, shared by all of the user's agents: for data every agent should see.",
        "the user's global database shared by all of their agents",
    ),
}


class RunSqlArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS, description="One SQL statement")]


class RunSqlTransactionArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sqlStatements: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS)]],
        Field(
            min_length=1,
            max_length=MAX_TRANSACTION_STATEMENTS,
            description="The SQL statements, one statement per element, run in order",
        ),
    ]


class ListTablesArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Annotated[
        str | None, Field(alias="schema", min_length=1, max_length=63, description="Only this schema")
    ] = None


class DescribeTableArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tableName: Annotated[
        str, Field(min_length=1, max_length=200, description="Table name, optionally schema-qualified (schema.table)")
    ]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    arguments: type[BaseModel]
    writes: bool  # may change data

    @cached_property
    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments, derived from the model that validates them (one source)."""
        schema = self.arguments.model_json_schema(by_alias=True)
        return _strip_titles(schema)

    def annotations(self, read_only: bool) -> dict[str, Any]:
        return {
            "title": self.title,
            "readOnlyHint": read_only or not self.writes,
            "destructiveHint": self.writes and not read_only,
            "idempotentHint": not self.writes or read_only,
            "openWorldHint": False,
        }


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


TOOLS: dict[str, ToolSpec] = {
    "run_sql": ToolSpec(
        "run_sql",
        "Run one SQL statement",
        "Run exactly one SQL statement on {database} and return its rows (capped; `truncated` says when). "
        "Each call is its own transaction.",
        RunSqlArguments,
        writes=True,
    ),
    "run_sql_transaction": ToolSpec(
        "run_sql_transaction",
        "Run SQL statements in one transaction",
        "Run several SQL statements on {database} in one transaction: all of them commit, or none do. "
        "Do not include BEGIN/COMMIT.",
        RunSqlTransactionArguments,
        writes=True,
    ),
    "list_tables": ToolSpec(
        "list_tables",
        "List tables",
        "List the tables in {database} (all user schemas, or one), with estimated rows and size.",
        ListTablesArguments,
        writes=False,
    ),
    "describe_table_schema": ToolSpec(
        "describe_table_schema",
        "Describe a table",
        "Describe a table in {database}: columns, types, nullability, defaults, primary and foreign keys, "
        "indexes and size.",
        DescribeTableArguments,
        writes=False,
    ),
}

# Arguments a caller might send to route a call themselves: ignored, never used.
ROUTING_ARGUMENTS = frozenset({"projectId", "branchId", "databaseName", "database", "connectionString"})


def tools_for(server_id: ServerId, read_only: bool) -> list[dict[str, Any]]:
    """The tools of one server as the caller may use them (read-only callers see only what reads)."""
    server = SERVERS[server_id]
    tools = []
    for spec in TOOLS.values():
        if read_only and spec.name == "run_sql_transaction":
            continue
        description = spec.description.format(database=server.database)
        if read_only and spec.writes:
            description += " Read-only access: statements that change data are refused."
        tools.append(
            {
                "serverId": server_id,
                "name": spec.name,
                "description": description,
                "inputSchema": spec.input_schema,
                "annotations": spec.annotations(read_only),
            }
        )
    return tools
