"""Domain errors. The API maps each to the one error envelope; workers log them.

``code`` is a stable machine string; ``status`` the HTTP status it maps to; ``extra`` is merged
into ``detail`` next to ``message`` and ``code``.
"""

from __future__ import annotations

from typing import Any


class WardenError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.extra = extra


class BadRequest(WardenError):
    status = 400
    code = "bad_request"


class Unauthorized(WardenError):
    status = 401
    code = "unauthorized"


class Forbidden(WardenError):
    status = 403
    code = "forbidden"


class NotFound(WardenError):
    status = 404
    code = "not_found"


class Conflict(WardenError):
    status = 409
    code = "conflict"


class Unprocessable(WardenError):
    status = 422
    code = "validation_error"


class RateLimited(WardenError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(WardenError):
    status = 503
    code = "service_unavailable"
