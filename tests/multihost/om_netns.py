"""oslo.messaging processes on the zmq driver for the namespace topology
tests: a host's service, a caller, a proxy's metrics.

    python om_netns.py serve URL ADDRESS NAME RECORD_DIR [--topic T]
        [--pool P]... [--eventlet] [--zmq NAME=VALUE]...
    python om_netns.py calls URL ADDRESS TOPIC SERVERS RECORD_DIR
        [--zmq NAME=VALUE]...
    python om_netns.py traffic URL ADDRESS TOPIC STOP_FILE
        [--zmq NAME=VALUE]...
    python om_netns.py whoami URL ADDRESS TOPIC SERVER [--zmq NAME=VALUE]...
    python om_netns.py metrics URL_OF_METRICS

``serve``: the RPC server ``NAME`` of TOPIC (the endpoint of
``tests.oslo.omsupport``, casts recorded as ``RECORD_DIR/<NAME>.<n>``) and
one notification listener per ``--pool`` (``<NAME>.<pool>.<n>`` in
``RECORD_DIR/notified``), bound to ADDRESS, under the eventlet executor
(monkey-patched) with ``--eventlet``, the threading one otherwise. Prints
``READY <pid> <concurrency handler>``; stops cleanly on SIGTERM.

``calls``: nine round-robin ``whoami`` calls, one directed call per name
of SERVERS (comma-separated), six casts ``c0``..``c5``, fanouts ``w<n>``
until every server recorded one (RECORD_DIR is theirs), three fanouts
``f0``..``f2`` and four notifications of TOPIC; prints one JSON line.

``traffic``: until STOP_FILE exists (at most ``TRAFFIC_LIMIT`` seconds),
a call ``echo(i)`` (5 s timeout) and a fanout ``record("t<i>")`` per
step; prints ``PROGRESS <n>`` every ten steps and finally
``RESULT <json>``: ``calls`` as ``[wall clock at start, i, answer or
error name]`` and ``fanouts`` as ``[wall clock at send, i]``.

``whoami``: one call directed to SERVER; prints its answer.

``metrics``: prints a proxy's or broker's /metrics as JSON.
"""

from __future__ import annotations

import sys

if "--eventlet" in sys.argv:
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

warnings.simplefilter("ignore")

#: Upper bound of a ``traffic`` run, whatever happens to the stop file.
TRAFFIC_LIMIT = 120.0


def _conf(address: str, zmq: list[str]) -> Any:
    from tests.oslo.omsupport import make_conf
    extra: dict[str, Any] = {}
    for item in zmq:
        name, _, value = item.partition("=")
        extra[name] = {"true": True, "false": False}.get(value, value)
    return make_conf(host=address, rpc_zmq_bind_address=address,
                     zmq_target_expire=60, zmq_target_update=20, **extra)


class Notified:
    """Records each ``info`` notification as a file."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        self.lock = threading.Lock()

    def info(self, ctxt: dict, publisher_id: str, event_type: str,
             payload: Any, metadata: dict) -> None:
        with self.lock:
            self.count += 1
            path = "%s.%d" % (self.prefix, self.count)
        with open(path, "w") as f:
            f.write(json.dumps(payload))


def serve(args: argparse.Namespace) -> None:
    import oslo_messaging

    from tests.oslo.omsupport import Endpoint
    conf = _conf(args.address, args.zmq)
    executor = "eventlet" if args.eventlet else "threading"
    transport = oslo_messaging.get_rpc_transport(conf, args.url)
    servers = [oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=args.topic, server=args.name),
        [Endpoint(args.name, args.record_dir)], executor=executor)]
    notify_transport = None
    if args.pool:
        notify_transport = oslo_messaging.get_notification_transport(
            conf, args.url)
        notify_dir = os.path.join(args.record_dir, "notified")
        os.makedirs(notify_dir, exist_ok=True)
        for pool in args.pool:
            prefix = os.path.join(notify_dir, "%s.%s" % (args.name, pool))
            servers.append(oslo_messaging.get_notification_listener(
                notify_transport, [oslo_messaging.Target(topic=args.topic)],
                [Notified(prefix)], executor=executor, pool=pool))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    for server in servers:
        server.start()
    print("READY %d %s" % (os.getpid(), transport._driver.handler.name),
          flush=True)
    while not done.wait(0.1):
        pass
    for server in servers:
        server.stop()
        server.wait()
    transport.cleanup()
    if notify_transport is not None:
        notify_transport.cleanup()
    print("STOPPED", flush=True)


def _client(transport: Any, topic: str, timeout: float = 20,
            **target: Any) -> Any:
    import oslo_messaging
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, **target),
        timeout=timeout)


def _warm_up(fanout: Any, record_dir: str, servers: list[str]) -> int:
    """Send fanouts ``w<n>`` until every server recorded one (the
    subscriptions of PUB/SUB settle asynchronously); how many were sent."""
    deadline = time.monotonic() + 30
    for n in range(1000):
        fanout.cast({}, "record", value="w%d" % n)
        for _ in range(5):
            time.sleep(0.1)
            got = set()
            for entry in os.listdir(record_dir):
                path = os.path.join(record_dir, entry)
                if os.path.isfile(path):
                    with open(path) as f:
                        if f.read().startswith("w"):
                            got.add(entry.rsplit(".", 1)[0])
            if got >= set(servers):
                return n + 1
        if time.monotonic() > deadline:
            break
    raise RuntimeError("fanouts did not reach every server within 30 s")


def calls(args: argparse.Namespace) -> None:
    import oslo_messaging
    conf = _conf(args.address, args.zmq)
    transport = oslo_messaging.get_rpc_transport(conf, args.url)
    notify_transport = oslo_messaging.get_notification_transport(
        conf, args.url)
    try:
        rpc = _client(transport, args.topic)
        out: dict[str, Any] = {
            "round_robin": [rpc.call({}, "whoami") for _ in range(9)],
            "directed": {name: _client(transport, args.topic,
                                       server=name).call({}, "whoami")
                         for name in args.servers.split(",")}}
        for n in range(6):
            rpc.cast({}, "record", value="c%d" % n)
        fanout = _client(transport, args.topic, fanout=True)
        out["warm_up"] = _warm_up(fanout, args.record_dir,
                                  args.servers.split(","))
        for n in range(3):
            fanout.cast({}, "record", value="f%d" % n)
        notifier = oslo_messaging.Notifier(
            notify_transport, publisher_id="netns", driver="messagingv2",
            topics=[args.topic])
        for n in range(4):
            notifier.info({}, "thing.happened", {"n": n})
        print(json.dumps(out), flush=True)
    finally:
        transport.cleanup()
        notify_transport.cleanup()


def traffic(args: argparse.Namespace) -> None:
    import oslo_messaging
    transport = oslo_messaging.get_rpc_transport(
        _conf(args.address, args.zmq), args.url)
    done: dict[str, list] = {"calls": [], "fanouts": []}
    try:
        rpc = _client(transport, args.topic, timeout=5)
        fanout = _client(transport, args.topic, fanout=True)
        limit = time.monotonic() + TRAFFIC_LIMIT
        i = 0
        while not os.path.exists(args.stop_file) and \
                time.monotonic() < limit:
            started = time.time()
            try:
                got: Any = rpc.call({}, "echo", value=i)
            except Exception as exc:  # noqa: BLE001 - reported as lost
                got = type(exc).__name__
            done["calls"].append([started, i, got])
            done["fanouts"].append([time.time(), i])
            fanout.cast({}, "record", value="t%d" % i)
            i += 1
            if i % 10 == 0:
                print("PROGRESS %d" % i, flush=True)
            time.sleep(0.01)
        print("RESULT %s" % json.dumps(done), flush=True)
    finally:
        transport.cleanup()


def whoami(args: argparse.Namespace) -> None:
    import oslo_messaging
    transport = oslo_messaging.get_rpc_transport(
        _conf(args.address, args.zmq), args.url)
    try:
        print(_client(transport, args.topic, server=args.server).call(
            {}, "whoami"), flush=True)
    finally:
        transport.cleanup()


def metrics(args: argparse.Namespace) -> None:
    import urllib.request

    from nova_rpc_zmq import metrics as parse
    with urllib.request.urlopen(args.metrics_url, timeout=10) as page:
        print(json.dumps(parse.parse(page.read().decode())), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("serve", "calls", "traffic", "whoami"):
        one = sub.add_parser(role)
        one.add_argument("url")
        one.add_argument("address")
        one.add_argument("--zmq", action="append", default=[],
                         metavar="NAME=VALUE",
                         help="an [oslo_messaging_zmq] option; true/false "
                              "are booleans")
        one.add_argument("--eventlet", action="store_true")
        if role == "serve":
            one.add_argument("name")
            one.add_argument("record_dir")
            one.add_argument("--topic", default="topo")
            one.add_argument("--pool", action="append", default=[])
        else:
            one.add_argument("topic")
        if role == "calls":
            one.add_argument("servers")
            one.add_argument("record_dir")
        if role == "traffic":
            one.add_argument("stop_file")
        if role == "whoami":
            one.add_argument("server")
    one = sub.add_parser("metrics")
    one.add_argument("metrics_url")
    args = parser.parse_args()
    {"serve": serve, "calls": calls, "traffic": traffic,
     "whoami": whoami, "metrics": metrics}[args.role](args)


if __name__ == "__main__":
    main()
