"""The router proxy's policy objects, without sockets: proxy members,
member ids, which proxies a transport connects to and since when, and
the topology flags."""

from __future__ import annotations

import itertools
import threading

import pytest

from nova_rpc_zmq import errors
from nova_rpc_zmq.oslo_driver import options
from nova_rpc_zmq.oslo_driver.proxied import (PROXY_KEY, ProxyList,
                                              new_member, parse_proxy_member,
                                              proxy_member)


class FakeLookup:
    """What a registry lists, set by the test."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.asked = 0

    def members(self, key: str, fresh: bool = False) -> list[str]:
        assert key == PROXY_KEY
        self.asked += 1
        return list(self.listed)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now




def test_proxy_members_round_trip_and_bad_ones_are_none() -> None:
    assert parse_proxy_member(proxy_member("node-1", 50001, 50002)) == \
        ("node-1", 50001, 50002)
    assert parse_proxy_member("fe80::1:50001:50002") == ("fe80::1", 50001,
                                                         50002)
    for bad in ("node-1:50001", "node-1:x:2", ":1:2", "h:0:2", "h:1:70000"):
        assert parse_proxy_member(bad) is None


def test_member_ids_are_unique_and_usable_in_a_reply_topic() -> None:
    first, second = new_member("node-1"), new_member("node-1")
    assert first != second and first.startswith("node-1~")
    with pytest.raises(ValueError, match="no '@'"):
        new_member("pool@node")
    with pytest.raises(ValueError, match="at most"):
        new_member("h" * 250)
    with pytest.raises(errors.LocalError, match="reply topic"):
        new_member("bad host")


def test_proxies_listed_later_are_used_for_sending_after_settling() -> None:
    lookup, clock = FakeLookup(), Clock()
    proxies = ProxyList(lookup, threading.Lock(), settle=1.5, every=0.25,
                        clock=clock)
    lookup.listed = ["a:1:2", "nonsense"]
    proxies.refresh()
    # listed at the first look: used at once
    assert proxies.current("frontend") == {"tcp://a:1"}
    assert proxies.current("backend") == {"tcp://a:2"}
    lookup.listed = ["a:1:2", "b:3:4"]
    proxies.refresh()
    assert lookup.asked == 1  # asked again only after ``every``
    clock.now += 0.3
    proxies.refresh()
    # a new proxy: servers connect at once, senders once it settled
    assert proxies.current("backend") == {"tcp://a:2", "tcp://b:4"}
    assert proxies.current("frontend") == {"tcp://a:1"}
    clock.now += 1.5
    assert proxies.current("frontend") == {"tcp://a:1", "tcp://b:3"}
    lookup.listed = ["b:3:4"]
    clock.now += 0.3
    proxies.refresh()
    assert proxies.current("frontend") == {"tcp://b:3"}
    assert proxies.current("backend") == {"tcp://b:4"}


def test_a_look_under_way_is_not_waited_for() -> None:
    lookup, clock, lock = FakeLookup(), Clock(), threading.Lock()
    proxies = ProxyList(lookup, lock, every=0.0, clock=clock)
    proxies.refresh()  # the first look
    assert lookup.asked == 1
    with lock:  # another thread asks the registry now
        proxies.refresh()
    assert lookup.asked == 1
    proxies.refresh()
    assert lookup.asked == 2


@pytest.mark.parametrize("flags", list(itertools.product((False, True),
                                                         repeat=3)))
def test_every_combination_of_the_three_flags(flags: tuple) -> None:
    problem = options.topology_problem(*flags)
    if flags in options.TOPOLOGIES:
        assert problem is None
        return
    assert problem is not None and "\n" not in problem
    assert options.AVAILABLE in problem
