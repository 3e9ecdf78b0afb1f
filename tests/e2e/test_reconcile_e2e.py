"""Reconciliation through the local stack: the events/reconcile samples invoked as the README shows."""

from __future__ import annotations

import json

from agentdb.container import get_services
from agentdb.providers.base import Tenant
from tests.e2e.conftest import Stack
from tests.lambda_harness import REPO
from tests.support import ServerInspector


def sample(name: str) -> dict[str, object]:
    data = json.loads((REPO / "events" / "reconcile" / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_dry_run_and_rotation_through_the_gateway(stack: Stack, server: ServerInspector) -> None:
    c = stack.client
    assert c.post("/users", headers=stack.admin(), json={"userId": "ann"}).status_code == 201
    get_services().provider.create(Tenant("workspace", "ghost"))  # an orphan, younger than the grace period

    dry = c.post("/_local/invoke/ReconcileFunction", json=sample("dry-run.json"))
    assert dry.status_code == 200
    body = dry.json()
    assert body["dryRun"] is True and body["counts"] == {"orphan": {"kept": 1}}
    assert body["findings"][0]["tenant"] == "workspace:ghost" and len(server.databases()) == 2

    rotated = c.post("/_local/invoke/ReconcileFunction", json=sample("rotate-keys.json"))
    assert rotated.status_code == 200 and rotated.json()["current"] == 2 and rotated.json()["failed"] == 0

    bad = c.post("/_local/invoke/ReconcileFunction", json={"action": "reconcile", "dryRun": "maybe"})
    assert bad.status_code == 502 and "dryRun" in bad.text
