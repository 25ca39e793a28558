"""The shared harness of nova_rpc_zmq.testing, the parts that need no
process or port: a child's environment and command lines, loopback host
addresses, waiting with a deadline."""

from __future__ import annotations

import os
import sys

import pytest

from nova_rpc_zmq import testing


def test_child_env_puts_the_checkout_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = testing.child_env({"EXTRA": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [testing.checkout_root(), "/elsewhere"]
    assert env["EXTRA"] == "1"
    assert os.path.isdir(os.path.join(testing.checkout_root(), "nova_rpc_zmq"))


@pytest.mark.parametrize("unset", [True, False])
def test_child_env_adds_no_empty_path_entry(monkeypatch: pytest.MonkeyPatch,
                                            unset: bool) -> None:
    """An empty PYTHONPATH entry is the child's working directory: none."""
    if unset:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", "")
    assert testing.child_env()["PYTHONPATH"] == testing.checkout_root()


def test_command_lines() -> None:
    assert testing.receiver_argv("/c/nova.conf", "--debug") == [
        sys.executable, "-m", "nova_rpc_zmq.cli.receiver", "--config-file", "/c/nova.conf",
        "--debug"]
    argv = testing.service_argv("/c/nova.conf", "svc", topic="t", eventlet=True)
    assert argv[:3] == [sys.executable, "-m", "nova_rpc_zmq.cli.demo_service"]
    assert argv[3:] == ["--config-file", "/c/nova.conf", "--name", "svc", "--topic", "t",
                        "--eventlet"]
    assert "--eventlet" not in testing.service_argv("/c/nova.conf", "svc")


@pytest.mark.parametrize("n, address", [(1, "127.0.0.1"), (254, "127.0.0.254")])
def test_loopback_address(n: int, address: str) -> None:
    assert testing.loopback_address(n) == address


@pytest.mark.parametrize("n", [0, 255])
def test_loopback_address_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 254"):
        testing.loopback_address(n)


def test_wait_for_returns_the_value_or_names_what_it_waited_for() -> None:
    seen = []

    def third_time() -> str:
        seen.append(1)
        return "done" if len(seen) >= 3 else ""
    assert testing.wait_for(third_time, timeout=5, interval=0) == "done"
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        testing.wait_for(lambda: False, timeout=0.05, interval=0.01, what="the impossible")
