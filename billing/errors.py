"""API errors: raised where the problem is found, rendered in one place (web.http)."""


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message, details=None, headers=None, **extra):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        self.extra = extra

    def body(self):
        error = {"code": self.code, "message": self.message, "details": self.details}
        error.update(self.extra)
        return {"error": error}


class ValidationError(ApiError):
    status = 400
    code = "validation_error"

    def __init__(self, details, message=None):
        if isinstance(details, str):
            details = [{"field": None, "message": details}]
        if message is None:
            parts = []
            for d in details[:3]:
                where = d.get("field") or "request"
                if d.get("index") is not None:
                    where = f"events[{d['index']}].{where}"
                parts.append(f"{where}: {d['message']}")
            more = len(details) - 3
            message = "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
        super().__init__(message, details)


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message="Authentication required: send 'Authorization: Bearer <token>'."):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, allowed):
        super().__init__(f"Method not allowed; use {', '.join(allowed)}.",
                         headers={"Allow": ", ".join(allowed)})


class Conflict(ApiError):
    status = 409
    code = "conflict"


class QuotaExceeded(ApiError):
    status = 409
    code = "quota_exceeded"

    def __init__(self, quota_bytes, used_bytes):
        super().__init__(f"The upload would take the stored total above the storage quota of {quota_bytes} bytes "
                         f"({used_bytes} bytes are in use).", quota_bytes=quota_bytes, used_bytes=used_bytes)


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, size):
        super().__init__(f"The range asks for no byte of the object ({size} bytes).",
                         headers={"Content-Range": f"bytes */{size}"})


class LengthRequired(ApiError):
    status = 411
    code = "length_required"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message, retry_after):
        super().__init__(message, headers={"Retry-After": str(int(retry_after))})


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"


class FieldErrors:
    """Collects field problems so a request reports all of them at once."""

    def __init__(self):
        self.details = []

    def add(self, field, message, index=None):
        d = {"field": field, "message": message}
        if index is not None:
            d = {"index": index, **d}
        self.details.append(d)

    @staticmethod
    def single(field, message):
        """A ValidationError for one field (to raise at once)."""
        return ValidationError([{"field": field, "message": message}])

    def raise_if_any(self):
        if self.details:
            raise ValidationError(self.details)

    def __bool__(self):
        return bool(self.details)
