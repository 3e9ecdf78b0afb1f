"""HTTP routes of the explorer function (Powertools resolver with request validation).

Imported on the first request by app.py, so that importing the handler module stays cheap. Each route:
identity → one ExplorerService call → envelope (or CSV for ``format: csv``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.api.schemas import json_response, responses
from agentdb.container import get_services
from agentdb.explorer.models import (
    ConnectionEnvelope,
    ExecuteEnvelope,
    ExecuteRequest,
    QueryEnvelope,
    QueryRequest,
    TablesEnvelope,
)
from agentdb.explorer.service import Page, Scope, SqlFailed

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)

TAGS = ["explorer"]
WorkspaceId = Annotated[str, Path(min_length=1, max_length=128)]
UserId = Annotated[str, Path(min_length=1, max_length=128)]


@app.exception_handler(SqlFailed)
def _sql_failed(exc: SqlFailed) -> Response[str]:
    body = {"success": False, "error": {"code": exc.code, "message": exc.message, "sqlstate": exc.sqlstate}}
    return Response(status_code=exc.status, content_type="application/json", body=json.dumps(body))


_DESCRIBED = {
    "s400": "invalid_input (also a foreign cursor), sql_error or sql_refused (with sqlstate; a read member's write)",
    "s403": "another user's global database",
    "s404": "the workspace is not found or you are not a member, or no such table",
    "s409": "database_provisioning, database_unavailable or database_not_provisioned",
}
_STATUSES = (402, 403, 404, 409, 429, 502, 503)
_QUERY_OK: OpenAPIResponse = {
    "description": "one page of rows: JSON, or CSV (format: csv) with the page facts in headers",
    "content": {
        "application/json": {"model": QueryEnvelope},
        "text/csv": {"schema": {"type": "string", "description": "a header row, then the rows"}},
    },
    "headers": {
        "X-AgentDB-Truncated": {"description": "csv: true when the page was cut short", "schema": {"type": "string"}},
        "X-AgentDB-Next-Cursor": {"description": "csv: the next page's cursor", "schema": {"type": "string"}},
    },
}
_TABLES = responses(
    {200: json_response(TablesEnvelope, "the tables, views and materialized views")}, *_STATUSES, **_DESCRIBED
)
_QUERY = responses({200: _QUERY_OK}, *_STATUSES, **_DESCRIBED)
_EXECUTE = responses({200: json_response(ExecuteEnvelope, "the statement's result, capped")}, *_STATUSES, **_DESCRIBED)
_CONNECTION = responses(
    {200: json_response(ConnectionEnvelope, "where the database is; the password masked")}, *_STATUSES, **_DESCRIBED
)


def _page(page: Page, body: QueryRequest) -> Response[str]:
    if body.format == "json":
        return ok(page.to_dict())
    headers = {
        "X-AgentDB-Truncated": "true" if page.truncated else "false",
        "Content-Disposition": f'attachment; filename="{_filename(body.table)}.csv"',
    }
    if page.next_cursor:
        headers["X-AgentDB-Next-Cursor"] = page.next_cursor
    return Response(status_code=200, content_type="text/csv; charset=utf-8", body=page.to_csv(), headers=headers)


def _filename(table: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", table).strip("._") or "rows"


# Workspace database ---------------------------------------------------------------------------
@app.get("/workspaces/<workspaceId>/database/tables", summary="List tables", tags=TAGS, responses=_TABLES)
def workspace_tables(workspaceId: WorkspaceId) -> Response[str]:
    scope = Scope.workspace(identity(app).user_id, workspaceId)
    return ok(get_services().explorer.tables(scope))


@app.post("/workspaces/<workspaceId>/database/query", summary="Read a page of rows", tags=TAGS, responses=_QUERY)
def workspace_query(workspaceId: WorkspaceId, body: Annotated[QueryRequest, Body()]) -> Response[str]:
    scope = Scope.workspace(identity(app).user_id, workspaceId)
    return _page(get_services().explorer.query(scope, body), body)


@app.post("/workspaces/<workspaceId>/database/execute", summary="Run one statement", tags=TAGS, responses=_EXECUTE)
def workspace_execute(workspaceId: WorkspaceId, body: Annotated[ExecuteRequest, Body()]) -> Response[str]:
    scope = Scope.workspace(identity(app).user_id, workspaceId)
    return ok(get_services().explorer.execute(scope, body.sql))


@app.get("/workspaces/<workspaceId>/database/connection", summary="Connection facts", tags=TAGS, responses=_CONNECTION)
def workspace_connection(workspaceId: WorkspaceId) -> Response[str]:
    scope = Scope.workspace(identity(app).user_id, workspaceId)
    return ok(get_services().explorer.connection(scope))


# The caller's global database -----------------------------------------------------------------
@app.get("/users/<userId>/global-database/tables", summary="List global tables", tags=TAGS, responses=_TABLES)
def global_tables(userId: UserId) -> Response[str]:
    scope = Scope.global_database(identity(app).user_id, userId)
    return ok(get_services().explorer.tables(scope))


@app.post("/users/<userId>/global-database/query", summary="Read a page of global rows", tags=TAGS, responses=_QUERY)
def global_query(userId: UserId, body: Annotated[QueryRequest, Body()]) -> Response[str]:
    scope = Scope.global_database(identity(app).user_id, userId)
    return _page(get_services().explorer.query(scope, body), body)
