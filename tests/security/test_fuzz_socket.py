"""Hypothesis-driven fuzzing of Socket.IO event payloads.

Every registered event gets arbitrary JSON (and objects with the event model's
own field names holding arbitrary values), plus events nobody registered. The
properties: every call is answered with an ack — ``{ok: true}`` or a 4xx
problem, never a 500 — the fuzzing connection stays up, and a bystander on
another connection keeps being served throughout. ``YIHAO_FUZZ_EXAMPLES`` sets
the examples per event (``make test``: 5; ``make fuzz``: 100).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hypothesis
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from server.app import create_app
from server.config import Settings
from server.container import Services
from server.core.api import SERVICES
from server.seed import seed_demo
from tests.helpers import Api, SocketClient

EXAMPLES = int(os.environ.get("YIHAO_FUZZ_EXAMPLES", "5"))

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**31 - 2, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "consult:1", "user:1", "../../etc/passwd", "'; DROP TABLE x"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def payloads(fields: list[str]) -> st.SearchStrategy[Any]:
    """Anything at all, or the model's own field names holding anything or plausible values."""
    plausible = (
        json_values
        | st.integers(min_value=-1, max_value=6)
        | st.sampled_from(["offer", "answer", "candidate", "bye", "fuzz-client-0001", "hello"])
    )
    if not fields:
        return json_values
    shaped = st.fixed_dictionaries({}, optional={name: plausible for name in fields})
    return json_values | shaped


def run_event(loop: asyncio.AbstractEventLoop, sock: SocketClient, event: str, fields: list[str],
              seen: list[tuple[str, Any, Any]]) -> None:  # fmt: skip
    @hypothesis.settings(
        parent=hypothesis.settings.default,
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(payload=payloads(fields))
    def check(payload: Any) -> None:
        ack = asyncio.run_coroutine_threadsafe(sock.call(event, payload, timeout=10), loop).result(
            15
        )
        seen.append((event, payload, ack))
        assert isinstance(ack, dict), ack
        if not ack.get("ok"):
            problem = ack["problem"]
            assert 400 <= problem["status"] < 500, (event, payload, problem)
            assert problem["type"].startswith("https://yihao.dev/problems/")
        assert sock.sio.connected, f"{event} {payload!r} dropped the connection"

    check()


@hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))  # fmt: skip
@given(name=st.text(min_size=1, max_size=80), payload=json_values)
def unknown_events(loop: asyncio.AbstractEventLoop, sock: SocketClient, known: set[str],
                   name: str, payload: Any) -> None:  # fmt: skip
    hypothesis.assume(name not in known and name not in ("connect", "disconnect", "message"))
    ack = asyncio.run_coroutine_threadsafe(sock.call(name, payload, timeout=10), loop).result(15)
    assert ack["ok"] is False and ack["problem"]["code"] == "unknown_event", (name, ack)


async def bystander(sock: SocketClient, stop: asyncio.Event, latencies: list[float]) -> None:
    """A well-behaved client asking for its streams, all the while."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        ack = await sock.call("sync", {"positions": {}}, timeout=10)
        assert ack["ok"], ack
        latencies.append(loop.time() - started)
        await asyncio.sleep(0.05)


async def test_socket_events_survive_fuzzing(aiohttp_client: Any, settings: Settings) -> None:
    app: web.Application = create_app(settings.with_overrides(socket_events_per_10s=1_000_000))
    api = Api(await aiohttp_client(app))
    services: Services = app[SERVICES]
    await seed_demo(services)
    gateway = services.gateway
    fuzzer = await api.socket("gp_zhang")
    other = await api.socket("dr_li")
    loop = asyncio.get_running_loop()
    stop, latencies = asyncio.Event(), []
    watcher = asyncio.create_task(bystander(other, stop, latencies))
    seen: list[tuple[str, Any, Any]] = []
    try:
        for event in gateway.registered_events:
            model = gateway.event_models[event]
            fields = sorted(model.model_fields) if model is not None else []
            await asyncio.to_thread(run_event, loop, fuzzer, event, fields, seen)
        await asyncio.to_thread(unknown_events, loop, fuzzer, set(gateway.registered_events))
    finally:
        stop.set()
        await watcher
    assert fuzzer.sio.connected and other.sio.connected
    status, body = await api.get("/healthz")
    assert status == 200, body
    events = len(gateway.registered_events)
    print(f"\nsocket fuzzing: {events} events, {len(seen)} payloads (+ unknown events), "
          f"bystander sync p50 {sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms "
          f"over {len(latencies)} calls")  # fmt: skip
    assert len(seen) >= events
    await api.close()
