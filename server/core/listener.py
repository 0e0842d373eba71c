"""Health of this node's Redis listener: is the Socket.IO manager subscribed to the cluster channel?

A node whose listener has dropped still accepts requests and commits events,
but its clients stop hearing what other nodes publish until python-socketio's
retry loop subscribes again. ``/readyz`` reports it so that operators (and a
load balancer's readiness probe) can see it; clients meanwhile catch up by
sequence number, so nothing is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any


def redis_listener_status(manager: Any) -> str:
    """``"ok"`` or ``"unavailable: <why>"`` for an ``AsyncRedisManager``."""
    task = getattr(manager, "thread", None)
    if not isinstance(task, asyncio.Task) or task.done():
        return "unavailable: listener not running"
    pubsub = getattr(manager, "pubsub", None)
    connection = getattr(pubsub, "connection", None)
    if pubsub is None or connection is None or not connection.is_connected:
        return "unavailable: not connected"
    if not pubsub.subscribed:
        return "unavailable: not subscribed"
    return "ok"
