"""``yihao serve --workers N``: N server processes on one port, each a node of the cluster.

Every core of a machine. A supervisor (this module's :class:`Supervisor`, the process
``yihao serve`` started as) starts N worker processes, each running the whole app as a
node of its own — its own node id (``<node id>/w<index>``), heartbeat, leases and
presence, fanning out to the others through Redis with python-socketio's own manager,
exactly as separate machines do. So the guarantees are those of a cluster: streams
committed before they are pushed, replay from the database, one job runner per lease
tick.

The port: each worker binds it with ``SO_REUSEPORT`` (Linux) and the kernel balances
new connections across the listening workers. Chosen over one socket bound by the
supervisor and inherited by the workers because

- the kernel hashes each new connection to one listener, where a shared socket wakes
  every worker's ``epoll`` and the busiest loop tends to win the race for ``accept``;
- a worker that dies takes its listener with it, so new connections go only to live
  workers while it restarts (those already queued on it are reset), instead of
  waiting on a socket nobody accepts on.

The supervisor checks the port is free before it starts anything, so "address in use"
is one message, not N tracebacks.

A worker that exits unexpectedly is restarted under the same node id (after 0.5 s,
doubling up to 30 s while it keeps dying within seconds of its start), so a restarted
worker clears what its killed self left (``Nodes`` forgetters) instead of waiting for
the reaper. A worker that exits with code 2 (bad settings) stops the whole server: it
would only fail again. SIGTERM or SIGINT to the supervisor is forwarded (as SIGTERM)
to every worker, which shuts down gracefully; the supervisor exits 0 when they all
did. Workers run in their own session, so a terminal's Ctrl-C reaches the supervisor
only and each worker is told once. Each worker holds the read end of a pipe whose
write end only the supervisor has: if the supervisor is killed outright, the worker
reads end-of-file and shuts itself down, and no orphan keeps the port.

Socket.IO long-polling needs every request of one engine.io session on the process
that holds it; with SO_REUSEPORT a client's next request may reach another worker. So
with several workers clients connect with the websocket transport (one connection,
one process), and a long-polling request is answered with a 400 problem saying so
(:func:`polling_guard`). The web client connects websocket-only.

Several workers need PostgreSQL and Redis: the embedded mode (SQLite) stays one
process, and so does PostgreSQL without Redis (nothing would fan events out). Asked
for explicitly, more than one is refused with a message; by default (one per core)
the count falls back to one, with a warning when PostgreSQL is configured without
Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from server.config import Settings
from server.core.errors import BadRequest

logger = logging.getLogger(__name__)

# A worker that ran this long before it died is restarted at once (0.5 s); one that dies
# sooner waits twice as long each time, up to RESTART_MAX_DELAY.
RESTART_RESET_AFTER = 10.0
RESTART_MIN_DELAY = 0.5
RESTART_MAX_DELAY = 30.0


class Backoff:
    """How long to wait before restarting a process that died (a worker, a cluster node).

    One that ran ``RESTART_RESET_AFTER`` seconds is restarted after ``RESTART_MIN_DELAY``;
    one that keeps dying sooner waits twice as long each time, up to ``RESTART_MAX_DELAY``."""

    def __init__(self) -> None:
        self.failures = 0

    def delay(self, lived: float) -> float:
        """The wait before the next start, for a process that died after ``lived`` seconds."""
        self.failures = 0 if lived >= RESTART_RESET_AFTER else self.failures + 1
        return min(RESTART_MAX_DELAY, RESTART_MIN_DELAY * 2.0 ** max(0, self.failures - 1))


# How long the workers get to shut down (aiohttp's own shutdown_timeout is 10 s, then
# the app's cleanup) before the supervisor kills them.
STOP_TIMEOUT = 30.0
# The exit code of `yihao serve` for bad usage or settings (server/cli.py).
EXIT_USAGE = 2
NODE_ID_MAX = 100  # cluster_nodes.id, consult_presence.node


class WorkersError(Exception):
    """The worker count (or the event loop) asked for cannot be had; the message says why."""


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    ``os.cpu_count()`` counts the host's cores, which a container limited to two of
    sixteen would over-subscribe eightfold."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def reuse_port_supported() -> bool:
    """SO_REUSEPORT with the kernel balancing connections across listeners: Linux only."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def resolve_workers(settings: Settings, requested: int | None) -> int:
    """How many processes ``yihao serve`` runs: ``--workers``, else ``YIHAO_WORKERS``, else
    one per core where that is allowed. Raises :class:`WorkersError` for a count asked for
    that this deployment cannot run."""
    explicit = requested if requested is not None else (settings.workers or None)
    if explicit is not None and explicit < 1:
        raise WorkersError("--workers: must be at least 1")
    count = explicit or available_cores()
    if count == 1:
        return 1
    why = None
    if settings.is_sqlite:
        why = (
            "the embedded mode (SQLite) runs one process; several workers need "
            "YIHAO_DATABASE_URL (PostgreSQL) and YIHAO_REDIS_URL"
        )
    elif not settings.redis_url:
        why = "several workers fan events out to each other through Redis: set YIHAO_REDIS_URL"
    elif not reuse_port_supported():
        why = f"several workers share the port with SO_REUSEPORT, which {sys.platform} lacks"
    if why is None:
        return count
    if explicit is not None:
        raise WorkersError(f"--workers {explicit}: {why}")
    if not settings.is_sqlite:
        # PostgreSQL without Redis is a half-configured distributed mode: say so.
        logger.warning("serving with one worker process: %s", why)
    return 1


def worker_node_id(base: str, index: int) -> str:
    return f"{base}/w{index}"


def node_base(settings: Settings) -> str:
    """The node id the workers' ids derive from: the configured one, or this host and pid.

    Stable for the supervisor's life, so a restarted worker is the same node; the
    unconfigured one changes with every start of the supervisor, like a single node's."""
    from server.core.leases import node_id

    return settings.node_id or node_id()


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``yihao serve`` runs on: uvloop (``auto`` where installed), or None for
    asyncio's default. Raises :class:`WorkersError` when uvloop is asked for but missing."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise WorkersError(
                "YIHAO_EVENT_LOOP=uvloop: uvloop is not installed (pip install uvloop; it "
                "runs on Linux and macOS), or set YIHAO_EVENT_LOOP=asyncio"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def check_port_free(host: str, port: int) -> None:
    """Bind the port as the workers will (and let go): "in use" once, before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise WorkersError(f"{host}:{port} is in use by another process") from None
            raise WorkersError(f"cannot bind {host}:{port}: {exc.strerror}") from None


# ----------------------------------------------------------------------------- in a worker


WEBSOCKET_REQUIRED = (
    "this server runs several worker processes: connect with the websocket transport "
    '(socket.io-client: transports: ["websocket"]); long-polling needs every request of a '
    "session on one process (docs/realtime.md)"
)


@web.middleware
async def polling_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A Socket.IO long-polling request, with several workers: a 400 problem saying why."""
    if request.path.startswith("/socket.io/") and request.query.get("transport") == "polling":
        raise BadRequest(WEBSOCKET_REQUIRED, code="websocket_required")
    return await handler(request)


def watch_supervisor(fd: int) -> Callable[[web.Application], object]:
    """An ``on_startup`` hook: shut this worker down when the supervisor's pipe closes."""

    async def start(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return
            loop.remove_reader(fd)
            logger.warning("the supervisor is gone; shutting down")
            # The same graceful path as `kill -TERM` (aiohttp's run_app handles it).
            os.kill(os.getpid(), signal.SIGTERM)

        loop.add_reader(fd, readable)

    return start


def prepare_worker(app: web.Application, supervisor_fd: int) -> None:
    """What a worker adds to the app: the polling guard and the supervisor watch."""
    app.middlewares.append(polling_guard)
    app.on_startup.append(watch_supervisor(supervisor_fd))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the supervisor


@dataclass
class Worker:
    index: int
    node_id: str
    process: asyncio.subprocess.Process | None = None
    pipe: int | None = None  # the write end of the worker's supervisor pipe
    started: float = 0.0
    restarts: int = 0


class Supervisor:
    """Start ``count`` workers, restart the ones that die, stop them all on SIGTERM/SIGINT.

    ``argv(index, fd)`` is a worker's command line (``fd`` its end of the supervisor pipe);
    ``environ`` its environment, to which ``YIHAO_NODE_ID`` is added per worker."""

    def __init__(
        self,
        argv: Callable[[int, int], Sequence[str]],
        environ: dict[str, str],
        count: int,
        base_node_id: str,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.argv = argv
        self.environ = environ
        self.workers = [Worker(i, worker_node_id(base_node_id, i)) for i in range(count)]
        self.stop_timeout = stop_timeout
        self.stopping = asyncio.Event()
        self.exit_code = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        try:
            await asyncio.gather(*(self._keep(worker) for worker in self.workers))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def stop(self) -> None:
        self.stopping.set()

    async def _spawn(self, worker: Worker) -> None:
        read, write = os.pipe()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self.argv(worker.index, read),
                env={**self.environ, "YIHAO_NODE_ID": worker.node_id},
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(read,),
                start_new_session=True,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        worker.pipe = write
        worker.started = time.monotonic()
        logger.info(
            "worker started",
            extra={"worker": worker.index, "node": worker.node_id, "pid": worker.process.pid},
        )

    def _close_pipe(self, worker: Worker) -> None:
        if worker.pipe is not None:
            os.close(worker.pipe)
            worker.pipe = None

    async def _keep(self, worker: Worker) -> None:
        """Run one worker until the supervisor stops, restarting it when it dies."""
        backoff = Backoff()
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                await self._spawn(worker)
                assert worker.process is not None
                exited = asyncio.ensure_future(worker.process.wait())
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not exited.done():
                    await self._terminate(worker, exited)
                    return
                self._close_pipe(worker)
                code = worker.process.returncode
                if code == EXIT_USAGE:
                    logger.error(
                        "worker refused its settings; stopping",
                        extra={"worker": worker.index, "node": worker.node_id},
                    )
                    self.exit_code = EXIT_USAGE
                    self.stop()
                    return
                delay = backoff.delay(time.monotonic() - worker.started)
                worker.restarts += 1
                logger.error(
                    "worker exited; restarting it under the same node id",
                    extra={
                        "worker": worker.index, "node": worker.node_id, "code": code,
                        "restart_in_seconds": delay,
                    },
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), delay)
        finally:
            stopping.cancel()
            self._close_pipe(worker)

    async def _terminate(self, worker: Worker, exited: asyncio.Future[int]) -> None:
        assert worker.process is not None
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(exited, self.stop_timeout)
        except TimeoutError:
            logger.error(
                "worker did not stop in time; killing it",
                extra={"worker": worker.index, "node": worker.node_id},
            )
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
            self.exit_code = self.exit_code or 1
            return
        code = worker.process.returncode
        if code not in (0, -signal.SIGTERM):
            logger.error(
                "worker stopped with an error",
                extra={"worker": worker.index, "node": worker.node_id, "code": code},
            )
            self.exit_code = self.exit_code or 1
