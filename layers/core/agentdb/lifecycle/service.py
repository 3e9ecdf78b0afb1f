"""Lifecycle use cases, shared by the EventBridge path and the admin HTTP routes.

Every operation is idempotent on natural keys (user id, workspace id), so duplicates, retries and
concurrent deliveries converge. Provisioning and deletion of one tenant database are serialised by
a control-plane advisory lock. Deletions leave a tombstone with the deletion time: an older creation
event arriving late (out-of-order delivery) is ignored instead of resurrecting the tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentdb.config import PLANS, Settings
from agentdb.crypto import connection_uri_context, readonly_uri_context
from agentdb.errors import AgentDBError, Conflict, InvalidInput, NotFound
from agentdb.lifecycle import events
from agentdb.lifecycle.events import parse_detail
from agentdb.observability import MetricUnit, logger, metrics
from agentdb.providers.base import DatabaseProvider, Tenant
from agentdb.store.repository import TENANT_LOCK_NAMESPACE, DatabaseRecord, MemberRecord, Store

if TYPE_CHECKING:
    from agentdb.crypto import Keyring

ROLES = ("admin", "write", "read")
MAX_ID_LENGTH = 128


def validate_id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{field} must be at most {MAX_ID_LENGTH} characters")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidInput(f"{field} must not contain control characters")
    return value


def validate_plan(plan: object) -> str:
    if plan not in PLANS:
        raise InvalidInput(f"plan must be one of {', '.join(PLANS)}")
    return str(plan)


def validate_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    return str(role)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """What a lifecycle call did, for the response and the logs."""

    action: str  # created | exists | deleted | ignored | updated
    data: dict[str, Any]


def database_view(record: DatabaseRecord | None) -> dict[str, Any] | None:
    """The public facts of a tenant database record (never the URI)."""
    if record is None:
        return None
    return {
        "status": record.status,
        "provider": record.provider,
        "ownershipType": record.ownership_type,
        "projectId": record.project_id,
        "databaseName": record.database_name,
    }


class LifecycleService:
    def __init__(self, store: Store, provider: DatabaseProvider, keyring: Keyring, settings: Settings) -> None:
        self.store = store
        self.provider = provider
        self.keyring = keyring
        self.settings = settings

    # Users ------------------------------------------------------------------------------------
    def create_user(self, user_id: str, plan: str | None = None, at: datetime | None = None) -> Outcome:
        user_id = validate_id(user_id, "userId")
        plan = validate_plan(plan) if plan is not None else None
        at = at or utcnow()
        tenant = Tenant("global", user_id)
        with self._tenant_lock(tenant):
            existing = self.store.get_user(user_id)
            if existing and existing.deleted_at and existing.deleted_at >= at:
                logger.info("user.created ignored: user was deleted later", extra={"user_id": user_id})
                return Outcome("ignored", {"userId": user_id, "reason": "deleted"})
            user = self.store.upsert_user(user_id, plan, self.settings.default_plan, at)
            self.store.ensure_budget(user_id)
            record, made = self._ensure_database(tenant)
        return Outcome(
            "created" if made else "exists",
            {"userId": user.id, "plan": user.plan, "globalDatabase": database_view(record)},
        )

    def delete_user(self, user_id: str, at: datetime | None = None) -> Outcome:
        user_id = validate_id(user_id, "userId")
        at = at or utcnow()
        # Tombstone first: a workspace created for this owner from now on sees it and is not provisioned.
        self.store.tombstone_user(user_id, at)
        deleted_workspaces = []
        for workspace_id in self.store.live_workspaces_owned_by(user_id):
            self.delete_workspace(workspace_id, at)
            deleted_workspaces.append(workspace_id)
        tenant = Tenant("global", user_id)
        with self._tenant_lock(tenant):
            self._delete_database(tenant)
        self.store.delete_memberships_of(user_id)
        return Outcome("deleted", {"userId": user_id, "deletedWorkspaces": deleted_workspaces})

    def change_plan(
        self, user_id: str, plan: str, at: datetime | None = None, *, remember_unknown: bool = False
    ) -> Outcome:
        """Store the user's tier. An older change arriving late is ignored. Events about a user we
        have not heard of yet are remembered (``remember_unknown``); the HTTP route answers 404."""
        user_id = validate_id(user_id, "userId")
        plan = validate_plan(plan)
        at = at or utcnow()
        user = self.store.get_user(user_id)
        if user is None and remember_unknown:
            self.store.insert_user_with_plan(user_id, plan, at)
            user = self.store.get_user(user_id)
        if user is None or user.deleted_at is not None:
            if remember_unknown:
                return Outcome("ignored", {"userId": user_id, "reason": "deleted"})
            raise NotFound(f"user {user_id!r} not found")
        changed = self.store.set_plan(user_id, plan, at)
        current = self.store.get_user(user_id)
        data: dict[str, Any] = {
            "userId": user_id,
            "plan": current.plan if current else plan,
            "limitCents": self._limit(user_id),
        }
        if changed:  # a tier above the spend resumes paused databases; one below it pauses them
            data.update(self._reevaluate_budget(user_id))
        return Outcome("updated" if changed else "ignored", data)

    def set_custom_budget(self, user_id: str, cents: int | None) -> Outcome:
        user_id = validate_id(user_id, "userId")
        if cents is not None and (isinstance(cents, bool) or not isinstance(cents, int) or not 0 <= cents <= 2**31 - 1):
            raise InvalidInput("customBudgetCents must be an integer from 0 to 2147483647, or null")
        if not self.store.set_custom_budget(user_id, cents):
            raise NotFound(f"user {user_id!r} not found")
        data: dict[str, Any] = {"userId": user_id, "customBudgetCents": cents, "limitCents": self._limit(user_id)}
        data.update(self._reevaluate_budget(user_id))  # resumes when the new limit is above the spend
        return Outcome("updated", data)

    def _reevaluate_budget(self, user_id: str) -> dict[str, Any]:
        """Pause or resume the user's databases for their new limit (billing.service.BillingService.reevaluate).
        Work that does not fit in this request's time is handed to the usage function."""
        from agentdb.billing.queue import work_queue_from_env
        from agentdb.billing.service import LIFECYCLE_ENFORCE_SECONDS, BillingService, Deadline

        billing = BillingService(self.store, self.provider, self.settings, queue=work_queue_from_env())
        outcome = billing.reevaluate(user_id, deadline=Deadline(LIFECYCLE_ENFORCE_SECONDS))
        return {"budget": outcome.to_dict()} if outcome is not None else {}

    def _limit(self, user_id: str) -> int:
        user = self.store.get_user(user_id)
        budget = self.store.get_budget(user_id)
        if budget and budget.custom_budget_cents is not None:
            return budget.custom_budget_cents
        return self.settings.budget_cents_for(user.plan if user else self.settings.default_plan)

    # Workspaces -------------------------------------------------------------------------------
    def create_workspace(
        self, workspace_id: str, owner_user_id: str, name: str | None = None, at: datetime | None = None
    ) -> Outcome:
        workspace_id = validate_id(workspace_id, "workspaceId")
        owner_user_id = validate_id(owner_user_id, "ownerUserId")
        if name is not None and (not isinstance(name, str) or len(name) > 256):
            raise InvalidInput("name must be a string of at most 256 characters")
        at = at or utcnow()
        tenant = Tenant("workspace", workspace_id)
        with self._tenant_lock(tenant):
            existing = self.store.get_workspace(workspace_id)
            if existing and existing.deleted_at and existing.deleted_at >= at:
                return Outcome("ignored", {"workspaceId": workspace_id, "reason": "deleted"})
            workspace = self.store.upsert_workspace(workspace_id, owner_user_id, name)
            owner = self.store.get_user(owner_user_id)
            if owner is not None and owner.deleted_at is not None:
                # The owner is gone; user.deleted may have run before this event: never provision.
                self.store.tombstone_workspace(workspace_id, max(at, owner.deleted_at))
                return Outcome("ignored", {"workspaceId": workspace_id, "reason": "owner deleted"})
            record, made = self._ensure_database(tenant)
        return Outcome(
            "created" if made else "exists",
            {
                "workspaceId": workspace.id,
                "ownerUserId": workspace.owner_user_id,
                "name": workspace.name,
                "database": database_view(record),
            },
        )

    def delete_workspace(self, workspace_id: str, at: datetime | None = None) -> Outcome:
        workspace_id = validate_id(workspace_id, "workspaceId")
        at = at or utcnow()
        tenant = Tenant("workspace", workspace_id)
        with self._tenant_lock(tenant):
            self.store.tombstone_workspace(workspace_id, at)
            kept = self._delete_database(tenant)
        return Outcome("deleted", {"workspaceId": workspace_id, "databaseKept": kept})

    # Members ----------------------------------------------------------------------------------
    def put_member(self, workspace_id: str, user_id: str, role: str, *, create_placeholder: bool) -> Outcome:
        """Add or change a member. Events may arrive before workspace.created (placeholder row);
        the admin HTTP route requires the workspace to exist."""
        workspace_id = validate_id(workspace_id, "workspaceId")
        user_id = validate_id(user_id, "userId")
        role = validate_role(role)
        workspace = self.store.get_workspace(workspace_id)
        if workspace is None and create_placeholder:
            workspace = self.store.ensure_workspace_placeholder(workspace_id)
        if workspace is None or workspace.deleted_at is not None:
            if create_placeholder:
                return Outcome("ignored", {"workspaceId": workspace_id, "reason": "deleted"})
            raise NotFound(f"workspace {workspace_id!r} not found")
        member: MemberRecord = self.store.upsert_member(workspace_id, user_id, role)
        return Outcome("updated", {"workspaceId": workspace_id, "userId": member.user_id, "role": member.role})

    def remove_member(self, workspace_id: str, user_id: str) -> Outcome:
        workspace_id = validate_id(workspace_id, "workspaceId")
        user_id = validate_id(user_id, "userId")
        removed = self.store.delete_member(workspace_id, user_id)
        return Outcome("deleted", {"workspaceId": workspace_id, "userId": user_id, "removed": removed})

    # Tenant databases -------------------------------------------------------------------------
    def _ensure_database(self, tenant: Tenant) -> tuple[DatabaseRecord, bool]:
        """Provision the tenant's database unless it is ready. Caller holds the tenant lock.

        On failure, whatever the provider made is removed and the record dropped, so nothing is
        left half-made; the error propagates (HTTP: 502/503; events: retried, then dead-lettered).
        """
        record = self.store.get_database(tenant)
        if record is not None and record.status == "ready":
            return record, False
        if record is not None and record.status == "deleting":
            self._delete_database(tenant)  # finish an interrupted deletion before starting afresh
        record = self.store.insert_database(tenant, self.provider.name)
        started = time.perf_counter()
        try:
            made = self.provider.create(tenant)
            token = self.keyring.encrypt(made.connection_uri, connection_uri_context(tenant.context_key))
            readonly_token = (
                self.keyring.encrypt(made.readonly_connection_uri, readonly_uri_context(tenant.context_key))
                if made.readonly_connection_uri
                else None
            )
        except Exception as exc:
            metrics.add_metric(name="ProvisioningFailed", unit=MetricUnit.Count, value=1)
            logger.warning(
                "provisioning failed; removing partial resources",
                extra={"tenant": tenant.context_key, "error": type(exc).__name__, "code": _code(exc)},
            )
            self._cleanup_failed(tenant)
            raise
        record = self.store.mark_database_ready(
            tenant,
            project_id=made.project_id,
            branch_id=made.branch_id,
            database_name=made.database_name,
            role_name=made.role_name,
            encrypted_uri=token,
            encrypted_readonly_uri=readonly_token,
        )
        metrics.add_metric(name="DatabaseProvisioned", unit=MetricUnit.Count, value=1)
        logger.info(
            "tenant database ready",
            extra={
                "tenant": tenant.context_key,
                "provider": self.provider.name,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return record, True

    def _cleanup_failed(self, tenant: Tenant) -> None:
        try:
            self.provider.delete(tenant)
        except Exception as exc:  # the reconciler removes what this could not
            logger.error(
                "could not remove partial resources",
                extra={"tenant": tenant.context_key, "error": type(exc).__name__},
            )
            self.store.set_database_status(tenant, "failed", "cleanup after failed provisioning did not finish")
            return
        self.store.delete_database_record(tenant)

    def _delete_database(self, tenant: Tenant) -> bool:
        """Delete the tenant database (platform-owned) and its record. Returns True when kept (user-owned)."""
        record = self.store.get_database(tenant)
        if record is None:
            return False
        if record.ownership_type != "platform":
            self.store.delete_database_record(tenant)
            return True
        self.store.set_database_status(tenant, "deleting")
        try:
            self.provider.delete(tenant, record.project_id)
        except AgentDBError as exc:
            self.store.set_database_status(tenant, "deleting", f"delete failed: {exc.code}")
            metrics.add_metric(name="DeletionFailed", unit=MetricUnit.Count, value=1)
            raise
        self.store.delete_database_record(tenant)
        metrics.add_metric(name="DatabaseDeleted", unit=MetricUnit.Count, value=1)
        logger.info("tenant database deleted", extra={"tenant": tenant.context_key})
        return False

    # Repair (reconciliation) ------------------------------------------------------------------------
    def repair_database(
        self, tenant: Tenant, *, still_needed: Callable[[], bool], lock_wait_seconds: float | None = None
    ) -> Outcome:
        """Finish or redo the work on a tenant database with this service's own operations (the reconciler:
        a record stuck in provisioning or deleting, failed, or whose database went missing).

        Runs under the tenant lock, so never alongside a live lifecycle event, and only if ``still_needed()``
        (called under the lock; it may also make the transition, e.g. ready -> failed) says the drift the
        caller saw is still there. A tenant that is gone (tombstoned) or a deleting record is deleted; any
        other is provisioned (the provider finds what an earlier attempt made). If that fails the record is
        kept as ``failed`` so that the next run tries again, and the error propagates.
        """
        with self._tenant_lock(tenant, lock_wait_seconds):
            if not still_needed():
                return Outcome("ignored", {"tenant": tenant.context_key, "reason": "changed meanwhile"})
            record = self.store.get_database(tenant)
            if record is None or record.ownership_type != "platform":
                return Outcome("ignored", {"tenant": tenant.context_key, "reason": "no platform database"})
            if record.status == "deleting" or not self._tenant_live(tenant):
                self._delete_database(tenant)
                return Outcome("deleted", {"tenant": tenant.context_key})
            try:
                record, _ = self._ensure_database(tenant)
            except Exception as exc:
                if self.store.get_database(tenant) is None:  # _ensure_database dropped it: keep it, failed
                    self.store.insert_database(tenant, self.provider.name)
                    detail = f"reconciliation could not provision: {_code(exc)}"
                    self.store.set_database_status(tenant, "failed", detail)
                raise
            return Outcome("created", {"tenant": tenant.context_key, "database": database_view(record)})

    def _tenant_live(self, tenant: Tenant) -> bool:
        """The user, or the workspace and its owner, exist and are not deleted."""
        if tenant.kind == "global":
            user = self.store.get_user(tenant.id)
            return user is not None and user.deleted_at is None
        workspace = self.store.get_workspace(tenant.id)
        if workspace is None or workspace.deleted_at is not None:
            return False
        owner = self.store.get_user(workspace.owner_user_id) if workspace.owner_user_id else None
        return owner is None or owner.deleted_at is None

    @contextmanager
    def _tenant_lock(self, tenant: Tenant, wait_seconds: float | None = None) -> Iterator[None]:
        """Serialise work on one tenant across Lambdas; waits up to ``wait_seconds`` (default
        PROVISION_LOCK_WAIT_SECONDS)."""
        namespace = TENANT_LOCK_NAMESPACE[tenant.kind]
        wait = self.settings.provision_lock_wait_seconds if wait_seconds is None else wait_seconds
        with self.store.advisory_lock(namespace, tenant.id, wait) as locked:
            if not locked:
                raise Conflict(
                    f"another request is still provisioning or deleting this {tenant.kind} database; retry shortly",
                    code="operation_in_progress",
                )
            yield

    # Events -----------------------------------------------------------------------------------
    def handle_event(self, event_id: str, detail_type: str, detail: dict[str, Any], at: datetime) -> Outcome:
        """Apply one platform lifecycle event; a repeated event id is acknowledged and skipped."""
        if self.store.event_processed(event_id):
            return Outcome("ignored", {"eventId": event_id, "reason": "duplicate"})
        outcome = self._dispatch(detail_type, detail, at)
        self.store.record_event(event_id, detail_type)
        return outcome

    def _dispatch(self, detail_type: str, detail: dict[str, Any], at: datetime) -> Outcome:
        d = parse_detail(detail_type, detail)
        if isinstance(d, events.UserCreated):
            return self.create_user(d.userId, d.plan, at)
        if isinstance(d, events.UserDeleted):
            return self.delete_user(d.userId, at)
        if isinstance(d, events.UserPlanChanged):
            return self.change_plan(d.userId, d.plan, at, remember_unknown=True)
        if isinstance(d, events.WorkspaceCreated):
            return self.create_workspace(d.workspaceId, d.ownerUserId, d.name, at)
        if isinstance(d, events.WorkspaceDeleted):
            return self.delete_workspace(d.workspaceId, at)
        if isinstance(d, events.MemberAdded):
            return self.put_member(d.workspaceId, d.userId, d.role, create_placeholder=True)
        assert isinstance(d, events.MemberRemoved)
        return self.remove_member(d.workspaceId, d.userId)


def _code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, AgentDBError) else "unexpected"
