"""ReplyPolicy: replies go only to hosts we know (no sockets involved)."""

from __future__ import annotations

import json

from nova_rpc_zmq import config
from nova_rpc_zmq.impl_zmq.reply_policy import ReplyPolicy
from nova_rpc_zmq.matchmaker.localhost import LocalhostMatchMaker
from nova_rpc_zmq.matchmaker.ring import RingMatchMaker


def ring(tmp_path) -> RingMatchMaker:
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"compute": ["c1", "c2"], "api": ["a1"]}))
    return RingMatchMaker(str(path), resolve=False)


def test_ring_hosts_and_own_host_are_allowed(tmp_path):
    policy = ReplyPolicy("me", ring(tmp_path))
    for host in ("c1", "c2", "a1", "me"):
        assert policy.allows("zmq_replies." + host)
    assert policy.allows("zmq_replies")          # the matchmaker routes it


def test_unknown_and_malformed_hosts_are_refused(tmp_path):
    policy = ReplyPolicy("me", ring(tmp_path))
    for host in ("evil.example.com", "10.0.0.9", "", "../etc/x", "a b",
                 "x" * 300):
        assert not policy.allows("zmq_replies." + host), host


def test_localhost_matchmaker_knows_only_this_host():
    policy = ReplyPolicy("me", LocalhostMatchMaker("me"))
    assert policy.allows("zmq_replies.me")
    assert not policy.allows("zmq_replies.other")


def test_keys_dir_and_extra_hosts(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "api1.key").write_text("public")
    policy = ReplyPolicy("me", LocalhostMatchMaker("me"), keys_dir=str(keys),
                         extra_hosts=["api2"])
    assert policy.allows("zmq_replies.api1")
    assert policy.allows("zmq_replies.api2")
    assert not policy.allows("zmq_replies.api3")
    # without CURVE the keys dir is not consulted
    assert not ReplyPolicy("me", None).allows("zmq_replies.api1")


def test_refusals_are_counted_and_logged_once_per_interval(caplog):
    now = [0.0]
    policy = ReplyPolicy("me", None, log_every=60.0, clock=lambda: now[0])
    with caplog.at_level("WARNING"):
        for _ in range(100):
            policy.refused("zmq_replies.evil", "demo.me")
        now[0] = 61.0
        policy.refused("zmq_replies.evil", "demo.me")
    assert policy.refusals == 101
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "1 such call(s)" in lines[0] and "100 such call(s)" in lines[1]


def test_from_settings_reads_the_fields_even_when_set_to_none():
    settings = config.default_settings(rpc_zmq_reply_hosts=None,
                                       allowed_rpc_exception_modules=None)
    assert settings.rpc_zmq_reply_hosts == ()
    assert settings.allowed_rpc_exception_modules == ()
    assert config.default_settings(memcached_servers=None).memcached_servers is None
    policy = ReplyPolicy.from_settings(settings, LocalhostMatchMaker(settings.rpc_zmq_host))
    assert policy.extra_hosts == frozenset()
    assert policy.allows("zmq_replies." + settings.rpc_zmq_host)
    assert not policy.allows("zmq_replies.other")
