"""The escalation job: a loop in every node; each consult is escalated once (see the service)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from server.consults.service import ConsultsService

logger = logging.getLogger(__name__)


def escalation_job(consults: ConsultsService, interval: int) -> Callable[..., Any]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                escalated = await consults.escalate_overdue()
                if escalated:
                    logger.info("consults escalated", extra={"consult_ids": escalated})
            except Exception:
                logger.exception("consult escalation failed; retrying next round")

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop()) if interval else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx
