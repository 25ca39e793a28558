"""``nova-rpc-zmq ring check FILE``: validate a ring file before deploying it.

Prints every topic with its hosts and what each host resolves to.  Exit
status 0 when the file is valid and every host resolves, 1 otherwise; each
problem is printed to stderr with the file, the line and the fix.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.matchmaker import ring as ringmod


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``ring`` (with its ``check`` action) to the top-level parser."""
    p = subparsers.add_parser(
        "ring", help="inspect MatchMaker ring files",
        description="Inspect the JSON ring file of the ring matchmaker.")
    actions = p.add_subparsers(dest="ring_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check", help="validate a ring file and resolve its hosts",
        description="Validate FILE and show each topic's hosts and their "
                    "addresses. Exit 0 when valid and all hosts resolve.")
    check.add_argument("file", metavar="FILE", help="the ring file (JSON)")
    check.add_argument("--no-resolve", action="store_true",
                       help="do not resolve host names (e.g. for a ring file "
                            "of another site)")
    check.set_defaults(run=run)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Check ``args.file``; print the ring; return the exit status."""
    out, err = sys.stdout, sys.stderr
    try:
        ring = ringmod.load_ring_file(args.file)
    except ConfigurationError as exc:
        print(str(exc), file=err)
        print("%s: INVALID" % args.file, file=err)
        return 1
    for warning in ring.warnings:
        print("warning: %s" % warning, file=err)
    resolve = not getattr(args, "no_resolve", False)
    failures: list[tuple[int, str]] = []
    verdicts: dict[str, str] = {}
    for host, line in ring.hosts().items():
        if not resolve:
            verdicts[host] = "not resolved (--no-resolve)"
            continue
        addresses = ringmod.resolve_host(host)
        if addresses:
            verdicts[host] = "-> " + ", ".join(addresses)
        else:
            verdicts[host] = "DOES NOT RESOLVE"
            failures.append((line, "host %r does not resolve; add it to DNS "
                             "or /etc/hosts, or write its IP address" % host))
    width = max([len(h) for h in verdicts] + [4])
    print("%s: %d topic(s), %d host(s)" % (args.file, len(ring.entries),
                                       len(verdicts)), file=out)
    for entry in ring.entries:
        print("%s (line %d)" % (entry.topic, entry.line), file=out)
        if not entry.hosts:
            print("  (no host)", file=out)
        for host, _ in entry.hosts:
            print("  %-*s %s" % (width, host, verdicts[host]), file=out)
    for line, problem in sorted(failures):
        print("%s line %d: %s" % (args.file, line, problem), file=err)
    if failures:
        print("%s: FAILED, %d host(s) do not resolve"
              % (args.file, len(failures)), file=err)
        return 1
    print("%s: OK" % args.file, file=out)
    return 0
