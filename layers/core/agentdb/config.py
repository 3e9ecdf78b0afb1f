"""Configuration from the environment, validated once per container.

Every setting is an environment variable (README lists them with defaults). A bad value raises
ConfigError naming the variable, so a misconfigured deployment fails with a readable message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentdb.errors import ConfigError

PLANS = ("free", "pro", "team", "enterprise")
Plan = Literal["free", "pro", "team", "enterprise"]


class Settings(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # Control plane
    database_url: str | None = Field(None, alias="DATABASE_URL")
    control_plane_secret_arn: str | None = Field(None, alias="CONTROL_PLANE_SECRET_ARN")
    pg_socket_timeout_seconds: float = Field(25.0, alias="PG_SOCKET_TIMEOUT_SECONDS", gt=0)

    # Tenant databases
    db_provider: Literal["postgres", "neon"] = Field("postgres", alias="DB_PROVIDER")
    postgres_admin_url: str | None = Field(None, alias="POSTGRES_ADMIN_URL")
    postgres_admin_secret_arn: str | None = Field(None, alias="POSTGRES_ADMIN_SECRET_ARN")
    tenant_name_prefix: str = Field("agentdb-", alias="TENANT_NAME_PREFIX", pattern=r"^[a-z0-9-]{0,20}$")
    provision_lock_wait_seconds: float = Field(20.0, alias="PROVISION_LOCK_WAIT_SECONDS", gt=0)

    # Neon
    neon_api_url: str = Field("https://console.neon.tech/api/v2", alias="NEON_API_URL")
    neon_api_key: str | None = Field(None, alias="NEON_API_KEY")
    neon_api_key_secret_arn: str | None = Field(None, alias="NEON_API_KEY_SECRET_ARN")
    neon_org_id: str | None = Field(None, alias="NEON_ORG_ID")
    neon_region_id: str = Field("aws-us-east-1", alias="NEON_REGION_ID")
    neon_pg_version: int = Field(17, alias="NEON_PG_VERSION", ge=14, le=18)
    neon_timeout_seconds: float = Field(10.0, alias="NEON_TIMEOUT_SECONDS", gt=0)
    neon_max_retries: int = Field(5, alias="NEON_MAX_RETRIES", ge=0, le=20)
    neon_operation_wait_seconds: float = Field(60.0, alias="NEON_OPERATION_WAIT_SECONDS", gt=0)
    # One limit shared by every Lambda for Neon's consumption endpoints, so Neon never answers 429.
    neon_consumption_requests_per_minute: int = Field(50, alias="NEON_CONSUMPTION_REQUESTS_PER_MINUTE", ge=1)

    # Encryption
    keyring: Literal["local", "kms"] = Field("local", alias="KEYRING")
    kms_key_id: str | None = Field(None, alias="KMS_KEY_ID")
    local_encryption_key: str | None = Field(
        None, validation_alias=AliasChoices("LOCAL_ENCRYPTION_KEY", "NEON_CONNECTION_ENCRYPTION_KEY")
    )
    local_encryption_previous_keys: str = Field("", alias="LOCAL_ENCRYPTION_PREVIOUS_KEYS")
    data_key_cache_size: int = Field(256, alias="DATA_KEY_CACHE_SIZE", ge=0)
    data_key_cache_ttl_seconds: float = Field(300.0, alias="DATA_KEY_CACHE_TTL_SECONDS", ge=0)

    # Tools (used by the tools issue; named here so README has one table)
    tool_backend: Literal["direct", "neon-mcp"] = Field("direct", alias="TOOL_BACKEND")
    neon_mcp_url: str = Field("https://mcp.neon.tech/mcp", alias="NEON_MCP_URL")
    sql_statement_timeout_ms: int = Field(15000, alias="SQL_STATEMENT_TIMEOUT_MS", gt=0)
    sql_lock_timeout_ms: int = Field(5000, alias="SQL_LOCK_TIMEOUT_MS", gt=0)
    sql_idle_in_transaction_timeout_ms: int = Field(15000, alias="SQL_IDLE_IN_TRANSACTION_TIMEOUT_MS", gt=0)
    sql_max_rows: int = Field(1000, alias="SQL_MAX_ROWS", gt=0)
    sql_max_result_bytes: int = Field(1048576, alias="SQL_MAX_RESULT_BYTES", gt=0)
    # Rate limits on database operations (tools, explorer, MCP endpoint): calls per fixed window, counted in the
    # control plane so every Lambda shares them; 0 turns a limit off.
    # Rows of tool_audit_log older than this are pruned by the daily maintenance run; 0 keeps them forever.
    audit_log_retention_days: int = Field(90, alias="AUDIT_LOG_RETENTION_DAYS", ge=0, le=36500)
    rate_limit_window_seconds: int = Field(60, alias="RATE_LIMIT_WINDOW_SECONDS", ge=1, le=3600)
    rate_limit_per_user: int = Field(1200, alias="RATE_LIMIT_PER_USER", ge=0)
    rate_limit_per_workspace: int = Field(600, alias="RATE_LIMIT_PER_WORKSPACE", ge=0)

    # Cost and budgets
    default_plan: Plan = Field("free", alias="DEFAULT_PLAN")
    neon_compute_price_per_cu_hour: float = Field(0.16, alias="NEON_COMPUTE_PRICE_PER_CU_HOUR", ge=0)
    neon_storage_price_per_gb_month: float = Field(0.35, alias="NEON_STORAGE_PRICE_PER_GB_MONTH", ge=0)
    budget_free_cents: int = Field(200, alias="BUDGET_FREE_CENTS", ge=0)
    budget_pro_cents: int = Field(2000, alias="BUDGET_PRO_CENTS", ge=0)
    budget_team_cents: int = Field(5000, alias="BUDGET_TEAM_CENTS", ge=0)
    budget_enterprise_cents: int = Field(10000, alias="BUDGET_ENTERPRISE_CENTS", ge=0)

    # Reconciliation (README "Reconciliation"): orphans younger than the grace period are kept (a provisioning
    # may be creating them); records unchanged in provisioning/deleting/failed this long are retried.
    reconcile_grace_seconds: int = Field(3600, alias="RECONCILE_GRACE_SECONDS", ge=0)
    reconcile_stuck_seconds: int = Field(1800, alias="RECONCILE_STUCK_SECONDS", ge=60)
    reconcile_dry_run: bool = Field(False, alias="RECONCILE_DRY_RUN")
    # More orphans due for deletion (or missing databases) than this in one run: reported, not acted on.
    reconcile_max_changes: int = Field(50, alias="RECONCILE_MAX_CHANGES", ge=0)

    # Local gateway only
    local_jwt_secret: str | None = Field(None, alias="LOCAL_JWT_SECRET")

    @field_validator("local_encryption_key")
    @classmethod
    def _hex_key(cls, value: str | None) -> str | None:
        if value is not None and not _is_hex_key(value):
            raise ValueError("must be 64 hex characters (a 32-byte key)")
        return value

    @field_validator("local_encryption_previous_keys")
    @classmethod
    def _hex_keys(cls, value: str) -> str:
        for key in filter(None, (k.strip() for k in value.split(","))):
            if not _is_hex_key(key):
                raise ValueError("must be a comma-separated list of 64-hex-character keys")
        return value

    def budget_cents_for(self, plan: str) -> int:
        return int(getattr(self, f"budget_{plan}_cents", self.budget_free_cents))

    def require(self, field: str) -> str:
        """Return a setting that the chosen mode needs, or raise ConfigError naming its variable."""
        value = getattr(self, field)
        if value in (None, ""):
            alias = type(self).model_fields[field].alias or field.upper()
            raise ConfigError(f"configuration: {alias} must be set")
        return str(value)


def _is_hex_key(value: str) -> bool:
    try:
        return len(bytes.fromhex(value)) == 32
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate settings from the environment; raise ConfigError naming every bad variable."""
    env = dict(os.environ if environ is None else environ)
    try:
        return Settings.model_validate(env)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            model_field = Settings.model_fields.get(field)
            name = (model_field.alias if model_field and model_field.alias else field) or field
            if field == "local_encryption_key":
                name = "LOCAL_ENCRYPTION_KEY"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
