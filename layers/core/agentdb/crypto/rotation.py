"""Key rotation: re-encrypt every stored connection URI under the keyring's current key (README "Key rotation").

Walks ``user_global_database`` and ``workspace_database`` in primary-key order, a batch at a time, and for
each token that ``Keyring.needs_rotation`` flags (another key, an older format), decrypts it for its tenant
and purpose and encrypts it again under the current key. Each token is written with a compare-and-set on
the old token, so a lifecycle write that lands meanwhile (a re-provisioned database's new URI) is never
overwritten: it was made under the current key anyway. Safe while the service serves, because old tokens
keep decrypting as long as their key is still in the keyring (``LOCAL_ENCRYPTION_PREVIOUS_KEYS``, or the
old KMS key's ``Decrypt`` permission). Idempotent and resumable: an interrupted run leaves only whole rows
rotated, and the next run skips every token already under the current key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentdb.crypto import connection_uri_context, readonly_uri_context
from agentdb.crypto.envelope import Keyring
from agentdb.errors import AgentDBError
from agentdb.observability import MetricUnit, logger, metrics
from agentdb.providers.base import Tenant, TenantKind
from agentdb.store.reconcile import ReconcileStore

_CONTEXTS: dict[str, Callable[[str], dict[str, str]]] = {
    "neon_connection_uri": connection_uri_context,
    "readonly_connection_uri": readonly_uri_context,
}


@dataclass
class RotationReport:
    key_id: str
    scanned: int = 0  # records looked at
    tokens: int = 0  # non-empty URI tokens among them
    rotated: int = 0  # re-encrypted under the current key
    current: int = 0  # already under the current key
    changed: int = 0  # written by someone else meanwhile (compare-and-set lost): left as they are
    failed: int = 0  # could not be decrypted (retired key, altered token): left as they are
    complete: bool = True  # False: stopped early (``limit`` or out of time); run again to continue
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyId": self.key_id,
            "scanned": self.scanned,
            "tokens": self.tokens,
            "rotated": self.rotated,
            "current": self.current,
            "changed": self.changed,
            "failed": self.failed,
            "complete": self.complete,
            "failures": self.failures[:100],
        }


class KeyRotation:
    def __init__(self, store: ReconcileStore, keyring: Keyring, *, batch_size: int = 200) -> None:
        self.store = store
        self.keyring = keyring
        self.batch_size = batch_size

    def run(self, *, limit: int | None = None, remaining: Callable[[], float] | None = None) -> RotationReport:
        """Rotate every token (``limit``: at most that many records this run; ``remaining``: seconds left,
        the run stops between batches when fewer than 10 remain)."""
        report = RotationReport(key_id=self.keyring.current_key_id)
        started = time.perf_counter()
        kinds: tuple[TenantKind, ...] = ("global", "workspace")
        for kind in kinds:
            after: str | None = None
            while True:
                if (limit is not None and report.scanned >= limit) or (remaining and remaining() < 10):
                    report.complete = False
                    break
                size = self.batch_size if limit is None else min(self.batch_size, limit - report.scanned)
                batch = self.store.uri_batch(kind, after, size)
                if not batch:
                    break
                for row in batch:
                    report.scanned += 1
                    tenant = Tenant(kind, row.tenant_id)
                    for column, token in row.tokens.items():
                        if token:
                            self._rotate(report, tenant, kind, row.row_id, column, token)
                after = batch[-1].row_id
            if not report.complete:
                break
        for name, value in (("KeyRotationRotated", report.rotated), ("KeyRotationFailed", report.failed)):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        logger.info(
            "key rotation finished",
            extra={
                **{k: v for k, v in report.to_dict().items() if k != "failures"},
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return report

    def _rotate(
        self, report: RotationReport, tenant: Tenant, kind: TenantKind, row_id: str, column: str, token: str
    ) -> None:
        report.tokens += 1
        if not self.keyring.needs_rotation(token):
            report.current += 1
            return
        context = _CONTEXTS[column](tenant.context_key)
        try:
            fresh = self.keyring.encrypt(self.keyring.decrypt(token, context), context)
        except AgentDBError as exc:
            report.failed += 1
            report.failures.append({"tenant": tenant.context_key, "column": column, "error": exc.code})
            logger.warning(
                "key rotation: token not rotated",
                extra={"tenant": tenant.context_key, "column": column, "code": exc.code},
            )
            return
        if self.store.replace_token(kind, row_id, column, token, fresh):
            report.rotated += 1
        else:
            report.changed += 1
