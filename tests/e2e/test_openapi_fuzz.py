"""The whole HTTP API, fuzzed from its own OpenAPI document (schemathesis) through the local gateway on real
Postgres: no answer may be a 5xx, and every answer's status, content type and body must match the document.

Each operation gets generated requests (valid ones, then invalid ones) with a real bearer token: admin routes
with the admin scope, every other route as a user who owns a real workspace with a real table, so that some
generated requests reach real data. ``FUZZ_EXAMPLES`` sets the examples per operation and mode (default 20);
generation is derandomized, so a run is repeatable.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from local.openapi import build
from tests.e2e.conftest import Stack
from tests.support import ServerInspector

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _seed(stack: Stack) -> None:
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "alice"}, headers=admin).status_code in (200, 201)
    workspace = {"workspaceId": "ws-fuzz", "ownerUserId": "alice"}
    assert stack.client.post("/workspaces", json=workspace, headers=admin).status_code in (200, 201)
    created = stack.client.post(
        "/mcp/tools/execute",
        json={
            "workspaceId": "ws-fuzz",
            "serverId": "system:postgres-agent",
            "toolName": "run_sql",
            "arguments": {"sql": "CREATE TABLE notes (id serial PRIMARY KEY, body text)"},
        },
        headers=stack.user("alice"),
    )
    assert created.status_code == 200, created.text


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_answer_matches_the_document_and_none_is_a_5xx(
    stack: Stack, server: ServerInspector, mode: GenerationMode
) -> None:
    _seed(stack)
    document = build()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        admin = "admin" in (operation.definition.raw.get("tags") or [])
        headers = stack.admin() if admin else stack.user("alice")
        try:
            _fuzz(operation, mode, stack.url, headers)
        except Unsatisfiable:  # nothing invalid can be sent to it (e.g. a GET without parameters)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label}: {exc}")
    assert operations == sum(len(item) for item in document["paths"].values())
    assert not failures, "\n\n".join(failures)
