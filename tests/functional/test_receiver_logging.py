"""The receiver logs through oslo.log: every option changes where or how.

Each test starts a real receiver process (``LocalHost``) with one logging
option, on the command line or in its nova.conf, and looks at where the
lines went: a file, a directory, a Unix datagram socket standing in for
syslog, JSON lines. The last one floods the receiver with 200,000 hostile
frames and counts the log lines they cost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import metrics
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.support import scaled, wait_for


@pytest.fixture
def make_host() -> Iterator:
    """Hosts with a health port and extra options; all stopped at the end."""
    hosts: list[LocalHost] = []

    def make(**extra: object) -> LocalHost:
        options = {"rpc_zmq_health_port": free_port()}
        options.update(extra)
        h = LocalHost(extra=options)
        hosts.append(h)
        return h
    yield make
    for h in hosts:
        h.stop()


def _get(h: LocalHost, path: str) -> str:
    url = "http://127.0.0.1:%d%s" % (h.options["rpc_zmq_health_port"], path)
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        return resp.read().decode()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _wait_health(h: LocalHost) -> None:
    def up() -> bool:
        try:
            return _get(h, "/health") == "OK\n"
        except OSError:
            return False
    wait_for(up, 20, what="the health page")


@pytest.mark.timeout(120)
def test_log_file_on_the_command_line(make_host) -> None:
    """``--log-file`` (a usage error before oslo.log) writes there."""
    h = make_host()
    path = os.path.join(h.dir, "cli.log")
    h.start_receiver(scaled(30), "--log-file", path)
    wait_for(lambda: "receiver listening on" in _read(path), 10,
             what="the start line in --log-file")
    # stderr/stdout keeps only the program's own line, not the log
    assert "receiver listening on" not in h.procs[0].output()


@pytest.mark.timeout(120)
def test_log_file_and_debug_in_nova_conf(make_host) -> None:
    """``log_file`` in nova.conf writes there; ``debug = true`` adds DEBUG
    lines (a health request is logged at DEBUG only)."""
    quiet = make_host()
    quiet_path = os.path.join(quiet.dir, "quiet.log")
    quiet.options["log_file"] = quiet_path
    quiet.write_conf()
    quiet.start_receiver(scaled(30))
    loud = make_host()
    loud_path = os.path.join(loud.dir, "loud.log")
    loud.options.update(log_file=loud_path, debug=True)
    loud.write_conf()
    loud.start_receiver(scaled(30))
    for h in (quiet, loud):
        _wait_health(h)
    wait_for(lambda: "GET /health" in _read(loud_path), 10,
             what="a DEBUG line with debug = true")
    assert " DEBUG " in _read(loud_path)
    assert "receiver listening on" in _read(quiet_path)
    assert " DEBUG " not in _read(quiet_path)


@pytest.mark.timeout(120)
def test_log_dir_in_nova_conf(make_host) -> None:
    """``log_dir`` alone: a file named after the program in that directory."""
    h = make_host()
    logdir = os.path.join(h.dir, "logs")
    os.mkdir(logdir)
    h.options["log_dir"] = logdir
    h.write_conf()
    h.start_receiver(scaled(30))
    wait_for(lambda: os.listdir(logdir), 10, what="a file in log_dir")
    (name,) = os.listdir(logdir)
    assert name.endswith(".log")
    wait_for(lambda: "receiver listening on" in _read(os.path.join(logdir, name)),
             10, what="the start line in log_dir")


@pytest.mark.timeout(120)
def test_essex_flagfile_logdir_and_verbose(make_host) -> None:
    """An Essex flagfile's ``--logdir`` and ``--verbose`` are oslo.log's
    ``log_dir`` and ``debug``."""
    h = make_host()
    logdir = os.path.join(h.dir, "essex-logs")
    os.mkdir(logdir)
    flags = ["--%s=%s" % (k, v) for k, v in h.options.items()]
    flags += ["--logdir=%s" % logdir, "--verbose"]
    with open(h.conf_path, "w") as f:
        f.write("\n".join(flags) + "\n")
    h.start_receiver(scaled(30))
    _wait_health(h)

    def text() -> str:
        return "".join(_read(os.path.join(logdir, n)) for n in os.listdir(logdir))
    wait_for(lambda: "GET /health" in text(), 10,
             what="DEBUG lines in --logdir")


@pytest.mark.timeout(120)
def test_use_json(make_host) -> None:
    """``use_json = true``: every line is a JSON object."""
    h = make_host()
    path = os.path.join(h.dir, "json.log")
    h.options.update(log_file=path, use_json=True)
    h.write_conf()
    h.start_receiver(scaled(30))
    wait_for(lambda: "receiver listening on" in _read(path), 10,
             what="the start line")
    records = [json.loads(line) for line in _read(path).splitlines() if line]
    assert any("receiver listening on" in r["message"] for r in records)
    assert all(r["levelname"] in ("DEBUG", "INFO", "WARNING", "ERROR")
               for r in records)


def _syslog_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock


def _datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode("utf-8", "replace"))
        except socket.timeout:
            return out


@pytest.mark.timeout(120)
def test_log_config_append_to_a_syslog_socket(make_host) -> None:
    """``log_config_append``: a logging config file of the operator's, here
    a SysLogHandler to the test's own Unix datagram socket."""
    h = make_host()
    address = os.path.join(h.dir, "syslog.sock")
    sock = _syslog_socket(address)
    try:
        ini = os.path.join(h.dir, "logging.conf")
        with open(ini, "w") as f:
            f.write("[loggers]\nkeys=root\n[handlers]\nkeys=syslog\n"
                    "[formatters]\nkeys=plain\n"
                    "[logger_root]\nlevel=INFO\nhandlers=syslog\n"
                    "[handler_syslog]\nclass=handlers.SysLogHandler\n"
                    "args=(%r, handlers.SysLogHandler.LOG_DAEMON)\n"
                    "formatter=plain\n"
                    "[formatter_plain]\nformat=nova-rpc-zmq: %%(message)s\n"
                    % address)
        h.options["log_config_append"] = ini
        h.write_conf()
        h.start_receiver(scaled(30))
        got: list[str] = []
        wait_for(lambda: got.extend(_datagrams(sock)) or any(
            "receiver listening on" in d for d in got), 10,
            what="the start line on the syslog socket")
        # <facility * 8 + severity>: daemon (3), info (6)
        assert any(d.startswith("<30>nova-rpc-zmq: receiver listening on")
                   for d in got), got
    finally:
        sock.close()


def _unshare_usable() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.timeout(120)
def test_use_syslog_reaches_dev_log(make_host) -> None:
    """``use_syslog = true`` writes to /dev/log, whatever the platform's
    syslog daemon: the receiver runs in a mount namespace of its own where
    /dev/log is the test's Unix datagram socket."""
    if not _unshare_usable():
        pytest.skip("needs root and unshare(1) for a private /dev/log")
    h = make_host()
    address = os.path.join(h.dir, "devlog.sock")
    sock = _syslog_socket(address)
    olddev = os.path.join(h.dir, "olddev")
    os.mkdir(olddev)
    try:
        h.options.update(use_syslog=True, syslog_log_facility="LOG_LOCAL3")
        h.write_conf()
        # a tmpfs over /dev in the namespace only (/dev/log may not exist
        # here to bind over), the usual devices bound back, then our socket
        script = ("mount --make-rprivate / && mount --bind /dev %(old)s && "
                  "mount -t tmpfs tmpfs /dev && "
                  "for d in null zero random urandom; do touch /dev/$d && "
                  "mount --bind %(old)s/$d /dev/$d; done && touch /dev/log && "
                  "mount --bind %(sock)s /dev/log && exec \"$@\""
                  % {"old": olddev, "sock": address})
        h._prefix = lambda: ["unshare", "--mount", "sh", "-c", script, "sh"]  # type: ignore[method-assign]
        h.start_receiver(scaled(30))
        got: list[str] = []
        wait_for(lambda: got.extend(_datagrams(sock)) or any(
            "receiver listening on" in d for d in got), 10,
            what="the start line on /dev/log")
        # local3 (19) * 8 + info (6)
        assert any(d.startswith("<158>") and "receiver listening on" in d
                   for d in got), got
    finally:
        sock.close()


def _journal_fields(datagram: bytes) -> dict[str, str]:
    """One entry of the journal's native protocol: ``KEY=value`` lines, or
    ``KEY``, a 64-bit little-endian length and the bytes for a value that
    holds a newline."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, sep, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            rest = after
        else:
            size = int.from_bytes(after[:8], "little")
            key, value = line, after[8:8 + size]
            rest = after[8 + size + 1:]
        fields[key.decode()] = value.decode("utf-8", "replace")
    return fields


@pytest.mark.timeout(120)
def test_use_journal_writes_to_the_journal_socket(make_host) -> None:
    """``use_journal = true`` sends each line to journald's socket with its
    priority and the program's name: the receiver runs in a mount namespace
    of its own where /run/systemd/journal/socket is the test's Unix
    datagram socket (libsystemd, which oslo.log's handler calls, has that
    path built in)."""
    pytest.importorskip("systemd.journal",
                        reason="systemd-python (the journal bindings) absent")
    if not _unshare_usable():
        pytest.skip("needs root and unshare(1) for a private journal socket")
    h = make_host()
    address = os.path.join(h.dir, "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    try:
        h.options.update(use_journal=True)
        h.write_conf()
        # a tmpfs over /run in the namespace only, then our socket where
        # journald's would be
        script = ("mount --make-rprivate / && mount -t tmpfs tmpfs /run && "
                  "mkdir -p /run/systemd/journal && "
                  "touch /run/systemd/journal/socket && "
                  "mount --bind %s /run/systemd/journal/socket && exec \"$@\""
                  % address)
        h._prefix = lambda: ["unshare", "--mount", "sh", "-c", script, "sh"]  # type: ignore[method-assign]
        # its own "listening on" line still goes to standard output
        proc = h.start_receiver(scaled(30))
        entries: list[dict[str, str]] = []

        def started() -> bool:
            while True:
                try:
                    entries.append(_journal_fields(sock.recv(1 << 20)))
                except socket.timeout:
                    break
            return any("receiver listening on" in e.get("MESSAGE", "")
                       for e in entries)
        wait_for(started, 20, what="the start line on the journal socket")
        line = next(e for e in entries
                    if "receiver listening on" in e.get("MESSAGE", ""))
        assert line["PRIORITY"] == "6", line  # info
        assert line["LOGGER_NAME"].startswith("nova_rpc_zmq.receiver"), line
        assert line["SYSLOG_IDENTIFIER"], line
        # the journal took the log line: not on standard error as well
        assert "receiver listening on" not in proc.output()
    finally:
        sock.close()


@pytest.mark.timeout(120)
def test_use_journal_without_bindings_says_what_to_install(make_host) -> None:
    """Without the systemd Python bindings (a package that cannot be
    imported, first on the path), ``use_journal = true`` stops the receiver
    at start-up with one line that names the option and the fix."""
    h = make_host(use_journal=True)
    h.write_conf()
    hide = os.path.join(h.dir, "nosystemd", "systemd")
    os.makedirs(hide)
    with open(os.path.join(hide, "__init__.py"), "w") as f:
        f.write("raise ImportError('the systemd bindings are not installed')\n")
    env = h._env()
    env["PYTHONPATH"] = os.path.dirname(hide) + os.pathsep + env["PYTHONPATH"]
    h._env = lambda: env  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="exited with 2") as err:
        h.start_receiver(scaled(30))
    out = str(err.value)
    assert "use_journal = true" in out and "systemd-python" in out, out
    assert "Traceback" not in out, out


@pytest.mark.timeout(300)
def test_flood_of_hostile_frames_costs_few_log_lines(make_host) -> None:
    """200,000 hostile frames from one peer: every one counted, fewer than
    100 log lines (the first at once, then one summary per interval)."""
    h = make_host()
    path = os.path.join(h.dir, "flood.log")
    h.options["log_file"] = path
    h.write_conf()
    h.start_receiver(scaled(30))
    _wait_health(h)
    lines_before = len(_read(path).splitlines())
    total = 200000
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, int(scaled(60) * 1000))
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect("tcp://127.0.0.1:%d" % h.port)
    try:
        for i in range(total):
            # one frame: too_few_frames; every 10th a bad topic instead
            if i % 10:
                sock.send(b"x")
            else:
                sock.send_multipart([b"0", b"../evil", b"{}"])
    finally:
        sock.close()
        ctx.term()
    key = 'nova_rpc_zmq_receiver_dropped_total{reason="%s"}'

    def dropped() -> float:
        values = metrics.parse(_get(h, "/metrics"))
        return values.get(key % "too_few_frames", 0) + values.get(key % "bad_topic", 0)
    wait_for(lambda: dropped() >= total, 120, interval=0.5,
             what="200,000 drops counted")
    added = len(_read(path).splitlines()) - lines_before
    assert 1 <= added < 100, added
