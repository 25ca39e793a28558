"""Validation of option values: every error names the option, the value,
where it was set and the fix.

``config.load_settings`` gathers raw values (from files, the host
program's options or overrides) into a dict and a ``Checker``;
``validate`` checks and normalises them in place (legacy spellings to
short names, lists to tuples, a derived health port) and raises
``ConfigurationError`` on the first bad value. No I/O, no oslo.config.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.ipcdir import MAX_DIR_LEN
from nova_rpc_zmq.options import (BACKENDS, DOWN_TIME_FACTOR, FIELDS,
                                  MATCHMAKER_ALIASES, MATCHMAKERS,
                                  SERVICEGROUP_DRIVERS)
from nova_rpc_zmq.redact import mask_url

_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def option_name(field: str) -> str:
    """How an operator writes a Settings field in nova.conf."""
    group, name = FIELDS[field]
    return name if group is None else "[%s] %s" % (group, name)



def shown(value: Any) -> str:
    """``repr(value)`` for a message, any URL's password masked
    (database_connection = 'postgresql://nova:***@db/nova')."""
    return mask_url(repr(value))


class Checker:
    """Validates raw values in place; every error names option, value, origin, fix."""

    def __init__(self, values: dict[str, Any], where: dict[str, str]) -> None:
        self.v = values
        self.where = where

    def fail(self, field: str, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError("%s = %s%s %s; %s" % (
            option_name(field), shown(self.v[field]), self.where[field], problem, fix))

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


def matchmaker_table() -> dict[str, str]:
    table = {name: name for name in MATCHMAKERS}
    table.update({path.replace(":", "."): name for name, path in MATCHMAKERS.items()})
    table.update({k: v for k, v in MATCHMAKER_ALIASES.items() if v in table})
    return table


def validate(c: Checker) -> None:
    v = c.v
    c.choice("rpc_backend", BACKENDS)
    c.choice("rpc_zmq_matchmaker", matchmaker_table())
    c.choice("servicegroup_driver", SERVICEGROUP_DRIVERS)
    for field in ("rpc_zmq_port", "rpc_zmq_start_port"):
        c.number(field, 1, 65535)
    if v["rpc_zmq_broker_ip"] is not None:
        c.text("rpc_zmq_broker_ip")
    if v["rpc_zmq_matchmaker"] == "broker" and not v["rpc_zmq_broker_ip"]:
        raise c.fail("rpc_zmq_matchmaker", "needs the broker's address",
                     "set rpc_zmq_broker_ip to the host of nova-rpc-zmq-proxy "
                     "--legacy-broker, or use rpc_zmq_matchmaker = ring")
    if v["rpc_zmq_matchmaker"] == "broker" and v["rpc_zmq_start_port"] + 2 > 65535:
        raise c.fail("rpc_zmq_start_port", "leaves no room for the broker's "
                     "publisher (rpc_zmq_start_port + 2)", "lower rpc_zmq_start_port")
    if v["rpc_zmq_health_port"] is None:
        # derived, so that a second receiver with its own rpc_zmq_port starts
        health_port = v["rpc_zmq_health_port"] = v["rpc_zmq_port"] + 2
        if health_port > 65535:
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
    if len(v["rpc_zmq_ipc_dir"].encode()) > MAX_DIR_LEN:
        raise c.fail("rpc_zmq_ipc_dir", "is too long for IPC socket paths",
                     "use a directory of at most %d bytes" % MAX_DIR_LEN)
    if v["service_down_time"] <= v["report_interval"]:
        raise c.fail("service_down_time", "is not above report_interval (%s), so live hosts "
                     "would look down" % v["report_interval"],
                     "set it to at least %s x report_interval" % DOWN_TIME_FACTOR)
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
        elif field != "memcached_servers":  # None there: the in-process store
            v[field] = ()
    v["rpc_zmq_curve"] = bool(v["rpc_zmq_curve"])
