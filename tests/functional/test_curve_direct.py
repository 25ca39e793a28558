"""With CURVE on, calls between two of our hosts still skip both receivers
(``impl_zmq/remote.py``), on CURVE sockets: a consumer's direct port takes
only the keys of its host's keys dir, as its receiver does.

Host A (127.0.0.1) runs a receiver and the caller (a ``Driver`` in this
process); host B (127.0.0.2) a receiver and a service. Each host has its
own key pair, and each keys dir holds both hosts' certificates.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import wire
from nova_rpc_zmq.impl_zmq.driver import Driver
from nova_rpc_zmq.security import (KeyPair, configure_client, generate,
                                   load_public, write_public)
from tests.functional.test_direct_remote import (A, B, Hosts, a_caller,
                                                 crossing_no_receiver, m,
                                                 two_hosts, warm_up)
from tests.support import scaled, wait_for


def _cross_keys(h: Hosts) -> None:
    """A key pair per host; each keys dir holds both certificates."""
    pairs = {a: h.hosts[a].enable_curve() for a in (A, B)}
    for address, host in h.hosts.items():
        for other, pair in pairs.items():
            if other != address:
                write_public(os.path.join(
                    host.options["rpc_zmq_curve_keys_dir"],
                    "%s.key" % other), pair.public)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    with two_hosts("nrzc-", _cross_keys) as h:
        yield h


@pytest.fixture
def caller(hosts: Hosts) -> Iterator[Driver]:
    yield from a_caller(hosts)


def test_calls_skip_both_receivers_on_curve_sockets(
        hosts: Hosts, caller: Driver) -> None:
    assert caller.direct_security is not None
    warm_up(caller, "demo")
    # 30 calls, 30 replies and 50 streamed parts would cross the receivers
    # on their path
    with crossing_no_receiver(hosts):
        for i in range(30):
            assert caller.call({}, "demo", m("echo", value=i),
                               timeout=scaled(10)) == i
        values = list(caller.multicall({}, "demo", m("count", n=50),
                                       timeout=scaled(10)))
        assert values == list(range(50))
    assert caller.counters.get("direct.no_server_key") == 0
    assert caller.direct_security.refused == {}


def _direct_port(caller: Driver) -> int:
    assert caller.remote is not None
    known = caller.remote._ports.get(("demo." + B, B))
    assert known, "the caller learnt no port of demo on B"
    return min(known)


def _records(caller: Driver) -> int:
    return caller.call({}, "demo", m("stats"), timeout=scaled(10))["record"]


def _push_record(port: int, keys: tuple[bytes, bytes, bytes] | None) -> None:
    """A ``record`` cast straight to B's direct ``port``, plaintext or with
    ``(public, secret, server public)``; the socket lingers a second."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        if keys is not None:
            configure_client(sock, KeyPair(public=keys[0], secret=keys[1]),
                             keys[2])
        sock.connect("tcp://%s:%d" % (B, port))
        sock.send_multipart(wire.encode(None, "demo." + B, {},
                                        m("record", value=uuid.uuid4().hex)))
        sock.close()
    finally:
        ctx.term()


def test_the_direct_port_takes_only_known_keys(
        hosts: Hosts, caller: Driver) -> None:
    warm_up(caller, "demo")
    port = _direct_port(caller)
    b_public = load_public(os.path.join(
        hosts.hosts[A].options["rpc_zmq_curve_keys_dir"], "%s.key" % B))
    stranger = generate()
    before = _records(caller)
    _push_record(port, None)                       # no CURVE
    _push_record(port, (stranger.public, stranger.secret, b_public))
    time.sleep(scaled(1.5))  # what would have come has come
    assert _records(caller) == before
    # the same cast with host A's own key pair arrives: the refusals
    # above were the keys, not the message
    a = caller.direct_security.keypair
    _push_record(port, (a.public, a.secret, b_public))
    wait_for(lambda: _records(caller) == before + 1, scaled(10),
             what="the cast sent with a known key")
    log = open(os.path.join(hosts.hosts[B].dir, "service-svc.log")).read()
    assert "no matching key" in log


def test_a_green_service_serves_direct_calls_with_curve(
        hosts: Hosts, caller: Driver) -> None:
    # its ZAP handler runs in a real OS thread, off the hub
    hosts.hosts[B].start_service("green", topic="pair", eventlet=True,
                                 timeout=scaled(30))
    warm_up(caller, "pair")
    with crossing_no_receiver(hosts):
        for i in range(20):
            assert caller.call({}, "pair", m("echo", value=i),
                               timeout=scaled(10)) == i


def test_nova_era_calls_through_the_rpc_api_go_direct_with_curve(
        hosts: Hosts) -> None:
    """As a Nova-era service calls: ``rpc.call`` with host A's nova.conf,
    from many threads at once."""
    import threading

    from nova_rpc_zmq import impl_zmq, rpc
    rpc.init(hosts.hosts[A].settings())
    try:
        driver = impl_zmq.get_driver(rpc.get_settings())
        for _ in range(200):  # until the port is learnt
            rpc.call({}, "demo", m("echo", value=0), timeout=scaled(10))
            if driver.counters.get("direct.calls"):
                break
            time.sleep(0.05)
        errors: list = []

        def calls(n: int) -> None:
            try:
                for i in range(20):
                    assert rpc.call({}, "demo", m("echo", value=[n, i]),
                                    timeout=scaled(10)) == [n, i]
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                errors.append(exc)

        def eight_threads() -> None:
            threads = [threading.Thread(target=calls, args=(n,))
                       for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(scaled(60))

        before = driver.counters.get("direct.calls")
        eight_threads()
        assert errors == []
        # most went direct (a send that finds the pool's sockets busy makes
        # one more, whose first send takes the receivers' path)
        assert driver.counters.get("direct.calls") - before >= 80
    finally:
        rpc.cleanup()
