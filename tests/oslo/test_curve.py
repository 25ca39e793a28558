"""CURVE on the oslo.messaging driver, with RPC servers in their own
processes (``om_server.py --curve``) and callers in the test process.

Two hosts on loopback, each named by its ``rpc_zmq_host``: the server
``127.0.0.2`` and the caller ``127.0.0.1`` (whose reply socket the server
pushes to). Each has its key pair and a keys dir holding the public
certificate ``<host>.key`` of both, as ``nova-rpc-zmq keys`` would leave
them. The wire test routes the caller through a recording TCP proxy by
registering the proxy's address in the server's place.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
import zmq

from nova_rpc_zmq.oslo_driver import registry
from nova_rpc_zmq.oslo_driver.curve import HostRefused, NoServerKey
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import Proc, free_port, scaled, wait_for
from tests.functional.wire_recorder import RecordingProxy

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(60)]

SERVER_HOST, CLIENT_HOST = "127.0.0.2", "127.0.0.1"
TOPIC = "curved"
#: Seconds a refused call may take (its timeout, plus this) to end.
SLACK = 3.0


class Site:
    """Key pairs and keys dirs of the two hosts, in ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.server_key = str(base / "server-host.key")
        self.client_key = str(base / "client-host.key")
        self.server_keys = str(base / "server-keys")
        self.client_keys = str(base / "client-keys")
        pairs = {SERVER_HOST: generate(), CLIENT_HOST: generate()}
        write_keypair(self.server_key, pairs[SERVER_HOST], host=SERVER_HOST)
        write_keypair(self.client_key, pairs[CLIENT_HOST], host=CLIENT_HOST)
        for keys_dir in (self.server_keys, self.client_keys):
            for host, pair in pairs.items():
                write_public(self.cert(keys_dir, host), pair.public, host=host)

    @staticmethod
    def cert(keys_dir: str, host: str) -> str:
        return os.path.join(keys_dir, host + ".key")

    def server_args(self) -> list[str]:
        return ["--host", SERVER_HOST, "--curve", self.server_key,
                self.server_keys]

    def client_options(self, key_file: str | None = None) -> dict[str, Any]:
        return {"host": CLIENT_HOST, "rpc_zmq_curve": True,
                "rpc_zmq_curve_key_file": key_file or self.client_key,
                "rpc_zmq_curve_keys_dir": self.client_keys}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "curve")


def client(transport: Any, timeout: float, **kw: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=TOPIC, **kw),
        timeout=scaled(timeout))


def refused_counts(proc: Proc) -> dict[str, int]:
    """Stop the server; the handshakes it refused, as it printed them."""
    proc.stop()
    [line] = [line for line in proc.output().splitlines()
              if line.startswith("CURVE-REFUSED ")]
    return json.loads(line.split(" ", 1)[1])


def refused(send: Any, timeout: float = 3.0) -> str:
    """Run ``send()``, which must raise HostRefused well within
    ``timeout`` (not wait for it); returns the error's words."""
    start = time.monotonic()
    with pytest.raises(HostRefused) as caught:
        send()
    took = time.monotonic() - start
    assert took < scaled(timeout), took
    return str(caught.value)


def refused_call(transport: Any, timeout: float = 3.0) -> str:
    """A call that must end with HostRefused within its timeout."""
    return refused(lambda: client(transport, timeout).call(
        {}, "echo", value="refused"), timeout)


# -------------------------------------------------------------- accepted --

@pytest.mark.parametrize("executor", [[], ["--eventlet"]],
                         ids=["threading", "eventlet"])
def test_call_and_cast_with_curve(site: Site, server_factory: Any,
                                  transport_factory: Any,
                                  executor: list[str]) -> None:
    server = server_factory("zmq://", TOPIC, "s1", *site.server_args(),
                            *executor)
    transport = transport_factory("zmq://", **site.client_options())
    rpc = client(transport, 10)
    assert rpc.call({}, "whoami") == "s1"
    assert rpc.call({}, "echo", value={"k": [1, 2]}) == {"k": [1, 2]}
    rpc.cast({}, "record", value="curved cast")
    record_dir = server_factory.record_dir
    # the server creates its record file, then writes it: wait for both
    wait_for(lambda: [(record_dir / name).read_text()
                      for name in os.listdir(record_dir)] == ["curved cast"],
             10, what="the cast")
    assert refused_counts(server) == {}


# ---------------------------------------------------------------- wire --

@pytest.mark.parametrize("curve", [True, False], ids=["curve-on",
                                                      "curve-off"])
def test_call_argument_is_not_on_the_wire_with_curve(
        site: Site, server_factory: Any, transport_factory: Any,
        registry_dir: str, curve: bool) -> None:
    extra = site.server_args() if curve else ["--host", SERVER_HOST]
    server_factory("zmq://", TOPIC, "s1", *extra)
    # the caller must reach the server through the proxy only
    directory = registry.DirectoryRegistry(registry_dir)
    keys = ["rpc/openstack/%s" % TOPIC, "rpc/openstack/%s/s1" % TOPIC]
    [member] = directory.members(keys[0])
    host, _, port = member.rpartition(":")
    assert host == SERVER_HOST
    listen_port = free_port(SERVER_HOST)
    proxy = RecordingProxy((SERVER_HOST, listen_port),
                           (SERVER_HOST, int(port)))
    try:
        for key in keys:
            directory.register(key, "%s:%d" % (SERVER_HOST, listen_port), 300)
            directory.unregister(key, member)
        options = site.client_options() if curve else {"host": CLIENT_HOST}
        transport = transport_factory("zmq://", **options)
        secret = "MARKER-" + uuid.uuid4().hex
        assert client(transport, 10).call({}, "echo", value=secret) == secret
        sent = proxy.sent()
        assert proxy.connections >= 1   # through the proxy, not around it
        assert len(sent) > len(secret)
        if curve:
            assert secret.encode() not in sent
            assert TOPIC.encode() not in sent
            assert b"CURVE" in sent[:64]   # the greeting names it in clear
        else:
            # the same check must see the marker in plaintext, or it could
            # never fail
            assert secret.encode() in sent
            assert b"NULL" in sent[:64]
    finally:
        proxy.close()


# ------------------------------------------------------------- refused --

@pytest.mark.parametrize("executor", [[], ["--eventlet"]],
                         ids=["threading", "eventlet"])
def test_unknown_client_key_is_refused(
        site: Site, server_factory: Any, transport_factory: Any,
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        executor: list[str]) -> None:
    caplog.set_level(logging.WARNING)
    server = server_factory("zmq://", TOPIC, "s1", *site.server_args(),
                            *executor)
    stranger = str(tmp_path / "stranger.key")
    write_keypair(stranger, generate(), host=CLIENT_HOST)
    transport = transport_factory("zmq://",
                                  **site.client_options(key_file=stranger))
    # a cast does not wait for the server it cannot reach: it says why
    said = refused(lambda: client(transport, 3).cast({}, "record",
                                                     value="refused"))
    assert said.startswith("host %s refused the connection: no matching "
                           "key" % SERVER_HOST), said
    assert "as %s.key" % CLIENT_HOST in said
    assert refused_call(transport) == said
    # neither the cast nor the call reached the server
    assert os.listdir(server_factory.record_dir) == []
    errors = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert any("handshake with %s failed: no matching key" % SERVER_HOST in m
               for m in errors), errors
    counts = refused_counts(server)
    assert counts.get("no matching key", 0) >= 1, counts
    assert any(line.startswith("CURVE handshake refused from 127.0.0.")
               and "no matching key" in line
               for line in server.output().splitlines()), server.output()


def test_key_added_to_the_server_keys_dir_is_let_in_without_restart(
        site: Site, server_factory: Any, transport_factory: Any,
        tmp_path: Path) -> None:
    server_factory("zmq://", TOPIC, "s1", *site.server_args())
    stranger_file = str(tmp_path / "stranger.key")
    stranger = generate()
    write_keypair(stranger_file, stranger, host=CLIENT_HOST)
    transport = transport_factory(
        "zmq://", **site.client_options(key_file=stranger_file))
    refused_call(transport)
    # the operator lists the caller's new key: the server's allow list
    # follows its keys dir, the caller opens a new socket within
    # RETRY_REFUSED seconds, and calls go through again
    write_public(site.cert(site.server_keys, CLIENT_HOST), stranger.public,
                 host=CLIENT_HOST)

    def answered() -> bool:
        try:
            return client(transport, 5).call({}, "whoami") == "s1"
        except HostRefused:
            time.sleep(0.2)   # until the caller's next retry
            return False

    wait_for(answered, 15, what="a call after the key was added")


def test_stale_server_key_is_refused(
        site: Site, server_factory: Any, transport_factory: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server = server_factory("zmq://", TOPIC, "s1", *site.server_args())
    # the caller's copy of the server's certificate is another key
    stale = site.cert(site.client_keys, SERVER_HOST)
    write_public(stale, generate().public, host=SERVER_HOST)
    transport = transport_factory("zmq://", **site.client_options())
    said = refused_call(transport)
    assert ("wrong server key for %s: the key in %s does not match"
            % (SERVER_HOST, stale)) in said
    errors = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert any(said.split(": ", 1)[1] in m for m in errors), errors
    counts = refused_counts(server)
    assert counts.get("bad handshake", 0) >= 1, counts


def test_server_without_certificate_here_fails_the_send_at_once(
        site: Site, server_factory: Any, transport_factory: Any) -> None:
    server_factory("zmq://", TOPIC, "s1", *site.server_args())
    missing = site.cert(site.client_keys, SERVER_HOST)
    os.unlink(missing)
    transport = transport_factory("zmq://", **site.client_options())
    start = time.monotonic()
    with pytest.raises(NoServerKey) as caught:
        client(transport, 10).call({}, "whoami")
    assert time.monotonic() - start < scaled(SLACK)
    message = str(caught.value)
    assert "no public key for host %s" % SERVER_HOST in message
    assert missing in message and "rpc_zmq_curve_keys_dir" in message


def test_a_server_we_have_no_key_for_is_passed_over(
        site: Site, server_factory: Any, transport_factory: Any,
        registry_dir: str) -> None:
    """Two servers of a topic, one on a host whose certificate our keys
    dir lacks: every call and cast goes to the other, none fails."""
    server_factory("zmq://", TOPIC, "s1", *site.server_args())
    server_factory("zmq://", TOPIC, "s2", "--host", "127.0.0.3", "--curve",
                   site.server_key, site.server_keys)
    transport = transport_factory("zmq://", **site.client_options())
    rpc = client(transport, 10)
    # both servers registered, so round robin offers s2 every other time
    wait_for(lambda: len(registry.DirectoryRegistry(registry_dir).members(
        "rpc/openstack/%s" % TOPIC)) == 2, 10, what="both servers registered")
    assert [rpc.call({}, "whoami") for _ in range(6)] == ["s1"] * 6
    rpc.cast({}, "record", value="past s2")
    record_dir = server_factory.record_dir
    wait_for(lambda: [(record_dir / name).read_text()
                      for name in os.listdir(record_dir)] == ["past s2"],
             10, what="the cast")


# --------------------------------------------------------------- start --

def test_missing_key_file_fails_the_transport_start(
        site: Site, transport_factory: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "host.key")
    with pytest.raises(Exception) as caught:
        transport_factory("zmq://", **site.client_options(key_file=missing))
    message = str(caught.value)
    assert "[oslo_messaging_zmq] rpc_zmq_curve_key_file" in message
    assert missing in message and "nova-rpc-zmq keys generate" in message


def test_curve_off_by_default(transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    assert transport.conf.oslo_messaging_zmq.rpc_zmq_curve is False
    assert transport._driver._curve is None
