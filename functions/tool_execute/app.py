"""Tool execution: one MCP tool call on the workspace's database or the caller's global database.

POST /mcp/tools/execute {serverId, toolName, arguments, workspaceId} → {"success": true, "data": CallToolResult}.
SQL errors are tool errors (isError: true, HTTP 200); a caller's mistake is a 4xx.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import tool_execute_routes  # the function's own directory is on sys.path, as in Lambda

    return tool_execute_routes.app.resolve(event, context)
