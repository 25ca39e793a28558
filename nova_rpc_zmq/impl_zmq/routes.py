"""Which route a call and its reply take: the receiver, local, or direct.

A call has up to three routes (``docs/design.md``, "How each kind of
message travels"):

* ``RECEIVER``: through the receivers (the base route, always possible);
* ``LOCAL``: a call to this host, with ``rpc_zmq_local_calls`` on, first
  tries the local service's own socket (``impl_zmq/local.py``);
* ``DIRECT``: a reply to a caller on this host whose call named its token
  (frame 0 ``stream.<token>``) first tries the caller's direct reply
  socket (``impl_zmq/replies.py``);
* ``REMOTE``: a call to another host, with ``rpc_zmq_direct_calls`` on,
  first tries the service's own TCP socket once its port is known, and
  its replies the caller's (``impl_zmq/remote.py``).

A LOCAL, DIRECT or REMOTE send that finds no taker falls back to the receiver;
that fallback is the sender's, not this object's. ``RoutePolicy`` is a
plain object: no sockets, no threads, safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nova_rpc_zmq import wire
from nova_rpc_zmq.matchmaker.broker import BROKER
from nova_rpc_zmq.impl_zmq.reply_policy import ReplyPolicy

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

RECEIVER = "receiver"
LOCAL = "local"
DIRECT = "direct"
REMOTE = "remote"
#: A reply that may not be sent at all: its topic names a host we do not
#: know (``reply_policy.py``).
REFUSE = "refuse"

#: A caller token: 16 lower-case hex digits.
TOKEN_LENGTH = 16
_HEX = frozenset("0123456789abcdef")
_STREAMS = wire.CALLER_STREAMS.decode("ascii")
_STREAMS_DOT = _STREAMS + wire.TOPIC_SEPARATOR


def caller_mark(msg_id: str) -> tuple[bool, str | None]:
    """Read frame 0 of a call: (caller accepts streaming, its token or None).

    ``"stream"`` or ``"stream.<16 hex>"`` from our callers; anything else
    (``"0"`` from old ones) means one complete reply, no token.
    """
    if msg_id == _STREAMS:
        return True, None
    if msg_id.startswith(_STREAMS_DOT):
        token = msg_id[len(_STREAMS_DOT):]
        if len(token) == TOKEN_LENGTH and set(token) <= _HEX:
            return True, token
        return True, None
    return False, None


@dataclass(frozen=True)
class ReplyRoute:
    """How to answer one call: ``route`` is DIRECT or REMOTE (to
    ``token``), RECEIVER or REFUSE; ``stream`` is True when the caller takes one reply
    part per value."""

    route: str
    stream: bool
    token: str | None = None


class RoutePolicy:
    """Chooses the route of a call and of a reply.

    ``own_host`` is ``rpc_zmq_host``; ``local_calls`` is
    ``rpc_zmq_local_calls``; ``reply_policy`` decides which reply hosts may
    be answered at all.
    """

    def __init__(self, own_host: str, local_calls: bool,
                 reply_policy: ReplyPolicy | Any,
                 remote_calls: bool = False) -> None:
        self.own_host = own_host
        self.local_calls = bool(local_calls)
        #: the direct path to other hosts is on (the driver sets it when
        #: ``impl_zmq.remote.port_range`` gives ports)
        self.remote_calls = bool(remote_calls)
        self.reply_policy = reply_policy
        self.own_reply_topic = wire.reply_topic(own_host)

    @classmethod
    def from_settings(cls, settings: Settings, matchmaker: Any
                      ) -> "RoutePolicy":
        """The policy of one driver: its host, its local-calls switch and
        its ``ReplyPolicy``."""
        return cls(settings.rpc_zmq_host, settings.rpc_zmq_local_calls,
                   ReplyPolicy.from_settings(settings, matchmaker))

    def for_call(self, host: str) -> str:
        """LOCAL for a call to this host with local calls on, REMOTE for a
        call to another host with direct calls on, else RECEIVER."""
        if host == self.own_host:
            return LOCAL if self.local_calls else RECEIVER
        if host == BROKER:
            # the broker picks the host itself: a port learnt through it
            # would be another host's, not the broker's
            return RECEIVER
        return REMOTE if self.remote_calls else RECEIVER

    def for_reply(self, caller: str, reply_topic: str) -> ReplyRoute:
        """The route of the replies to a call whose frame 0 is ``caller``
        and whose reply topic is ``reply_topic``.

        DIRECT when the caller named its token and is on this host (its
        reply topic is ours); REMOTE (with the token) when it named its
        token, is on another host the reply policy allows, and direct calls
        are on; RECEIVER when the reply policy allows the topic; else
        REFUSE.
        """
        stream, token = caller_mark(caller)
        if token is not None and reply_topic == self.own_reply_topic:
            return ReplyRoute(DIRECT, stream, token)
        if self.reply_policy.allows(reply_topic):
            if token is not None and self.remote_calls:
                return ReplyRoute(REMOTE, stream, token)
            return ReplyRoute(RECEIVER, stream)
        return ReplyRoute(REFUSE, stream)
