"""A sender in its own process, for tests:
``python fanout_script.py CONF MODE VALUE [UNREACHED_TOPIC]``.

MODE is ``eventlet`` (monkey-patched first) or ``threads``. Makes one
driver from CONF, fans ``announce(value=VALUE)`` out to every host of the
ring's ``demo`` topic, then (when given) casts once to UNREACHED_TOPIC and
records what that raised. Prints one JSON line: the fanout's exception (or
null), its duration, this process's open descriptors, the outbound sockets
and the driver's counters. The test sets the process's limits (preexec_fn).
"""

import json
import logging
import sys
import time


def main() -> int:
    conf, mode, value = sys.argv[1], sys.argv[2], sys.argv[3]
    unreached = sys.argv[4] if len(sys.argv) > 4 else None
    if mode == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    import resource

    import psutil

    from nova_rpc_zmq import config
    from nova_rpc_zmq.impl_zmq.driver import Driver

    driver = Driver(config.parse_args(["--config-file", conf]))
    out: dict = {"eventlet": "eventlet" in sys.modules,
                 "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE))}
    t0 = time.perf_counter()
    try:
        driver.fanout_cast({}, "demo", {"method": "announce",
                                        "args": {"value": value}})
        out["error"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    out["seconds"] = time.perf_counter() - t0
    out["fds"] = psutil.Process().num_fds()
    out["outbound"] = len(driver.outbound.hosts())
    if unreached:
        try:
            driver.cast({}, unreached, {"method": "announce",
                                        "args": {"value": value}})
            out["unreached_error"] = None
        except Exception as exc:  # noqa: BLE001
            out["unreached_error"] = "%s: %s" % (type(exc).__name__, exc)
    out["counters"] = driver.counters.snapshot()
    print(json.dumps(out))
    sys.stdout.flush()
    driver.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
