"""The one error tree.

Every failure a client can cause is a :class:`YihaoError` with an HTTP status,
a stable machine ``code`` and a human message. The HTTP middleware turns it
into RFC 9457 ``application/problem+json``; the Socket.IO gateway puts the
same :meth:`YihaoError.to_problem` object in the ack; the FHIR facade turns it
into an ``OperationOutcome``.

    YihaoError (500 internal)
    ├── BadRequest (400 bad_request)
    │   └── MalformedJSON (400 malformed_json)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── ValidationFailed (422 validation_failed) — names each bad field
    ├── TooManyRequests (429 too_many_requests)
    └── ServiceUnavailable (503 service_unavailable)
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict

PROBLEM_BASE = "https://yihao.dev/problems/"


class FieldError(TypedDict):
    field: str
    reason: str


class YihaoError(Exception):
    # Per class, and an instance may refine it (a FHIR bundle refused only for access is 403).
    status: int = 500
    default_code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.code = code or self.default_code
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}
        # Set by code that already wrote this refusal to the audit log (e.g. AccessService),
        # so the central denial audit (middleware, gateway) does not write it twice.
        self.audited = False
        # Set by code that refuses something about a patient: the central refusal audit
        # then names the patient, so the refusal reaches the patient's access log.
        self.patient_id: int | None = None
        super().__init__(self.detail)

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            problem["instance"] = instance
        if self.errors:
            problem["errors"] = self.errors
        problem.update(self.extra)
        return problem


class BadRequest(YihaoError):
    status = 400
    default_code = "bad_request"
    title = "Bad request"


class MalformedJSON(BadRequest):
    default_code = "malformed_json"
    title = "Malformed JSON"


class Unauthorized(YihaoError):
    status = 401
    default_code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="yihao"'})
        super().__init__(detail, **kwargs)


class Forbidden(YihaoError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(YihaoError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class MethodNotAllowed(YihaoError):
    status = 405
    default_code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(YihaoError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class PayloadTooLarge(YihaoError):
    status = 413
    default_code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(YihaoError):
    status = 415
    default_code = "unsupported_media_type"
    title = "Unsupported media type"


class ValidationFailed(YihaoError):
    status = 422
    default_code = "validation_failed"
    title = "Validation failed"

    @classmethod
    def field(cls, field: str, reason: str, *, code: str | None = None) -> ValidationFailed:
        return cls(f"{field}: {reason}", code=code, errors=[{"field": field, "reason": reason}])


class TooManyRequests(YihaoError):
    status = 429
    default_code = "too_many_requests"
    title = "Too many requests"


class ServiceUnavailable(YihaoError):
    status = 503
    default_code = "service_unavailable"
    title = "Service unavailable"
