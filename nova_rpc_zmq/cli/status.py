"""``nova-rpc-zmq status``: members of each servicegroup, up or down.

Reads the same config as the services (``--config-file nova.conf``), or
takes the few options it needs as flags, asks the ServiceGroup back end
once and prints one line per member::

    driver zk at 10.0.0.1:2181 (service_down_time 60s)
    GROUP             MEMBER   STATE  LAST SEEN
    compute           host1    up     2.1s ago
    compute           host2    DOWN   74.0s ago

Exit status: 0 when the back end answered, 1 when it could not be reached
or the configuration is wrong (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from nova_rpc_zmq import errors

_FLAG_FIELDS = {
    "servicegroup_driver": "servicegroup_driver",
    "zookeeper_address": "zookeeper_address",
    "memcached_servers": "memcached_servers",
    "database_connection": "database_connection",
    "service_down_time": "service_down_time",
}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``status`` sub-command."""
    p = subparsers.add_parser(
        "status", help="show servicegroup members, up or down, and when "
                       "each was last seen")
    p.add_argument("--config-file", action="append", default=[],
                   metavar="PATH", help="nova.conf (INI) or flagfile; may repeat")
    p.add_argument("--servicegroup-driver", choices=("db", "zk", "mc"),
                   help="overrides servicegroup_driver")
    p.add_argument("--zookeeper-address", metavar="HOST:PORT[,HOST:PORT]",
                   help="overrides [zookeeper] address")
    p.add_argument("--memcached-servers", metavar="HOST:PORT[,HOST:PORT]",
                   help="overrides memcached_servers")
    p.add_argument("--database-connection", metavar="URL",
                   help="overrides the SQLAlchemy URL of the db driver")
    p.add_argument("--service-down-time", type=float, metavar="SECONDS",
                   help="overrides service_down_time")
    p.add_argument("--group", action="append", default=[], metavar="NAME",
                   help="only these groups (default: every group)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, field in _FLAG_FIELDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[field] = value
    if isinstance(out.get("memcached_servers"), str):
        out["memcached_servers"] = [s.strip() for s in
                                    out["memcached_servers"].split(",") if s.strip()]
    return out


def load(args: argparse.Namespace) -> Any:
    """Settings for this command: the config files (or the default nova.conf
    search), then the flags.  Raises ConfigurationError naming the option."""
    from nova_rpc_zmq import config
    argv: list[str] = []
    for path in args.config_file:
        argv += ["--config-file", path]
    from nova_rpc_zmq import logs
    # the oslo.log flags main() left over (--log-file, --debug ...)
    settings = logs.parse_args(argv + list(getattr(args, "log_argv", [])))
    overrides = _overrides(args)
    return config.load_settings(settings, **overrides) if overrides else settings


def run(args: argparse.Namespace) -> int:
    """Print every member of every group (or of ``--group``)."""
    from nova_rpc_zmq.servicegroup import API, ServiceGroupUnavailable
    try:
        settings = load(args)
        api = API(settings)
    except (errors.ConfigurationError, ServiceGroupUnavailable) as exc:
        print("nova-rpc-zmq status: %s" % exc, file=sys.stderr)
        return 1
    try:
        groups = args.group or api.groups()
        if not api.available:
            print("nova-rpc-zmq status: back end %s did not answer"
                  % api.driver.address, file=sys.stderr)
            return 1
        members = api.members(groups)
    finally:
        api.stop(leave=False)
    now = time.time()
    if args.json:
        print(json.dumps({g: [{"member": r.member, "up": r.up,
                               "last_seen": r.last_seen} for r in recs]
                          for g, recs in members.items()}, indent=2, sort_keys=True))
        return 0
    print("driver %s at %s (service_down_time %gs)"
          % (api.driver.name, api.driver.address, api.service_down_time))
    rows = [("GROUP", "MEMBER", "STATE", "LAST SEEN")]
    for g in sorted(members):
        for r in members[g]:
            seen = "unknown" if r.last_seen is None else "%.1fs ago" % max(
                0.0, now - r.last_seen)
            rows.append((g, r.member, "up" if r.up else "DOWN", seen))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
              + "  " + row[3])
    if len(rows) == 1:
        print("(no members)")
    return 0
