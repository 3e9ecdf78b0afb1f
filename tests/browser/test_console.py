"""The console in a real browser (Debian's chromium via Playwright) on the local gateway over real Postgres.

Seeding goes through the public API (admin routes, the SQL tools); everything after sign-in is done as
a person would: typing, clicking, keyboard shortcuts, and reading what the page shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from local.token import mint_token
from tests.browser.conftest import NARROW
from tests.e2e.conftest import Stack

DASH = "\u2013"  # the page writes row ranges with an en dash
HTML_PAYLOAD = '<img src=x onerror="window.__pwned = 1">'


def tool(stack: Stack, sql: str, *, user: str = "alice", server: str = "system:postgres-agent") -> dict[str, Any]:
    body = {"serverId": server, "toolName": "run_sql", "arguments": {"sql": sql}, "workspaceId": "ws-1"}
    response = stack.client.post("/mcp/tools/execute", json=body, headers=stack.user(user))
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert result["isError"] is False, result
    return dict(result["structuredContent"])


def seed(stack: Stack) -> None:
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "alice", "plan": "pro"}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-1", "ownerUserId": "alice", "name": "Research agent"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201
    tool(stack, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, meta jsonb, created_at timestamptz)")
    tool(
        stack,
        "INSERT INTO notes (body, meta) SELECT CASE WHEN g = 1 THEN $$" + HTML_PAYLOAD + "$$ ELSE 'note ' || g END,"
        " CASE WHEN g % 2 = 0 THEN jsonb_build_object('n', g) END FROM generate_series(1, 120) g",
    )
    tool(stack, "CREATE INDEX notes_body_idx ON notes (body)")


def open_console(page: Page, stack: Stack, token: str) -> None:
    page.goto(f"{stack.url}/console")
    expect(page).to_have_url(f"{stack.url}/console/")  # /console redirects so relative asset paths resolve
    page.get_by_label("Bearer token (JWT)").fill(token)
    page.get_by_role("button", name="Sign in").click()


def open_workspace(page: Page, workspace: str = "ws-1") -> None:
    page.get_by_label("Workspace id").fill(workspace)
    page.get_by_role("button", name="Open", exact=True).click()


def alert(page: Page) -> Any:
    return page.locator("#alert")


# --------------------------------------------------------------------------------------------------


def test_sign_in_list_tables_page_rows_details_and_export(page: Page, stack: Stack, shot: Any) -> None:
    seed(stack)
    open_console(page, stack, stack.token("alice"))
    expect(page.locator("#who-sub")).to_have_text("alice")
    open_workspace(page)
    expect(page.locator("#db-title")).to_have_text("Workspace ws-1: agent database")
    row = page.locator("#tables tbody tr[data-table=notes]")
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).not_to_be_empty()

    # Rows, paged by the explorer's cursor: 50 + 50 + 20.
    page.get_by_role("button", name="Rows of notes").click()
    info = page.locator("#rows-info")
    expect(info).to_have_text(f"Rows 1{DASH}50")
    grid = page.locator("#rows-grid table")
    expect(grid.locator("tbody tr")).to_have_count(50)
    expect(grid.locator("thead th").first).to_contain_text("id")
    expect(grid.locator("thead th").first).to_contain_text("integer")
    # A stored value is text, never markup: the payload is shown literally and no <img> exists.
    expect(grid.locator("tbody tr").first).to_contain_text(HTML_PAYLOAD)
    assert page.locator("#rows-grid img").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(grid.locator("td.null").first).to_have_text("NULL")
    # The header stays in view while the rows scroll under it.
    assert grid.locator("thead th").first.evaluate("th => getComputedStyle(th).position") == "sticky"
    expect(page.get_by_role("button", name="Previous page")).to_be_disabled()
    shot(page, "tables")

    page.get_by_role("button", name="Next page").click()
    expect(info).to_have_text(f"Rows 51{DASH}100")
    expect(grid.locator("tbody tr").first.locator("td").first).to_have_text("51")
    page.get_by_role("button", name="Next page").click()
    expect(info).to_have_text(f"Rows 101{DASH}120")
    expect(grid.locator("tbody tr")).to_have_count(20)
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(info).to_have_text(f"Rows 51{DASH}100")

    # Columns and indexes (describe_table_schema through the tools route).
    details = page.get_by_role("button", name="Columns and indexes of notes")
    details.click()
    expect(details).to_have_attribute("aria-expanded", "true")
    detail = page.locator("#tables tr.details")
    expect(detail).to_contain_text("notes_body_idx")
    expect(detail).to_contain_text("primary key")
    expect(detail.locator("tbody tr")).to_have_count(4 + 2)  # four columns, two indexes
    shot(page, "details")
    details.click()
    expect(page.locator("#tables tr.details")).to_have_count(0)

    # Exports: CSV and JSON files with every row (120 < the export's 1000).
    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Export CSV").click()
    assert csv_download.value.suggested_filename == "notes.csv"
    csv_text = Path(csv_download.value.path()).read_text(encoding="utf-8")
    lines = csv_text.strip().splitlines()
    assert lines[0].split(",")[:2] == ["id", "body"] and len(lines) == 121
    with page.expect_download() as json_download:
        page.get_by_role("button", name="Export JSON").click()
    assert json_download.value.suggested_filename == "notes.json"
    exported = json.loads(Path(json_download.value.path()).read_text(encoding="utf-8"))
    assert len(exported) == 120 and exported[1] == {**exported[1], "id": 2, "body": "note 2", "meta": {"n": 2}}
    expect(page.locator("#rows-notice")).to_be_hidden()

    # Narrow window: still usable (no horizontal page scroll; the grid scrolls inside its box).
    page.set_viewport_size(NARROW)
    page.get_by_role("button", name="Previous page").click()
    expect(info).to_have_text(f"Rows 1{DASH}50")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "narrow", full_page=False)


def test_sql_editor_results_truncation_and_errors(page: Page, stack: Stack, shot: Any) -> None:
    seed(stack)
    open_console(page, stack, stack.token("alice"))
    open_workspace(page)
    expect(page.locator("#tables tbody tr[data-table=notes]")).to_be_visible()
    page.get_by_role("tab", name="SQL").click()
    editor = page.get_by_label("SQL: one statement")
    expect(editor).to_be_focused()
    editor.fill("SELECT id, body FROM notes WHERE id <= 3 ORDER BY id")
    editor.press("Control+Enter")
    result = page.locator("#sql-result table")
    expect(result.locator("tbody tr")).to_have_count(3)
    expect(page.locator("#sql-status")).to_contain_text("3 rows")
    expect(page.locator("#sql-notice")).to_be_hidden()

    # Over the row cap: the truncated notice.
    editor.fill("SELECT g FROM generate_series(1, 5000) AS g")
    editor.press("Control+Enter")
    expect(page.locator("#sql-notice")).to_be_visible()
    expect(page.locator("#sql-notice")).to_contain_text("Truncated")
    assert result.locator("tbody tr").count() < 5000

    # A write, then a SQL error with its SQLSTATE in an alert region.
    editor.fill("UPDATE notes SET body = 'edited' WHERE id = 2")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#sql-status")).to_contain_text("1 row")
    editor.fill("SELECT id, body FROM notes ORDER BY id LIMIT 5")
    editor.press("Control+Enter")
    expect(result.locator("tbody tr").nth(1)).to_contain_text("edited")
    shot(page, "sql")

    # A table made in the editor is in the list when going back to Tables.
    editor.fill("CREATE TABLE tags (name text PRIMARY KEY)")
    editor.press("Control+Enter")
    expect(page.locator("#sql-result")).to_contain_text("no rows")
    page.get_by_role("tab", name="Tables").click()
    expect(page.locator("#tables tbody tr[data-table=tags]")).to_be_visible()
    page.get_by_role("tab", name="SQL").click()

    editor.fill("SELECT * FROM no_such_table")
    editor.press("Control+Enter")
    error = page.locator("#sql-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_contain_text("42P01")
    expect(error).to_contain_text("no_such_table")
    expect(page.locator("#sql-result")).to_be_empty()
    shot(page, "sql-error")


def test_create_table_form_quotes_identifiers(page: Page, stack: Stack) -> None:
    seed(stack)
    open_console(page, stack, stack.token("alice"))
    open_workspace(page)
    expect(page.locator("#tables tbody tr[data-table=notes]")).to_be_visible()
    page.get_by_role("tab", name="New table").click()
    name = 'odd "name"; DROP TABLE notes; --'
    page.get_by_label("Table name").fill(name)
    page.get_by_role("button", name="Add column").click()
    page.get_by_label("Name of column 3").fill("Price €")
    page.get_by_label("Type of column 3").select_option("numeric")
    page.get_by_label("Column 3 is nullable").uncheck()
    preview = page.locator("#create-preview")
    expect(preview).to_contain_text('CREATE TABLE "public"."odd ""name""; DROP TABLE notes; --" (')
    expect(preview).to_contain_text('"Price €" numeric NOT NULL')
    expect(preview).to_contain_text('PRIMARY KEY ("id")')
    page.get_by_role("button", name="Create table").click()
    expect(page.locator("#create-status")).to_contain_text("Created")
    listed = tool(stack, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert sorted(r[0] for r in listed["rows"]) == sorted(["notes", name])  # notes is still there
    columns = tool(stack, "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'notes'")
    assert len(columns["rows"]) == 4
    page.get_by_role("tab", name="Tables").click()
    expect(page.locator("#tables tbody tr").filter(has_text="DROP TABLE")).to_have_count(1)

    # Two columns with one name: the form says so and nothing is sent.
    page.get_by_role("tab", name="New table").click()
    page.get_by_label("Name of column 3").fill("id")
    expect(preview).to_contain_text('two columns are named "id"')
    page.get_by_role("button", name="Create table").click()
    expect(alert(page)).to_contain_text('two columns are named "id"')


def test_connection_facts_are_masked(page: Page, stack: Stack, shot: Any) -> None:
    seed(stack)
    open_console(page, stack, stack.token("alice"))
    open_workspace(page)
    page.get_by_role("tab", name="Connection").click()
    facts = page.locator("#connection")
    expect(facts).to_be_visible()
    expect(facts).to_contain_text("postgres")
    password = facts.locator("dt", has_text="Password").locator("xpath=following-sibling::dd[1]")
    expect(password).to_contain_text("••••••••")
    assert password.locator("button").count() == 0  # no copy button for a secret
    assert facts.get_by_role("button", name="Copy the host").count() == 1
    shot(page, "connection")


def test_usage_chart_and_the_budget_banner(
    page: Page, stack: Stack, shot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seconds of storage cost fractions of a cent at the real price: raise it so the bars have length.
    monkeypatch.setenv("NEON_STORAGE_PRICE_PER_GB_MONTH", "2000000")
    seed(stack)
    tool(stack, "CREATE TABLE blobs AS SELECT repeat('x', 1000) || g AS v FROM generate_series(1, 20000) AS g")
    assert stack.client.post("/_local/invoke/UsageFunction", json={"action": "sync"}).status_code == 200
    usage = stack.client.get("/users/alice/db-usage", headers=stack.user("alice")).json()["data"]
    agent_cents, global_cents = usage["agentDbs"][0]["costCents"], usage["globalDb"]["costCents"]
    assert agent_cents > global_cents > 0  # the agent database holds 20 MB more
    budget = {"customBudgetCents": usage["totalCents"] * 5 // 2}  # spend at 40% of the budget
    assert stack.client.put("/users/alice/budget", json=budget, headers=stack.admin()).status_code == 200

    open_console(page, stack, stack.token("alice"))
    open_workspace(page)
    page.get_by_role("tab", name="Usage").click()
    bars = page.locator("#usage-bars svg g.bar")
    expect(bars).to_have_count(2)
    assert bars.nth(0).get_attribute("data-label") == "Global database"
    assert bars.nth(1).get_attribute("data-label") == "Research agent (ws-1)"
    assert [int(bars.nth(i).get_attribute("data-value") or -1) for i in (0, 1)] == [global_cents, agent_cents]
    widths = [float(bars.nth(i).locator("rect").get_attribute("width") or 0) for i in (0, 1)]
    assert widths[1] == 300 and widths[0] == pytest.approx(300 * global_cents / agent_cents, abs=2.1)
    gauge = page.locator("#usage-gauge svg")
    spent = re.compile(r"^Spent \$[\d,]+\.\d\d of a \$[\d,]+\.\d\d budget \(40%\)$")
    expect(gauge).to_have_attribute("aria-label", spent)
    expect(gauge).to_have_class(re.compile(r"\bok\b"))
    expect(page.locator("#usage-summary")).to_contain_text("(custom budget)")
    expect(page.locator("#usage-table tbody tr")).to_have_count(2)
    expect(page.locator("#budget-banner")).to_be_hidden()
    shot(page, "usage")

    # Over budget (a custom budget of 0): the usage says so, and every database call answers 402.
    response = stack.client.put("/users/alice/budget", json={"customBudgetCents": 0}, headers=stack.admin())
    assert response.status_code == 200 and response.json()["data"]["budget"]["exceeded"] is True
    page.get_by_role("button", name="Refresh").last.click()
    banner = page.locator("#budget-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Budget exceeded")
    expect(gauge).to_have_class(re.compile(r"\bover\b"))
    expect(page.locator("#usage-table")).to_contain_text("paused")
    page.get_by_role("tab", name="SQL").click()
    page.get_by_label("SQL: one statement").fill("SELECT 1")
    page.get_by_label("SQL: one statement").press("Control+Enter")
    expect(alert(page)).to_contain_text("402 budget_exceeded")
    expect(banner).to_contain_text("budget is exceeded")
    shot(page, "budget")


def test_bad_token_is_refused_with_a_visible_401(page: Page, stack: Stack, shot: Any) -> None:
    seed(stack)
    forged = mint_token("alice", secret="not-the-secret-of-this-local-gateway")
    open_console(page, stack, forged)
    expect(alert(page)).to_be_visible()
    expect(alert(page)).to_contain_text("401")
    expect(alert(page)).to_contain_text("Sign in again")
    shot(page, "unauthorized")
    expect(page.get_by_label("Bearer token (JWT)")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('agentdb.console.token')") is None

    # Not a JWT at all: said at once, nothing sent.
    page.get_by_label("Bearer token (JWT)").fill("hello")
    page.get_by_role("button", name="Sign in").click()
    expect(alert(page)).to_contain_text("not a JWT")


def test_errors_of_the_explorer_are_shown(page: Page, stack: Stack, shot: Any) -> None:
    seed(stack)
    open_console(page, stack, stack.token("mallory"))
    open_workspace(page)  # mallory is no member of ws-1
    expect(alert(page)).to_contain_text("404")
    expect(page.locator("#tables")).to_be_hidden()
    shot(page, "not-found")
    # Another user's global database via the API is 403; the console only ever asks for the caller's own.
    response = stack.client.get("/users/alice/global-database/tables", headers=stack.user("mallory"))
    assert response.status_code == 403

    # A read-only member sees the rows, and a write is refused with the reason, in the page.
    response = stack.client.put("/workspaces/ws-1/members/bob", json={"role": "read"}, headers=stack.admin())
    assert response.status_code in (200, 201), response.text
    page.get_by_role("button", name="Sign out").click()
    expect(alert(page)).to_be_hidden()
    open_console(page, stack, stack.token("bob"))
    open_workspace(page)
    page.get_by_role("button", name="Rows of notes").click()
    expect(page.locator("#rows-info")).to_have_text(f"Rows 1{DASH}50")
    page.get_by_role("tab", name="SQL").click()
    page.get_by_label("SQL: one statement").fill("DELETE FROM notes")
    page.get_by_label("SQL: one statement").press("Control+Enter")
    expect(page.locator("#sql-error")).to_contain_text("Refused:")
    assert tool(stack, "SELECT count(*) FROM notes")["rows"] == [[120]]


def test_global_database_keyboard_only(page: Page, stack: Stack) -> None:
    seed(stack)
    tool(stack, "CREATE TABLE prefs (key text PRIMARY KEY, value text)", server="system:postgres-global")
    tool(stack, "INSERT INTO prefs VALUES ('theme', 'dark')", server="system:postgres-global")
    page.goto(f"{stack.url}/console/")
    token = page.get_by_label("Bearer token (JWT)")
    expect(token).to_be_focused()
    token.fill(stack.token("alice"))
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the Sign in button
    workspace = page.get_by_label("Workspace id")
    expect(workspace).to_be_focused()
    page.keyboard.type("ws-1")
    page.keyboard.press("Shift+Tab")  # back to the radio group
    page.keyboard.press("ArrowRight")  # Global database
    expect(page.get_by_role("radio", name="Global database")).to_be_checked()
    page.keyboard.press("Tab")
    expect(workspace).to_be_focused()
    page.keyboard.press("Enter")  # submits the picker
    expect(page.locator("#db-title")).to_have_text("Global database of alice")
    expect(page.locator("#tables tbody tr[data-table=prefs]")).to_be_visible()
    assert page.locator("#tables tbody tr[data-table=notes]").count() == 0  # notes is in the agent database

    # Tabs follow the arrow keys; the SQL tab focuses the editor, Ctrl+Enter runs on the global database.
    page.get_by_role("tab", name="Tables").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="SQL")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-sql")).to_be_visible()
    expect(page.get_by_role("tab", name="SQL")).to_be_focused()  # the arrow keys keep focus on the tabs
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Usage")).to_be_focused()
    page.keyboard.press("ArrowRight")  # wraps around
    expect(page.get_by_role("tab", name="Tables")).to_have_attribute("aria-selected", "true")
    page.get_by_role("tab", name="SQL").click()
    editor = page.get_by_label("SQL: one statement")
    editor.fill("SELECT value FROM prefs WHERE key = 'theme'")
    editor.press("Control+Enter")
    expect(page.locator("#sql-result td").first).to_have_text("dark")

    # Reload: the token and the picked database are remembered for this tab (sessionStorage only).
    page.reload()
    expect(page.locator("#db-title")).to_have_text("Global database of alice")
    assert page.evaluate("localStorage.length") == 0
    # Two opens overlapping (a double click): the list is drawn once, not twice.
    page.get_by_role("button", name="Open", exact=True).dblclick()
    expect(page.locator("#tables tbody tr[data-table=prefs]")).to_have_count(1)
    page.wait_for_load_state("networkidle")
    expect(page.locator("#tables tbody tr")).to_have_count(1)


@pytest.mark.parametrize("path", ["/console/../template.yaml", "/console/.hidden", "/console/nope.js"])
def test_only_the_console_files_are_served(stack: Stack, path: str) -> None:
    response = stack.client.get(path)
    assert response.status_code == 404


def test_console_headers(stack: Stack) -> None:
    c = stack.client
    redirect = c.get("/console")
    assert redirect.status_code == 308 and redirect.headers["location"] == "console/"
    page = c.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    script = c.get("/console/console.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert c.get("/console/console.js", headers={"if-none-match": script.headers["etag"]}).status_code == 304
    assert c.get("/console/console.css").headers["content-type"] == "text/css; charset=utf-8"
    assert c.get("/console/config.json").json() == {"apiOrigin": None}
    # The page is public, and holds nothing secret: no token, no key, no inline script.
    assert "Authorization" not in page.text and "<script>" not in page.text


def test_page_modules_quote_identifiers_and_describe_errors(page: Page, stack: Stack) -> None:
    """The page's own modules, run in the browser: the CREATE TABLE builder and the error lines."""
    page.goto(f"{stack.url}/console/")
    results = page.evaluate(
        """async () => {
          const sql = await import("./sql.js");
          const api = await import("./api.js");
          const attempt = (spec) => {
            try { return sql.createTableSql(spec); } catch (e) { return `error: ${e.message}`; }
          };
          const col = (name, type = "text", extra = {}) =>
            ({ name, type, nullable: true, primaryKey: false, ...extra });
          return {
            plain: attempt({ schema: "", name: "t", columns: [col("a", "integer", { primaryKey: true }), col("b")] }),
            quoted: attempt({ schema: 'my"schema', name: 'x"; DROP TABLE y; --', columns: [col('c"')] }),
            badType: attempt({ name: "t", columns: [col("a", "text); DROP TABLE y; --")] }),
            noColumns: attempt({ name: "t", columns: [] }),
            tooLong: attempt({ name: "é".repeat(32), columns: [col("a")] }),
            twice: attempt({ name: "t", columns: [col("a"), col("a")] }),
            limited: new api.ApiError(429, "rate_limited", "slow down", { retryAfter: "7" }).describe(),
            sqlError: new api.ApiError(400, "sql_error", "boom", { sqlstate: "22012" }).describe(),
          };
        }"""
    )
    assert results["plain"] == 'CREATE TABLE "t" (\n  "a" integer NOT NULL,\n  "b" text,\n  PRIMARY KEY ("a")\n)'
    assert results["quoted"] == 'CREATE TABLE "my""schema"."x""; DROP TABLE y; --" (\n  "c""" text\n)'
    assert results["badType"].startswith("error: unknown column type")
    assert results["noColumns"] == "error: add at least one column"
    assert "longer than 63 bytes" in results["tooLong"]  # 64 bytes: Postgres would cut it silently
    assert results["twice"] == 'error: two columns are named "a"'
    assert results["limited"] == "429 rate_limited: slow down Try again in 7 s."
    assert results["sqlError"] == "400 sql_error: boom (SQLSTATE 22012)"


def test_rate_limited_calls_say_when_to_retry(page: Page, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_USER", "3")  # read by the functions on their first request
    admin = stack.admin()
    assert stack.client.post("/users", json={"userId": "alice"}, headers=admin).status_code == 201
    body = {"workspaceId": "ws-1", "ownerUserId": "alice"}
    assert stack.client.post("/workspaces", json=body, headers=admin).status_code == 201
    open_console(page, stack, stack.token("alice"))
    open_workspace(page)
    page.get_by_role("tab", name="SQL").click()
    editor = page.get_by_label("SQL: one statement")
    editor.fill("SELECT 1 AS one")
    for _ in range(4):  # the limit is 3 database operations a minute; opening the workspace was one
        editor.press("Control+Enter")
        expect(page.get_by_role("button", name="Run")).to_be_enabled()
    expect(alert(page)).to_contain_text("429 rate_limited")
    expect(alert(page)).to_contain_text(re.compile(r"Try again in \d+ s\."))
