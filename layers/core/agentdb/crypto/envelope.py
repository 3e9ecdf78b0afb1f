"""The Keyring interface and the envelope encryption both keyrings share.

Per record: a fresh 256-bit data key, AES-256-GCM with a random 96-bit nonce and the canonical context
as AAD. Subclasses only generate and unwrap data keys.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentdb.crypto.cache import DataKeyCache
from agentdb.crypto.token import (
    DATA_KEY_BYTES,
    NONCE_BYTES,
    TOKEN_VERSION,
    Token,
    canonical_context,
    parse_token,
)
from agentdb.errors import DecryptionError


@runtime_checkable
class Keyring(Protocol):
    """Encrypts short secrets (connection URIs) bound to an encryption context."""

    @property
    def current_key_id(self) -> str:
        """The id of the key new tokens are made under."""
        ...

    def encrypt(self, plaintext: str, context: Mapping[str, str]) -> str:
        """Encrypt ``plaintext`` for ``context``; returns a token (see ``agentdb.crypto.token``)."""
        ...

    def decrypt(self, token: str, context: Mapping[str, str]) -> str:
        """Decrypt a token made for exactly ``context``; DecryptionError otherwise."""
        ...

    def needs_rotation(self, token: str) -> bool:
        """True if the token is not of the current version and keyring, or not under the current key."""
        ...


class EnvelopeKeyring(ABC):
    """Envelope encryption over a key-wrapping backend (local master key or KMS)."""

    name: ClassVar[str]

    def __init__(self, *, cache: DataKeyCache | None = None) -> None:
        self.cache = cache if cache is not None else DataKeyCache(0, 0)

    @property
    @abstractmethod
    def current_key_id(self) -> str: ...

    @abstractmethod
    def _generate_data_key(self, context: dict[str, str], aad: bytes) -> tuple[str, bytes, bytes]:
        """A fresh 32-byte data key: (key id, plaintext data key, wrapped data key)."""

    @abstractmethod
    def _unwrap_data_key(self, key_id: str, wrapped: bytes, context: dict[str, str], aad: bytes) -> bytes:
        """The plaintext data key; DecryptionError if it cannot be unwrapped for this context."""

    @abstractmethod
    def _is_current_key(self, key_id: str) -> bool: ...

    def encrypt(self, plaintext: str, context: Mapping[str, str]) -> str:
        ctx = dict(context)
        aad = canonical_context(ctx)
        key_id, data_key, wrapped = self._generate_data_key(ctx, aad)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), aad)
        self.cache.put((key_id, wrapped, aad), data_key)
        return Token(self.name, key_id, wrapped, nonce, ciphertext).encode()

    def decrypt(self, token: str, context: Mapping[str, str]) -> str:
        parsed = parse_token(token)
        if parsed.keyring != self.name:
            raise DecryptionError(f"token was made by the {parsed.keyring} keyring; this service uses {self.name}")
        ctx = dict(context)
        aad = canonical_context(ctx)
        cache_key = (parsed.key_id, parsed.wrapped_key, aad)
        data_key = self.cache.get(cache_key)
        if data_key is None:
            data_key = self._unwrap_data_key(parsed.key_id, parsed.wrapped_key, ctx, aad)
            if len(data_key) != DATA_KEY_BYTES:
                raise DecryptionError("unwrapped data key has the wrong length")
            self.cache.put(cache_key, data_key)
        try:
            plaintext = AESGCM(data_key).decrypt(parsed.nonce, parsed.ciphertext, aad)
            return plaintext.decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise DecryptionError(
                "token does not authenticate: wrong tenant or purpose, or the token was altered"
            ) from None

    def needs_rotation(self, token: str) -> bool:
        try:
            parsed = parse_token(token)
        except DecryptionError:
            return True
        return parsed.version != TOKEN_VERSION or parsed.keyring != self.name or not self._is_current_key(parsed.key_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(current_key_id={self.current_key_id!r})"
