"""Summaries of drops, tracebacks once per place, and the Essex logging
flags, without processes or sockets."""

from __future__ import annotations

import logging
import sys

import pytest

from nova_rpc_zmq import config
from nova_rpc_zmq.receiver.droplog import DropLog


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def droplog() -> tuple[DropLog, _Lines]:
    logger = logging.getLogger("test.droplog")
    lines = _Lines()
    logger.addHandler(lines)
    logger.propagate = False
    yield DropLog(interval=10.0, logger=logger), lines
    logger.removeHandler(lines)


def _raise_at_one_place(n: int) -> None:
    raise KeyError(n)


def test_hostile_reasons_are_summed_up(droplog) -> None:
    """10,000 bad frames from one peer: one line at once, one summary."""
    log, lines = droplog
    for i in range(10000):
        log.record("bad_frame", None, "tcp://10.0.0.%d" % (i % 7), "frame %d" % i,
                   now=i / 10000)
    log.flush(now=10.5)
    assert len(lines.records) == 2
    summary = lines.records[1].getMessage()
    assert "9999 more" in summary and "bad_frame" in summary
    assert "frame 1" in summary          # first example of the interval
    assert "last: topic None from tcp://10.0.0.3" in summary  # 9999 % 7


def test_internal_error_traceback_once_per_place(droplog) -> None:
    log, lines = droplog
    for i in range(1000):
        try:
            _raise_at_one_place(i)
        except KeyError:
            log.internal_error(sys.exc_info(), "demo", "peer", now=1.0)
    try:
        {}["other place"]
    except KeyError:
        log.internal_error(sys.exc_info(), "demo", "peer", now=1.0)
    log.flush(now=100.0, force=True)
    tracebacks = [r for r in lines.records if r.exc_info]
    assert len(tracebacks) == 2            # two distinct places
    # the first repeat at once, the 998 others in one summary
    others = [r.getMessage() for r in lines.records if not r.exc_info]
    assert len(others) == 2 and "998 more" in others[1], others


def test_essex_logging_flags_become_oslo_log_options(tmp_path) -> None:
    flagfile = tmp_path / "nova.conf"
    flagfile.write_text("--rpc_zmq_port=9501\n--logdir=/var/log/nova\n"
                        "--logfile=/var/log/nova/x.log\n--verbose\n--nouse_syslog\n")
    sections = config.translate_flagfile(str(flagfile))
    assert sections[None]["log_dir"] == "/var/log/nova"
    assert sections[None]["log_file"] == "/var/log/nova/x.log"
    assert sections[None]["debug"] == "true"
    assert sections[None]["use_syslog"] == "false"
