"""Secrets from Secrets Manager (moto) through Powertools parameters: URLs, RDS JSON, placeholders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agentdb.config import load_settings
from agentdb.container import control_plane_url, neon_api_key
from agentdb.errors import ConfigError
from agentdb.pgurl import parse_pg_url


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        from aws_lambda_powertools.utilities.parameters import secrets as powertools_secrets

        powertools_secrets.DEFAULT_PROVIDERS.clear()  # a provider from an earlier test holds a stale client
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_control_plane_url_from_a_plain_secret(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="cp-plain", SecretString="postgresql://u:p@db:5432/agentdb")["ARN"]
    assert control_plane_url(load_settings({"CONTROL_PLANE_SECRET_ARN": arn})) == "postgresql://u:p@db:5432/agentdb"


def test_control_plane_url_from_rds_managed_json(secretsmanager: Any) -> None:
    value = {"username": "agentdb", "password": "p@ss/word", "host": "db.example", "port": 5432, "dbname": "cp"}
    arn = secretsmanager.create_secret(Name="cp-rds", SecretString=json.dumps(value))["ARN"]
    url = parse_pg_url(control_plane_url(load_settings({"CONTROL_PLANE_SECRET_ARN": arn})))
    assert (url.user, url.password, url.host, url.database, url.sslmode) == (
        "agentdb", "p@ss/word", "db.example", "cp", "verify-full"
    )  # fmt: skip


def test_placeholders_are_clear_errors_that_echo_nothing(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="cp-placeholder", SecretString="REPLACE_ME")["ARN"]
    with pytest.raises(ConfigError) as error:
        control_plane_url(load_settings({"CONTROL_PLANE_SECRET_ARN": arn}))
    assert "REPLACE_ME" not in error.value.message
    key_arn = secretsmanager.create_secret(Name="neon-key", SecretString="REPLACE_ME")["ARN"]
    with pytest.raises(ConfigError, match="placeholder"):
        neon_api_key(load_settings({"NEON_API_KEY_SECRET_ARN": key_arn}))


def test_neon_key_from_a_secret(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(Name="neon-key-real", SecretString="napi_abc123")["ARN"]
    assert neon_api_key(load_settings({"NEON_API_KEY_SECRET_ARN": arn})) == "napi_abc123"


def test_nothing_configured_names_both_variables() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL or CONTROL_PLANE_SECRET_ARN"):
        control_plane_url(load_settings({}))
