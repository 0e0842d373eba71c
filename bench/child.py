"""The media benchmarks' server: the real app in a spawned child process, driven over a pipe.

The child (``serve(port, data_dir, conn)``, one per benchmark) sends "ready" once it
listens; the parent then runs its load and finally sends "stop". Keeping the server in
its own process keeps the load generator's CPU out of the server's figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any


def beside_server(
    serve: Callable[[int, str, Connection], None],
    port: int,
    run: Callable[[Connection, str], Coroutine[Any, Any, None]],
    *,
    stop_timeout: float = 10,
) -> None:
    """Start ``serve`` in a child on ``port`` with a fresh data folder, run ``run(conn, url)``."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    with tempfile.TemporaryDirectory() as data_dir:
        server = context.Process(target=serve, args=(port, data_dir, theirs))
        server.start()
        try:
            if not ours.poll(120) or ours.recv() != "ready":
                raise SystemExit("the server did not start")
            asyncio.run(run(ours, f"http://127.0.0.1:{port}/"))
        finally:
            ours.send("stop")
            server.join(stop_timeout)
            if server.is_alive():
                server.terminate()
                server.join()
