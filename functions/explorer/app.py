"""Database explorer: a workspace's database (or the caller's global database) for a UI.

GET /workspaces/{workspaceId}/database/tables, POST .../query, POST .../execute, GET .../connection;
GET /users/{userId}/global-database/tables, POST .../query. Every statement runs through the SQL tools'
executor and guards (one code path); see agentdb.explorer.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import explorer_routes  # the function's own directory is on sys.path, as in Lambda

    return explorer_routes.app.resolve(event, context)
