"""Health and metrics over plain HTTP, for HAProxy ``httpchk`` and Pacemaker.

``GET /`` or ``/health`` answers ``200 OK`` while the receiver loop runs;
``GET /metrics`` gives the counters as ``name value`` lines. Served by a
daemon thread on ``rpc_zmq_health_port`` (0 disables it).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

LOG = logging.getLogger(__name__)


class HealthServer:
    """Serves ``status()`` (bool) and ``metrics()`` (text) over HTTP."""

    def __init__(self, host: str, port: int, status: Callable[[], bool],
                 metrics: Callable[[], str]) -> None:
        status_fn, metrics_fn = status, metrics

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path in ("/", "/health"):
                    ok = status_fn()
                    body = b"OK\n" if ok else b"STOPPING\n"
                    code = 200 if ok else 503
                elif self.path == "/metrics":
                    body, code = metrics_fn().encode(), 200
                else:
                    body, code = b"not found\n", 404
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                LOG.debug("health: " + fmt, *args)

        bind = "" if host in ("*", "0.0.0.0") else host
        self._server = ThreadingHTTPServer((bind, port), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
