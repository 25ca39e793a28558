"""The package as an operator installs it (issue 12, section 6).

``python -m build`` makes an sdist and, from it, a wheel; the wheel goes
into a fresh virtual environment (``python -m venv``, not editable, core
dependencies only, from PyPI or pip's cache) and everything below runs
from there, in a directory outside the checkout: ``--version`` of both
console scripts, a servicegroup driver whose extra is missing, the
receiver with a nova.conf of its own until it listens, and the
all-in-one demo.
"""

from __future__ import annotations

import email.message
import email.parser
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import Iterator, NamedTuple

import pytest

import nova_rpc_zmq
from tests.support import free_port, scaled, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSION = nova_rpc_zmq.__version__
#: what `pip install nova-rpc-zmq` brings, without extras
CORE = {"pyzmq", "eventlet", "greenlet", "oslo.config", "oslo.log", "orjson"}
#: extra -> a distribution it installs, each absent from the core install
BACK_ENDS = {"zookeeper": "kazoo", "memcached": "python-memcached",
             "db": "SQLAlchemy", "redis": "redis"}


class Installed(NamedTuple):
    """The built artefacts and the virtual environment they went into."""

    sdist: str
    wheel: str
    venv: str
    work: str  # a scratch directory outside the checkout (the cwd of runs)

    def bin(self, name: str) -> str:
        """Path of ``name`` in the environment's bin directory."""
        return os.path.join(self.venv, "bin", name)


def _env() -> dict[str, str]:
    """The environment of every command here: nothing that would put the
    checkout on the path (PYTHONPATH) or select another virtualenv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], cwd: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` to completion (scaled ``timeout``); its output, or an
    AssertionError with the output when it failed."""
    proc = subprocess.run(argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          timeout=scaled(timeout))
    assert proc.returncode == 0, "%s exited %s:\n%s" % (
        " ".join(argv), proc.returncode, proc.stdout[-4000:])
    return proc


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """Build the sdist and the wheel into a temp dir, install the wheel
    into a new venv (pip's cache is reused: only the first run downloads),
    remove it all afterwards."""
    tmp = tempfile.mkdtemp(prefix="nrz-wheel-")
    try:
        dist = os.path.join(tmp, "dist")
        # no --wheel: build the sdist, then the wheel from the unpacked
        # sdist, so a file missing from the sdist breaks the wheel too
        _run([sys.executable, "-m", "build", "--outdir", dist, ROOT],
             cwd=tmp, timeout=120)
        sdists = [f for f in os.listdir(dist) if f.endswith(".tar.gz")]
        wheels = [f for f in os.listdir(dist) if f.endswith(".whl")]
        assert len(sdists) == 1 and len(wheels) == 1, os.listdir(dist)
        venv = os.path.join(tmp, "venv")
        # without its own pip (ensurepip is slow): this process's pip
        # installs into it through --python
        _run([sys.executable, "-m", "venv", "--without-pip", venv],
             cwd=tmp, timeout=60)
        wheel = os.path.join(dist, wheels[0])
        _run([sys.executable, "-m", "pip", "--python",
              os.path.join(venv, "bin", "python"), "install", "-q", wheel],
             cwd=tmp, timeout=180)
        work = os.path.join(tmp, "work")
        os.mkdir(work)
        yield Installed(os.path.join(dist, sdists[0]), wheel, venv, work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _wheel_metadata(wheel: str) -> tuple[email.message.Message, str]:
    """METADATA (parsed) and entry_points.txt of ``wheel``."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.split("/")[0] for n in names
                    if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(
            zf.read(info + "/METADATA").decode())
        entry_points = zf.read(info + "/entry_points.txt").decode()
        assert info + "/licenses/LICENSE" in names, names
        assert not [n for n in names if n.startswith("tests/")], names
    return meta, entry_points


def test_wheel_metadata_has_one_version_extras_and_entry_points(
        installed: Installed) -> None:
    meta, entry_points = _wheel_metadata(installed.wheel)
    assert meta["Name"] == "nova-rpc-zmq"
    assert meta["Version"] == VERSION
    assert os.path.basename(installed.wheel).startswith(
        "nova_rpc_zmq-%s-" % VERSION)
    assert meta["Requires-Python"] == ">=3.9"
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("Classifier")
    requires = meta.get_all("Requires-Dist")
    core = {r.split(">")[0].split("=")[0].strip() for r in requires
            if "extra ==" not in r}
    assert core == CORE
    for extra, dist in BACK_ENDS.items():
        assert any(r.startswith(dist) and 'extra == "%s"' % extra in r
                   for r in requires), (extra, requires)
    for extra in ("all", "test", "bench", "rabbit"):
        assert extra in meta.get_all("Provides-Extra")
    for line in ("nova-rpc-zmq = nova_rpc_zmq.cli.main:main",
                 "nova-rpc-zmq-receiver = nova_rpc_zmq.cli.receiver:main",
                 "nova_rpc_zmq = nova_rpc_zmq.opts:list_opts"):
        assert line in entry_points
    with tarfile.open(installed.sdist) as tf:
        base = {n.split("/", 1)[-1] for n in tf.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml"} <= base


def test_installed_package_is_the_wheel_with_core_dependencies_only(
        installed: Installed) -> None:
    probe = (
        "import importlib.metadata as md, nova_rpc_zmq\n"
        "print(nova_rpc_zmq.__file__)\n"
        "print(md.version('nova-rpc-zmq'))\n"
        "for d in %r:\n"
        "    try:\n"
        "        md.version(d); print('present', d)\n"
        "    except md.PackageNotFoundError:\n"
        "        pass\n" % sorted(BACK_ENDS.values()))
    out = _run([installed.bin("python"), "-c", probe], cwd=installed.work,
               timeout=30).stdout.splitlines()
    assert out[0].startswith(os.path.join(installed.venv, "lib")), out
    assert not out[0].startswith(ROOT + os.sep + "nova_rpc_zmq"), out
    assert out[1] == VERSION
    assert out[2:] == [], "back ends installed without their extra: %s" % out


def test_every_console_script_prints_the_version(installed: Installed) -> None:
    for script in ("nova-rpc-zmq", "nova-rpc-zmq-receiver"):
        out = _run([installed.bin(script), "--version"], cwd=installed.work,
                   timeout=30).stdout
        assert out.strip() == "%s %s" % (script, VERSION)


def test_a_driver_without_its_extra_names_the_extra(installed: Installed) -> None:
    probe = (
        "from nova_rpc_zmq import config\n"
        "from nova_rpc_zmq.errors import ConfigurationError\n"
        "from nova_rpc_zmq.servicegroup.drivers import load_driver\n"
        "s = config.default_settings(memcached_servers=['127.0.0.1:1'],\n"
        "                            service_down_time=60, report_interval=10)\n"
        "for name in ('zk', 'mc', 'db'):\n"
        "    try:\n"
        "        load_driver(name, s)\n"
        "    except ConfigurationError as exc:\n"
        "        print(name, exc)\n"
        "    else:\n"
        "        print(name, 'LOADED')\n")
    out = _run([installed.bin("python"), "-c", probe], cwd=installed.work,
               timeout=30).stdout.splitlines()
    lines = {line.split(" ", 1)[0]: line for line in out}
    for name, extra in (("zk", "zookeeper"), ("mc", "memcached"), ("db", "db")):
        assert "pip install 'nova-rpc-zmq[%s]'" % extra in lines[name], out


def test_receiver_from_the_wheel_listens_and_drains(installed: Installed) -> None:
    conf_dir = tempfile.mkdtemp(prefix="conf-", dir=installed.work)
    ipc_dir = os.path.join(conf_dir, "ipc")
    port = free_port()
    conf = os.path.join(conf_dir, "nova.conf")
    with open(conf, "w") as f:
        f.write("[DEFAULT]\n"
                "rpc_zmq_host = localhost\n"
                "rpc_zmq_bind_address = 127.0.0.1\n"
                "rpc_zmq_port = %d\n"
                "rpc_zmq_ipc_dir = %s\n"
                "rpc_zmq_matchmaker = localhost\n"
                "rpc_zmq_health_port = 0\n" % (port, ipc_dir))
    out_path = os.path.join(conf_dir, "receiver.out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [installed.bin("nova-rpc-zmq-receiver"), "--config-file", conf],
            cwd=installed.work, env=_env(), stdout=out,
            stderr=subprocess.STDOUT)
    try:
        def output() -> str:
            with open(out_path) as f:
                return f.read()
        wait_for(lambda: "listening on" in output() or proc.poll() is not None,
                 timeout=30, what="the receiver's 'listening on' line")
        assert "listening on tcp://127.0.0.1:%d" % port in output(), output()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(scaled(15)) == 0, output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_demo_runs_from_the_wheel(installed: Installed) -> None:
    out = _run([installed.bin("nova-rpc-zmq"), "demo", "--calls", "20"],
               cwd=installed.work, timeout=90).stdout
    assert "demo finished" in out, out
    assert "round robin reached: green, threads" in out, out
