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
                help="Fanout through PUB/SUB publisher proxies "
                     "(nova-rpc-zmq-proxy with use_pub_sub = true or "
                     "--publisher-port): a caller sends one message to one "
                     "publisher, each RPC server subscribes to every "
                     "publisher the matchmaker lists (or to subscribe_on). "
                     "Available with use_router_proxy = true; set it the "
                     "same in services and proxies."),
    cfg.BoolOpt("use_router_proxy", default=False,
                help="Send every message through the ROUTER proxies "
                     "(nova-rpc-zmq-proxy, at least three for HA) that the "
                     "transport_url's matchmaker lists, instead of "
                     "connecting to each server: a host then holds one "
                     "connection per proxy. Needs a shared matchmaker "
                     "(zmq+redis://, zmq+sentinel:// or zmq:// on one "
                     "host); the same use_pub_sub in services and "
                     "proxies. With rpc_zmq_curve = true set it in the "
                     "proxies' file too: each proxy's certificate is "
                     "<rpc_zmq_curve_keys_dir>/<its --host>.key."),
    cfg.BoolOpt("use_dynamic_connections", default=False,
                help="Open a connection to the chosen server for each "
                     "message and close it right after the send (with "
                     "zmq_linger; set it, e.g. 60, so that a socket to a "
                     "dead host cannot stay): a host holds only the "
                     "connections of the messages in flight, at the price "
                     "of a connect per message and a linear fanout. Set "
                     "use_router_proxy false; with use_pub_sub = true "
                     "fanout goes through the PUB/SUB publisher proxies "
                     "instead (the guide's recommended mix)."),
    cfg.IntOpt("zmq_failover_connections", default=2, min=0,
               help="With use_dynamic_connections: how many more workers "
                    "of a bare topic a message is offered to, one after "
                    "the other, when the one chosen by round robin does "
                    "not take it within a second (dead or stopped); 0 "
                    "tries one worker per round. Higher values ride out "
                    "more dead workers but a stuck send then lasts longer. "
                    "Not used by the other topologies."),
    cfg.IntOpt("zmq_linger", default=-1,
               help="Seconds unsent messages are kept when a socket closes "
                    "at cleanup and, with use_dynamic_connections, after "
                    "each message's send; -1: the driver's bound of 1 "
                    "second (a cleanup always ends)."),
    # the Nova-era transport's option, with its name and default
    cfg.BoolOpt("rpc_zmq_io_batch", default=True,
                help="Run the ZeroMQ I/O thread of each transport and the "
                     "reader thread of each RPC server and notification "
                     "listener under SCHED_BATCH (Linux): waking them no "
                     "longer preempts the thread that hands them a "
                     "message, so under load a wake-up moves several "
                     "messages and a thread that holds the GIL is not "
                     "switched out for one that must wait for it (less "
                     "CPU per call, more calls per second). Threads of the "
                     "application (callers, executor workers) keep their "
                     "policy; a lone call's caller and the worker that "
                     "answers it yield their core after the send, so that "
                     "the I/O thread sends first. Skipped where the system "
                     "refuses it; set false to keep every thread under the "
                     "normal policy."),
    cfg.ListOpt("subscribe_on", default=[],
                help="host:port,... of the publishers RPC servers subscribe "
                     "to for fanout (use_pub_sub), e.g. a local publisher "
                     "(nova-rpc-zmq-proxy --local-publisher) at "
                     "localhost:60001; when set it wins over the publishers "
                     "the matchmaker lists."),
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
              (False, True, False): "router proxy",
              (False, False, True): "dynamic direct connections",
              (True, True, False): "router proxy with PUB/SUB fanout",
              (True, False, True): "dynamic direct connections with PUB/SUB "
                                   "fanout (the guide's recommended mix)"}


#: How an error names the working combinations.
AVAILABLE = ("use_router_proxy = true with use_pub_sub and "
             "use_dynamic_connections false (router proxy), use_pub_sub "
             "and use_router_proxy true with use_dynamic_connections false "
             "(router proxy with PUB/SUB fanout), use_dynamic_connections "
             "= true with the two others false (dynamic direct "
             "connections), use_pub_sub and use_dynamic_connections true "
             "with use_router_proxy false (dynamic direct connections with "
             "PUB/SUB fanout), or all three false (static direct "
             "connections)")


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
    else:
        # the one left: use_pub_sub alone, with static direct connections
        why = ("PUB/SUB fanout goes with the router proxy or with dynamic "
               "direct connections (the guide's mixes); with static "
               "direct connections fanout goes straight to each server, "
               "so set use_pub_sub = false")
    return ("%s: %s; use one of the topologies available: %s"
            % (_flags(*flags), why, AVAILABLE))


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, [options])]`` for ``oslo-config-generator``."""
    return [(GROUP, list(OPTS))]
