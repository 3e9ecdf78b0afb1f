-- Audit-log retention: old rows are pruned by time (README "Audit log"), oldest first, in batches.
CREATE INDEX IF NOT EXISTS idx_tool_audit_log_at ON tool_audit_log (at);
