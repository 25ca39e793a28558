"""A service process's metrics page (``impl_zmq.exporter``): the driver's
gauges are read from its collaborators' public state at each scrape, on a
real driver (real ZeroMQ context, no receiver, no network)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Iterator

import pytest

from nova_rpc_zmq import config, metrics
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.impl_zmq import exporter
from nova_rpc_zmq.impl_zmq.driver import Driver


@pytest.fixture
def driver() -> Iterator[Driver]:
    ipc_dir = tempfile.mkdtemp(prefix="nrzm-")
    settings = config.default_settings(rpc_zmq_ipc_dir=ipc_dir,
                                       rpc_zmq_matchmaker="localhost")
    drv = Driver(settings, handler=get_handler("threading"))
    yield drv
    drv.cleanup()
    shutil.rmtree(ipc_dir, ignore_errors=True)


def gauges(driver: Driver) -> dict[str, float]:
    """The driver's gauges as a scrape shows them, by short name."""
    values = metrics.parse(metrics.render(exporter.families(driver.counters,
                                                            driver.gauges)))
    return {name: values[metrics.metric_name("driver", name)]
            for name in exporter.GAUGES}


def test_gauges_follow_the_driver_state(driver: Driver) -> None:
    assert driver.metrics_server is None  # rpc_zmq_metrics_port = 0
    assert gauges(driver) == {"calls_in_flight": 0, "outbound_peers": 0,
                              "connections": 0}
    msg_ids = [driver.replies.new_msg_id() for _ in range(2)]
    for msg_id in msg_ids:
        driver.replies.register(msg_id)
    conn = driver.create_connection()
    # (no outbound socket: opening one needs TCP, which unit tests may not use)
    assert gauges(driver) == {"calls_in_flight": 2, "outbound_peers": 0,
                              "connections": 1}
    driver.replies.unregister(msg_ids[0])
    conn.close()
    assert gauges(driver) == {"calls_in_flight": 1, "outbound_peers": 0,
                              "connections": 0}


def test_every_gauge_has_help_and_type(driver: Driver) -> None:
    text = metrics.render(exporter.families(driver.counters, driver.gauges))
    for name, help_text in exporter.GAUGES.items():
        full = metrics.metric_name("driver", name)
        assert "# HELP %s %s\n" % (full, help_text) in text
        assert "# TYPE %s gauge\n" % full in text


def test_a_missing_gauge_reader_is_a_programming_error(driver: Driver) -> None:
    partial = {k: v for k, v in driver.gauges.items() if k != "connections"}
    with pytest.raises(KeyError, match="connections"):
        exporter.families(driver.counters, partial)
