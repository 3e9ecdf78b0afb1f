-- Control-plane core: users, workspaces, members, tenant database records, budgets, tool schema cache,
-- processed events. The four seed tables keep their seed columns; what this service adds is after them.

CREATE TABLE IF NOT EXISTS users (
    id               TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    plan             TEXT NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'team', 'enterprise')),
    plan_changed_at  TIMESTAMPTZ,
    deleted_at       TIMESTAMPTZ,                -- tombstone: a deleted user is never provisioned again by an older event
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS workspaces (
    id               TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    owner_user_id    TEXT,                       -- no FK: a workspace may arrive before its owner
    name             TEXT,
    deleted_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_workspaces_owner ON workspaces (owner_user_id) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS workspace_members (
    workspace_id     TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    role             TEXT NOT NULL CHECK (role IN ('admin', 'write', 'read')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX IF NOT EXISTS idx_workspace_members_user ON workspace_members (user_id);

CREATE TABLE IF NOT EXISTS user_global_database (
    id                        TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id                   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ownership_type            TEXT NOT NULL DEFAULT 'platform' CHECK (ownership_type IN ('platform', 'user')),
    neon_project_id           TEXT,
    neon_branch_id            TEXT,
    neon_connection_uri       TEXT,              -- encrypted token, never plaintext
    database_name             TEXT NOT NULL DEFAULT 'neondb',
    current_period_cost_cents INTEGER DEFAULT 0,
    last_consumption_sync     TIMESTAMPTZ,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ,
    provider                  TEXT NOT NULL,
    role_name                 TEXT,
    status                    TEXT NOT NULL DEFAULT 'provisioning'
                              CHECK (status IN ('provisioning', 'ready', 'deleting', 'failed')),
    status_detail             TEXT,
    UNIQUE (user_id)
);
CREATE INDEX IF NOT EXISTS idx_user_global_database_user_id ON user_global_database (user_id);

CREATE TABLE IF NOT EXISTS workspace_database (
    id                        TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    workspace_id              TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    ownership_type            TEXT NOT NULL DEFAULT 'platform' CHECK (ownership_type IN ('platform', 'user')),
    neon_project_id           TEXT,
    neon_branch_id            TEXT,
    neon_connection_uri       TEXT,
    database_name             TEXT NOT NULL DEFAULT 'neondb',
    current_period_cost_cents INTEGER DEFAULT 0,
    last_consumption_sync     TIMESTAMPTZ,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ,
    provider                  TEXT NOT NULL,
    role_name                 TEXT,
    status                    TEXT NOT NULL DEFAULT 'provisioning'
                              CHECK (status IN ('provisioning', 'ready', 'deleting', 'failed')),
    status_detail             TEXT,
    UNIQUE (workspace_id)
);
CREATE INDEX IF NOT EXISTS idx_workspace_database_workspace_id ON workspace_database (workspace_id);

CREATE TABLE IF NOT EXISTS user_db_budget (
    id                   TEXT PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    custom_budget_cents  INTEGER CHECK (custom_budget_cents IS NULL OR custom_budget_cents >= 0),
    budget_exceeded      BOOLEAN NOT NULL DEFAULT FALSE,
    current_period_start TIMESTAMPTZ NOT NULL DEFAULT now(),
    total_cost_cents     INTEGER DEFAULT 0,
    last_sync            TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ,
    UNIQUE (user_id)
);
CREATE INDEX IF NOT EXISTS idx_user_db_budget_user_id ON user_db_budget (user_id);
CREATE INDEX IF NOT EXISTS idx_user_db_budget_exceeded ON user_db_budget (budget_exceeded);

CREATE TABLE IF NOT EXISTS mcp_tool_schema_cache (
    id            TEXT PRIMARY KEY,
    server_type   TEXT NOT NULL,                 -- 'postgres-agent' | 'postgres-global'
    tool_name     TEXT NOT NULL,
    tool_schema   JSONB NOT NULL,
    discovered_at TIMESTAMPTZ DEFAULT now(),
    UNIQUE (server_type, tool_name)
);

CREATE TABLE IF NOT EXISTS processed_events (
    event_id     TEXT PRIMARY KEY,
    detail_type  TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
