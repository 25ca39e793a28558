"""The driver's options (the deployment guide's names and defaults), its
entry point, and the ``zmq://`` registry directory's rules."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from nova_rpc_zmq.oslo_driver import ZmqDriver, list_opts, registry

SEED_DEFAULTS = {
    "rpc_zmq_bind_address": "*",
    "zmq_target_expire": 300,
    "zmq_target_update": 180,
    "rpc_zmq_min_port": 49153,
    "rpc_zmq_max_port": 65536,
    "rpc_zmq_bind_port_retries": 100,
    "use_pub_sub": False,
    "use_router_proxy": False,
    "use_dynamic_connections": False,
    "zmq_failover_connections": 2,
    "zmq_linger": -1,
    "subscribe_on": [],
}

#: Our CURVE options, with the Nova-era transport's names and defaults.
CURVE_DEFAULTS = {
    "rpc_zmq_curve": False,
    "rpc_zmq_curve_key_file": "/etc/nova/zmq/host.key",
    "rpc_zmq_curve_keys_dir": "/etc/nova/zmq/keys",
}

#: Other options named as the Nova-era transport names them.
LEGACY_DEFAULTS = {
    "rpc_zmq_io_batch": True,
}


def test_options_have_the_guides_names_and_defaults() -> None:
    [(group, opts)] = list_opts()
    assert group == "oslo_messaging_zmq"
    by_name = {opt.name: opt for opt in opts}
    assert set(SEED_DEFAULTS) | {"rpc_zmq_host", "rpc_zmq_matchmaker"} \
        | set(CURVE_DEFAULTS) | set(LEGACY_DEFAULTS) == set(by_name)
    for name, default in {**CURVE_DEFAULTS, **LEGACY_DEFAULTS}.items():
        assert by_name[name].default == default, name
    for name, default in SEED_DEFAULTS.items():
        assert by_name[name].default == default, name
    assert all(opt.help for opt in opts)


def test_the_entry_point_loads_the_driver() -> None:
    [zmq] = [point for point in metadata.distribution(
        "nova-rpc-zmq").entry_points
        if point.group == "oslo.messaging.drivers" and point.name == "zmq"]
    assert zmq.load() is ZmqDriver


def test_directory_registry_ttl_process_and_atomic_files(
        registry_dir: str) -> None:
    reg = registry.DirectoryRegistry(registry_dir)
    reg.register("rpc/x/t", "h:1", 30)
    reg.register("rpc/x/t", "h:2", 30)
    assert reg.members("rpc/x/t") == ["h:1", "h:2"]
    # older than its TTL: ignored and removed
    key_dir = Path(registry_dir) / os.listdir(registry_dir)[0]
    [old] = [p for p in key_dir.iterdir()
             if registry._decode(p.name) == "h:1"]
    past = time.time() - 31
    os.utime(old, (past, past))
    assert reg.members("rpc/x/t") == ["h:2"]
    assert not old.exists()
    # a registration whose process is gone is dropped at once
    code = ("from nova_rpc_zmq.oslo_driver import registry; "
            "registry.DirectoryRegistry(%r).register('rpc/x/t', 'h:3', 300)"
            % registry_dir)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert reg.members("rpc/x/t") == ["h:2"]
    # no temporary file is left behind, nothing else is listed
    assert [p.name for p in key_dir.iterdir()
            if p.name.startswith(".tmp")] == []
    reg.unregister("rpc/x/t", "h:2")
    assert reg.members("rpc/x/t") == []


def test_directory_registry_refuses_a_directory_others_may_write(
        tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="NOVA_RPC_ZMQ_OSLO_REGISTRY"):
        registry.DirectoryRegistry(str(shared))


def test_idle_outbound_sockets_are_closed_and_made_again() -> None:
    import zmq

    from nova_rpc_zmq import concurrency, zmqio
    from nova_rpc_zmq.oslo_driver.sockets import Outbound
    handler = concurrency.get_handler("threading")
    ctx = zmqio.context(handler)
    pulls = [zmqio.make_socket(ctx, zmq.PULL, linger=0, rcvtimeo=5000)
             for _ in range(2)]
    members = []
    for sock in pulls:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        members.append("127.0.0.1:%d" % port)
    out = Outbound(handler, ctx, linger_ms=0, idle=0.2)
    try:
        assert out.send(members[0], [b"one"], 5)
        assert pulls[0].recv_multipart() == [b"one"]
        time.sleep(0.3)  # longer than the idle time: the behaviour tested
        assert out.send(members[1], [b"two"], 5)  # sweeps the first
        assert sorted(out._peers) == [members[1]]
        assert out.send(members[0], [b"three"], 5)  # made again
        assert pulls[0].recv_multipart() == [b"three"]
        assert pulls[1].recv_multipart() == [b"two"]
    finally:
        out.close()
        for sock in pulls:
            sock.close(0)
        ctx.term()
