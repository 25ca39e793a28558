"""Every option of nova-rpc-zmq for ``oslo-config-generator``.

    oslo-config-generator --config-file etc/nova-rpc-zmq-config-generator.conf

writes ``etc/nova-rpc-zmq.conf.sample`` (namespace ``nova_rpc_zmq``, the
``oslo.config.opts`` entry point). The options themselves live in
``config.py``; this module only lists them by group.
"""

from __future__ import annotations

from oslo_config import cfg

from nova_rpc_zmq import config


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, [options])]``, DEFAULT first, as the generator wants."""
    groups = [("DEFAULT", list(config.DEFAULT_OPTS))]
    groups += [(name, list(opts)) for name, opts in config.GROUP_OPTS.items()]
    return groups
