"""The om8zmq peer: oslo.messaging 8.1's own zmq driver, in its own venv.

oslo.messaging removed its zmq driver after 8.x; the last one we compare
with is 8.1's.  It cannot share the suite's venv (the suite runs a current
oslo.messaging, and our package claims the ``zmq`` driver name there), so
``venv_python()`` makes ``.venv-om8zmq`` beside the checkout on first use
(``oslo.messaging==8.1.*``, pyzmq, redis; ``pip`` needs the package index)
and reuses it afterwards.  The servers and the client are the generic
oslo.messaging programs of ``benchmarks.rabbit``, run there with
``--om8-shims``.

8.1's zmq driver finds servers through a matchmaker; its dummy one lives
in one process, so ``RedisServer`` starts a private ``redis-server`` on a
free loopback port (no persistence, its own temp dir), and the transport
URL is ``zmq+redis://127.0.0.1:<port>``.  ``config_text()`` is the
``[oslo_messaging_zmq]`` section: static direct connections on 127.0.0.1,
as our driver runs them.

``om8_env()`` runs the programs with only a directory holding a link to
``benchmarks/`` on their path (and ``PYTHONSAFEPATH``): the checkout's root
holds ``nova_rpc_zmq.egg-info``, whose ``zmq`` entry point would compete
with 8.1's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

VENV_NAME = ".venv-om8zmq"
REQUIREMENTS = ["oslo.messaging==8.1.*", "pyzmq", "redis"]
#: written into the venv once everything installed and imports
READY_MARK = "om8zmq-ready"
#: seconds ``pip install`` may take (it downloads about 40 packages)
INSTALL_TIMEOUT = 900.0
#: seconds ``redis-server`` may take to accept connections
REDIS_START_TIMEOUT = 30.0
#: the version prefix the venv must import
VERSION_PREFIX = "8.1."


def venv_dir(root: str) -> str:
    """Where the venv lives: ``<checkout>/.venv-om8zmq`` (git-ignored)."""
    return os.path.join(root, VENV_NAME)


def _check(python: str, env: dict[str, str]) -> str:
    """The version 8.1 reports with the shims applied; raises
    RuntimeError with the output when it does not import."""
    code = ("import benchmarks.rabbit as r; r.apply_om8_shims(); "
            "from importlib.metadata import version; "
            "print(version('oslo.messaging'))")
    done = subprocess.run([python, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError("oslo.messaging 8.1 does not import in %s: %s"
                           % (python, (done.stderr or done.stdout)[-1500:]))
    return done.stdout.strip()


def venv_python(root: str, env: dict[str, str],
                log: Any = print) -> tuple[str | None, str]:
    """(the venv's python, '8.1.x') or (None, why not): made with pip on
    first use, checked on every use (blocks up to INSTALL_TIMEOUT)."""
    venv = venv_dir(root)
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, READY_MARK)):
        log("making %s (%s) ..." % (venv, " ".join(REQUIREMENTS)))
        try:
            if not os.path.exists(python):
                subprocess.run([sys.executable, "-m", "venv", venv],
                               check=True, capture_output=True, timeout=300)
            done = subprocess.run(
                [python, "-m", "pip", "install", "-q"] + REQUIREMENTS,
                capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, "could not make %s: %s" % (venv, exc)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            return None, ("pip could not install %s into %s: %s"
                          % (" ".join(REQUIREMENTS), venv,
                             tail[-1] if tail else done.returncode))
    try:
        version = _check(python, env)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return None, str(exc).splitlines()[0]
    if not version.startswith(VERSION_PREFIX):
        return None, ("%s holds oslo.messaging %s, not %sx: remove it to "
                      "have it made again" % (venv, version, VERSION_PREFIX))
    with open(os.path.join(venv, READY_MARK), "w") as f:
        f.write(version + "\n")
    return python, version


def om8_env(base_dir: str, root: str) -> dict[str, str]:
    """The environment of the om8zmq programs: ``benchmarks`` importable
    through a link in ``base_dir``, nothing else of the checkout."""
    path = os.path.join(base_dir, "om8zmq-path")
    os.makedirs(path, exist_ok=True)
    link = os.path.join(path, "benchmarks")
    if not os.path.islink(link):
        os.symlink(os.path.join(root, "benchmarks"), link)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = path
    # no working directory (the checkout's root) at the head of sys.path
    env["PYTHONSAFEPATH"] = "1"
    return env


def config_text() -> str:
    """8.1's zmq options for one host: direct connections on 127.0.0.1."""
    return ("[oslo_messaging_zmq]\n"
            "rpc_zmq_host = 127.0.0.1\n"
            "rpc_zmq_bind_address = 127.0.0.1\n"
            "use_pub_sub = false\n"
            "use_router_proxy = false\n"
            "use_dynamic_connections = false\n")


def redis_problem() -> str | None:
    """Why the private Redis cannot start here, or None."""
    if shutil.which("redis-server") is None:
        return ("redis-server not found (8.1's zmq driver needs a Redis "
                "matchmaker): apt-get install redis-server")
    return None


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 and a free port, without
    persistence, in a temp dir under ``base_dir``."""

    def __init__(self, base_dir: str) -> None:
        from nova_rpc_zmq.testing import free_port
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=base_dir)
        self.port = free_port()
        self.url = "zmq+redis://127.0.0.1:%d" % self.port
        self.proc: Any = None

    def start(self) -> None:
        """Start it; raises RuntimeError with the log tail when it does not
        accept connections within REDIS_START_TIMEOUT."""
        from nova_rpc_zmq.testing import Proc
        self.proc = Proc("redis-server",
                         [shutil.which("redis-server") or "redis-server",
                          "--port", str(self.port), "--bind", "127.0.0.1",
                          "--dir", self.dir, "--save", "", "--appendonly",
                          "no", "--daemonize", "no"],
                         os.path.join(self.dir, "redis.log"))
        self.proc.wait_for_port("127.0.0.1", self.port, REDIS_START_TIMEOUT)

    def stop(self) -> None:
        """Stop it and remove its dir."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

