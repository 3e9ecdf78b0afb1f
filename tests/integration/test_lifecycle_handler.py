"""The lifecycle Lambda handler end to end: HTTP (payload 2.0) and EventBridge events, real Postgres."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agentdb.config import get_settings
from agentdb.container import get_services
from agentdb.providers.base import Tenant
from local.embedded_pg import free_port
from tests.lambda_harness import REPO, FakeLambdaContext, eventbridge_event, http_event, load_function
from tests.support import ServerInspector


@pytest.fixture
def lifecycle(function_env: dict[str, str]) -> ModuleType:
    return load_function("lifecycle")


def call(fn: ModuleType, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = fn.handler(event, FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_create_user_over_http_answers_201_then_200(lifecycle: ModuleType, server: ServerInspector) -> None:
    status, body = call(lifecycle, http_event("POST", "/users", body={"userId": "u1", "plan": "pro"}))
    assert status == 201
    assert body["success"] is True
    assert body["data"]["globalDatabase"]["status"] == "ready"
    status, body = call(lifecycle, http_event("POST", "/users", body={"userId": "u1"}))
    assert status == 200 and body["data"]["plan"] == "pro"
    assert len(server.databases()) == 1


def test_admin_scope_is_required(lifecycle: ModuleType, server: ServerInspector) -> None:
    status, body = call(lifecycle, http_event("POST", "/users", body={"userId": "u1"}, scope="openid"))
    assert status == 403
    assert body == {
        "success": False,
        "error": {"code": "forbidden", "message": "this route needs the agentdb/admin scope"},
    }
    assert server.databases() == []


@pytest.mark.parametrize(
    ("body", "raw", "fragment"),
    [
        ({"userId": "u1", "plan": "platinum"}, None, "plan"),
        ({"plan": "pro"}, None, "userId"),
        ({"userId": "x" * 129}, None, "userId"),
        (None, "{not json", "JSON"),
    ],
)
def test_bad_bodies_answer_400_with_a_clear_message(
    lifecycle: ModuleType, server: ServerInspector, body: Any, raw: str | None, fragment: str
) -> None:
    status, payload = call(lifecycle, http_event("POST", "/users", body=body, raw_body=raw))
    assert status == 400
    assert payload["success"] is False and payload["error"]["code"] == "invalid_input"
    assert fragment in payload["error"]["message"]
    assert "Traceback" not in json.dumps(payload)
    assert server.databases() == []


def test_workspace_routes(lifecycle: ModuleType, server: ServerInspector) -> None:
    call(lifecycle, http_event("POST", "/users", body={"userId": "owner"}))
    status, body = call(
        lifecycle,
        http_event("POST", "/workspaces", body={"workspaceId": "w1", "ownerUserId": "owner", "name": "Agent"}),
    )
    assert status == 201 and body["data"]["database"]["status"] == "ready"
    member = http_event(
        "PUT",
        "/workspaces/w1/members/helper",
        route="/workspaces/{workspaceId}/members/{userId}",
        path_params={"workspaceId": "w1", "userId": "helper"},
        body={"role": "read"},
    )
    status, body = call(lifecycle, member)
    assert status == 200 and body["data"]["role"] == "read"
    missing = http_event(
        "PUT",
        "/workspaces/nope/members/helper",
        route="/workspaces/{workspaceId}/members/{userId}",
        path_params={"workspaceId": "nope", "userId": "helper"},
        body={"role": "read"},
    )
    status, body = call(lifecycle, missing)
    assert status == 404 and body["error"]["code"] == "not_found"
    delete = http_event(
        "DELETE", "/workspaces/w1", route="/workspaces/{workspaceId}", path_params={"workspaceId": "w1"}
    )
    status, body = call(lifecycle, delete)
    assert status == 200 and body["data"]["workspaceId"] == "w1"
    assert len(server.databases()) == 1


def test_unknown_route_is_a_404_envelope(lifecycle: ModuleType) -> None:
    status, body = call(lifecycle, http_event("GET", "/nope"))
    assert status == 404 and body["success"] is False


def test_eventbridge_events_apply_and_duplicates_are_skipped(lifecycle: ModuleType, server: ServerInspector) -> None:
    event = eventbridge_event("user.created", {"userId": "eb-user", "plan": "team"})
    result = lifecycle.handler(event, FakeLambdaContext())
    assert result["action"] == "created"
    assert lifecycle.handler(event, FakeLambdaContext())["action"] == "ignored"
    lifecycle.handler(eventbridge_event("user.deleted", {"userId": "eb-user"}), FakeLambdaContext())
    assert server.databases() == []


def test_malformed_event_raises_so_lambda_retries_then_dead_letters(lifecycle: ModuleType) -> None:
    from agentdb.errors import InvalidInput

    with pytest.raises(InvalidInput):
        lifecycle.handler(eventbridge_event("workspace.created", {"workspaceId": "w"}), FakeLambdaContext())


def test_provider_outage_answers_503_and_leaves_nothing(
    cp_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, server: ServerInspector
) -> None:
    cp_env = {**cp_env, "POSTGRES_ADMIN_URL": f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres"}
    for key, value in cp_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_services.cache_clear()
    try:
        fn = load_function("lifecycle")
        status, body = call(fn, http_event("POST", "/users", body={"userId": "u-outage"}))
        assert status == 503
        assert body["error"]["code"] == "upstream_unavailable"
        assert "postgresql://" not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)
        # Nothing was made on the server; the record stays 'failed' for the next attempt or the reconciler.
        record = get_services().store.get_database(Tenant("global", "u-outage"))
        assert record is not None and record.status == "failed" and record.encrypted_uri is None
        assert server.databases() == []
    finally:
        get_services().store.db.close()
        get_settings.cache_clear()
        get_services.cache_clear()


def sample_events() -> list[Path]:
    return sorted((REPO / "events" / "lifecycle").glob("*.json"))


def test_every_sample_event_invokes_cleanly(lifecycle: ModuleType, server: ServerInspector) -> None:
    """Each events/lifecycle/*.json, as `sam local invoke -e` would pass it, in a lifecycle order."""
    samples = {p.stem: json.loads(p.read_text()) for p in sample_events()}
    assert samples, "events/lifecycle/ has no samples"
    order = [
        "http-post-users", "user-created", "user-plan-changed", "http-put-plan", "http-put-budget",
        "http-post-workspaces", "workspace-created", "http-put-member", "workspace-member-added",
        "http-delete-member", "workspace-member-removed", "http-delete-workspace", "workspace-deleted",
        "http-delete-user", "user-deleted",
    ]  # fmt: skip
    assert set(order) == set(samples), "a sample event is missing from this walk, or the walk names a missing one"
    for name in order:
        event = samples[name]
        result = lifecycle.handler(event, FakeLambdaContext())
        if "statusCode" in result:
            assert result["statusCode"] in (200, 201), (name, result)
            assert json.loads(result["body"])["success"] is True
        else:
            assert result["action"] in ("created", "exists", "updated", "deleted", "ignored"), (name, result)
    assert server.databases() == []
    assert server.roles() == []


def test_no_connection_uri_or_password_in_responses_or_logs(
    lifecycle: ModuleType, server: ServerInspector, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from agentdb.crypto import connection_uri_context
    from agentdb.pgurl import parse_pg_url

    bodies = []
    for event in (
        http_event("POST", "/users", body={"userId": "secret-owner"}),
        http_event("POST", "/workspaces", body={"workspaceId": "secret-ws", "ownerUserId": "secret-owner"}),
        eventbridge_event("workspace.created", {"workspaceId": "secret-ws-2", "ownerUserId": "secret-owner"}),
    ):
        bodies.append(json.dumps(lifecycle.handler(event, FakeLambdaContext())))
    services = get_services()
    secrets_seen = []
    for tenant in (
        Tenant("global", "secret-owner"),
        Tenant("workspace", "secret-ws"),
        Tenant("workspace", "secret-ws-2"),
    ):
        record = services.store.get_database(tenant)
        assert record is not None and record.encrypted_uri
        uri = services.keyring.decrypt(record.encrypted_uri, connection_uri_context(tenant.context_key))
        password = parse_pg_url(uri).password
        assert password
        secrets_seen += [uri, password]
    captured = capsys.readouterr()
    haystack = "\n".join([*bodies, captured.out, captured.err, caplog.text])
    assert "tenant database ready" in haystack  # the logs were captured at all
    for secret in secrets_seen:
        assert secret not in haystack
    assert "postgresql://" not in haystack


def test_tool_sample_events_invoke_cleanly(lifecycle: ModuleType, server: ServerInspector) -> None:
    """events/system_tools and events/tool_execute, as `sam local invoke -e` would pass them."""
    for name in ("http-post-users", "http-post-workspaces"):
        event = json.loads((REPO / "events" / "lifecycle" / f"{name}.json").read_text())
        assert lifecycle.handler(event, FakeLambdaContext())["statusCode"] in (200, 201)
    listing = load_function("system_tools")
    execute = load_function("tool_execute")
    for fn, path in (
        (listing, REPO / "events" / "system_tools" / "http-get-system-tools.json"),
        (execute, REPO / "events" / "tool_execute" / "http-post-execute.json"),
    ):
        status, body = call(fn, json.loads(path.read_text()))
        assert status == 200 and body["success"] is True, body
    status, body = call(execute, json.loads((REPO / "events" / "tool_execute" / "http-post-execute.json").read_text()))
    assert body["data"]["structuredContent"]["rows"] == [[1]]
    get_services().tools.backend.close()  # type: ignore[attr-defined]
