"""The standard MCP endpoint: ``POST /mcp?workspaceId=W``, MCP streamable HTTP (stateless, JSON responses).

The workspace's SQL tools on both databases (``agent_*`` and ``global_*``) for any MCP client; a call goes
through the same authorisation, guards, budget check, rate limit and audit as ``POST /mcp/tools/execute``.
Only this function imports the ``mcp`` package, on its first request.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import mcp_endpoint_routes  # the function's own directory is on sys.path, as in Lambda

    return mcp_endpoint_routes.handle(event)
