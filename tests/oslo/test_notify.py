"""Notifications through oslo.messaging's Notifier and notification
listeners on the zmq driver: both message formats, pools, competing
listeners and batches."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import wait_for


class Collector:
    """A notification endpoint that keeps what it gets."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, Any]] = []

    def info(self, ctxt: dict, publisher_id: str, event_type: str,
             payload: Any, metadata: dict) -> None:
        self.got.append(("info", event_type, payload))

    def error(self, ctxt: dict, publisher_id: str, event_type: str,
              payload: Any, metadata: dict) -> None:
        self.got.append(("error", event_type, payload))


@contextlib.contextmanager
def listening(transport: Any, topic: str, pool: str | None = None,
              batch: int | None = None) -> Iterator[Any]:
    endpoint: Any = Collector()
    if batch:
        batches: list[list] = []

        class Batches:
            def info(self, messages: list) -> None:
                batches.append(messages)

        endpoint = Batches()
        endpoint.batches = batches
        listener = oslo_messaging.get_batch_notification_listener(
            transport, [oslo_messaging.Target(topic=topic)], [endpoint],
            executor="threading", pool=pool, batch_size=batch,
            batch_timeout=5)
    else:
        listener = oslo_messaging.get_notification_listener(
            transport, [oslo_messaging.Target(topic=topic)], [endpoint],
            executor="threading", pool=pool)
    listener.start()
    try:
        yield endpoint
    finally:
        listener.stop()
        listener.wait()


@pytest.mark.parametrize("driver", ["messaging", "messagingv2"])
@pytest.mark.parametrize("url", ["zmq+dummy://", "zmq://"])
def test_notifications_reach_a_listener(url: str, driver: str,
                                        transport_factory: Any) -> None:
    transport = transport_factory(url, notification=True)
    notifier = oslo_messaging.Notifier(transport, publisher_id="test.host",
                                       driver=driver, topics=["alerts"])
    with listening(transport, "alerts") as collector:
        notifier.info({"user": "u"}, "thing.created", {"id": 1})
        notifier.error({}, "thing.failed", {"id": 2})
        wait_for(lambda: len(collector.got) == 2, 10, what="2 notifications")
    assert sorted(collector.got) == [("error", "thing.failed", {"id": 2}),
                                     ("info", "thing.created", {"id": 1})]


def test_pools_each_get_every_notification_once(
        transport_factory: Any) -> None:
    transport = transport_factory("zmq://", notification=True)
    notifier = oslo_messaging.Notifier(transport, publisher_id="p",
                                       driver="messagingv2", topics=["pooled"])
    with listening(transport, "pooled", pool="audit") as audit, \
            listening(transport, "pooled", pool="billing") as billing_1, \
            listening(transport, "pooled", pool="billing") as billing_2:
        for n in range(4):
            notifier.info({}, "event", {"n": n})
        wait_for(lambda: len(audit.got) == 4
                 and len(billing_1.got) + len(billing_2.got) == 4, 10,
                 what="4 notifications in each pool")
        # inside a pool the listeners share the messages
        assert len(billing_1.got) == len(billing_2.got) == 2
        assert sorted(p["n"] for _, _, p in billing_1.got + billing_2.got) \
            == [0, 1, 2, 3]


def test_batch_listener_gets_full_batches(transport_factory: Any) -> None:
    transport = transport_factory("zmq+dummy://", notification=True)
    notifier = oslo_messaging.Notifier(transport, publisher_id="p",
                                       driver="messagingv2", topics=["bulk"])
    with listening(transport, "bulk", batch=3) as endpoint:
        for n in range(6):
            notifier.info({}, "event", {"n": n})
        wait_for(lambda: sum(len(b) for b in endpoint.batches) == 6, 10,
                 what="6 notifications in batches")
    assert [len(b) for b in endpoint.batches] == [3, 3]


def test_a_notification_without_listener_is_dropped(
        transport_factory: Any) -> None:
    transport = transport_factory("zmq+dummy://", notification=True)
    notifier = oslo_messaging.Notifier(transport, publisher_id="p",
                                       driver="messagingv2", topics=["void"])
    notifier.info({}, "event", {"n": 0})  # returns: nothing stored
    with listening(transport, "void") as collector:
        notifier.info({}, "event", {"n": 1})
        wait_for(lambda: collector.got, 10, what="the second notification")
    assert collector.got == [("info", "event", {"n": 1})]
