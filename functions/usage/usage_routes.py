"""The usage API: GET /users/{userId}/db-usage (the user themself, or a token with the admin scope).

Served by UsageApiFunction (30 s, like API Gateway's own limit). A re-sync of one user is a handful of
consumption requests at most; when Neon is slow or the shared rate limit is spent, the stored figures are
answered with ``stale: true`` rather than letting the request run into API Gateway's timeout, and pausing
that does not fit is handed to the usage queue.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.container import get_services
from agentdb.errors import Forbidden, InvalidInput

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)

# Kept back from the function's remaining time: the answer must leave before API Gateway gives up (30 s).
_HTTP_RESERVE_SECONDS = 8.0


@app.get("/users/<userId>/db-usage")
def db_usage(userId: str) -> Response[str]:
    from agentdb.billing.service import Deadline

    caller = identity(app)
    if not userId or len(userId) > 128:
        raise InvalidInput("userId must be a string of 1 to 128 characters")
    if caller.user_id != userId and not caller.is_admin:
        raise Forbidden("you can only see your own usage")
    deadline = Deadline.from_context(app.lambda_context, _HTTP_RESERVE_SECONDS)
    return ok(get_services().billing.usage(userId, deadline=deadline))
