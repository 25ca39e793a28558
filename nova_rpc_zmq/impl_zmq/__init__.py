"""The ZeroMQ backend, with the module-level functions of the old
``impl_zmq`` (each takes the Settings object ``conf`` first).

One ``Driver`` per process, made on first use and made again after a fork.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

from nova_rpc_zmq.impl_zmq.driver import Driver

__all__ = ["Driver", "get_driver", "create_connection", "call", "multicall",
           "cast", "fanout_cast", "cast_to_server", "fanout_cast_to_server",
           "notify", "cleanup"]

_driver: Driver | None = None
_lock = threading.Lock()


def get_driver(conf: Any) -> Driver:
    """This process's driver for ``conf`` (new after fork or cleanup)."""
    global _driver
    drv = _driver
    if drv is not None and drv.pid == os.getpid() and drv.settings is conf:
        return drv
    with _lock:
        drv = _driver
        if drv is None or drv.pid != os.getpid() or drv.settings is not conf:
            if drv is not None and drv.pid == os.getpid():
                drv.cleanup()
            drv = _driver = Driver(conf)
        return drv


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
    """Notifications go to ``topic-priority`` (dots would direct them)."""
    cast(conf, context, topic.replace(".", "-"), msg, envelope=envelope)


def cleanup() -> None:
    """Close this process's driver, flushing queued casts (bounded)."""
    global _driver
    with _lock:
        drv, _driver = _driver, None
    if drv is not None and drv.pid == os.getpid():
        drv.cleanup()
