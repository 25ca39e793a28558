"""Entity serializers: turn rich objects into wire primitives and back.

A ``Serializer`` is handed to ``RpcProxy`` (client side: arguments out,
results in) and to ``RpcDispatcher`` (server side: arguments in, results
out). Nova passes its object serializer here; everybody else gets
``NoOpSerializer``, which leaves entities unchanged.
"""

from __future__ import annotations

import abc
from typing import Any


class Serializer(abc.ABC):
    """What a serializer must do; both methods get the request context."""

    @abc.abstractmethod
    def serialize_entity(self, context: Any, entity: Any) -> Any:
        """Return ``entity`` as something JSON can carry."""

    @abc.abstractmethod
    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        """Return the rich object that ``entity`` (a JSON primitive) stands for."""


class NoOpSerializer(Serializer):
    """The default: entities travel as they are."""

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        """Return ``entity`` unchanged."""
        return entity

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        """Return ``entity`` unchanged."""
        return entity
