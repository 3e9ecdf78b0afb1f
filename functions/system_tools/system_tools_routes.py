"""HTTP route of the system_tools function (Powertools resolver with request validation).

Imported on the first request by app.py, so that importing the handler module stays cheap.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.container import get_services

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


@app.get("/mcp/system-tools")
def list_system_tools(workspaceId: Annotated[str, Query(min_length=1, max_length=128)]) -> Response[str]:
    caller = identity(app)
    return ok(get_services().tools.list_tools(caller.user_id, workspaceId))
