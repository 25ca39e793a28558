"""An RPC client in its own process, run inside a test host's namespace.

    python remote_client.py --config-file nova.conf [--eventlet] OPS_JSON

OPS_JSON is a JSON list of operations, run in order by one process (one
driver, one reply listener)::

    {"op": "call" | "multicall" | "cast" | "fanout_cast",
     "topic": "demo", "method": "whoami", "args": {...},
     "repeat": 1,                 # how many messages (at most MAX_REPEAT)
     "index_arg": "value",        # optional: args[index_arg] = offset + i
     "offset": 0,
     "timeout": 20}               # seconds, call and multicall only

Prints one JSON line on stdout, the last line of the output::

    {"host": <rpc_zmq_host>, "pid": <this pid>,
     "results": [[<outcome of message 0>, ...] for each op]}

where an outcome is ``{"ok": value}`` (a multicall's value is the list of
its replies, a cast's is null) or ``{"error": "Timeout", "message": ...}``:
RPC errors are results, so a test can assert them. Exit status 0 when the
JSON line was printed, 2 for a bad OPS_JSON or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: Upper bound on ``repeat``, so a typo cannot make an endless client.
MAX_REPEAT = 100000
_KINDS = ("call", "multicall", "cast", "fanout_cast")


def _check_ops(ops: Any) -> list[dict]:
    """Validate OPS_JSON; raise ValueError saying what is wrong."""
    if not isinstance(ops, list):
        raise ValueError("OPS_JSON must be a JSON list of operations")
    for n, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in _KINDS:
            raise ValueError("operation %d: 'op' must be one of %s"
                             % (n, ", ".join(_KINDS)))
        if not isinstance(op.get("topic"), str) or not op["topic"]:
            raise ValueError("operation %d: 'topic' must be a string" % n)
        if not isinstance(op.get("method"), str):
            raise ValueError("operation %d: 'method' must be a string" % n)
        repeat = op.get("repeat", 1)
        if not isinstance(repeat, int) or not 0 < repeat <= MAX_REPEAT:
            raise ValueError("operation %d: 'repeat' must be 1..%d"
                             % (n, MAX_REPEAT))
    return ops


def _run_op(rpc: Any, op: dict) -> list[dict]:
    """Send the messages of one operation; one outcome per message."""
    outcomes: list[dict] = []
    kind, topic = op["op"], op["topic"]
    timeout = float(op.get("timeout", 20))
    for i in range(op.get("repeat", 1)):
        args = dict(op.get("args") or {})
        if op.get("index_arg"):
            args[op["index_arg"]] = int(op.get("offset", 0)) + i
        msg = {"method": op["method"], "args": args}
        try:
            if kind == "call":
                value: Any = rpc.call({}, topic, msg, timeout=timeout)
            elif kind == "multicall":
                value = list(rpc.multicall({}, topic, msg, timeout=timeout))
            elif kind == "cast":
                value = rpc.cast({}, topic, msg)
            else:
                value = rpc.fanout_cast({}, topic, msg)
            outcomes.append({"ok": value})
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcomes.append({"error": type(exc).__name__,
                             "message": str(exc)[:2000]})
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Run the operations of OPS_JSON and print the outcomes as JSON."""
    parser = argparse.ArgumentParser(prog="remote_client")
    parser.add_argument("--config-file", action="append", default=[])
    parser.add_argument("--eventlet", action="store_true",
                        help="monkey-patch with eventlet first")
    parser.add_argument("ops", help="JSON list of operations")
    args = parser.parse_args(argv)
    try:
        ops = _check_ops(json.loads(args.ops))
    except ValueError as exc:
        sys.stderr.write("remote_client: bad OPS_JSON: %s\n" % exc)
        return 2
    if args.eventlet:
        import eventlet
        eventlet.monkey_patch()
    from nova_rpc_zmq import config, rpc
    from nova_rpc_zmq.errors import ConfigurationError

    cli: list[str] = []
    for path in args.config_file:
        cli += ["--config-file", path]
    try:
        settings = rpc.init(config.parse_args(cli))
    except ConfigurationError as exc:
        sys.stderr.write("remote_client: %s\n" % exc)
        return 2
    try:
        results = [_run_op(rpc, op) for op in ops]
    finally:
        # flushes queued casts before the process exits
        rpc.cleanup()
    sys.stdout.write(json.dumps({"host": settings.rpc_zmq_host,
                                 "pid": os.getpid(), "results": results})
                     + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
