"""The option definitions of nova-rpc-zmq and their tables: every
``cfg.Opt`` with its help text, the Settings field of each, the flag names
of Essex flagfiles, and the legacy spellings of backends, matchmakers and
servicegroup drivers. Registration, parsing and validation are in
``config``; the flagfile reader is in ``flagfile``.
"""

from __future__ import annotations

import socket

from typing import Any

from oslo_config import cfg, types

_HOST = socket.gethostname()

_S, _I, _F, _B, _L = cfg.StrOpt, cfg.IntOpt, cfg.FloatOpt, cfg.BoolOpt, cfg.ListOpt
_P = cfg.PortOpt

BACKENDS = {"%s%s" % (prefix, impl): impl
            for impl in ("impl_zmq", "impl_fake")
            for prefix in ("", "nova.rpc.", "nova.openstack.common.rpc.", "nova_rpc_zmq.",
                           "nova_rpc_zmq.rpc.")}
BACKENDS.update({"zmq": "impl_zmq", "fake": "impl_fake"})    # oslo.messaging names

#: Each matchmaker's canonical short name -> ``"module:Class"``; config
#: validation accepts exactly these names (plus the legacy class paths of
#: MATCHMAKER_ALIASES) and ``matchmaker.get_matchmaker`` loads them. A new
#: back end adds one line here and a class with
#: ``from_settings(settings, liveness)``.
MATCHMAKERS: dict[str, str] = {
    "ring": "nova_rpc_zmq.matchmaker.ring:RingMatchMaker",
    "localhost": "nova_rpc_zmq.matchmaker.localhost:LocalhostMatchMaker",
    "stub": "nova_rpc_zmq.matchmaker.stub:StubMatchMaker",
    "broker": "nova_rpc_zmq.matchmaker.broker:BrokerMatchMaker",
}

#: service_down_time must be above report_interval; Nova's advice, kept in
#: the option's help and the validation message, is this many times it.
DOWN_TIME_FACTOR = 2.5

MATCHMAKER_ALIASES: dict[str, str] = {"local": "localhost"}
for _prefix in ("nova.rpc.matchmaker", "nova.openstack.common.rpc.matchmaker",
                "oslo_messaging._drivers.matchmaker", "oslo.messaging._drivers.matchmaker"):
    for _cls, _short in (("Ring", "ring"), ("Localhost", "localhost"), ("Stub", "stub")):
        MATCHMAKER_ALIASES["%s.MatchMaker%s" % (_prefix, _cls)] = _short
    if _prefix != "nova.rpc.matchmaker":
        MATCHMAKER_ALIASES[_prefix + "_ring.MatchMakerRing"] = "ring"

SERVICEGROUP_DRIVERS = {
    "db": "db", "zk": "zk", "mc": "mc",
    "nova.servicegroup.drivers.db.DbDriver": "db",
    "nova.servicegroup.drivers.zk.ZooKeeperDriver": "zk",
    "nova.servicegroup.drivers.mc.MemcachedDriver": "mc",
}


#: What each short name of BACKENDS and SERVICEGROUP_DRIVERS means.
_MEANINGS = {"impl_zmq": "this ZeroMQ driver", "impl_fake": "in-process, for tests",
             "db": "SQL database", "zk": "ZooKeeper", "mc": "memcached"}


def _choices(table: dict[str, str]) -> list[tuple[str, str]]:
    """oslo.config choices of a table of spellings: the short names first,
    then each legacy spelling saying what it stands for."""
    short = sorted(set(table.values()))
    return [(name, _MEANINGS[name]) for name in short] + [
        (key, "legacy spelling of %s" % table[key])
        for key in sorted(table) if key not in short]


def base_type(opt: cfg.Opt) -> Any:
    """``opt``'s type without its range or choices (an Integer for a
    PortOpt or ``IntOpt(min=1)``): what a raw value is converted with before
    ``config`` checks it and words the error for an operator."""
    kind = opt.type
    if isinstance(kind, types.Integer):  # Port is an Integer
        return types.Integer()
    if isinstance(kind, types.Float):
        return types.Float()
    if isinstance(kind, types.String):
        return types.String()
    return kind

DEFAULT_OPTS = [
    _S("rpc_backend", default="nova_rpc_zmq.impl_zmq", choices=_choices(BACKENDS),
       help="RPC driver: impl_zmq (also spelled nova.rpc.impl_zmq, "
            "nova.openstack.common.rpc.impl_zmq, nova_rpc_zmq.impl_zmq) or impl_fake "
            "(in-process, for tests)."),
    _S("rpc_zmq_bind_address", default="*",
       help="Where the receiver listens: '*' for every address, an IP address of this "
            "host, or an interface name (eth0)."),
    _S("rpc_zmq_matchmaker", default="localhost",
       help="How a topic becomes hosts: 'ring' (JSON ring file, see [matchmaker_ring] "
            "ringfile), 'localhost' (single node), 'broker' (bare topics and fanout "
            "through the broker at rpc_zmq_broker_ip) or 'stub'. Old class paths such "
            "as nova.rpc.matchmaker.MatchMakerRing are accepted."),
    _P("rpc_zmq_port", default=9501, min=1,
       help="TCP port of the receiver; the same on all hosts, free (reserve 9500-9550)."),
    _P("rpc_zmq_start_port", default=9500, min=1,
       help="First port of the reserved range (broker front end 9500, receiver 9501, "
            "broker fanout 9502, health 9503)."),
    _S("rpc_zmq_broker_ip", default=None,
       help="Address (or host name) of the broker (nova-rpc-zmq-proxy --legacy-broker) "
            "with rpc_zmq_matchmaker = broker: bare topics and fanout go to its front "
            "end (rpc_zmq_start_port, 9500) and receivers subscribe to its publisher "
            "(rpc_zmq_start_port + 2, 9502); directed topics and replies still go "
            "straight to their host."),
    _I("rpc_zmq_contexts", default=1, min=1,
       help="ZeroMQ I/O threads per process; raise it only when one core is saturated."),
    _B("rpc_zmq_io_batch", default=True,
       help="Run ZeroMQ's I/O threads, and a threaded caller's reply listener threads, "
            "under SCHED_BATCH (Linux): handing them a message no longer preempts the "
            "sender, so under load each wake-up moves several messages (more calls per "
            "second for the CPU); a lone call may take a little longer. Skipped where "
            "the system refuses the policy."),
    _B("rpc_zmq_local_calls", default=True,
       help="A call to a service on this host goes straight to the service (each "
            "consumer also binds a socket under rpc_zmq_ipc_dir/zmq_local.<topic>), "
            "one process hop less than through the receiver. Casts and fanouts always "
            "go through the receiver, in order."),
    _B("rpc_zmq_direct_calls", default=True,
       help="A call to one of our nodes on another host, and its replies, go straight "
            "between the caller and the service over TCP (ports of "
            "rpc_zmq_direct_ports, learnt through the receivers) once the first call "
            "found them; old-driver nodes, and every cast, notification and fanout, "
            "keep the receivers' path. With rpc_zmq_curve its sockets are CURVE "
            "sockets that take the keys of rpc_zmq_curve_keys_dir, as a receiver does."),
    _S("rpc_zmq_direct_ports", default="9504:9549",
       help="First:last port of the reserved range where consumers and callers bind "
            "their direct TCP sockets (one port per consumer of a directed topic and "
            "per calling process, the first free one); empty turns the direct path "
            "off. Must not hold rpc_zmq_port or the health port."),
    _I("rpc_zmq_topic_backlog", default=10000, min=1,
       help="Most messages the receiver holds for one local topic whose consumers "
            "cannot take them yet (on top of ZeroMQ's 10,000 per consumer); beyond it "
            "new ones are dropped and counted on /metrics as dropped.no_consumer (no "
            "consumer ever took one: a stopped compute.<host>, a host-name mismatch) "
            "or dropped.backlog_full (consumers too slow). Raise it only with the "
            "memory to match; all topics together hold at most 4 x this."),
    _I("rpc_zmq_topic_backlog_bytes", default=64 * 1024 * 1024, min=1,
       help="Most bytes the receiver holds for one local topic (see "
            "rpc_zmq_topic_backlog; whichever bound comes first applies); all "
            "topics together hold at most 4 x this."),
    _S("rpc_zmq_ipc_dir", default="/var/run/openstack",
       help="Directory of the IPC sockets between the receiver and local services; must "
            "exist, be writable by both, and be short (IPC paths hold ~107 bytes)."),
    _S("rpc_zmq_host", default=_HOST, sample_default="<this machine's host name>",
       help="Name of this node in topics and ring files; other hosts must resolve it "
            "(host name, FQDN or IP address)."),
    _I("rpc_thread_pool_size", default=1024, min=1,
       help="Most requests a service runs at once per topic it consumes (its threads "
            "or green threads reading that topic)."),
    _F("rpc_response_timeout", default=60,
       help="Seconds a call waits for its answer before raising Timeout."),
    _F("rpc_cast_timeout", default=30,
       help="Seconds a cast may wait to hand its message to the network before it is "
            "dropped and logged."),
    _F("rpc_zmq_outbound_idle_timeout", default=600, min=0,
       help="Seconds an outbound socket to a peer host may go unused before it is "
            "closed (after flushing, bounded linger); the next message to that host "
            "opens a new one. Lower it when a process talks to thousands of hosts and "
            "runs out of open files; 0 keeps sockets open for ever."),
    _L("rpc_zmq_reply_hosts", default=[],
       help="Hosts, besides those in the ring file and (with rpc_zmq_curve) the keys "
            "dir, that a service may send replies to: callers that serve no topic of "
            "the ring (e.g. an API host) when CURVE is off. A reply to any other host "
            "named by a request is dropped and counted (consumer.dropped."
            "unknown_reply_host)."),
    _L("allowed_rpc_exception_modules",
       default=["nova.exception", "cinder.exception", "nova.openstack.common.exception",
                "builtins", "exceptions"],
       help="Modules whose exceptions a caller rebuilds from a remote error; others "
            "arrive as RemoteError."),
    _I("rpc_zmq_max_msg_size", default=16 * 1024 * 1024, min=1,
       help="Largest inbound message in bytes; bigger ones are dropped and counted."),
    _I("rpc_zmq_max_frames", default=64, min=1,
       help="Most ZeroMQ frames in one inbound message; more are dropped and counted."),
    _I("rpc_zmq_max_topic_length", default=255, min=1,
       help="Longest accepted topic in bytes; longer ones are dropped and counted."),
    _I("rpc_zmq_max_json_depth", default=64, min=1,
       help="Deepest JSON nesting accepted in a message body; deeper is dropped."),
    _P("rpc_zmq_health_port", default=None, sample_default="rpc_zmq_port + 2",
       help="Port of the receiver's text health/metrics page (HAProxy httpchk, "
            "Pacemaker); unset = rpc_zmq_port + 2 (9503 for 9501), so receivers "
            "with different rpc_zmq_port values coexist; 0 disables it."),
    _P("rpc_zmq_metrics_port", default=0,
       help="Port on which a service process (not the receiver) serves its "
            "driver's counters and gauges as GET /metrics in the Prometheus "
            "text format, on the address of rpc_zmq_health_bind_address (unset: "
            "rpc_zmq_bind_address, as the receiver's page); 0 (the default) "
            "turns it off. One port per process: give each worker its own."),
    _S("rpc_zmq_health_bind_address", default=None,
       help="Where the health/metrics page listens: an IP address of this host, "
            "'*' for every address, or an interface name (eth0); unset = "
            "rpc_zmq_bind_address, so HAProxy and Pacemaker on other hosts reach it. "
            "127.0.0.1 keeps it to this host."),
    _F("rpc_zmq_health_stuck_after", default=1,
       help="Seconds the receiver's routing loop may go without turning before "
            "GET /health answers 503 STUCK (the loop turns at least 5 times a "
            "second when healthy; blocked log output or a bug stops it). Keep "
            "it short: a load balancer should move traffic within a few checks."),
    _S("rpc_zmq_drain_file", default=None,
       help="A path that, while it exists, makes the receiver's GET /health "
            "answer 503 DRAINING so HAProxy and Pacemaker move traffic away "
            "before maintenance (touch it, wait for the checks, then stop the "
            "receiver; remove it afterwards). Unset = no drain file. Keep it "
            "outside rpc_zmq_ipc_dir if it must survive a restart."),
    _F("rpc_zmq_drain_timeout", default=5, min=0,
       help="Seconds the receiver may take after SIGTERM to hand the messages "
            "it holds to the local services before it exits anyway (0 = exit "
            "at once); keep it below the init system's stop timeout."),
    _S("control_exchange", default="nova",
       help="Exchange name of this project's topics (kept for AMQP-driver compatibility)."),
    _S("servicegroup_driver", default="db", choices=_choices(SERVICEGROUP_DRIVERS),
       help="Liveness back end: db (SQL database, [database] connection), zk "
            "(ZooKeeper, [zookeeper] address) or mc (memcached, memcached_servers)."),
    _F("service_down_time", default=60,
       help="Seconds without a heartbeat after which a host counts as down; keep it "
            "above %s x report_interval." % DOWN_TIME_FACTOR),
    _F("report_interval", default=10,
       help="Seconds between two heartbeats of a service."),
    _L("memcached_servers", default=None,
       help="host:port of the memcached servers for servicegroup_driver=mc; unset = "
            "in-process cache (one process only)."),
    _S("rpc_zmq_receiver_group", default="rpc_zmq_receiver",
       help="Service group the receivers join, so senders skip hosts whose receiver "
            "is down."),
    _B("rpc_zmq_curve", default=False,
       help="Encrypt and authenticate all TCP traffic with CURVE; needs "
            "rpc_zmq_curve_key_file and rpc_zmq_curve_keys_dir on every host."),
    _S("rpc_zmq_curve_key_file", default="/etc/nova/zmq/host.key",
       help="This host's CURVE secret key file (keep it mode 0600)."),
    _S("rpc_zmq_curve_keys_dir", default="/etc/nova/zmq/keys",
       help="Public CURVE keys of all hosts, one file <host>.key each: the receiver's "
            "allow list and where senders find each server's key."),
]

#: The option groups, with the help the sample configuration shows.
GROUPS: dict[str, cfg.OptGroup] = {
    "matchmaker_ring": cfg.OptGroup(
        "matchmaker_ring", help="The ring matchmaker (rpc_zmq_matchmaker = "
        "ring): which hosts serve each topic."),
    "zookeeper": cfg.OptGroup(
        "zookeeper", help="ZooKeeper liveness (servicegroup_driver = zk)."),
    "database": cfg.OptGroup(
        "database", help="SQL liveness (servicegroup_driver = db); a host "
        "program's own [database] group, when it has one, is used as it is."),
}

GROUP_OPTS: dict[str, list[cfg.Opt]] = {
    "matchmaker_ring": [
        _S("ringfile", default="/etc/oslo/matchmaker_ring.json",
           deprecated_opts=[cfg.DeprecatedOpt("matchmaker_ringfile", group="DEFAULT"),
                            cfg.DeprecatedOpt("rpc_zmq_matchmaker_ringfile",
                                              group="DEFAULT")],
           help="Path of the JSON ring file: an object mapping each bare topic to the "
                "list of hosts serving it. Check it with nova-rpc-zmq ring check."),
    ],
    "zookeeper": [
        _S("address", default=None,
           help="ZooKeeper servers for servicegroup_driver=zk: host:port[,host:port]."),
        _I("recv_timeout", default=4000, min=1,
           help="ZooKeeper session timeout in milliseconds."),
        _S("sg_prefix", default="/servicegroups",
           help="ZooKeeper path under which the service groups live."),
        _F("sg_retry_interval", default=5,
           help="Seconds between attempts to rejoin a group after the ZooKeeper session "
                "was lost."),
    ],
    "database": [
        _S("connection", default="sqlite:////var/lib/nova/nova_rpc_zmq_servicegroup.sqlite",
           deprecated_opts=[cfg.DeprecatedOpt("sql_connection", group="DEFAULT")],
           secret=True,
           help="SQLAlchemy URL of the database of servicegroup_driver=db."),
    ],
}

# Settings field -> (group or None for DEFAULT, option name).
FIELDS: dict[str, tuple[str | None, str]] = {opt.dest: (None, opt.dest) for opt in DEFAULT_OPTS}
FIELDS.update({
    "matchmaker_ringfile": ("matchmaker_ring", "ringfile"),
    "zookeeper_address": ("zookeeper", "address"),
    "zookeeper_recv_timeout": ("zookeeper", "recv_timeout"),
    "zookeeper_sg_prefix": ("zookeeper", "sg_prefix"),
    "zookeeper_sg_retry_interval": ("zookeeper", "sg_retry_interval"),
    "database_connection": ("database", "connection"),
})
OPTS: dict[tuple[str | None, str], cfg.Opt] = {(None, opt.dest): opt for opt in DEFAULT_OPTS}
OPTS.update({(g, opt.dest): opt for g, opts in GROUP_OPTS.items() for opt in opts})

# Flag name in a flagfile -> (group or None, option name): the Settings field
# names (group options flattened) and the DEFAULT-group deprecated names.
FLAGS: dict[str, tuple[str | None, str]] = dict(FIELDS)
for (_g, _n), _opt in OPTS.items():
    for _dep in getattr(_opt, "deprecated_opts", []):
        if _dep.group in (None, "DEFAULT") and _dep.name:
            FLAGS[_dep.name] = (_g, _n)

# Essex logging flags -> oslo.log options (registered by nova_rpc_zmq.logs;
# a program that does not set up logging ignores them, as INI files do).
LOG_FLAGS = {"logdir": "log_dir", "log_dir": "log_dir", "logfile": "log_file",
              "log_file": "log_file", "verbose": "debug", "debug": "debug",
              "use_syslog": "use_syslog"}
LOG_BOOL_FLAGS = ("verbose", "debug", "use_syslog")


def default(field: str) -> Any:
    """The default of the option behind Settings ``field`` as defined here
    (the one definition of every default; None when the value is derived,
    as ``rpc_zmq_health_port``). Raises KeyError for a name that is not a
    Settings field."""
    return OPTS[FIELDS[field]].default
