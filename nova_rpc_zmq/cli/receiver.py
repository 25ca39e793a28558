"""``nova-rpc-zmq-receiver``: run the per-host receiver until SIGTERM.

Signals: SIGTERM or SIGINT drains (stops accepting, hands what it holds
to the local services for at most ``rpc_zmq_drain_timeout`` seconds,
exits 0); a second one stops at once. SIGHUP re-reads the CURVE keys dir,
checks the ring file and re-reads the logging configuration, and keeps
running. Under systemd ``Type=notify`` it sends ``READY=1`` once it
listens (TCP and health port), ``STOPPING=1`` on SIGTERM and
``RELOADING=1`` / ``READY=1`` around a SIGHUP (``sdnotify``).

Exit status: 0 after SIGTERM/SIGINT, 2 with one line on stderr when the
configuration, the port or the IPC directory is wrong.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from nova_rpc_zmq import __version__
from nova_rpc_zmq.errors import RPCException

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger("nova-rpc-zmq-receiver")


def build_receiver(settings: Settings) -> Any:
    """A Receiver for ``settings`` (CURVE when ``rpc_zmq_curve`` is on)."""
    from nova_rpc_zmq.receiver import Receiver
    return Receiver(settings)


def reload_logging() -> str:
    """Re-read the logging configuration (SIGHUP) through
    ``nova_rpc_zmq.logs.reload_logging`` (oslo.log set up again from the
    configuration files); returns what was re-read, for the log line.
    Raises ConfigurationError for a now unusable logging configuration."""
    from nova_rpc_zmq import logs
    logs.reload_logging()
    return "logging configuration"


def check_ring(settings: Settings) -> str | None:
    """Parse the ring file (SIGHUP) so that an operator who edited it sees
    at once in the receiver's log whether it is usable; what was checked,
    or None without a ring matchmaker.

    The receiver does not route by the ring (services do, and re-read it
    within a second of a change); a bad file is logged, never fatal.
    """
    if settings.rpc_zmq_matchmaker != "ring":
        return None
    from nova_rpc_zmq.matchmaker.ring import load_ring_file
    path = settings.matchmaker_ringfile
    try:
        ring = load_ring_file(path)
    except (RPCException, OSError) as exc:
        LOG.error("ring file %s cannot be used: %s", path, exc)
        return "ring file %s (unusable)" % path
    return "ring file %s (%d topics)" % (path, len(ring.entries))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nova-rpc-zmq-receiver",
        description="Route inbound RPC messages of this host to its services.")
    parser.add_argument("--config-file", action="append", default=[],
                        help="nova.conf (INI) or Essex flagfile; repeatable")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__)
    # --debug, --log-file, --log-dir ... are oslo.log's (nova_rpc_zmq.logs)
    args, rest = parser.parse_known_args(argv)
    receiver = None
    health = None
    # a SIGTERM while starting (the receiver logs "listening on" before the
    # handlers below are in place) is kept and honoured, never the default
    # action that kills the process mid-start
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    try:
        from nova_rpc_zmq import netaddr
        cli = []
        for path in args.config_file:
            cli += ["--config-file", path]
        from nova_rpc_zmq import logs
        settings = logs.parse_args(cli + rest, "nova-rpc-zmq-receiver")
        receiver = build_receiver(settings)
        receiver.start()
        if settings.rpc_zmq_health_port:
            from nova_rpc_zmq.receiver.health import HealthServer
            health_host = (settings.rpc_zmq_health_bind_address
                           or settings.rpc_zmq_bind_address)
            if health_host != "*" and not netaddr.is_ip(health_host):
                # an interface name (eth0): serve on the address it has,
                # as the receiver does
                health_host = netaddr.resolve_bind_address(health_host)
            from nova_rpc_zmq.receiver.health import ReceiverHealth
            health = HealthServer(health_host,
                                  settings.rpc_zmq_health_port,
                                  status=ReceiverHealth.from_settings(
                                      receiver, settings),
                                  metrics=receiver.metrics)
            health.start()
    except RPCException as exc:  # bad config, port, ipc dir, servicegroup away
        sys.stderr.write("nova-rpc-zmq-receiver: error: %s\n" % exc)
        return 2
    except OSError as exc:
        sys.stderr.write("nova-rpc-zmq-receiver: error: health port %s:%s: %s; "
                         "set rpc_zmq_health_port to a free port (it defaults to "
                         "rpc_zmq_port + 2) or 0, or fix "
                         "rpc_zmq_health_bind_address\n"
                         % (settings.rpc_zmq_health_bind_address
                            or settings.rpc_zmq_bind_address,
                            settings.rpc_zmq_health_port, exc.strerror))
        if receiver is not None:
            receiver.stop()
            receiver.run()
        return 2

    from nova_rpc_zmq.receiver import sdnotify

    def _on_signal(signum: int, frame: Any) -> None:
        # runs between two bytecodes of the loop: only set flags (and one
        # datagram), the loop does the work
        if receiver.draining:
            receiver.stop()  # a second SIGTERM/SIGINT: do not wait
            return
        sdnotify.stopping("draining")
        receiver.drain()

    def _on_hup(signum: int, frame: Any) -> None:
        receiver.request_reload()

    def _reload() -> None:
        # in the loop's thread: a logging reconfiguration must not run
        # inside a log call that the signal interrupted
        sdnotify.reloading()
        try:
            done = receiver.reload()
            for step in (lambda: check_ring(settings), reload_logging):
                try:
                    what = step()
                except Exception:  # noqa: BLE001 - keep the old state, say so
                    LOG.exception("SIGHUP: a reload step failed; keeping the "
                                  "previous state")
                    continue
                if what:
                    done.append(what)
            LOG.info("SIGHUP: re-read %s", ", ".join(done) or "nothing")
        finally:
            sdnotify.ready()

    receiver.on_reload = _reload
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_hup)
    sys.stdout.write("nova-rpc-zmq-receiver: listening on %s\n" % receiver.endpoint)
    sys.stdout.flush()
    # only now: the TCP port and the health port accept connections
    sdnotify.ready("listening on %s" % receiver.endpoint)
    if early:
        _on_signal(early[0], None)
    try:
        receiver.run()
    finally:
        if health is not None:
            health.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
