"""The stored token: a versioned, self-describing ASCII string.

Format: six fields joined by ``.``::

    adb1.<keyring>.<key id>.<wrapped data key>.<nonce>.<ciphertext>

============  ==========================================================================================
``adb1``      format version. Any other value is rejected; a new format gets a new prefix.
keyring       ``local`` or ``kms``: which keyring wrapped the data key (plain ASCII).
key id        base64url of the wrapping key's id: ``local:<16 hex>`` (a fingerprint of the master key)
              or the KMS key ARN that ``GenerateDataKey`` reported.
wrapped key   base64url of the wrapped 256-bit data key: the KMS ``CiphertextBlob``, or for ``local`` a
              12-byte nonce followed by AES-256-GCM(master key, data key) with its 16-byte tag.
nonce         base64url of the record's random 96-bit AES-GCM nonce.
ciphertext    base64url of AES-256-GCM(data key, nonce, UTF-8 plaintext), including the 16-byte tag.
============  ==========================================================================================

base64url is RFC 4648 section 5 without padding, and must be canonical (one encoding per value). The
AAD of both the record and (for ``local``) the wrapped key is the canonical JSON of the encryption
context (sorted keys, compact separators, UTF-8), so a token decrypts only for the tenant and purpose it
was made for. KMS binds the same context to the wrapped key through its ``EncryptionContext``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agentdb.errors import DecryptionError

TOKEN_VERSION = "adb1"  # noqa: S105 - a format tag, not a secret
KEYRING_NAMES = frozenset({"local", "kms"})
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32
MAX_TOKEN_CHARS = 65536
MAX_KEY_ID_BYTES = 2048
MAX_WRAPPED_KEY_BYTES = 6144

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_KEY_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces


def canonical_context(context: Mapping[str, str]) -> bytes:
    """The AAD for a context: JSON with sorted keys and compact separators, UTF-8 encoded."""
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("encryption context keys and values must be strings")
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, field: str) -> bytes:
    """Strict, canonical unpadded base64url; DecryptionError naming the field (never its value)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise DecryptionError(f"malformed token: {field} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError(f"malformed token: {field} is not base64url") from None
    if b64url_encode(data) != text:
        raise DecryptionError(f"malformed token: {field} is not canonical base64url")
    return data


@dataclass(frozen=True)
class Token:
    """The parsed fields of a token (see the module docstring for the format)."""

    keyring: str
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    version: str = TOKEN_VERSION

    def encode(self) -> str:
        return ".".join(
            (
                self.version,
                self.keyring,
                b64url_encode(self.key_id.encode("ascii")),
                b64url_encode(self.wrapped_key),
                b64url_encode(self.nonce),
                b64url_encode(self.ciphertext),
            )
        )


def parse_token(token: str) -> Token:
    """Parse and validate a token's structure; DecryptionError if malformed or of an unknown version."""
    if not isinstance(token, str) or not token:
        raise DecryptionError("malformed token: empty or not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise DecryptionError("malformed token: too long")
    parts = token.split(".")
    if parts[0] != TOKEN_VERSION:
        raise DecryptionError("unsupported token version")
    if len(parts) != 6:
        raise DecryptionError("malformed token: expected 6 dot-separated fields")
    _, keyring, key_id_b64, wrapped_b64, nonce_b64, ciphertext_b64 = parts
    if keyring not in KEYRING_NAMES:
        raise DecryptionError("malformed token: unknown keyring")
    key_id_raw = b64url_decode(key_id_b64, "key id")
    if len(key_id_raw) > MAX_KEY_ID_BYTES:
        raise DecryptionError("malformed token: key id too long")
    try:
        key_id = key_id_raw.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("malformed token: key id is not ASCII") from None
    if not _KEY_ID.fullmatch(key_id):
        raise DecryptionError("malformed token: key id is not printable ASCII")
    wrapped = b64url_decode(wrapped_b64, "wrapped key")
    if len(wrapped) > MAX_WRAPPED_KEY_BYTES:
        raise DecryptionError("malformed token: wrapped key too long")
    nonce = b64url_decode(nonce_b64, "nonce")
    if len(nonce) != NONCE_BYTES:
        raise DecryptionError("malformed token: nonce must be 12 bytes")
    ciphertext = b64url_decode(ciphertext_b64, "ciphertext")
    if len(ciphertext) < TAG_BYTES:
        raise DecryptionError("malformed token: ciphertext too short")
    return Token(keyring=keyring, key_id=key_id, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)
