"""The platform's lifecycle events (DESIGN §7): detail models, validated before anything runs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from agentdb.errors import InvalidInput

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
PlanName = Literal["free", "pro", "team", "enterprise"]
Role = Literal["admin", "write", "read"]


class _Detail(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserCreated(_Detail):
    userId: Id
    plan: PlanName | None = None


class UserDeleted(_Detail):
    userId: Id


class UserPlanChanged(_Detail):
    userId: Id
    plan: PlanName


class WorkspaceCreated(_Detail):
    workspaceId: Id
    ownerUserId: Id
    name: Annotated[str, Field(max_length=256)] | None = None


class WorkspaceDeleted(_Detail):
    workspaceId: Id


class MemberAdded(_Detail):
    workspaceId: Id
    userId: Id
    role: Role


class MemberRemoved(_Detail):
    workspaceId: Id
    userId: Id


DETAIL_MODELS: dict[str, type[_Detail]] = {
    "user.created": UserCreated,
    "user.deleted": UserDeleted,
    "user.plan_changed": UserPlanChanged,
    "workspace.created": WorkspaceCreated,
    "workspace.deleted": WorkspaceDeleted,
    "workspace.member_added": MemberAdded,
    "workspace.member_removed": MemberRemoved,
}


def parse_detail(detail_type: str, detail: object) -> _Detail:
    model = DETAIL_MODELS.get(detail_type)
    if model is None:
        raise InvalidInput(f"unknown lifecycle event type {detail_type!r}")
    try:
        return model.model_validate(detail)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "detail"
        raise InvalidInput(f"{detail_type}: {where}: {first['msg']}") from None
