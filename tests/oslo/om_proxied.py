"""An oslo.messaging RPC server behind router proxies, in its own process.

    python -m tests.oslo.om_proxied URL TOPIC SERVER [--eventlet]

Runs with ``[oslo_messaging_zmq] use_router_proxy = true``; prints
``READY <pid> <concurrency handler>`` once its server has started and
``STOPPED`` after SIGTERM (the registration removed).
"""

from __future__ import annotations

import sys

if "--eventlet" in sys.argv:
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402

warnings.simplefilter("ignore")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("topic")
    parser.add_argument("server")
    parser.add_argument("--eventlet", action="store_true")
    args = parser.parse_args()

    import oslo_messaging

    from tests.oslo.omsupport import Endpoint, make_conf
    conf = make_conf(use_router_proxy=True, zmq_target_expire=30,
                     zmq_target_update=10)
    transport = oslo_messaging.get_rpc_transport(conf, args.url)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=args.topic,
                                         server=args.server),
        [Endpoint(args.server)],
        executor="eventlet" if args.eventlet else "threading")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    print("READY %d %s" % (os.getpid(), transport._driver.handler.name),
          flush=True)
    while not done.wait(0.1):
        pass
    server.stop()
    server.wait()
    transport.cleanup()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
