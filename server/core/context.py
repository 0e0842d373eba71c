"""Per-request context that logs and the audit trail read: request id and client address.

Set by the HTTP middleware and the Socket.IO gateway at the edge; read deep
inside without threading the values through every service signature.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
client_ip: ContextVar[str | None] = ContextVar("client_ip", default=None)
