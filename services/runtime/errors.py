"""One error hierarchy: each class decides its HTTP status, OpenAI error type and
whether another attempt could succeed. Provider and transport errors are
translated into these at the adapter edge; the ingress turns them into
OpenAI-style error bodies.

::

    GatewayError (500 api_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── InvalidJSON (400, code invalid_json)
    │   └── UpstreamBadRequest (400, the upstream rejected the request)
    │       ├── ContextWindowExceeded (400, a larger-context fallback may serve it)
    │       └── ContentFiltered (400, another provider's policy may allow it)
    ├── AuthenticationFailed (401 authentication_error)
    ├── BudgetExceeded (402 budget_exceeded)
    ├── PermissionDenied (403 permission_error)
    ├── NotFound (404 invalid_request_error)
    │   └── ModelNotFound (404, code model_not_found)
    ├── Conflict (409 invalid_request_error)
    ├── PayloadTooLarge (413 invalid_request_error)
    ├── RateLimited (429 rate_limit_error, retryable)
    ├── ServiceUnavailable (503 service_unavailable, retryable)
    ├── DeadlineExceeded (504 timeout)
    └── UpstreamError (502 upstream_error, retryable)
        ├── UpstreamRateLimited (429 rate_limit_error, retryable)
        ├── UpstreamUnavailable (503 service_unavailable, retryable)
        ├── UpstreamTimeout (504 timeout, retryable)
        ├── UpstreamAuthFailed (502, not retryable: the operator's key is wrong)
        └── UpstreamProtocolError (502, malformed or cut response)
"""

from __future__ import annotations

from typing import ClassVar

from schemas.bus import ErrorInfo
from schemas.errors import ErrorDetail, ErrorResponse


class StartupError(Exception):
    """A service cannot start: a dependency (NATS, the usage store) is unreachable.

    Raised before the service serves anything; the command line reports the
    message without a traceback and exits with status 1.
    """


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False
    fallback: ClassVar[bool] = False
    """Not worth retrying on the same deployment, but a fallback model may serve it."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}
        """Extra response headers (rate-limit state on a 429)."""

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(
            status=self.status,
            type=self.error_type,
            message=self.message,
            code=self.code,
            param=self.param,
            retryable=self.retryable,
            retry_after=self.retry_after,
            fallback=self.fallback,
        )

    def to_response(self) -> ErrorResponse:
        return error_body(self.to_info())


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class InvalidJSON(InvalidRequest):
    default_code = "invalid_json"


class UpstreamBadRequest(InvalidRequest):
    default_code = "upstream_rejected"


class ContextWindowExceeded(UpstreamBadRequest):
    default_code = "context_length_exceeded"
    fallback = True


class ContentFiltered(UpstreamBadRequest):
    default_code = "content_filter"
    fallback = True


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class BudgetExceeded(GatewayError):
    status = 402
    error_type = "budget_exceeded"
    default_code = "budget_exceeded"


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class Conflict(GatewayError):
    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    retryable = True


class ServiceUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"
    retryable = True


class DeadlineExceeded(GatewayError):
    status = 504
    error_type = "timeout"
    default_code = "deadline_exceeded"


class UpstreamError(GatewayError):
    status = 502
    error_type = "upstream_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamRateLimited(UpstreamError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"


class UpstreamUnavailable(UpstreamError):
    status = 503
    error_type = "service_unavailable"
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout"
    default_code = "upstream_timeout"


class UpstreamAuthFailed(UpstreamError):
    default_code = "upstream_auth_failed"
    retryable = False


class UpstreamProtocolError(UpstreamError):
    default_code = "upstream_protocol_error"


def error_body(info: ErrorInfo) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorDetail(message=info.message, type=info.type, param=info.param, code=info.code)
    )


def upstream_error_for_status(status: int, message: str, retry_after: float | None) -> GatewayError:
    """Map an upstream HTTP status to the gateway error the client should see."""
    if status == 429:
        return UpstreamRateLimited(message, retry_after=retry_after)
    if status in (401, 403):
        return UpstreamAuthFailed(f"the provider refused the gateway's credentials: {message}")
    if status in (400, 409, 413, 422):
        return UpstreamBadRequest(message)
    if status in (408, 504):
        return UpstreamTimeout(message)
    if status in (503, 529):
        return UpstreamUnavailable(message, retry_after=retry_after)
    return UpstreamError(message)
