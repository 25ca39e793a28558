"""Ports, deadlines and child processes for tests, the demo and benchmarks.

Nothing here waits without a deadline: ``wait_for`` polls a predicate,
``Proc.wait_for_line`` a log file and ``wait_for_port`` a TCP port, each
until its (scaled) time is up, then raises with what was seen. Processes
run in their own session with their output in a log file; ``stop`` sends
SIGTERM, then SIGKILL when the process overstays.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import IO, Any, Callable, Sequence

#: One environment factor scales every timeout in tests (slow machines).
TIMEOUT_SCALE = float(os.environ.get("NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """``seconds`` multiplied by NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0,
             interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a true value or the (scaled)
    deadline passes; returns the value or raises AssertionError."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (scaled(timeout), what))
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (another process may take it before
    the caller binds it: bind soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def checkout_root() -> str:
    """The directory holding ``nova_rpc_zmq/`` (and, in a checkout,
    ``tests/`` and ``benchmarks/``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH, so
    a child imports the same ``nova_rpc_zmq`` (and ``tests``, ``benchmarks``)."""
    env = dict(os.environ)
    # no empty entry when PYTHONPATH is unset: Python reads one as the
    # child's working directory
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = checkout_root() + (os.pathsep + rest if rest else "")
    env.update(extra or {})
    return env


def receiver_argv(conf_path: str, *extra: str) -> list[str]:
    """The command line of a receiver reading ``conf_path``."""
    return [sys.executable, "-m", "nova_rpc_zmq.cli.receiver",
            "--config-file", conf_path, *extra]


def service_argv(conf_path: str, name: str, topic: str = "demo",
                 eventlet: bool = False,
                 module: str = "nova_rpc_zmq.cli.demo_service") -> list[str]:
    """The command line of a sample service (``module``: the demo's, or
    ``benchmarks.service``) consuming ``topic`` and ``<topic>_<name>``."""
    argv = [sys.executable, "-m", module, "--config-file", conf_path,
            "--name", name, "--topic", topic]
    return argv + ["--eventlet"] if eventlet else argv


def stop_process(popen: subprocess.Popen, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int | None:
    """Send ``sig`` to ``popen`` and reap it; SIGKILL after ``timeout``
    seconds. Returns the exit code (None if it could not be reaped)."""
    if popen.poll() is None:
        try:
            popen.send_signal(sig)
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                return None
        except ProcessLookupError:
            pass
    return popen.returncode


class Proc:
    """A child process in its own session whose output goes to a log file.

    Starts at once; ``prefix`` goes before ``argv`` (``ip netns exec NS``).
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: str,
                 env: dict[str, str] | None = None,
                 prefix: Sequence[str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")
        try:
            self.popen = subprocess.Popen(list(prefix or []) + list(argv), stdout=self._log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited with %s before %s:\n%s"
                                   % (self.name, self.popen.returncode, what,
                                      self.output()[-3000:]))
            time.sleep(0.02)
        raise RuntimeError("%s did not reach %s within %.0fs:\n%s"
                           % (self.name, what, timeout, self.output()[-3000:]))

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Wait until the log holds ``text``; raise RuntimeError with the
        log's tail if the process exits first or ``timeout`` passes."""
        self._until(lambda: text in self.output(), "printing %r" % text, timeout)

    def wait_for_port(self, host: str, port: int, timeout: float) -> None:
        """Wait until ``host:port`` accepts TCP connections; raise like
        ``wait_for_line``."""
        self._until(lambda: port_open(host, port), "listening on %s:%d" % (host, port),
                    timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal and reap; SIGKILL after ``timeout``. Returns the exit code."""
        code = stop_process(self.popen, sig, timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.stop(signal.SIGKILL, 5)
