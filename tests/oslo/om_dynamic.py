"""Dynamic direct connections in one process, green or native threads.

    python -m tests.oslo.om_dynamic URL [--eventlet]

Starts two RPC servers and a caller with ``use_dynamic_connections``,
makes calls from several threads, casts, a directed call and a fanout,
then prints ``RESULT <json>``: the answers that were wrong, the casts
each server got, the sockets the caller opened, and the connections
still established to the servers once the traffic is over.
"""

from __future__ import annotations

import sys

if "--eventlet" in sys.argv:
    import eventlet
    eventlet.monkey_patch()

import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

warnings.simplefilter("ignore")

#: Threads calling at once, and calls each.
CALLERS = 4
CALLS = 25


def main() -> None:
    url = sys.argv[1]
    green = "--eventlet" in sys.argv
    import oslo_messaging

    from tests.oslo.omsupport import Endpoint, make_conf
    from tests.oslo.test_dynamic import (DYNAMIC, established_to, outbound,
                                         server_ports)
    executor = "eventlet" if green else "threading"
    servers = oslo_messaging.get_rpc_transport(make_conf(**DYNAMIC), url)
    callers = oslo_messaging.get_rpc_transport(make_conf(**DYNAMIC), url)
    endpoints = [Endpoint(name) for name in ("g1", "g2")]
    rpc_servers = [oslo_messaging.get_rpc_server(
        servers, oslo_messaging.Target(topic="green", server=e.name), [e],
        executor=executor) for e in endpoints]
    for server in rpc_servers:
        server.start()
    handler = callers._driver.handler
    rpc = oslo_messaging.get_rpc_client(
        callers, oslo_messaging.Target(topic="green"), timeout=20)
    wrong: list[object] = []

    def calling(base: int) -> None:
        for n in range(base, base + CALLS):
            value = rpc.call({}, "echo", value=n)
            if value != n:
                wrong.append(value)

    workers = [handler.spawn(calling, 1000 * i) for i in range(CALLERS)]
    for worker in workers:
        handler.join(worker, 60.0)
    for n in range(10):
        rpc.cast({}, "record", value=n)
    directed = oslo_messaging.get_rpc_client(
        callers, oslo_messaging.Target(topic="green", server="g2"),
        timeout=20).call({}, "whoami")
    oslo_messaging.get_rpc_client(
        callers, oslo_messaging.Target(topic="green", fanout=True)).cast(
            {}, "record", value="all")
    deadline = time.monotonic() + 20
    while sum(len(e.casts) for e in endpoints) < 12 and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    ports = server_ports(callers, "green")
    deadline = time.monotonic() + 10
    while established_to(ports) and time.monotonic() < deadline:
        time.sleep(0.02)
    result = {"handler": handler.name, "wrong": wrong, "directed": directed,
              "casts": {e.name: e.casts for e in endpoints},
              "opened": outbound(callers).opened,
              "established": established_to(ports)}
    for server in rpc_servers:
        server.stop()
        server.wait()
    callers.cleanup()
    servers.cleanup()
    print("RESULT %s" % json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
