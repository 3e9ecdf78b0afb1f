-- Reconciliation: resources the provider holds under our prefix with no control-plane record (orphans),
-- and when the reconciler first saw each one. An orphan whose provider reports no creation time (a
-- postgres database made before databases were labelled, a bare role) is deleted only once it has been
-- seen as an orphan for longer than the grace period. A row is removed when the orphan is deleted or
-- stops being an orphan.

CREATE TABLE IF NOT EXISTS reconcile_orphans (
    provider       TEXT NOT NULL,
    resource_id    TEXT NOT NULL,                -- Neon project id, or the postgres database / role name
    name           TEXT NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, resource_id)
);

-- Key rotation and the stuck-record scan walk the tenant database tables in primary-key order (already
-- indexed); the stuck scan filters on status.
CREATE INDEX IF NOT EXISTS idx_user_global_database_status ON user_global_database (status) WHERE status <> 'ready';
CREATE INDEX IF NOT EXISTS idx_workspace_database_status ON workspace_database (status) WHERE status <> 'ready';
