"""CURVE with real sockets: the ZAP allow list, refusals seen on both sides,
key rotation without restart, and the ``nova-rpc-zmq keys`` command.

Two "hosts" share this process: hostb runs a receiver (PULL or ROUTER, a
CURVE server with its own context and ZapAuthenticator), hosta sends from
PUSH or DEALER sockets in another context, watched by a HandshakeWatcher.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time
from typing import Any, Callable

import pytest
import zmq

from nova_rpc_zmq import concurrency, zmqio
from nova_rpc_zmq.cli import main as cli_main
from nova_rpc_zmq.errors import AuthenticationError
from nova_rpc_zmq.security import (AllowList, HandshakeWatcher, KeyPair,
                                   ZapAuthenticator, configure_client,
                                   configure_server, keys, server_key_for)
from nova_rpc_zmq.security.monitor import _Watched
from tests.support import scaled

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(60)]

KINDS = [pytest.param((zmq.PULL, zmq.PUSH), id="push-pull"),
         pytest.param((zmq.ROUTER, zmq.DEALER), id="dealer-router")]


def wait_until(predicate: Callable[[], Any], handler: Any = None,
               timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` with a deadline, sleeping through ``handler`` so
    green threads run while we wait."""
    sleep = handler.sleep if handler is not None else time.sleep
    deadline = time.monotonic() + scaled(timeout)
    for _ in range(100000):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        sleep(0.02)
    raise AssertionError("timed out after %.1fs waiting for %s"
                         % (scaled(timeout), what))


class Receiver:
    """hostb's CURVE server socket behind a ZapAuthenticator."""

    def __init__(self, kind: int, pair: KeyPair, keys_dir: str,
                 curve: bool = True, zap: bool = True,
                 domain_only: bool = False) -> None:
        self.ctx = zmq.Context()
        self.allow = AllowList(keys_dir, check_interval=0.05)
        self.auth = ZapAuthenticator(self.ctx, self.allow)
        if zap:
            self.auth.start()
        self.sock = self.ctx.socket(kind)
        self.sock.linger = 0
        self.sock.maxmsgsize = 1 << 20
        if curve:
            configure_server(self.sock, pair)
        elif domain_only:
            # A server left without CURVE but with a ZAP domain: ZAP is
            # asked about NULL peers, and the policy must refuse them.
            self.sock.zap_domain = b"nova-rpc-zmq"
        if zap:
            self.auth.watch_server(self.sock)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.kind = kind

    @property
    def endpoint(self) -> str:
        return "tcp://127.0.0.1:%d" % self.port

    def receive(self, timeout: float = 5.0) -> tuple[bytes, str | None]:
        """(payload, ZAP user id) of the next message, or raise."""
        assert self.sock.poll(int(scaled(timeout) * 1000)), "no message"
        frames = self.sock.recv_multipart(copy=False)
        return frames[-1].bytes, frames[-1].get("User-Id")

    def nothing_arrives(self, within: float = 0.3) -> bool:
        return self.sock.poll(int(scaled(within) * 1000)) == 0

    def close(self) -> None:
        self.sock.close(linger=0)
        self.auth.stop()
        self.ctx.term()


class Sender:
    """hosta's sockets to hostb, watched by one HandshakeWatcher."""

    def __init__(self, keys_dir: str, handler_name: str = "threading"
                 ) -> None:
        self.handler = concurrency.get_handler(handler_name)
        self.ctx = zmqio.context(self.handler)
        self.failures: list[tuple[str, AuthenticationError]] = []
        self.watcher = HandshakeWatcher(
            self.handler, keys_dir=keys_dir, local_host="hosta",
            on_failure=lambda host, err: self.failures.append((host, err)))
        self.keys_dir = keys_dir
        self.sockets: list[Any] = []

    def connect(self, kind: int, endpoint: str, pair: KeyPair | None,
                server_key: bytes | None = None) -> Any:
        sock = zmqio.make_socket(self.ctx, kind, linger=0, sndtimeo=0)
        if pair is not None:
            configure_client(sock, pair,
                             server_key or server_key_for("hostb",
                                                          self.keys_dir))
        self.watcher.watch(sock, "hostb")
        sock.connect(endpoint)
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.watcher.stop()
        self.ctx.term()


@pytest.fixture
def site(tmp_path):
    """Key pairs and keys dirs of hosta (sender) and hostb (receiver)."""
    a, b = keys.generate(), keys.generate()
    a_keys, b_keys = tmp_path / "a-keys", tmp_path / "b-keys"
    # hostb allows hosta (and itself); hosta knows hostb's server key.
    keys.write_public(str(b_keys / "hosta.key"), a.public, host="hosta")
    keys.write_public(str(b_keys / "hostb.key"), b.public, host="hostb")
    keys.write_public(str(a_keys / "hostb.key"), b.public, host="hostb")
    return {"a": a, "b": b, "a_keys": str(a_keys), "b_keys": str(b_keys),
            "tmp": tmp_path}


@pytest.fixture
def opened():
    """Closes every Receiver and Sender a test opened, in that order."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


def send(sock: Any, payload: bytes) -> None:
    try:
        sock.send(payload, zmq.NOBLOCK)
    except zmq.Again:  # no pipe yet: the refusal tests do not need it
        pass


# ------------------------------------------------------------- accepted --

@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("handler_name", ["threading", "eventlet"])
def test_listed_key_is_accepted(site, opened, kinds, handler_name):
    server_kind, client_kind = kinds
    rx = Receiver(server_kind, site["b"], site["b_keys"])
    opened.append(rx)
    tx = Sender(site["a_keys"], handler_name)
    opened.append(tx)
    sock = tx.connect(client_kind, rx.endpoint, site["a"])
    sock.sndtimeo = int(scaled(5) * 1000)
    sock.send(b"hello")
    if handler_name == "eventlet":
        wait_until(lambda: rx.sock.poll(0), tx.handler, what="delivery")
    payload, user_id = rx.receive()
    assert payload == b"hello"
    assert user_id == "hosta"  # the ZAP user id is the key's host name
    assert rx.auth.accepted == 1
    assert rx.auth.refused == {}
    assert tx.watcher.failure("hostb") is None
    assert tx.failures == []


# -------------------------------------------------------------- refused --

@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("handler_name", ["threading", "eventlet"])
def test_unknown_client_key_is_refused(site, opened, caplog, kinds,
                                       handler_name):
    caplog.set_level(logging.WARNING)
    server_kind, client_kind = kinds
    rx = Receiver(server_kind, site["b"], site["b_keys"])
    opened.append(rx)
    tx = Sender(site["a_keys"], handler_name)
    opened.append(tx)
    stranger = keys.generate()
    sock = tx.connect(client_kind, rx.endpoint, stranger)
    send(sock, b"secret")
    err = wait_until(lambda: tx.watcher.failure("hostb"), tx.handler,
                     what="the sender to learn of the refusal")
    assert isinstance(err, AuthenticationError)
    assert err.host == "hostb"
    assert err.label == "no matching key"
    assert str(err).startswith("host hostb refused the connection: no "
                               "matching key: the receiver on hostb does not "
                               "list hosta's public key in its keys dir")
    assert [(h, e.label) for h, e in tx.failures] == [("hostb",
                                                       "no matching key")]
    wait_until(lambda: rx.auth.refused.get("no matching key") == 1,
               tx.handler, what="the receiver's refusal counter")
    assert rx.auth.accepted == 0
    assert rx.nothing_arrives()
    refusals = [r.getMessage() for r in caplog.records
                if r.name == "nova_rpc_zmq.security.zap"]
    assert any("127.0.0.1" in m and "no matching key" in m
               and stranger.public.decode() in m for m in refusals), refusals


@pytest.mark.parametrize("kinds", KINDS)
def test_wrong_server_key_is_refused(site, opened, caplog, kinds):
    caplog.set_level(logging.WARNING)
    server_kind, client_kind = kinds
    rx = Receiver(server_kind, site["b"], site["b_keys"])
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    stale = keys.generate().public  # e.g. hostb's key before a rotation
    sock = tx.connect(client_kind, rx.endpoint, site["a"], server_key=stale)
    send(sock, b"secret")
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the sender to learn of the refusal")
    assert err.label == "wrong server key"
    assert ("wrong server key for hostb: the key in %s does not match "
            "hostb's key pair" % os.path.join(site["a_keys"], "hostb.key")
            ) in str(err)
    # hostb greets with CURVE (the watcher read its greeting), so a
    # receiver without CURVE is not among the causes named.
    assert "its receiver runs without its authenticator)" in str(err)
    # The server cannot decrypt the client's HELLO: a cryptographic error,
    # counted by watch_server; ZAP is never asked.  libzmq retries this one
    # by itself; each retry fails the same way but the driver is told only
    # once, and the receiver's log says it once (WARN_EVERY).
    wait_until(lambda: rx.auth.refused.get("bad handshake", 0) >= 3,
               what="the receiver to count three bad handshakes")
    wait_until(lambda: tx.watcher.counts.get("wrong server key", 0) >= 2,
               what="a second failed retry")
    assert len(tx.failures) == 1
    warned = [r.getMessage() for r in caplog.records
              if r.name == "nova_rpc_zmq.security.zap"
              and "bad handshake" in r.getMessage()]
    assert len(warned) == 1, warned
    assert rx.allow.refusals == {}
    assert rx.auth.accepted == 0
    assert rx.nothing_arrives()


@pytest.mark.parametrize("kinds", KINDS)
def test_plaintext_client_is_refused(site, opened, kinds):
    server_kind, client_kind = kinds
    rx = Receiver(server_kind, site["b"], site["b_keys"])
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    sock = tx.connect(client_kind, rx.endpoint, None)  # rpc_zmq_curve off
    send(sock, b"plain")
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the sender to learn of the refusal")
    assert err.label == "mechanism mismatch"
    assert "this sender has rpc_zmq_curve off; set rpc_zmq_curve = true " \
        "here" in str(err)
    # Refused at the greeting, before ZAP, so only watch_server counts it;
    # which side detects the mismatch is a race (see zap.py).
    wait_until(lambda: set(rx.auth.refused) & {"mechanism mismatch",
                                               "handshake aborted"},
               what="the receiver to count the refusal")
    assert set(rx.auth.refused) <= {"mechanism mismatch",
                                    "handshake aborted"}
    assert rx.allow.refusals == {}
    assert rx.auth.accepted == 0
    assert rx.nothing_arrives()


def test_curve_client_against_plaintext_receiver(site, opened):
    rx = Receiver(zmq.PULL, site["b"], site["b_keys"], curve=False)
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    sock = tx.connect(zmq.PUSH, rx.endpoint, site["a"])
    send(sock, b"x")
    # Whichever side wins the greetings race (see monitor.py), the first
    # and only report is the mismatch: when hostb hangs up first, the
    # watcher reads its greeting to tell it from a wrong server key.
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the mismatch to be reported")
    assert err.label == "mechanism mismatch"
    assert "this sender uses CURVE but hostb does not" in str(err)
    assert [e.label for _, e in tx.failures] == ["mechanism mismatch"]
    assert rx.nothing_arrives()


def test_curve_client_hung_up_on_by_plaintext_receiver(site, opened):
    """The race the receiver wins: our monitor sees only a hang-up
    (NO_DETAIL, EPIPE), as with a wrong server key.  The race cannot be
    forced, so the event is handed to the watcher as libzmq would; the
    greeting probe then meets the real plaintext receiver."""
    rx = Receiver(zmq.PULL, site["b"], site["b_keys"], curve=False)
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    sock = tx.ctx.socket(zmq.PUSH)
    tx.sockets.append(sock)
    configure_client(sock, site["a"], server_key_for("hostb",
                                                     site["a_keys"]))
    item = _Watched(None, "hostb", sock.getsockopt(zmq.MECHANISM))
    hang_up = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    tx.watcher._record(item, hang_up, 32, rx.endpoint)
    err = tx.watcher.failure("hostb")
    assert err.label == "mechanism mismatch"
    assert "hostb does not (it greets with NULL" in str(err)
    # libzmq's retries (every ~100 ms) are counted, not probed again nor
    # reported again.
    probed = dict(tx.watcher._probed)
    for _ in range(5):
        tx.watcher._record(item, hang_up, 32, rx.endpoint)
    assert tx.watcher._probed == probed
    assert tx.watcher.counts == {"mechanism mismatch": 6}
    assert [e.label for _, e in tx.failures] == ["mechanism mismatch"]
    # No answer from the endpoint (nothing listens there): the words name
    # every cause, the missing CURVE among them.
    tx.watcher.clear("hostb")
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    nobody = "tcp://127.0.0.1:%d" % spare.getsockname()[1]
    spare.close()
    tx.watcher._record(item, hang_up, 32, nobody)
    err = tx.watcher.failure("hostb")
    assert err.label == "wrong server key"
    assert "or without CURVE" in str(err)


def test_policy_refuses_null_when_a_server_lacks_curve(site, opened):
    """Second line of defence: a server socket left without CURVE but with
    the ZAP domain asks ZAP about NULL peers, and the allow list says no."""
    rx = Receiver(zmq.PULL, site["b"], site["b_keys"], curve=False,
                  domain_only=True)
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    sock = tx.connect(zmq.PUSH, rx.endpoint, None)
    send(sock, b"x")
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the sender to learn of the refusal")
    assert err.label == "mechanism mismatch"
    assert err.value == 400  # a ZAP refusal this time
    assert rx.allow.refusals == {"mechanism mismatch": 1}
    assert rx.auth.refused == {"mechanism mismatch": 1}
    assert rx.nothing_arrives()


def test_missing_authenticator_fails_closed(site, opened):
    rx = Receiver(zmq.PULL, site["b"], site["b_keys"], zap=False)
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    sock = tx.connect(zmq.PUSH, rx.endpoint, site["a"])
    send(sock, b"x")
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the sender to learn of the refusal")
    assert err.label == "wrong server key"
    assert "runs without its authenticator" in str(err)
    assert rx.nothing_arrives()


def test_second_authenticator_in_one_context_is_refused(site):
    from nova_rpc_zmq.errors import LocalError
    ctx = zmq.Context()
    first = ZapAuthenticator(ctx, AllowList(site["b_keys"]))
    second = ZapAuthenticator(ctx, AllowList(site["b_keys"]))
    first.start()
    try:
        with pytest.raises(LocalError, match="one ZapAuthenticator per"):
            second.start()
    finally:
        first.stop()
        ctx.term()
    assert not first.running


def test_watch_after_stop_is_refused():
    from nova_rpc_zmq.errors import LocalError
    watcher = HandshakeWatcher()
    watcher.stop()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    try:
        with pytest.raises(LocalError, match="was stopped"):
            watcher.watch(sock, "hostb")
    finally:
        sock.close(linger=0)
        ctx.term()


def test_configure_after_bind_is_refused():
    from nova_rpc_zmq.errors import LocalError
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.linger = 0
    try:
        sock.bind_to_random_port("tcp://127.0.0.1")
        with pytest.raises(LocalError, match="before the socket binds"):
            configure_server(sock, keys.generate())
    finally:
        sock.close()
        ctx.term()


# ------------------------------------------------------------- rotation --

def test_key_rotation_without_restart(site, opened):
    rx = Receiver(zmq.PULL, site["b"], site["b_keys"])
    opened.append(rx)
    tx = Sender(site["a_keys"])
    opened.append(tx)
    old = site["a"]
    established = tx.connect(zmq.PUSH, rx.endpoint, old)
    established.send(b"before", zmq.NOBLOCK)
    assert rx.receive() == (b"before", "hosta")

    new = keys.generate()
    keys.write_public(os.path.join(site["b_keys"], "hosta-2.key"),
                      new.public)
    os.unlink(os.path.join(site["b_keys"], "hosta.key"))
    wait_until(lambda: new.public.decode() in rx.allow.hosts()
               and old.public.decode() not in rx.allow.hosts(),
               what="the allow list to see the rotation")

    stale = tx.connect(zmq.PUSH, rx.endpoint, old)
    send(stale, b"old key")
    err = wait_until(lambda: tx.watcher.failure("hostb"),
                     what="the old key to be refused")
    assert err.label == "no matching key"
    assert rx.auth.refused == {"no matching key": 1}

    fresh = tx.connect(zmq.PUSH, rx.endpoint, new)
    fresh.sndtimeo = int(scaled(5) * 1000)
    fresh.send(b"new key")
    assert rx.receive() == (b"new key", "hosta-2")
    # A success with hostb clears the failure recorded for it.
    wait_until(lambda: tx.watcher.failure("hostb") is None,
               what="the success to clear the failure")
    # ZAP runs once per connection: removing a key does not cut a
    # connection made before (documented in policy.py).
    established.send(b"still up", zmq.NOBLOCK)
    assert rx.receive() == (b"still up", "hosta")
    assert rx.nothing_arrives()  # the stale socket's message never came


# ------------------------------------------------------------------ CLI --

def run_cli(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    rc = cli_main.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_keys_generate_and_show(tmp_path, capsys):
    key_file = str(tmp_path / "etc" / "host.key")
    keys_dir = str(tmp_path / "etc" / "keys")
    base = ["--key-file", key_file, "--host", "node1"]
    rc, out, err = run_cli(["keys", "generate", "--keys-dir", keys_dir]
                           + base, capsys)
    assert (rc, err) == (0, "")
    pair = keys.load_keypair(key_file)
    own = os.path.join(keys_dir, "node1.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(own).st_mode) == 0o644
    assert keys.load_public(own) == pair.public
    assert pair.public.decode() in out
    assert "Copy %s to the rpc_zmq_curve_keys_dir of every host" % own in out

    rc, out, err = run_cli(["keys", "show"] + base, capsys)
    assert rc == 0
    cert = keys.parse_certificate(out, "<stdout>")
    assert (cert.public, cert.secret, cert.metadata) == (
        pair.public, None, {"host": "node1"})
    assert pair.secret.decode() not in out

    rc, out, err = run_cli(["keys", "generate", "--keys-dir", keys_dir]
                           + base, capsys)
    assert rc == 1 and "already exists; pass --force" in err
    assert keys.load_keypair(key_file) == pair
    rc, out, err = run_cli(["keys", "generate", "--keys-dir", keys_dir,
                            "--force"] + base, capsys)
    assert rc == 0
    replaced = keys.load_keypair(key_file)
    assert replaced != pair
    assert keys.load_public(own) == replaced.public

    os.chmod(key_file, 0o644)
    rc, out, err = run_cli(["keys", "show"] + base, capsys)
    assert rc == 1
    assert "run `chmod 600 %s`" % key_file in err


def test_keys_defaults_come_from_config(tmp_path, capsys):
    from nova_rpc_zmq import config
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\nrpc_zmq_curve_key_file = %s\n"
                    "rpc_zmq_curve_keys_dir = %s\nrpc_zmq_host = cfghost\n"
                    % (tmp_path / "k" / "host.key", tmp_path / "k" / "keys"))
    try:
        rc, out, err = run_cli(["keys", "generate", "--config-file",
                                str(conf)], capsys)
    finally:
        config.reset()
    assert (rc, err) == (0, "")
    pair = keys.load_keypair(str(tmp_path / "k" / "host.key"))
    assert keys.load_public(str(tmp_path / "k" / "keys" / "cfghost.key")) \
        == pair.public


def test_cli_made_keys_work_between_two_hosts(tmp_path, capsys, opened):
    """The operator's procedure end to end: generate on each host, copy each
    host's `keys show` output into the other's keys dir."""
    dirs = {}
    for host in ("hosta", "hostb"):
        d = tmp_path / host
        rc, _, _ = run_cli(["keys", "generate", "--key-file",
                            str(d / "host.key"), "--keys-dir",
                            str(d / "keys"), "--host", host], capsys)
        assert rc == 0
        dirs[host] = d
    for src, dst in (("hosta", "hostb"), ("hostb", "hosta")):
        rc, out, _ = run_cli(["keys", "show", "--key-file",
                              str(dirs[src] / "host.key"), "--host", src],
                             capsys)
        assert rc == 0
        (dirs[dst] / "keys" / (src + ".key")).write_text(out)
    rx = Receiver(zmq.PULL, keys.load_keypair(str(dirs["hostb"] / "host.key")),
                  str(dirs["hostb"] / "keys"))
    opened.append(rx)
    tx = Sender(str(dirs["hosta"] / "keys"))
    opened.append(tx)
    sock = tx.connect(zmq.PUSH, rx.endpoint,
                      keys.load_keypair(str(dirs["hosta"] / "host.key")))
    sock.sndtimeo = int(scaled(5) * 1000)
    sock.send(b"hi")
    assert rx.receive() == (b"hi", "hosta")
