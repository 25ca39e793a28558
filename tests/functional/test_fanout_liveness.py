"""Fanout with a dead host, liveness on: the live hosts get it, the dead
one is not even tried.

The three-host cluster of ``test_liveness_routing`` (real receivers and
demo services on 127.0.0.1-3, one ServiceGroup back end per parameter: db,
zk, mc). Host 3 dies (its service SIGKILLed, its receiver stopped); once the
client's view has it down, a ``fanout_cast`` must return without error,
reach the services of hosts 1 and 2, and never open a socket to host 3 nor
count a send to it.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from nova_rpc_zmq import rpc
from nova_rpc_zmq.impl_zmq import get_driver
from tests.functional.test_liveness_routing import (CALL_TIMEOUT, DOWN, IPS,
                                                    NAMES, TOPIC,
                                                    LivenessCluster, _cluster)
from tests.support import wait_for


@pytest.fixture(scope="module", params=["db", "zk", "mc"])
def cluster(request: Any, tmp_path_factory: Any) -> Iterator[LivenessCluster]:
    """A started cluster for each back end, its own for this module: host 3
    is left dead."""
    yield from _cluster(request.param, tmp_path_factory)


def _fanouts(name: str) -> dict:
    """The ``stats`` of host ``name``'s demo service."""
    return rpc.call({}, "%s_%s" % (TOPIC, name), {"method": "stats"},
                    timeout=CALL_TIMEOUT)


@pytest.mark.timeout(120)
def test_fanout_skips_the_dead_host(cluster: LivenessCluster) -> None:
    driver = get_driver(cluster.settings)
    dead = IPS[2]
    # nothing was ever sent to host 3 from this process: it has no socket
    assert dead not in driver.outbound._socks
    cluster.kill_service(2)
    receiver = cluster.receivers[2]
    assert receiver is not None
    assert receiver.stop() == 0, receiver.output()[-2000:]
    cluster.wait_routable({IPS[0], IPS[1]}, DOWN + 10, "host 3 seen down")

    casts = driver.counters.get("casts")
    failed = driver.counters.get("send_failed")
    tag = uuid.uuid4().hex
    rpc.fanout_cast({}, TOPIC, {"method": "announce", "args": {"value": tag}})

    # the live hosts' services got it
    for name in NAMES[:2]:
        wait_for(lambda: tag in _fanouts(name)["values"], 15,
                 what="the fanout on %s" % name)
    # one send per live host, none failed, none to the dead one
    assert driver.counters.get("casts") - casts == 2
    assert driver.counters.get("send_failed") == failed
    assert dead not in driver.outbound._socks, sorted(driver.outbound._socks)
    assert set(IPS[:2]) <= set(driver.outbound._socks)
