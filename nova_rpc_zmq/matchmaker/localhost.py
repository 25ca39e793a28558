"""``LocalhostMatchMaker``: every topic goes to this host (single node)."""

from __future__ import annotations

from nova_rpc_zmq.matchmaker.base import (FANOUT_PREFIX, REPLIES_PREFIX,
                                          TOPIC_SEPARATOR, MatchMaker,
                                          split_directed)

_REPLIES_DOT = REPLIES_PREFIX + TOPIC_SEPARATOR


class LocalhostMatchMaker(MatchMaker):
    """Routes bare, directed and fanout topics to ``host`` itself.

    ``compute`` and ``compute.other`` both become ``compute.<host>``;
    ``fanout~compute`` becomes ``fanout~compute.<host>``; reply topics keep
    their name.  Thread-safe (no state).
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.source = "the localhost matchmaker (rpc_zmq_host = %s)" % host

    def queues(self, topic: str) -> list[tuple[str, str]]:
        """One pair, always to this host."""
        if topic.startswith(_REPLIES_DOT):
            return [(topic, self.host)]
        if topic.startswith(FANOUT_PREFIX):
            bare = topic[len(FANOUT_PREFIX):].partition(TOPIC_SEPARATOR)[0]
            return [(FANOUT_PREFIX + bare + TOPIC_SEPARATOR + self.host,
                     self.host)]
        bare, _ = split_directed(topic)
        return [(bare + TOPIC_SEPARATOR + self.host, self.host)]
