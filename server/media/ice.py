"""ICE servers for WebRTC clients, with short-lived TURN credentials.

TURN credentials follow coturn's REST-API scheme (``use-auth-secret`` with
``static-auth-secret``): the username is ``"<expiry unix time>:<user id>"``
and the credential is ``base64(HMAC-SHA1(secret, username))``. coturn checks
both without asking us, and refuses the username once its time has passed, so
a leaked credential is worth little. STUN URLs need no credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from server.config import Settings


def turn_credential(
    secret: str, user_id: int, ttl: int, now: float | None = None
) -> dict[str, str]:
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "credential": base64.b64encode(digest).decode()}


def ice_servers(settings: Settings, user_id: int, now: float | None = None) -> dict[str, Any]:
    """The RTCConfiguration.iceServers list for one user, and how long it is good for."""
    stun = [url for url in settings.ice_servers if url.startswith(("stun:", "stuns:"))]
    turn = [url for url in settings.ice_servers if url.startswith(("turn:", "turns:"))]
    servers: list[dict[str, Any]] = []
    if stun:
        servers.append({"urls": stun})
    if turn and settings.turn_secret:
        credential = turn_credential(
            settings.turn_secret, user_id, settings.turn_credential_ttl_seconds, now
        )
        servers.append({"urls": turn, **credential})
    return {"ice_servers": servers, "ttl": settings.turn_credential_ttl_seconds}
