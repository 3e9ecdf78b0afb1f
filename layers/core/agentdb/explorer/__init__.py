"""The database explorer: browse and query a workspace's or the caller's global database over HTTP."""
