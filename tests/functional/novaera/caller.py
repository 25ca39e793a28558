"""A Nova-era caller: ``python -m tests.functional.novaera.caller MODE CONF WAIT``.

Parses nova.conf into ``cfg.CONF`` itself, then uses every function of the
backend through the stand-in ``rpc`` module; prints one JSON line.
"""

import sys

if sys.argv[1] == "eventlet":
    import eventlet
    eventlet.monkey_patch()

import json  # noqa: E402
import time  # noqa: E402

from tests.functional.novaera import rpc  # noqa: E402
from tests.support import scaled  # noqa: E402

TOPIC = "novaera"


def m(method, **args):
    return {"method": method, "args": args}


def main():
    mode, conf_path = sys.argv[1:3]
    rpc.CONF(["--config-file", conf_path], project="nova")
    ctx = {"user_id": "u1", "project_id": "p1"}
    out = {"eventlet": "eventlet" in sys.modules}
    out["call"] = rpc.call(ctx, TOPIC, m("echo", value=[mode, 1]), timeout=scaled(20))
    host = rpc.CONF.rpc_zmq_host  # registered by the backend on import
    out["call_directed"] = rpc.call(ctx, rpc.queue_get_for(ctx, TOPIC, host),
                                    m("echo", value="directed"))
    out["multicall"] = list(rpc.multicall(ctx, TOPIC, m("count", n=3), timeout=scaled(20)))
    try:
        rpc.call(ctx, TOPIC, m("fail"))
    except Exception as exc:  # noqa: BLE001 - what the caller sees is the point
        out["remote_error"] = type(exc).__name__
    rpc.cast(ctx, TOPIC, m("record", value="cast"))
    rpc.cast_to_server(ctx, {"hostname": "ignored"}, TOPIC, m("record", value="cast_to_server"))
    rpc.fanout_cast(ctx, TOPIC, m("record", value="fanout", fanout=True))
    rpc.fanout_cast_to_server(ctx, {"hostname": "ignored"}, TOPIC,
                              m("record", value="fanout_to_server", fanout=True))
    rpc.notify(ctx, "notifications.info",
               {"message_id": "n1", "publisher_id": "compute.host1",
                "event_type": "compute.instance.create.end", "priority": "INFO",
                "payload": {"instance_id": "i-1"}, "timestamp": "2013-01-01 00:00:00"},
               False)
    rpc.notify(ctx, "notifications.info",
               {"message_id": "n2", "publisher_id": "compute.host1",
                "event_type": "compute.instance.delete.end", "priority": "INFO",
                "payload": {"instance_id": "i-1"}, "timestamp": "2013-01-01 00:00:01"},
               True)
    # casts and notifications arrive when they arrive: ask until all are in
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        out["stats"] = rpc.call(ctx, TOPIC, m("stats"))
        stats = out["stats"]
        if (len(stats["casts"]) >= 2 and len(stats["fanouts"]) >= 2
                and len(stats["notifications"]) >= 2) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    rpc.cleanup()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
