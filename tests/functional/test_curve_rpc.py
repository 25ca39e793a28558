"""CURVE end to end: a receiver and services with CURVE on, and senders with
the right key, an unknown key, no CURVE, and a wrong server key."""

from __future__ import annotations

import os
import time
import urllib.request

import pytest

from nova_rpc_zmq import metrics, rpc
from nova_rpc_zmq.errors import AuthenticationError
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.support import scaled, wait_for


def m(method, **args):
    return {"method": method, "args": args}


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    keys = os.path.join(h.dir, "keys")
    kp = generate()
    write_keypair(os.path.join(h.dir, "host.key"), kp)
    write_public(os.path.join(keys, "localhost.key"), kp.public)
    h.health_port = free_port()
    h.options.update(rpc_zmq_curve=True,
                     rpc_zmq_curve_key_file=os.path.join(h.dir, "host.key"),
                     rpc_zmq_curve_keys_dir=keys,
                     rpc_zmq_health_port=h.health_port)
    h.write_conf()
    try:
        h.start_receiver()
        h.start_service("svc")
        yield h
    finally:
        rpc.cleanup()
        h.stop()


def counters(h):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % h.health_port,
                                timeout=scaled(5)) as resp:
        return metrics.parse(resp.read().decode())


def use(h, **overrides):
    rpc.init(h.settings(rpc_response_timeout=scaled(8), **overrides))


def records(h):
    use(h)
    return rpc.call({}, "demo_svc", m("stats"))["record"]


def test_right_key_is_accepted(host):
    use(host)
    assert rpc.call({}, "demo_svc", m("echo", value="secret")) == "secret"
    assert counters(host)["nova_rpc_zmq_receiver_curve_accepted_total"] >= 1


def refused_call(h, **overrides):
    before = records(h)
    use(h, **overrides)
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        rpc.call({}, "demo_svc", m("record", value="must not arrive"))
    elapsed = time.monotonic() - t0
    assert records(h) == before  # nothing was delivered to the service
    return info.value, elapsed


def test_unknown_client_key_is_refused_with_a_clear_error(host):
    other = generate()
    path = os.path.join(host.dir, "stranger.key")
    write_keypair(path, other, force=True)
    error, elapsed = refused_call(host, rpc_zmq_curve_key_file=path)
    assert "localhost" in str(error)
    assert "no matching key" in str(error)
    assert elapsed < scaled(5)  # not a silent timeout
    wait_for(lambda: counters(host).get('nova_rpc_zmq_receiver_curve_refused_total{reason="no_matching_key"}', 0) >= 1,
             timeout=5, what="the refusal to be counted")
    assert "no matching key" in open(os.path.join(host.dir, "receiver.log")).read()


def test_plaintext_client_is_refused(host):
    error, _ = refused_call(host, rpc_zmq_curve=False)
    assert "mechanism mismatch" in str(error)


def test_wrong_server_key_is_refused(host):
    keys = os.path.join(host.dir, "wrong-keys")
    write_public(os.path.join(keys, "localhost.key"), generate().public)
    error, _ = refused_call(host, rpc_zmq_curve_keys_dir=keys)
    assert "wrong server key" in str(error)


def test_key_rotation_without_restart(host):
    keys = os.path.join(host.dir, "keys")
    new = generate()
    new_path = os.path.join(host.dir, "rotated.key")
    write_keypair(new_path, new, force=True)
    # the sender's own directory still knows the receiver's key
    write_public(os.path.join(keys, "rotated-client.key"), new.public)
    use(host, rpc_zmq_curve_key_file=new_path)
    wait_for(lambda: _try(host), timeout=10, what="the new key to be accepted")
    os.remove(os.path.join(keys, "rotated-client.key"))
    # the allow list re-reads the directory once a second: wait for the
    # refusal itself rather than a fixed time that a slow machine outlasts
    # (a new client each time: a connection made before stays accepted)

    def refused_now() -> bool:
        rpc.cleanup()   # drop the cached, already accepted connection
        use(host, rpc_zmq_curve_key_file=new_path)
        return not _try(host)
    wait_for(refused_now, timeout=10, interval=0.1,
             what="the removed key to be refused")
    error, _ = refused_call(host, rpc_zmq_curve_key_file=new_path)
    assert "no matching key" in str(error)


def _try(h):
    try:
        return rpc.call({}, "demo_svc", m("echo", value=1),
                        timeout=scaled(2)) == 1
    except AuthenticationError:
        return False
