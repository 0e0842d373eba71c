"""Which recording a recorder's login is good for: media's answer to the consult room.

The consult room lets the recording worker into a session without lobby only while a
recording of that consult runs under the worker's login session (one login, one recording).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.media.models import Recording

# A worker may (re)join while its recording is starting or on; not once it is stopping.
JOINABLE = ("starting", "recording")


class RecorderSessions:
    async def running_recording_id(
        self, session: AsyncSession, consult_id: int, recorder_session_id: str
    ) -> int | None:
        """The id of the recording of ``consult_id`` that this login records, if it runs."""
        found: int | None = await session.scalar(
            select(Recording.id).where(
                Recording.consult_id == consult_id,
                Recording.recorder_session_id == recorder_session_id,
                Recording.state.in_(JOINABLE),
            )
        )
        return found
