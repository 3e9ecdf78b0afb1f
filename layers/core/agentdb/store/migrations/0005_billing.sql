-- Billing: consumption figures and paused state per tenant database, the cost of databases deleted during
-- the period, and a lease that keeps two scheduled syncs from running at once.
--
-- Per database (both tables):
--   paused_at                 when the budget enforcement paused it (NULL: serving). A retry after a failure
--                             halfway pauses or resumes only the databases whose state is not yet the wanted one.
--   compute_cu_hours          CU-hours used in the period the figures belong to
--   storage_gb_months         GB-months (pro-rated storage) in that period
--   consumption_period_start  the owner's billing period the figures belong to (the user's total only counts
--                             figures of the current period; an older sync finishing late is discarded)
--   compute_counter_cu_hours  last reading of a provider's cumulative compute counter (postgres provider), and
--   compute_counter_since     the origin that counter reported: the next reading bills the difference

ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS paused_at TIMESTAMPTZ;
ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS compute_cu_hours NUMERIC NOT NULL DEFAULT 0;
ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS storage_gb_months NUMERIC NOT NULL DEFAULT 0;
ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS consumption_period_start TIMESTAMPTZ;
ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS compute_counter_cu_hours NUMERIC;
ALTER TABLE user_global_database ADD COLUMN IF NOT EXISTS compute_counter_since TIMESTAMPTZ;

ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS paused_at TIMESTAMPTZ;
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS compute_cu_hours NUMERIC NOT NULL DEFAULT 0;
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS storage_gb_months NUMERIC NOT NULL DEFAULT 0;
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS consumption_period_start TIMESTAMPTZ;
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS compute_counter_cu_hours NUMERIC;
ALTER TABLE workspace_database ADD COLUMN IF NOT EXISTS compute_counter_since TIMESTAMPTZ;

CREATE INDEX IF NOT EXISTS idx_user_global_database_paused ON user_global_database (user_id) WHERE paused_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_workspace_database_paused ON workspace_database (workspace_id) WHERE paused_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_user_global_database_project ON user_global_database (neon_project_id);
CREATE INDEX IF NOT EXISTS idx_workspace_database_project ON workspace_database (neon_project_id);

-- What the databases of workspaces deleted during the period had cost (their records are gone): deleting a
-- workspace must not lower the spend its owner's budget is checked against.
ALTER TABLE user_db_budget ADD COLUMN IF NOT EXISTS carried_cost_cents INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS billing_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- Kept on one logical line per statement inside the body: the migration runner splits on ";" at line ends.
CREATE OR REPLACE FUNCTION agentdb_carry_deleted_workspace_cost() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE user_db_budget b
       SET carried_cost_cents = b.carried_cost_cents + OLD.current_period_cost_cents, updated_at = now()
      FROM workspaces w
     WHERE w.id = OLD.workspace_id AND b.user_id = w.owner_user_id AND OLD.ownership_type = 'platform'
       AND b.current_period_start = OLD.consumption_period_start AND COALESCE(OLD.current_period_cost_cents, 0) > 0; RETURN OLD; END
$body$;

DROP TRIGGER IF EXISTS trg_workspace_database_carry_cost ON workspace_database;
CREATE TRIGGER trg_workspace_database_carry_cost BEFORE DELETE ON workspace_database
    FOR EACH ROW EXECUTE FUNCTION agentdb_carry_deleted_workspace_cost();
