"""Key rotation on a real control plane: local key ids and KMS keys (moto); resumable, never clobbering."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from agentdb.container import Services
from agentdb.crypto import (
    KmsKeyring,
    LocalKeyring,
    connection_uri_context,
    local_key_id,
    parse_token,
    readonly_uri_context,
)
from agentdb.crypto.envelope import Keyring
from agentdb.crypto.rotation import KeyRotation
from agentdb.errors import DecryptionError
from agentdb.providers.base import Tenant
from agentdb.store.reconcile import URI_COLUMNS, ReconcileStore
from tests.support import ServerInspector, connect

TENANTS = [Tenant("global", "ann"), Tenant("global", "ben"), Tenant("workspace", "ws-1"), Tenant("workspace", "ws-2")]


def tokens(services: Services) -> dict[tuple[Tenant, str], str]:
    """Every stored URI token, by (tenant, column)."""
    found: dict[tuple[Tenant, str], str] = {}
    rotation_store = ReconcileStore(services.store.db)
    for kind in ("global", "workspace"):
        for row in rotation_store.uri_batch(kind, None, 1000):  # type: ignore[arg-type]
            for column, token in row.tokens.items():
                if token:
                    found[(Tenant(kind, row.tenant_id), column)] = token  # type: ignore[arg-type]
    return found


def decrypt_all(keyring: Keyring, stored: dict[tuple[Tenant, str], str]) -> dict[tuple[Tenant, str], str]:
    def context(tenant: Tenant, column: str) -> dict[str, str]:
        make = connection_uri_context if column == "neon_connection_uri" else readonly_uri_context
        return make(tenant.context_key)

    return {(t, c): keyring.decrypt(token, context(t, c)) for (t, c), token in stored.items()}


@pytest.fixture
def provisioned(services: Services, server: ServerInspector) -> Services:
    services.lifecycle.create_user("ann")
    services.lifecycle.create_user("ben")
    services.lifecycle.create_workspace("ws-1", "ann")
    services.lifecycle.create_workspace("ws-2", "ben")
    return services


def rotated_keyring(services: Services) -> tuple[LocalKeyring, str]:
    """A keyring with a new current key; the old one kept for decryption (LOCAL_ENCRYPTION_PREVIOUS_KEYS)."""
    old = services.settings.local_encryption_key
    assert old
    new = secrets.token_hex(32)
    return LocalKeyring(new, [old]), new


def test_local_key_rotation_reencrypts_every_uri_under_the_new_key(provisioned: Services) -> None:
    before = tokens(provisioned)
    assert len(before) == 8 and {c for _, c in before} == set(URI_COLUMNS)  # 4 tenants x (owner, read-only)
    plain = decrypt_all(provisioned.keyring, before)
    keyring, new_key = rotated_keyring(provisioned)
    assert all(keyring.needs_rotation(t) for t in before.values())
    assert decrypt_all(keyring, before) == plain  # old tokens keep decrypting until rotated

    report = KeyRotation(ReconcileStore(provisioned.store.db), keyring, batch_size=3).run()

    assert (report.scanned, report.tokens, report.rotated, report.failed, report.complete) == (4, 8, 8, 0, True)
    after = tokens(provisioned)
    assert all(parse_token(t).key_id == local_key_id(bytes.fromhex(new_key)) for t in after.values())
    assert decrypt_all(LocalKeyring(new_key), after) == plain  # the old key is no longer needed
    with pytest.raises(DecryptionError):
        decrypt_all(provisioned.keyring, after)  # the old keyring alone cannot read them any more
    again = KeyRotation(ReconcileStore(provisioned.store.db), keyring).run()
    assert (again.rotated, again.current) == (0, 8)  # idempotent
    for tenant in TENANTS:  # and the URIs still open the databases
        connect(plain[(tenant, "neon_connection_uri")]).close()


def test_an_interrupted_rotation_resumes_where_it_stopped(provisioned: Services) -> None:
    plain = decrypt_all(provisioned.keyring, tokens(provisioned))
    keyring, new_key = rotated_keyring(provisioned)
    store = ReconcileStore(provisioned.store.db)

    partial = KeyRotation(store, keyring, batch_size=1).run(limit=1)
    assert (partial.scanned, partial.rotated, partial.complete) == (1, 2, False)

    class Crashing(ReconcileStore):
        writes = 0

        def replace_token(self, *args: Any) -> bool:
            if self.writes == 3:
                raise ConnectionError("the Lambda was stopped")
            self.writes += 1
            return super().replace_token(*args)

    with pytest.raises(ConnectionError):
        KeyRotation(Crashing(provisioned.store.db), keyring, batch_size=2).run()

    final = KeyRotation(store, keyring).run()
    assert final.rotated == 8 - 2 - 3 and final.current == 5 and final.complete
    after = tokens(provisioned)
    assert not any(keyring.needs_rotation(t) for t in after.values())
    assert decrypt_all(LocalKeyring(new_key), after) == plain


def test_a_concurrent_write_is_never_overwritten(provisioned: Services) -> None:
    keyring, new_key = rotated_keyring(provisioned)
    target = Tenant("workspace", "ws-1")
    concurrent = keyring.encrypt("postgresql://new:secret@db.example/ws1", connection_uri_context(target.context_key))

    class Racing(LocalKeyring):
        """Re-encrypting ws-1's URI is when a lifecycle write (a new URI) lands."""

        def encrypt(self, plaintext: str, context: Any) -> str:
            if context == connection_uri_context(target.context_key):
                provisioned.store.db.run(
                    "UPDATE workspace_database SET neon_connection_uri = :t WHERE workspace_id = :id",
                    t=concurrent,
                    id=target.id,
                )
            return super().encrypt(plaintext, context)

    racing = Racing(new_key, [provisioned.settings.local_encryption_key or ""])
    report = KeyRotation(ReconcileStore(provisioned.store.db), racing).run()
    assert (report.rotated, report.changed) == (7, 1)
    assert tokens(provisioned)[(target, "neon_connection_uri")] == concurrent


def test_undecryptable_tokens_are_reported_and_left_alone(provisioned: Services) -> None:
    keyring, _ = rotated_keyring(provisioned)
    victim = Tenant("global", "ben")
    stale = LocalKeyring(secrets.token_hex(32)).encrypt("postgresql://x", connection_uri_context(victim.context_key))
    provisioned.store.db.run("UPDATE user_global_database SET neon_connection_uri = :t WHERE user_id = 'ben'", t=stale)

    report = KeyRotation(ReconcileStore(provisioned.store.db), keyring).run()

    assert (report.rotated, report.failed) == (7, 1)
    assert report.failures == [{"tenant": "user:ben", "column": "neon_connection_uri", "error": "decryption_failed"}]
    assert tokens(provisioned)[(victim, "neon_connection_uri")] == stale
    assert "postgresql" not in str(report.to_dict())  # never a URI in the report


# KMS -----------------------------------------------------------------------------------------------------
@pytest.fixture
def kms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


def test_kms_rotation_to_a_new_key_behind_the_alias(services: Services, kms: Any) -> None:
    old_key = kms.create_key(Description="old")["KeyMetadata"]["Arn"]
    new_key = kms.create_key(Description="new")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/agentdb-test", TargetKeyId=old_key)
    before = KmsKeyring("alias/agentdb-test", client=kms)
    plain: dict[Tenant, str] = {}
    for i, tenant in enumerate(TENANTS):
        if tenant.kind == "global":
            services.store.upsert_user(tenant.id, None, "free", datetime.now(UTC))
        else:
            services.store.upsert_workspace(tenant.id, None, None)
        services.store.insert_database(tenant, "postgres")
        plain[tenant] = f"postgresql://r{i}:pw{i}@db.example/d{i}"
        services.store.mark_database_ready(
            tenant,
            project_id=f"d{i}",
            branch_id=None,
            database_name=f"d{i}",
            role_name=f"r{i}",
            encrypted_uri=before.encrypt(plain[tenant], connection_uri_context(tenant.context_key)),
        )
    assert {parse_token(t).key_id for t in tokens(services).values()} == {old_key}

    kms.update_alias(AliasName="alias/agentdb-test", TargetKeyId=new_key)  # the operator points the alias anew
    after = KmsKeyring("alias/agentdb-test", client=kms)
    report = KeyRotation(ReconcileStore(services.store.db), after).run()

    assert (report.rotated, report.failed, report.key_id) == (4, 0, "alias/agentdb-test")
    stored = tokens(services)
    assert {parse_token(t).key_id for t in stored.values()} == {new_key}
    assert {
        t: after.decrypt(stored[(t, "neon_connection_uri")], connection_uri_context(t.context_key)) for t in TENANTS
    } == plain
    kms.disable_key(KeyId=old_key.rsplit("/", 1)[-1])  # the old key is no longer needed to read them
    fresh = KmsKeyring(new_key, client=kms)
    assert all(
        fresh.decrypt(stored[(t, "neon_connection_uri")], connection_uri_context(t.context_key)) == plain[t]
        for t in TENANTS
    )
