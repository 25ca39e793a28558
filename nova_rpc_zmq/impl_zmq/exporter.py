"""A service process's metrics: ``GET /metrics`` on ``rpc_zmq_metrics_port``.

Off by default. When set, the driver starts a ``MetricsServer``: one native
thread (``Handler.spawn_native``) with an unpatched, blocking socket, so it
works the same in a process monkey-patched by eventlet and in a threaded
one, and answers even while the hub is busy. It serves the driver's
counters (``nova_rpc_zmq_driver_*_total``: calls, casts, timeouts, late
replies, local calls, drops by reason ...) and gauges (calls in flight,
outbound peers, open connections) in the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from nova_rpc_zmq import metrics, netaddr
from nova_rpc_zmq.concurrency import Handler, original
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.metrics import Counters, Family

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Counters shown from the first scrape on, at 0 (README names them).
ALWAYS = ("calls", "casts", "call_timeouts", "replies.late", "local.calls",
          "local.unready", "replies.direct_full", "no_host", "send_failed",
          "refused_by_peer", "consumer.received", "consumer.failed",
          "consumer.dropped.unknown_reply_host", "consumer.dropped.bad_call")
HELPS = {
    "calls": "Calls (call and multicall) sent.",
    "casts": "Casts, fanouts and notifications sent (one per host).",
    "call_timeouts": "Calls that got no (next) reply in time.",
    "replies.late": "Replies that came after their call gave up.",
    "local.calls": "Calls sent straight to a local service, not through "
                   "the receiver.",
    "consumer.dropped": "Requests this process dropped unrun, by reason.",
    "replies.dropped": "Replies dropped as malformed, by reason.",
    "replies.direct_style": "Replies read in the direct style (the reply "
                            "alone, from a service of ours on another host).",
}
#: The driver's gauges, name -> help, in the order shown; the driver hands
#: ``start`` a reader of each (``Gauges``).
GAUGES = {
    "calls_in_flight": "Calls waiting for their reply.",
    "outbound_peers": "Hosts with an open outbound socket.",
    "connections": "Open rpc connections (consumers) of this process.",
}
#: Name of a gauge of GAUGES -> a callable returning its value now; called
#: from the metrics thread, so it must only read (no lock, no I/O).
Gauges = Mapping[str, Callable[[], float]]
#: Seconds accept() waits, so that ``stop()`` is noticed.
ACCEPT_WAIT = 0.5
#: Longest request head read (a scrape's is a few hundred bytes).
MAX_REQUEST = 8192


def families(counters: Counters, gauges: Gauges) -> list[Family]:
    """Every family of a driver: its ``counters`` and each gauge of GAUGES
    read from ``gauges`` now; safe from any thread (only reads). Raises
    KeyError when ``gauges`` lacks one of GAUGES."""
    out = metrics.counter_families(counters, HELPS, ALWAYS)
    out += [Family(metrics.metric_name("driver", name), "gauge", text).add(gauges[name]())
            for name, text in GAUGES.items()]
    return out + metrics.process_families()


class MetricsServer:
    """Serves ``render()`` as ``GET /metrics`` on ``host``:``port``.

    Raises OSError when the port cannot be bound. ``port`` is the bound
    port (useful with 0 in tests). ``stop()`` returns within ACCEPT_WAIT.
    """

    def __init__(self, handler: Any, host: str, port: int, render: Any) -> None:
        socket = original("socket")
        bind = "" if host in ("*", "0.0.0.0") else host
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((bind, port))
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(ACCEPT_WAIT)
        self.port = self._sock.getsockname()[1]
        self._render = render
        self._stopping = False
        self._thread = handler.spawn_native(self._serve)

    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # timeout (stop() is seen) or closed
                continue
            try:
                conn.settimeout(2.0)  # a client that sends nothing is let go
                self._answer(conn)
            except OSError as exc:
                LOG.debug("metrics: client went away: %s", exc)
            except Exception:  # noqa: BLE001 - the page must keep serving
                LOG.exception("metrics: internal error rendering the page")
            finally:
                conn.close()

    def _answer(self, conn: Any) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        parts = head.split(b"\r\n", 1)[0].split()
        method = parts[0] if parts else b""
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
        ctype = "text/plain; charset=utf-8"
        if method not in (b"GET", b"HEAD"):
            status, body = "405 Method Not Allowed", b"GET only\n"
        elif path == b"/metrics":
            status, body, ctype = "200 OK", self._render().encode(), metrics.CONTENT_TYPE
        else:
            status, body = "404 Not Found", b"not found: try /metrics\n"
        conn.sendall(("HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n" % (status, ctype, len(body))
                      ).encode() + (body if method != b"HEAD" else b""))

    def stop(self) -> None:
        """Stop serving and close the port; returns within ACCEPT_WAIT."""
        self._stopping = True
        self._thread.join(ACCEPT_WAIT * 2 + 1)
        self._sock.close()


def start(settings: Settings, handler: Handler, counters: Counters,
          gauges: Gauges) -> MetricsServer | None:
    """A driver's metrics server (its ``counters`` and ``gauges``, see
    ``families``) when ``rpc_zmq_metrics_port`` is set, else None. A port
    that cannot be bound is logged, not raised: metrics must not keep a
    service from serving."""
    port = settings.rpc_zmq_metrics_port
    if not port:
        return None
    host = settings.rpc_zmq_health_bind_address or settings.rpc_zmq_bind_address
    try:
        if host != "*" and not netaddr.is_ip(host):
            host = netaddr.resolve_bind_address(host)
        server = MetricsServer(handler, host, port,
                               lambda: metrics.render(families(counters, gauges)))
    except (OSError, ConfigurationError) as exc:
        LOG.error("metrics: cannot serve on %s:%d (%s); set rpc_zmq_metrics_port "
                  "to a free port or 0", host, port, exc)
        return None
    LOG.info("metrics: serving GET /metrics on %s:%d", host, server.port)
    return server
