"""``nova-rpc-zmq``: the operator's command line.

Each sub-command lives in its own module of this package, which offers
``add_parser(subparsers)`` and ``run(args) -> int``; this module only wires
them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nova_rpc_zmq import __version__

# sub-command name -> module in nova_rpc_zmq.cli
COMMANDS = {
    "demo": "demo",
    "ring": "ring",
    "status": "status",
    "bench": "bench",
    "keys": "keys",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nova-rpc-zmq",
        description="Broker-less RPC over ZeroMQ: demo, ring files, "
                    "liveness, benchmarks and CURVE keys.")
    # handled here, before oslo.config sees the rest of the command line
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module("nova_rpc_zmq.cli." + module)
        except ImportError as exc:  # a sub-command whose module is missing
            if exc.name != "nova_rpc_zmq.cli." + module:
                raise
            continue
        mod.add_parser(sub)
    return parser


#: Sub-commands that read nova.conf themselves: they set logging up from it
#: and from the oslo.log flags left over here (``args.log_argv``).
CONFIGURED = ("keys", "status")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # what argparse does not know goes to oslo.log (--debug, --log-file ...),
    # which rejects anything else with a usage error
    args, rest = parser.parse_known_args(argv)
    args.log_argv = rest
    if args.command not in CONFIGURED:
        from nova_rpc_zmq import logs
        from nova_rpc_zmq.errors import ConfigurationError
        try:
            logs.parse_args(rest, "nova-rpc-zmq", default_config_files=[])
        except ConfigurationError as exc:
            parser.error(str(exc))
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
