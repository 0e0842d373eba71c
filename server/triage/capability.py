"""The triage (智能导诊) as a capability: its routes."""

from __future__ import annotations

from server.core.capability import Capability
from server.triage.routes import routes

capability = Capability(name="triage", routes=(routes,))
