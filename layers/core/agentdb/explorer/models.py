"""Request and response models of the explorer routes (the OpenAPI document is generated from them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentdb.api.schemas import Open, envelope
from agentdb.explorer.sql import MAX_CURSOR_CHARS, MAX_OFFSET

MAX_PAGE_ROWS = 1000
# Postgres names are at most 63 bytes; a longer one cannot exist, but it is answered with 404, not 400.
Name = Annotated[str, Field(min_length=1, max_length=256)]


# Requests ---------------------------------------------------------------------------------------
class OrderBy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: Name
    direction: Literal["asc", "desc"] = "asc"


class QueryRequest(BaseModel):
    """One page of a table's rows. ``offset`` and ``cursor`` are mutually exclusive."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    table: Name
    schema_: Name | None = Field(default=None, alias="schema", description="Default: public, else the only match")
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_ROWS, strict=True)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, strict=True)] | None = None
    cursor: Annotated[str, Field(min_length=1, max_length=MAX_CURSOR_CHARS)] | None = Field(
        default=None, description="nextCursor of the previous page"
    )
    orderBy: OrderBy | None = Field(default=None, description="Default: the primary key, else every column")
    format: Literal["json", "csv"] = "json"

    @model_validator(mode="after")
    def _offset_or_cursor(self) -> QueryRequest:
        if self.offset is not None and self.cursor is not None:
            raise ValueError("offset and cursor are mutually exclusive: send one of them")
        return self


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: Annotated[str, Field(min_length=1, max_length=100_000, description="One SQL statement")]


# Responses (they describe what the routes send; the routes send plain JSON, unvalidated) ---------
class TableInfo(Open):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: str = Field(alias="schema")
    name: str
    type: str = Field(description="table, partitioned table, view, materialized view or foreign table")
    rowEstimate: int = Field(description="The planner's estimate (0 until the table is first analysed)")
    sizeBytes: int


class TablesData(Open):
    database: Literal["agent", "global"]
    tables: list[TableInfo]
    truncated: bool = Field(description="More relations than one answer holds")


class QueryColumn(Open):
    name: str
    type: str


class QueryData(Open):
    columns: list[QueryColumn]
    rows: list[list[Any]]
    rowCount: int
    truncated: bool = Field(description="The page was cut short by the row or size cap; nextCursor continues it")
    nextCursor: str | None = Field(description="The next page's cursor; null on the last page")


class ExecuteData(Open):
    columns: list[str]
    rows: list[list[Any]]
    rowCount: int
    truncated: bool


class ConnectionData(Open):
    provider: str
    host: str | None
    port: int | None
    database: str | None
    role: str | None
    password: Literal["********"] = Field(description="Always masked")
    pooled: bool
    status: str
    sslmode: str | None


TablesEnvelope = envelope("TablesEnvelope", TablesData)
QueryEnvelope = envelope("QueryEnvelope", QueryData)
ExecuteEnvelope = envelope("ExecuteEnvelope", ExecuteData)
ConnectionEnvelope = envelope("ConnectionEnvelope", ConnectionData)
