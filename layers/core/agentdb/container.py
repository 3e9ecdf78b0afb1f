"""Wiring: builds the store, provider, keyring and use cases from settings, lazily and once per container."""

from __future__ import annotations

import os
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

from agentdb.errors import ConfigError

if TYPE_CHECKING:
    from agentdb.billing.ratelimit import ConsumptionRateLimiter
    from agentdb.billing.service import BillingService
    from agentdb.config import Settings
    from agentdb.crypto import Keyring
    from agentdb.crypto.rotation import KeyRotation
    from agentdb.explorer.service import ExplorerService
    from agentdb.lifecycle.service import LifecycleService
    from agentdb.providers.base import DatabaseProvider
    from agentdb.reconcile.service import ReconcileService
    from agentdb.store import Store
    from agentdb.tools.audit import AuditRetention
    from agentdb.tools.backend import ToolBackend
    from agentdb.tools.service import ToolService


def _current_settings() -> Settings:
    # Imported here, not at module level: a handler module that imports the container stays cheap to
    # import (pydantic loads on the first invocation, which needs it anyway).
    from agentdb.config import get_settings

    return get_settings()


def control_plane_url(settings: Settings | None = None) -> str:
    settings = settings or _current_settings()
    if settings.database_url:
        return settings.database_url
    if settings.control_plane_secret_arn:
        from agentdb.secrets import database_url_from_secret

        return database_url_from_secret(settings.control_plane_secret_arn)
    raise ConfigError("configuration: DATABASE_URL or CONTROL_PLANE_SECRET_ARN must be set")


def postgres_admin_url(settings: Settings) -> str:
    if settings.postgres_admin_url:
        return settings.postgres_admin_url
    if settings.postgres_admin_secret_arn:
        from agentdb.secrets import database_url_from_secret

        return database_url_from_secret(settings.postgres_admin_secret_arn)
    return control_plane_url(settings)


def neon_api_key(settings: Settings) -> str:
    if settings.neon_api_key:
        return settings.neon_api_key
    if settings.neon_api_key_secret_arn:
        from agentdb.secrets import get_secret_string

        key = get_secret_string(settings.neon_api_key_secret_arn)
        if key in ("", "REPLACE_ME"):
            raise ConfigError("configuration: the Neon API key secret still holds its placeholder; put the key in it")
        return key
    raise ConfigError("configuration: NEON_API_KEY or NEON_API_KEY_SECRET_ARN must be set when DB_PROVIDER=neon")


class Services:
    """Everything a handler needs, built on first use. One instance per warm container."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or _current_settings()

    def close(self) -> None:
        """Close the connections built so far (tests, benchmarks and local tools; a Lambda container keeps
        them for its life)."""
        for built in ("tool_backend", "provider"):
            if built in self.__dict__:
                self.__dict__[built].close()
        if "store" in self.__dict__:
            self.store.db.close()

    @cached_property
    def store(self) -> Store:
        from agentdb.store import Database, Store

        return Store(
            Database(
                lambda: control_plane_url(self.settings),
                timeout=self.settings.pg_socket_timeout_seconds,
                application_name="agentdb-control-plane",
            )
        )

    @cached_property
    def provider(self) -> DatabaseProvider:
        if self.settings.db_provider == "neon":
            from agentdb.providers.neon import NeonProvider

            return NeonProvider(
                self.settings, api_key=neon_api_key(self.settings), rate_limiter=self.consumption_rate_limiter
            )
        from agentdb.providers.postgres import PostgresProvider
        from agentdb.store import Database

        admin = Database(
            lambda: postgres_admin_url(self.settings),
            timeout=self.settings.pg_socket_timeout_seconds,
            application_name="agentdb-provisioner",
        )
        return PostgresProvider(admin, prefix=self.settings.tenant_name_prefix)

    @cached_property
    def keyring(self) -> Keyring:
        from agentdb.crypto import build_keyring

        return build_keyring(self.settings)

    @cached_property
    def lifecycle(self) -> LifecycleService:
        from agentdb.lifecycle.service import LifecycleService

        return LifecycleService(self.store, self.provider, self.keyring, self.settings)

    @cached_property
    def consumption_rate_limiter(self) -> ConsumptionRateLimiter:
        """Neon's consumption requests, counted in the control plane so every Lambda shares one budget.
        ``NEON_CONSUMPTION_MAX_WAIT_SECONDS`` (set on the HTTP usage function) bounds the wait for a slot:
        past it the request fails (the usage API then answers its stored figures) instead of outlasting
        API Gateway's 30 s."""
        from agentdb.billing.ratelimit import ConsumptionRateLimiter
        from agentdb.store.rate_limits import RateLimitStore

        raw = os.environ.get("NEON_CONSUMPTION_MAX_WAIT_SECONDS", "").strip()
        try:
            max_wait = float(raw) if raw else None
        except ValueError:
            raise ConfigError("invalid configuration: NEON_CONSUMPTION_MAX_WAIT_SECONDS: must be a number") from None
        return ConsumptionRateLimiter(
            RateLimitStore(self.store.db),
            self.settings.neon_consumption_requests_per_minute,
            max_wait_seconds=max_wait,
        )

    @cached_property
    def billing(self) -> BillingService:
        from agentdb.billing.queue import work_queue_from_env
        from agentdb.billing.service import BillingService

        return BillingService(self.store, self.provider, self.settings, queue=work_queue_from_env())

    @cached_property
    def tool_backend(self) -> ToolBackend:
        if self.settings.tool_backend == "neon-mcp":
            if self.settings.db_provider != "neon":
                raise ConfigError("configuration: TOOL_BACKEND=neon-mcp needs DB_PROVIDER=neon")
            from agentdb.store.tool_schemas import ToolSchemaCache
            from agentdb.tools.neon_mcp import NeonMcpBackend

            return NeonMcpBackend(
                self.settings.neon_mcp_url, neon_api_key(self.settings), ToolSchemaCache(self.store.db)
            )
        from agentdb.tools.direct import DirectBackend

        return DirectBackend()

    @cached_property
    def tools(self) -> ToolService:
        from agentdb.tools.service import ToolService

        return ToolService(self.store, self.keyring, self.tool_backend, self.settings)

    @cached_property
    def reconcile(self) -> ReconcileService:
        from agentdb.reconcile.service import ReconcileService
        from agentdb.store.reconcile import ReconcileStore

        return ReconcileService(self.store, ReconcileStore(self.store.db), self.provider, self.lifecycle, self.settings)

    @cached_property
    def key_rotation(self) -> KeyRotation:
        from agentdb.crypto.rotation import KeyRotation
        from agentdb.store.reconcile import ReconcileStore

        return KeyRotation(ReconcileStore(self.store.db), self.keyring)

    @cached_property
    def audit_retention(self) -> AuditRetention:
        from agentdb.tools.audit import AuditRetention

        return AuditRetention(self.store, self.settings.audit_log_retention_days)

    @cached_property
    def explorer(self) -> ExplorerService:
        from agentdb.explorer.service import ExplorerService

        return ExplorerService(self.tools, self.keyring)


@lru_cache(maxsize=1)
def get_services() -> Services:
    return Services()
