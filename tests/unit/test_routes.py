"""impl_zmq.routes: which route a call and its replies take, decided
without sockets."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from nova_rpc_zmq import config
from nova_rpc_zmq.impl_zmq import routes
from nova_rpc_zmq.impl_zmq.reply_policy import ReplyPolicy

TOKEN = "0123456789abcdef"


class KnownHosts:
    """The one thing ReplyPolicy asks a matchmaker."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = set(hosts)

    def knows_host(self, host: str) -> bool:
        return host in self.hosts


def policy(local_calls: bool = True) -> routes.RoutePolicy:
    return routes.RoutePolicy("me", local_calls,
                              ReplyPolicy("me", KnownHosts("peer")))


@pytest.mark.parametrize("local_calls, host, route", [
    (True, "me", routes.LOCAL),
    (True, "peer", routes.RECEIVER),
    (False, "me", routes.RECEIVER),
])
def test_call_route(local_calls: bool, host: str, route: str) -> None:
    assert policy(local_calls).for_call(host) == route


def test_reply_to_a_caller_here_that_named_its_token_goes_direct() -> None:
    assert policy().for_reply("stream." + TOKEN, "zmq_replies.me") == \
        routes.ReplyRoute(routes.DIRECT, True, TOKEN)


def test_a_token_from_another_host_goes_through_the_receivers() -> None:
    assert policy().for_reply("stream." + TOKEN, "zmq_replies.peer") == \
        routes.ReplyRoute(routes.RECEIVER, True)


@pytest.mark.parametrize("caller, stream", [
    ("0", False),                     # an old caller: one complete reply
    ("stream", True),                 # streams, names no token
    ("stream.XYZ", True),             # not a token: no direct route
    ("stream." + TOKEN.upper(), True),
])
def test_without_a_token_replies_go_through_the_receivers(
        caller: str, stream: bool) -> None:
    assert policy().for_reply(caller, "zmq_replies.me") == \
        routes.ReplyRoute(routes.RECEIVER, stream)


def test_reply_to_an_unknown_host_is_refused() -> None:
    assert policy().for_reply("0", "zmq_replies.stranger").route == \
        routes.REFUSE
    assert policy().for_reply("stream." + TOKEN,
                              "zmq_replies.stranger").route == routes.REFUSE


def test_from_settings_follows_host_and_local_calls() -> None:
    settings = config.load_settings(cfg.ConfigOpts(), rpc_zmq_host="node-1",
                                    rpc_zmq_local_calls=False)
    route_policy = routes.RoutePolicy.from_settings(settings, KnownHosts())
    assert route_policy.for_call("node-1") == routes.RECEIVER
    assert route_policy.own_reply_topic == "zmq_replies.node-1"
    assert route_policy.for_reply("0", "zmq_replies.node-2").route == \
        routes.REFUSE


@pytest.mark.parametrize("frame0, expected", [
    ("stream." + TOKEN, (True, TOKEN)),
    ("stream", (True, None)),
    ("stream.", (True, None)),
    ("stream." + TOKEN + "0", (True, None)),
    ("0", (False, None)),
    ("streamer", (False, None)),
])
def test_caller_mark(frame0: str, expected: tuple) -> None:
    assert routes.caller_mark(frame0) == expected


def remote_policy() -> routes.RoutePolicy:
    return routes.RoutePolicy("me", True,
                              ReplyPolicy("me", KnownHosts("peer")),
                              remote_calls=True)


def test_with_direct_calls_a_call_to_another_host_tries_its_service() -> None:
    assert remote_policy().for_call("peer") == routes.REMOTE
    assert remote_policy().for_call("me") == routes.LOCAL


def test_a_call_through_the_broker_never_takes_the_direct_path() -> None:
    from nova_rpc_zmq.matchmaker.broker import BROKER
    assert remote_policy().for_call(BROKER) == routes.RECEIVER


def test_with_direct_calls_a_token_from_another_host_goes_remote() -> None:
    assert remote_policy().for_reply("stream." + TOKEN, "zmq_replies.peer") \
        == routes.ReplyRoute(routes.REMOTE, True, TOKEN)
    # an old caller (no token), or a host we do not answer: as before
    assert remote_policy().for_reply("0", "zmq_replies.peer") == \
        routes.ReplyRoute(routes.RECEIVER, False)
    assert remote_policy().for_reply("stream." + TOKEN,
                                     "zmq_replies.stranger").route == \
        routes.REFUSE
