"""The Neon double itself: it must reject what the spec rejects and answer in the spec's shapes."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.neon_double import IN_REPO_SPEC, SHARED_SPEC, NeonDouble, OpenAPISpec, Scripted, find_spec

KEY = "double-unit-key"


@pytest.fixture
def double() -> Iterator[NeonDouble]:
    d = NeonDouble(KEY)
    d.start()
    yield d
    d.stop()
    assert d.response_violations == []


@pytest.fixture
def http(double: NeonDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=double.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5) as client:
        yield client


def _create(http: httpx.Client, name: str = "p1") -> dict:
    response = http.post("/projects", json={"project": {"name": name, "pg_version": 17}})
    assert response.status_code == 201, response.text
    return response.json()


# Spec discovery -------------------------------------------------------------------------------------
def test_spec_is_found_in_the_repo_and_matches_the_shared_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEON_OPENAPI_SPEC", raising=False)
    assert find_spec() == IN_REPO_SPEC
    if SHARED_SPEC.is_file():
        assert IN_REPO_SPEC.read_bytes() == SHARED_SPEC.read_bytes(), "tests/fixtures copy is stale"


def test_spec_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEON_OPENAPI_SPEC", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="NEON_OPENAPI_SPEC"):
        find_spec()
    monkeypatch.setenv("NEON_OPENAPI_SPEC", str(IN_REPO_SPEC))
    assert find_spec() == IN_REPO_SPEC


# Request validation ---------------------------------------------------------------------------------
def test_bad_or_missing_key_is_401_in_the_error_shape(double: NeonDouble) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {}):
        response = httpx.get(f"{double.base_url}/projects", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert set(body) >= {"code", "message"}
    assert double.violations == []  # a wrong key is not a spec violation
    assert [r.authorized for r in double.requests] == [False, False, False]


def test_unknown_path_and_wrong_method_are_violations(double: NeonDouble, http: httpx.Client) -> None:
    assert http.get("/projectz").status_code == 404
    assert http.put("/projects").status_code == 405
    assert len(double.violations) == 2
    assert "GET /projectz is not in the Neon spec" in double.violations[0]
    assert "wrong method" in double.violations[1]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"project": {"name": "x", "pg_versoin": 17}}, "pg_versoin"),  # misspelt field: strict bodies
        ({"project": {"name": "x", "pg_version": 99}}, "pg_version"),  # through $ref PgVersion (max 18)
        ({"project": {"name": ""}}, "name"),  # minLength 1
        ({"project": {"name": "x" * 257}}, "name"),  # maxLength 256
        ({"project": {"name": "x", "org_id": "Org With Spaces"}}, "org_id"),  # pattern
        ({"project": {"name": "x", "branch": {"database_name": 5}}}, "database_name"),
        ({"name": "x"}, "project"),  # required wrapper
    ],
)
def test_invalid_create_bodies_are_rejected(double: NeonDouble, http: httpx.Client, body: dict, needle: str) -> None:
    response = http.post("/projects", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST"
    assert double.violations and any(needle in v for v in double.violations), double.violations
    assert double.projects == {}


def test_missing_body_and_non_json_body(double: NeonDouble, http: httpx.Client) -> None:
    assert http.post("/projects").status_code == 400
    assert http.post("/projects", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert http.post("/projects", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 400
    assert len(double.violations) == 3


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "401"}, "limit"),
        ({"org_id": "UPPER"}, "org_id"),
        ({"serch": "typo"}, "serch"),
        ({"recoverable": "yes"}, "recoverable"),
    ],
)
def test_invalid_query_parameters(double: NeonDouble, http: httpx.Client, params: dict, needle: str) -> None:
    assert http.get("/projects", params=params).status_code == 400
    assert any(needle in v for v in double.violations), double.violations


def test_required_query_parameters_and_patch_body(double: NeonDouble, http: httpx.Client) -> None:
    created = _create(http)
    pid, ep = created["project"]["id"], created["endpoints"][0]["id"]
    assert http.get(f"/projects/{pid}/connection_uri", params={"role_name": "r"}).status_code == 400
    assert any("database_name" in v for v in double.violations)
    double.violations.clear()
    for op in created["operations"]:
        http.get(f"/projects/{pid}/operations/{op['id']}")
    response = http.patch(f"/projects/{pid}/endpoints/{ep}", json={"endpoint": {"disable": True}})
    assert response.status_code == 400
    assert any("disable" in v for v in double.violations)
    double.violations.clear()
    response = http.patch(f"/projects/{pid}/endpoints/{ep}", json={"endpoint": {"disabled": "yes"}})
    assert response.status_code == 400
    assert double.violations


# Response shapes ------------------------------------------------------------------------------------
def test_full_lifecycle_answers_conform_to_the_spec(double: NeonDouble, http: httpx.Client) -> None:
    created = _create(http)
    assert set(created) == {"project", "connection_uris", "roles", "databases", "operations", "branch", "endpoints"}
    assert [op["status"] for op in created["operations"]] == ["running", "running"]
    pid, ep = created["project"]["id"], created["endpoints"][0]["id"]
    # Endpoints are locked while the create operations run.
    assert http.post(f"/projects/{pid}/endpoints/{ep}/suspend").status_code == 423
    ops = [http.get(f"/projects/{pid}/operations/{op['id']}").json()["operation"] for op in created["operations"]]
    assert {op["status"] for op in ops} == {"finished"}
    assert http.get(f"/projects/{pid}/endpoints").json()["endpoints"][0]["current_state"] == "active"
    calls = [
        http.get("/projects", params={"search": "p1", "limit": 5}),
        http.get(f"/projects/{pid}"),
        http.get(f"/projects/{pid}/operations", params={"limit": 1}),
        http.get(
            f"/projects/{pid}/connection_uri",
            params={"database_name": "neondb", "role_name": "neondb_owner", "pooled": "true"},
        ),
        http.get(f"/projects/{pid}/endpoints/{ep}"),
        http.patch(f"/projects/{pid}/endpoints/{ep}", json={"endpoint": {"disabled": True}}),
    ]
    assert [c.status_code for c in calls] == [200] * len(calls)
    assert "-pooler." in calls[3].json()["uri"]
    for op in calls[-1].json()["operations"]:
        http.get(f"/projects/{pid}/operations/{op['id']}")
    assert http.post(f"/projects/{pid}/endpoints/{ep}/start").status_code == 422  # disabled
    assert http.post(f"/projects/{pid}/endpoints/{ep}/suspend").status_code == 200
    assert http.delete(f"/projects/{pid}").status_code == 200
    assert http.delete(f"/projects/{pid}").status_code == 404
    assert http.get(f"/projects/{pid}").status_code == 404
    assert double.violations == []
    assert double.response_violations == []


def test_response_validation_catches_wrong_shapes(double: NeonDouble, http: httpx.Client) -> None:
    spec = double.spec
    body = _create(http)
    assert spec.validate_response("POST /projects", 201, body) == []
    missing = copy.deepcopy(body)
    del missing["connection_uris"]
    assert any("connection_uris" in p for p in spec.validate_response("POST /projects", 201, missing))
    wrong_type = copy.deepcopy(body)
    wrong_type["project"]["pg_version"] = "17"
    assert spec.validate_response("POST /projects", 201, wrong_type)
    bad_enum = copy.deepcopy(body)
    bad_enum["operations"][0]["status"] = "done"
    assert spec.validate_response("POST /projects", 201, bad_enum)
    bad_time = copy.deepcopy(body)
    bad_time["project"]["created_at"] = "yesterday"
    assert spec.validate_response("POST /projects", 201, bad_time)
    # nullable: effective_project_permission may be null but not a number
    listing = http.get("/projects").json()
    listing["projects"][0]["effective_project_permission"] = None
    assert spec.validate_response("GET /projects", 200, listing) == []
    listing["projects"][0]["effective_project_permission"] = 5
    assert spec.validate_response("GET /projects", 200, listing)
    # errors: the GeneralError shape needs both code and message
    assert spec.validate_response("GET /projects", 503, {"code": "X", "message": "m"}) == []
    assert spec.validate_response("GET /projects", 503, {"message": "m"})


def test_spec_routing_prefers_literal_segments() -> None:
    spec = OpenAPISpec.load()
    op, params, _ = spec.match("GET", "/projects/shared")
    assert op is not None and op.template == "/projects/shared"
    op, params, _ = spec.match("GET", "/projects/a-b-1/endpoints/ep-x")
    assert op is not None and params == {"project_id": "a-b-1", "endpoint_id": "ep-x"}


# Behaviour ------------------------------------------------------------------------------------------
def test_pagination_and_org_filter(double: NeonDouble, http: httpx.Client) -> None:
    names = [f"proj-{i}" for i in range(5)]
    for name in names:
        double.seed_project(name)
    double.seed_project("proj-org", org_id="org-abc")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = http.get("/projects", params=params).json()
        pages += 1
        seen += [p["name"] for p in body["projects"]]
        if len(body["projects"]) < 2:
            break
        cursor = body["pagination"]["cursor"]
    assert seen == names and pages == 3
    org = http.get("/projects", params={"org_id": "org-abc"}).json()["projects"]
    assert [p["name"] for p in org] == ["proj-org"]
    assert [p["name"] for p in http.get("/projects", params={"search": "PROJ-3"}).json()["projects"]] == ["proj-3"]
    assert double.violations == []


def test_operations_finish_after_the_configured_polls(double: NeonDouble, http: httpx.Client) -> None:
    double.operation_polls = 3
    created = _create(http)
    pid, op_id = created["project"]["id"], created["operations"][0]["id"]
    statuses = [http.get(f"/projects/{pid}/operations/{op_id}").json()["operation"]["status"] for _ in range(3)]
    assert statuses == ["running", "running", "finished"]
    double.operation_final_status = "failed"
    other = _create(http, "p2")
    pid2 = other["project"]["id"]
    for _ in range(3):
        op = http.get(f"/projects/{pid2}/operations/{other['operations'][0]['id']}").json()["operation"]
    assert op["status"] == "failed" and op["error"]


def test_scripted_answers_then_normal(double: NeonDouble, http: httpx.Client) -> None:
    double.script(
        "GET /projects", [503, (429, {"Retry-After": "7"}), Scripted(status=500, body={"code": "", "message": "x"})]
    )
    first, second, third, fourth = (http.get("/projects") for _ in range(4))
    assert first.status_code == 503 and first.json()["code"] == "SERVICE_UNAVAILABLE"
    assert second.status_code == 429 and second.headers["Retry-After"] == "7"
    assert third.status_code == 500
    assert fourth.status_code == 200
    assert double.calls("GET /projects") == 4
    with pytest.raises(KeyError):
        double.script("GET /project", [503])


def test_project_limit(double: NeonDouble, http: httpx.Client) -> None:
    double.project_limit = 1
    _create(http)
    response = http.post("/projects", json={"project": {"name": "second"}})
    assert response.status_code == 422
    assert response.json()["code"] == "PROJECTS_LIMIT_EXCEEDED"
    assert len(double.projects) == 1


def test_hang_outlasts_a_client_timeout(double: NeonDouble, http: httpx.Client) -> None:
    double.hang("GET /projects", 1.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.get("/projects", timeout=0.2)
    assert time.monotonic() - started < 0.9
    assert http.get("/projects").status_code == 200  # the double keeps serving meanwhile
