"""Health and metrics over plain HTTP, for HAProxy ``httpchk`` and Pacemaker.

``/`` and ``/health`` answer GET, HEAD and OPTIONS (HAProxy's bare
``option httpchk`` sends ``OPTIONS /``): ``200 OK`` while the receiver
routes, else ``503`` with a one-line reason (``ReceiverHealth``):
``DRAINING`` while ``rpc_zmq_drain_file`` exists or after SIGTERM,
``STUCK: ...`` when its loop has not turned for
``rpc_zmq_health_stuck_after`` seconds (1 by default), ``ZAP: ...`` when
CURVE is on and its ZAP handler thread died (every handshake would fail).
``GET /metrics`` gives the counters. Served by a daemon thread on
``rpc_zmq_health_bind_address``:``rpc_zmq_health_port`` (0 disables it).
The handler logs nothing above DEBUG: a stuck receiver is often one whose
log output blocks, and the page must still answer.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable

from nova_rpc_zmq.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Paths that answer the health status (HAProxy's default check asks ``/``).
HEALTH_PATHS = ("/", "/health")


class ReceiverHealth:
    """Why a receiver should get no traffic now, or None: the policy the
    health page applies, apart from the HTTP server that serves it.

    Reads a few attributes the receiver's loop writes (``turned``,
    ``draining``, ``authenticator``) and stats ``drain_file``; thread-safe,
    never blocks on the receiver, never raises.
    """

    def __init__(self, receiver: Any, drain_file: str | None = None,
                 stuck_after: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.receiver = receiver
        self.drain_file = drain_file or None
        self.stuck_after = float(stuck_after if stuck_after is not None
                                 else receiver.stuck_after)
        self._clock = clock

    @classmethod
    def from_settings(cls, receiver: Any, settings: Settings) -> "ReceiverHealth":
        """The policy for ``receiver`` with the options of ``settings``."""
        return cls(receiver, settings.rpc_zmq_drain_file,
                   float(settings.rpc_zmq_health_stuck_after))

    def __call__(self) -> str | None:
        """The one-line reason to answer 503, or None for 200."""
        receiver = self.receiver
        # draining first: an operator's decision outranks any fault
        if self.drain_file is not None and os.path.lexists(self.drain_file):
            return ("DRAINING: drain file %s exists (remove it to take "
                    "traffic again)" % self.drain_file)
        if getattr(receiver, "draining", False):
            return "DRAINING: stopping, handing held messages to local services"
        if getattr(receiver, "_stopping", False):
            return "STOPPING"
        idle = self._clock() - receiver.turned
        if idle > self.stuck_after:
            return ("STUCK: the routing loop has not turned for %.1f s "
                    "(rpc_zmq_health_stuck_after = %g)" % (idle, self.stuck_after))
        if getattr(receiver, "curve", False):
            auth = receiver.authenticator
            if auth is None or not auth.running:
                return ("ZAP: the CURVE authentication handler is not running, "
                        "so every CURVE handshake fails; restart the receiver")
        return None


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

        def health() -> tuple[bytes, int]:
            problem = status_fn()
            if problem is True or problem is None:
                return b"OK\n", 200
            text = "STOPPING" if problem is False else str(problem)
            # one line: HAProxy shows it in its stats and logs
            return ((text.splitlines() or ["UNHEALTHY"])[0] + "\n").encode(), 503

        class _Handler(BaseHTTPRequestHandler):
            def _send_health(self, with_body: bool) -> None:
                body, code = health()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if self.command == "OPTIONS":
                    self.send_header("Allow", "GET, HEAD, OPTIONS")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?", 1)[0] in HEALTH_PATHS:
                    self._send_health(with_body=False)
                    return
                # /metrics is rendered for GET only (a scrape is a GET)
                metrics_path = self.path.split("?", 1)[0] == "/metrics"
                self.send_response(405 if metrics_path else 404)
                if metrics_path:
                    self.send_header("Allow", "GET")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server API
                # HAProxy's bare `option httpchk` sends OPTIONS /: answer the
                # health status, body included, as to GET
                if self.path.split("?", 1)[0] in HEALTH_PATHS:
                    self._send_health(with_body=True)
                    return
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?", 1)[0] in HEALTH_PATHS:
                    self._send_health(with_body=True)
                    return
                ctype = "text/plain; charset=utf-8"
                if self.path.split("?", 1)[0] == "/metrics":
                    body, code = metrics_fn().encode(), 200
                    ctype = CONTENT_TYPE  # Prometheus text format 0.0.4
                else:
                    body, code = b"not found\n", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
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
