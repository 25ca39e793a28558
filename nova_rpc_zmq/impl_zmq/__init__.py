"""The ZeroMQ backend, with the module-level functions of the old
``impl_zmq``: a drop-in for ``rpc_backend``.

Each function takes the configuration first, as Nova-era code passes it:
``impl.call(CONF, context, topic, msg, timeout)`` with ``CONF`` being
``oslo_config.cfg.CONF`` after the service parsed nova.conf, or one of our
``config.Settings``. Importing this module registers its options on
``oslo_config.cfg.CONF``, as the old module did; the Settings derived from
a ConfigOpts are cached (``config.settings_for``), never rebuilt per message.

One ``Driver`` per process, made on first use (once, whatever the number of
threads asking at once) and made again after a fork or ``cleanup()``.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Iterator

from nova_rpc_zmq import config
from nova_rpc_zmq.impl_zmq.driver import Driver

__all__ = ["Driver", "get_driver", "create_connection", "call", "multicall",
           "cast", "fanout_cast", "cast_to_server", "fanout_cast_to_server",
           "notify", "cleanup"]

_driver: Driver | None = None
_lock = threading.Lock()


def _settings(conf: Any) -> config.Settings:
    if isinstance(conf, config.Settings):
        return conf
    # the module is the backend, whatever rpc_backend spells it as
    return config.settings_for(conf, rpc_backend="impl_zmq")


def get_driver(conf: Any) -> Driver:
    """This process's driver for ``conf`` (a ConfigOpts or Settings); new
    after a fork, after ``cleanup()``, or when the settings changed."""
    global _driver
    drv = _driver
    if drv is not None and drv.settings is conf and drv.pid == os.getpid():
        return drv
    settings = _settings(conf)
    if drv is not None and drv.settings is settings and drv.pid == os.getpid():
        return drv
    with _lock:
        drv = _driver
        if drv is None or drv.pid != os.getpid() or drv.settings != settings:
            if drv is not None and drv.pid == os.getpid():
                drv.cleanup()
            drv = _driver = Driver(settings)
            if _exit_hook_pid[0] != drv.pid:
                _exit_hook_pid[0] = drv.pid
                atexit.register(_flush_at_exit)
        return drv


_exit_hook_pid = [0]


def _flush_at_exit() -> None:
    """An orderly exit without ``cleanup()``: casts still queued in this
    process go out (bounded by the sockets' linger), as ``cleanup()`` does."""
    drv = _driver
    if drv is not None and drv.pid == os.getpid():
        drv.cleanup()


def create_connection(conf: Any, new: bool = True) -> Any:
    return get_driver(conf).create_connection()


def multicall(conf: Any, context: Any, topic: str, msg: dict,
              timeout: float | None = None) -> Iterator[Any]:
    return get_driver(conf).multicall(context, topic, msg, timeout)


def call(conf: Any, context: Any, topic: str, msg: dict,
         timeout: float | None = None) -> Any:
    return get_driver(conf).call(context, topic, msg, timeout)


def cast(conf: Any, context: Any, topic: str, msg: dict,
         envelope: bool = False) -> None:
    get_driver(conf).cast(context, topic, msg, envelope)


def fanout_cast(conf: Any, context: Any, topic: str, msg: dict,
                envelope: bool = False) -> None:
    get_driver(conf).fanout_cast(context, topic, msg, envelope)


def cast_to_server(conf: Any, context: Any, server_params: Any, topic: str,
                   msg: dict) -> None:
    """ZeroMQ has no server params (no broker): a plain cast, as before."""
    cast(conf, context, topic, msg)


def fanout_cast_to_server(conf: Any, context: Any, server_params: Any,
                          topic: str, msg: dict) -> None:
    fanout_cast(conf, context, topic, msg)


def notify(conf: Any, context: Any, topic: str, msg: dict,
           envelope: bool = False) -> None:
    """Send notification ``msg`` (``event_type``, ``payload``..., no
    ``method``) to one consumer of ``topic`` (``notifications.info`` ->
    ``notifications-info``: dots would direct it); at most once, and not
    kept anywhere while no consumer runs."""
    get_driver(conf).notify(context, topic, msg, envelope)


def cleanup() -> None:
    """Close this process's driver, flushing queued casts (bounded)."""
    global _driver
    with _lock:
        drv, _driver = _driver, None
    if drv is not None and drv.pid == os.getpid():
        drv.cleanup()
