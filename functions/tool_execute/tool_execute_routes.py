"""HTTP route of the tool_execute function (Powertools resolver with request validation).

Imported on the first request by app.py, so that importing the handler module stays cheap.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, Field

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.container import get_services

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


class ExecuteRequest(BaseModel):
    serverId: Annotated[str, Field(min_length=1, max_length=64)]
    toolName: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: dict[str, Any] = Field(default_factory=dict)
    workspaceId: Annotated[str, Field(min_length=1, max_length=128)]


@app.post("/mcp/tools/execute")
def execute_tool(body: Annotated[ExecuteRequest, Body()]) -> Response[str]:
    caller = identity(app)
    tools = get_services().tools
    return ok(tools.execute(caller.user_id, body.workspaceId, body.serverId, body.toolName, body.arguments))
