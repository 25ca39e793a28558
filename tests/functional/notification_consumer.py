"""A notification consumer in its own process, for tests:
``python notification_consumer.py MODE CONF STYLE``.

MODE ``eventlet`` or ``threads``; STYLE is the kind of proxy given to
``create_consumer("notifications-info", proxy)``: ``callable`` (called with
the message), ``notify`` (``notify(ctxt, message)``) or ``info`` (the later
endpoints' ``info(ctxt, publisher_id, event_type, payload, metadata)``).
Also consumes ``notestats`` (method ``stats``: what arrived). Prints READY.
"""

import sys

if sys.argv[1] == "eventlet":
    import eventlet
    eventlet.monkey_patch()

import signal  # noqa: E402
import threading  # noqa: E402

from nova_rpc_zmq import config, rpc  # noqa: E402
from nova_rpc_zmq.rpc import dispatcher  # noqa: E402

seen: list = []


class ByCall:
    def __call__(self, message):
        seen.append([message.get("event_type"), message.get("payload")])


class ByNotify:
    def notify(self, ctxt, message):
        seen.append([message.get("event_type"), message.get("payload")])


class ByPriority:
    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        assert metadata["message_id"]
        seen.append([event_type, payload])


class Stats:
    RPC_API_VERSION = "1.0"

    def stats(self, context):
        return {"seen": seen, "eventlet": "eventlet" in sys.modules}


def main():
    mode, conf_path, style = sys.argv[1:4]
    rpc.init(config.parse_args(["--config-file", conf_path]))
    proxy = {"callable": ByCall, "notify": ByNotify, "info": ByPriority}[style]()
    conn = rpc.create_connection()
    conn.create_consumer("notifications-info", proxy)
    conn.create_consumer("notestats", dispatcher.RpcDispatcher([Stats()]))
    conn.consume_in_thread()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    conn.close()
    rpc.cleanup()


if __name__ == "__main__":
    main()
