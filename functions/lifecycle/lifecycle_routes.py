"""Admin HTTP routes of the lifecycle function (Powertools resolver with request validation).

Imported on the first HTTP invocation only: EventBridge invocations never pay for the resolver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, Field

from agentdb.api.http import ok, register_error_handlers, require_admin
from agentdb.container import get_services
from agentdb.errors import Conflict

if TYPE_CHECKING:
    from agentdb.lifecycle.service import Outcome

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)

Id = Annotated[str, Field(min_length=1, max_length=128)]
Plan = Literal["free", "pro", "team", "enterprise"]


class CreateUserRequest(BaseModel):
    userId: Id
    plan: Plan | None = None


class PlanRequest(BaseModel):
    plan: Plan


class BudgetRequest(BaseModel):
    customBudgetCents: Annotated[int, Field(ge=0)] | None


class CreateWorkspaceRequest(BaseModel):
    workspaceId: Id
    ownerUserId: Id
    name: Annotated[str, Field(max_length=256)] | None = None


class MemberRequest(BaseModel):
    role: Literal["admin", "write", "read"]


def _created(outcome: Outcome) -> Response[str]:
    if outcome.action == "ignored":
        raise Conflict(f"not created: {outcome.data.get('reason', 'deleted')}", code="tenant_deleted")
    return ok(outcome.data, 201 if outcome.action == "created" else 200)


@app.post("/users")
def create_user(body: Annotated[CreateUserRequest, Body()]) -> Response[str]:
    require_admin(app)
    return _created(get_services().lifecycle.create_user(body.userId, body.plan))


@app.delete("/users/<userId>")
def delete_user(userId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.delete_user(userId).data)


@app.put("/users/<userId>/plan")
def change_plan(userId: str, body: Annotated[PlanRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.change_plan(userId, body.plan).data)


@app.put("/users/<userId>/budget")
def set_budget(userId: str, body: Annotated[BudgetRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.set_custom_budget(userId, body.customBudgetCents).data)


@app.post("/workspaces")
def create_workspace(body: Annotated[CreateWorkspaceRequest, Body()]) -> Response[str]:
    require_admin(app)
    return _created(get_services().lifecycle.create_workspace(body.workspaceId, body.ownerUserId, body.name))


@app.delete("/workspaces/<workspaceId>")
def delete_workspace(workspaceId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.delete_workspace(workspaceId).data)


@app.put("/workspaces/<workspaceId>/members/<userId>")
def put_member(workspaceId: str, userId: str, body: Annotated[MemberRequest, Body()]) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.put_member(workspaceId, userId, body.role, create_placeholder=False).data)


@app.delete("/workspaces/<workspaceId>/members/<userId>")
def remove_member(workspaceId: str, userId: str) -> Response[str]:
    require_admin(app)
    return ok(get_services().lifecycle.remove_member(workspaceId, userId).data)
