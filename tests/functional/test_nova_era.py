"""The backend driven the way Nova-era code drives it: its own
``oslo_config.cfg.CONF`` (with its own generic rpc options already
registered), ``impl = import_module(CONF.rpc_backend)`` and every function
called with ``CONF`` first. Callers and services are separate processes, in
both concurrency modes; see ``tests/functional/novaera``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from nova_rpc_zmq.testing import LocalHost, Proc
from tests.support import scaled

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["eventlet", "threads"]


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost", extra={"rpc_backend": "nova_rpc_zmq.impl_zmq"})
    try:
        h.start_receiver()
        yield h
    finally:
        h.stop()


def start_service(h: LocalHost, mode: str, name: str) -> Proc:
    proc = Proc("novaera service " + name,
                [sys.executable, "-m", "tests.functional.novaera.service", mode,
                 h.conf_path, name],
                os.path.join(h.dir, "novaera-%s.log" % name), env=h._env())
    h.procs.append(proc)
    proc.wait_for_line("READY", scaled(30))
    return proc


def run_caller(h: LocalHost, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tests.functional.novaera.caller", mode, h.conf_path,
         str(scaled(10))],
        capture_output=True, text=True, timeout=scaled(90), cwd=ROOT, env=h._env())
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("service_mode", MODES)
@pytest.mark.parametrize("caller_mode", MODES)
def test_every_backend_function_with_the_hosts_conf(host, service_mode, caller_mode):
    service = start_service(host, service_mode, "svc-%s-%s" % (service_mode, caller_mode))
    try:
        out = run_caller(host, caller_mode)
    finally:
        service.stop()
    assert out["eventlet"] is (caller_mode == "eventlet")
    assert out["call"] == [caller_mode, 1]
    assert out["call_directed"] == "directed"
    assert out["multicall"] == [0, 1, 2]
    # ValueError is not in the host's allowed_rpc_exception_modules: its
    # own option (no "builtins" there) is the one in force
    assert out["remote_error"] == "RemoteError"
    stats = out["stats"]
    assert sorted(stats["casts"]) == ["cast", "cast_to_server"]
    assert sorted(stats["fanouts"]) == ["fanout", "fanout_to_server"]
    assert stats["notifications"] == ["compute.instance.create.end",
                                      "compute.instance.delete.end"]
    assert "STOPPED" in service.output()


def test_importing_the_backend_registers_its_options_on_cfg_conf(tmp_path):
    """The old module registered its options on import; a host program
    reads them from its own CONF right after."""
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\nrpc_zmq_port = 9611\nrpc_zmq_host = h9\n")
    code = ("import importlib; from oslo_config import cfg; "
            "cfg.CONF(['--config-file', %r], project='nova'); "
            "importlib.import_module('nova_rpc_zmq.impl_zmq'); "
            "print(cfg.CONF.rpc_zmq_port, cfg.CONF.rpc_zmq_host)" % str(conf))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=scaled(60), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["9611", "h9"]


def _readme_service() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## A service, in ten lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_ten_line_service_runs_and_answers(host, tmp_path):
    """The README's service, verbatim but for the config path, keeps
    serving until it is stopped."""
    code = _readme_service().replace("/etc/nova/nova.conf", host.conf_path)
    assert "/etc/nova" not in code
    script = tmp_path / "service.py"
    script.write_text(code + 'print("never reached until stopped")\n')
    service = Proc("readme service", [sys.executable, str(script)],
                   str(tmp_path / "service.log"), env=host._env())
    host.procs.append(service)
    try:
        caller = ("from nova_rpc_zmq import config, rpc\n"
                  "rpc.init(config.parse_args(['--config-file', %r]))\n"
                  "print(rpc.call({}, 'compute', {'method': 'ping', 'args': {'value': 7}},"
                  " timeout=%f))\nrpc.cleanup()\n" % (host.conf_path, scaled(20)))
        out = subprocess.run([sys.executable, "-c", caller], capture_output=True,
                             text=True, timeout=scaled(60), cwd=ROOT, env=host._env())
        assert out.returncode == 0, out.stderr[-2000:] + service.output()[-2000:]
        assert out.stdout.strip() == "7"
        assert service.popen.poll() is None, "the README service exited by itself"
    finally:
        service.stop(signal.SIGTERM)
    assert "never reached" not in service.output()
