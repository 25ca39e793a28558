"""A Nova-era service: ``python -m tests.functional.novaera.service MODE CONF NAME``.

Parses nova.conf into ``cfg.CONF`` itself, consumes ``novaera`` (bare,
directed and fanout) and ``notifications-info`` through
``rpc.create_connection(new=True)``, prints READY, runs until SIGTERM.
"""

import sys

if sys.argv[1] == "eventlet":
    import eventlet
    eventlet.monkey_patch()

import signal  # noqa: E402
import threading  # noqa: E402

from tests.functional.novaera import rpc  # noqa: E402

TOPIC = "novaera"


class Manager:
    """A Grizzly-style dispatcher: dispatch(ctxt, version, method, namespace, **kw)."""

    def __init__(self, name):
        self.name = name
        self.casts = []
        self.fanouts = []

    def dispatch(self, ctxt, version, method, namespace, **kwargs):
        return getattr(self, method)(ctxt, **kwargs)

    def echo(self, ctxt, value):
        return value

    def count(self, ctxt, n):
        for i in range(n):
            yield i

    def record(self, ctxt, value, fanout=False):
        (self.fanouts if fanout else self.casts).append(value)

    def fail(self, ctxt):
        raise ValueError("failed on purpose")

    def stats(self, ctxt):
        return {"name": self.name, "casts": self.casts, "fanouts": self.fanouts,
                "notifications": notifications}


notifications = []


def on_notification(message):
    notifications.append(message.get("event_type"))


def main():
    mode, conf_path, name = sys.argv[1:4]
    rpc.CONF(["--config-file", conf_path], project="nova")
    manager = Manager(name)
    conn = rpc.create_connection(new=True)
    conn.create_consumer(TOPIC, manager, fanout=False)
    conn.create_consumer(rpc.queue_get_for(None, TOPIC, rpc.CONF.rpc_zmq_host), manager,
                         fanout=False)
    conn.create_consumer(TOPIC, manager, fanout=True)
    conn.create_consumer("notifications-info", on_notification)
    conn.consume_in_thread()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    conn.close()
    rpc.cleanup()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
