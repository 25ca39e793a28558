"""``StubMatchMaker``: the topic unchanged, to this host (tests, brokers)."""

from __future__ import annotations

from nova_rpc_zmq.matchmaker.base import MatchMaker


class StubMatchMaker(MatchMaker):
    """Returns ``[(topic, host)]`` for every topic; thread-safe."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.source = "the stub matchmaker (rpc_zmq_host = %s)" % host

    def queues(self, topic: str) -> list[tuple[str, str]]:
        """One pair: the topic as given, to this host."""
        return [(topic, self.host)]
