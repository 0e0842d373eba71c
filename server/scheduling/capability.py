"""Scheduling as a capability: schedules, slots and appointments over REST."""

from __future__ import annotations

from server.core.capability import Capability
from server.scheduling.routes import routes

capability = Capability(name="scheduling", routes=(routes,))
