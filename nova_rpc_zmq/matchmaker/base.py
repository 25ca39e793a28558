"""The MatchMaker contract: a topic in, ``(directed topic, host)`` pairs out.

Topic kinds (the names come from ``nova_rpc_zmq.wire``):

* bare ``compute``: any one host serving ``compute``;
* directed ``compute.host1``: host is everything after the first '.';
* fanout ``fanout~compute`` (or ``fanout~compute.x``): every host of
  ``compute``;
* replies ``zmq_replies.<host>``: directed to ``<host>``.

A matchmaker is a plain policy object: no sockets, no threads.  The
optional *liveness* object it may consult has ``is_up(host, topic) -> bool``
(cheap, cached by its owner) and may have ``dead_hosts(hosts, topic)`` (the
down ones among ``hosts``, used to word ``NoLiveHostsError``) and
``watch_topics(topics)`` (told the ring's topics on every load), as
``servicegroup.liveness.LivenessView`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from nova_rpc_zmq import errors
from nova_rpc_zmq.wire import FANOUT_PREFIX, REPLIES_PREFIX, TOPIC_SEPARATOR

if TYPE_CHECKING:
    from nova_rpc_zmq import config

__all__ = ["MatchMaker", "Liveness", "FANOUT_PREFIX", "REPLIES_PREFIX",
           "TOPIC_SEPARATOR", "split_directed"]


class Liveness(Protocol):
    """What a matchmaker asks about hosts; must be cheap and not block."""

    def is_up(self, host: str, topic: str) -> bool:
        """True when ``host`` is believed to serve ``topic`` right now."""
        ...


class MatchMaker:
    """Turns a topic into the ``(directed topic, host)`` pairs to send to.

    Subclasses implement ``queues``; ``register``/``unregister``/``close``
    are no-ops unless a back end needs them.  ``source`` describes where the
    routing data comes from (e.g. the ring file path) for error messages.
    """

    source: str = "the matchmaker"

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      liveness: Liveness | None = None) -> "MatchMaker":
        """Build from a ``config.Settings``; by default for this host only."""
        return cls(settings.rpc_zmq_host)  # type: ignore[call-arg]

    def queues(self, topic: str) -> list[tuple[str, str]]:
        """Pairs ``(directed topic, host)`` for ``topic``.

        Raises ``errors.NoHostsError`` (or ``NoLiveHostsError``) when no host
        can take it.  Must be cheap: it runs once per message sent.
        """
        raise NotImplementedError

    def knows_host(self, host: str) -> bool:
        """True when ``host`` is one this matchmaker routes to (replies go
        only to such hosts). By default only this host (``self.host``)."""
        return host == getattr(self, "host", None)

    def register(self, topic: str, host: str) -> None:
        """Announce that ``host`` serves ``topic`` (no-op by default)."""

    def unregister(self, topic: str, host: str) -> None:
        """Withdraw a ``register`` (no-op by default)."""

    def close(self) -> None:
        """Release what the matchmaker holds (no-op by default)."""

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.source)


def split_directed(topic: str) -> tuple[str, str]:
    """``compute.host1`` -> ``("compute", "host1")``; host is '' if bare.

    Raises ``errors.LocalError`` for a directed topic with an empty host
    (``compute.``), which would otherwise be sent nowhere.
    """
    bare, sep, host = topic.partition(TOPIC_SEPARATOR)
    if sep and not host:
        raise errors.LocalError("topic %r names no host after the '.'; "
                                "write compute.HOST or the bare topic"
                                % (topic,))
    return bare, host
