"""Tenant database providers: `postgres` (a server you run) and `neon` (Neon API v2)."""
