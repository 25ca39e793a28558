"""Every option of nova-rpc-zmq, registered once, and the frozen ``Settings``.

The only module that touches the oslo.config object ``CONF``; the rest of the
package gets a validated, normalised ``Settings`` from ``load_settings()``.
``CONF(['--config-file', PATH])`` reads nova.conf in INI form (other projects'
options ignored, as always with oslo.config) and also an Essex-era flagfile:
one ``--flag=value`` a line, ``--flag`` / ``--noflag`` for booleans, ``#``
comments, ``--flagfile=OTHER`` includes.  A flagfile is translated into a
private INI file first; a malformed line, a bad value of one of our flags or an
unknown flag that looks like ours (``--rpc_zmq_...``, near misses such as
``--rpc_zmq_prot``) raises ConfigurationError naming the original file and
line.  The logging flags ``--logdir``, ``--logfile``, ``--verbose`` (and
``--debug``, ``--use_syslog``) become oslo.log's ``log_dir``, ``log_file``,
``debug``, ``use_syslog``; other flags (Nova's ``--sql_connection`` ...) are
ignored as in INI files, so an unchanged Essex nova.conf is read.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from typing import Any, Sequence

from oslo_config import cfg

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.redact import mask_url

_HOST = socket.gethostname()

_S, _I, _F, _B, _L = cfg.StrOpt, cfg.IntOpt, cfg.FloatOpt, cfg.BoolOpt, cfg.ListOpt

DEFAULT_OPTS = [
    _S("rpc_backend", default="nova_rpc_zmq.impl_zmq",
       help="RPC driver: impl_zmq (also spelled nova.rpc.impl_zmq, "
            "nova.openstack.common.rpc.impl_zmq, nova_rpc_zmq.impl_zmq) or impl_fake "
            "(in-process, for tests)."),
    _S("rpc_zmq_bind_address", default="*",
       help="Where the receiver listens: '*' for every address, an IP address of this "
            "host, or an interface name (eth0)."),
    _S("rpc_zmq_matchmaker", default="localhost",
       help="How a topic becomes hosts: 'ring' (JSON ring file, see [matchmaker_ring] "
            "ringfile), 'localhost' (single node) or 'stub'. Old class paths such as "
            "nova.rpc.matchmaker.MatchMakerRing are accepted."),
    _I("rpc_zmq_port", default=9501,
       help="TCP port of the receiver; the same on all hosts, free (reserve 9500-9550)."),
    _I("rpc_zmq_start_port", default=9500,
       help="First port of the reserved range (broker front end 9500, receiver 9501, "
            "broker fanout 9502, health 9503)."),
    _I("rpc_zmq_contexts", default=1,
       help="ZeroMQ I/O threads per process; raise it only when one core is saturated."),
    _B("rpc_zmq_io_batch", default=True,
       help="Run ZeroMQ's I/O threads under SCHED_BATCH (Linux): handing them a message "
            "no longer preempts the sender, so under load each wake-up moves several "
            "messages (more calls per second for the CPU); a lone call may take a little "
            "longer. Skipped where the system refuses the policy."),
    _B("rpc_zmq_local_calls", default=True,
       help="A call to a service on this host goes straight to the service (each "
            "consumer also binds a socket under rpc_zmq_ipc_dir/zmq_local.<topic>), "
            "one process hop less than through the receiver. Casts and fanouts always "
            "go through the receiver, in order."),
    _I("rpc_zmq_topic_backlog", default=10000,
       help="Most messages the receiver holds for one local topic whose consumers "
            "cannot take them yet (on top of ZeroMQ's 10,000 per consumer); beyond it "
            "new ones are dropped and counted on /metrics as dropped.no_consumer (no "
            "consumer ever took one: a stopped compute.<host>, a host-name mismatch) "
            "or dropped.backlog_full (consumers too slow). Raise it only with the "
            "memory to match; all topics together hold at most 4 x this."),
    _I("rpc_zmq_topic_backlog_bytes", default=64 * 1024 * 1024,
       help="Most bytes the receiver holds for one local topic (see "
            "rpc_zmq_topic_backlog; whichever bound comes first applies); all "
            "topics together hold at most 4 x this."),
    _S("rpc_zmq_ipc_dir", default="/var/run/openstack",
       help="Directory of the IPC sockets between the receiver and local services; must "
            "exist, be writable by both, and be short (IPC paths hold ~107 bytes)."),
    _S("rpc_zmq_host", default=_HOST, sample_default="<this machine's host name>",
       help="Name of this node in topics and ring files; other hosts must resolve it "
            "(host name, FQDN or IP address)."),
    _I("rpc_thread_pool_size", default=1024,
       help="Most requests a service runs at once per topic it consumes (its threads "
            "or green threads reading that topic)."),
    _F("rpc_response_timeout", default=60,
       help="Seconds a call waits for its answer before raising Timeout."),
    _F("rpc_cast_timeout", default=30,
       help="Seconds a cast may wait to hand its message to the network before it is "
            "dropped and logged."),
    _F("rpc_zmq_outbound_idle_timeout", default=600,
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
    _I("rpc_zmq_max_msg_size", default=16 * 1024 * 1024,
       help="Largest inbound message in bytes; bigger ones are dropped and counted."),
    _I("rpc_zmq_max_frames", default=64,
       help="Most ZeroMQ frames in one inbound message; more are dropped and counted."),
    _I("rpc_zmq_max_topic_length", default=255,
       help="Longest accepted topic in bytes; longer ones are dropped and counted."),
    _I("rpc_zmq_max_json_depth", default=64,
       help="Deepest JSON nesting accepted in a message body; deeper is dropped."),
    _I("rpc_zmq_health_port", default=None, sample_default="rpc_zmq_port + 2",
       help="Port of the receiver's text health/metrics page (HAProxy httpchk, "
            "Pacemaker); unset = rpc_zmq_port + 2 (9503 for 9501), so receivers "
            "with different rpc_zmq_port values coexist; 0 disables it."),
    _I("rpc_zmq_metrics_port", default=0,
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
    _F("rpc_zmq_drain_timeout", default=5,
       help="Seconds the receiver may take after SIGTERM to hand the messages "
            "it holds to the local services before it exits anyway (0 = exit "
            "at once); keep it below the init system's stop timeout."),
    _S("control_exchange", default="nova",
       help="Exchange name of this project's topics (kept for AMQP-driver compatibility)."),
    _S("servicegroup_driver", default="db",
       help="Liveness back end: db (SQL database, [database] connection), zk "
            "(ZooKeeper, [zookeeper] address) or mc (memcached, memcached_servers)."),
    _F("service_down_time", default=60,
       help="Seconds without a heartbeat after which a host counts as down; keep it "
            "above 2.5 x report_interval."),
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
        _I("recv_timeout", default=4000,
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
_OPTS: dict[tuple[str | None, str], cfg.Opt] = {(None, opt.dest): opt for opt in DEFAULT_OPTS}
_OPTS.update({(g, opt.dest): opt for g, opts in GROUP_OPTS.items() for opt in opts})

# Flag name in a flagfile -> (group or None, option name): the Settings field
# names (group options flattened) and the DEFAULT-group deprecated names.
_FLAGS: dict[str, tuple[str | None, str]] = dict(FIELDS)
for (_g, _n), _opt in _OPTS.items():
    for _dep in getattr(_opt, "deprecated_opts", []):
        if _dep.group in (None, "DEFAULT") and _dep.name:
            _FLAGS[_dep.name] = (_g, _n)

# Essex logging flags -> oslo.log options (registered by nova_rpc_zmq.logs;
# a program that does not set up logging ignores them, as INI files do).
_LOG_FLAGS = {"logdir": "log_dir", "log_dir": "log_dir", "logfile": "log_file",
              "log_file": "log_file", "verbose": "debug", "debug": "debug",
              "use_syslog": "use_syslog"}
_LOG_BOOL_FLAGS = ("verbose", "debug", "use_syslog")

BACKENDS = {"%s%s" % (prefix, impl): impl
            for impl in ("impl_zmq", "impl_fake")
            for prefix in ("", "nova.rpc.", "nova.openstack.common.rpc.", "nova_rpc_zmq.",
                           "nova_rpc_zmq.rpc.")}
BACKENDS.update({"zmq": "impl_zmq", "fake": "impl_fake"})    # oslo.messaging names

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

_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_FLAG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_INCLUDE_DEPTH = 8
# An ipc:// path holds ~107 bytes; the shortest the receiver makes is
# "<dir>/zmq_topic_" plus a one-character topic.
_MAX_IPC_DIR = 107 - len("/zmq_topic_x")


def _own(group: str | None, opt: cfg.Opt) -> bool:
    """Options only this transport defines (the old ``impl_zmq`` and its
    ring matchmaker registered these); the rest (``rpc_response_timeout``,
    ``servicegroup_driver``, ``[database] connection`` ...) are generic and
    usually registered by the host program with its own help and defaults."""
    return group == "matchmaker_ring" or (group is None and opt.dest.startswith("rpc_zmq_"))


def _register(conf: cfg.ConfigOpts, group: str | None, opt: cfg.Opt) -> None:
    try:
        conf.register_opt(opt, group=group)
    except cfg.DuplicateOptError:
        pass  # the host program's own definition of a generic option wins


def register_opts(conf: cfg.ConfigOpts, generic: bool = True) -> None:
    """Register our options on ``conf`` (idempotent).

    An option the host program already registered under the same name (its
    ``rpc_response_timeout``, with its help and default) is left as it is and
    read through its definition. ``generic=False`` registers only the options
    of this transport, as importing the old ``impl_zmq`` did.
    """
    for (group, _name), opt in _OPTS.items():
        if generic or _own(group, opt):
            _register(conf, group, opt)


class FlagfileTranslator:
    """Turns the Essex flagfiles among a parse's config files into INI files.

    Each ``--config-file`` (and default config file) whose first significant
    line starts with ``--`` is translated into an INI file in a private 0700
    directory, removed once oslo.config has read it (so reload_config_files()
    cannot re-read flagfiles). ``original_path`` maps a translated file back
    to the flagfile the operator named, for error messages.
    """

    def __init__(self) -> None:
        self._flag_dir: str | None = None
        self._translated: dict[str, str] = {}  # INI path -> original path

    def translate(self, argv: list[str], defaults: list[str]) -> tuple[list[str], list[str]]:
        """``argv`` and the default config files with flagfiles replaced by
        INI files. Raises ConfigurationError for a bad flagfile."""
        given = False
        for i, arg in enumerate(argv):
            if arg.startswith("--config-file="):
                argv[i] = "--config-file=" + self.as_ini(arg.split("=", 1)[1])
                given = True
            elif arg == "--config-file" and i + 1 < len(argv):
                argv[i + 1] = self.as_ini(argv[i + 1])
                given = True
        if not given:   # oslo.config reads the default files only then
            defaults = [self.as_ini(p) for p in defaults]
        return argv, defaults

    def original_path(self, path: str) -> str:
        """The file the operator named, for a path we may have translated."""
        return self._translated.get(path, path)

    def forget(self) -> None:
        """Forget which translated file came from which flagfile."""
        self.remove_dir()
        self._translated.clear()

    def remove_dir(self) -> None:
        if self._flag_dir is not None:
            shutil.rmtree(self._flag_dir, ignore_errors=True)
            self._flag_dir = None

    def as_ini(self, path: str) -> str:
        """``path`` itself, or the INI file translated from it when it is a
        flagfile."""
        if not _is_flagfile(path):
            return path
        sections = translate_flagfile(path)
        if self._flag_dir is None:
            self._flag_dir = tempfile.mkdtemp(prefix="nova-rpc-zmq-flags-")
            os.chmod(self._flag_dir, 0o700)
        fd, ini = tempfile.mkstemp(suffix=".conf", dir=self._flag_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("# translated from the flagfile %s\n" % path)
            for group, values in sections.items():
                out.write("[%s]\n" % (group or "DEFAULT"))
                out.writelines("%s = %s\n" % item for item in values.items())
        self._translated[ini] = path
        return ini


# one translator per ConfigOpts we parsed (id -> translator); the objects
# are long-lived (usually just CONF), so this stays tiny
_translators: dict[int, FlagfileTranslator] = {}


def flagfiles(conf: cfg.ConfigOpts) -> FlagfileTranslator:
    """The flagfile translator of ``conf`` (made on first use)."""
    translator = getattr(conf, "flagfiles", None)
    if isinstance(translator, FlagfileTranslator):
        return translator
    return _translators.setdefault(id(conf), FlagfileTranslator())


def parse(conf: cfg.ConfigOpts, args: Sequence[str] | None = None,
          project: str | None = None, prog: str | None = None,
          default_config_files: list[str] | None = None, **kwargs: Any) -> None:
    """``conf(args, ...)`` that also reads Essex flagfiles given as config
    files (see ``FlagfileTranslator``).

    Raises ConfigurationError for a bad flagfile, a missing, unreadable or
    unparsable config file, naming the file the operator gave.
    """
    translator = flagfiles(conf)
    translator.forget()
    call = super(NovaConfigOpts, conf).__call__ if isinstance(conf, NovaConfigOpts) \
        else conf.__call__
    try:
        argv, defaults = translator.translate(
            list(sys.argv[1:] if args is None else args),
            cfg.find_config_files(project, prog) if default_config_files is None
            else default_config_files)
        call(argv, project=project, prog=prog, default_config_files=defaults, **kwargs)
    except cfg.ConfigFilesNotFoundError as exc:
        raise ConfigurationError("config file(s) not found: %s; fix the --config-file path"
                                 % ", ".join(map(translator.original_path, exc.config_files))
                                 ) from exc
    except cfg.ConfigFilesPermissionDeniedError as exc:
        raise ConfigurationError("config file(s) not readable: %s; make them readable "
                                 "by this user"
                                 % ", ".join(map(translator.original_path, exc.config_files))
                                 ) from exc
    except cfg.ConfigFileParseError as exc:
        raise ConfigurationError("%s: %s; fix the file's INI syntax"
                                 % (translator.original_path(exc.config_file), exc.msg)) from exc
    finally:
        # oslo.config has read every file into its namespace by now, so
        # the translations go at once: nothing lingers if we are killed.
        translator.remove_dir()


class NovaConfigOpts(cfg.ConfigOpts):
    """A ConfigOpts of its own whose ``__call__`` also reads Essex-style
    flagfiles (``parse``); for programs and tests that want a configuration
    apart from the process's ``CONF``."""

    def __init__(self) -> None:
        super().__init__()
        self.flagfiles = FlagfileTranslator()

    def __call__(self, args: Sequence[str] | None = None,  # type: ignore[override]
                 project: str | None = None, prog: str | None = None,
                 version: str | None = None, usage: str | None = None,
                 default_config_files: list[str] | None = None, **kwargs: Any) -> None:
        parse(self, args, project=project, prog=prog, version=version, usage=usage,
              default_config_files=default_config_files, **kwargs)

    def original_path(self, path: str) -> str:
        """The file the operator named, for a path we may have translated."""
        return self.flagfiles.original_path(path)

    def forget_flagfiles(self) -> None:
        """Forget which translated file came from which flagfile."""
        self.flagfiles.forget()


def _is_flagfile(path: str) -> bool:
    """True when the first significant line of ``path`` starts with ``--``."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    return line.startswith("--")
    except OSError:
        return False  # oslo.config reports the missing file
    return False


def _looks_like_ours(name: str) -> str | None:
    """Why an unknown flag is taken for a typo of ours, or None."""
    close = difflib.get_close_matches(name, list(_FLAGS), n=1, cutoff=0.85)
    if close:
        return "did you mean --%s?" % close[0]
    return "no such rpc_zmq_ option exists" if name.startswith("rpc_zmq_") else None


def translate_flagfile(path: str, _depth: int = 0, _seen: tuple[str, ...] = ()
                       ) -> dict[str | None, dict[str, str]]:
    """Read an Essex flagfile: {group or None: {option: INI value text}}.

    Later lines win, as with gflags.  Raises ConfigurationError naming
    ``path``, the line number and the fix.
    """
    real = os.path.realpath(path)
    if real in _seen or _depth > _MAX_INCLUDE_DEPTH:
        raise ConfigurationError("%s: --flagfile includes nest too deep or loop back to this "
                                 "file; remove the loop" % path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError("cannot read flagfile %s: %s; fix the path or the file's "
                                 "encoding (UTF-8)" % (path, exc)) from exc
    sections: dict[str | None, dict[str, str]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def fail(what: str, fix: str) -> ConfigurationError:
            return ConfigurationError("%s line %d: %s; %s" % (path, number, what, fix))

        if not line.startswith("--"):
            raise fail("%r is not a flag" % line, "write one flag per line as --name=value "
                       "(--name or --noname for booleans), or comment the line out with #")
        name, eq, value = line[2:].partition("=")
        name, value = name.strip(), value.strip()
        if not _FLAG_NAME_RE.match(name):
            raise fail("%r is not a valid flag name" % name,
                       "use letters, digits and '_' as in --rpc_zmq_port=9501")
        if name == "flagfile":
            if not value:
                raise fail("--flagfile needs a path", "write --flagfile=PATH")
            include = os.path.join(os.path.dirname(path), value)
            for group, values in translate_flagfile(include, _depth + 1,
                                                    _seen + (real,)).items():
                sections.setdefault(group, {}).update(values)
            continue
        if name in _LOG_FLAGS or (name[:2] == "no" and name[2:] in _LOG_BOOL_FLAGS
                                  and not eq):
            log_name = _LOG_FLAGS.get(name) or _LOG_FLAGS[name[2:]]
            if name in _LOG_BOOL_FLAGS or name[2:] in _LOG_BOOL_FLAGS:
                value = value if eq else ("false" if name[:2] == "no" else "true")
            sections.setdefault(None, {})[log_name] = value
            continue
        negated = not eq and name not in _FLAGS and name[:2] == "no" and name[2:] in _FLAGS
        if negated:
            name = name[2:]
        if name not in _FLAGS:
            why = _looks_like_ours(name)
            if why:
                raise fail("unknown flag --%s (%s)" % (name, why),
                           "fix the name or delete the line")
            continue  # another project's flag: ignored, as in INI files
        group, opt_name = _FLAGS[name]
        opt = _OPTS[(group, opt_name)]
        is_bool = isinstance(opt, cfg.BoolOpt)
        if negated and not is_bool:
            raise fail("--no%s: only boolean flags can be negated" % name,
                       "write --%s=VALUE" % name)
        if not eq:
            if not is_bool:
                raise fail("--%s needs a value" % name, "write --%s=VALUE" % name)
            value = "false" if negated else "true"
        try:
            opt.type(value)
        except ValueError as exc:
            raise fail("invalid value %r for --%s (%s)" % (value, name, exc),
                       "fix the value (see the option's help)") from exc
        sections.setdefault(group, {})[opt_name] = value
    return sections


#: The process's configuration: oslo.config's own ``cfg.CONF``, so a program
#: that parses nova.conf into it and one that calls ``parse_args`` see the
#: same values. Importing this module registers only this transport's
#: options there, as importing the old ``impl_zmq`` did; ``parse_args``
#: registers the generic ones too, and ``load_settings`` reads a generic
#: option the host program did not register from the same files.
CONF: cfg.ConfigOpts = cfg.CONF
register_opts(CONF, generic=False)


def reset(conf: cfg.ConfigOpts = CONF) -> None:
    """Forget parsed files, overrides and translated flagfiles (for tests)."""
    conf.reset()
    flagfiles(conf).forget()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every option as a validated value; group options flattened.

    Built by ``load_settings``; immutable, so threads share it freely.  Legacy
    spellings are normalised: ``rpc_backend`` is 'impl_zmq' or 'impl_fake',
    ``rpc_zmq_matchmaker`` a matchmaker short name, ``servicegroup_driver``
    one of db, zk, mc.
    """

    rpc_backend: str
    rpc_zmq_bind_address: str
    rpc_zmq_matchmaker: str
    rpc_zmq_port: int
    rpc_zmq_start_port: int
    rpc_zmq_contexts: int
    rpc_zmq_io_batch: bool
    rpc_zmq_local_calls: bool
    rpc_zmq_topic_backlog: int
    rpc_zmq_topic_backlog_bytes: int
    rpc_zmq_ipc_dir: str
    rpc_zmq_host: str
    rpc_thread_pool_size: int
    rpc_response_timeout: float
    rpc_cast_timeout: float
    rpc_zmq_outbound_idle_timeout: float
    rpc_zmq_reply_hosts: tuple[str, ...]
    allowed_rpc_exception_modules: tuple[str, ...]
    rpc_zmq_max_msg_size: int
    rpc_zmq_max_frames: int
    rpc_zmq_max_topic_length: int
    rpc_zmq_max_json_depth: int
    rpc_zmq_health_port: int
    rpc_zmq_health_bind_address: str | None
    rpc_zmq_metrics_port: int
    rpc_zmq_health_stuck_after: float
    rpc_zmq_drain_file: str | None
    rpc_zmq_drain_timeout: float
    control_exchange: str
    servicegroup_driver: str
    service_down_time: float
    report_interval: float
    memcached_servers: tuple[str, ...] | None
    rpc_zmq_receiver_group: str
    rpc_zmq_curve: bool
    rpc_zmq_curve_key_file: str
    rpc_zmq_curve_keys_dir: str
    matchmaker_ringfile: str
    zookeeper_address: str | None
    zookeeper_recv_timeout: int
    zookeeper_sg_prefix: str
    zookeeper_sg_retry_interval: float
    database_connection: str
    #: Derived, not an option: liveness is on when ``servicegroup_driver``
    #: was set explicitly (its default alone keeps the all-in-one simple).
    servicegroup_enabled: bool = False

    def __repr__(self) -> str:
        # the generated repr would show database_connection's password
        return "Settings(%s)" % ", ".join(
            "%s=%s" % (f.name, _shown(getattr(self, f.name)))
            for f in dataclasses.fields(self))

    @functools.cached_property
    def limits(self) -> Any:
        """The inbound message limits as a ``wire.Limits``."""
        from nova_rpc_zmq.wire import Limits
        return Limits(max_msg_size=self.rpc_zmq_max_msg_size, max_frames=self.rpc_zmq_max_frames,
                      max_topic_length=self.rpc_zmq_max_topic_length,
                      max_json_depth=self.rpc_zmq_max_json_depth)


def option_name(field: str) -> str:
    """How an operator writes a Settings field in nova.conf."""
    group, name = FIELDS[field]
    return name if group is None else "[%s] %s" % (group, name)


def _original_path(conf: cfg.ConfigOpts, path: str) -> str:
    translator = getattr(conf, "flagfiles", None) or _translators.get(id(conf))
    return translator.original_path(path) if translator is not None else path


def _registered(conf: cfg.ConfigOpts, field: str) -> bool:
    group, name = FIELDS[field]
    try:
        conf.get_location(name, group)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return False
    except Exception:  # noqa: BLE001 - a bad value: registered all the same
        return True
    return True


def _config_files(conf: cfg.ConfigOpts) -> tuple[list[str], list[str]]:
    """The config files and dirs ``conf`` was parsed from (none before it was)."""
    try:
        files = [f for f in (conf.config_file or []) if os.path.isfile(f)]
        dirs = conf.config_dir or []
    except cfg.Error:
        return [], []
    return files, [dirs] if isinstance(dirs, str) else list(dirs)


def _shadow(conf: cfg.ConfigOpts) -> cfg.ConfigOpts:
    """A private ConfigOpts with every option of ours, parsed from the files
    ``conf`` read: where the generic options the host program did not
    register are read, so registering them cannot clash with a definition
    the host program (or a library) registers later."""
    files, dirs = _config_files(conf)
    shadow = cfg.ConfigOpts()
    register_opts(shadow)
    shadow(args=[], default_config_files=files, default_config_dirs=dirs, use_env=False)
    return shadow


def _where(conf: cfg.ConfigOpts, field: str) -> str:
    group, name = FIELDS[field]
    try:
        loc = conf.get_location(name, group)
    except (cfg.Error, ValueError):
        return ""
    if loc is None or loc.location == cfg.Locations.opt_default:
        return " (the default)"
    if loc.location == cfg.Locations.user and loc.detail:
        return " (set in %s)" % _original_path(conf, loc.detail)
    return " (set by %s)" % loc.location.name.replace("_", " ")


def _read(conf: cfg.ConfigOpts, field: str) -> Any:
    group, name = FIELDS[field]
    try:
        return getattr(conf if group is None else getattr(conf, group), name)
    except cfg.ConfigFileValueError as exc:
        # oslo.config words this "Value for option X from LocationInfo(...,
        # detail='FILE') is not valid: WHY"; keep only FILE and WHY.
        text = str(exc)
        found = re.search(r"detail='([^']*)'", text)
        origin = _original_path(conf, found.group(1) if found else "a config file")
        why = text.split("is not valid:", 1)[-1].strip()
        raise ConfigurationError("%s (set in %s) is not valid: %s; fix its value"
                                 % (option_name(field), origin, why)) from exc


def _coerce(field: str, value: Any) -> Any:
    try:
        return None if value is None else _OPTS[FIELDS[field]].type(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("%s = %s (passed to load_settings) is not valid: %s"
                                 % (option_name(field), _shown(value), exc)) from exc


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, any URL's password masked
    (database_connection = 'postgresql://nova:***@db/nova')."""
    return mask_url(repr(value))


class _Checker:
    """Validates raw values in place; every error names option, value, origin, fix."""

    def __init__(self, values: dict[str, Any], where: dict[str, str]) -> None:
        self.v = values
        self.where = where

    def fail(self, field: str, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError("%s = %s%s %s; %s" % (
            option_name(field), _shown(self.v[field]), self.where[field], problem, fix))

    def choice(self, field: str, table: dict[str, str]) -> None:
        raw = self.v[field]
        key = str(raw).strip().replace(":", ".") if raw is not None else ""
        if key not in table:
            short = sorted(set(table.values()))
            legacy = sorted(k for k in table if k not in short)
            raise self.fail(field, "is not supported",
                            "accepted values: %s (legacy spellings also accepted: %s)"
                            % (", ".join(short), ", ".join(legacy)))
        self.v[field] = table[key]

    def number(self, field: str, low: float, high: float | None = None,
               nullable: bool = False, positive: bool = False) -> None:
        value = self.v[field]
        if value is None and nullable:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (value <= 0 if positive else value < low) \
                or (high is not None and value > high):
            rng = ("greater than 0" if positive else "at least %s" % low) \
                if high is None else "between %s and %s" % (low, high)
            if field.endswith("port"):
                raise self.fail(field, "is not a valid port", "use a TCP port number " + rng)
            raise self.fail(field, "is out of range", "use a number %s%s"
                            % (rng, " or leave it unset" if nullable else ""))

    def text(self, field: str) -> None:
        value = self.v[field]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "is empty", "set a value")
        self.v[field] = value.strip()

    def host_ports(self, field: str, items: Sequence[str], example: str) -> None:
        for item in items:
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise self.fail(field, "has the entry %r that is not host:port" % item,
                                "write e.g. %s" % example)


def _matchmaker_table() -> dict[str, str]:
    from nova_rpc_zmq.matchmaker import MATCHMAKERS
    table = {name: name for name in MATCHMAKERS}
    table.update({path.replace(":", "."): name for name, path in MATCHMAKERS.items()})
    table.update({k: v for k, v in MATCHMAKER_ALIASES.items() if v in table})
    return table


def _validate(c: _Checker) -> None:
    v = c.v
    c.choice("rpc_backend", BACKENDS)
    c.choice("rpc_zmq_matchmaker", _matchmaker_table())
    c.choice("servicegroup_driver", SERVICEGROUP_DRIVERS)
    for field in ("rpc_zmq_port", "rpc_zmq_start_port"):
        c.number(field, 1, 65535)
    if v["rpc_zmq_health_port"] is None:
        # derived, so that a second receiver with its own rpc_zmq_port starts
        v["rpc_zmq_health_port"] = v["rpc_zmq_port"] + 2
        if v["rpc_zmq_health_port"] > 65535:
            raise c.fail("rpc_zmq_port", "leaves no room for the health port "
                         "(rpc_zmq_port + 2)", "set rpc_zmq_health_port to a free port, or 0")
    c.number("rpc_zmq_health_port", 0, 65535)
    c.number("rpc_zmq_metrics_port", 0, 65535)
    for field in ("rpc_zmq_contexts", "rpc_thread_pool_size", "rpc_zmq_max_msg_size",
                  "rpc_zmq_max_frames", "rpc_zmq_max_topic_length", "rpc_zmq_max_json_depth"):
        c.number(field, 1)
    c.number("rpc_zmq_topic_backlog", 1)
    c.number("rpc_zmq_topic_backlog_bytes", 1)
    c.number("rpc_zmq_health_stuck_after", 0, positive=True)
    c.number("rpc_zmq_drain_timeout", 0)
    if v["rpc_zmq_drain_file"] is not None:
        c.text("rpc_zmq_drain_file")
    for field in ("rpc_response_timeout", "rpc_cast_timeout", "service_down_time",
                  "report_interval", "zookeeper_recv_timeout", "zookeeper_sg_retry_interval"):
        c.number(field, 0, positive=True)
    if v["rpc_zmq_health_bind_address"] is not None:
        c.text("rpc_zmq_health_bind_address")
    for field in ("rpc_zmq_bind_address", "rpc_zmq_ipc_dir",
                  "rpc_zmq_host", "control_exchange",
                  "rpc_zmq_receiver_group", "rpc_zmq_curve_key_file", "rpc_zmq_curve_keys_dir",
                  "matchmaker_ringfile", "zookeeper_sg_prefix", "database_connection"):
        c.text(field)
    if not _HOST_RE.match(v["rpc_zmq_host"]):
        raise c.fail("rpc_zmq_host", "is not a host name",
                     "use this host's name, FQDN or IP address")
    if len(v["rpc_zmq_ipc_dir"].encode()) > _MAX_IPC_DIR:
        raise c.fail("rpc_zmq_ipc_dir", "is too long for IPC socket paths",
                     "use a directory of at most %d bytes" % _MAX_IPC_DIR)
    if v["service_down_time"] <= v["report_interval"]:
        raise c.fail("service_down_time", "is not above report_interval (%s), so live hosts "
                     "would look down" % v["report_interval"],
                     "set it to at least 2.5 x report_interval")
    if not v["zookeeper_sg_prefix"].startswith("/"):
        raise c.fail("zookeeper_sg_prefix", "is not an absolute path",
                     "start it with '/', e.g. /servicegroups")
    if "://" not in v["database_connection"]:
        raise c.fail("database_connection", "is not a database URL", "write e.g. "
                     "sqlite:////var/lib/nova/sg.sqlite or postgresql://user:pass@host/db")
    if v["zookeeper_address"] is not None:
        c.text("zookeeper_address")
        parts = [p.strip() for p in v["zookeeper_address"].split(",")]
        c.host_ports("zookeeper_address", parts, "192.168.2.1:2181,192.168.2.2:2181")
        v["zookeeper_address"] = ",".join(parts)
    elif v["servicegroup_driver"] == "zk":
        raise c.fail("zookeeper_address", "is unset but servicegroup_driver is zk",
                     "set [zookeeper] address = host:port[,host:port...]")
    c.host_ports("memcached_servers", v["memcached_servers"] or (),
                 "memcached_servers = 10.0.0.1:11211,10.0.0.2:11211")
    c.number("rpc_zmq_outbound_idle_timeout", 0)
    for field in ("allowed_rpc_exception_modules", "memcached_servers",
                  "rpc_zmq_reply_hosts"):
        if v[field] is not None:
            v[field] = tuple(str(x).strip() for x in v[field] if str(x).strip())
    v["rpc_zmq_curve"] = bool(v["rpc_zmq_curve"])


def load_settings(conf: cfg.ConfigOpts | Settings | None = CONF,
                  **overrides: Any) -> Settings:
    """Validated, normalised ``Settings`` from ``conf`` plus ``overrides``.

    ``conf`` is a ConfigOpts (None means ``CONF``) or an existing Settings
    to which ``overrides`` are applied. A generic option that ``conf`` has
    not registered (the host program registers its own) is read from the
    files ``conf`` was parsed from.  Builds anew on every call: per message,
    use ``settings_for``.  ``overrides`` use Settings field
    names (``rpc_zmq_port=9601``, ``matchmaker_ringfile=path``) and are
    validated like file values.  Raises ConfigurationError naming the
    option, the value, where it was set and the accepted values; TypeError
    for an unknown field name.
    """
    enabled = overrides.pop("servicegroup_enabled", None)
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise TypeError("load_settings() got unknown option(s) %s; valid names are the "
                        "Settings fields" % ", ".join(unknown))
    conf = CONF if conf is None else conf
    shadow: cfg.ConfigOpts | None = None
    if not isinstance(conf, Settings):
        register_opts(conf, generic=False)
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for field in FIELDS:
        if field in overrides:
            values[field] = _coerce(field, overrides[field])
            where[field] = " (passed to load_settings)"
        elif isinstance(conf, Settings):
            values[field] = getattr(conf, field)
            where[field] = ""
        else:
            source = conf
            if not _registered(conf, field):
                shadow = shadow or _shadow(conf)
                source = shadow
            values[field] = _read(source, field)
            where[field] = _where(source, field)
    _validate(_Checker(values, where))
    if enabled is None:
        if isinstance(conf, Settings):
            enabled = conf.servicegroup_enabled
        else:
            enabled = where["servicegroup_driver"] != " (the default)"
        enabled = enabled or "servicegroup_driver" in overrides
    return Settings(servicegroup_enabled=bool(enabled), **values)


# A key no option can have (option names hold no NUL) in oslo.config's own
# value cache, which it empties whenever a value may change (parse, reload,
# override, reset, register): while our key is there, the Settings derived
# from that ConfigOpts still hold.
_SETTINGS_KEY = (None, "\0nova_rpc_zmq.settings")
_derived: dict[tuple, tuple[cfg.ConfigOpts, Settings]] = {}
_derived_lock = threading.Lock()


def _value_cache(conf: cfg.ConfigOpts) -> dict | None:
    cache = getattr(conf, "_ConfigOpts__cache", None)
    return cache if isinstance(cache, dict) else None


def settings_for(conf: cfg.ConfigOpts | Settings | None = None, **fixed: Any) -> Settings:
    """The Settings of ``conf``, derived once and then cached: what code
    that is handed a ConfigOpts per message (``impl.call(CONF, ...)``) uses.

    ``conf`` is a ConfigOpts (None: ``CONF``) or a Settings (returned as it
    is). ``fixed`` are overrides that always apply (the drop-in module fixes
    ``rpc_backend``). The cache holds until ``conf`` changes (parsed again,
    reloaded, an override set or cleared); every thread gets the same
    Settings object. Thread-safe; raises ConfigurationError like
    ``load_settings``.
    """
    if isinstance(conf, Settings):
        return conf
    conf = CONF if conf is None else conf
    key = (id(conf), tuple(fixed.items())) if fixed else (id(conf),)
    entry = _derived.get(key)
    if entry is not None and entry[0] is conf:
        cache = _value_cache(conf)
        if cache is None or cache.get(_SETTINGS_KEY) is entry[1]:
            return entry[1]
    with _derived_lock:
        entry = _derived.get(key)
        cache = _value_cache(conf)
        if entry is not None and entry[0] is conf and (
                cache is None or cache.get(_SETTINGS_KEY) is entry[1]):
            return entry[1]
        settings = load_settings(conf, **fixed)
        if entry is not None and entry[1] == settings:
            settings = entry[1]  # nothing changed: keep the object callers hold
        cache = _value_cache(conf)  # registering may have replaced nothing, but re-read
        if cache is not None:
            cache[_SETTINGS_KEY] = settings
        _derived[key] = (conf, settings)
        return settings


def parse_args(argv: Sequence[str], default_config_files: list[str] | None = None) -> Settings:
    """Parse ``argv`` (without the program name) into the global CONF and
    return its Settings.  Raises ConfigurationError on any bad file or value.

    Registers every option of ours on CONF (the generic ones too, where the
    program has not): for our own programs, which own CONF.
    """
    register_opts(CONF)
    parse(CONF, list(argv), project="nova", default_config_files=default_config_files)
    return load_settings(CONF)
