"""CURVE checked on the wire: the bytes between two hosts, recorded by a
TCP proxy, never hold a call's argument when ``rpc_zmq_curve = true`` (and
do when it is off, so the check can fail); the receiver's own server key
is rotated without restarting any service.

Two hosts on loopback share one ring file:

* host A, ``127.0.0.1``: a receiver (for replies) and this process as the
  caller;
* host B, named ``127.0.0.2``: its receiver binds ``127.0.0.3:P`` and runs
  the demo service ``svc``.  A ``RecordingProxy`` listens on
  ``127.0.0.2:P``, where A's driver connects for host ``127.0.0.2``, and
  forwards to ``127.0.0.3:P``.  Replies go from B to A directly.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import AuthenticationError, Timeout
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.functional.wire_recorder import RecordingProxy
from tests.support import scaled, wait_for

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(90)]

A_IP, B_NAME, B_BIND = "127.0.0.1", "127.0.0.2", "127.0.0.3"


class WiredPair:
    """Hosts A and B with a recording proxy in front of B's receiver."""

    def __init__(self, base: Path, curve: bool) -> None:
        self.base = base
        self.curve = curve
        port = free_port(A_IP)
        ring = base / "ring.json"
        # "client" lists host A so that B's service knows it as a reply host
        ring.write_text(json.dumps({"demo": [B_NAME], "demo_svc": [B_NAME],
                                    "client": [A_IP]}))
        self.keys_dirs = [str(base / "a-keys"), str(base / "b-keys")]
        self.a = self._host(A_IP, A_IP, port, ring, "a")
        self.b = self._host(B_NAME, B_BIND, port, ring, "b")
        self.proxy = RecordingProxy((B_NAME, port), (B_BIND, port))

    def _host(self, name: str, address: str, port: int, ring: Path,
              tag: str) -> LocalHost:
        # (LocalHost's own short /tmp dir: ipc:// paths are at most 107 bytes)
        extra: dict[str, Any] = {"rpc_response_timeout": scaled(8)}
        if self.curve:
            key_file = str(self.base / (tag + "-host.key"))
            pair = generate()
            write_keypair(key_file, pair)
            # one public <rpc_zmq_host>.key per host, in every keys dir
            for keys_dir in self.keys_dirs:
                write_public(os.path.join(keys_dir, name + ".key"), pair.public,
                             host=name)
            extra.update(rpc_zmq_curve=True, rpc_zmq_curve_key_file=key_file,
                         rpc_zmq_curve_keys_dir=self.keys_dirs[tag == "b"])
        return LocalHost(host=name, address=address, port=port,
                         matchmaker="ring", ringfile=str(ring), extra=extra)

    def start(self) -> "WiredPair":
        self.a.start_receiver(scaled(20))
        self.b_receiver = self.b.start_receiver(scaled(20))
        self.service = self.b.start_service("svc", timeout=scaled(30))
        rpc.init(self.a.settings(rpc_response_timeout=scaled(8)))
        return self

    def echo(self, value: str, timeout: float = 8.0) -> Any:
        return rpc.call({}, "demo_svc", {"method": "echo",
                                         "args": {"value": value}},
                        timeout=scaled(timeout))

    def close(self) -> None:
        rpc.cleanup()
        self.proxy.close()
        self.b.stop()
        self.a.stop()


@pytest.fixture
def pair(request: Any, tmp_path: Path) -> Iterator[WiredPair]:
    wired = WiredPair(tmp_path, curve=request.param)
    try:
        yield wired.start()
    finally:
        wired.close()


def marker() -> str:
    return "MARKER-" + uuid.uuid4().hex


@pytest.mark.parametrize("pair", [pytest.param(True, id="curve-on"),
                                  pytest.param(False, id="curve-off")],
                         indirect=True)
def test_call_argument_is_not_on_the_wire_with_curve(pair: WiredPair) -> None:
    secret = marker()
    assert pair.echo(secret) == secret
    sent = pair.proxy.sent()
    # the call went through the proxy, not around it
    assert pair.proxy.connections >= 1
    assert len(sent) > len(secret)
    if pair.curve:
        assert secret.encode() not in sent
        # ZMTP greeting names the mechanism in clear: CURVE was negotiated
        assert b"CURVE" in sent[:64]
        assert b"demo_svc" not in sent   # the topic is hidden too
    else:
        # the same check on a plaintext deployment must see the marker,
        # or it could never fail
        assert secret.encode() in sent
        assert b"NULL" in sent[:64]


@pytest.mark.parametrize("pair", [pytest.param(True, id="curve-on")],
                         indirect=True)
def test_receiver_server_key_rotation_without_restarting_services(
        pair: WiredPair) -> None:
    """README "Key rotation" for host B's own key pair: add B's new public
    key to every keys dir, switch B to the new pair (its receiver restarts
    to load it), remove the old key.  The caller (this process) and B's
    service are never restarted; calls work again within the sender's
    retry interval, and stay encrypted."""
    assert pair.echo("before") == "before"
    service_pid = pair.service.pid
    old_public = Path(pair.keys_dirs[0], B_NAME + ".key").read_text()

    # 1. the new public key in every keys dir, next to the old one
    new = generate()
    for keys_dir in pair.keys_dirs:
        write_public(os.path.join(keys_dir, B_NAME + "-next.key"), new.public,
                     host=B_NAME)
    assert pair.echo("added") == "added"

    # 2. switch B to its new pair: the key file, the <host>.key senders
    # read as B's server key, and the receiver that serves with it
    write_keypair(pair.b.options["rpc_zmq_curve_key_file"], new, force=True)
    for keys_dir in pair.keys_dirs:
        write_public(os.path.join(keys_dir, B_NAME + ".key"), new.public,
                     host=B_NAME)
    assert pair.b_receiver.stop() == 0
    pair.b.procs.remove(pair.b_receiver)
    os.replace(os.path.join(pair.b.dir, "receiver.log"),
               os.path.join(pair.b.dir, "receiver.log.old"))
    pair.b_receiver = pair.b.start_receiver(scaled(20))

    # 3. remove the old key: only the new one is left, under both names
    for keys_dir in pair.keys_dirs:
        os.unlink(os.path.join(keys_dir, B_NAME + "-next.key"))
    assert Path(pair.keys_dirs[0], B_NAME + ".key").read_text() != old_public

    def answered() -> bool:
        try:
            return pair.echo("after", timeout=2) == "after"
        except (AuthenticationError, Timeout):
            return False   # the cached socket still holds the old key
    # the sender re-opens a refused host's socket at most every 5 s
    wait_for(answered, 15, interval=0.1,
             what="calls to B with its new server key")
    secret = marker()
    offset = len(pair.proxy.sent())
    for _ in range(5):
        assert pair.echo(secret) == secret
    assert secret.encode() not in pair.proxy.sent()[offset:]
    # nothing but B's receiver was restarted (this process never re-ran
    # rpc.init)
    assert pair.service.pid == service_pid and pair.service.popen.poll() is None
