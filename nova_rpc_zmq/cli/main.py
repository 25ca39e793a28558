"""``nova-rpc-zmq``: the operator's command line.

Each sub-command lives in its own module of this package, which offers
``add_parser(subparsers)`` and ``run(args) -> int``; this module only wires
them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
