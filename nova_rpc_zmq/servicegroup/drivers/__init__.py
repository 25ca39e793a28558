"""ServiceGroup back ends: ``db`` (SQLAlchemy), ``zk`` (kazoo), ``mc``
(python-memcached or in-process).  Each implements ``base.Driver`` and is
imported only when chosen, so a host without kazoo can still use ``db``.
Their client libraries come with the package's extras (``EXTRAS``):
``pip install 'nova-rpc-zmq[zookeeper]'`` and so on, or ``[all]``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nova_rpc_zmq import concurrency, errors
from nova_rpc_zmq.servicegroup.drivers.base import Driver

if TYPE_CHECKING:
    from nova_rpc_zmq import config

#: short name -> (module, class)
DRIVERS = {
    "db": ("nova_rpc_zmq.servicegroup.drivers.db", "DbDriver"),
    "zk": ("nova_rpc_zmq.servicegroup.drivers.zk", "ZkDriver"),
    "mc": ("nova_rpc_zmq.servicegroup.drivers.mc", "McDriver"),
}
DRIVER_NAMES = tuple(DRIVERS)

#: top-level module of a client library -> the extra of nova-rpc-zmq
#: (pyproject.toml) that installs it
EXTRAS = {
    "kazoo": "zookeeper",
    "memcache": "memcached",
    "sqlalchemy": "db",
    "pg8000": "postgresql",
    "pymysql": "mysql",
    "redis": "redis",
}


def missing_package_message(driver: str, exc: ImportError) -> str:
    """What to tell an operator whose ``servicegroup_driver = driver``
    cannot import a package (``exc``): the package and, when one of our
    extras installs it, the ``pip install`` line."""
    module = exc.name or "?"
    extra = EXTRAS.get(module.split(".")[0])
    if extra is not None:
        fix = "pip install 'nova-rpc-zmq[%s]'" % extra
    else:
        fix = "install it"
    return ("servicegroup_driver = %s needs the Python package %r (%s); "
            "%s or choose another driver" % (driver, module, exc, fix))


def load_driver(name: str, settings: config.Settings,
                handler: concurrency.Handler | None = None) -> Driver:
    """Build driver ``name`` from ``settings`` (see each module for the
    fields it reads; ``config.default_settings()`` has every option at its
    default).  Raises ConfigurationError for an unknown name or a
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
            missing_package_message(name, exc)) from exc
    try:
        return getattr(module, cls_name).from_settings(settings, handler=handler)
    except ImportError as exc:
        # a client library imported on first use (mc imports memcache only
        # when memcached_servers is set); any other ImportError is a bug
        if (exc.name or "").split(".")[0] not in EXTRAS:
            raise
        raise errors.ConfigurationError(
            missing_package_message(name, exc)) from exc
