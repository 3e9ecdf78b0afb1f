"""The console's static site: which paths are served, with which headers, and the page's own files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from agentdb.api.static_site import SiteConfigError, StaticSite, api_origin_from_env, content_security_policy
from local.template import load_template
from tests.lambda_harness import REPO, FakeLambdaContext, http_event, load_function

STATIC = REPO / "functions" / "console" / "static"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>", encoding="utf-8")
    (tmp_path / "app.js").write_text("export const a = 1;\n", encoding="utf-8")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "dot.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x01binary")
    (tmp_path / ".env").write_text("SECRET=1", encoding="utf-8")
    (tmp_path / "notes.md").write_text("draft", encoding="utf-8")
    return tmp_path


def test_serves_the_index_and_redirects_the_bare_path(root: Path) -> None:
    site = StaticSite(root)
    bare = site.respond(None, trailing_slash=False, if_none_match=None)
    assert bare["statusCode"] == 308 and bare["headers"]["location"] == "console/"
    for asset, slash in ((None, True), ("", False), ("", True)):
        page = site.respond(asset, trailing_slash=slash, if_none_match=None)
        assert page["statusCode"] == 200 and page["body"].startswith("<!doctype html>")
        assert page["headers"]["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    "asset", ["../index.html", "img/../app.js", ".env", "notes.md", "img", "app.js/", "/app.js", "APP.JS", "%2e%2e/x"]
)
def test_only_listed_files_are_served(root: Path, asset: str) -> None:
    response = StaticSite(root).respond(asset, trailing_slash=False, if_none_match=None)
    assert response["statusCode"] == 404 and response["body"] == "Not Found"
    assert response["headers"]["x-content-type-options"] == "nosniff"


def test_listing_is_fixed_at_load(root: Path) -> None:
    site = StaticSite(root)
    assert site.paths == ["app.js", "config.json", "img/dot.png", "index.html"]
    (root / "late.js").write_text("1", encoding="utf-8")
    assert site.respond("late.js", trailing_slash=False, if_none_match=None)["statusCode"] == 404


def test_headers_etag_and_binary(root: Path) -> None:
    site = StaticSite(root)
    js = site.respond("app.js", trailing_slash=False, if_none_match=None)
    headers = js["headers"]
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["referrer-policy"] == "no-referrer" and headers["x-frame-options"] == "DENY"
    assert headers["content-security-policy"] == content_security_policy(None)
    again = site.respond("app.js", trailing_slash=False, if_none_match=f'"other", {headers["etag"]}')
    assert again["statusCode"] == 304 and again["body"] == ""
    assert site.respond("app.js", trailing_slash=False, if_none_match='"other"')["statusCode"] == 200
    png = site.respond("img/dot.png", trailing_slash=False, if_none_match=None)
    assert png["isBase64Encoded"] is True and base64.b64decode(png["body"]).endswith(b"binary")
    assert png["headers"]["content-type"] == "image/png"


def test_content_security_policy() -> None:
    csp = content_security_policy(None)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in csp
    assert "connect-src 'self' https://api.example.com;" in content_security_policy("https://api.example.com")


def test_api_origin_setting(root: Path) -> None:
    assert api_origin_from_env({}) is None
    assert api_origin_from_env({"CONSOLE_API_ORIGIN": " "}) is None
    assert api_origin_from_env({"CONSOLE_API_ORIGIN": "https://api.example.com/"}) == "https://api.example.com"
    assert api_origin_from_env({"CONSOLE_API_ORIGIN": "http://127.0.0.1:3000"}) == "http://127.0.0.1:3000"
    for bad in ("api.example.com", "https://x.com/path", "javascript:alert(1)", "https://a.com; script-src *"):
        with pytest.raises(SiteConfigError, match="CONSOLE_API_ORIGIN"):
            api_origin_from_env({"CONSOLE_API_ORIGIN": bad})
    site = StaticSite(root, api_origin="https://api.example.com")
    config = site.respond("config.json", trailing_slash=False, if_none_match=None)
    assert config["body"] == '{"apiOrigin": "https://api.example.com"}'
    assert "https://api.example.com" in config["headers"]["content-security-policy"]


def test_a_root_without_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match=r"no index\.html"):
        StaticSite(tmp_path)


def test_the_handler_serves_the_console_files() -> None:
    app = load_function("console")
    event = http_event("GET", "/console/console.js", route="/console/{proxy+}", path_params={"proxy": "console.js"})
    response = app.handler(event, FakeLambdaContext())
    assert response["statusCode"] == 200 and response["headers"]["content-type"].startswith("text/javascript")
    assert "export" in response["body"] or "import" in response["body"]
    page = app.handler(http_event("GET", "/console/", route="/console"), FakeLambdaContext())
    assert page["statusCode"] == 200 and "<title>agentdb console</title>" in page["body"]


def test_the_sample_event_is_answered() -> None:
    event = json.loads((REPO / "events" / "console" / "http-get-console-asset.json").read_text(encoding="utf-8"))
    response = load_function("console").handler(event, FakeLambdaContext())
    assert response["statusCode"] == 200 and response["headers"]["content-type"].startswith("text/javascript")


def test_the_console_routes_are_public_and_the_routes_it_calls_are_not() -> None:
    """The page is static, so its two GET routes skip the authorizer; the API routes it calls keep it."""
    template = load_template(REPO / "template.yaml")
    console = {r.route_key: r for r in template.routes if r.function == "ConsoleFunction"}
    assert set(console) == {"GET /console", "GET /console/{proxy+}"}
    assert all(r.public for r in console.values())
    routes = {r.route_key: r for r in template.routes}
    for key in (
        "GET /workspaces/{workspaceId}/database/tables",
        "POST /workspaces/{workspaceId}/database/query",
        "POST /workspaces/{workspaceId}/database/execute",
        "GET /workspaces/{workspaceId}/database/connection",
        "GET /users/{userId}/global-database/tables",
        "POST /users/{userId}/global-database/query",
        "POST /mcp/tools/execute",
        "GET /users/{userId}/db-usage",
    ):
        assert not routes[key].public, key
    assert template.functions["ConsoleFunction"].code_dir == REPO / "functions" / "console"
    found = template.find_route("GET", "/console/deep/path.js")
    assert found is not None and found[1] == {"proxy": "deep/path.js"}


# ---- the page's own files: what the CSP allows, and no way for data to become markup ----------------


def test_every_console_file_has_a_content_type() -> None:
    site = StaticSite(STATIC)
    files = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())
    assert files and set(files) <= set(site.paths), "a file in static/ would not be served"


def test_the_page_needs_nothing_the_csp_forbids() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for url in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert url.startswith("./"), f"{url}: the page loads only its own files, by relative path"


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC.glob("*.js")))
def test_scripts_never_parse_data_as_markup(name: str) -> None:
    source = (STATIC / name).read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, f"{name} uses {sink}"
    assert "localStorage" not in source, f"{name}: the token belongs in sessionStorage only"
    for url in re.findall(r"https?://[^\s\"'`]+", source):
        assert url.startswith("http://www.w3.org/"), f"{name} fetches {url}: the page talks only to our API"
