"""Socket.IO edge of the consult room: open, join (lobby), admit, presence, chat, signaling.

Durable things (life cycle, lobby, chat) are stream events on ``consult:<id>``
and replay with ``sync``. Presence and WebRTC signaling are ephemeral emits
(``presence``, ``signal``): they matter only to those connected now.

What is kept per socket lives here, with the sockets: the lock that relays one socket's
signals in arrival order and the counter that numbers them (``seq``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from server.consults import schemas
from server.consults.service import ConsultsService
from server.consults.states import consult_stream, live_room
from server.core.auth import Requester
from server.media.ice import ice_servers
from server.realtime.gateway import Gateway

PRESENCE = "presence"
SIGNAL = "signal"


class ConsultSockets:
    def __init__(self, gateway: Gateway, consults: ConsultsService) -> None:
        self.gateway = gateway
        self.sio = gateway.sio
        self.consults = consults
        self.room = consults.room
        # Signals of one socket are relayed one at a time, in arrival order, numbered from 1.
        self._signal_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._signal_seq: defaultdict[str, int] = defaultdict(int)

    def register(self) -> None:
        gateway = self.gateway
        gateway.add_room_provider(self.consults.reads.consult_rooms)
        gateway.add_disconnect_hook(self.disconnected)
        gateway.add_revocation_hook(self.revoked_from)
        gateway.on("consult.open", schemas.ConsultRef, self.open)
        gateway.on("consult.join", schemas.Join, self.join)
        gateway.on("consult.leave", schemas.ConsultRef, self.leave)
        gateway.on("consult.admit", schemas.Admit, self.admit)
        gateway.on("consult.media", schemas.Media, self.media)
        gateway.on("consult.presence", schemas.ConsultRef, self.get_presence)
        gateway.on("consult.chat", schemas.ChatSend, self.chat)
        gateway.on("consult.signal", schemas.Signal, self.signal)
        gateway.on("consult.ice_servers", schemas.ConsultRef, self.get_ice_servers)

    async def broadcast_presence(
        self, consult_id: int, members: list[dict[str, Any]] | None = None
    ) -> None:
        """Tell the consult's room who is in its session (``members`` when just read)."""
        if members is None:
            members = await self.room.presence(consult_id)
        await self.sio.emit(
            PRESENCE,
            {"consult_id": consult_id, "members": members},
            room=consult_stream(consult_id),
        )

    async def member_added(self, consult_id: int, user_id: int) -> None:
        """A user became a participant (requested, accepted, was invited): this node's
        sockets of that user enter the consult's room, re-checked as at connect."""
        for sid, _ in list(self.sio.manager.get_participants("/", f"user:{user_id}")):
            requester = (await self.sio.get_session(sid)).get("requester")
            if requester is None:
                continue
            for room in await self.consults.reads.consult_rooms(requester, consult_id):
                await self.sio.enter_room(sid, room)

    async def open(self, sid: str, requester: Requester, data: schemas.ConsultRef) -> Any:
        consult, head = await self.room.opened(requester, data.consult_id)
        await self.sio.enter_room(sid, consult_stream(data.consult_id))
        return {"consult": consult.model_dump(mode="json"), "head": head}

    async def join(self, sid: str, requester: Requester, data: schemas.Join) -> Any:
        answer, admitted = await self.room.join(sid, requester, data)
        await self.sio.enter_room(sid, consult_stream(data.consult_id))
        if admitted:
            await self.sio.enter_room(sid, live_room(data.consult_id))
            await self.broadcast_presence(data.consult_id, answer["members"])
        return answer

    async def leave(self, sid: str, requester: Requester, data: schemas.ConsultRef) -> Any:
        await self.room.check_member(requester, data.consult_id)
        left = await self.room.leave(sid, data.consult_id)
        await self.sio.leave_room(sid, live_room(data.consult_id))
        for consult_id, members in left.items():
            await self.broadcast_presence(consult_id, members)
        return {"left": bool(left)}

    async def consent_revoked(self, patient_id: int, institution_id: int) -> None:
        """The patient revoked the institution: its sockets leave the patient's consult rooms
        (chat and life-cycle pushes, the live session) on every node."""
        rooms = []
        for consult_id in await self.consults.reads.open_consult_ids(patient_id):
            rooms += [consult_stream(consult_id), live_room(consult_id)]
        await self.gateway.revoke_rooms(rooms, institution_id)

    async def revoked_from(self, sid: str, room: str) -> None:
        """A revoked socket left a consult's room: it is no longer present in that session."""
        _, _, ident = room.partition(":")
        in_room = ident.isdigit() and room == consult_stream(int(ident))
        if in_room:
            for consult_id, members in (await self.room.leave(sid, int(ident))).items():
                await self.broadcast_presence(consult_id, members)

    async def disconnected(self, sid: str) -> None:
        self._signal_locks.pop(sid, None)
        self._signal_seq.pop(sid, None)
        for consult_id, members in (await self.room.leave(sid)).items():
            await self.broadcast_presence(consult_id, members)

    async def reap(self, alive: set[str]) -> None:
        """Reaper of server/core/nodes.py: drop the ghosts of a dead node's sockets."""
        for consult_id in await self.room.reap_presence(alive):
            await self.broadcast_presence(consult_id)

    async def admit(self, sid: str, requester: Requester, data: schemas.Admit) -> Any:
        return await self.room.admit(requester, data)

    async def media(self, sid: str, requester: Requester, data: schemas.Media) -> Any:
        await self.room.set_media(sid, requester, data)
        await self.broadcast_presence(data.consult_id)
        return {"camera": data.camera, "mic": data.mic, "screen": data.screen}

    async def get_presence(self, sid: str, requester: Requester, data: schemas.ConsultRef) -> Any:
        await self.room.check_open(requester, data.consult_id)
        return {
            "consult_id": data.consult_id,
            "members": await self.room.presence(data.consult_id),
        }

    async def chat(self, sid: str, requester: Requester, data: schemas.ChatSend) -> Any:
        return await self.consults.chat.send(requester, data)

    async def signal(self, sid: str, requester: Requester, data: schemas.Signal) -> Any:
        # Taken before anything suspends: the handlers of one socket start in arrival
        # order, so the lock relays its signals in that order (and Redis keeps it).
        async with self._signal_locks[sid]:
            targets, message = await self.room.route_signal(sid, requester, data)
            self._signal_seq[sid] += 1
            message["seq"] = self._signal_seq[sid]
            for target in targets:
                await self.sio.emit(SIGNAL, message, to=target)
        return {"seq": message["seq"], "delivered": len(targets)}

    async def get_ice_servers(
        self, sid: str, requester: Requester, data: schemas.ConsultRef
    ) -> Any:
        await self.room.check_open(requester, data.consult_id)
        return ice_servers(self.consults.settings, requester.user_id)
