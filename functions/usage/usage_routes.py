"""The usage API: GET /users/{userId}/db-usage (the user themself, or a token with the admin scope).

Served by UsageApiFunction (30 s, like API Gateway's own limit). A re-sync of one user is a handful of
consumption requests at most; when Neon is slow or the shared rate limit is spent, the stored figures are
answered with ``stale: true`` rather than letting the request run into API Gateway's timeout, and pausing
that does not fit is handed to the usage queue.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.api.schemas import Open, envelope, json_response, responses
from agentdb.container import get_services
from agentdb.errors import Forbidden, InvalidInput

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)

# Kept back from the function's remaining time: the answer must leave before API Gateway gives up (30 s).
_HTTP_RESERVE_SECONDS = 8.0


class DatabaseUsage(Open):
    cost: str
    costCents: int
    computeHours: float
    storageGb: float
    paused: bool
    status: str | None


class AgentDatabaseUsage(DatabaseUsage):
    workspaceId: str
    workspaceName: str | None


class Usage(Open):
    userId: str
    plan: str
    currency: str
    refreshed: bool
    stale: bool
    globalDb: DatabaseUsage | None
    agentDbs: list[AgentDatabaseUsage]
    totalCents: int
    limitCents: int
    remainingCents: int
    exceeded: bool


_RESPONSES = responses(
    {200: json_response(envelope("UsageEnvelope", Usage), "the period's cost per database against the budget")},
    403, 404,
    s403="another user's usage without the admin scope",
)  # fmt: skip


@app.get("/users/<userId>/db-usage", summary="Database usage and budget", tags=["usage"], responses=_RESPONSES)
def db_usage(userId: str) -> Response[str]:
    from agentdb.billing.service import Deadline

    caller = identity(app)
    if not userId or len(userId) > 128:
        raise InvalidInput("userId must be a string of 1 to 128 characters")
    if caller.user_id != userId and not caller.is_admin:
        raise Forbidden("you can only see your own usage")
    deadline = Deadline.from_context(app.lambda_context, _HTTP_RESERVE_SECONDS)
    return ok(get_services().billing.usage(userId, deadline=deadline))
