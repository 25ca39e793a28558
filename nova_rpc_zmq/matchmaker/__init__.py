"""MatchMakers: where a topic goes.  ``get_matchmaker`` builds the one named
by ``settings.rpc_zmq_matchmaker``.

``MATCHMAKERS`` (defined in ``options``, so that config validation needs
no import of this package) maps each canonical short name to
``"module:Class"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nova_rpc_zmq.matchmaker.base import Liveness, MatchMaker
from nova_rpc_zmq.options import MATCHMAKERS

if TYPE_CHECKING:
    from nova_rpc_zmq import config


__all__ = ["MATCHMAKERS", "MatchMaker", "Liveness", "get_matchmaker",
           "matchmaker_class"]


def matchmaker_class(name: str) -> type[MatchMaker]:
    """The class registered under canonical short ``name``.

    Raises KeyError for a name not in ``MATCHMAKERS`` (config validation
    rejects those before this is reached).
    """
    module, _, cls = MATCHMAKERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_matchmaker(settings: config.Settings,
                   liveness: Liveness | None = None) -> MatchMaker:
    """The matchmaker for ``settings.rpc_zmq_matchmaker`` (a canonical name,
    as ``config.load_settings`` leaves it).  ``liveness`` is used by back
    ends that can skip dead hosts (the ring) and ignored by the others.

    Raises ConfigurationError when the back end's data is unusable (for the
    ring: file missing or invalid).
    """
    return matchmaker_class(settings.rpc_zmq_matchmaker).from_settings(
        settings, liveness)
