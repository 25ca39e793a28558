"""MatchMakers: where a topic goes.  ``get_matchmaker`` builds the one named
by ``settings.rpc_zmq_matchmaker``.

``MATCHMAKERS`` maps each canonical short name to ``"module:Class"``; config
validation accepts exactly these names (plus the legacy class paths it
translates to them).  A new back end adds one line here and a class with
``from_settings(settings, liveness)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from nova_rpc_zmq.matchmaker.base import Liveness, MatchMaker

MATCHMAKERS: dict[str, str] = {
    "ring": "nova_rpc_zmq.matchmaker.ring:RingMatchMaker",
    "localhost": "nova_rpc_zmq.matchmaker.localhost:LocalhostMatchMaker",
    "stub": "nova_rpc_zmq.matchmaker.stub:StubMatchMaker",
}

__all__ = ["MATCHMAKERS", "MatchMaker", "Liveness", "get_matchmaker",
           "matchmaker_class"]


def matchmaker_class(name: str) -> type[MatchMaker]:
    """The class registered under canonical short ``name``.

    Raises KeyError for a name not in ``MATCHMAKERS`` (config validation
    rejects those before this is reached).
    """
    module, _, cls = MATCHMAKERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_matchmaker(settings: Any,
                   liveness: Liveness | None = None) -> MatchMaker:
    """The matchmaker for ``settings.rpc_zmq_matchmaker`` (a canonical name,
    as ``config.load_settings`` leaves it).  ``liveness`` is used by back
    ends that can skip dead hosts (the ring) and ignored by the others.

    Raises ConfigurationError when the back end's data is unusable (for the
    ring: file missing or invalid).
    """
    return matchmaker_class(settings.rpc_zmq_matchmaker).from_settings(
        settings, liveness)
