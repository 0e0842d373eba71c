"""The pre-call check: a user's picture comes back through the server, with the server's figures."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer

from server.app import SERVICES_KEY, create_app
from server.config import Settings
from server.container import Services
from server.seed import seed_demo
from tests.helpers import Api
from tests.media.support import HEIGHT, WIDTH, PrecallClient


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """The server closes peers from its own callbacks, on its own time; wait to see it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_check_echoes_the_picture_and_reports_the_link(
    backend: str, api: Api, network: Services
) -> None:
    sock = await api.socket("patient_wang")
    check = PrecallClient(sock)
    try:
        answer = await check.start()
        assert answer["type"] == "answer" and answer["expires_in"] == 120

        video = await check.frames("video", 5)
        assert all((f.width, f.height) == (WIDTH, HEIGHT) for f in video)
        assert await check.frames("audio", 2)

        stats = await check.stats_until(lambda s: s["verdict"] != "measuring")
        assert stats["peer_id"] == answer["peer_id"]
        assert stats["state"] == "connected"
        assert 0 < stats["round_trip_ms"] < 300
        assert stats["packet_loss"] < 0.02
        assert stats["bitrate_kbps"] > 100
        # Loopback is "good" on an idle machine; on a loaded one the event loop's delays show
        # as jitter, and the verdict must then say so instead of hiding it.
        assert stats["verdict"] in ("good", "poor")
        assert (stats["verdict"] == "poor") == (stats["jitter_ms"] > 30), stats
        assert len(stats["reasons"]) == (stats["verdict"] == "poor"), stats
        assert {s["kind"] for s in stats["streams"]} == {"audio", "video"}
        assert all(s["packets_received"] > 0 for s in stats["streams"])

        assert (await sock.call("precall.stop", {})) == {"ok": True, "data": {}}
        assert len(network.precall) == 0
        gone = await sock.call("precall.stats", {})
        assert gone["problem"]["status"] == 404 and gone["problem"]["code"] == "no_precall"
    finally:
        await check.close()


async def test_one_check_per_connection_and_a_bounded_number_per_process(
    backend: str, api: Api, network: Services
) -> None:
    first_sock = await api.socket("patient_wang")
    first = PrecallClient(first_sock)
    again = PrecallClient(first_sock)
    other = PrecallClient(await api.socket("gp_zhang"))
    try:
        await first.start()
        refused = await again.offer()
        assert refused["problem"]["status"] == 409
        assert refused["problem"]["code"] == "precall_active"

        network.precall.max_peers = 1
        busy = await other.offer()
        assert busy["problem"]["status"] == 429 and busy["problem"]["code"] == "precall_busy"
        assert len(network.precall) == 1
    finally:
        await asyncio.gather(first.close(), again.close(), other.close())


async def test_unusable_offers_are_refused(backend: str, api: Api, network: Services) -> None:
    sock = await api.socket("patient_wang")
    bad = await sock.call("precall.offer", {"sdp": "v=0\r\nnonsense", "type": "offer"})
    assert bad["problem"]["status"] == 400 and bad["problem"]["code"] == "bad_sdp"
    wrong = await sock.call("precall.offer", {"sdp": "v=0", "type": "answer"})
    assert wrong["problem"]["status"] == 422
    assert [e["field"] for e in wrong["problem"]["errors"]] == ["type"]
    assert len(network.precall) == 0


async def test_a_disconnect_closes_the_peer(backend: str, api: Api, network: Services) -> None:
    sock = await api.socket("patient_wang")
    check = PrecallClient(sock)
    try:
        await check.start()
        await check.frames("video", 1)
        server_pc = next(iter(network.precall.peers.values())).pc
        await sock.close()
        await until(lambda: not network.precall.peers and server_pc.connectionState == "closed")
    finally:
        await check.close()


async def test_a_check_ends_after_its_lifetime_and_the_client_is_told(
    backend: str, api: Api, network: Services
) -> None:
    network.precall.max_seconds = 1
    check = PrecallClient(await api.socket("patient_wang"))
    try:
        answer = await check.start()
        closed = await asyncio.wait_for(check.closed, 10)
        assert closed == {"peer_id": answer["peer_id"], "reason": "expired"}
        assert len(network.precall) == 0
    finally:
        await check.close()


def open_fds() -> int:
    """Open descriptors but the SQLite pool's database files (a bounded pool may grow by a
    connection, three files each, when more events read at once: that is no leak)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if not target.endswith((".db", ".db-wal", ".db-shm")):
            count += 1
    return count


def media_threads() -> int:
    """Threads other than the pools bounded by configuration: the loop's default executor
    (``asyncio_N``, at most min(32, cpus + 4)) and one per pooled SQLite connection."""
    return sum(
        1
        for t in threading.enumerate()
        if not t.name.startswith("asyncio_") and "_connection_worker_thread" not in t.name
    )


async def test_many_checks_leave_nothing_behind(backend: str, api: Api, network: Services) -> None:
    sock = await api.socket("patient_wang")

    async def one_check() -> None:
        check = PrecallClient(sock)
        try:
            await check.start()
            await check.frames("video", 1)
            assert (await sock.call("precall.stop", {}))["ok"]
        finally:
            await check.close()

    for _ in range(5):  # warm up: codec libraries, the executor's threads
        await one_check()
    fds, threads = open_fds(), media_threads()
    for _ in range(50):
        await one_check()
    assert len(network.precall) == 0
    assert open_fds() <= fds + 5
    assert media_threads() <= threads + 3, [t.name for t in threading.enumerate()]


async def test_shutdown_closes_open_checks(settings: Settings) -> None:
    app = create_app(settings)
    services: Services = app[SERVICES_KEY]
    server = TestServer(app)
    # The check's socket stays open to the end: don't wait the default 60 s for it to go.
    await server.start_server(shutdown_timeout=1)
    async with TestClient(server) as client:
        await seed_demo(services)
        api = Api(client)
        check = PrecallClient(await api.socket("patient_wang"))
        await check.start()
        server_pc = next(iter(services.precall.peers.values())).pc
    assert len(services.precall) == 0
    assert server_pc.connectionState == "closed"
    await check.close()
    await api.close()
