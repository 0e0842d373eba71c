"""The capability protocol: what a capability package hands the app, declared once.

Each capability package has a ``capability.py`` exposing one :class:`Capability`;
``create_app`` loops over the list in :mod:`server.capabilities` and, for each,
adds its REST routes (and any other HTTP it mounts, such as FHIR), registers its
socket events and hooks on the gateway, its background jobs on the leases, its
``cleanup_ctx`` lifespans, and the patient resolvers of its refusals. Nothing else
adds to the app, the gateway or the jobs: what a capability contributes is read
here, in one place.

Every field takes the built :class:`~server.container.Services` (complete by then),
so a capability never reaches for a global or patches another object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.core.api import Routes
from server.core.leases import Periodic

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute

    from server.container import Services
    from server.realtime.gateway import Gateway

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
# (the id column of an object's table, its patient column): how a refusal naming the
# object's id (``consult_id=…``) finds the patient whose access log it belongs in.
PatientColumn = tuple["InstrumentedAttribute[int]", "InstrumentedAttribute[int]"]


def _no_jobs(services: Services) -> Iterable[Periodic]:
    return ()


def _no_lifespans(services: Services) -> Iterable[CleanupContext]:
    return ()


@dataclass(frozen=True)
class Capability:
    name: str
    # REST operations, added in this order (OpenAPI lists them so).
    routes: tuple[Routes, ...] = ()
    # Other HTTP the capability serves outside the REST tables (the FHIR facade).
    mount: Callable[[web.Application, Services], None] | None = None
    # Registers its client → server events, room providers and socket hooks.
    socket: Callable[[Gateway, Services], None] | None = None
    # Background jobs on leases: each tick runs on one node of the cluster.
    jobs: Callable[[Services], Iterable[Periodic]] = _no_jobs
    # cleanup_ctx lifespans (create, yield, dispose), in start order.
    lifespan: Callable[[Services], Iterable[CleanupContext]] = _no_lifespans
    # Run at the app's shutdown, before the lifespans unwind (recordings stop first).
    on_shutdown: Callable[[Services], Iterable[Callable[[web.Application], Any]]] | None = None
    # Payload or path key → (id column, patient column) for refusals naming that key.
    patient_resolvers: Mapping[str, PatientColumn] | None = None
