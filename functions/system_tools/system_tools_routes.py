"""HTTP route of the system_tools function (Powertools resolver with request validation).

Imported on the first request by app.py, so that importing the handler module stays cheap.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.api.schemas import Open, envelope, json_response, responses
from agentdb.container import get_services

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


class ToolInfo(Open):
    serverId: str
    name: str
    description: str
    inputSchema: dict[str, Any]
    annotations: dict[str, Any]


class ServerInfo(Open):
    id: str
    name: str
    description: str
    databaseStatus: str
    readOnly: bool


class SystemTools(Open):
    tools: list[ToolInfo]
    servers: list[ServerInfo]


_RESPONSES = responses(
    {200: json_response(envelope("SystemToolsEnvelope", SystemTools), "the workspace's servers and tools")},
    404,
    s404="the workspace is not found, or you are not a member of it",
)


@app.get("/mcp/system-tools", summary="List the SQL tools", tags=["tools"], responses=_RESPONSES)
def list_system_tools(workspaceId: Annotated[str, Query(min_length=1, max_length=128)]) -> Response[str]:
    caller = identity(app)
    return ok(get_services().tools.list_tools(caller.user_id, workspaceId))
