"""A sample service for ``nova-rpc-zmq demo`` and the functional tests.

    python -m nova_rpc_zmq.cli.demo_service --config-file nova.conf \
        --name svc1 [--topic demo] [--eventlet]

Consumes ``<topic>`` (shared with other instances), ``<topic>_<name>``
(this instance only) and the fanout of ``<topic>``; prints ``READY`` on
stdout once consuming; stops on SIGTERM. Methods: ``echo``, ``whoami``,
``count`` (a generator), ``stream`` (context.reply), ``fail`` (raises
ValueError), ``slow``, ``record`` (a cast), ``stats``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Iterator


def start(argv: list[str] | None, prog: str, topic: str) -> argparse.Namespace:
    """Parse a sample service's command line, monkey-patch with eventlet
    when ``--eventlet`` is given (before anything else is imported), and
    initialise ``rpc`` from the config files. Shared with the benchmarks."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config-file", action="append", default=[])
    parser.add_argument("--name", required=True)
    parser.add_argument("--topic", default=topic)
    parser.add_argument("--eventlet", action="store_true",
                        help="monkey-patch with eventlet (the legacy way)")
    args, rest = parser.parse_known_args(argv)
    if args.eventlet:
        import eventlet
        eventlet.monkey_patch()
    from nova_rpc_zmq import logs, rpc

    cli: list[str] = []
    for path in args.config_file:
        cli += ["--config-file", path]
    # oslo.log's options (debug, log_file ...) from nova.conf and ``rest``
    rpc.init(logs.parse_args(cli + rest, prog))
    return args


def serve(args: argparse.Namespace, endpoint: object) -> int:
    """Consume ``<topic>``, ``<topic>_<name>`` and the fanout of ``<topic>``
    into ``endpoint``; print READY; run until SIGTERM or SIGINT."""
    import signal
    import threading

    from nova_rpc_zmq import rpc
    from nova_rpc_zmq.rpc import dispatcher

    proxy = dispatcher.RpcDispatcher([endpoint])
    conn = rpc.create_connection(new=True)
    conn.create_consumer(args.topic, proxy)
    conn.create_consumer("%s_%s" % (args.topic, args.name), proxy)
    conn.create_consumer(args.topic, proxy, fanout=True)
    conn.consume_in_thread()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    sys.stdout.write("READY %s %d\n" % (args.name, os.getpid()))
    sys.stdout.flush()
    while not stop.wait(0.2):
        pass
    conn.close()
    rpc.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = start(argv, "demo_service", "demo")
    import time

    name = args.name
    seen: dict[str, int] = {"record": 0, "fanout": 0, "slow_started": 0}
    recorded: list[Any] = []

    class DemoAPI:
        RPC_API_VERSION = "1.0"

        def echo(self, context: Any, value: Any = None) -> Any:
            return value

        def whoami(self, context: Any) -> dict[str, Any]:
            return {"name": name, "pid": os.getpid(),
                    "eventlet": "eventlet" in sys.modules}

        def count(self, context: Any, n: int = 3, delay: float = 0.0) -> Iterator[int]:
            for i in range(int(n)):
                if delay:
                    time.sleep(float(delay))
                yield i

        def stream(self, context: Any, n: int = 3) -> None:
            for i in range(int(n)):
                context.reply("part-%d" % i)

        def fail(self, context: Any, message: str = "demo failure") -> None:
            raise ValueError(message)

        def slow(self, context: Any, seconds: float = 2.0) -> str:
            seen["slow_started"] += 1
            time.sleep(float(seconds))
            return "slept"

        def record(self, context: Any, value: Any = None, pad: Any = None) -> None:
            # pad: bulk that tests add to fill send queues; not kept
            seen["record"] += 1
            recorded.append(value)

        def announce(self, context: Any, value: Any = None) -> None:
            seen["fanout"] += 1
            recorded.append(value)

        def stats(self, context: Any) -> dict[str, Any]:
            return {"name": name, "record": seen["record"],
                    "fanout": seen["fanout"], "slow_started": seen["slow_started"],
                    "values": recorded[-1000:]}

    return serve(args, DemoAPI())


if __name__ == "__main__":
    sys.exit(main())
