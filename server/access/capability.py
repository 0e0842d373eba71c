"""Access as a capability: its tables and its one check; no routes or events of its own
(the patient's consent routes are records', the care routes identity's)."""

from __future__ import annotations

from server.core.capability import Capability

capability = Capability(name="access")
