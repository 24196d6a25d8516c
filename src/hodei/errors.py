"""One root exception for everything Hodei raises on purpose.

    HodeiError
    ├── ValidationError        bad input: a job spec, a flag, a body (HTTP 400)
    ├── NotFoundError          unknown job, secret or worker (HTTP 404)
    ├── ConflictError          an illegal state transition or a lost compare-and-swap (HTTP 409)
    ├── AuthError              a forged, expired or replayed credential (HTTP 401)
    │   └── ForbiddenError     a valid credential without the role for it (HTTP 403)
    ├── StoreError             the store failed (disk full, corrupt database) (HTTP 503)
    └── ProviderError          a worker provider failed: engine unreachable, image missing
        └── ImageUnavailable   a job's image cannot be found or pulled

Adapters convert third-party errors into these at the edge, so callers never see sqlite3,
grpc or docker exceptions.
"""

from __future__ import annotations


class HodeiError(Exception):
    """Root of every error Hodei raises on purpose."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(HodeiError):
    status = 400


class NotFoundError(HodeiError):
    status = 404


class ConflictError(HodeiError):
    status = 409


class AuthError(HodeiError):
    status = 401


class ForbiddenError(AuthError):
    """A valid credential whose role does not allow the action (HTTP 403)."""

    status = 403


class StoreError(HodeiError):
    status = 503


class ProviderError(HodeiError):
    status = 503


class ImageUnavailable(ProviderError):
    """A job's image is not on the engine and cannot be pulled: retrying will not help, so the
    jobs that asked for it fail with the engine's reason."""

    def __init__(self, image: str, message: str) -> None:
        super().__init__(message)
        self.image = image
