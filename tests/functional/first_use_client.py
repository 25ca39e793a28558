"""A fresh process whose threads all start with a call:
``python first_use_client.py MODE API CONF N [connections]``.

MODE: ``eventlet`` (monkey-patched, N green threads) or ``threads`` (N
native threads). API: ``rpc`` (``nova_rpc_zmq.rpc`` reading ``config.CONF``)
or ``impl`` (``impl.call(cfg.CONF, ...)`` as Nova-era code does). With
``connections``, every fourth thread first makes a connection and a
consumer (racing with the others' calls). Nothing is set up before the
threads start but parsing the config file. Prints one JSON line.
"""

import sys

if sys.argv[1] == "eventlet":
    import eventlet
    eventlet.monkey_patch()

import importlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402

from oslo_config import cfg  # noqa: E402


class Echo:
    def dispatch(self, ctxt, version, method, namespace, **kwargs):
        return kwargs.get("value")


def main():
    mode, api, conf_path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    connections = len(sys.argv) > 5 and sys.argv[5] == "connections"
    cfg.CONF(["--config-file", conf_path], project="nova")
    if api == "rpc":
        from nova_rpc_zmq import rpc as front
        conf_args = ()
    else:
        front = importlib.import_module("nova_rpc_zmq.impl_zmq")
        conf_args = (cfg.CONF,)
    errors, results = [], []
    conns = []
    start = threading.Event()

    def one(i):
        start.wait(30)
        try:
            if connections and i % 4 == 0:
                conn = front.create_connection(*conf_args, new=True)
                conn.create_consumer("first_use_%d" % i, Echo())
                conn.consume_in_thread()
                conns.append(conn)
            value = front.call(*conf_args, {}, "demo",
                               {"method": "echo", "args": {"value": i}}, 30)
            results.append(value == i)
        except Exception as exc:  # noqa: BLE001 - counted and shown
            errors.append("%s: %s" % (type(exc).__name__, exc))

    if mode == "eventlet":
        pool = eventlet.GreenPool(n)
        for i in range(n):
            pool.spawn_n(one, i)
        eventlet.sleep(0)
        start.set()
        pool.waitall()
    else:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        start.set()
        for t in threads:
            t.join(90)
    for conn in conns:
        conn.close()
    front.cleanup()
    print(json.dumps({"ok": sum(results), "wrong": results.count(False),
                      "errors": errors}), flush=True)


if __name__ == "__main__":
    main()
