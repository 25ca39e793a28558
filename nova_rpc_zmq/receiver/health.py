"""Health and metrics over plain HTTP, for HAProxy ``httpchk`` and Pacemaker.

``GET /`` or ``/health`` answers ``200 OK`` while the receiver routes, and
``503`` with the reason (``STOPPING``, or ``STUCK: ...`` when its loop has
not turned for ``rpc_zmq_health_stuck_after`` seconds) otherwise;
``GET /metrics`` gives the counters as ``name value`` lines. Served by a
daemon thread on ``rpc_zmq_health_bind_address``:``rpc_zmq_health_port``
(0 disables it). The handler logs nothing above DEBUG: a stuck receiver is
often one whose log output blocks, and the page must still answer.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

LOG = logging.getLogger(__name__)


class HealthServer:
    """Serves ``status()`` and ``metrics()`` (text) over HTTP.

    ``status`` returns None when healthy, else the one-line reason it is
    not (a bool is accepted too: True is healthy). Raises OSError when the
    port cannot be bound.
    """

    def __init__(self, host: str, port: int,
                 status: Callable[[], "str | bool | None"],
                 metrics: Callable[[], str]) -> None:
        status_fn, metrics_fn = status, metrics

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path in ("/", "/health"):
                    problem = status_fn()
                    if problem is True or problem is None:
                        body, code = b"OK\n", 200
                    else:
                        text = "STOPPING" if problem is False else str(problem)
                        body, code = (text + "\n").encode(), 503
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
