-- SQL tools: a read-only connection per tenant database (postgres provider) and the tool-call audit log.

ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS readonly_connection_uri TEXT;  -- encrypted token
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS readonly_connection_uri TEXT;    -- encrypted token

-- One row per tool call: who, where, what, how long, how it ended. Never the SQL's results, never a secret.
CREATE TABLE IF NOT EXISTS tool_audit_log (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_id       TEXT NOT NULL,
    workspace_id  TEXT,
    server_id     TEXT NOT NULL,
    tool_name     TEXT NOT NULL,
    duration_ms   INTEGER NOT NULL,
    row_count     INTEGER,
    outcome       TEXT NOT NULL CHECK (outcome IN ('ok', 'sql_error', 'refused', 'denied', 'invalid', 'failed')),
    error_code    TEXT
);
CREATE INDEX IF NOT EXISTS idx_tool_audit_log_workspace_at ON tool_audit_log (workspace_id, at);
CREATE INDEX IF NOT EXISTS idx_tool_audit_log_user_at ON tool_audit_log (user_id, at);
