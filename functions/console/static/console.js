// The console page: sign in with a token, pick a database, browse tables and rows, run SQL, create a table,
// see the connection facts and the usage. Everything is rendered with textContent and DOM nodes (never
// parsed as HTML), so a value stored in a row cannot become markup. Every failure lands in a role="alert" region.

import { Api, ApiError, apiBase } from "./api.js";
import { barChart, gauge } from "./chart.js";
import { COLUMN_TYPES, FormError, createTableSql } from "./sql.js";

const TOKEN_KEY = "agentdb.console.token";
const DB_KEY = "agentdb.console.db";
const EXPORT_LIMIT = 1000;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  claims: null,
  db: null, // {kind: "workspace"|"global", workspaceId, userId}
  rows: null, // {schema, table, cursors: [null, ...], page, pageSize}
  details: new Map(),
  activeTab: "tables",
  tablesStale: false,
  seq: { tables: 0, rows: 0 },
};

let api;

// ---- helpers ------------------------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const USD = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const money = (cents) => USD.format(Number(cents || 0) / 100);

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function cellText(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A results table: sticky header, one row per result row, NULL shown as such. */
function grid(columns, rows, caption) {
  const table = h("table", { class: "grid results" });
  table.append(h("caption", { class: "sr-only", text: caption }));
  const head = h("tr");
  for (const column of columns) {
    const name = typeof column === "string" ? column : column.name;
    const th = h("th", { scope: "col" }, h("span", { text: name }));
    if (typeof column === "object" && column.type) th.append(h("span", { class: "type", text: column.type }));
    head.append(th);
  }
  table.append(h("thead", {}, head));
  const body = h("tbody");
  for (const row of rows) {
    const tr = h("tr");
    for (const value of row) {
      const text = cellText(value);
      tr.append(
        text === null
          ? h("td", { class: "null", text: "NULL" })
          : h("td", { title: text.length > 60 ? text : null, text }),
      );
    }
    body.append(tr);
  }
  table.append(body);
  return table;
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name, class: "sr-only" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---- messages ---------------------------------------------------------------------------------------

function showError(error) {
  const text =
    error instanceof ApiError
      ? error.describe()
      : error instanceof FormError
        ? error.message
        : `Unexpected error: ${error.message || error}`;
  $("alert-text").textContent = error.status === 401 ? `${text}. Sign in again with a valid token.` : text;
  $("alert").hidden = false;
}

function clearError() {
  $("alert").hidden = true;
  $("alert-text").textContent = "";
}

function budgetBanner(exceeded, message) {
  $("budget-banner").hidden = !exceeded;
  $("budget-text").textContent = exceeded
    ? message || "Your databases are paused until the budget is raised or the billing period resets."
    : "";
}

/** Every API error passes here first: 402 anywhere raises the budget banner, 401 signs out. */
function observe(error) {
  if (error.status === 402) budgetBanner(true, error.message);
  if (error.status === 401) signOut({ keepMessages: true });
}

/** Run an action; any error is shown, never thrown into the void. */
async function guarded(work) {
  try {
    return await work();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// ---- sign in ------------------------------------------------------------------------------------------

function decodeJwt(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new FormError("That is not a JWT (expected three dot-separated parts).");
  try {
    const b64 = parts[1].replaceAll("-", "+").replaceAll("_", "/");
    const json = new TextDecoder().decode(
      Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "=")), (c) => c.charCodeAt(0)),
    );
    const claims = JSON.parse(json);
    if (!claims || typeof claims.sub !== "string" || !claims.sub) throw new Error("no sub");
    return claims;
  } catch {
    throw new FormError("That token cannot be read: its payload has no user id (sub).");
  }
}

function signIn(token, { quiet = false } = {}) {
  const claims = decodeJwt(token);
  state.token = token;
  state.claims = claims;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("who-sub").textContent = claims.sub;
  $("who").hidden = false;
  $("signin").hidden = true;
  $("app").hidden = false;
  if (!quiet) clearError();
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    showError(new FormError("This token has expired: the API will refuse it. Mint or paste a new one."));
  }
  const remembered = readRememberedDb();
  if (remembered) {
    $("workspace").value = remembered.workspaceId || "";
    document.querySelector(`input[name=db][value=${remembered.kind}]`).checked = true;
    openDb(remembered);
  } else {
    $("workspace").focus();
  }
  loadUsage({ quiet: true });
}

function signOut({ keepMessages = false } = {}) {
  state.token = null;
  state.claims = null;
  state.db = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (!keepMessages) sessionStorage.removeItem(DB_KEY); // a 401 keeps it: the same user signs in again
  $("who").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("token").value = "";
  if (!keepMessages) {
    clearError();
    budgetBanner(false);
  }
  $("token").focus();
}

function readRememberedDb() {
  try {
    const db = JSON.parse(sessionStorage.getItem(DB_KEY) || "null");
    if (db && (db.kind === "workspace" || db.kind === "global")) return db;
  } catch {
    /* a damaged entry is ignored */
  }
  return null;
}

// ---- database picker ----------------------------------------------------------------------------------

function pickedDb() {
  const kind = document.querySelector("input[name=db]:checked").value;
  const workspaceId = $("workspace").value.trim();
  if (kind === "workspace" && !workspaceId) throw new FormError("Enter a workspace id, or pick the global database.");
  return { kind, workspaceId: workspaceId || null, userId: state.claims.sub };
}

async function openDb(db) {
  state.db = { ...db, userId: state.claims.sub };
  state.rows = null;
  state.details.clear();
  sessionStorage.setItem(DB_KEY, JSON.stringify({ kind: db.kind, workspaceId: db.workspaceId }));
  $("db-title").textContent =
    db.kind === "global" ? `Global database of ${state.claims.sub}` : `Workspace ${db.workspaceId}: agent database`;
  $("rows").hidden = true;
  $("sql-result").replaceChildren();
  $("sql-status").textContent = "";
  $("connection").hidden = true;
  await loadTables();
  if (state.activeTab === "connection") loadConnection();
}

// ---- tables, details, rows -------------------------------------------------------------------------

async function loadTables() {
  state.tablesStale = false;
  const seq = ++state.seq.tables; // only the latest of overlapping loads is drawn
  const tbody = $("tables").querySelector("tbody");
  tbody.replaceChildren();
  $("tables").hidden = true;
  $("tables-empty").hidden = true;
  const data = await guarded(() => api.tables(state.db));
  if (!data || seq !== state.seq.tables) return;
  clearError();
  if (!data.tables.length) {
    $("tables-empty").textContent = "No tables yet. Create one in “New table” or with SQL.";
    $("tables-empty").hidden = false;
    return;
  }
  for (const table of data.tables) {
    const qualified = table.schema === "public" ? table.name : `${table.schema}.${table.name}`;
    const detailsButton = h("button", {
      type: "button",
      class: "secondary",
      "aria-expanded": "false",
      text: "Columns & indexes",
    });
    const rowsButton = h("button", { type: "button", text: "Rows", "aria-label": `Rows of ${qualified}` });
    detailsButton.setAttribute("aria-label", `Columns and indexes of ${qualified}`);
    const tr = h(
      "tr",
      { "data-table": qualified },
      h("th", { scope: "row", text: qualified }),
      h("td", {
        class: "num",
        text: table.rowEstimate === null || table.rowEstimate === undefined ? "—" : String(table.rowEstimate),
      }),
      h("td", { class: "num", text: bytes(table.sizeBytes) }),
      h("td", { class: "actions" }, rowsButton, detailsButton),
    );
    rowsButton.addEventListener("click", () => openRows(table.schema, table.name, qualified));
    detailsButton.addEventListener("click", () => toggleDetails(table, qualified, tr, detailsButton));
    tbody.append(tr);
  }
  $("tables").hidden = false;
}

async function toggleDetails(table, qualified, tr, button) {
  const open = button.getAttribute("aria-expanded") === "true";
  const existing =
    tr.nextElementSibling && tr.nextElementSibling.classList.contains("details") ? tr.nextElementSibling : null;
  if (open) {
    button.setAttribute("aria-expanded", "false");
    if (existing) existing.remove();
    return;
  }
  const detail = await busy(button, () => guarded(() => describe(table)));
  if (!detail) return;
  button.setAttribute("aria-expanded", "true");
  const cell = h("td", { colspan: "4" });
  const id = `details-${qualified.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  cell.id = id;
  button.setAttribute("aria-controls", id);
  cell.append(h("h3", { text: `Columns of ${qualified}` }));
  if (detail.columns) {
    const pk = new Set(detail.primaryKey || []);
    const rows = detail.columns.map((c) => [
      c.name,
      c.type,
      c.nullable === false ? "no" : "yes",
      c.default ?? "",
      pk.has(c.name) ? "primary key" : "",
    ]);
    cell.append(grid(["column", "type", "nullable", "default", "key"], rows, `Columns of ${qualified}`));
  }
  if (detail.indexes) {
    cell.append(h("h3", { text: "Indexes" }));
    if (!detail.indexes.length) cell.append(h("p", { class: "muted", text: "No indexes." }));
    else
      cell.append(
        grid(
          ["index", "definition"],
          detail.indexes.map((i) => [i.name, i.definition]),
          `Indexes of ${qualified}`,
        ),
      );
  } else if (detail.note) {
    cell.append(h("p", { class: "muted", text: detail.note }));
  }
  tr.after(h("tr", { class: "details" }, cell));
}

/** describe_table_schema through the tools; for the global database without a workspace, the column types
 * that a one-row query reports (the tools route runs inside a workspace). */
async function describe(table) {
  const key = `${table.schema}.${table.name}`;
  if (state.details.has(key)) return state.details.get(key);
  let detail;
  if (state.db.kind === "global" && !state.db.workspaceId) {
    const page = await api.query(state.db, { table: table.name, schema: table.schema, limit: 1 });
    detail = {
      columns: page.columns.map((c) => ({ name: c.name, type: c.type })),
      note: "Indexes: enter one of your workspace ids above to see them (read through that workspace's tools).",
    };
  } else {
    detail = await api.describe(state.db, table.schema, table.name);
  }
  state.details.set(key, detail);
  return detail;
}

function openRows(schema, table, qualified) {
  state.rows = { schema, table, qualified, cursors: [null], page: 0, pageSize: Number($("page-size").value) };
  $("rows-title").textContent = `Rows of ${qualified}`;
  $("rows").hidden = false;
  loadPage().then(() => $("rows-title").scrollIntoView({ block: "nearest" }));
}

async function loadPage() {
  const r = state.rows;
  if (!r) return;
  const body = { table: r.table, schema: r.schema, limit: r.pageSize };
  const cursor = r.cursors[r.page];
  if (cursor) body.cursor = cursor;
  const seq = ++state.seq.rows;
  const data = await guarded(() => api.query(state.db, body));
  if (!data || seq !== state.seq.rows || r !== state.rows) return;
  r.cursors[r.page + 1] = data.nextCursor || null;
  r.cursors.length = r.page + 2;
  const first = r.page * r.pageSize + 1;
  $("rows-info").textContent = data.rowCount ? `Rows ${first}–${first + data.rowCount - 1}` : "No rows";
  $("rows-prev").disabled = r.page === 0;
  $("rows-next").disabled = !data.nextCursor;
  $("rows-notice").hidden = !data.truncated;
  $("rows-notice").textContent = data.truncated ? "This page was cut at the size cap: fewer rows than asked for." : "";
  $("rows-grid").replaceChildren(grid(data.columns, data.rows, `Rows of ${r.qualified}`));
}

async function exportRows(format, button) {
  const r = state.rows;
  if (!r) return;
  const body = { table: r.table, schema: r.schema, limit: EXPORT_LIMIT };
  const name = `${r.table}.${format}`;
  await busy(button, () =>
    guarded(async () => {
      if (format === "csv") {
        const { text, headers } = await api.queryCsv(state.db, body);
        download(name, "text/csv", text);
        const more = headers.get("x-agentdb-next-cursor") || headers.get("x-agentdb-truncated") === "true";
        exportNotice(more);
      } else {
        const data = await api.query(state.db, body);
        const objects = data.rows.map((row) => Object.fromEntries(data.columns.map((c, i) => [c.name, row[i]])));
        download(name, "application/json", `${JSON.stringify(objects, null, 2)}\n`);
        exportNotice(Boolean(data.nextCursor) || data.truncated);
      }
    }),
  );
}

function exportNotice(partial) {
  $("rows-notice").hidden = !partial;
  $("rows-notice").textContent = partial
    ? `The export holds the first rows only (at most ${EXPORT_LIMIT}, within the size cap).`
    : "";
}

// ---- SQL ----------------------------------------------------------------------------------------------

async function runSql() {
  const sql = $("sql").value.trim();
  const error = $("sql-error");
  error.hidden = true;
  $("sql-notice").hidden = true;
  if (!sql) {
    error.textContent = "Type a statement first.";
    error.hidden = false;
    return;
  }
  $("sql-status").textContent = "Running…";
  const started = performance.now();
  try {
    const data = await busy($("sql-run"), () => api.execute(state.db, sql));
    const ms = Math.round(performance.now() - started);
    const rowCount = data.rowCount ?? data.rows.length;
    $("sql-status").textContent = `${rowCount} row${rowCount === 1 ? "" : "s"} · ${ms} ms`;
    $("sql-notice").hidden = !data.truncated;
    $("sql-notice").textContent = data.truncated
      ? "Truncated: the result stopped at the row or size cap. Add a LIMIT or narrow the query."
      : "";
    $("sql-result").replaceChildren(
      data.columns && data.columns.length
        ? grid(data.columns, data.rows, "Result of the statement")
        : h("p", { class: "muted", text: "The statement returned no rows." }),
    );
    state.details.clear();
    state.tablesStale = true; // the statement may have created, altered or filled a table
  } catch (err) {
    $("sql-status").textContent = "";
    $("sql-result").replaceChildren();
    if (err instanceof ApiError && (err.code === "sql_error" || err.code === "sql_refused")) {
      error.textContent = err.sqlstate ? `SQL error ${err.sqlstate}: ${err.message}` : `Refused: ${err.message}`;
      error.hidden = false;
    } else {
      showError(err);
    }
  }
}

// ---- new table ----------------------------------------------------------------------------------------

let columnSeq = 0;

function addColumnRow(initial = {}) {
  columnSeq += 1;
  const n = columnSeq;
  const type = h("select", { id: `col-type-${n}`, "aria-label": `Type of column ${n}` });
  for (const t of COLUMN_TYPES)
    type.append(h("option", { value: t, text: t, selected: t === (initial.type || "text") }));
  const name = h("input", {
    id: `col-name-${n}`,
    "aria-label": `Name of column ${n}`,
    value: initial.name || "",
    autocomplete: "off",
    spellcheck: "false",
  });
  const nullable = h("input", {
    type: "checkbox",
    id: `col-null-${n}`,
    "aria-label": `Column ${n} is nullable`,
    checked: initial.nullable !== false,
  });
  const pk = h("input", {
    type: "checkbox",
    id: `col-pk-${n}`,
    "aria-label": `Column ${n} is in the primary key`,
    checked: Boolean(initial.primaryKey),
  });
  const tr = h("tr", { class: "column" });
  const remove = h("button", {
    type: "button",
    class: "secondary",
    text: "Remove",
    "aria-label": `Remove column ${n}`,
  });
  remove.addEventListener("click", () => {
    tr.remove();
    updatePreview();
  });
  tr.append(
    h("td", {}, name),
    h("td", {}, type),
    h("td", { class: "center" }, nullable),
    h("td", { class: "center" }, pk),
    h("td", {}, remove),
  );
  $("create-columns").append(tr);
  updatePreview();
  return name;
}

function readCreateForm() {
  const columns = [...$("create-columns").querySelectorAll("tr.column")].map((tr) => {
    const [name, type, nullable, pk] = tr.querySelectorAll("input, select");
    return { name: name.value.trim(), type: type.value, nullable: nullable.checked, primaryKey: pk.checked };
  });
  const name = $("create-name").value.trim();
  if (!name) throw new FormError("Give the table a name.");
  return { schema: $("create-schema").value, name, columns };
}

function updatePreview() {
  try {
    $("create-preview").textContent = createTableSql(readCreateForm());
  } catch (err) {
    $("create-preview").textContent = `-- ${err.message}`;
  }
}

async function createTable() {
  let sql;
  try {
    sql = createTableSql(readCreateForm());
  } catch (err) {
    showError(err);
    return;
  }
  const done = await busy($("create-submit"), () => guarded(() => api.execute(state.db, sql)));
  if (done === undefined) return;
  clearError();
  $("create-status").textContent = `Created ${$("create-name").value.trim()}.`;
  await loadTables();
}

// ---- connection ---------------------------------------------------------------------------------------

async function loadConnection() {
  const list = $("connection");
  list.hidden = true;
  $("connection-empty").hidden = true;
  if (!state.db) return;
  if (state.db.kind !== "workspace") {
    $("connection-empty").textContent = "Connection facts are shown for workspace databases.";
    $("connection-empty").hidden = false;
    return;
  }
  const data = await guarded(() => api.connection(state.db));
  if (!data) return;
  const facts = [
    ["Provider", data.provider],
    ["Host", data.host],
    ["Port", data.port],
    ["Database", data.database],
    ["Role", data.role],
    ["Password", "••••••••"],
    ["Pooled", data.pooled ? "yes" : "no"],
    ["SSL mode", data.sslmode || "—"],
    ["Status", data.status],
  ];
  list.replaceChildren();
  for (const [label, value] of facts) {
    const dd = h("dd", {}, h("code", { text: value === null || value === undefined ? "—" : String(value) }));
    if (label === "Password") dd.append(h("span", { class: "muted", text: " hidden, never sent to the page" }));
    else if (["Host", "Database", "Role"].includes(label) && value && navigator.clipboard) {
      const copy = h("button", {
        type: "button",
        class: "secondary small",
        text: "Copy",
        "aria-label": `Copy the ${label.toLowerCase()}`,
      });
      copy.addEventListener("click", () => navigator.clipboard.writeText(String(value)).catch(() => {}));
      dd.append(copy);
    }
    list.append(h("dt", { text: label }), dd);
  }
  list.hidden = false;
}

// ---- usage --------------------------------------------------------------------------------------------

async function loadUsage({ quiet = false } = {}) {
  if (!state.claims) return;
  let data;
  try {
    data = await api.usage(state.claims.sub);
  } catch (err) {
    if (!quiet || err.status !== 404) showError(err);
    return;
  }
  renderUsage(data);
}

function renderUsage(u) {
  budgetBanner(Boolean(u.exceeded));
  const source = u.limitSource === "custom" ? "custom budget" : `${u.plan} plan`;
  const since = new Date(u.periodStart).toLocaleDateString();
  const rest = u.exceeded ? "Budget exceeded: databases are paused." : `${money(u.remainingCents)} left.`;
  $("usage-summary").textContent =
    `${money(u.totalCents)} spent of ${money(u.limitCents)} (${source}) since ${since}. ${rest}`;
  $("usage-stale").hidden = !u.stale;
  $("usage-stale").textContent = u.stale
    ? `These figures may be old: ${u.staleReason || "the provider could not be asked just now"}.`
    : "";
  const items = [];
  if (u.globalDb)
    items.push({
      label: "Global database",
      value: u.globalDb.costCents,
      db: u.globalDb,
      note: u.globalDb.paused ? "paused" : "",
    });
  for (const a of u.agentDbs || []) {
    items.push({
      label: a.workspaceName ? `${a.workspaceName} (${a.workspaceId})` : a.workspaceId,
      value: a.costCents,
      db: a,
      note: a.paused ? "paused" : "",
    });
  }
  if (u.deletedDbsCostCents) items.push({ label: "Deleted workspaces", value: u.deletedDbsCostCents, muted: true });
  const gaugeBox = $("usage-gauge");
  gaugeBox.replaceChildren(h("figcaption", { text: "Budget" }), gauge(u.totalCents, u.limitCents, money));
  const barsBox = $("usage-bars");
  barsBox.replaceChildren(
    h("figcaption", { text: "Cost per database" }),
    barChart(items, money, `Cost per database: ${items.map((i) => `${i.label} ${money(i.value)}`).join(", ")}`),
  );
  const tbody = $("usage-table").querySelector("tbody");
  tbody.replaceChildren();
  for (const item of items) {
    const db = item.db || {};
    tbody.append(
      h(
        "tr",
        {},
        h("th", { scope: "row", text: item.label }),
        h("td", { class: "num", text: money(item.value) }),
        h("td", { class: "num", text: db.computeHours === undefined ? "—" : db.computeHours.toFixed(3) }),
        h("td", { class: "num", text: db.storageGb === undefined ? "—" : db.storageGb.toFixed(3) }),
        h("td", { text: db.paused ? "paused" : db.status || "—" }),
      ),
    );
  }
}

// ---- tabs ---------------------------------------------------------------------------------------------

const TABS = ["tables", "sql", "create", "connection", "usage"];

function selectTab(name, { focus = false } = {}) {
  state.activeTab = name;
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
    if (selected && focus) button.focus();
  }
  if (name === "tables" && state.tablesStale && state.db) loadTables();
  if (name === "connection") loadConnection();
  if (name === "usage") loadUsage();
  if (name === "sql" && !focus) $("sql").focus(); // a click goes to the editor; arrow keys stay on the tabs
}

function onTabKey(event) {
  const index = TABS.indexOf(state.activeTab);
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: TABS.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(TABS[(moves[event.key] + TABS.length) % TABS.length], { focus: true });
}

// ---- wiring -------------------------------------------------------------------------------------------

async function loadConfig() {
  try {
    const response = await fetch("./config.json", { cache: "no-store", credentials: "omit" });
    return response.ok ? await response.json() : {};
  } catch {
    return {};
  }
}

async function main() {
  api = new Api(apiBase(await loadConfig(), window.location), () => state.token, observe);

  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token")
      .value.trim()
      .replace(/^Bearer\s+/i, "");
    if (!token) return showError(new FormError("Paste a token first."));
    try {
      signIn(token);
    } catch (err) {
      showError(err);
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("alert-close").addEventListener("click", clearError);

  $("db-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      openDb(pickedDb());
    } catch (err) {
      showError(err);
    }
  });
  $("tables-refresh").addEventListener("click", (e) => state.db && busy(e.currentTarget, loadTables));
  $("page-size").addEventListener("change", () => {
    if (!state.rows) return;
    state.rows.pageSize = Number($("page-size").value);
    state.rows.cursors = [null];
    state.rows.page = 0;
    loadPage();
  });
  $("rows-next").addEventListener("click", () => {
    state.rows.page += 1;
    loadPage();
  });
  $("rows-prev").addEventListener("click", () => {
    state.rows.page = Math.max(0, state.rows.page - 1);
    loadPage();
  });
  $("export-csv").addEventListener("click", (e) => exportRows("csv", e.currentTarget));
  $("export-json").addEventListener("click", (e) => exportRows("json", e.currentTarget));

  $("sql-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSql();
  });
  $("sql").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      runSql();
    }
  });

  $("create-add").addEventListener("click", () => addColumnRow().focus());
  $("create-form").addEventListener("input", updatePreview);
  $("create-form").addEventListener("change", updatePreview);
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createTable();
  });
  addColumnRow({ name: "id", type: "bigserial", nullable: false, primaryKey: true });
  addColumnRow({ name: "created_at", type: "timestamptz" });

  $("usage-refresh").addEventListener("click", (e) => busy(e.currentTarget, loadUsage));
  for (const tab of TABS) $(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  document.querySelector("[role=tablist]").addEventListener("keydown", onTabKey);

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      signIn(saved, { quiet: true });
    } catch {
      signOut();
    }
  } else {
    $("token").focus();
  }
}

main().catch(showError);
