"""Where a service may send replies: hosts it knows, never a name that a
request merely claims.

The reply topic of a call (``zmq_replies.<host>``) comes from the network.
Sending the answer there would make a service resolve and connect to any
name a peer writes, one socket each: a way to spend its open files or to
make it knock on arbitrary addresses. So a reply goes only

* back to this host (the local direct-reply path and our own receiver),
* to a host the matchmaker knows (the ring file's hosts; the localhost and
  stub matchmakers know only this host),
* with CURVE on, to a host whose public key is in ``rpc_zmq_curve_keys_dir``
  (the hosts allowed to talk to us at all),
* to a host listed in ``rpc_zmq_reply_hosts`` (callers that serve no topic
  of the ring, with CURVE off).

Anything else is refused: the driver drops the request unrun, counts it
(``consumer.dropped.unknown_reply_host``) and logs it at most once per
``log_every`` seconds with how many were dropped meanwhile.

A plain policy object: no sockets, no threads; ``allows`` is cheap (a set
look-up, a stat for keys-dir hosts) and safe from any thread.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from nova_rpc_zmq.wire import REPLIES_PREFIX, TOPIC_SEPARATOR

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

_REPLIES_DOT = REPLIES_PREFIX + TOPIC_SEPARATOR
#: A host name as ring files and rpc_zmq_host allow (no '/', so a keys-dir
#: look-up stays inside the directory).
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,253}$")


class ReplyPolicy:
    """Decides whether a reply topic names a host we may answer.

    ``matchmaker`` may have ``knows_host(host) -> bool`` (every
    ``MatchMaker`` does); ``keys_dir`` is checked only when given (pass it
    with CURVE on). ``clock`` is for tests.
    """

    def __init__(self, own_host: str, matchmaker: Any = None,
                 keys_dir: str | None = None,
                 extra_hosts: Iterable[str] = (),
                 log_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.own_host = own_host
        self.matchmaker = matchmaker
        self.keys_dir = keys_dir
        self.extra_hosts = frozenset(extra_hosts)
        self.log_every = log_every
        self._clock = clock
        self._last_log = float("-inf")
        self._unlogged = 0
        self.refusals = 0

    @classmethod
    def from_settings(cls, settings: Settings, matchmaker: Any
                      ) -> "ReplyPolicy":
        """The policy of one driver: its host, matchmaker, and the keys dir
        when ``rpc_zmq_curve`` is on."""
        keys_dir = settings.rpc_zmq_curve_keys_dir \
            if settings.rpc_zmq_curve else None
        return cls(settings.rpc_zmq_host, matchmaker, keys_dir,
                   settings.rpc_zmq_reply_hosts)

    def reply_host(self, reply_topic: str) -> str | None:
        """The host named by ``reply_topic`` (``zmq_replies.<host>``), or
        None for the bare ``zmq_replies`` (routed by the matchmaker alone)."""
        if reply_topic.startswith(_REPLIES_DOT):
            return reply_topic[len(_REPLIES_DOT):]
        return None

    def allows(self, reply_topic: str) -> bool:
        """True when replies to ``reply_topic`` may be sent."""
        host = self.reply_host(reply_topic)
        if host is None or host == self.own_host or host in self.extra_hosts:
            return True
        if not _HOST_RE.match(host):
            return False
        knows = getattr(self.matchmaker, "knows_host", None)
        if knows is not None and knows(host):
            return True
        if self.keys_dir:
            return os.path.isfile(os.path.join(self.keys_dir, host + ".key"))
        return False

    def refused(self, reply_topic: str, topic: str) -> None:
        """Note one refused reply topic (a request on ``topic``); logs the
        first and then at most once per ``log_every`` seconds."""
        self.refusals += 1
        self._unlogged += 1
        now = self._clock()
        if now - self._last_log < self.log_every:
            return
        self._last_log = now
        count, self._unlogged = self._unlogged, 0
        LOG.warning("dropped a call on %s: its reply topic %r names a host "
                    "this service does not know (not in the matchmaker, the "
                    "CURVE keys dir or rpc_zmq_reply_hosts); %d such call(s) "
                    "dropped since the last report. If that host is a real "
                    "caller, list it in the ring file or in "
                    "rpc_zmq_reply_hosts", topic, reply_topic[:300], count)
