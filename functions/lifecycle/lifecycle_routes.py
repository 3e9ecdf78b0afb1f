"""Admin HTTP routes of the lifecycle function (Powertools resolver with request validation).

Imported on the first HTTP invocation only: EventBridge invocations never pay for the resolver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field

from agentdb.api.http import ok, register_error_handlers, require_admin
from agentdb.api.schemas import Open, envelope, json_response, responses
from agentdb.container import get_services
from agentdb.errors import Conflict

if TYPE_CHECKING:
    from agentdb.lifecycle.service import Outcome

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)

Id = Annotated[str, Field(min_length=1, max_length=128)]
Plan = Literal["free", "pro", "team", "enterprise"]
MAX_BUDGET_CENTS = 2**31 - 1  # the column is an integer


class CreateUserRequest(BaseModel):
    userId: Id
    plan: Plan | None = None


class PlanRequest(BaseModel):
    plan: Plan


class BudgetRequest(BaseModel):
    customBudgetCents: Annotated[int, Field(ge=0, le=MAX_BUDGET_CENTS)] | None


class CreateWorkspaceRequest(BaseModel):
    workspaceId: Id
    ownerUserId: Id
    name: Annotated[str, Field(max_length=256)] | None = None


class MemberRequest(BaseModel):
    role: Literal["admin", "write", "read"]


class DatabaseView(Open):
    """A tenant database's public facts (never its connection URI)."""

    status: str
    provider: str
    ownershipType: str
    projectId: str | None
    databaseName: str | None


class UserView(Open):
    userId: str
    plan: str
    globalDatabase: DatabaseView | None


class UserDeleted(Open):
    userId: str
    deletedWorkspaces: list[str]


class PlanView(Open):
    userId: str
    plan: str
    limitCents: int


class BudgetView(Open):
    userId: str
    customBudgetCents: int | None
    limitCents: int


class WorkspaceView(Open):
    workspaceId: str
    ownerUserId: str
    name: str | None
    database: DatabaseView | None


class WorkspaceDeleted(Open):
    workspaceId: str


class MemberView(Open):
    workspaceId: str
    userId: str | None = None  # absent when the workspace was deleted meanwhile (reason: "deleted")


TAGS = ["admin"]
_ADMIN = (403,)  # without the agentdb/admin scope
_UPSTREAM = (502, 503)


def _ok(
    name: str, model: type, description: str, *statuses: int, created: bool = False, **described: str
) -> dict[int, OpenAPIResponse]:
    answer = json_response(envelope(name, model), description)
    ok_statuses = {201: answer, 200: json_response(envelope(name, model), "it already existed: nothing changed")}
    return responses(ok_statuses if created else {200: answer}, *_ADMIN, *statuses, **described)


_USER_CREATED = _ok(
    "UserEnvelope", UserView, "the user and their global database were created", 409, *_UPSTREAM, created=True,
    s409="tenant_deleted: the user was deleted after this request was made",
)  # fmt: skip
_USER_DELETED = _ok("UserDeletedEnvelope", UserDeleted, "the user's databases are deleted", *_UPSTREAM)
_PLAN = _ok("PlanEnvelope", PlanView, "the tier is stored", 404, *_UPSTREAM, s404="no such user")
_BUDGET = _ok("BudgetEnvelope", BudgetView, "the override is stored", 404, *_UPSTREAM, s404="no such user")
_WORKSPACE_CREATED = _ok(
    "WorkspaceEnvelope", WorkspaceView, "the workspace and its database were created", 409, *_UPSTREAM, created=True,
    s409="tenant_deleted: the workspace or its owner was deleted after this request was made",
)  # fmt: skip
_WORKSPACE_DELETED = _ok(
    "WorkspaceDeletedEnvelope", WorkspaceDeleted, "the workspace's database is deleted", *_UPSTREAM
)
_MEMBER = _ok("MemberEnvelope", MemberView, "the membership is stored", 404, 409, s404="no such workspace")
_MEMBER_REMOVED = _ok("MemberRemovedEnvelope", MemberView, "the membership is removed")


def _created(outcome: Outcome) -> Response[str]:
    if outcome.action == "ignored":
        raise Conflict(f"not created: {outcome.data.get('reason', 'deleted')}", code="tenant_deleted")
    return ok(outcome.data, 201 if outcome.action == "created" else 200)


@app.post("/users", summary="Create a user", tags=TAGS, responses=_USER_CREATED)
def create_user(body: Annotated[CreateUserRequest, Body()]) -> Response[str]:
    require_admin(app)
    return _created(get_services().lifecycle.create_user(body.userId, body.plan))


@app.delete("/users/<userId>", summary="Delete a user", tags=TAGS, responses=_USER_DELETED)
def delete_user(userId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.delete_user(userId).data)


@app.put("/users/<userId>/plan", summary="Change the tier", tags=TAGS, responses=_PLAN)
def change_plan(userId: str, body: Annotated[PlanRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.change_plan(userId, body.plan).data)


@app.put("/users/<userId>/budget", summary="Set a budget override", tags=TAGS, responses=_BUDGET)
def set_budget(userId: str, body: Annotated[BudgetRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.set_custom_budget(userId, body.customBudgetCents).data)


@app.post("/workspaces", summary="Create a workspace", tags=TAGS, responses=_WORKSPACE_CREATED)
def create_workspace(body: Annotated[CreateWorkspaceRequest, Body()]) -> Response[str]:
    require_admin(app)
    return _created(get_services().lifecycle.create_workspace(body.workspaceId, body.ownerUserId, body.name))


@app.delete("/workspaces/<workspaceId>", summary="Delete a workspace", tags=TAGS, responses=_WORKSPACE_DELETED)
def delete_workspace(workspaceId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.delete_workspace(workspaceId).data)


@app.put("/workspaces/<workspaceId>/members/<userId>", summary="Add or change a member", tags=TAGS, responses=_MEMBER)
def put_member(workspaceId: str, userId: str, body: Annotated[MemberRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.put_member(workspaceId, userId, body.role, create_placeholder=False).data)


@app.delete(
    "/workspaces/<workspaceId>/members/<userId>", summary="Remove a member", tags=TAGS, responses=_MEMBER_REMOVED
)
def remove_member(workspaceId: str, userId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.remove_member(workspaceId, userId).data)
