"""An RPC host on this machine, made of real processes: a receiver and
sample services.

``LocalHost`` writes a nova.conf into its own temporary directory (IPC
directory, a free port, the matchmaker), starts ``nova-rpc-zmq-receiver``
and sample services as child processes, and stops them all. Several hosts
live side by side on loopback addresses (``loopback_address(n)`` is
127.0.0.n, which Linux routes to ``lo`` without any set-up), each with a
receiver of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from nova_rpc_zmq.testing.procs import (Proc, child_env, free_port, receiver_argv,
                                        service_argv)

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings
    from nova_rpc_zmq.security import KeyPair


def loopback_address(n: int) -> str:
    """127.0.0.n: the address of the n-th local host (1 to 254)."""
    if not 1 <= n <= 254:
        raise ValueError("loopback host number %r is not between 1 and 254" % n)
    return "127.0.0.%d" % n


class LocalHost:
    """One RPC host on this machine: a temp dir, a nova.conf, processes.

    ``extra`` holds more nova.conf options, ``{"name": value}`` for
    [DEFAULT] and ``{"group.name": value}`` for a group. Not thread-safe;
    ``stop`` ends every process and removes the directory.
    """

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
        """(Re)write nova.conf from ``options`` and ``ring_options``."""
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

    def enable_curve(self) -> KeyPair:
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

    def settings(self, **overrides: Any) -> Settings:
        """Settings for an in-process client of this host (parses its
        nova.conf into the process's CONF, which it resets first)."""
        from nova_rpc_zmq import config
        config.reset()
        config.CONF(["--config-file", self.conf_path], project="nova")
        return config.load_settings(config.CONF, **overrides)

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _env(self) -> dict[str, str]:
        return child_env()

    def spawn(self, name: str, argv: list[str], log_name: str) -> Proc:
        """Start ``argv`` as a process of this host (in its namespace, if
        any), logging to ``log_name`` in its directory; stopped by ``stop``."""
        proc = Proc(name, argv, os.path.join(self.dir, log_name), env=self._env(),
                    prefix=self._prefix())
        self.procs.append(proc)
        return proc

    def start_receiver(self, timeout: float = 20.0, *extra: str) -> Proc:
        """Start the receiver and wait until it logs that it listens."""
        proc = self.spawn("receiver@" + self.host, receiver_argv(self.conf_path, *extra),
                          "receiver.log")
        proc.wait_for_line("listening on", timeout)
        return proc

    def start_service(self, name: str, topic: str = "demo",
                      eventlet: bool = False, timeout: float = 30.0,
                      wait: bool = True) -> Proc:
        """Start a demo service ``name`` consuming ``topic``; wait for its
        READY line unless ``wait`` is false."""
        proc = self.spawn("service %s@%s" % (name, self.host),
                          service_argv(self.conf_path, name, topic, eventlet),
                          "service-%s.log" % name)
        if wait:
            proc.wait_for_line("READY", timeout)
        return proc

    def stop(self) -> None:
        """Stop every process (newest first) and remove the directory."""
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
