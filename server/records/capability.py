"""Records as a capability: the REST record routes and the FHIR R4 facade."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from server.core.capability import Capability
from server.records.facade import add_fhir_routes
from server.records.routes import routes

if TYPE_CHECKING:
    from server.container import Services


def _mount(app: web.Application, services: Services) -> None:
    add_fhir_routes(app, services.settings, services.limits)


capability = Capability(name="records", routes=(routes,), mount=_mount)
