"""Domain errors. Each carries a stable machine code and the HTTP status it maps to.

Messages are written for the caller: they never contain a connection URI, a password or a key.
"""

from __future__ import annotations


class AgentDBError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidInput(AgentDBError):
    status, code = 400, "invalid_input"


class Unauthorized(AgentDBError):
    status, code = 401, "unauthorized"


class BudgetExceeded(AgentDBError):
    status, code = 402, "budget_exceeded"


class Forbidden(AgentDBError):
    status, code = 403, "forbidden"


class NotFound(AgentDBError):
    status, code = 404, "not_found"


class Conflict(AgentDBError):
    status, code = 409, "conflict"


class RateLimited(AgentDBError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(AgentDBError):
    """The provider (Neon, the tenant Postgres server, KMS) answered with an error we cannot fix by retrying."""

    status, code = 502, "upstream_error"


class UpstreamUnavailable(AgentDBError):
    """The provider is unavailable, throttling us, or out of capacity; retrying later may succeed."""

    status, code = 503, "upstream_unavailable"


class ConfigError(AgentDBError):
    status, code = 500, "configuration_error"


class DecryptionError(AgentDBError):
    """A stored token could not be decrypted: tampered, wrong tenant, or an unknown key."""

    status, code = 500, "decryption_failed"
