"""The ``[oslo_messaging_zmq]`` options of the oslo.messaging driver.

Names and defaults are those of the oslo.messaging ZeroMQ deployment guide,
so an existing service configuration keeps working::

    [DEFAULT]
    transport_url = zmq+redis://127.0.0.1:6379

    [oslo_messaging_zmq]
    rpc_zmq_host = node-1
    zmq_target_expire = 60
    zmq_target_update = 30

They are registered on the ConfigOpts that oslo.messaging hands the driver
(``register``) and listed for ``oslo-config-generator`` by ``list_opts``.
"""

from __future__ import annotations

import socket
from typing import Any

from oslo_config import cfg

from nova_rpc_zmq import options as legacy_options

GROUP = "oslo_messaging_zmq"

#: Matchmakers by the part of the transport URL scheme after ``zmq+``.
MATCHMAKERS = ("dummy", "directory", "redis", "sentinel", "ring")
#: Named by the URL but not available yet.
MATCHMAKERS_LATER: tuple[str, ...] = ()

OPTS = [
    cfg.StrOpt("rpc_zmq_host", default=socket.gethostname(),
               sample_default="localhost",
               help="Name or IP address of this host, as other hosts reach "
                    "it: RPC servers register <rpc_zmq_host>:<port> in the "
                    "matchmaker and callers connect there. Must resolve on "
                    "every host."),
    cfg.StrOpt("rpc_zmq_bind_address", default="*",
               help="Where RPC servers and reply sockets listen: '*' (every "
                    "address), an IP address or a network interface name "
                    "(eth0)."),
    cfg.StrOpt("rpc_zmq_matchmaker", default="directory",
               choices=MATCHMAKERS + MATCHMAKERS_LATER,
               help="Matchmaker of zmq:// (a transport_url with a '+' "
                    "names its own: zmq+redis://, zmq+sentinel://, "
                    "zmq+ring://, zmq+dummy://): 'directory' (this host's "
                    "processes), 'redis', 'sentinel' (the URL's hosts), "
                    "'ring' (the Nova-era transport of this host: its "
                    "receiver and the ring file of [DEFAULT] "
                    "rpc_zmq_matchmaker = ring, [matchmaker_ring] ringfile), "
                    "'dummy' (this process)."),
    cfg.IntOpt("zmq_target_expire", default=300,
               help="Seconds a server's registration lives in the "
                    "matchmaker unless refreshed; <= 0: it never expires."),
    cfg.IntOpt("zmq_target_update", default=180,
               help="Seconds between refreshes of a server's registration; "
                    "keep it below zmq_target_expire (about half of it)."),
    cfg.PortOpt("rpc_zmq_min_port", default=49153,
                help="Lowest port an RPC server or reply socket binds."),
    cfg.IntOpt("rpc_zmq_max_port", default=65536, min=1, max=65536,
               help="Highest port (exclusive) an RPC server or reply socket "
                    "binds."),
    cfg.IntOpt("rpc_zmq_bind_port_retries", default=100, min=1,
               help="Random ports tried in [rpc_zmq_min_port, "
                    "rpc_zmq_max_port) before a 'ports range exceeded' "
                    "error."),
    cfg.BoolOpt("use_pub_sub", default=False,
                help="Fanout through PUB/SUB proxies. Not available yet: "
                     "leave false (fanout goes to each server, directly or "
                     "through the router proxies)."),
    cfg.BoolOpt("use_router_proxy", default=False,
                help="Send every message through the ROUTER proxies "
                     "(nova-rpc-zmq-proxy, at least three for HA) that the "
                     "transport_url's matchmaker lists, instead of "
                     "connecting to each server: a host then holds one "
                     "connection per proxy. Needs a shared matchmaker "
                     "(zmq+redis://, zmq+sentinel:// or zmq:// on one "
                     "host); the same use_pub_sub in services and "
                     "proxies; rpc_zmq_curve off."),
    cfg.BoolOpt("use_dynamic_connections", default=False,
                help="Connect per message and close afterwards. Not "
                     "available yet: leave false (connections stay open)."),
    cfg.IntOpt("zmq_failover_connections", default=2, min=0,
               help="Extra connections per bare topic with dynamic "
                    "connections (not used by static direct connections)."),
    cfg.IntOpt("zmq_linger", default=-1,
               help="Seconds unsent messages are kept when a socket closes "
                    "at cleanup; -1: the driver's bound of 1 second (a "
                    "cleanup always ends)."),
    cfg.ListOpt("subscribe_on", default=[],
                help="host:port of PUB/SUB proxies to subscribe to (with "
                     "use_pub_sub, not available yet)."),
    # CURVE: the legacy driver's options with its names, defaults and help
    # (a host's certificate is named by its rpc_zmq_host; see curve.py)
    *(type(opt)(opt.name, default=opt.default, help=opt.help)
      for opt in (legacy_options.OPTS[(None, name)]
                  for name in ("rpc_zmq_curve", "rpc_zmq_curve_key_file",
                               "rpc_zmq_curve_keys_dir"))),
]


def register(conf: cfg.ConfigOpts) -> Any:
    """Register the options on ``conf`` (idempotent); returns the group."""
    conf.register_opts(OPTS, group=GROUP)
    return conf[GROUP]


def check(zconf: Any) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a combination of settings (``zconf``: the
    group as ``register`` returns it); an error names the fix."""
    errors, warnings = [], []
    problem = topology_problem(zconf.use_pub_sub, zconf.use_router_proxy,
                               zconf.use_dynamic_connections)
    if problem:
        errors.append(problem)
    if zconf.use_router_proxy and zconf.rpc_zmq_curve:
        errors.append("rpc_zmq_curve = true with use_router_proxy = true: "
                      "CURVE through the router proxies is not available "
                      "yet; set use_router_proxy = false to use CURVE on "
                      "static direct connections, or rpc_zmq_curve = false")
    if zconf.rpc_zmq_min_port >= zconf.rpc_zmq_max_port:
        errors.append("rpc_zmq_min_port %d must be below rpc_zmq_max_port %d"
                      % (zconf.rpc_zmq_min_port, zconf.rpc_zmq_max_port))
    expire, update = zconf.zmq_target_expire, zconf.zmq_target_update
    if expire > 0 and not 0 < update < expire:
        warnings.append("zmq_target_update %d is not below "
                        "zmq_target_expire %d: registrations expire before "
                        "they are refreshed; use about half of it"
                        % (update, expire))
    if zconf.subscribe_on and not zconf.use_pub_sub:
        warnings.append("subscribe_on is used only with use_pub_sub")
    return errors, warnings


#: The topologies available, by (use_pub_sub, use_router_proxy,
#: use_dynamic_connections).
TOPOLOGIES = {(False, False, False): "static direct connections",
              (False, True, False): "router proxy"}


#: How an error names the working combinations.
AVAILABLE = ("use_router_proxy = true with use_pub_sub and "
             "use_dynamic_connections false (router proxy), or all three "
             "false (static direct connections)")


def _flags(pub_sub: bool, router: bool, dynamic: bool) -> str:
    return ", ".join("%s = %s" % (name, str(value).lower()) for name, value in
                     (("use_pub_sub", pub_sub), ("use_router_proxy", router),
                      ("use_dynamic_connections", dynamic)))


def topology_problem(pub_sub: bool, router: bool,
                     dynamic: bool) -> str | None:
    """Why a combination of the three topology flags cannot run (one
    line naming the combinations that work), or None when it can."""
    flags = (bool(pub_sub), bool(router), bool(dynamic))
    if flags in TOPOLOGIES:
        return None
    if router and dynamic:
        why = ("use_router_proxy and use_dynamic_connections exclude each "
               "other (direct messages go either through the proxies or "
               "straight to the servers)")
    elif pub_sub:
        why = "fanout through PUB/SUB proxies (use_pub_sub) is not " \
              "available yet"
    else:
        why = "dynamic direct connections are not available yet"
    return ("%s: %s; use one of the topologies available: %s"
            % (_flags(*flags), why, AVAILABLE))


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, [options])]`` for ``oslo-config-generator``."""
    return [(GROUP, list(OPTS))]
