"""System tools listing: the workspace's two database servers and their tools, ready for an LLM.

GET /mcp/system-tools?workspaceId=W — owner and members only; a `read` member gets read-only tools.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.observability import lambda_handler


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import system_tools_routes  # the function's own directory is on sys.path, as in Lambda

    return system_tools_routes.app.resolve(event, context)
