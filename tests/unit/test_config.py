"""Configuration: defaults, aliases, and errors that name the bad variable without echoing secrets."""

from __future__ import annotations

import pytest

from agentdb.config import load_settings
from agentdb.errors import ConfigError


def test_defaults() -> None:
    s = load_settings({})
    assert (s.db_provider, s.keyring, s.tool_backend) == ("postgres", "local", "direct")
    assert s.neon_api_url == "https://console.neon.tech/api/v2"
    assert (s.sql_statement_timeout_ms, s.sql_max_rows, s.sql_max_result_bytes) == (15000, 1000, 1048576)
    assert [s.budget_cents_for(p) for p in ("free", "pro", "team", "enterprise")] == [200, 2000, 5000, 10000]
    assert s.neon_compute_price_per_cu_hour == 0.16 and s.neon_storage_price_per_gb_month == 0.35


def test_the_legacy_encryption_key_name_is_accepted() -> None:
    assert load_settings({"NEON_CONNECTION_ENCRYPTION_KEY": "ab" * 32}).local_encryption_key == "ab" * 32


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DB_PROVIDER": "mysql"}, "DB_PROVIDER"),
        ({"SQL_MAX_ROWS": "0"}, "SQL_MAX_ROWS"),
        ({"SQL_STATEMENT_TIMEOUT_MS": "soon"}, "SQL_STATEMENT_TIMEOUT_MS"),
        ({"TENANT_NAME_PREFIX": "Bad_Prefix!"}, "TENANT_NAME_PREFIX"),
        ({"KEYRING": "vault"}, "KEYRING"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert named in error.value.message


def test_a_bad_key_is_named_but_never_echoed() -> None:
    secret = "not-hex-but-secret-" * 4
    with pytest.raises(ConfigError) as error:
        load_settings({"LOCAL_ENCRYPTION_KEY": secret})
    assert "LOCAL_ENCRYPTION_KEY" in error.value.message
    assert secret not in error.value.message


def test_required_settings_name_their_variable() -> None:
    with pytest.raises(ConfigError, match="NEON_API_KEY"):
        load_settings({}).require("neon_api_key")
