"""Consumers of notification topics: how a notification reaches a proxy.

Nova-era notifiers send ``rpc.notify(ctxt, 'notifications.info', message)``:
a cast to ``notifications-info`` whose body is the notification itself
(``message_id``, ``publisher_id``, ``event_type``, ``priority``,
``payload``, ``timestamp``), with no ``method``. A consumer created on such
a topic hands each one to its proxy, which is one of (first match wins):

* an object with the priority's method, in the style of later notification
  endpoints: ``info(ctxt, publisher_id, event_type, payload, metadata)``
  (``metadata`` holds ``message_id`` and ``timestamp``);
* an object with ``notify(ctxt, message)``;
* a callable, called as ``proxy(message)`` (the Nova-era consumer
  callbacks took the message alone).

``endpoint_for`` checks this once, at ``create_consumer``: a proxy with none
of them raises TypeError there, not per message.
"""

from __future__ import annotations

from typing import Any, Callable

from nova_rpc_zmq import wire

#: Keys of a notification that its endpoint gets as ``metadata``.
METADATA_KEYS = ("message_id", "timestamp")

Endpoint = Callable[[Any, dict], Any]


def priority_of(topic: str) -> str:
    """``notifications-info`` (or ``notifications-info.host``) -> ``info``."""
    return wire.bare_topic(topic).rpartition(wire.NOTIFICATION_SEPARATOR)[2]


def endpoint_for(proxy: Any, topic: str) -> Endpoint:
    """A function ``(ctxt, message)`` delivering a notification of ``topic``
    to ``proxy``. Raises TypeError naming what the proxy lacks."""
    priority = priority_of(topic)
    method = getattr(proxy, priority, None)
    if callable(method):
        def by_priority(ctxt: Any, message: dict) -> Any:
            metadata = {key: message.get(key) for key in METADATA_KEYS}
            return method(ctxt, message.get("publisher_id"),
                          message.get("event_type"), message.get("payload"),
                          metadata)
        return by_priority
    notify = getattr(proxy, "notify", None)
    if callable(notify):
        return notify
    if callable(proxy):
        return lambda _ctxt, message: proxy(message)
    raise TypeError(
        "proxy %r cannot take the notifications of %s: give it a method "
        "%s(ctxt, publisher_id, event_type, payload, metadata) or "
        "notify(ctxt, message), or pass a callable taking the message"
        % (proxy, topic, priority))


class NotificationProxy:
    """What a consumer of a notification topic runs: notifications go to
    the endpoint ``endpoint_for`` found; a message with a ``method`` (a
    plain cast to that topic) to the proxy's ``dispatch``, if it has one."""

    def __init__(self, proxy: Any, topic: str) -> None:
        self.proxy = proxy
        self.deliver: Endpoint = endpoint_for(proxy, topic)

    def dispatch(self, ctxt: Any, version: Any, method: str, namespace: Any,
                 **kwargs: Any) -> Any:
        dispatch = getattr(self.proxy, "dispatch", None)
        if dispatch is None:
            raise TypeError("a consumer of notifications got a call of %r; its "
                            "proxy has no dispatch()" % (method,))
        return dispatch(ctxt, version, method, namespace, **kwargs)
