"""Logs and metrics for operators.

Logs are one JSON object a line with the request id; they carry ids, never
patient data. Metrics live in a registry per app (not the process-global
one), so several apps in one process — tests, a cluster launcher — keep
separate counts.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.core import context

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = context.request_id.get()
        if request_id:
            entry["request_id"] = request_id
        # Structured fields passed with extra={...}.
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class QuerylessAccessLogger(AbstractAccessLogger):
    """Access log lines without the query string (``?patient=<name>`` is patient data).

    Off unless ``aiohttp.access`` is set to INFO or lower (``setup_logging`` sets it
    to WARNING); when on, a line names the method, the path, the status and the time.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1f ms",
            request.method,
            request.path,
            response.status,
            time * 1000,
            extra={"remote": request.remote, "status": response.status},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's own
    last-resort handler does), never to a stream that was replaced and closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(level: str, fmt: str) -> None:
    handler = StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access logs would repeat what the metrics middleware already counts.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # SQL statements and their parameters (patient data, password hashes) are never logged,
    # whatever the level: SQLAlchemy's engine and aiosqlite both log them at INFO/DEBUG.
    for name in ("sqlalchemy", "aiosqlite", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def library_logger(name: str) -> logging.Logger:
    """The logger handed to python-socketio / engine.io in place of ``logger=False``.

    Given ``False``, those libraries use their own module loggers and attach a plain
    ``StreamHandler`` to them: a handler's traceback went to stderr as plain text, beside
    (and before) the JSON log. A logger of ours has no handler of its own, so its records
    reach the root handler (JSON); it stays at WARNING, so the libraries' INFO lines (which
    quote payloads) never appear, whatever the root level.
    """
    logger = logging.getLogger(f"server.realtime.{name}")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return logger


class Metrics:
    def __init__(self) -> None:
        # The labelled children of the HTTP metrics by (method, route, status): prometheus'
        # labels() takes a lock and builds keys on each call; a route's children never change.
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "yihao_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "yihao_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )
        self.sockets = Gauge(
            "yihao_socketio_connections", "Connected Socket.IO clients", registry=self.registry
        )
        self.socket_events = Counter(
            "yihao_socketio_events",
            "Socket.IO events handled",
            ["event", "outcome"],
            registry=self.registry,
        )

    def http_children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """(request counter, latency histogram) of one method, route and status."""
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            if len(self._http) < 10_000:  # methods are the client's to name
                self._http[key] = children
        return children
