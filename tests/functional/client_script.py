"""A client in its own process, for tests: ``python client_script.py CONF MODE N``.

MODE is ``eventlet`` (monkey-patched, N green callers at once) or
``threads`` (N native threads). Each caller makes one ``echo`` call with its
own value; prints one JSON line: the results in order and the first call's
latency. Used to prove "the first call of a fresh process gets its reply".
"""

import json
import os
import sys
import time

# the suite's timeout scale (tests/support.py), inherited from the test run
SCALE = float(os.environ.get("NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE", "1"))


def main() -> int:
    conf, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    topic = sys.argv[4] if len(sys.argv) > 4 else "demo"
    if mode == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    from nova_rpc_zmq import config, rpc

    rpc.init(config.parse_args(["--config-file", conf]))
    t0 = time.perf_counter()
    first = rpc.call({}, topic, {"method": "echo", "args": {"value": -1}}, timeout=20 * SCALE)
    first_ms = (time.perf_counter() - t0) * 1000
    results: list = [None] * n

    def one(i: int) -> None:
        results[i] = rpc.call({"request_id": "r%d" % i}, topic,
                              {"method": "echo", "args": {"value": i}}, timeout=30 * SCALE)

    if mode == "eventlet":
        import eventlet
        pool = eventlet.GreenPool(n)
        for i in range(n):
            pool.spawn_n(one, i)
        pool.waitall()
    else:
        import threading
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    print(json.dumps({"first": first, "first_ms": first_ms, "results": results,
                      "eventlet": "eventlet" in sys.modules}))
    sys.stdout.flush()
    rpc.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
