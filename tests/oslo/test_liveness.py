"""The hosts Redis returns, filtered by a ServiceGroup driver: three hosts
(127.0.0.1-3) with ``servicegroup_driver = db`` on one SQLite file; a host
whose heartbeat stops (its process stopped with SIGSTOP, so its port still
accepts connections) is not chosen, long before its registration would
expire, and is chosen again once it beats again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest

from nova_rpc_zmq.oslo_driver.liveness import (LiveRegistry, group_of,
                                               host_of)
from nova_rpc_zmq.oslo_driver.registry import DummyRegistry
from nova_rpc_zmq.testing import scaled, wait_for
from tests.oslo.omsupport import make_conf
from tests.oslo.test_multihost import HOSTS, KEY, NAMES, client, counts

#: The db driver's timing, short for the test.
DOWN_TIME, REPORT = 3, 1


def write_conf(tmp_path: Path) -> str:
    path = tmp_path / "servicegroup.conf"
    path.write_text(
        "[DEFAULT]\nservicegroup_driver = db\nservice_down_time = %d\n"
        "report_interval = %d\n\n[database]\nconnection = sqlite:///%s\n"
        % (DOWN_TIME, REPORT, tmp_path / "servicegroup.sqlite"))
    return str(path)


def test_keys_name_their_group_and_members_their_host() -> None:
    assert group_of("rpc/openstack/compute") == "compute"
    assert group_of("rpc/nova/compute/node-1") == "compute"
    assert group_of("notify/openstack/notifications.info") == \
        "notifications.info"
    assert group_of("other/x/y") is None and group_of("rpc/x") is None
    assert host_of("10.0.0.5:50123") == "10.0.0.5"
    assert host_of("audit@node-1:50123") == "node-1"


def test_no_servicegroup_driver_no_filter() -> None:
    inner = DummyRegistry()
    assert LiveRegistry.wrap(inner, make_conf(), "127.0.0.1") is inner


@pytest.mark.slow
def test_a_host_whose_heartbeat_stops_is_not_chosen(
        redis_server: Any, host_factory: Any, tmp_path: Path) -> None:
    url = "zmq+redis://127.0.0.1:%d" % redis_server.port
    conf_file = write_conf(tmp_path)
    # registrations live 300 s: only the liveness driver can drop host2
    procs = [host_factory("rpc", url, address, name, "--expire", "300",
                          "--update", "1", "--config-file", conf_file,
                          wait=False) for address, name in zip(HOSTS, NAMES)]
    for proc in procs:
        proc.wait_for_line("READY", scaled(30))
    conf = make_conf(host=HOSTS[0], rpc_zmq_bind_address=HOSTS[0])
    conf(["--config-file", conf_file], project="nova-rpc-zmq-tests")
    transport = oslo_messaging.get_rpc_transport(conf, url)
    try:
        driver = transport._driver
        assert isinstance(driver.registry, LiveRegistry)
        rpc = client(transport)
        # connections to all three are made: a stopped host2 would still
        # take messages into its socket's buffers
        assert sorted(rpc.call({}, "whoami") for _ in range(3)) == NAMES
        os.kill(procs[1].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            wait_for(lambda: [host_of(m) for m in driver.lookup.members(
                KEY, fresh=True)] == [HOSTS[0], HOSTS[2]],
                DOWN_TIME + 2 * REPORT + 2, what="host2 reported down")
            assert time.monotonic() - stopped_at < scaled(
                DOWN_TIME + 2 * REPORT + 2)
            rpc_dir: Path = host_factory.rpc_dir
            for n in range(6):
                rpc.cast({}, "record", value=n)
            wait_for(lambda: sum(counts(rpc_dir, NAMES)) == 6, 10,
                     what="6 casts on the live hosts")
            assert counts(rpc_dir, NAMES) == [3, 0, 3]
            for _ in range(4):
                started = time.monotonic()
                assert rpc.call({}, "whoami") in ("host1", "host3")
                assert time.monotonic() - started < scaled(0.5)
        finally:
            os.kill(procs[1].pid, signal.SIGCONT)
        # heartbeats again: host2 is chosen again
        wait_for(lambda: "host2" in {rpc.call({}, "whoami")
                                     for _ in range(3)},
                 DOWN_TIME + 2 * REPORT + 2, what="host2 back")
    finally:
        transport.cleanup()
