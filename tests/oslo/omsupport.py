"""What the oslo.messaging driver tests share: a ConfigOpts as a service
would have it, and the endpoint the test servers expose."""

from __future__ import annotations

import os
import time
from typing import Any

import oslo_messaging
import oslo_messaging.opts
from oslo_config import cfg


def service_conf(args: list[str] | None = None,
                 project: str = "nova-rpc-zmq-tests") -> cfg.ConfigOpts:
    """A ConfigOpts with oslo.messaging's options registered, as a service
    has them on cfg.CONF, parsed from ``args`` (e.g. ``--config-file``)."""
    conf = cfg.ConfigOpts()
    for group, opts in oslo_messaging.opts.list_opts():
        conf.register_opts(opts, group=group)
    # registered on cfg.CONF only when their modules are imported
    from oslo_messaging._metrics import client as metrics
    from oslo_messaging._tracing import client as tracing
    conf.register_opts(tracing.oslo_messaging_tracing,
                       group="oslo_messaging_tracing")
    conf.register_opts(metrics.oslo_messaging_metrics,
                       group="oslo_messaging_metrics")
    conf(args or [], project=project)
    return conf


def make_conf(host: str = "127.0.0.1", **zmq_options: Any) -> cfg.ConfigOpts:
    """A parsed ConfigOpts with oslo.messaging's options registered (as a
    service has them on cfg.CONF) and ``[oslo_messaging_zmq]`` overrides."""
    conf = service_conf()
    from nova_rpc_zmq.oslo_driver import options
    options.register(conf)
    conf.set_override("rpc_zmq_host", host, group=options.GROUP)
    for name, value in zmq_options.items():
        conf.set_override(name, value, group=options.GROUP)
    return conf


class Failure(Exception):
    """An exception of an allow-listed module (tests.oslo.omsupport)."""


class Endpoint:
    """The methods of every test server; ``name`` says which one answered,
    ``record_dir`` gets one file per cast (``<name>.<n>``)."""

    def __init__(self, name: str, record_dir: str | None = None) -> None:
        self.name = name
        self.record_dir = record_dir
        self.casts: list[Any] = []

    def whoami(self, ctxt: dict) -> str:
        return self.name

    def echo(self, ctxt: dict, value: Any) -> Any:
        return value

    def context_value(self, ctxt: dict, key: str) -> Any:
        return ctxt.get(key)

    def sleep(self, ctxt: dict, seconds: float) -> str:
        time.sleep(seconds)
        return self.name

    def boom(self, ctxt: dict, text: str) -> None:
        raise ValueError(text)

    def fail(self, ctxt: dict, text: str) -> None:
        raise Failure(text)

    def record(self, ctxt: dict, value: Any) -> None:
        self.casts.append(value)
        if self.record_dir:
            path = os.path.join(self.record_dir, "%s.%d" % (self.name,
                                                            len(self.casts)))
            with open(path, "w") as f:
                f.write(str(value))
