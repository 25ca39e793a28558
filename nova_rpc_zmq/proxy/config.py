"""The proxy's options and what it checks before it starts.

A proxy reads the services' configuration file (``[DEFAULT]
transport_url``, ``[oslo_messaging_zmq]``) and its own section::

    [zmq_proxy_opts]          # [zmq_proxy_opt] is read too (old spelling)
    host = node-1
    frontend_port = 50001
    backend_port = 50002
    publisher_port = 50003    # a publisher proxy (use_pub_sub = true)

The command line (``cli/proxy.py``) wins over the file. ``load`` returns a
``ProxySettings``; every mistake raises ``ProxyConfigError`` with one line
that names the file or option and the fix.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from nova_rpc_zmq import netaddr
from nova_rpc_zmq.oslo_driver import options as driver_options
from nova_rpc_zmq.proxy.curve import ProxyCurve, ProxyCurveError

GROUP = "zmq_proxy_opts"
#: The section name of the oslo.messaging deployment guide's examples.
OLD_GROUP = "zmq_proxy_opt"

OPTS = [
    cfg.StrOpt("host", default=None, deprecated_group=OLD_GROUP,
               help="Name or IP address this proxy binds and announces in "
                    "the matchmaker (services connect there); default: "
                    "[oslo_messaging_zmq] rpc_zmq_host. A name must resolve "
                    "on this host and on every service host."),
    cfg.IntOpt("frontend_port", default=0, min=0, max=65535,
               deprecated_group=OLD_GROUP,
               help="Port callers connect to; 0: a random port in "
                    "[rpc_zmq_min_port, rpc_zmq_max_port), announced in the "
                    "matchmaker."),
    cfg.IntOpt("backend_port", default=0, min=0, max=65535,
               deprecated_group=OLD_GROUP,
               help="Port RPC servers, notification listeners and reply "
                    "sockets connect to; 0: a random port, announced."),
    cfg.IntOpt("publisher_port", default=None, min=0, max=65535,
               deprecated_group=OLD_GROUP,
               help="Port of this proxy's PUB/SUB publisher, where RPC "
                    "servers subscribe to fanout ([oslo_messaging_zmq] "
                    "use_pub_sub = true, which also starts the publisher "
                    "when this is unset); 0 or unset: a random port, "
                    "announced in the matchmaker under proxy/publisher. "
                    "Needs use_pub_sub = true."),
    cfg.BoolOpt("local_publisher", default=False, deprecated_group=OLD_GROUP,
                help="Run as a local publisher on a service host: only a "
                     "PUB socket on publisher_port (set it: services name "
                     "it in subscribe_on = localhost:<port>), fed by every "
                     "central publisher the matchmaker lists. Needs "
                     "use_pub_sub = true."),
    cfg.IntOpt("health_port", default=0, min=0, max=65535,
               deprecated_group=OLD_GROUP,
               help="Port of the HTTP /health and /metrics pages (on "
                    "host); 0: none."),
]



class ProxyConfigError(Exception):
    """A setting the proxy cannot run with (one line with the fix)."""


@dataclass
class ProxySettings:
    """What a proxy runs with, checked."""

    url: Any                 # oslo_messaging.TransportURL
    kind: str                # registry kind (redis, directory, ...)
    host: str                # announced
    bind: str                # bound (host resolved to an address)
    frontend_port: int
    backend_port: int
    publisher_port: int | None   # None: no publisher
    local_publisher: bool
    health_port: int
    port_range: tuple[int, int, int]
    target_expire: int
    target_update: int
    debug: bool
    conf: Any                # the ConfigOpts (for the registry)
    curve: ProxyCurve | None = None   # rpc_zmq_curve = true: keys read


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """``[(group, [options])]`` for ``oslo-config-generator``."""
    return [(GROUP, list(OPTS))]


def parse_files(paths: list[str]) -> cfg.ConfigOpts:
    """A ConfigOpts with the proxy's, the driver's and ``transport_url``
    options, read from ``paths``. Raises ProxyConfigError naming the file."""
    import oslo_messaging.opts
    conf = cfg.ConfigOpts()
    # [DEFAULT] transport_url and its neighbours, as services register them
    for group, opts in oslo_messaging.opts.list_opts():
        if group is None:
            conf.register_opts(opts)
    conf.register_opts(OPTS, group=GROUP)
    driver_options.register(conf)
    args: list[str] = []
    for path in paths:
        args += ["--config-file", path]
    try:
        conf(args, project="nova-rpc-zmq-proxy", default_config_files=[],
             use_env=False)
    except cfg.ConfigFilesNotFoundError as exc:
        raise ProxyConfigError(
            "configuration file %s cannot be read; give an existing file to "
            "--config-file" % ", ".join(exc.config_files)) from None
    except cfg.ConfigFileParseError as exc:
        raise ProxyConfigError(
            "configuration file %s: %s; fix its INI syntax"
            % (exc.config_file, exc.msg)) from None
    except cfg.Error as exc:
        raise ProxyConfigError("%s; fix the configuration files %s"
                               % (exc, ", ".join(paths))) from None
    return conf


def _value(conf: cfg.ConfigOpts, group: str | None, name: str,
           paths: list[str]) -> Any:
    try:
        return conf[group][name] if group else conf[name]
    except (cfg.Error, ValueError) as exc:
        where = "[%s] %s" % (group or "DEFAULT", name)
        raise ProxyConfigError(
            "%s in %s: %s; fix the value (see --help and the option's help "
            "in the README)" % (where, ", ".join(paths) or "(no file)",
                                exc)) from None


def load(paths: list[str], overrides: dict[str, Any],
         debug: bool = False) -> ProxySettings:
    """The checked settings of files ``paths`` with the command line's
    ``overrides`` (option name -> value, None: not given)."""
    conf = parse_files(paths)
    values = {opt.name: _value(conf, GROUP, opt.name, paths) for opt in OPTS}
    values.update({k: v for k, v in overrides.items() if v is not None})
    zconf = {name: _value(conf, driver_options.GROUP, name, paths)
             for name in ("rpc_zmq_host", "use_pub_sub", "use_router_proxy",
                          "use_dynamic_connections", "rpc_zmq_curve",
                          "rpc_zmq_min_port", "rpc_zmq_max_port",
                          "rpc_zmq_bind_port_retries", "zmq_target_expire",
                          "zmq_target_update", "rpc_zmq_matchmaker",
                          "rpc_zmq_curve_key_file",
                          "rpc_zmq_curve_keys_dir")}
    url_text = _value(conf, None, "transport_url", paths)
    location = conf.get_location("transport_url")
    if not url_text or location is None \
            or location.location == cfg.Locations.opt_default:
        raise ProxyConfigError(
            "[DEFAULT] transport_url is not set in %s; set it to the "
            "services' transport URL (zmq+redis://host:port)"
            % (", ".join(paths) or "any --config-file"))
    url = _transport_url(conf, url_text)
    kind = _kind(url, conf)
    _check_topology(values, zconf)
    for port in ("frontend_port", "backend_port", "publisher_port",
                 "health_port"):
        if values[port] is not None and not 0 <= int(values[port]) <= 65535:
            raise ProxyConfigError("%s = %s is not a TCP port; use 0..65535"
                                   % (port, values[port]))
    host = values["host"] or zconf["rpc_zmq_host"] or socket.gethostname()
    try:
        curve = ProxyCurve.from_options(zconf, host)
    except ProxyCurveError as exc:
        raise ProxyConfigError(str(exc)) from None
    return ProxySettings(
        url=url, kind=kind, host=host, bind=_bind_address(host),
        frontend_port=int(values["frontend_port"]),
        backend_port=int(values["backend_port"]),
        publisher_port=None if not (zconf["use_pub_sub"]
                                    or values["publisher_port"] is not None)
        else int(values["publisher_port"] or 0),
        local_publisher=bool(values["local_publisher"]),
        health_port=int(values["health_port"]),
        port_range=(zconf["rpc_zmq_min_port"], zconf["rpc_zmq_max_port"],
                    zconf["rpc_zmq_bind_port_retries"]),
        target_expire=zconf["zmq_target_expire"],
        target_update=zconf["zmq_target_update"], debug=debug, conf=conf,
        curve=curve)


def _transport_url(conf: cfg.ConfigOpts, text: str) -> Any:
    import oslo_messaging
    try:
        url = oslo_messaging.TransportURL.parse(conf, text)
    except oslo_messaging.InvalidTransportURL as exc:
        raise ProxyConfigError("[DEFAULT] transport_url: %s; use "
                               "zmq+redis://host:port" % exc) from None
    if not (url.transport or "").startswith("zmq"):
        raise ProxyConfigError(
            "[DEFAULT] transport_url = %s:// is not a zmq transport; the "
            "proxy serves transport_url = zmq+redis://host:port"
            % url.transport)
    return url


def _kind(url: Any, conf: cfg.ConfigOpts) -> str:
    import oslo_messaging

    from nova_rpc_zmq.oslo_driver.driver import NOT_SHARED, matchmaker_kind
    try:
        kind = matchmaker_kind(url, conf[driver_options.GROUP])
    except oslo_messaging.InvalidTransportURL as exc:
        raise ProxyConfigError("[DEFAULT] transport_url: %s" % exc) from None
    if kind in NOT_SHARED:
        raise ProxyConfigError(
            "[DEFAULT] transport_url: %s, a proxy cannot register there; use "
            "zmq+redis://host:port (or zmq:// on one host) for services and "
            "proxies" % NOT_SHARED[kind])
    return kind


def _check_topology(values: dict[str, Any], zconf: dict[str, Any]) -> None:
    if values["local_publisher"] and not zconf["use_pub_sub"]:
        raise ProxyConfigError(
            "--local-publisher with [oslo_messaging_zmq] use_pub_sub = "
            "false: a local publisher republishes the central publishers of "
            "use_pub_sub = true; set use_pub_sub = true in the proxies' and "
            "the services' files, or run without --local-publisher")
    if values["local_publisher"] and not values["publisher_port"]:
        raise ProxyConfigError(
            "--local-publisher without --publisher-port / [zmq_proxy_opts] "
            "publisher_port: services find a local publisher by its port "
            "(subscribe_on = localhost:<port>); give the port")
    if values["publisher_port"] is not None and not zconf["use_pub_sub"]:
        raise ProxyConfigError(
            "--publisher-port / [zmq_proxy_opts] publisher_port = %s with "
            "[oslo_messaging_zmq] use_pub_sub = false: services would not "
            "subscribe to this publisher; set use_pub_sub = true in the "
            "proxies' and the services' files, or leave the port unset"
            % values["publisher_port"])
    if zconf["use_dynamic_connections"] and zconf["use_router_proxy"]:
        raise ProxyConfigError(
            "[oslo_messaging_zmq] use_router_proxy and "
            "use_dynamic_connections are both true: they exclude each other; "
            "set use_dynamic_connections = false")


def _bind_address(host: str) -> str:
    """An address ZeroMQ can bind for ``host`` (IP, interface or name)."""
    try:
        return netaddr.resolve_bind_address(host)
    except Exception:  # noqa: BLE001 - not an interface: a host name
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise ProxyConfigError(
            "host = %r does not resolve on this host (%s); set --host or "
            "[zmq_proxy_opts] host to an address or name of this host"
            % (host, exc)) from None
