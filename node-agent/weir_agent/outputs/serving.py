"""The agent's HTTP endpoint: ``/metrics``, ``/readyz`` and ``/healthz``.

- ``/metrics``: the Prometheus exposition (maps are read at scrape time).
- ``/readyz``: 200 once every targeted policy has been attempted (attached, or
  failed and reported) after the policy source first synced; 503 before.
- ``/healthz``: 200 while the main loop makes progress; 503 when it has not
  beaten for ``stall_seconds`` (a stuck loop that a restart would cure).
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


class Health:
    def __init__(self, *, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.ready = threading.Event()
        self.last_beat = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self.last_beat


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


def app(
    *, registry: CollectorRegistry, health: Health
) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/readyz":
            ok = health.ready.is_set()
            body = b"ready\n" if ok else b"policies not attempted yet\n"
        elif path == "/healthz":
            stalled = health.stalled_for()
            ok = stalled < health.stall_seconds
            body = b"ok\n" if ok else f"main loop stalled for {stalled:.0f}s\n".encode()
        else:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response(
            "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [body]

    return route


def serve(
    *, addr: str, registry: CollectorRegistry, health: Health
) -> tuple[WSGIServer, threading.Thread]:
    host, _, port = addr.rpartition(":")
    server = make_server(
        host or "0.0.0.0",
        int(port),
        app(registry=registry, health=health),
        server_class=_Server,
        handler_class=_Quiet,
    )
    thread = threading.Thread(target=server.serve_forever, name="weir-http", daemon=True)
    thread.start()
    return server, thread
