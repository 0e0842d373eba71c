"""The OpenAPI 3.1 document, built from the declared operations and their models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from server import __version__
from server.core.api import Operation
from server.core.idempotency import HEADER, MAX_KEY

REF = "#/components/schemas/{model}"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "stable machine-readable error code"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

STATUS_TEXT = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    503: "Service unavailable",
}


# Every authenticated write takes it (server/core/idempotency.py); one declaration here.
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Send a fresh key (e.g. a UUID) with a write you may retry, the same for "
    "all its retries: a repeat is answered with the first answer (Idempotent-Replayed: true), "
    "never done twice. 422 idempotency_key_reused: the key was used for a different request; "
    "409 idempotency_in_progress: the first is not answered yet (retry after Retry-After; if it "
    "persists, reload the object). Keys are kept 24 hours (IDEMPOTENCY_KEEP_HOURS).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY, "pattern": "^[ -~]+$"},
}


def build_openapi(operations: list[Operation]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template=REF) if models else ({}, {})
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": list(op.tags),
            "parameters": [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0} if is_int else {"type": "string"},
                }
                for name, is_int in op.path_params
            ],
            "responses": {},
        }
        if op.takes_idempotency_key:
            entry["parameters"].append(IDEMPOTENCY_PARAMETER)
            op_errors = {409, 422}
        else:
            op_errors = set()
        if op.query is not None:
            query_schema = op.query.model_json_schema(ref_template=REF)
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                entry["parameters"].append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if op.response is not None:
            entry["responses"][str(op.status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": refs[(op.response, "serialization")]}},
            }
        elif op.media_type is not None:
            entry["responses"][str(op.status)] = {
                "description": op.summary,
                "content": {op.media_type: {"schema": {"type": "string", "format": "binary"}}},
            }
        else:
            code = 204 if op.status == 200 else op.status
            entry["responses"][str(code)] = {"description": op.summary}
        statuses = set(op.errors) | op_errors
        if op.auth:
            statuses |= {401, 403}
            entry["security"] = [{"bearer": []}]
        else:
            entry["security"] = []
        if op.body is not None:
            statuses |= {400, 413, 415, 422}
        if op.query is not None or op.path_params:
            statuses |= {404, 422}
        for status in sorted(statuses):
            entry["responses"][str(status)] = {
                "description": STATUS_TEXT.get(status, "Error"),
                "content": {
                    "application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}
                },
            }
        paths.setdefault(op.openapi_path, {})[op.method.lower()] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Yihao API",
            "version": __version__,
            "description": "Telemedicine and cloud-hospital collaboration. Errors are "
            "RFC 9457 problem details (application/problem+json).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
