"""The response envelope, error mapping and caller identity for the Powertools HTTP resolvers.

Envelope: ``{"success": true, "data": ...}`` or ``{"success": false, "error": {"code", "message"}}``.
Unexpected exceptions become a 500 with a generic message; the details go to the log (never a
stack trace or a secret to the caller).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from agentdb.errors import AgentDBError, Forbidden, RateLimited, Unauthorized
from agentdb.observability import logger

ADMIN_SCOPE = "agentdb/admin"
_JSON = "application/json"


def ok(data: Any, status: int = 200) -> Response[str]:
    return Response(status_code=status, content_type=_JSON, body=json.dumps({"success": True, "data": data}))


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[str]:
    body = json.dumps({"success": False, "error": {"code": code, "message": message}})
    return Response(status_code=status, content_type=_JSON, body=body, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    where = ".".join(loc)
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON"
    return f"{where}: {msg}" if where else msg


def register_error_handlers(app: APIGatewayHttpResolver) -> None:
    @app.exception_handler(AgentDBError)
    def _domain(exc: AgentDBError) -> Response[str]:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        if exc.status >= 500:
            logger.warning("request failed upstream", extra={"code": exc.code, "status": exc.status})
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[str]:
        return error_response(400, "invalid_input", _validation_message(exc))

    @app.exception_handler(UnicodeDecodeError)
    def _undecodable(exc: UnicodeDecodeError) -> Response[str]:
        return error_response(400, "invalid_input", "request body is not valid UTF-8")

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response[str]:
        return error_response(404, "not_found", "no such route")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")


@dataclass(frozen=True)
class Identity:
    user_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def identity(app: APIGatewayHttpResolver) -> Identity:
    """The caller, from the JWT authorizer's claims (verified by API Gateway or the local gateway)."""
    claims = app.current_event.request_context.authorizer.jwt_claim or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("missing identity")
    scope = claims.get("scope") or claims.get("scp") or ""
    scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope]
    return Identity(user_id=sub, scopes=frozenset(scopes))


def require_admin(app: APIGatewayHttpResolver) -> Identity:
    who = identity(app)
    if not who.is_admin:
        raise Forbidden(f"this route needs the {ADMIN_SCOPE} scope")
    return who
