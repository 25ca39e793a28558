"""``nova-rpc-zmq-receiver``: run the per-host receiver until SIGTERM.

Exit status: 0 after SIGTERM/SIGINT, 2 with one line on stderr when the
configuration, the port or the IPC directory is wrong.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from nova_rpc_zmq.errors import RPCException

LOG = logging.getLogger("nova-rpc-zmq-receiver")


def build_receiver(settings: Any) -> Any:
    """A Receiver for ``settings`` (CURVE when ``rpc_zmq_curve`` is on)."""
    from nova_rpc_zmq.receiver import Receiver
    return Receiver(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nova-rpc-zmq-receiver",
        description="Route inbound RPC messages of this host to its services.")
    parser.add_argument("--config-file", action="append", default=[],
                        help="nova.conf (INI) or Essex flagfile; repeatable")
    parser.add_argument("--debug", action="store_true")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    receiver = None
    health = None
    try:
        from nova_rpc_zmq import config, netaddr
        cli = []
        for path in args.config_file:
            cli += ["--config-file", path]
        settings = config.parse_args(cli + rest)
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
            health = HealthServer(health_host,
                                  settings.rpc_zmq_health_port,
                                  status=receiver.stuck,
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
                         % (getattr(settings, "rpc_zmq_health_bind_address", None)
                            or getattr(settings, "rpc_zmq_bind_address", "?"),
                            getattr(settings, "rpc_zmq_health_port", "?"),
                            exc.strerror))
        if receiver is not None:
            receiver.stop()
            receiver.run()
        return 2

    def _on_signal(signum: int, frame: Any) -> None:
        LOG.info("signal %d: stopping", signum)
        receiver.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.stdout.write("nova-rpc-zmq-receiver: listening on %s\n" % receiver.endpoint)
    sys.stdout.flush()
    try:
        receiver.run()
    finally:
        if health is not None:
            health.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
