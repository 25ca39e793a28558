"""A host on this machine, made of real processes: a receiver and services.

Used by ``nova-rpc-zmq demo``, the functional tests and the benchmarks:
``LocalHost`` writes a nova.conf into its own temporary directory (IPC
directory, free port, matchmaker), starts ``nova-rpc-zmq-receiver`` and
sample services as child processes, and stops them all.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, IO


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: str,
                 env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")
        self.popen = subprocess.Popen((prefix or []) + argv, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Wait until the log holds ``text``; raise if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited with %s before %r:\n%s"
                                   % (self.name, self.popen.returncode, text,
                                      self.output()[-3000:]))
            time.sleep(0.02)
        raise RuntimeError("%s did not print %r within %.0fs:\n%s"
                           % (self.name, text, timeout, self.output()[-3000:]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal and reap; SIGKILL after ``timeout``. Returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL, 5)


class LocalHost:
    """One RPC host on this machine: a temp dir, a nova.conf, processes."""

    def __init__(self, host: str = "localhost", address: str = "127.0.0.1",
                 port: int | None = None, matchmaker: str = "localhost",
                 ringfile: str | None = None, extra: dict[str, Any] | None = None,
                 base_dir: str | None = None, netns: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="nrz-", dir=base_dir or "/tmp")
        self.host = host
        self.address = address
        self.port = port or free_port(address)
        self.netns = netns
        self.ipc_dir = os.path.join(self.dir, "ipc")
        self.conf_path = os.path.join(self.dir, "nova.conf")
        self.procs: list[Proc] = []
        self.options: dict[str, Any] = {
            "rpc_backend": "nova.rpc.impl_zmq",
            "rpc_zmq_host": host,
            "rpc_zmq_bind_address": address,
            "rpc_zmq_port": self.port,
            "rpc_zmq_ipc_dir": self.ipc_dir,
            "rpc_zmq_matchmaker": matchmaker,
            "rpc_zmq_health_port": 0,
        }
        self.ring_options: dict[str, Any] = {}
        if ringfile:
            self.ring_options["ringfile"] = ringfile
        self.options.update(extra or {})
        self.write_conf()

    def write_conf(self) -> None:
        lines = ["[DEFAULT]"]
        groups: dict[str, dict[str, Any]] = {}
        for key, value in self.options.items():
            if "." in key:
                group, name = key.split(".", 1)
                groups.setdefault(group, {})[name] = value
            else:
                lines.append("%s = %s" % (key, _ini(value)))
        if self.ring_options:
            groups.setdefault("matchmaker_ring", {}).update(self.ring_options)
        for group, values in groups.items():
            lines.append("[%s]" % group)
            lines += ["%s = %s" % (k, _ini(v)) for k, v in values.items()]
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def enable_curve(self) -> Any:
        """Turn CURVE on for this host: a new key pair in its directory, its
        public half in its own keys dir (so the host accepts itself), the
        options written to its nova.conf. Returns the KeyPair."""
        from nova_rpc_zmq.security import generate, write_keypair, write_public
        keys = os.path.join(self.dir, "keys")
        pair = generate()
        write_keypair(os.path.join(self.dir, "host.key"), pair)
        write_public(os.path.join(keys, "%s.key" % self.host), pair.public)
        self.options.update(rpc_zmq_curve=True,
                            rpc_zmq_curve_key_file=os.path.join(self.dir, "host.key"),
                            rpc_zmq_curve_keys_dir=keys)
        self.write_conf()
        return pair

    def settings(self, **overrides: Any) -> Any:
        """Settings for an in-process client of this host."""
        from nova_rpc_zmq import config
        config.reset()
        config.CONF(["--config-file", self.conf_path], project="nova")
        return config.load_settings(config.CONF, **overrides)

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def start_receiver(self, timeout: float = 20.0, *extra: str) -> Proc:
        proc = Proc("receiver@" + self.host,
                    [sys.executable, "-m", "nova_rpc_zmq.cli.receiver",
                     "--config-file", self.conf_path, *extra],
                    os.path.join(self.dir, "receiver.log"), env=self._env(),
                    prefix=self._prefix())
        self.procs.append(proc)
        proc.wait_for_line("listening on", timeout)
        return proc

    def start_service(self, name: str, topic: str = "demo",
                      eventlet: bool = False, timeout: float = 30.0,
                      wait: bool = True) -> Proc:
        argv = [sys.executable, "-m", "nova_rpc_zmq.cli.demo_service",
                "--config-file", self.conf_path, "--name", name,
                "--topic", topic]
        if eventlet:
            argv.append("--eventlet")
        proc = Proc("service %s@%s" % (name, self.host), argv,
                    os.path.join(self.dir, "service-%s.log" % name),
                    env=self._env(), prefix=self._prefix())
        self.procs.append(proc)
        if wait:
            proc.wait_for_line("READY", timeout)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _ini(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
