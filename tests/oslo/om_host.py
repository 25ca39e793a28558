"""One host's oslo.messaging process on the zmq driver: an RPC server or
notification listeners, bound to the host's own address.

    python -m tests.oslo.om_host rpc URL ADDRESS NAME RECORD_DIR
        [--topic T] [--expire S] [--update S] [--config-file F]
    python -m tests.oslo.om_host notify URL ADDRESS NAME RECORD_DIR
        --pool P [--pool P2]... [--topic T] [--expire S] [--update S]

``rpc_zmq_host`` and ``rpc_zmq_bind_address`` are ADDRESS (127.0.0.2:
its ports are bound there only). The RPC server is ``NAME`` on TOPIC with
the endpoint of ``omsupport``; each notification listener (one per pool,
target TOPIC, priority info) records what it gets in RECORD_DIR as
``<NAME>.<pool>.<n>``. Prints ``READY <pid>`` once started; stops cleanly
on SIGTERM (registrations removed).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import threading
import warnings
from typing import Any

warnings.simplefilter("ignore")


class NotificationRecorder:
    """Records each ``info`` notification as a file of ``record_dir``."""

    _numbers = itertools.count(1)

    def __init__(self, name: str, pool: str, record_dir: str) -> None:
        self.prefix = os.path.join(record_dir, "%s.%s" % (name, pool))

    def info(self, ctxt: dict, publisher_id: str, event_type: str,
             payload: Any, metadata: dict) -> None:
        with open("%s.%d" % (self.prefix, next(self._numbers)), "w") as f:
            f.write("%s %s" % (event_type, payload))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("rpc", "notify"))
    parser.add_argument("url")
    parser.add_argument("address")
    parser.add_argument("name")
    parser.add_argument("record_dir")
    parser.add_argument("--topic", default="multi")
    parser.add_argument("--pool", action="append", default=[])
    parser.add_argument("--expire", type=int, default=300)
    parser.add_argument("--update", type=int, default=180)
    parser.add_argument("--config-file", default=None)
    args = parser.parse_args()

    import oslo_messaging

    from tests.oslo.omsupport import Endpoint, make_conf
    conf = make_conf(host=args.address, rpc_zmq_bind_address=args.address,
                     zmq_target_expire=args.expire,
                     zmq_target_update=args.update)
    if args.config_file:
        conf(["--config-file", args.config_file], project="nova-rpc-zmq-tests")
    servers: list[Any] = []
    if args.role == "rpc":
        transport = oslo_messaging.get_rpc_transport(conf, args.url)
        target = oslo_messaging.Target(topic=args.topic, server=args.name)
        servers.append(oslo_messaging.get_rpc_server(
            transport, target, [Endpoint(args.name, args.record_dir)],
            executor="threading"))
    else:
        transport = oslo_messaging.get_notification_transport(conf, args.url)
        for pool in args.pool:
            servers.append(oslo_messaging.get_notification_listener(
                transport, [oslo_messaging.Target(topic=args.topic)],
                [NotificationRecorder(args.name, pool, args.record_dir)],
                executor="threading", pool=pool))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    for server in servers:
        server.start()
    print("READY %d" % os.getpid(), flush=True)
    while not done.wait(0.1):
        pass
    for server in servers:
        server.stop()
        server.wait()
    transport.cleanup()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
