"""Response models for the OpenAPI document: the envelope, the error envelope and the per-route declarations.

The routes answer with ``agentdb.api.http.ok``/``error_response`` (plain JSON strings, so a hot path pays no
model validation); these models only describe those answers. ``local/openapi.py`` gathers every resolver's
``get_openapi_schema()`` into one document, and the schemathesis run in tests/e2e checks every answer
against it, so a model that drifts from what a route really sends fails the tests.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, RootModel, create_model


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    sqlstate: str | None = None


class ErrorEnvelope(BaseModel):
    """Every error: ``{"success": false, "error": {"code", "message"}}`` (plus ``sqlstate`` for SQL errors)."""

    success: Literal[False]
    error: ErrorDetail


class GatewayMessage(BaseModel):
    """What API Gateway's JWT authorizer answers itself (401, or 403 for a missing scope): not our envelope."""

    message: str


class Refusal(RootModel[ErrorEnvelope | GatewayMessage]):
    """A 403: from the authorizer (missing scope) or from the route (no right to this resource)."""


class Open(BaseModel):
    """A response object whose listed fields are always there; more may be added without notice."""

    model_config = ConfigDict(extra="allow")


ERRORS: dict[int, str] = {
    400: "invalid_input: the request is malformed or a value is out of range",
    401: "no valid bearer token (answered by the JWT authorizer)",
    402: "budget_exceeded: the user's database budget is spent; database operations are paused",
    403: "forbidden: the token lacks the scope or the right for this resource",
    404: "not_found: no such resource, or not yours",
    409: "conflict: the resource is in a state that does not allow this (e.g. still provisioning)",
    429: "rate_limited: too many requests; see the Retry-After header",
    502: "upstream_error: the database provider or KMS refused",
    503: "upstream_unavailable: the database provider or KMS is unavailable; retry later",
}


def envelope(name: str, data: Any) -> type[BaseModel]:
    """The success envelope ``{"success": true, "data": <data>}`` as a named model."""
    model: type[BaseModel] = create_model(name, success=(Literal[True], ...), data=(data, ...))
    return model


def json_response(model: type[BaseModel], description: str) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": model}}}


def error(status: int, description: str | None = None) -> OpenAPIResponse:
    models: dict[int, type[BaseModel]] = {401: GatewayMessage, 403: Refusal}
    model = models.get(status, ErrorEnvelope)
    response = json_response(model, description or ERRORS[status])
    if status == 429:
        response["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
    return response


def responses(ok: dict[int, OpenAPIResponse], *statuses: int, **described: str) -> dict[int, OpenAPIResponse]:
    """A route's responses: its successes, then the error statuses it can answer (400, 401, 500 always).
    ``described`` gives a route-specific text for a status, keyed ``s404="..."``."""
    out: dict[int, OpenAPIResponse] = dict(ok)
    for status in sorted({400, 401, *statuses}):
        out[status] = error(status, described.get(f"s{status}"))
    out[500] = json_response(ErrorEnvelope, "internal_error: an unexpected failure (details only in the logs)")
    return out
