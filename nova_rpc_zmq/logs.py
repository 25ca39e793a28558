"""Logging of every program of ours, through oslo.log, as OpenStack daemons do.

``register(conf)`` puts oslo.log's options (``debug``, ``log_file`` /
``--log-file``, ``log_dir``, ``use_syslog``, ``use_journal``, ``use_json``,
``log_config_append`` ...) on the configuration; it must run before the
command line is parsed, as they include command-line options.
``setup(conf)`` then sets the root logger up from them. ``parse_args`` does
both around ``config.parse_args``: what the receiver, the console scripts
and the demo service call. With none of the options set, lines go to
standard output, as oslo.log does.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

from oslo_config import cfg
from oslo_log import log

from nova_rpc_zmq.errors import ConfigurationError

#: The name oslo.log uses for this program (syslog ident, JSON "project").
PROJECT = "nova-rpc-zmq"
#: Third-party loggers kept quiet below WARNING, on top of oslo.log's list.
QUIET = ("kazoo.client=WARN", "kazoo.protocol.connection=WARN",
         "sqlalchemy=WARN", "pg8000=WARN")


def register(conf: cfg.ConfigOpts) -> None:
    """Register oslo.log's options on ``conf`` (idempotent).

    Call it before parsing: oslo.log's options include command-line ones.
    A ``conf`` parsed already is cleared first (``parse_args`` parses again).
    """
    if "log_config_append" in conf:
        return  # registered by us before, or by the host program (Nova)
    try:
        log.register_options(conf)
    except cfg.ArgsAlreadyParsedError:
        # parsed before (a program run twice in one process): the parse
        # that follows reads everything again anyway
        conf.clear()
        log.register_options(conf)
    log.set_defaults(default_log_levels=list(log.get_default_log_levels())
                     + list(QUIET))


#: What ``setup`` was last called with, for ``reload_logging``.
_current: dict[str, Any] = {}


def setup(conf: cfg.ConfigOpts, program: str = PROJECT) -> None:
    """Set the root logger up from ``conf`` (parsed, ``register`` done).

    Replaces the root logger's handlers; may be called again. With no
    destination configured, lines go to standard error (oslo.log would use
    standard output, which our programs keep for their results, such as
    the receiver's "listening on" line). Raises ConfigurationError naming
    the option for a bad ``log_config_append``, ``syslog_log_facility`` or
    an unwritable ``log_file`` / ``log_dir``.
    """
    root = logging.getLogger()
    # oslo.log removes every root handler; a test harness's capture (pytest
    # runs our CLIs in-process) must survive it
    harness = [h for h in root.handlers
               if type(h).__module__.startswith("_pytest")]
    try:
        log.setup(conf, program)
    except log.LogConfigError as exc:
        raise ConfigurationError("%s; fix log_config_append" % exc) from exc
    except TypeError as exc:  # oslo.log's word for a bad syslog facility
        raise ConfigurationError("%s; fix syslog_log_facility" % exc) from exc
    except OSError as exc:
        raise ConfigurationError(
            "cannot open the log file %s (%s); fix log_file / log_dir or the "
            "directory's permissions" % (exc.filename, exc.strerror)) from exc
    except RuntimeError as exc:  # oslo.log's word for journal bindings missing
        if not conf.use_journal:
            raise
        raise ConfigurationError(
            "use_journal = true but the systemd journal cannot be used (%s); "
            "install the systemd Python bindings (systemd-python, or the "
            "distribution's python3-systemd), or set use_journal = false: "
            "under systemd, standard error reaches the journal too" % exc) from exc
    for handler in harness:
        if handler not in root.handlers:
            root.addHandler(handler)
    _current.update(conf=conf, program=program)
    if not (conf.log_config_append or conf.log_file or conf.log_dir
            or conf.use_stderr or conf.use_journal):
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) \
                    and getattr(handler, "stream", None) is sys.stdout:
                stderr = _StderrHandler()
                stderr.setFormatter(handler.formatter)
                root.removeHandler(handler)
                root.addHandler(stderr)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a
    redirect or a test's capture made after ``setup`` is honoured)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


def reload_logging() -> None:
    """Re-read the configuration files and set logging up again (SIGHUP):
    a new ``debug``, a rotated log file, an edited ``log_config_append``.
    A no-op before ``setup``. Raises ConfigurationError like ``setup``."""
    conf = _current.get("conf")
    if conf is None:
        return
    # False (and a log line) when a file is now unreadable: keep what we had
    conf.reload_config_files()
    setup(conf, _current["program"])


def parse_args(argv: Sequence[str], program: str = PROJECT,
               default_config_files: list[str] | None = None) -> Any:
    """``config.parse_args`` with logging set up from the same files and
    command line; returns the Settings. Raises ConfigurationError."""
    from nova_rpc_zmq import config
    register(config.CONF)
    settings = config.parse_args(argv, default_config_files=default_config_files)
    setup(config.CONF, program)
    return settings
