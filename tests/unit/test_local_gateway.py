"""The local gateway: routing from a template, the JWT authorizer, payload 2.0, events, invoke, tokens."""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from local.gateway import LocalGateway, Request, pattern_matches
from local.settings import local_encryption_key, local_jwt_secret
from local.template import load_template
from local.token import main as token_main
from local.token import mint_token

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 40

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  EventSource:
    Type: String
    Default: test.platform
  Issuer:
    Type: String
  Stage:
    Type: String
    Default: dev
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    MemorySize: 256
    Environment:
      Variables:
        KEYRING: kms
        STAGE: !If [IsProd, production, !Ref Stage]
Resources:
  HttpApi:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: JwtAuthorizer
        Authorizers:
          JwtAuthorizer:
            IdentitySource: "$request.header.Authorization"
            JwtConfiguration:
              issuer: !Ref Issuer
              audience: [agentdb]
      CorsConfiguration:
        AllowOrigins: ["https://app.example.com"]
        AllowMethods: [GET, POST]
        AllowHeaders: [authorization, content-type]
        MaxAge: 600
  ProdOnly:
    Type: AWS::SQS::Queue
    Condition: IsProd
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Handler: app.handler
      Role: !GetAtt SomeRole.Arn
      Events:
        GetUser:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/users/{userId}", Method: GET}
        DeleteUser:
          Type: HttpApi
          Properties:
            ApiId: !Ref HttpApi
            Path: /users/{userId}
            Method: DELETE
            Auth: {Authorizer: JwtAuthorizer, AuthorizationScopes: [agentdb/admin]}
        Post:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /echo, Method: POST}
        Health:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /health, Method: GET, Auth: {Authorizer: NONE}}
        Files:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: "/files/{proxy+}", Method: ANY}
        Boom:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /boom, Method: GET}
        Plain:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /plain, Method: GET}
        Text:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /text, Method: GET}
        Custom:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /custom, Method: POST}
        Binary:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /binary, Method: GET}
        Malformed:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /malformed, Method: GET}
        UserEvents:
          Type: EventBridgeRule
          Properties:
            Pattern:
              source: [!Ref EventSource]
              detail-type: [user.created, user.deleted]
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/other/
      Handler: app.handler
      Timeout: 5
      Events:
        Me:
          Type: HttpApi
          Properties: {ApiId: !Ref HttpApi, Path: /users/me, Method: GET}
        ProUsers:
          Type: EventBridgeRule
          Properties:
            Pattern:
              source: [!Ref EventSource]
              detail-type: [user.created]
              detail:
                plan: [{prefix: pro}]
  WorkspaceRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern:
        source: [!Sub "${EventSource}"]
        detail-type: [workspace.created]
      Targets:
        - Id: other
          Arn: !GetAtt OtherFunction.Arn
          InputPath: $.detail
"""

ECHO_APP = """\
import base64
import json
from pathlib import Path

import helper  # a sibling module: the other function has its own helper.py

NAME = "echo"
CALLS = Path(__file__).with_name("calls.log")


def handler(event, context):
    with CALLS.open("a") as f:
        f.write(json.dumps(event.get("routeKey") or event.get("detail-type")) + "\\n")
    route = event.get("routeKey")
    if route == "GET /boom":
        raise RuntimeError("kaboom-internal-detail")
    if route == "GET /plain":
        return {"hello": "world"}
    if route == "GET /text":
        return "just text"
    if route == "POST /custom":
        return {"statusCode": 201, "headers": {"x-custom": "yes"}, "cookies": ["a=1", "b=2"], "body": "created"}
    if route == "GET /binary":
        return {"statusCode": 200, "isBase64Encoded": True, "body": base64.b64encode(b"\\x00\\xff").decode()}
    if route == "GET /malformed":
        return {"statusCode": 200, "body": {"not": "a string"}}
    if route is None and (event.get("detail") or {}).get("fail"):
        raise ValueError("event failed on purpose")
    return {
        "function": NAME,
        "helper": helper.WHO,
        "event": event,
        "context": {
            "function_name": context.function_name,
            "aws_request_id": context.aws_request_id,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining": context.get_remaining_time_in_millis(),
        },
    }
"""

OTHER_APP = """\
NAME = "other"


def handler(event, context):
    import helper  # imported at invocation time, like functions/lifecycle imports its routes

    return {"function": NAME, "helper": helper.WHO, "event": event}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "template.yaml").write_text(TEMPLATE)
    for name, app in (("echo", ECHO_APP), ("other", OTHER_APP)):
        code = root / "functions" / name
        code.mkdir(parents=True)
        (code / "app.py").write_text(app)
        (code / "helper.py").write_text(f"WHO = {name!r}\n")
    return root


@pytest.fixture(scope="module")
def gateway(project: Path) -> LocalGateway:
    return LocalGateway(project / "template.yaml", jwt_secret=SECRET, repo_root=project)


@pytest.fixture(scope="module")
def base_url(gateway: LocalGateway) -> Iterator[str]:
    url = gateway.start()
    yield url
    gateway.stop()


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=all_headers)
    resp = conn.getresponse()
    reply = Reply(resp.status, resp.getheaders(), resp.read())
    conn.close()
    return reply


def token(sub: str = "user-1", scope: str | None = None, **kwargs: Any) -> str:
    return mint_token(sub, secret=SECRET, scope=scope, **kwargs)


def calls(project: Path) -> int:
    log = project / "functions" / "echo" / "calls.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


# ---- template model


def test_template_model(project: Path) -> None:
    tpl = load_template(project / "template.yaml")
    assert set(tpl.functions) == {"EchoFunction", "OtherFunction"}
    echo = tpl.functions["EchoFunction"]
    assert echo.code_dir == (project / "functions" / "echo").resolve()
    assert (echo.module, echo.function, echo.timeout_seconds, echo.memory_mb) == ("app", "handler", 10, 256)
    assert tpl.functions["OtherFunction"].timeout_seconds == 5
    routes = {r.route_key: r for r in tpl.routes}
    assert routes["GET /users/{userId}"].authorizer == "JwtAuthorizer"
    assert routes["DELETE /users/{userId}"].scopes == ("agentdb/admin",)
    assert routes["GET /health"].public
    assert routes["ANY /files/{proxy+}"].function == "EchoFunction"
    patterns = {r.name: r.pattern for r in tpl.rules}
    assert patterns["EchoFunction.UserEvents"]["source"] == ["test.platform"]
    assert patterns["WorkspaceRule.other"]["source"] == ["test.platform"]
    assert tpl.cors is not None and tpl.cors.allow_origins == ("https://app.example.com",)


def test_route_matching_prefers_literal_segments(project: Path) -> None:
    tpl = load_template(project / "template.yaml")
    found = tpl.find_route("GET", "/users/me")
    assert found is not None and found[0].function == "OtherFunction"
    found = tpl.find_route("GET", "/users/a%20b")
    assert found is not None and found[1] == {"userId": "a b"}
    found = tpl.find_route("PATCH", "/files/a/b/c.txt")
    assert found is not None and found[1] == {"proxy": "a/b/c.txt"}
    assert tpl.find_route("GET", "/files") is None
    assert tpl.find_route("PUT", "/users/x") is None
    assert tpl.find_route("GET", "/users/x/extra") is None


def test_parameter_overrides(project: Path) -> None:
    tpl = load_template(project / "template.yaml", parameter_overrides={"EventSource": "other.source"})
    assert all(r.pattern["source"] == ["other.source"] for r in tpl.rules)


# ---- HTTP: events, authorizer, responses


def test_v2_event_fields(base_url: str) -> None:
    tok = token("user-1", "read write", extra_claims={"groups": ["a", "b"], "admin": False})
    reply = call(
        base_url,
        "GET",
        "/users/alice%40example.com?x=1&x=2&empty=&q=a%20b",
        token=tok,
        headers={"X-Multi": "one", "Cookie": "c1=v1; c2=v2", "User-Agent": "pytest-agent"},
    )
    assert reply.status == 200
    assert reply.header("content-type") == "application/json"  # a plain dict → 200 JSON
    event = reply.json()["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /users/{userId}"
    assert event["rawPath"] == "/users/alice%40example.com"
    assert event["rawQueryString"] == "x=1&x=2&empty=&q=a%20b"
    assert event["queryStringParameters"] == {"x": "1,2", "empty": "", "q": "a b"}
    assert event["pathParameters"] == {"userId": "alice@example.com"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one"
    assert event["headers"]["authorization"] == f"Bearer {tok}"
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "GET /users/{userId}"
    assert ctx["stage"] == "$default"
    assert ctx["http"]["method"] == "GET"
    assert ctx["http"]["path"] == "/users/alice%40example.com"
    assert ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ctx["http"]["userAgent"] == "pytest-agent"
    assert isinstance(ctx["timeEpoch"], int) and ctx["requestId"]
    claims = ctx["authorizer"]["jwt"]["claims"]
    assert claims["sub"] == "user-1"
    assert claims["scope"] == "read write"
    assert isinstance(claims["exp"], str) and claims["exp"].isdigit()
    assert claims["groups"] == "[a b]" and claims["admin"] == "false"
    assert ctx["authorizer"]["jwt"]["scopes"] is None
    assert reply.header("apigw-requestid") == ctx["requestId"]
    lambda_ctx = reply.json()["context"]
    assert lambda_ctx["function_name"] == "EchoFunction"
    assert lambda_ctx["memory_limit_in_mb"] == "256"
    assert lambda_ctx["invoked_function_arn"].endswith(":function:EchoFunction")
    assert 0 < lambda_ctx["remaining"] <= 10_000


def test_no_query_no_query_parameters(base_url: str) -> None:
    event = call(base_url, "GET", "/users/bob", token=token()).json()["event"]
    assert "queryStringParameters" not in event
    assert event["rawQueryString"] == ""


def test_body_text_and_binary(base_url: str) -> None:
    event = call(base_url, "POST", "/echo", token=token(), body='{"a": 1}').json()["event"]
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False
    event = call(base_url, "POST", "/echo", token=token(), body=b"\xff\x00\xfe").json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00\xfe"


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer not-a-jwt",
        "Bearer " + mint_token("u", secret="another-secret-" + "y" * 40),
        "Bearer " + mint_token("u", secret=SECRET, ttl_seconds=-60),
        "Bearer " + jwt.encode({"sub": "u", "iss": "agentdb-local", "aud": "agentdb"}, SECRET, algorithm="HS256"),
        "Bearer "
        + jwt.encode(
            {"sub": "u", "iss": "agentdb-local", "aud": "other", "exp": int(time.time()) + 60},
            SECRET,
            algorithm="HS256",
        ),
        "Bearer "
        + jwt.encode(
            {"sub": "u", "iss": "x", "aud": "agentdb", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
        ),
    ],
    ids=["missing", "garbage", "wrong-secret", "expired", "no-exp", "wrong-audience", "wrong-issuer"],
)
def test_unauthorized_does_not_invoke(base_url: str, project: Path, auth: str | None) -> None:
    before = calls(project)
    reply = call(base_url, "GET", "/users/x", headers={"Authorization": auth} if auth else None)
    assert reply.status == 401
    assert reply.json() == {"message": "Unauthorized"}
    assert calls(project) == before


def test_scope_required(base_url: str, project: Path) -> None:
    before = calls(project)
    reply = call(base_url, "DELETE", "/users/x", token=token(scope="read agentdb/user"))
    assert (reply.status, reply.json()) == (403, {"message": "Forbidden"})
    reply = call(base_url, "DELETE", "/users/x", token=token())
    assert reply.status == 403
    assert calls(project) == before
    reply = call(base_url, "DELETE", "/users/x", token=token("platform", "agentdb/admin"))
    assert reply.status == 200
    assert reply.json()["event"]["requestContext"]["authorizer"]["jwt"]["claims"]["scope"] == "agentdb/admin"


def test_public_route(base_url: str) -> None:
    reply = call(base_url, "GET", "/health")
    assert reply.status == 200
    assert "authorizer" not in reply.json()["event"]["requestContext"]


def test_greedy_path(base_url: str) -> None:
    event = call(base_url, "PUT", "/files/a/b%20c.txt", token=token()).json()["event"]
    assert event["routeKey"] == "ANY /files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b c.txt"}


def test_unknown_route(base_url: str) -> None:
    for method, path in (("GET", "/nope"), ("POST", "/users/x"), ("GET", "/")):
        reply = call(base_url, method, path, token=token())
        assert (reply.status, reply.json()) == (404, {"message": "Not Found"})


def test_handler_exception_is_500_without_details(
    base_url: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reply = call(base_url, "GET", "/boom", token=token())
    assert reply.status == 500
    assert reply.json() == {"message": "Internal Server Error"}
    assert b"kaboom" not in reply.body and b"Traceback" not in reply.body
    err = capsys.readouterr().err
    assert "Traceback" in err and "kaboom-internal-detail" in err
    assert "GET /boom 500" in err


def test_response_shapes(base_url: str) -> None:
    reply = call(base_url, "GET", "/plain", token=token())
    assert (reply.status, reply.json()) == (200, {"hello": "world"})
    reply = call(base_url, "GET", "/text", token=token())
    assert (reply.status, reply.body) == (200, b"just text")
    reply = call(base_url, "POST", "/custom", token=token())
    assert (reply.status, reply.body, reply.header("x-custom")) == (201, b"created", "yes")
    assert [v for k, v in reply.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    reply = call(base_url, "GET", "/binary", token=token())
    assert (reply.status, reply.body) == (200, b"\x00\xff")
    reply = call(base_url, "GET", "/malformed", token=token())
    assert (reply.status, reply.json()) == (500, {"message": "Internal Server Error"})


def test_access_log_has_no_secrets(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    tok = token()
    call(base_url, "GET", "/users/bob?secret=hunter2", token=tok)
    err = capsys.readouterr().err
    assert "GET /users/bob 200" in err
    assert tok not in err and "hunter2" not in err


def test_cors(base_url: str) -> None:
    preflight = call(
        base_url,
        "OPTIONS",
        "/users/x",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204
    assert preflight.header("access-control-allow-origin") == "https://app.example.com"
    assert preflight.header("access-control-max-age") == "600"
    reply = call(base_url, "GET", "/health", headers={"Origin": "https://app.example.com"})
    assert reply.header("access-control-allow-origin") == "https://app.example.com"
    reply = call(base_url, "GET", "/health", headers={"Origin": "https://evil.example"})
    assert reply.header("access-control-allow-origin") is None


# ---- functions: isolation, warm containers


def test_functions_with_same_module_names_do_not_collide(gateway: LocalGateway, base_url: str) -> None:
    echo = call(base_url, "GET", "/users/bob", token=token()).json()
    other = call(base_url, "GET", "/users/me", token=token()).json()
    echo_again = call(base_url, "GET", "/users/bob", token=token()).json()
    other_again = call(base_url, "GET", "/users/me", token=token()).json()
    assert (echo["function"], echo["helper"]) == (echo_again["function"], echo_again["helper"]) == ("echo", "echo")
    assert (
        (other["function"], other["helper"]) == (other_again["function"], other_again["helper"]) == ("other", "other")
    )
    assert "app" not in sys.modules
    modules = {rt.module.__name__ for rt in gateway.functions.values() if rt.module is not None}
    assert len(modules) == 2
    assert {name for rt in gateway.functions.values() for name in rt.siblings} == {"helper"}
    assert all(str(p) != str(gateway.template.functions["EchoFunction"].code_dir) for p in sys.path)


def test_warm_container_loads_once(gateway: LocalGateway, base_url: str) -> None:
    call(base_url, "GET", "/plain", token=token())
    module = gateway.functions["EchoFunction"].module
    call(base_url, "GET", "/plain", token=token())
    assert gateway.functions["EchoFunction"].module is module


def test_handle_without_sockets(gateway: LocalGateway) -> None:
    response = gateway.handle(Request("GET", "/users/zed", headers=[("authorization", f"Bearer {token()}")]))
    assert response.status == 200
    assert response.json_body()["event"]["pathParameters"] == {"userId": "zed"}


# ---- EventBridge and direct invoke


def test_events_dispatch_by_pattern(base_url: str) -> None:
    event = {"source": "test.platform", "detail-type": "user.created", "detail": {"userId": "u1", "plan": "pro"}}
    reply = call(base_url, "POST", "/_local/events", body=json.dumps(event))
    assert reply.status == 200
    matched = reply.json()["matched"]
    assert [m["function"] for m in matched] == ["EchoFunction", "OtherFunction"]
    assert all(m["ok"] for m in matched)
    received = matched[0]["result"]["event"]
    assert received["detail"] == {"userId": "u1", "plan": "pro"}
    assert received["id"] and received["time"] and received["account"] and received["region"]
    assert received["version"] == "0" and received["resources"] == []

    # detail pattern: the free plan does not reach OtherFunction
    event["detail"] = {"userId": "u1", "plan": "free"}
    matched = call(base_url, "POST", "/_local/events", body=json.dumps(event)).json()["matched"]
    assert [m["function"] for m in matched] == ["EchoFunction"]


def test_events_keep_given_id(base_url: str) -> None:
    event = {
        "version": "0",
        "id": "11111111-2222-3333-4444-555555555555",
        "detail-type": "user.deleted",
        "source": "test.platform",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"userId": "u1"},
    }
    matched = call(base_url, "POST", "/_local/events", body=json.dumps(event)).json()["matched"]
    assert len(matched) == 1
    assert matched[0]["result"]["event"] == event


def test_events_no_match(base_url: str) -> None:
    for source, detail_type in (("other.source", "user.created"), ("test.platform", "user.renamed")):
        body = json.dumps({"source": source, "detail-type": detail_type, "detail": {}})
        reply = call(base_url, "POST", "/_local/events", body=body)
        assert (reply.status, reply.json()) == (200, {"matched": []})


def test_events_put_events_entries_and_input_path(base_url: str) -> None:
    body = {
        "Entries": [
            {"Source": "test.platform", "DetailType": "user.deleted", "Detail": json.dumps({"userId": "u9"})},
            {"Source": "test.platform", "DetailType": "workspace.created", "Detail": '{"workspaceId": "w1"}'},
        ]
    }
    reply = call(base_url, "POST", "/_local/events", body=json.dumps(body))
    assert reply.status == 200
    matched = reply.json()["matched"]
    assert [(m["function"], m["rule"]) for m in matched] == [
        ("EchoFunction", "EchoFunction.UserEvents"),
        ("OtherFunction", "WorkspaceRule.other"),
    ]
    assert matched[0]["result"]["event"]["detail"] == {"userId": "u9"}
    assert matched[1]["result"]["event"] == {"workspaceId": "w1"}  # InputPath: $.detail


def test_events_failure_is_502(base_url: str) -> None:
    event = {"source": "test.platform", "detail-type": "user.created", "detail": {"fail": True, "plan": "pro"}}
    reply = call(base_url, "POST", "/_local/events", body=json.dumps(event))
    assert reply.status == 502
    matched = reply.json()["matched"]
    assert matched[0]["ok"] is False
    assert matched[0]["error"] == {"type": "ValueError", "message": "event failed on purpose"}
    assert matched[1]["ok"] is True  # the other target still ran


def test_events_bad_body(base_url: str) -> None:
    for body in ("not json", "[]", '{"source": "x"}', '{"source": "x", "detail-type": "y", "detail": "[1]"}'):
        assert call(base_url, "POST", "/_local/events", body=body).status == 400
    assert call(base_url, "GET", "/_local/events").status == 405


def test_local_invoke(base_url: str) -> None:
    reply = call(base_url, "POST", "/_local/invoke/OtherFunction", body='{"hello": "there"}')
    assert reply.status == 200
    assert reply.json() == {"function": "other", "helper": "other", "event": {"hello": "there"}}
    reply = call(base_url, "POST", "/_local/invoke/NoSuchFunction", body="{}")
    assert reply.status == 404
    reply = call(base_url, "POST", "/_local/invoke/EchoFunction", body='{"detail": {"fail": true}}')
    assert reply.status == 502
    assert reply.json()["error"] == {"type": "ValueError", "message": "event failed on purpose"}


def test_pattern_matching_operators() -> None:
    event = {"source": "s", "detail": {"n": 5, "tags": ["a", "b"], "name": "Alice", "gone": None}}
    assert pattern_matches({"detail": {"tags": ["b"]}}, event)
    assert pattern_matches({"detail": {"n": [{"numeric": [">", 1, "<=", 5]}]}}, event)
    assert not pattern_matches({"detail": {"n": [{"numeric": [">", 5]}]}}, event)
    assert pattern_matches({"detail": {"name": [{"equals-ignore-case": "alice"}]}}, event)
    assert pattern_matches({"detail": {"name": [{"anything-but": ["Bob"]}]}}, event)
    assert pattern_matches({"detail": {"missing": [{"exists": False}]}}, event)
    assert not pattern_matches({"detail": {"missing": [{"exists": True}]}}, event)
    assert pattern_matches({"detail": {"name": [{"wildcard": "A*e"}]}}, event)
    assert pattern_matches({"$or": [{"source": ["x"]}, {"source": ["s"]}]}, event)
    assert not pattern_matches({"detail": {"n": ["5"]}}, event)


# ---- secrets and tokens


def test_secret_files(tmp_path: Path) -> None:
    secret = local_jwt_secret(tmp_path, environ={})
    assert secret == local_jwt_secret(tmp_path, environ={})
    assert stat.S_IMODE((tmp_path / "jwt-secret").stat().st_mode) == 0o600
    assert local_jwt_secret(tmp_path, environ={"LOCAL_JWT_SECRET": "from-env"}) == "from-env"
    key = local_encryption_key(tmp_path, environ={})
    assert len(bytes.fromhex(key)) == 32 and key == local_encryption_key(tmp_path, environ={})
    assert stat.S_IMODE((tmp_path / "encryption-key").stat().st_mode) == 0o600
    (tmp_path / "encryption-key").write_text("nope")
    with pytest.raises(RuntimeError, match="delete it"):
        local_encryption_key(tmp_path, environ={})


def test_token_cli_output_verifies(base_url: str) -> None:
    env = {**os.environ, "LOCAL_JWT_SECRET": SECRET, "PYTHONPATH": f"{REPO_ROOT / 'layers/core'}:{REPO_ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "local.token", "--sub", "platform", "--scope", "agentdb/admin", "--ttl", "120"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        check=True,
    )
    tok = result.stdout.strip()
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="agentdb", issuer="agentdb-local")
    assert claims["sub"] == "platform" and claims["scope"] == "agentdb/admin"
    assert claims["exp"] - claims["iat"] == 120
    assert call(base_url, "DELETE", "/users/x", token=tok).status == 200


def test_token_cli_defaults(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOCAL_JWT_SECRET", SECRET)
    assert token_main(["--sub", "alice"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"], audience="agentdb")
    assert claims["sub"] == "alice" and "scope" not in claims
    assert claims["exp"] - claims["iat"] == 12 * 3600
    with pytest.raises(SystemExit):
        token_main(["--sub", ""])


# ---- the real template


def test_real_template_routes_and_rules() -> None:
    tpl = load_template(REPO_ROOT / "template.yaml")
    assert tpl.functions, "template.yaml defines no functions"
    for fn in tpl.functions.values():
        assert fn.module_file.is_file(), f"{fn.logical_id}: no handler file {fn.module_file}"
    keys = [r.route_key for r in tpl.routes]
    assert len(keys) == len(set(keys)), "duplicate routes"
    admin = {
        "POST /users",
        "DELETE /users/{userId}",
        "PUT /users/{userId}/plan",
        "PUT /users/{userId}/budget",
        "POST /workspaces",
        "DELETE /workspaces/{workspaceId}",
        "PUT /workspaces/{workspaceId}/members/{userId}",
        "DELETE /workspaces/{workspaceId}/members/{userId}",
    }
    routes = {r.route_key: r for r in tpl.routes}
    for key in admin:
        assert key in routes, key
        assert routes[key].scopes == ("agentdb/admin",) and not routes[key].public, key
    source = tpl.parameters["LifecycleEventSource"]
    covered = {
        dt for rule in tpl.rules if rule.pattern.get("source") == [source] for dt in rule.pattern.get("detail-type", [])
    }
    assert covered >= {
        "user.created",
        "user.deleted",
        "user.plan_changed",
        "workspace.created",
        "workspace.deleted",
        "workspace.member_added",
        "workspace.member_removed",
    }


def test_real_template_authorizer_guards_admin_routes() -> None:
    gw = LocalGateway(REPO_ROOT / "template.yaml", jwt_secret=SECRET, repo_root=REPO_ROOT)
    bearer = [("authorization", f"Bearer {token('alice')}")]
    assert gw.handle(Request("POST", "/users", body=b"{}")).status == 401
    assert gw.handle(Request("POST", "/users", headers=bearer, body=b"{}")).status == 403
    assert gw.handle(Request("GET", "/no/such/route", headers=bearer)).status == 404
    assert all(rt.module is None for rt in gw.functions.values())  # nothing was invoked
