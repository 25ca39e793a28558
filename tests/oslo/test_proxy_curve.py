"""CURVE through router proxies and PUB/SUB publishers
(``rpc_zmq_curve = true`` with ``use_router_proxy = true``): real proxies
started from their command line, services through oslo.messaging's API.

The proxy announces ``--host 127.0.0.1``, so the services find its
certificate as ``<keys_dir>/127.0.0.1.key``. The services are named
``svc-a`` (one key pair for all of them) and, for refusals, ``stranger``
(a key pair the proxy's keys dir does not list).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import oslo_messaging
import pytest
import zmq
import zmq.utils.monitor

from nova_rpc_zmq.oslo_driver.curve import HostRefused, NoServerKey
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import Proc, child_env, free_port, scaled, wait_for
from tests.oslo import test_router_proxy as router_tests
from tests.oslo.test_pubsub_proxy import PUBLISHED, serve_all
from tests.oslo.test_router_proxy import (PROXY, RunningProxy, client,
                                          proxy_script, serving, write_conf)

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(120)]

redis_url = router_tests.redis_url

PROXY_HOST, SERVICE, STRANGER = "127.0.0.1", "svc-a", "stranger"
REFUSED = PROXY + 'curve_refused_total{reason="no_matching_key"}'
ACCEPTED = PROXY + "curve_accepted_total"


class Keys:
    """Key pairs and keys dirs of the proxy and the services in ``base``:
    the proxy's dir lists the services' key, the services' dir the
    proxy's."""

    def __init__(self, base: Path) -> None:
        self.pairs = {name: generate() for name in (PROXY_HOST, SERVICE,
                                                    STRANGER)}
        self.files = {name: str(base / ("%s.pair" % name))
                      for name in self.pairs}
        for name, pair in self.pairs.items():
            write_keypair(self.files[name], pair, host=name)
        self.proxy_dir = str(base / "proxy-keys")
        self.service_dir = str(base / "service-keys")
        self.add(self.proxy_dir, SERVICE)
        self.add(self.service_dir, PROXY_HOST)

    def add(self, keys_dir: str, name: str) -> str:
        """Put ``name``'s public certificate in ``keys_dir``; its path."""
        path = os.path.join(keys_dir, name + ".key")
        write_public(path, self.pairs[name].public, host=name)
        return path

    def proxy_options(self) -> str:
        return ("rpc_zmq_curve = true\nrpc_zmq_curve_key_file = %s\n"
                "rpc_zmq_curve_keys_dir = %s\n"
                % (self.files[PROXY_HOST], self.proxy_dir))

    def service(self, name: str = SERVICE,
                keys_dir: str | None = None) -> dict[str, Any]:
        return {"host": name, "rpc_zmq_curve": True,
                "rpc_zmq_curve_key_file": self.files[name],
                "rpc_zmq_curve_keys_dir": keys_dir or self.service_dir}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def curve_proxy(tmp_path: Path, redis_url: str, keys: Keys
                ) -> Any:
    """``start(pub_sub=False)`` -> a proxy with CURVE, from its command
    line, once it forwards; stopped after the test."""
    procs: list[Proc] = []

    def start(pub_sub: bool = False) -> RunningProxy:
        n = len(procs) + 1
        conf = write_conf(tmp_path / ("curve%d.conf" % n), redis_url,
                          keys.proxy_options()
                          + ("use_pub_sub = true\n" if pub_sub else ""))
        argv = proxy_script() + ["--config-file", conf, "--host", PROXY_HOST,
                                 "--health-port", str(free_port())]
        proc = Proc("curve-proxy%d" % n, argv,
                    str(tmp_path / ("curve-proxy%d.out" % n)),
                    env=child_env())
        procs.append(proc)
        proc.wait_for_line("forwarding", scaled(30))
        return RunningProxy(proc)

    yield start
    for proc in procs:
        proc.stop()


def transport(factory: Callable[..., Any], url: str, pub_sub: bool = False,
              **kw: Any) -> Any:
    return factory(url, use_router_proxy=True, use_pub_sub=pub_sub,
                   zmq_target_expire=30, zmq_target_update=10, **kw)


def handshakes(sock: Any, endpoint: str, wait: float) -> list[int]:
    """Connect ``sock`` to ``endpoint``; the handshake events (succeeded or
    failed) its monitor reports within ``wait`` seconds, until the first
    success."""
    monitor = sock.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    seen: list[int] = []
    try:
        sock.connect(endpoint)
        deadline = time.monotonic() + scaled(wait)
        while time.monotonic() < deadline:
            if monitor.poll(50):
                seen.append(zmq.utils.monitor.recv_monitor_message(
                    monitor)["event"])
                if seen[-1] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    break
    finally:
        sock.disable_monitor()
        monitor.close(0)
    return seen


# -------------------------------------------------------------- accepted --

def test_calls_casts_and_fanout_through_a_curve_proxy(
        curve_proxy: Any, transport_factory: Any, redis_url: str,
        keys: Keys) -> None:
    proxy = curve_proxy()
    server = transport(transport_factory, redis_url, **keys.service())
    caller = transport(transport_factory, redis_url, **keys.service())
    with serving(server, "curved", "s1") as endpoint:
        rpc = client(caller, "curved")
        assert rpc.call({}, "whoami") == "s1"
        assert rpc.call({}, "echo", value={"k": [1, 2]}) == {"k": [1, 2]}
        rpc.cast({}, "record", value="cast")
        client(caller, "curved", fanout=True).cast({}, "record",
                                                   value="fanout")
        wait_for(lambda: sorted(endpoint.casts) == ["cast", "fanout"], 10,
                 what="the cast and the fanout")
    values = proxy.metrics()
    assert values[ACCEPTED] >= 2, values
    assert values[REFUSED] == 0, values


def test_a_plain_zeromq_peer_gets_no_handshake_with_the_proxy(
        curve_proxy: Any, keys: Keys) -> None:
    """Nothing reaches the proxy in clear: a peer without CURVE never
    completes its handshake, where a CURVE peer with an admitted key
    does."""
    proxy = curve_proxy()
    ctx = zmq.Context()
    try:
        plain = ctx.socket(zmq.DEALER)
        plain.linger = 0
        seen = handshakes(plain, "tcp://127.0.0.1:%d" % proxy.frontend, 2)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen, seen
        assert seen, "no handshake failure reported to the plain peer"
        plain.close(0)
        curved = ctx.socket(zmq.DEALER)
        curved.linger = 0
        curved.curve_secretkey = keys.pairs[SERVICE].secret
        curved.curve_publickey = keys.pairs[SERVICE].public
        curved.curve_serverkey = keys.pairs[PROXY_HOST].public
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in handshakes(
            curved, "tcp://127.0.0.1:%d" % proxy.backend, 5)
        curved.close(0)
    finally:
        ctx.term()


# --------------------------------------------------------------- refused --

def test_an_unknown_key_fails_fast_is_counted_and_let_in_once_listed(
        curve_proxy: Any, transport_factory: Any, redis_url: str,
        keys: Keys) -> None:
    proxy = curve_proxy()
    server = transport(transport_factory, redis_url, **keys.service())
    good = transport(transport_factory, redis_url, **keys.service())
    stranger = transport(transport_factory, redis_url,
                         **keys.service(STRANGER))
    with serving(server, "curved", "s1"):
        assert client(good, "curved").call({}, "whoami") == "s1"
        start = time.monotonic()
        with pytest.raises(HostRefused) as caught:
            client(stranger, "curved", timeout=20).call({}, "whoami")
        assert time.monotonic() - start < scaled(10)
        words = str(caught.value)
        assert "router proxy" in words and PROXY_HOST in words, words
        assert STRANGER + ".key" in words, words
        assert proxy.metrics()[REFUSED] >= 1
        assert "no matching key" in proxy.proc.output()
        # the others go on
        assert client(good, "curved").call({}, "whoami") == "s1"
        # the operator lists the stranger's key: the proxy follows its
        # keys dir, the stranger's sockets connect anew within
        # RETRY_REFUSED s each (a call between the two may lose its reply)
        keys.add(keys.proxy_dir, STRANGER)

        def answered() -> bool:
            try:
                return client(stranger, "curved", timeout=5).call(
                    {}, "whoami") == "s1"
            except (HostRefused, oslo_messaging.MessagingTimeout):
                time.sleep(0.2)
                return False

        wait_for(answered, 30, what="a call after the key was listed")


def test_a_missing_proxy_certificate_names_the_file_expected(
        curve_proxy: Any, transport_factory: Any, redis_url: str,
        keys: Keys, tmp_path: Path) -> None:
    curve_proxy()
    server = transport(transport_factory, redis_url, **keys.service())
    empty = tmp_path / "no-proxy-cert"
    empty.mkdir()
    keys.add(str(empty), SERVICE)
    caller = transport(transport_factory, redis_url,
                       **keys.service(keys_dir=str(empty)))
    with serving(server, "curved", "s1"):
        start = time.monotonic()
        with pytest.raises(NoServerKey) as caught:
            client(caller, "curved", timeout=20).call({}, "whoami")
        assert time.monotonic() - start < scaled(10)
    assert os.path.join(str(empty), PROXY_HOST + ".key") in str(caught.value)


# ---------------------------------------------------------------- pubsub --

def test_fanout_through_a_curve_publisher_and_a_local_publisher(
        curve_proxy: Any, transport_factory: Any, redis_url: str,
        keys: Keys, tmp_path: Path) -> None:
    # a local publisher on this host: a CURVE server for the services
    # (named by subscribe_on's host, localhost) and a CURVE client of the
    # central publisher (named by its announced host); same key pair
    keys.pairs["localhost"] = keys.pairs[PROXY_HOST]
    keys.add(keys.service_dir, "localhost")
    keys.add(keys.proxy_dir, PROXY_HOST)
    central = curve_proxy(pub_sub=True)
    port = free_port()
    conf = write_conf(tmp_path / "local.conf", redis_url,
                      keys.proxy_options() + "use_pub_sub = true\n")
    local = Proc("local", proxy_script() + [
        "--local-publisher", "--config-file", conf, "--host", "127.0.0.1",
        "--publisher-port", str(port), "--health-port", str(free_port())],
        str(tmp_path / "local.out"), env=child_env())
    try:
        local.wait_for_line("publishing", scaled(30))
        wait_for(lambda: central.metrics()[
            PROXY + 'peers{side="publisher"}'] == 1, 10,
            what="the local publisher subscribed to the central one")
        on = ["localhost:%d" % port]
        servers = [transport(transport_factory, redis_url, pub_sub=True,
                             **keys.service()),
                   transport(transport_factory, redis_url, pub_sub=True,
                             subscribe_on=on, **keys.service())]
        caller = transport(transport_factory, redis_url, pub_sub=True,
                           **keys.service())
        with ExitStack() as stack:
            fan = serve_all(stack, servers, "fan")
            values = ["v%d" % n for n in range(3)]
            for value in values:
                client(caller, "fan", fanout=True).cast({}, "record",
                                                         value=value)
            fan.wait_all(values, "the fanouts, direct and through the "
                         "local publisher")
            assert all(fan.got(v) == [1, 1] for v in values)
        assert central.metrics()[PUBLISHED] == 3
    finally:
        local.stop()
