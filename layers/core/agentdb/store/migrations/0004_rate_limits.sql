-- Rate-limit counters shared by every Lambda: one row per key and fixed window, counted atomically
-- (INSERT ... ON CONFLICT DO UPDATE). Old windows are deleted by RateLimitStore as new ones open.

CREATE TABLE IF NOT EXISTS rate_limit_counters (
    key           TEXT NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    count         INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (key, window_start)
);
CREATE INDEX IF NOT EXISTS idx_rate_limit_counters_window_start ON rate_limit_counters (window_start);
