"""Every option of nova-rpc-zmq for ``oslo-config-generator``.

    oslo-config-generator --config-file etc/nova-rpc-zmq-config-generator.conf

writes ``etc/nova-rpc-zmq.conf.sample`` (namespace ``nova_rpc_zmq``, the
``oslo.config.opts`` entry point). The options themselves live in
``config.py``; this module only lists them by group.
"""

from __future__ import annotations

from oslo_config import cfg

from nova_rpc_zmq import config
from nova_rpc_zmq.options import GROUPS


def list_opts() -> list[tuple[str | cfg.OptGroup, list[cfg.Opt]]]:
    """``[(group, [options])]``, DEFAULT first, as the generator wants; the
    other groups as ``OptGroup`` objects, so that their help is shown."""
    groups: list[tuple[str | cfg.OptGroup, list[cfg.Opt]]] = [
        ("DEFAULT", list(config.DEFAULT_OPTS))]
    groups += [(GROUPS[name], list(opts)) for name, opts in config.GROUP_OPTS.items()]
    return groups
