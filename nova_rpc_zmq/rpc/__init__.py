"""The legacy RPC API: the names and semantics of Nova-era ``nova.rpc``.

    from nova_rpc_zmq import rpc
    rpc.call(context, 'compute', {'method': 'ping', 'args': {}})

The backend comes from ``rpc_backend`` (``nova.rpc.impl_zmq`` and its other
spellings -> the ZeroMQ driver; ``impl_fake`` -> an in-process backend for
service authors' unit tests). Settings are read from ``nova_rpc_zmq.config``
on first use, or given with ``init(settings)``.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.rpc import common  # noqa: F401 - rpc.common.Timeout, as in Nova

if TYPE_CHECKING:
    from oslo_config import cfg

    from nova_rpc_zmq.config import Settings

_BACKENDS = {
    "impl_zmq": "nova_rpc_zmq.impl_zmq",
    "impl_fake": "nova_rpc_zmq.rpc.impl_fake",
}

_state_lock = threading.Lock()
_first_use = threading.Lock()
_settings: Settings | None = None
_backend: ModuleType | None = None


def init(settings: Settings | cfg.ConfigOpts | None = None,
         **overrides: Any) -> Settings:
    """Use ``settings`` (a Settings or a ConfigOpts; default: ``CONF``'s,
    with ``overrides``).

    Call before the first message, or again to switch (tests); returns the
    Settings in force. Raises ConfigurationError for bad values.
    """
    global _settings, _backend
    from nova_rpc_zmq import config
    if settings is None:
        settings = config.load_settings(config.CONF, **overrides) if overrides \
            else config.settings_for(config.CONF)
    elif not isinstance(settings, config.Settings):
        settings = config.settings_for(settings, **overrides)  # a ConfigOpts
    name = settings.rpc_backend
    if name not in _BACKENDS:
        raise ConfigurationError(
            "rpc_backend = %r is not a backend of nova_rpc_zmq; use one of %s"
            % (name, ", ".join(sorted(_BACKENDS))))
    with _state_lock:
        old = _backend
        _settings = settings
        _backend = importlib.import_module(_BACKENDS[name])
    if old is not None and old is not _backend:
        old.cleanup()
    return settings


def set_backend(module_or_name: Any) -> None:
    """Use a backend module (or ``'impl_zmq'`` / ``'impl_fake'``) with the
    current settings; for tests."""
    global _backend
    if isinstance(module_or_name, str):
        module_or_name = importlib.import_module(
            _BACKENDS.get(module_or_name, module_or_name))
    _current()
    _backend = module_or_name


def get_settings() -> Any:
    """The Settings in force (loading them from config on first use)."""
    return _current()[0]


def _current() -> tuple[Any, ModuleType]:
    backend = _backend
    if backend is None:
        # the first use, maybe by many threads at once: one of them loads
        # the settings, the others wait and share them
        with _first_use:
            if _backend is None:
                init()
        backend = _backend
    assert backend is not None
    return _settings, backend


def create_connection(new: bool = True) -> Any:
    """A Connection to create consumers on."""
    conf, impl = _current()
    return impl.create_connection(conf, new)


def call(context: Any, topic: str, msg: dict, timeout: float | None = None) -> Any:
    """Invoke a method on one consumer of ``topic`` and return its result.

    Raises Timeout after ``timeout`` (default ``rpc_response_timeout``)
    seconds, or the remote exception (rebuilt when its module is allowed,
    else RemoteError).
    """
    conf, impl = _current()
    return impl.call(conf, context, topic, msg, timeout)


def multicall(context: Any, topic: str, msg: dict,
              timeout: float | None = None) -> Iterator[Any]:
    """Like ``call``, but an iterator over every value the method produces
    (a generator's items or each ``context.reply``), streamed as they come."""
    conf, impl = _current()
    return impl.multicall(conf, context, topic, msg, timeout)


def cast(context: Any, topic: str, msg: dict) -> None:
    """Invoke a method on one consumer of ``topic``; no answer."""
    conf, impl = _current()
    impl.cast(conf, context, topic, msg)


def fanout_cast(context: Any, topic: str, msg: dict) -> None:
    """Invoke a method on every consumer of ``topic`` on every host."""
    conf, impl = _current()
    impl.fanout_cast(conf, context, topic, msg)


def cast_to_server(context: Any, server_params: Any, topic: str, msg: dict) -> None:
    """A cast; ``server_params`` name a broker, which ZeroMQ has not."""
    conf, impl = _current()
    impl.cast_to_server(conf, context, server_params, topic, msg)


def fanout_cast_to_server(context: Any, server_params: Any, topic: str,
                          msg: dict) -> None:
    conf, impl = _current()
    impl.fanout_cast_to_server(conf, context, server_params, topic, msg)


def notify(context: Any, topic: str, msg: dict, envelope: bool = False) -> None:
    """Send a notification to ``topic`` (``envelope`` -> the 2.0 envelope)."""
    conf, impl = _current()
    impl.notify(conf, context, topic, msg, envelope)


def cleanup() -> None:
    """Close sockets and flush queued casts; call at service exit."""
    if _backend is not None:
        _backend.cleanup()


def queue_get_for(context: Any, topic: str, host: str | None) -> str:
    """The directed topic of ``topic`` on ``host`` (``topic.host``)."""
    return "%s.%s" % (topic, host) if host else topic
