"""ServiceGroup back ends: ``db`` (SQLAlchemy), ``zk`` (kazoo), ``mc``
(python-memcached or in-process).  Each implements ``base.Driver`` and is
imported only when chosen, so a host without kazoo can still use ``db``."""

from __future__ import annotations

import importlib
from typing import Any

from nova_rpc_zmq import concurrency, errors
from nova_rpc_zmq.servicegroup.drivers.base import Driver

#: short name -> (module, class)
DRIVERS = {
    "db": ("nova_rpc_zmq.servicegroup.drivers.db", "DbDriver"),
    "zk": ("nova_rpc_zmq.servicegroup.drivers.zk", "ZkDriver"),
    "mc": ("nova_rpc_zmq.servicegroup.drivers.mc", "McDriver"),
}
DRIVER_NAMES = tuple(DRIVERS)


def load_driver(name: str, settings: Any = None,
                handler: concurrency.Handler | None = None) -> Driver:
    """Build driver ``name`` from ``settings`` (see each module for the
    fields it reads).  Raises ConfigurationError for an unknown name or a
    missing client library, ServiceGroupUnavailable when the back end does
    not answer."""
    if name not in DRIVERS:
        raise errors.ConfigurationError(
            "servicegroup_driver = %r is not known; use one of %s"
            % (name, ", ".join(DRIVER_NAMES)))
    module_name, cls_name = DRIVERS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ConfigurationError(
            "servicegroup_driver = %s needs the Python package %r (%s); "
            "install it or choose another driver"
            % (name, exc.name or "?", exc)) from exc
    return getattr(module, cls_name).from_settings(settings, handler=handler)
