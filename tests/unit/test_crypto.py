"""Envelope encryption: local and KMS keyrings, tokens, rotation, the data-key cache, errors."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from agentdb.config import load_settings
from agentdb.crypto import (
    DataKeyCache,
    Keyring,
    KmsKeyring,
    LocalKeyring,
    build_keyring,
    connection_uri_context,
    local_key_id,
    parse_token,
)
from agentdb.errors import ConfigError, DecryptionError, UpstreamUnavailable

URI = "postgresql://tenant_role:s3cr3t-P4ssw0rd@db.internal:5432/agentdb_w_42?sslmode=require"
SECRET = "s3cr3t-P4ssw0rd"
CTX = connection_uri_context("workspace:42")
REGION = "us-east-1"


def _hex() -> str:
    return os.urandom(32).hex()


def _flip(token: str, index: int, byte: int = 0) -> str:
    """Flip one bit of one decoded byte in field ``index`` and re-encode it canonically."""
    parts = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    raw[byte] ^= 0x01
    parts[index] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)


def _assert_no_secrets(exc: BaseException, *secrets: str) -> None:
    text = f"{exc} {exc!r} {getattr(exc, 'message', '')}"
    for secret in (URI, SECRET, *secrets):
        assert secret not in text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Kms:
    client: Any
    key_a: str  # ARNs
    key_b: str
    calls: dict[str, int] = field(default_factory=dict)

    def count(self, operation: str) -> int:
        return self.calls.get(operation, 0)


@pytest.fixture
def kms() -> Iterator[Kms]:
    """Two KMS keys under moto; counts KMS API calls through botocore's event hooks."""
    with mock_aws():
        client = boto3.client("kms", region_name=REGION)
        key_a = client.create_key(Description="a")["KeyMetadata"]["Arn"]
        key_b = client.create_key(Description="b")["KeyMetadata"]["Arn"]
        state = Kms(client, key_a, key_b)

        def _count(model: Any, **_: Any) -> None:
            state.calls[model.name] = state.calls.get(model.name, 0) + 1

        client.meta.events.register("before-call.kms.*", _count)
        yield state


# --- local keyring ---------------------------------------------------------------------------------


def test_local_round_trip_and_protocol() -> None:
    keyring = LocalKeyring(_hex())
    assert isinstance(keyring, Keyring)
    token = keyring.encrypt(URI, CTX)
    assert token.isascii()
    assert token.startswith("adb1.local.")
    assert keyring.decrypt(token, CTX) == URI
    assert keyring.decrypt(keyring.encrypt("", CTX), CTX) == ""
    unicode = "postgresql://ü:p@h/d€"
    assert keyring.decrypt(keyring.encrypt(unicode, CTX), CTX) == unicode


def test_token_is_self_describing() -> None:
    key = _hex()
    keyring = LocalKeyring(key)
    parsed = parse_token(keyring.encrypt(URI, CTX))
    assert parsed.version == "adb1"
    assert parsed.keyring == "local"
    assert parsed.key_id == keyring.current_key_id == local_key_id(bytes.fromhex(key))
    assert parsed.key_id.startswith("local:") and len(parsed.key_id) == len("local:") + 16
    assert len(parsed.nonce) == 12
    assert len(parsed.ciphertext) == len(URI.encode()) + 16
    assert len(parsed.wrapped_key) == 12 + 32 + 16


def test_same_plaintext_encrypts_differently() -> None:
    keyring = LocalKeyring(_hex())
    first, second = keyring.encrypt(URI, CTX), keyring.encrypt(URI, CTX)
    assert first != second
    a, b = parse_token(first), parse_token(second)
    assert a.wrapped_key != b.wrapped_key  # a fresh data key per record
    assert a.nonce != b.nonce


def test_plaintext_never_in_token() -> None:
    key = _hex()
    token = LocalKeyring(key).encrypt(URI, CTX)
    for secret in (URI, SECRET, key):
        assert secret not in token
        assert base64.urlsafe_b64encode(secret.encode()).decode().rstrip("=") not in token


@pytest.mark.parametrize(
    "context",
    [
        connection_uri_context("workspace:43"),
        connection_uri_context("user:42"),
        {"purpose": "other", "tenant": "workspace:42"},
        {"purpose": "connection-uri", "tenant": "workspace:42", "extra": "x"},
        {},
    ],
)
def test_local_wrong_context_rejected(context: dict[str, str]) -> None:
    keyring = LocalKeyring(_hex(), cache=DataKeyCache(16, 60))
    token = keyring.encrypt(URI, CTX)
    assert keyring.decrypt(token, CTX) == URI  # warms the cache for the right context
    with pytest.raises(DecryptionError) as info:
        keyring.decrypt(token, context)
    _assert_no_secrets(info.value)


def test_context_is_canonical() -> None:
    keyring = LocalKeyring(_hex())
    token = keyring.encrypt(URI, {"tenant": "workspace:42", "purpose": "connection-uri"})
    assert keyring.decrypt(token, CTX) == URI


@pytest.mark.parametrize(("index", "name"), [(2, "key id"), (3, "wrapped key"), (4, "nonce"), (5, "ciphertext")])
@pytest.mark.parametrize("byte", [0, -1])
def test_local_tampered_part_rejected(index: int, name: str, byte: int) -> None:
    key = _hex()
    keyring = LocalKeyring(key, cache=DataKeyCache(16, 60))
    token = keyring.encrypt(URI, CTX)
    with pytest.raises(DecryptionError) as info:
        keyring.decrypt(_flip(token, index, byte), CTX)
    _assert_no_secrets(info.value, key)


def test_local_every_character_substitution_rejected() -> None:
    keyring = LocalKeyring(_hex())
    token = keyring.encrypt(URI, CTX)
    for i, char in enumerate(token):
        tampered = token[:i] + ("B" if char == "A" else "A") + token[i + 1 :]
        with pytest.raises(DecryptionError):
            keyring.decrypt(tampered, CTX)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],  # truncated ciphertext (non-canonical / short)
        lambda t: t[: len(t) // 2],
        lambda t: t.rsplit(".", 1)[0],  # a field missing
        lambda t: t + ".AAAA",  # a field too many
        lambda t: "adb2" + t[4:],  # unknown version
        lambda t: "adb0" + t[4:],
        lambda t: t.replace("adb1.local.", "adb1.kms.", 1),  # other keyring
        lambda t: t.replace("adb1.local.", "adb1.nope.", 1),
        lambda t: t + "=",  # padding is not canonical
        lambda t: t.replace(".", "..", 1),
        lambda t: "",
        lambda t: "not a token",
        lambda t: "adb1." + "A" * 70000,
    ],
)
def test_local_malformed_token_rejected(mangle: Any) -> None:
    keyring = LocalKeyring(_hex())
    with pytest.raises(DecryptionError) as info:
        keyring.decrypt(mangle(keyring.encrypt(URI, CTX)), CTX)
    _assert_no_secrets(info.value)


def test_truncated_ciphertext_rejected() -> None:
    keyring = LocalKeyring(_hex())
    parts = keyring.encrypt(URI, CTX).split(".")
    raw = base64.urlsafe_b64decode(parts[5] + "=" * (-len(parts[5]) % 4))
    for cut in (1, 16, len(raw) - 1):
        parts[5] = base64.urlsafe_b64encode(raw[:-cut]).rstrip(b"=").decode()
        with pytest.raises(DecryptionError):
            keyring.decrypt(".".join(parts), CTX)


def test_unknown_local_key_rejected() -> None:
    key = _hex()
    token = LocalKeyring(key).encrypt(URI, CTX)
    with pytest.raises(DecryptionError) as info:
        LocalKeyring(_hex()).decrypt(token, CTX)
    assert "unknown" in str(info.value)
    _assert_no_secrets(info.value, key)


def test_local_rotation() -> None:
    old, new = _hex(), _hex()
    old_token = LocalKeyring(old).encrypt(URI, CTX)

    rotated = LocalKeyring(new, [old])
    assert rotated.decrypt(old_token, CTX) == URI
    assert rotated.needs_rotation(old_token) is True
    fresh = rotated.encrypt(URI, CTX)
    assert parse_token(fresh).key_id == rotated.current_key_id == local_key_id(bytes.fromhex(new))
    assert rotated.needs_rotation(fresh) is False
    assert rotated.key_ids == (local_key_id(bytes.fromhex(new)), local_key_id(bytes.fromhex(old)))

    retired = LocalKeyring(new)
    assert retired.decrypt(fresh, CTX) == URI
    with pytest.raises(DecryptionError):
        retired.decrypt(old_token, CTX)


def test_needs_rotation_for_other_formats() -> None:
    keyring = LocalKeyring(_hex())
    token = keyring.encrypt(URI, CTX)
    assert keyring.needs_rotation("adb0" + token[4:]) is True
    assert keyring.needs_rotation("legacy:abcdef") is True
    assert keyring.needs_rotation(token.replace("adb1.local.", "adb1.kms.", 1)) is True


def test_local_key_id_is_stable_and_does_not_reveal_key() -> None:
    key = _hex()
    assert LocalKeyring(key).current_key_id == LocalKeyring(bytes.fromhex(key)).current_key_id
    assert key[:16] not in LocalKeyring(key).current_key_id


def test_concurrent_use_is_safe() -> None:
    keyring = LocalKeyring(_hex(), cache=DataKeyCache(8, 60))
    tokens = [keyring.encrypt(f"{URI}&n={i}", CTX) for i in range(32)]

    def work(i: int) -> str:
        return keyring.decrypt(tokens[i % 32], CTX)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(400)))
    assert results == [f"{URI}&n={i % 32}" for i in range(400)]
    assert len(keyring.cache) <= 8


# --- KMS keyring -----------------------------------------------------------------------------------


def test_kms_round_trip(kms: Kms) -> None:
    keyring = KmsKeyring(kms.key_a, client=kms.client)
    token = keyring.encrypt(URI, CTX)
    assert token.startswith("adb1.kms.")
    assert parse_token(token).key_id == kms.key_a
    assert keyring.decrypt(token, CTX) == URI
    assert kms.count("GenerateDataKey") == 1
    assert URI not in token and SECRET not in token


def test_kms_lazy_default_client(kms: Kms) -> None:
    settings = load_settings({"KEYRING": "kms", "KMS_KEY_ID": kms.key_a, "AWS_DEFAULT_REGION": REGION})
    keyring = build_keyring(settings)
    assert isinstance(keyring, KmsKeyring)
    token = keyring.encrypt(URI, CTX)
    assert KmsKeyring(kms.key_b, client=kms.client).decrypt(token, CTX) == URI


def test_importing_crypto_does_not_import_boto3() -> None:
    code = "import sys, agentdb.crypto; print('boto3' in sys.modules or 'botocore' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root / 'layers' / 'core'}{os.pathsep}{root}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "context",
    [connection_uri_context("workspace:43"), {"purpose": "other", "tenant": "workspace:42"}],
)
def test_kms_wrong_context_rejected(kms: Kms, context: dict[str, str]) -> None:
    keyring = KmsKeyring(kms.key_a, client=kms.client, cache=DataKeyCache(16, 60))
    token = keyring.encrypt(URI, CTX)
    assert keyring.decrypt(token, CTX) == URI
    with pytest.raises(DecryptionError) as info:
        keyring.decrypt(token, context)
    _assert_no_secrets(info.value)


@pytest.mark.parametrize("index", [2, 3, 4, 5])
def test_kms_tampered_part_rejected(kms: Kms, index: int) -> None:
    keyring = KmsKeyring(kms.key_a, client=kms.client)
    token = keyring.encrypt(URI, CTX)
    tampered = _flip(token, index, byte=len(parse_token(token).key_id) // 2 if index == 2 else 0)
    with pytest.raises(DecryptionError) as info:
        KmsKeyring(kms.key_a, client=kms.client).decrypt(tampered, CTX)
    _assert_no_secrets(info.value)


def test_kms_key_id_in_uuid_tampered_rejected(kms: Kms) -> None:
    keyring = KmsKeyring(kms.key_a, client=kms.client)
    token = keyring.encrypt(URI, CTX)
    with pytest.raises(DecryptionError):
        KmsKeyring(kms.key_a, client=kms.client).decrypt(_flip(token, 2, byte=-1), CTX)


@pytest.mark.parametrize("other", ["missing", "key_b"])
def test_kms_unknown_or_swapped_key_rejected(kms: Kms, other: str) -> None:
    token = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    key_id = kms.key_a.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000" if other == "missing" else kms.key_b
    parts = token.split(".")
    parts[2] = base64.urlsafe_b64encode(key_id.encode()).rstrip(b"=").decode()
    with pytest.raises(DecryptionError) as info:
        KmsKeyring(kms.key_b, client=kms.client).decrypt(".".join(parts), CTX)
    _assert_no_secrets(info.value)


def test_kms_rotation_between_keys(kms: Kms) -> None:
    token_a = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    keyring_b = KmsKeyring(kms.key_b, client=kms.client)
    assert keyring_b.decrypt(token_a, CTX) == URI
    assert keyring_b.needs_rotation(token_a) is True
    token_b = keyring_b.encrypt(URI, CTX)
    assert parse_token(token_b).key_id == kms.key_b
    assert keyring_b.needs_rotation(token_b) is False


def test_kms_rotation_by_bare_key_id(kms: Kms) -> None:
    bare_b = kms.key_b.rsplit("/", 1)[1]
    keyring = KmsKeyring(bare_b, client=kms.client)
    token = keyring.encrypt(URI, CTX)
    assert parse_token(token).key_id == kms.key_b
    assert keyring.needs_rotation(token) is False
    assert keyring.needs_rotation(KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)) is True


def test_kms_rotation_by_alias(kms: Kms) -> None:
    kms.client.create_alias(AliasName="alias/agentdb", TargetKeyId=kms.key_a)
    clock = FakeClock()
    keyring = KmsKeyring("alias/agentdb", client=kms.client, clock=clock, key_resolution_ttl_seconds=60)
    token_a = keyring.encrypt(URI, CTX)
    assert parse_token(token_a).key_id == kms.key_a
    assert keyring.needs_rotation(token_a) is False

    kms.client.update_alias(AliasName="alias/agentdb", TargetKeyId=kms.key_b)
    clock.now += 61
    assert keyring.needs_rotation(token_a) is True
    assert keyring.decrypt(token_a, CTX) == URI
    token_b = keyring.encrypt(URI, CTX)
    assert parse_token(token_b).key_id == kms.key_b
    assert keyring.needs_rotation(token_b) is False


def test_kms_unusable_key_for_encrypt_is_config_error(kms: Kms) -> None:
    with pytest.raises(ConfigError) as info:
        KmsKeyring("alias/does-not-exist", client=kms.client).encrypt(URI, CTX)
    assert "KMS_KEY_ID" in str(info.value)
    _assert_no_secrets(info.value)


# --- the data-key cache ----------------------------------------------------------------------------


def test_cache_hit_skips_kms_decrypt(kms: Kms) -> None:
    token = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    reader = KmsKeyring(kms.key_a, client=kms.client, cache=DataKeyCache(16, 300))
    assert reader.decrypt(token, CTX) == URI
    assert reader.decrypt(token, CTX) == URI
    assert reader.decrypt(token, CTX) == URI
    assert kms.count("Decrypt") == 1


def test_encrypt_warms_the_cache(kms: Kms) -> None:
    keyring = KmsKeyring(kms.key_a, client=kms.client, cache=DataKeyCache(16, 300))
    token = keyring.encrypt(URI, CTX)
    assert keyring.decrypt(token, CTX) == URI
    assert kms.count("Decrypt") == 0


def test_cache_disabled_by_size_zero(kms: Kms) -> None:
    token = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    reader = KmsKeyring(kms.key_a, client=kms.client, cache=DataKeyCache(0, 300))
    reader.decrypt(token, CTX)
    reader.decrypt(token, CTX)
    assert kms.count("Decrypt") == 2


def test_cache_ttl_expiry(kms: Kms) -> None:
    clock = FakeClock()
    token = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    reader = KmsKeyring(kms.key_a, client=kms.client, cache=DataKeyCache(16, 10, clock=clock))
    reader.decrypt(token, CTX)
    clock.now += 9.9
    reader.decrypt(token, CTX)
    assert kms.count("Decrypt") == 1
    clock.now += 0.2
    reader.decrypt(token, CTX)
    assert kms.count("Decrypt") == 2


def test_cache_size_bound(kms: Kms) -> None:
    writer = KmsKeyring(kms.key_a, client=kms.client)
    tokens = [writer.encrypt(URI, connection_uri_context(f"workspace:{i}")) for i in range(3)]
    cache = DataKeyCache(2, 300)
    reader = KmsKeyring(kms.key_a, client=kms.client, cache=cache)
    for i, token in enumerate(tokens):
        reader.decrypt(token, connection_uri_context(f"workspace:{i}"))
    assert len(cache) == 2
    assert kms.count("Decrypt") == 3
    reader.decrypt(tokens[2], connection_uri_context("workspace:2"))  # still cached
    assert kms.count("Decrypt") == 3
    reader.decrypt(tokens[0], connection_uri_context("workspace:0"))  # evicted
    assert kms.count("Decrypt") == 4


def test_cache_lru_order_and_ttl() -> None:
    clock = FakeClock()
    cache = DataKeyCache(2, 5, clock=clock)
    a, b, c = ("k", b"a", b"{}"), ("k", b"b", b"{}"), ("k", b"c", b"{}")
    cache.put(a, b"A" * 32)
    cache.put(b, b"B" * 32)
    assert cache.get(a) == b"A" * 32  # a is now most recent
    cache.put(c, b"C" * 32)  # evicts b
    assert cache.get(b) is None
    assert cache.get(a) == b"A" * 32 and cache.get(c) == b"C" * 32
    clock.now += 5
    assert cache.get(a) is None and len(cache) == 1
    assert "AAAA" not in repr(cache)
    assert DataKeyCache(4, 0).enabled is False


# --- KMS error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 400, UpstreamUnavailable),
        ("KMSInternalException", 500, UpstreamUnavailable),
        ("DependencyTimeoutException", 503, UpstreamUnavailable),
        ("KeyUnavailableException", 500, UpstreamUnavailable),
        ("InvalidCiphertextException", 400, DecryptionError),
        ("AccessDeniedException", 400, DecryptionError),
        ("IncorrectKeyException", 400, DecryptionError),
    ],
)
def test_kms_decrypt_error_mapping(kms: Kms, code: str, status: int, expected: type[Exception]) -> None:
    token = KmsKeyring(kms.key_a, client=kms.client).encrypt(URI, CTX)
    client = boto3.client("kms", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("decrypt", service_error_code=code, http_status_code=status)
        with pytest.raises(expected) as info:
            KmsKeyring(kms.key_a, client=client).decrypt(token, CTX)
    assert code in str(info.value)
    _assert_no_secrets(info.value)


def test_kms_generate_throttled_is_unavailable() -> None:
    client = boto3.client("kms", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("generate_data_key", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(UpstreamUnavailable):
            KmsKeyring("alias/agentdb", client=client).encrypt(URI, CTX)


def test_kms_network_error_is_unavailable() -> None:
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=0.5, read_timeout=0.5)
    client = boto3.client("kms", region_name=REGION, endpoint_url="http://127.0.0.1:9", config=config)
    keyring = KmsKeyring("alias/agentdb", client=client)
    with pytest.raises(UpstreamUnavailable):
        keyring.encrypt(URI, CTX)
    token = LocalKeyring(_hex()).encrypt(URI, CTX).replace("adb1.local.", "adb1.kms.", 1)
    with pytest.raises(UpstreamUnavailable):
        keyring.decrypt(token, CTX)


# --- configuration ---------------------------------------------------------------------------------


def test_build_local_keyring_from_settings() -> None:
    old, new = _hex(), _hex()
    old_token = LocalKeyring(old).encrypt(URI, CTX)
    settings = load_settings(
        {"KEYRING": "local", "LOCAL_ENCRYPTION_KEY": new, "LOCAL_ENCRYPTION_PREVIOUS_KEYS": f" {old} ,"}
    )
    keyring = build_keyring(settings)
    assert isinstance(keyring, LocalKeyring)
    assert keyring.decrypt(old_token, CTX) == URI
    assert keyring.needs_rotation(old_token) is True


def test_neon_key_alias_is_accepted() -> None:
    key = _hex()
    keyring = build_keyring(load_settings({"NEON_CONNECTION_ENCRYPTION_KEY": key}))
    assert keyring.current_key_id == local_key_id(bytes.fromhex(key))


def test_missing_local_key_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_keyring(load_settings({"KEYRING": "local"}))
    assert "LOCAL_ENCRYPTION_KEY" in str(info.value)


def test_missing_kms_key_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_keyring(load_settings({"KEYRING": "kms"}))
    assert "KMS_KEY_ID" in str(info.value)


def test_bad_local_key_is_config_error_without_the_key() -> None:
    bad = "zz" * 32
    with pytest.raises(ConfigError) as info:
        LocalKeyring(bad)
    assert bad not in str(info.value)
    with pytest.raises(ConfigError):
        LocalKeyring(_hex(), ["abcd"])


def test_connection_uri_context() -> None:
    assert connection_uri_context("user:u1") == {"purpose": "connection-uri", "tenant": "user:u1"}
    with pytest.raises(ValueError):
        connection_uri_context("")
