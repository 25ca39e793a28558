"""The oslo.messaging driver: ``transport_url = zmq://``.

oslo.messaging loads ``ZmqDriver`` through the ``oslo.messaging.drivers``
entry point ``zmq`` for ``zmq://`` (this host), ``zmq+redis://host:port``
and ``zmq+dummy://`` (this process). Options are in
``[oslo_messaging_zmq]`` (``options.py``; ``list_opts`` for
``oslo-config-generator``, which works without oslo.messaging installed:
the driver is imported at first use of ``ZmqDriver``).
"""

from typing import Any

from nova_rpc_zmq.oslo_driver.options import list_opts

__all__ = ["ZmqDriver", "list_opts"]


def __getattr__(name: str) -> Any:
    if name == "ZmqDriver":
        from nova_rpc_zmq.oslo_driver.driver import ZmqDriver
        return ZmqDriver
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
