"""Essex-era flagfiles, read as oslo.config INI files.

One ``--flag=value`` a line, ``--flag`` / ``--noflag`` for booleans, ``#``
comments, ``--flagfile=OTHER`` includes. A flagfile given as a config file
is translated into a private INI file first (``FlagfileTranslator``); a
malformed line, a bad value of one of our flags or an unknown flag that
looks like ours (``--rpc_zmq_...``, near misses such as ``--rpc_zmq_prot``)
raises ConfigurationError naming the original file and line. The logging
flags ``--logdir``, ``--logfile``, ``--verbose`` (and ``--debug``,
``--use_syslog``) become oslo.log's options; other flags (Nova's
``--sql_connection`` ...) are ignored as in INI files, so an unchanged Essex
nova.conf is read.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile

from oslo_config import cfg

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.options import FLAGS, LOG_BOOL_FLAGS, LOG_FLAGS, OPTS, base_type

_FLAG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_INCLUDE_DEPTH = 8


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
        if not is_flagfile(path):
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


def is_flagfile(path: str) -> bool:
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
    close = difflib.get_close_matches(name, list(FLAGS), n=1, cutoff=0.85)
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
        if name in LOG_FLAGS or (name[:2] == "no" and name[2:] in LOG_BOOL_FLAGS
                                  and not eq):
            log_name = LOG_FLAGS.get(name) or LOG_FLAGS[name[2:]]
            if name in LOG_BOOL_FLAGS or name[2:] in LOG_BOOL_FLAGS:
                value = value if eq else ("false" if name[:2] == "no" else "true")
            sections.setdefault(None, {})[log_name] = value
            continue
        negated = not eq and name not in FLAGS and name[:2] == "no" and name[2:] in FLAGS
        if negated:
            name = name[2:]
        if name not in FLAGS:
            why = _looks_like_ours(name)
            if why:
                raise fail("unknown flag --%s (%s)" % (name, why),
                           "fix the name or delete the line")
            continue  # another project's flag: ignored, as in INI files
        group, opt_name = FLAGS[name]
        opt = OPTS[(group, opt_name)]
        is_bool = isinstance(opt, cfg.BoolOpt)
        if negated and not is_bool:
            raise fail("--no%s: only boolean flags can be negated" % name,
                       "write --%s=VALUE" % name)
        if not eq:
            if not is_bool:
                raise fail("--%s needs a value" % name, "write --%s=VALUE" % name)
            value = "false" if negated else "true"
        try:
            # the range and choices are checked (and worded) with the
            # other values by config
            base_type(opt)(value)
        except ValueError as exc:
            raise fail("invalid value %r for --%s (%s)" % (value, name, exc),
                       "fix the value (see the option's help)") from exc
        sections.setdefault(group, {})[opt_name] = value
    return sections
