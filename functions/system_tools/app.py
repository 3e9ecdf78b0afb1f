"""System tools listing: the workspace's two database servers and their tools, ready for an LLM.

GET /mcp/system-tools?workspaceId=W — owner and members only; a `read` member gets read-only tools.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.container import get_services
from agentdb.observability import lambda_handler

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


@app.get("/mcp/system-tools")
def list_system_tools(workspaceId: Annotated[str, Query(min_length=1, max_length=128)]) -> Response[str]:
    caller = identity(app)
    return ok(get_services().tools.list_tools(caller.user_id, workspaceId))


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
