"""The ``local`` keyring: data keys wrapped under a 32-byte master key (development and tests).

The wrapped key is ``nonce(12) || AES-256-GCM(master, data key, AAD=canonical context)``. The key id is
``local:`` plus the first 16 hex characters of a domain-separated SHA-256 of the master key, so it is
stable and names the key without revealing it. Previous keys still decrypt (rotation) by key id.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentdb.crypto.cache import DataKeyCache
from agentdb.crypto.envelope import EnvelopeKeyring
from agentdb.crypto.token import DATA_KEY_BYTES, NONCE_BYTES, TAG_BYTES
from agentdb.errors import ConfigError, DecryptionError

_WRAPPED_BYTES = NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES


def _key_bytes(key: bytes | str, name: str) -> bytes:
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key.strip())
        except ValueError:
            raise ConfigError(f"configuration: {name} must be 64 hex characters (a 32-byte key)") from None
    if len(key) != DATA_KEY_BYTES:
        raise ConfigError(f"configuration: {name} must be 64 hex characters (a 32-byte key)")
    return key


def local_key_id(key: bytes) -> str:
    """A short, stable fingerprint naming a master key: ``local:<16 hex>``."""
    return "local:" + hashlib.sha256(b"agentdb-local-keyring\x00" + key).hexdigest()[:16]


class LocalKeyring(EnvelopeKeyring):
    """Envelope encryption with data keys wrapped under a local 32-byte master key."""

    name = "local"

    def __init__(
        self,
        key: bytes | str,
        previous_keys: Iterable[bytes | str] = (),
        *,
        cache: DataKeyCache | None = None,
    ) -> None:
        super().__init__(cache=cache)
        current = _key_bytes(key, "LOCAL_ENCRYPTION_KEY")
        self._current_id = local_key_id(current)
        self._keys: dict[str, AESGCM] = {self._current_id: AESGCM(current)}
        for old in previous_keys:
            raw = _key_bytes(old, "LOCAL_ENCRYPTION_PREVIOUS_KEYS")
            self._keys.setdefault(local_key_id(raw), AESGCM(raw))

    @property
    def current_key_id(self) -> str:
        return self._current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key that can decrypt (current first)."""
        return tuple(self._keys)

    def _generate_data_key(self, context: dict[str, str], aad: bytes) -> tuple[str, bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._keys[self._current_id].encrypt(nonce, data_key, aad)
        return self._current_id, data_key, wrapped

    def _unwrap_data_key(self, key_id: str, wrapped: bytes, context: dict[str, str], aad: bytes) -> bytes:
        master = self._keys.get(key_id)
        if master is None:
            raise DecryptionError("token was made under an unknown or retired local key")
        if len(wrapped) != _WRAPPED_BYTES:
            raise DecryptionError("malformed token: wrapped key has the wrong length")
        try:
            return master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                "data key does not unwrap: wrong tenant or purpose, or the token was altered"
            ) from None

    def _is_current_key(self, key_id: str) -> bool:
        return key_id == self._current_id
