"""template.yaml: the cost-and-budget resources (usage functions, schedules, fan-out queue, DLQs, IAM) and
the events/usage samples, checked without AWS (`make build` runs sam validate --lint)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.test_template import (
    ROOT,
    assert_is_queue_arn,
    events_of,
    functions,
    getatt_target,
    http_routes,
    parameter_default,
    resources,
    template,
)

USAGE_EVENTS = ROOT / "events" / "usage"


def schedules() -> dict[str, dict[str, Any]]:
    return resources("AWS::Scheduler::Schedule")


def statements(policies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for policy in policies:
        document = policy.get("PolicyDocument", policy)
        found += document.get("Statement", [])
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_usage_function_runs_long_and_consumes_the_queue() -> None:
    fn = functions()["UsageFunction"]["Properties"]
    assert fn["CodeUri"] == "functions/usage/" and fn["Handler"] == "app.handler"
    assert fn["Timeout"] == 900
    sqs = events_of("UsageFunction", "SQS")
    assert len(sqs) == 1
    (event,) = sqs.values()
    assert getatt_target(event["Queue"]) == ("UsageQueue", "Arn")
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= event["BatchSize"] <= 10
    assert event["ScalingConfig"]["MaximumConcurrency"] >= 2
    env = fn["Environment"]["Variables"]
    assert env["USAGE_QUEUE_URL"] == {"Ref": "UsageQueue"}
    assert env["NEON_CONSUMPTION_REQUESTS_PER_MINUTE"] == {"Ref": "NeonConsumptionRequestsPerMinute"}
    on_failure = fn["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS" and assert_is_queue_arn(on_failure["Destination"]) == "UsageInvokeDLQ"
    assert not events_of("UsageFunction", "HttpApi"), "the 900 s function must not serve HTTP"


def test_the_fan_out_queue_outlives_its_consumer_and_dead_letters() -> None:
    queue = resources()["UsageQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= functions()["UsageFunction"]["Properties"]["Timeout"]
    redrive = queue["RedrivePolicy"]
    assert getatt_target(redrive["deadLetterTargetArn"]) == ("UsageQueueDLQ", "Arn")
    assert 1 <= redrive["maxReceiveCount"] <= 10


def test_usage_route_is_a_user_route_on_a_short_function() -> None:
    fn, props = http_routes()["GET /users/{userId}/db-usage"]
    assert fn == "UsageApiFunction"
    assert props["ApiId"] == {"Ref": "HttpApi"}
    assert "Auth" not in props  # the default JWT authorizer, no scope: the handler checks self or admin
    api_fn = functions()["UsageApiFunction"]["Properties"]
    assert api_fn["CodeUri"] == functions()["UsageFunction"]["Properties"]["CodeUri"]
    assert api_fn.get("Timeout", template()["Globals"]["Function"]["Timeout"]) <= 30


@pytest.mark.parametrize(
    ("schedule_id", "expression", "action"),
    [
        ("UsageSyncSchedule", "rate(15 minutes)", "sync"),
        ("UsagePeriodResetSchedule", "cron(0 0 1 * ? *)", "reset"),
    ],
)
def test_schedules(schedule_id: str, expression: str, action: str) -> None:
    props = schedules()[schedule_id]["Properties"]
    assert props["ScheduleExpression"] == expression
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert props.get("State", "ENABLED") == "ENABLED"
    target = props["Target"]
    assert getatt_target(target["Arn"]) == ("UsageFunction", "Arn")
    assert getatt_target(target["RoleArn"]) == ("UsageSchedulerRole", "Arn")
    assert json.loads(target["Input"]) == {"action": action}
    retry = target["RetryPolicy"]
    assert retry["MaximumRetryAttempts"] >= 1 and 60 <= retry["MaximumEventAgeInSeconds"] <= 86400
    assert assert_is_queue_arn(target["DeadLetterConfig"]["Arn"]) == "UsageScheduleDLQ"


def test_the_scheduler_role_may_invoke_and_dead_letter() -> None:
    role = resources()["UsageSchedulerRole"]
    assert role["Type"] == "AWS::IAM::Role"
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert any(s["Principal"] == {"Service": "scheduler.amazonaws.com"} for s in trust)
    allowed = statements(role["Properties"]["Policies"])
    invoke = [s for s in allowed if "lambda:InvokeFunction" in actions(s)]
    assert invoke and {"Fn::GetAtt": ["UsageFunction", "Arn"]} in invoke[0]["Resource"]
    send = [s for s in allowed if "sqs:SendMessage" in actions(s)]
    assert send and send[0]["Resource"] == {"Fn::GetAtt": ["UsageScheduleDLQ", "Arn"]}


@pytest.mark.parametrize("function_id", ["UsageFunction", "UsageApiFunction", "LifecycleFunction"])
def test_functions_that_queue_usage_work_may_send_to_the_queue(function_id: str) -> None:
    props = functions()[function_id]["Properties"]
    assert props["Environment"]["Variables"]["USAGE_QUEUE_URL"] == {"Ref": "UsageQueue"}
    allowed = statements(props["Policies"])
    assert any(
        "sqs:SendMessage" in actions(s) and s["Resource"] == {"Fn::GetAtt": ["UsageQueue", "Arn"]} for s in allowed
    )


def test_pricing_and_rate_parameters_match_the_app_defaults() -> None:
    from agentdb.config import Settings

    fields = Settings.model_fields
    assert (
        parameter_default("NeonConsumptionRequestsPerMinute") == fields["neon_consumption_requests_per_minute"].default
    )
    assert parameter_default("ComputePricePerCuHour") == fields["neon_compute_price_per_cu_hour"].default
    assert parameter_default("StoragePricePerGbMonth") == fields["neon_storage_price_per_gb_month"].default


# Samples ------------------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    data = json.loads((USAGE_EVENTS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_http_sample_matches_the_route() -> None:
    event = load("http-get-db-usage.json")
    route_key = event["routeKey"]
    assert route_key == "GET /users/{userId}/db-usage" and route_key in http_routes()
    assert event["requestContext"]["routeKey"] == route_key
    _, path = route_key.split(" ", 1)
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
    match = re.match(pattern, event["rawPath"])
    assert match and event["pathParameters"] == match.groupdict()
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == event["pathParameters"]["userId"]


def test_scheduled_samples_are_what_the_schedules_send() -> None:
    inputs = {json.loads(s["Properties"]["Target"]["Input"])["action"]: s for s in schedules().values()}
    assert load("scheduled-sync.json") == {"action": "sync"} and "sync" in inputs
    assert load("scheduled-reset.json") == {"action": "reset"} and "reset" in inputs
    manual = load("manual-reset.json")
    assert manual["action"] == "reset" and all(isinstance(u, str) for u in manual["userIds"])


def test_sqs_sample_holds_usage_work_messages() -> None:
    records = load("sqs-sync-batch.json")["Records"]
    assert records and all(r["eventSource"] == "aws:sqs" for r in records)
    bodies = [json.loads(r["body"]) for r in records]
    assert {b["kind"] for b in bodies} == {"sync", "enforce"}
    assert all(len(b["projectIds"]) <= 100 for b in bodies if b["kind"] == "sync")
