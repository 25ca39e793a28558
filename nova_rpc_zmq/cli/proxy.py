"""``nova-rpc-zmq-proxy`` (also ``oslo-messaging-zmq-proxy``): a ROUTER
proxy for services with ``[oslo_messaging_zmq] use_router_proxy = true``,
with a PUB/SUB publisher for ``use_pub_sub = true``, or a local publisher.

    nova-rpc-zmq-proxy --config-file /etc/oslo/zeromq.conf \\
        --log-file /var/log/oslo/zeromq-router-proxy.log \\
        --host node-123 --frontend-port 50001 --backend-port 50002 \\
        [--publisher-port 50003]
    nova-rpc-zmq-proxy --local-publisher --config-file /etc/oslo/zeromq.conf \\
        --host localhost --publisher-port 60001

Binds its ports (0 or unset: random ports in the services' port
range), registers ``host:frontend:backend`` (and with a publisher
``host:frontend:publisher`` under ``proxy/publisher``) in the matchmaker
of the file's ``transport_url`` and forwards until SIGTERM/SIGINT, then
unregisters and exits 0. A local publisher registers nothing: it
subscribes to the central publishers listed and republishes on its port. ``--debug`` logs one line per message forwarded;
without it only matchmaker updates and errors are logged. Under systemd
``Type=notify`` it sends ``READY=1`` once it forwards.

Exit status 2 with one line on stderr naming the file or option and the
fix when the configuration cannot run.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import warnings
from typing import Any

from nova_rpc_zmq import __version__

PROG = "nova-rpc-zmq-proxy"
LOG = logging.getLogger(PROG)
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors say the fix in one line, exit 2."""

    def error(self, message: str) -> Any:
        self.exit(2, "%s: error: %s; see %s --help\n" % (PROG, message, PROG))


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Forward RPC messages between the "
                "services of use_router_proxy = true, and publish their "
                "fanouts with use_pub_sub = true.")
    p.add_argument("--config-file", action="append", default=[],
                   help="services' configuration ([DEFAULT] transport_url, "
                        "[oslo_messaging_zmq], [zmq_proxy_opts]); repeatable")
    p.add_argument("--log-file", help="log here instead of stderr")
    p.add_argument("--host", help="address or name to bind and announce "
                   "([zmq_proxy_opts] host)")
    p.add_argument("--frontend-port", type=int,
                   help="callers' port, 0: random ([zmq_proxy_opts] "
                        "frontend_port)")
    p.add_argument("--backend-port", type=int,
                   help="servers' port, 0: random ([zmq_proxy_opts] "
                        "backend_port)")
    p.add_argument("--publisher-port", type=int,
                   help="PUB/SUB publisher port, 0: random; needs "
                        "use_pub_sub = true, which starts a publisher on a "
                        "random port without it ([zmq_proxy_opts] "
                        "publisher_port)")
    p.add_argument("--local-publisher", action="store_true", default=None,
                   help="run only a local publisher on --publisher-port, "
                        "fed by the central publishers ([zmq_proxy_opts] "
                        "local_publisher)")
    p.add_argument("--health-port", type=int,
                   help="HTTP /health and /metrics port, 0: none "
                        "([zmq_proxy_opts] health_port)")
    p.add_argument("--debug", action="store_true",
                   help="log every message forwarded (slow: not for "
                        "production)")
    p.add_argument("--legacy-broker", action="store_true",
                   help="run the Nova-era broker instead (rpc_zmq_matchmaker "
                        "= broker): --config-file is then the nova.conf of "
                        "the Nova-era transport; bare topics and fanout come "
                        "in on rpc_zmq_start_port (9500), fanout goes out on "
                        "rpc_zmq_start_port + 2 (9502)")
    p.add_argument("--version", action="version",
                   version="%(prog)s " + __version__)
    return p


def _logging(log_file: str | None, debug: bool) -> None:
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # libraries: warnings and errors; ours: matchmaker updates too;
    # --debug: one line per message forwarded (not every library's chatter)
    root.setLevel(logging.WARNING)
    logging.getLogger("nova_rpc_zmq").setLevel(logging.INFO)
    logging.getLogger(PROG).setLevel(logging.INFO)
    logging.getLogger("nova_rpc_zmq.proxy").setLevel(
        logging.DEBUG if debug else logging.INFO)
    logging.captureWarnings(True)
    # importing oslo.messaging loads oslo.service's eventlet back end,
    # which warns about eventlet; the proxy never uses it
    warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")


def _fail(message: str) -> int:
    sys.stderr.write("%s: error: %s\n" % (PROG, message))
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _logging(args.log_file, args.debug)
    except OSError as exc:
        return _fail("--log-file %s: %s; give a writable path"
                     % (args.log_file, exc.strerror))
    if args.legacy_broker:
        return _legacy_broker(args)
    import zmq

    from nova_rpc_zmq.oslo_driver import registry
    from nova_rpc_zmq.oslo_driver.proxied import PROXY_KEY, proxy_member
    from nova_rpc_zmq.oslo_driver.pubsub import (PUBLISHER_KEY,
                                                 publisher_member)
    from nova_rpc_zmq.oslo_driver.sockets import PortRangeExceeded
    from nova_rpc_zmq.proxy.announce import Announcer
    from nova_rpc_zmq.proxy.config import ProxyConfigError, load
    from nova_rpc_zmq.proxy.router import RouterProxy
    from nova_rpc_zmq.receiver import sdnotify

    stop_signals: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop_signals.append(signum))
    try:
        settings = load(args.config_file, {
            "host": args.host, "frontend_port": args.frontend_port,
            "backend_port": args.backend_port,
            "publisher_port": args.publisher_port,
            "local_publisher": args.local_publisher,
            "health_port": args.health_port}, args.debug)
    except ProxyConfigError as exc:
        return _fail(str(exc))
    if settings.local_publisher:
        return _local_publisher(settings, stop_signals)
    try:
        proxy = RouterProxy(settings.bind, settings.frontend_port,
                            settings.backend_port, settings.port_range,
                            settings.debug, settings.publisher_port,
                            settings.curve)
    except (zmq.ZMQError, PortRangeExceeded, ValueError) as exc:
        return _fail("cannot bind %s (frontend_port %d, backend_port %d, "
                     "publisher_port %s): %s; choose free ports "
                     "(--frontend-port, --backend-port, --publisher-port, "
                     "0 for random ones) or another --host"
                     % (settings.bind, settings.frontend_port,
                        settings.backend_port, settings.publisher_port, exc))
    member = proxy_member(settings.host, proxy.frontend_port,
                          proxy.backend_port)
    registrations = [(PROXY_KEY, member)]
    published = ""
    if proxy.publisher is not None:
        registrations.append((PUBLISHER_KEY, publisher_member(
            settings.host, proxy.frontend_port, proxy.publisher.port)))
        published = " publisher %d" % proxy.publisher.port
    health = None
    announcer = None
    try:
        reg = None
        try:
            reg = registry.registry_for(settings.kind, settings.url)
            starting = Announcer(reg, registrations, settings.target_expire,
                                 settings.target_update)
            starting.start()
        except Exception as exc:  # noqa: BLE001 - one line, exit 2
            if reg is not None:
                reg.close()
            return _fail("cannot register %s in the %s matchmaker of "
                         "[DEFAULT] transport_url: %s; start the matchmaker "
                         "or fix transport_url" % (member, settings.kind,
                                                   exc))
        announcer = starting
        try:
            health = _serve_health(settings.bind, settings.health_port, proxy,
                                   announcer)
        except OSError as exc:
            return _health_error(settings.bind, settings.health_port, exc)
        _stop_on_signals(proxy, stop_signals)
        sys.stdout.write("%s: forwarding %s frontend %d backend %d%s%s\n"
                         % (PROG, settings.host, proxy.frontend_port,
                            proxy.backend_port, published,
                            " health %d" % health.port if health else ""))
        sys.stdout.flush()
        sdnotify.ready("forwarding: %s" % member)
        proxy.run()
        sdnotify.stopping("unregistering")
    finally:
        if announcer is not None:
            try:
                announcer.stop()
            except Exception:  # noqa: BLE001 - its TTL ends it anyway
                LOG.exception("could not unregister %s", member)
        if health is not None:
            health.stop()
        proxy.close()
    return 0


def _local_publisher(settings: Any, stop_signals: list[int]) -> int:
    """Run a local publisher until SIGTERM/SIGINT (``main``'s checks done;
    ``stop_signals``: those that came meanwhile)."""
    import threading

    import zmq

    from nova_rpc_zmq.oslo_driver import registry
    from nova_rpc_zmq.oslo_driver.sockets import PortRangeExceeded
    from nova_rpc_zmq.oslo_driver.pubsub import publishers
    from nova_rpc_zmq.proxy.publisher import LocalPublisher
    from nova_rpc_zmq.receiver import sdnotify

    try:
        reg = registry.registry_for(settings.kind, settings.url)
    except Exception as exc:  # noqa: BLE001 - one line, exit 2
        return _fail("cannot use the %s matchmaker of [DEFAULT] "
                     "transport_url: %s; fix transport_url"
                     % (settings.kind, exc))
    central = publishers(registry.Lookup(reg), threading.Lock())
    try:
        proxy = LocalPublisher(settings.bind, settings.publisher_port,
                               settings.port_range, central, settings.debug,
                               settings.curve)
    except (zmq.ZMQError, PortRangeExceeded, ValueError) as exc:
        reg.close()
        return _fail("cannot bind %s (publisher_port %s): %s; choose a free "
                     "--publisher-port or another --host"
                     % (settings.bind, settings.publisher_port, exc))
    health = None
    try:
        try:
            health = _serve_health(settings.bind, settings.health_port, proxy)
        except OSError as exc:
            return _health_error(settings.bind, settings.health_port, exc)
        _stop_on_signals(proxy, stop_signals)
        sys.stdout.write("%s: publishing %s publisher %d (local publisher)%s\n"
                         % (PROG, settings.host, proxy.port,
                            " health %d" % health.port if health else ""))
        sys.stdout.flush()
        sdnotify.ready("local publisher: %s:%d" % (settings.host,
                                                   proxy.port))
        proxy.run()
        sdnotify.stopping("stopping")
    finally:
        if health is not None:
            health.stop()
        proxy.close()
        reg.close()
    return 0



def _legacy_broker(args: Any) -> int:
    """``--legacy-broker``: the Nova-era broker until SIGTERM
    (``proxy/legacy_broker.py``)."""
    import zmq

    from nova_rpc_zmq import logs
    from nova_rpc_zmq.errors import RPCException
    from nova_rpc_zmq.proxy.legacy_broker import LegacyBroker
    from nova_rpc_zmq.receiver import sdnotify

    cli: list[str] = []
    for path in args.config_file:
        cli += ["--config-file", path]
    try:
        settings = logs.parse_args(cli, PROG)
        broker = LegacyBroker(settings, args.debug)
    except RPCException as exc:
        return _fail(str(exc))
    except zmq.ZMQError as exc:
        return _fail("cannot bind ports %d and %d on %s: %s; another broker "
                     "or program holds them: stop it, or set "
                     "rpc_zmq_start_port (the broker uses it and it + 2)"
                     % (settings.rpc_zmq_start_port,
                        settings.rpc_zmq_start_port + 2,
                        settings.rpc_zmq_bind_address, exc))
    bind = netaddr_bind(settings.rpc_zmq_bind_address)
    try:
        health = _serve_health(bind, args.health_port or 0, broker)
    except OSError as exc:
        broker.close()
        return _health_error(bind, args.health_port, exc)
    _stop_on_signals(broker, [])
    sys.stdout.write("%s: legacy broker front end %d publisher %d%s\n"
                     % (PROG, broker.front_port, broker.publisher_port,
                        " health %d" % health.port if health else ""))
    sys.stdout.flush()
    sdnotify.ready("legacy broker on %d and %d" % (broker.front_port,
                                                   broker.publisher_port))
    try:
        broker.run()
    finally:
        if health is not None:
            health.stop()
    return 0


def _serve_health(bind: str, port: int, daemon: Any,
                  announcer: Any = None) -> Any:
    """``/health`` and ``/metrics`` of ``daemon`` (a proxy, publisher or
    broker) on ``bind:port``, started; None for port 0. Raises OSError."""
    if not port:
        return None
    from nova_rpc_zmq.proxy import exposition
    from nova_rpc_zmq.receiver.health import HealthServer
    health = HealthServer(
        bind, port, status=lambda: exposition.status(daemon, time.monotonic),
        metrics=lambda: exposition.render(daemon, announcer))
    health.start()
    return health


def _health_error(bind: str, port: int, exc: OSError) -> int:
    return _fail("health port %s:%d: %s; set --health-port / "
                 "[zmq_proxy_opts] health_port to a free port or 0"
                 % (bind, port, exc.strerror))


def _stop_on_signals(daemon: Any, already: list[int]) -> None:
    """SIGTERM and SIGINT stop ``daemon``; ``already``: signals that came
    while it started (it stops at once)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: daemon.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: daemon.stop())
    if already:
        daemon.stop()


def netaddr_bind(address: str) -> str:
    """The address the health page of the broker listens on."""
    from nova_rpc_zmq import netaddr
    return address if address == "*" else netaddr.resolve_bind_address(address)


if __name__ == "__main__":
    sys.exit(main())
