"""The fan-out queue of the consumption sync: SQS messages the usage function consumes.

Message bodies (JSON):

* ``{"kind": "sync", "projectIds": [...]}``: sync these databases (at most 100: one consumption request).
* ``{"kind": "enforce", "userId": "..."}``: finish pausing or resuming a user's databases (work a request
  with a short time limit, e.g. ``PUT /users/{id}/plan``, could not finish).

``USAGE_QUEUE_URL`` names the queue; without it (local stack, tests) there is no fan-out and the work is
done in the invocation, as far as its time allows, and the rest by the next scheduled sync.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from agentdb.errors import UpstreamUnavailable
from agentdb.observability import logger

_SQS_BATCH = 10  # SendMessageBatch takes at most 10 entries


class WorkQueue(Protocol):
    def send(self, messages: Sequence[dict[str, Any]]) -> int:
        """Enqueue the messages; returns how many were sent. Raises when some could not be."""
        ...


class SqsWorkQueue:
    def __init__(self, queue_url: str, client: Any = None) -> None:
        self.queue_url = queue_url
        self._client = client

    def __repr__(self) -> str:
        return f"SqsWorkQueue({self.queue_url!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs")
        return self._client

    def send(self, messages: Sequence[dict[str, Any]]) -> int:
        sent = 0
        for start in range(0, len(messages), _SQS_BATCH):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":"))}
                for i, body in enumerate(messages[start : start + _SQS_BATCH])
            ]
            for _attempt in range(3):
                try:
                    result = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except Exception as exc:  # botocore errors: the queue is unreachable or refuses us
                    logger.warning("could not enqueue usage work", extra={"error": type(exc).__name__})
                    raise UpstreamUnavailable("could not enqueue the usage work (SQS)") from None
                failed = {f["Id"] for f in result.get("Failed") or []}
                sent += len(entries) - len(failed)
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            if entries:
                raise UpstreamUnavailable(f"SQS refused {len(entries)} usage work message(s)")
        return sent


def work_queue_from_env(environ: dict[str, str] | None = None) -> WorkQueue | None:
    url = (environ if environ is not None else os.environ).get("USAGE_QUEUE_URL", "").strip()
    return SqsWorkQueue(url) if url else None


def sync_message(project_ids: Sequence[str]) -> dict[str, Any]:
    return {"kind": "sync", "projectIds": list(project_ids), "id": uuid.uuid4().hex}


def enforce_message(user_id: str) -> dict[str, Any]:
    return {"kind": "enforce", "userId": user_id, "id": uuid.uuid4().hex}
