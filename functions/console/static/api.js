// The console's only way to the API: fetch with the user's bearer token, the documented routes, and one
// error type that carries what the page shows (status, code, message, sqlstate, Retry-After).

export class ApiError extends Error {
  constructor(status, code, message, { sqlstate = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.sqlstate = sqlstate;
    this.retryAfter = retryAfter;
  }

  /** One line for the page: "402 budget_exceeded: the database budget is exceeded…". */
  describe() {
    const where = this.status ? `${this.status} ${this.code}` : this.code;
    const state = this.sqlstate ? ` (SQLSTATE ${this.sqlstate})` : "";
    const retry = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : "";
    return `${where}: ${this.message}${state}${retry}`;
  }
}

const STATUS_CODES = {
  400: "invalid_input",
  401: "unauthorized",
  402: "budget_exceeded",
  403: "forbidden",
  404: "not_found",
  409: "conflict",
  429: "rate_limited",
};

const enc = encodeURIComponent;

export const AGENT_SERVER = "system:postgres-agent";
export const GLOBAL_SERVER = "system:postgres-global";

/** Where the API lives: the configured origin, else the console's own origin one level up (/console/ → /). */
export function apiBase(config, location) {
  if (config && config.apiOrigin) return new URL("/", config.apiOrigin);
  return new URL("../", location.href);
}

export class Api {
  /**
   * @param {URL} base the API root
   * @param {() => string|null} token the current bearer token
   * @param {(error: ApiError) => void} observe called with every error (the page's banners)
   */
  constructor(base, token, observe = () => {}) {
    this.base = base;
    this.token = token;
    this.observe = observe;
  }

  async request(method, path, { body, accept = "json" } = {}) {
    const headers = { Accept: accept === "csv" ? "text/csv" : "application/json" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(new URL(path, this.base), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (err) {
      throw this.fail(new ApiError(0, "network_error", `could not reach the API (${err.message})`));
    }
    const type = response.headers.get("content-type") || "";
    if (response.ok && accept === "csv" && type.startsWith("text/csv")) {
      return { text: await response.text(), headers: response.headers };
    }
    let payload = null;
    const text = await response.text();
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        payload = null;
      }
    }
    if (!response.ok || (payload && payload.success === false)) {
      const error = (payload && payload.error) || {};
      const status = response.status;
      const message =
        error.message || (payload && payload.message) || text.slice(0, 200) || response.statusText || "request failed";
      throw this.fail(
        new ApiError(status, error.code || STATUS_CODES[status] || `http_${status}`, message, {
          sqlstate: error.sqlstate || null,
          retryAfter: response.headers.get("retry-after"),
        }),
      );
    }
    if (!payload || !("data" in payload)) {
      throw this.fail(new ApiError(response.status, "bad_response", "the API answered something that is not JSON"));
    }
    return payload.data;
  }

  fail(error) {
    this.observe(error);
    return error;
  }

  // The explorer (workspace database, or the caller's global database) ------------------------------
  tables(db) {
    return this.request("GET", `${dbPath(db)}/tables`);
  }

  query(db, body) {
    return this.request("POST", `${dbPath(db)}/query`, { body });
  }

  async queryCsv(db, body) {
    return this.request("POST", `${dbPath(db)}/query`, { body: { ...body, format: "csv" }, accept: "csv" });
  }

  /** One SQL statement. The global database has no explorer execute route: it goes through the tools. */
  execute(db, sql) {
    if (db.kind === "workspace") {
      return this.request("POST", `workspaces/${enc(db.workspaceId)}/database/execute`, { body: { sql } });
    }
    return this.tool(db, "run_sql", { sql });
  }

  connection(db) {
    return this.request("GET", `workspaces/${enc(db.workspaceId)}/database/connection`);
  }

  /** Columns, keys and indexes of a table (the describe_table_schema tool of the right server). */
  async describe(db, schema, table) {
    const result = await this.tool(db, "describe_table_schema", {
      tableName: `${quoteName(schema)}.${quoteName(table)}`,
    });
    return result.data;
  }

  async tool(db, toolName, args) {
    if (!db.workspaceId) {
      throw this.fail(
        new ApiError(
          0,
          "workspace_needed",
          "this needs a workspace id: the tools route runs inside one of your workspaces",
        ),
      );
    }
    const server = db.kind === "global" ? GLOBAL_SERVER : AGENT_SERVER;
    const body = { serverId: server, toolName, arguments: args, workspaceId: db.workspaceId };
    const result = await this.request("POST", "mcp/tools/execute", { body });
    const structured = result.structuredContent || {};
    if (result.isError) {
      const error = structured.error || {};
      const code = error.code || (error.sqlstate ? "sql_error" : "tool_error");
      throw this.fail(new ApiError(400, code, error.message || "the tool call failed", { sqlstate: error.sqlstate }));
    }
    return structured;
  }

  usage(userId) {
    return this.request("GET", `users/${enc(userId)}/db-usage`);
  }
}

function dbPath(db) {
  return db.kind === "global"
    ? `users/${enc(db.userId)}/global-database`
    : `workspaces/${enc(db.workspaceId)}/database`;
}

function quoteName(name) {
  return `"${String(name).replaceAll('"', '""')}"`;
}
