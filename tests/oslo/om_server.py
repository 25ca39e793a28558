"""An oslo.messaging RPC server on the zmq driver, in its own process.

    python -m tests.oslo.om_server URL TOPIC SERVER RECORD_DIR [--eventlet]
        [--exchange E] [--expire S] [--update S] [--call TOPIC]...
        [--host NAME] [--curve KEY_FILE KEYS_DIR] [--zmq NAME=VALUE]...

``--zmq`` sets an ``[oslo_messaging_zmq]`` option (``use_router_proxy=true``,
``use_pub_sub=true``: the topologies behind proxies).

Prints ``READY <pid> <concurrency handler>`` once its server has started, and stops cleanly (the
registration removed) on SIGTERM. With ``--curve`` it runs with
``rpc_zmq_curve`` on and prints ``CURVE-REFUSED <json>`` (the handshakes
it refused, by reason) before ``STOPPED``.
"""

from __future__ import annotations

import sys

if "--eventlet" in sys.argv:
    import eventlet
    eventlet.monkey_patch()

import argparse  # noqa: E402
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
    parser.add_argument("--exchange", default=None)
    parser.add_argument("--expire", type=int, default=300)
    parser.add_argument("--update", type=int, default=180)
    parser.add_argument("--call", action="append", default=[],
                        help="after start, call whoami on this topic and "
                             "print CALLED <topic> <answer>")
    parser.add_argument("--host", default="127.0.0.1",
                        help="rpc_zmq_host (the host part of what it "
                             "registers, and its certificate's name)")
    parser.add_argument("--curve", nargs=2, default=None,
                        metavar=("KEY_FILE", "KEYS_DIR"),
                        help="rpc_zmq_curve on with these files")
    parser.add_argument("--zmq", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="an [oslo_messaging_zmq] option; true/false "
                             "are booleans")
    args = parser.parse_args()

    import oslo_messaging

    from tests.oslo.omsupport import Endpoint, make_conf
    curve = {} if args.curve is None else {
        "rpc_zmq_curve": True, "rpc_zmq_curve_key_file": args.curve[0],
        "rpc_zmq_curve_keys_dir": args.curve[1]}
    extra: dict = {}
    for item in args.zmq:
        name, _, value = item.partition("=")
        extra[name] = {"true": True, "false": False}.get(value, value)
    conf = make_conf(host=args.host, zmq_target_expire=args.expire,
                     zmq_target_update=args.update, **curve, **extra)
    transport = oslo_messaging.get_rpc_transport(conf, args.url)
    target = oslo_messaging.Target(topic=args.topic, server=args.server,
                                   exchange=args.exchange)
    executor = "eventlet" if args.eventlet else "threading"
    server = oslo_messaging.get_rpc_server(
        transport, target, [Endpoint(args.server, args.record_dir)],
        executor=executor)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    handler = transport._driver.handler.name  # reported, never driven
    print("READY %d %s" % (__import__("os").getpid(), handler), flush=True)
    for topic in args.call:
        rpc = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic=topic), timeout=30)
        print("CALLED %s %s" % (topic, rpc.call({}, "whoami")), flush=True)
    while not done.wait(0.1):
        pass
    server.stop()
    server.wait()
    if args.curve is not None:
        import json
        print("CURVE-REFUSED %s" % json.dumps(
            transport._driver._curve.refused, sort_keys=True), flush=True)
    transport.cleanup()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
