"""Key files, the allow list and failure explanations, without sockets."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import zmq
from zmq.utils import z85

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.security import keys, monitor, policy
from tests.support import wait_for

pytestmark = pytest.mark.skipif(not zmq.has("curve"),
                                reason="libzmq without CURVE")


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def keys_dir(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return d


def add_host(keys_dir, host: str) -> keys.KeyPair:
    pair = keys.generate()
    keys.write_public(str(keys_dir / (host + ".key")), pair.public, host=host)
    return pair


# ------------------------------------------------------------------ keys --

def test_keypair_round_trip_and_modes(tmp_path):
    pair = keys.generate()
    path = tmp_path / "etc" / "zmq" / "host.key"
    keys.write_keypair(str(path), pair, host="node1")
    assert mode_of(str(path)) == 0o600
    assert mode_of(str(path.parent)) == 0o700
    assert keys.load_keypair(str(path)) == pair
    assert keys.load_public(str(path)) == pair.public
    assert keys.read_certificate(str(path)).metadata == {"host": "node1"}
    assert "secret" not in repr(pair).replace("secret=<hidden>", "")
    assert pair.secret.decode() not in repr(pair)
    # No temp files are left behind next to the key.
    assert os.listdir(path.parent) == ["host.key"]


def test_write_public_mode_and_zmq_auth_compatibility(tmp_path):
    import zmq.auth
    pair = keys.generate()
    path = str(tmp_path / "node2.key")
    keys.write_public(path, pair.public, host="node2")
    assert mode_of(path) == 0o644
    assert keys.load_public(path) == pair.public
    # pyzmq's own reader understands our files.
    assert zmq.auth.load_certificate(path) == (pair.public, None)


def test_write_keypair_refuses_to_overwrite_unless_forced(tmp_path):
    path = str(tmp_path / "host.key")
    first, second = keys.generate(), keys.generate()
    keys.write_keypair(path, first)
    with pytest.raises(ConfigurationError, match="already exists.*--force"):
        keys.write_keypair(path, second)
    assert keys.load_keypair(path) == first
    keys.write_keypair(path, second, force=True)
    assert keys.load_keypair(path) == second
    assert mode_of(path) == 0o600


def test_secret_file_readable_by_others_is_refused(tmp_path):
    path = str(tmp_path / "host.key")
    keys.write_keypair(path, keys.generate())
    os.chmod(path, 0o640)
    with pytest.raises(ConfigurationError) as info:
        keys.load_keypair(path)
    assert "chmod 600 %s" % path in str(info.value)
    assert "0640" in str(info.value)


def test_public_only_file_is_no_keypair(tmp_path):
    path = str(tmp_path / "other.key")
    keys.write_public(path, keys.generate().public)
    with pytest.raises(ConfigurationError, match="only a public key"):
        keys.load_keypair(path)


def test_missing_key_file_names_the_fix(tmp_path):
    path = str(tmp_path / "nope.key")
    with pytest.raises(ConfigurationError,
                       match="does not exist.*keys generate"):
        keys.load_keypair(path)


GOOD = keys.generate()


@pytest.mark.parametrize("text, line, words", [
    ("curve\npublic-key = \"%s\"\n" % GOOD.public.decode(), 2,
     "unknown section"),
    ("    public-key = \"%s\"\n" % GOOD.public.decode(), 1,
     "outside any section"),
    ("curve\n    public-key \"%s\"\n" % GOOD.public.decode(), 2,
     "not a 'name = value'"),
    ("# c\ncurve\n    public-key = \"abc\"\n", 3, "not a 40-character Z85"),
    ("curve\n    public-key = \"%s\"\n" % ("#" * 40), 2,
     "not a 40-character Z85"),
    ("metadata\n    host = x\n", 2, "no public-key"),
    ("curve\n    public-key = \"%s\"\n    public-key = \"%s\"\n"
     % (GOOD.public.decode(), GOOD.public.decode()), 3, "given twice"),
    ("curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n"
     % (GOOD.public.decode(), keys.generate().secret.decode()), 3,
     "does not belong"),
    ("curve\n    private-key = \"%s\"\n" % GOOD.public.decode(), 2,
     "unknown curve entry"),
])
def test_parse_errors_name_file_line_and_fix(tmp_path, text, line, words):
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        keys.load_public(str(path))
    message = str(info.value)
    assert message.startswith("%s line %d: " % (path, line)), message
    assert words in message
    assert ";" in message  # the fix follows the problem


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "bin.key"
    path.write_bytes(b"curve\n\xff\xfe\n")
    with pytest.raises(ConfigurationError, match="line 2: not UTF-8"):
        keys.load_public(str(path))


def test_server_key_for(keys_dir):
    pair = add_host(keys_dir, "node3")
    assert keys.server_key_for("node3", str(keys_dir)) == pair.public
    with pytest.raises(ConfigurationError) as info:
        keys.server_key_for("node4", str(keys_dir))
    assert str(info.value) == (
        "no public key for host node4 in %s: copy node4's `nova-rpc-zmq keys "
        "show` output to %s" % (keys_dir, keys_dir / "node4.key"))
    for bad in ("../etc/passwd", ".hidden", "a/b", ""):
        with pytest.raises(ConfigurationError, match="cannot name a key"):
            keys.server_key_for(bad, str(keys_dir))


# ---------------------------------------------------------------- policy --

def test_policy_decisions(keys_dir):
    a = add_host(keys_dir, "nodeA")
    allow = policy.AllowList(str(keys_dir), check_interval=0)
    assert allow.check(b"CURVE", a.public_raw) == policy.Decision(
        True, "200", "OK", host="nodeA")
    stranger = keys.generate()
    d = allow.check(b"CURVE", stranger.public_raw)
    assert (d.allowed, d.status_code, d.reason, d.host) == (
        False, "400", "no matching key", None)
    assert stranger.public.decode() in d.detail
    for mech in (b"NULL", b"PLAIN", b"GSSAPI"):
        d = allow.check(mech, b"")
        assert (d.allowed, d.status_code, d.reason) == (
            False, "400", "mechanism mismatch")
        assert "CURVE required" in d.detail
    d = allow.check(b"CURVE", b"short")
    assert (d.allowed, d.status_code, d.reason) == (
        False, "400", "malformed credentials")
    assert allow.refusals == {"no matching key": 1, "mechanism mismatch": 3,
                              "malformed credentials": 1}
    assert allow.hosts() == {a.public.decode(): "nodeA"}
    assert allow.host_for(a.public_raw) == "nodeA"


def test_rotation_is_seen_without_restart(keys_dir):
    old = add_host(keys_dir, "nodeA")
    allow = policy.AllowList(str(keys_dir), check_interval=0.05)
    assert allow.check(b"CURVE", old.public_raw).allowed
    new = add_host(keys_dir, "nodeA-2")
    os.unlink(keys_dir / "nodeA.key")
    wait_for(lambda: allow.check(b"CURVE", new.public_raw).allowed,
             timeout=5, what="the new key to be allowed")
    assert not allow.check(b"CURVE", old.public_raw).allowed
    # Replacing a file in place (same name, new key) is seen too.
    newer = keys.generate()
    keys.write_public(str(keys_dir / "nodeA-2.key"), newer.public)
    wait_for(lambda: allow.check(b"CURVE", newer.public_raw).allowed,
             timeout=5, what="the replaced key to be allowed")
    assert not allow.check(b"CURVE", new.public_raw).allowed


def test_directory_is_not_reread_before_interval(keys_dir):
    now = [100.0]
    allow = policy.AllowList(str(keys_dir), check_interval=10,
                             clock=lambda: now[0])
    late = add_host(keys_dir, "late")
    assert not allow.check(b"CURVE", late.public_raw).allowed
    loads = allow.reloads
    now[0] += 10
    assert allow.check(b"CURVE", late.public_raw).allowed
    assert allow.reloads == loads + 1
    now[0] += 10
    allow.check(b"CURVE", late.public_raw)
    assert allow.reloads == loads + 1  # unchanged dir: no reload


def test_malformed_file_logged_once_and_skipped(keys_dir, caplog):
    good = add_host(keys_dir, "good")
    (keys_dir / "broken.key").write_text("curve\n    public-key = \"x\"\n")
    (keys_dir / "notes.txt").write_text("not a key file, ignored\n")
    caplog.set_level(logging.ERROR, logger="nova_rpc_zmq.security.policy")
    allow = policy.AllowList(str(keys_dir), check_interval=0)
    assert allow.check(b"CURVE", good.public_raw).allowed
    other = add_host(keys_dir, "other")  # forces a reload
    assert allow.check(b"CURVE", other.public_raw).allowed
    broken = [r for r in caplog.records if "broken.key" in r.getMessage()]
    assert len(broken) == 1
    assert "line 2" in broken[0].getMessage()
    assert set(allow.hosts().values()) == {"good", "other"}


def test_secret_in_keys_dir_warns_but_loads(keys_dir, caplog):
    pair = keys.generate()
    keys.write_keypair(str(keys_dir / "leaky.key"), pair)
    caplog.set_level(logging.WARNING, logger="nova_rpc_zmq.security.policy")
    allow = policy.AllowList(str(keys_dir), check_interval=0)
    assert allow.check(b"CURVE", pair.public_raw).host == "leaky"
    assert any("holds a secret key" in r.getMessage() for r in caplog.records)


def test_missing_keys_dir(tmp_path):
    with pytest.raises(ConfigurationError,
                       match="is not a directory; create it"):
        policy.AllowList(str(tmp_path / "absent"))


def test_vanished_keys_dir_fails_closed(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    pair = add_host(d, "nodeA")
    allow = policy.AllowList(str(d), check_interval=0)
    assert allow.check(b"CURVE", pair.public_raw).allowed
    os.unlink(d / "nodeA.key")
    os.rmdir(d)
    decision = allow.check(b"CURVE", pair.public_raw)
    assert (decision.allowed, decision.status_code, decision.reason) == (
        False, "500", "keys dir unreadable")
    d.mkdir()
    add_host(d, "nodeA")
    assert allow.check(b"CURVE", z85.decode(
        keys.load_public(str(d / "nodeA.key")))).allowed


# ------------------------------------------------ sender-side explanation --

@pytest.mark.parametrize("event, value, mech, label, words", [
    (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, zmq.CURVE, "no matching key",
     "the receiver on H does not list me's public key in its keys dir"),
    (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, zmq.NULL, "mechanism mismatch",
     "H requires CURVE but this sender has rpc_zmq_curve off"),
    (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 500, zmq.CURVE, "authenticator failed",
     "ZAP 500"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
     zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, zmq.NULL,
     "mechanism mismatch",
     "H requires CURVE but this sender has rpc_zmq_curve off"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
     zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, zmq.CURVE,
     "mechanism mismatch", "this sender uses CURVE but H does not"),
    (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, zmq.CURVE, "wrong server key",
     "wrong server key for H: the key in /k/H.key does not match H's key "
     "pair"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
     zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC, zmq.CURVE, "wrong server key",
     "/k/H.key"),
    (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, zmq.NULL,
     "mechanism mismatch", "this sender has rpc_zmq_curve off"),
    (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x10000001, zmq.CURVE,
     "protocol error", "0x10000001"),
])
def test_explain(event, value, mech, label, words):
    found = monitor.explain(event, value, "H", mech, "/k", "me")
    assert found is not None
    assert found[0] == label
    assert found[1].startswith(label)
    assert words in found[1]


@pytest.mark.parametrize("peer, label, present, absent", [
    (None, "wrong server key", "or without CURVE", "greets with"),
    ("CURVE", "wrong server key", "without its authenticator)",
     "or without CURVE"),
    ("NULL", "mechanism mismatch",
     "this sender uses CURVE but H does not (it greets with NULL",
     "wrong server key"),
    ("PLAIN", "mechanism mismatch", "it greets with PLAIN", "key pair"),
])
def test_explain_curve_hang_up_by_greeting(peer, label, present, absent):
    """A CURVE sender hung up on: what the receiver's greeting said
    decides between a wrong server key and a receiver without CURVE."""
    found = monitor.explain(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, "H",
                            zmq.CURVE, "/k", "me", peer_mechanism=peer)
    assert found is not None
    assert found[0] == label
    assert present in found[1]
    assert absent not in found[1]


def test_explain_ignores_success():
    assert monitor.explain(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, "H",
                           zmq.CURVE) is None
