"""An oslo.messaging RPC server with ``use_pub_sub`` and
``use_router_proxy`` on, in its own process.

    python -m tests.oslo.om_pubsub URL TOPIC SERVER RECORD_DIR [--eventlet]
        [--subscribe-on HOST:PORT,...]

Prints ``READY <pid> <concurrency handler>`` once its server has started
and ``STOPPED`` after SIGTERM. Casts it gets are recorded in RECORD_DIR
(``omsupport.Endpoint``).
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
    parser.add_argument("record_dir")
    parser.add_argument("--eventlet", action="store_true")
    parser.add_argument("--subscribe-on", default="")
    args = parser.parse_args()

    import oslo_messaging

    from tests.oslo.omsupport import Endpoint, make_conf
    extra = {"subscribe_on": args.subscribe_on.split(",")} \
        if args.subscribe_on else {}
    conf = make_conf(use_router_proxy=True, use_pub_sub=True,
                     zmq_target_expire=30, zmq_target_update=10, **extra)
    transport = oslo_messaging.get_rpc_transport(conf, args.url)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=args.topic,
                                         server=args.server),
        [Endpoint(args.server, args.record_dir)],
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
