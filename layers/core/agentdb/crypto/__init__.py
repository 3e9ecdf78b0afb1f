"""Envelope encryption of tenant secrets (connection URIs), bound to an encryption context.

Each record gets a fresh 256-bit data key; the secret is sealed with AES-256-GCM (random 96-bit nonce,
AAD = canonical JSON of the context) and the data key is wrapped by the keyring: ``kms`` (KMS
``GenerateDataKey``/``Decrypt``) in production, ``local`` (a 32-byte master key) in development and tests.
The result is a versioned token, documented in :mod:`agentdb.crypto.token`. Unwrapped data keys are
cached in a bounded LRU with TTL. Errors never contain a plaintext, a key or a data key.

Usage::

    keyring = get_keyring()
    token = keyring.encrypt(uri, connection_uri_context(tenant.context_key))
    uri = keyring.decrypt(token, connection_uri_context(tenant.context_key))
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from agentdb.crypto.cache import DataKeyCache
from agentdb.crypto.envelope import EnvelopeKeyring, Keyring
from agentdb.crypto.kms import KmsKeyring
from agentdb.crypto.local import LocalKeyring, local_key_id
from agentdb.crypto.token import TOKEN_VERSION, Token, canonical_context, parse_token

if TYPE_CHECKING:
    from agentdb.config import Settings

CONNECTION_URI_PURPOSE = "connection-uri"
READONLY_URI_PURPOSE = "readonly-connection-uri"

__all__ = [
    "CONNECTION_URI_PURPOSE",
    "READONLY_URI_PURPOSE",
    "TOKEN_VERSION",
    "DataKeyCache",
    "EnvelopeKeyring",
    "Keyring",
    "KmsKeyring",
    "LocalKeyring",
    "Token",
    "build_keyring",
    "canonical_context",
    "connection_uri_context",
    "get_keyring",
    "local_key_id",
    "parse_token",
    "readonly_uri_context",
]


def readonly_uri_context(tenant_key: str) -> dict[str, str]:
    """The encryption context of a tenant's read-only connection URI (a different purpose: tokens of
    the two columns cannot stand in for each other)."""
    if not tenant_key:
        raise ValueError("tenant_key must not be empty")
    return {"purpose": READONLY_URI_PURPOSE, "tenant": tenant_key}


def connection_uri_context(tenant_key: str) -> dict[str, str]:
    """The encryption context of a tenant's connection URI (``tenant_key`` is ``Tenant.context_key``)."""
    if not tenant_key:
        raise ValueError("tenant_key must not be empty")
    return {"purpose": CONNECTION_URI_PURPOSE, "tenant": tenant_key}


def build_keyring(settings: Settings, *, kms_client: Any | None = None) -> Keyring:
    """The keyring ``KEYRING`` selects; ConfigError naming the variable it is missing."""
    cache = DataKeyCache(settings.data_key_cache_size, settings.data_key_cache_ttl_seconds)
    if settings.keyring == "kms":
        return KmsKeyring(settings.require("kms_key_id"), client=kms_client, cache=cache)
    previous = [k.strip() for k in settings.local_encryption_previous_keys.split(",") if k.strip()]
    return LocalKeyring(settings.require("local_encryption_key"), previous, cache=cache)


@lru_cache(maxsize=1)
def get_keyring() -> Keyring:
    """The container's keyring, built once from the environment (its cache and client live with it)."""
    from agentdb.config import get_settings

    return build_keyring(get_settings())
