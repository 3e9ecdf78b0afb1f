"""Secrets from AWS Secrets Manager through Powertools parameters (cached, refreshed every 5 minutes).

A secret may hold a plain string (a URL, an API key) or, for database secrets, the JSON that RDS
manages (`username`, `password`, `host`, `port`, `dbname`), which becomes a postgresql:// URL.
"""

from __future__ import annotations

import json

from agentdb.errors import ConfigError, UpstreamUnavailable
from agentdb.pgurl import build_url

_MAX_AGE_SECONDS = 300


def get_secret_string(arn: str) -> str:
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(arn, max_age=_MAX_AGE_SECONDS)
    except parameters.exceptions.GetParameterError as exc:
        raise UpstreamUnavailable("could not read a secret from Secrets Manager") from exc
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


def database_url_from_secret(arn: str) -> str:
    raw = get_secret_string(arn)
    if raw.startswith(("postgres://", "postgresql://")):
        return raw
    try:
        data = json.loads(raw)
        return build_url(
            data["username"],
            data["password"],
            data["host"],
            int(data.get("port", 5432)),
            data.get("dbname", "postgres"),
            sslmode="verify-full",
        )
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            "a database secret must hold a postgresql:// URL or RDS JSON (username, password, host)"
        ) from None
