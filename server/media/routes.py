"""HTTP edge of consult recording: the list of a consult's recordings and the media file."""

from __future__ import annotations

from aiohttp import web

from server.container import services
from server.core.api import Call, Routes
from server.media.schemas import RecordingList

routes = Routes(tag="recordings")


@routes.op(
    "GET",
    r"/api/v1/consults/{consult_id:\d+}/recordings",
    summary="The recordings of a consult: state, duration, SHA-256 (those who may see it)",
    response=RecordingList,
    errors=(404,),
)
async def list_recordings(call: Call[None, None]) -> RecordingList:
    items = await services(call).recording.list_for(call.user, call.path_int("consult_id"))
    return RecordingList(items=items)


@routes.op(
    "GET",
    r"/api/v1/recordings/{recording_id:\d+}/media",
    summary="A finished recording's WebM file (VP8/Opus; range requests); every access audited",
    media_type="video/webm",
    errors=(404, 409),
)
async def recording_media(call: Call[None, None]) -> web.StreamResponse:
    path, recording = await services(call).recording.media(call.user, call.path_int("recording_id"))
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "video/webm",
            "Content-Disposition": f'inline; filename="{recording.file_name}"',
            "Cache-Control": "private, no-store",
        },
    )
