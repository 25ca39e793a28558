"""The process's configuration: options registered, files parsed, and the
frozen ``Settings`` every component gets.

The only module that touches the oslo.config object ``CONF`` (which is
``oslo_config.cfg.CONF``); the rest of the package gets a validated,
normalised ``Settings`` from ``load_settings()`` or, given a ConfigOpts per
message, ``settings_for()``. ``parse_args`` reads nova.conf in INI form
(other projects' options ignored, as always with oslo.config) and Essex-era
flagfiles (``flagfile``). The options themselves are defined in ``options``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import threading
from typing import TYPE_CHECKING, Any, Sequence

from oslo_config import cfg

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.flagfile import FlagfileTranslator, is_flagfile, translate_flagfile
from nova_rpc_zmq.options import (  # noqa: F401 - config's public names
    BACKENDS, DEFAULT_OPTS, FIELDS, GROUP_OPTS, MATCHMAKER_ALIASES, SERVICEGROUP_DRIVERS)
from nova_rpc_zmq.options import DOWN_TIME_FACTOR, GROUPS, base_type, default
from nova_rpc_zmq.options import OPTS as _OPTS
from nova_rpc_zmq.validation import Checker, option_name, shown, validate

if TYPE_CHECKING:
    from nova_rpc_zmq.wire import Limits

__all__ = ["CONF", "DOWN_TIME_FACTOR", "Settings", "FlagfileTranslator", "default",
           "default_settings", "NovaConfigOpts", "flagfiles",
           "is_flagfile", "load_settings", "parse", "parse_args", "register_opts",
           "reset", "settings_for", "translate_flagfile", "DEFAULT_OPTS", "GROUP_OPTS",
           "FIELDS", "BACKENDS", "MATCHMAKER_ALIASES", "SERVICEGROUP_DRIVERS"]



def _own(group: str | None, opt: cfg.Opt) -> bool:
    """Options only this transport defines (the old ``impl_zmq`` and its
    ring matchmaker registered these); the rest (``rpc_response_timeout``,
    ``servicegroup_driver``, ``[database] connection`` ...) are generic and
    usually registered by the host program with its own help and defaults."""
    return group == "matchmaker_ring" or (group is None and opt.dest.startswith("rpc_zmq_"))


def _register(conf: cfg.ConfigOpts, group: str | None, opt: cfg.Opt) -> None:
    if group is not None:
        conf.register_group(GROUPS[group])  # a no-op for a group it has
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
    one of db, zk, mc.  Code that needs Settings without the process's
    configuration (tests, tools) uses ``default_settings(**fields)``.
    """

    rpc_backend: str
    rpc_zmq_bind_address: str
    rpc_zmq_matchmaker: str
    rpc_zmq_port: int
    rpc_zmq_start_port: int
    rpc_zmq_broker_ip: str | None
    rpc_zmq_contexts: int
    rpc_zmq_io_batch: bool
    rpc_zmq_local_calls: bool
    rpc_zmq_direct_calls: bool
    rpc_zmq_direct_ports: str
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
            "%s=%s" % (f.name, shown(getattr(self, f.name)))
            for f in dataclasses.fields(self))

    @functools.cached_property
    def limits(self) -> Limits:
        """The inbound message limits as a ``wire.Limits``."""
        from nova_rpc_zmq.wire import Limits
        return Limits(max_msg_size=self.rpc_zmq_max_msg_size, max_frames=self.rpc_zmq_max_frames,
                      max_topic_length=self.rpc_zmq_max_topic_length,
                      max_json_depth=self.rpc_zmq_max_json_depth)


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


def _raw(conf: cfg.ConfigOpts, field: str) -> tuple[Any, Any] | None:
    """The value of ``field`` converted without its option's range or
    choices, and where it was set; None when there is none to give.

    oslo.config checks a typed option's range and choices when the value is
    read, with words of its own; this reads the same value past that check,
    so that ``validation.validate`` judges it and names the fix as for any other
    value. Uses oslo.config's parsed namespace (a private attribute, so
    anything unexpected there means None: the caller words its error then).
    """
    group, name = FIELDS[field]
    opt = _OPTS[(group, name)]
    namespace = getattr(conf, "_namespace", None)
    if namespace is None:  # not parsed: no file value to read
        return None
    try:
        value, loc = opt._get_from_namespace(namespace, group)
        return base_type(opt)(value), loc
    except Exception:  # noqa: BLE001 - not readable this way: say so plainly
        return None


def _where(conf: cfg.ConfigOpts, field: str) -> str:
    group, name = FIELDS[field]
    try:
        loc = conf.get_location(name, group)
    except cfg.ConfigFileValueError:
        raw = _raw(conf, field)
        if raw is None:
            return ""
        loc = raw[1]
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
        raw = _raw(conf, field)
        if raw is not None:
            return raw[0]  # out of range or not a choice: validation words it
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
        return None if value is None else base_type(_OPTS[FIELDS[field]])(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("%s = %s (passed to load_settings) is not valid: %s"
                                 % (option_name(field), shown(value), exc)) from exc


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
    validate(Checker(values, where))
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


def default_settings(**fields: Any) -> Settings:
    """Settings of every option at its default but ``fields`` (Settings
    field names, validated as in ``load_settings``), from a ConfigOpts of
    its own: no file, command line or environment is read and ``CONF`` is
    not touched. What tests and tools build a Settings with. Raises like
    ``load_settings``."""
    return load_settings(cfg.ConfigOpts(), **fields)


def parse_args(argv: Sequence[str], default_config_files: list[str] | None = None) -> Settings:
    """Parse ``argv`` (without the program name) into the global CONF and
    return its Settings.  Raises ConfigurationError on any bad file or value.

    Registers every option of ours on CONF (the generic ones too, where the
    program has not): for our own programs, which own CONF.
    """
    register_opts(CONF)
    parse(CONF, list(argv), project="nova", default_config_files=default_config_files)
    return load_settings(CONF)
