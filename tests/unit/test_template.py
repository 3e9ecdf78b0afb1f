"""template.yaml and events/: the deployment contract (DESIGN 1, 6, 7, 8) checked without AWS.

The template is read as plain YAML (CloudFormation short tags become their long forms), so these tests
need neither sam nor cfn-lint: `make build` runs those.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LIFECYCLE_EVENTS = ROOT / "events" / "lifecycle"
ADMIN_SCOPE = "agentdb/admin"

# DESIGN 6: the admin routes served by the lifecycle function.
LIFECYCLE_ADMIN_ROUTES = {
    ("POST", "/users"),
    ("DELETE", "/users/{userId}"),
    ("PUT", "/users/{userId}/plan"),
    ("PUT", "/users/{userId}/budget"),
    ("POST", "/workspaces"),
    ("DELETE", "/workspaces/{workspaceId}"),
    ("PUT", "/workspaces/{workspaceId}/members/{userId}"),
    ("DELETE", "/workspaces/{workspaceId}/members/{userId}"),
}

# DESIGN 7: detail-type -> (required detail keys, optional detail keys).
LIFECYCLE_DETAIL_TYPES = {
    "user.created": ({"userId"}, {"plan"}),
    "user.deleted": ({"userId"}, set()),
    "user.plan_changed": ({"userId", "plan"}, set()),
    "workspace.created": ({"workspaceId", "ownerUserId"}, {"name"}),
    "workspace.deleted": ({"workspaceId"}, set()),
    "workspace.member_added": ({"workspaceId", "userId", "role"}, set()),
    "workspace.member_removed": ({"workspaceId", "userId"}, set()),
}

GLOBAL_ENV_VARS = {
    "DB_PROVIDER",
    "NEON_API_URL",
    "NEON_ORG_ID",
    "NEON_REGION_ID",
    "TENANT_NAME_PREFIX",
    "KEYRING",
    "KMS_KEY_ID",
    "CONTROL_PLANE_SECRET_ARN",
    "NEON_API_KEY_SECRET_ARN",
    "POSTGRES_ADMIN_SECRET_ARN",
    "BUDGET_FREE_CENTS",
    "BUDGET_PRO_CENTS",
    "BUDGET_TEAM_CENTS",
    "BUDGET_ENTERPRISE_CENTS",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
    "PG_SOCKET_TIMEOUT_SECONDS",
}


# --------------------------------------------------------------------------------------------------
# Loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads ``!Ref x`` as ``{"Ref": "x"}`` and ``!Fn x`` as ``{"Fn::Fn": x}``."""


def _construct_cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


@cache
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CfnLoader)


def resources(rtype: str | None = None) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template()["Resources"].items() if rtype is None or v["Type"] == rtype}


def functions() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::Function")


def events_of(function_id: str, etype: str) -> dict[str, dict[str, Any]]:
    events = functions()[function_id]["Properties"].get("Events") or {}
    return {name: e["Properties"] for name, e in events.items() if e["Type"] == etype}


def http_routes() -> dict[str, tuple[str, dict[str, Any]]]:
    """routeKey ("POST /users") -> (function id, event properties), over every function."""
    routes: dict[str, tuple[str, dict[str, Any]]] = {}
    for fn in functions():
        for props in events_of(fn, "HttpApi").values():
            key = f"{props['Method'].upper()} {props['Path']}"
            assert key not in routes, f"route {key} is declared twice"
            routes[key] = (fn, props)
    return routes


def rules_by_detail_type() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for fn in functions():
        for props in events_of(fn, "EventBridgeRule").values():
            for detail_type in props["Pattern"].get("detail-type", []):
                found.setdefault(detail_type, []).append((fn, props))
    return found


def getatt_target(value: Any) -> tuple[str, str]:
    assert isinstance(value, dict) and "Fn::GetAtt" in value, f"expected !GetAtt, got {value!r}"
    logical_id, attribute = value["Fn::GetAtt"]
    return logical_id, attribute


def assert_is_queue_arn(value: Any) -> str:
    logical_id, attribute = getatt_target(value)
    assert attribute == "Arn"
    assert resources()[logical_id]["Type"] == "AWS::SQS::Queue", f"{logical_id} is not an SQS queue"
    return logical_id


def parameter_default(name: str) -> Any:
    return template()["Parameters"][name].get("Default")


# --------------------------------------------------------------------------------------------------
# Template


def test_template_is_sam() -> None:
    assert template()["Transform"] == "AWS::Serverless-2016-10-31"


def test_globals_runtime_and_architecture_match_the_layer_build() -> None:
    glob = template()["Globals"]["Function"]
    assert glob["Runtime"] == "python3.12"
    assert glob["Layers"] == [{"Ref": "CoreLayer"}]
    assert glob["Tracing"] == "Active"
    layer_makefile = (ROOT / "layers" / "core" / "Makefile").read_text(encoding="utf-8")
    arch = re.search(r"^LAMBDA_ARCH\s*\??=\s*(\S+)", layer_makefile, re.M)
    assert arch, "layers/core/Makefile sets no LAMBDA_ARCH"
    assert glob["Architectures"] == [arch.group(1)]
    layer = resources()["CoreLayer"]["Properties"]
    assert layer.get("CompatibleArchitectures", [arch.group(1)]) == [arch.group(1)]


def test_globals_environment() -> None:
    glob = template()["Globals"]["Function"]
    env = glob["Environment"]["Variables"]
    assert set(env) >= GLOBAL_ENV_VARS, f"missing: {sorted(GLOBAL_ENV_VARS - set(env))}"
    assert env["KEYRING"] == "kms"
    assert env["KMS_KEY_ID"] == {"Fn::GetAtt": ["AppKey", "Arn"]}
    assert resources()["AppKey"]["Type"] == "AWS::KMS::Key"
    assert env["POWERTOOLS_SERVICE_NAME"] == "agentdb"
    assert float(env["PG_SOCKET_TIMEOUT_SECONDS"]) < glob["Timeout"]
    for fn, res in functions().items():
        timeout = res["Properties"].get("Timeout", glob["Timeout"])
        assert float(env["PG_SOCKET_TIMEOUT_SECONDS"]) < timeout, fn


def test_parameter_defaults_match_the_app_defaults() -> None:
    from agentdb.config import Settings

    fields = Settings.model_fields
    assert parameter_default("LifecycleEventSource") == "com.example.agent-platform"
    assert set(template()["Parameters"]["DbProvider"]["AllowedValues"]) == {"postgres", "neon"}
    assert parameter_default("NeonApiUrl") == fields["neon_api_url"].default
    assert parameter_default("NeonRegionId") == fields["neon_region_id"].default
    assert parameter_default("TenantNamePrefix") == fields["tenant_name_prefix"].default
    for plan in ("free", "pro", "team", "enterprise"):
        assert parameter_default(f"Budget{plan.capitalize()}Cents") == fields[f"budget_{plan}_cents"].default


def test_http_api_has_the_jwt_authorizer_as_default() -> None:
    api = resources()["HttpApi"]
    assert api["Type"] == "AWS::Serverless::HttpApi"
    auth = api["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "JwtAuthorizer"
    jwt = auth["Authorizers"]["JwtAuthorizer"]
    assert jwt["IdentitySource"] == "$request.header.Authorization"
    assert jwt["JwtConfiguration"]["issuer"] == {"Ref": "JwtIssuer"}
    assert jwt["JwtConfiguration"]["audience"] == {"Ref": "JwtAudience"}
    access_logs = api["Properties"]["AccessLogSettings"]
    log_group, _ = getatt_target(access_logs["DestinationArn"])
    assert "RetentionInDays" in resources()[log_group]["Properties"]


@pytest.mark.parametrize(("method", "path"), sorted(LIFECYCLE_ADMIN_ROUTES))
def test_admin_route_is_served_by_lifecycle_with_admin_scope(method: str, path: str) -> None:
    routes = http_routes()
    key = f"{method} {path}"
    assert key in routes, f"{key} is missing from template.yaml"
    fn, props = routes[key]
    assert fn == "LifecycleFunction"
    assert props["ApiId"] == {"Ref": "HttpApi"}
    assert props["Auth"] == {"Authorizer": "JwtAuthorizer", "AuthorizationScopes": [ADMIN_SCOPE]}


@pytest.mark.parametrize("detail_type", sorted(LIFECYCLE_DETAIL_TYPES))
def test_one_eventbridge_rule_per_detail_type(detail_type: str) -> None:
    rules = rules_by_detail_type().get(detail_type, [])
    assert len(rules) == 1, f"{detail_type}: expected one rule, found {len(rules)}"
    fn, props = rules[0]
    assert fn == "LifecycleFunction"
    assert props["Pattern"] == {"source": [{"Ref": "LifecycleEventSource"}], "detail-type": [detail_type]}
    retry = props["RetryPolicy"]
    assert retry["MaximumRetryAttempts"] >= 1
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 86400
    assert_is_queue_arn(props["DeadLetterConfig"]["Arn"])


def test_no_rule_for_an_unknown_detail_type() -> None:
    assert set(rules_by_detail_type()) == set(LIFECYCLE_DETAIL_TYPES)


def test_eventbridge_may_send_to_the_event_dlq() -> None:
    dlqs = {
        assert_is_queue_arn(props["DeadLetterConfig"]["Arn"])
        for rules in rules_by_detail_type().values()
        for _, props in rules
    }
    policies = resources("AWS::SQS::QueuePolicy").values()
    for dlq in dlqs:
        statements = [
            stmt
            for policy in policies
            if {"Ref": dlq} in policy["Properties"]["Queues"]
            for stmt in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        assert any(
            stmt["Effect"] == "Allow"
            and stmt["Principal"] == {"Service": "events.amazonaws.com"}
            and "sqs:SendMessage" in ([stmt["Action"]] if isinstance(stmt["Action"], str) else stmt["Action"])
            for stmt in statements
        ), f"no queue policy lets EventBridge send to {dlq}"


def test_failed_invocations_go_to_an_sqs_dlq() -> None:
    config = functions()["LifecycleFunction"]["Properties"]["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert_is_queue_arn(on_failure["Destination"])


def test_every_dlq_has_retention_and_a_depth_alarm() -> None:
    alarms = resources("AWS::CloudWatch::Alarm").values()
    for queue_id, queue in resources("AWS::SQS::Queue").items():
        assert queue["Properties"]["MessageRetentionPeriod"] >= 4 * 86400, queue_id
        assert any(
            a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
            and a["Properties"]["Namespace"] == "AWS/SQS"
            and a["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
            and a["Properties"]["Threshold"] == 0
            and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}} in a["Properties"]["Dimensions"]
            for a in alarms
        ), f"no depth alarm on {queue_id}"


@pytest.mark.parametrize("function_id", sorted(functions()))
def test_every_function_has_a_log_group_with_retention(function_id: str) -> None:
    props = functions()[function_id]["Properties"]
    log_groups = resources("AWS::Logs::LogGroup")
    configured = (props.get("LoggingConfig") or {}).get("LogGroup")
    if configured is not None:  # LoggingConfig: {LogGroup: !Ref <LogGroup>}
        group = log_groups[configured["Ref"]]
    else:  # or the default group, /aws/lambda/<function name>
        named = [
            g
            for g in log_groups.values()
            if g["Properties"].get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function_id}}}"}
        ]
        assert named, f"{function_id} has no log group"
        group = named[0]
    assert "RetentionInDays" in group["Properties"]


def test_core_layer_is_built_by_its_makefile() -> None:
    layer = resources()["CoreLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "layers/core"
    assert "python3.12" in layer["Properties"]["CompatibleRuntimes"]
    makefile = (ROOT / "layers" / "core" / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^build-CoreLayer:", makefile, re.M)


def test_kms_key_rotates() -> None:
    key = resources()["AppKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_outputs() -> None:
    outputs = template()["Outputs"]
    for name in (
        "ApiUrl",
        "KmsKeyArn",
        "ControlPlaneSecretArn",
        "NeonApiKeySecretArn",
        "PostgresAdminSecretArn",
        "LifecycleEventDLQUrl",
        "LifecycleInvokeDLQUrl",
        "LifecycleEventSource",
    ):
        assert name in outputs, name


# --------------------------------------------------------------------------------------------------
# Sample events


SAMPLES = sorted(LIFECYCLE_EVENTS.glob("*.json"))


def load_sample(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def is_http_sample(event: dict[str, Any]) -> bool:
    return event.get("version") == "2.0" and "routeKey" in event


def test_samples_exist() -> None:
    assert SAMPLES, "events/lifecycle/ has no samples"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_matches_the_template(path: Path) -> None:
    event = load_sample(path)
    if is_http_sample(event):
        _check_http_sample(event)
    else:
        _check_eventbridge_sample(event)


def _check_http_sample(event: dict[str, Any]) -> None:
    route_key = event["routeKey"]
    assert route_key in http_routes(), f"{route_key} is not a route of template.yaml"
    ctx = event["requestContext"]
    assert ctx["routeKey"] == route_key
    assert ctx["stage"] == "$default"
    method, path = route_key.split(" ", 1)
    assert ctx["http"]["method"] == method
    assert ctx["http"]["path"] == event["rawPath"]
    assert event["rawQueryString"] == ""
    assert all(h == h.lower() for h in event["headers"])
    # rawPath fits the route and pathParameters are what API Gateway would extract.
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
    match = re.match(pattern, event["rawPath"])
    assert match, f"{event['rawPath']} does not fit {path}"
    assert event.get("pathParameters", {}) == match.groupdict()
    claims = ctx["authorizer"]["jwt"]["claims"]
    assert claims["sub"]
    _, props = http_routes()[route_key]
    assert set(props["Auth"]["AuthorizationScopes"]) <= set(claims["scope"].split())
    assert event["isBase64Encoded"] is False
    if "body" in event:
        assert isinstance(json.loads(event["body"]), dict)


def _check_eventbridge_sample(event: dict[str, Any]) -> None:
    for key in ("version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"):
        assert key in event, key
    assert event["version"] == "0"
    assert event["source"] == parameter_default("LifecycleEventSource")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    detail_type = event["detail-type"]
    assert detail_type in rules_by_detail_type(), f"no rule for {detail_type}"
    required, optional = LIFECYCLE_DETAIL_TYPES[detail_type]
    keys = set(event["detail"])
    assert required <= keys, f"{detail_type}: missing {sorted(required - keys)}"
    assert keys <= required | optional, f"{detail_type}: unexpected {sorted(keys - required - optional)}"


def test_every_lifecycle_route_and_rule_has_a_sample() -> None:
    events = [load_sample(p) for p in SAMPLES]
    sampled_routes = {e["routeKey"] for e in events if is_http_sample(e)}
    sampled_types = {e["detail-type"] for e in events if not is_http_sample(e)}
    lifecycle_routes = {k for k, (fn, _) in http_routes().items() if fn == "LifecycleFunction"}
    assert lifecycle_routes <= sampled_routes, sorted(lifecycle_routes - sampled_routes)
    assert set(LIFECYCLE_DETAIL_TYPES) <= sampled_types, sorted(set(LIFECYCLE_DETAIL_TYPES) - sampled_types)
    ids = [e["id"] for e in events if not is_http_sample(e)]
    assert len(ids) == len(set(ids)), "EventBridge samples share an id"
