"""A cluster that heals: a node killed with -9 comes back by itself under the same node id.

Coming back under its id, the node clears at start what its killed self left (the
consult presence of its sockets), so the room shows no ghost long before the reaper
(``YIHAO_NODE_DEAD_AFTER_SECONDS``, set to a minute here) would have found it dead.

Figures (time to heal, time to a clean presence) are printed; run with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
import socketio

from chaos.clients import Member, enter_consult, open_clinic, presence
from server.cluster import HOST, LocalCluster, Process, free_port, node_environ
from tests.cluster.client import place
from tests.cluster.conftest import MakeCluster

pytestmark = pytest.mark.integration

# Long: a ghost that goes away sooner was cleared by the restarted node, not by the reaper.
DEAD_AFTER = 60.0
DEADLINE = 60.0  # generous: the machine is shared


async def readyz_node(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/readyz") as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["node"])


async def test_a_killed_node_comes_back_under_its_id_and_leaves_no_ghost(
    node_env: dict[str, str], make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    env = dict(node_env, YIHAO_NODE_DEAD_AFTER_SECONDS=str(DEAD_AFTER))
    cluster: LocalCluster = await make_cluster(env, nodes=2, nginx=True, heal=True)
    victim = 1
    async with aiohttp.ClientSession() as http:
        clinic = await open_clinic(http, cluster.url)
        ids = [await readyz_node(http, m.url) for m in cluster.members]
        assert ids == [m.node_id for m in cluster.members] and len(set(ids)) == 2
        # dr_li's tabs through nginx, until each node holds at least one.
        tabs: list[Member] = []
        where: dict[int, int] = {}
        try:
            while set(where.values()) != {0, 1}:
                assert len(tabs) < 12, "nginx put every tab on one node"
                tab = Member(clinic, clinic.host, "dr_li")
                tabs.append(tab)
                where[id(tab)] = await place(http, cluster, tab, clinic.host)
            await enter_consult(tabs)
            watcher = next(t for t in tabs if where[id(t)] != victim)
            on_victim = [t for t in tabs if where[id(t)] == victim]
            assert len(await presence(watcher)) == len(tabs)

            cluster.kill_node(victim)
            killed_at = time.monotonic()
            healed = await cluster.wait_healed(victim, DEADLINE)
            # Started again at once (the first back-off is 0.5 s); ready once it has booted.
            restarted = cluster.members[victim].started - killed_at
            assert 0 < restarted < 3, restarted
            assert await readyz_node(http, cluster.node_url(victim)) == ids[victim]
            assert cluster.members[victim].restarts == 1

            # Every tab of the dead node reconnected (through nginx) and joined again; the
            # room lists each tab once: what the killed node left is gone.
            clean_at = None
            seen: list[int] = []
            while clean_at is None:
                assert time.monotonic() - killed_at < DEAD_AFTER / 2, f"presence sizes {seen}"
                rejoined = all(t.joined.is_set() for t in tabs) and all(
                    t.connects > 1 for t in on_victim
                )
                with contextlib.suppress(socketio.exceptions.SocketIOError, TimeoutError):
                    listed = len(await presence(watcher))
                    seen.append(listed)
                    if rejoined and listed == len(tabs):
                        clean_at = time.monotonic()
                await asyncio.sleep(0.1)  # the room's presence, asked as a client would
            members = await presence(watcher)
            assert [m["user_id"] for m in members] == [clinic.host_id] * len(tabs)

            # A restart by hand (a deploy) is not taken for a death: the healer, woken by the
            # old process's exit while the new one boots, leaves the new one alone.
            pid = cluster.members[victim].pid
            await cluster.restart_node(victim)
            assert cluster.members[victim].pid != pid and cluster.members[victim].running
            assert cluster.members[victim].restarts == 1
            assert await readyz_node(http, cluster.node_url(victim)) == ids[victim]
        finally:
            for tab in tabs:
                await tab.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "server.cluster"]
    assert any(
        f"node{victim} ({ids[victim]}, pid" in line
        and "exited with signal SIGKILL; restart 1" in line
        for line in logged
    ), logged
    print(
        f"\nkill -9 node {victim} of 2 behind nginx ({len(on_victim)} of {len(tabs)} consult "
        f"tabs on it): started again {restarted * 1000:.0f} ms and ready as {ids[victim]} "
        f"{healed * 1000:.0f} ms after the kill; "
        f"presence clean {(clean_at - killed_at) * 1000:.0f} ms after the kill "
        f"(the reaper would take {DEAD_AFTER:.0f} s)"
    )


NODE_LINE = re.compile(r"^(node\d+): id (\S+) port (\d+) pid (\d+) log ", re.MULTILINE)


async def wait_for(process: Process, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
    """Wait for ``pattern`` in the process's output (stderr and stdout, in its log)."""
    deadline = time.monotonic() + timeout
    while (found := re.search(pattern, process.log.read_text(errors="replace"))) is None:
        assert process.running, process.tail()
        assert time.monotonic() < deadline, f"no {pattern!r} in:\n{process.tail()}"
        await asyncio.sleep(0.2)  # a child's output, in a file: nothing to be notified by
    return found


async def test_yihao_cluster_restarts_a_killed_node_and_stops_its_children_on_sigterm(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "server.cli", "cluster", "--nodes", "2", "--port", str(port)]
    command = Process("cluster", port, tmp_path / "cluster.log", argv, node_environ(node_env))
    command.start()
    children: list[psutil.Process] = []
    try:
        await wait_for(command, r"Yihao cluster of 2 serving on \S+ \(healing\)")
        nodes = {m[1]: m for m in NODE_LINE.finditer(command.log.read_text())}
        assert sorted(nodes) == ["node0", "node1"]
        _, node_id, node_port, pid = nodes["node1"].groups()
        assert node_id.endswith("/node1") and f":{port}/" in node_id  # <host>:<port>/node<i>
        url = f"http://{HOST}:{node_port}"
        async with aiohttp.ClientSession() as http:
            assert await readyz_node(http, url) == node_id
            os.kill(int(pid), signal.SIGKILL)
            killed_at = time.monotonic()
            again = await wait_for(
                command, rf"node1 \({re.escape(node_id)}\) started again: pid (\d+)"
            )
            assert int(again[1]) != int(pid)
            while True:  # the new process answers on the node's port, as the same node
                with contextlib.suppress(aiohttp.ClientError, AssertionError):
                    if await readyz_node(http, url) == node_id:
                        break
                assert time.monotonic() - killed_at < DEADLINE, command.tail()
                await asyncio.sleep(0.1)  # a process starting up: nothing to be notified by
            healed = time.monotonic() - killed_at
            async with http.get(f"http://{HOST}:{port}/readyz") as response:
                assert response.status == 200  # and nginx in front still routes
        assert "exited with signal SIGKILL; restart 1" in command.tail(100)
        assert command.popen is not None
        children = psutil.Process(command.popen.pid).children(recursive=True)
        assert {int(again[1]), int(nodes["node0"][4])} <= {c.pid for c in children}

        command.signal(signal.SIGTERM)
        assert await asyncio.to_thread(command.popen.wait, DEADLINE) == 0
        _, alive = psutil.wait_procs(children, timeout=DEADLINE)
        assert not alive, alive
        assert "cluster stopped" in command.tail()
    finally:
        if command.running:  # the test failed: leave no node or nginx behind
            assert command.popen is not None
            children = children or psutil.Process(command.popen.pid).children(recursive=True)
            command.signal(signal.SIGKILL)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        command.reap(time.monotonic() + 10)
    print(f"\nyihao cluster: node1 ({node_id}) killed, ready again in {healed * 1000:.0f} ms")
