"""The mc servicegroup driver never unpickles what it finds in memcached.

python-memcached unpickles any value stored with flag 1, so whoever can
write to memcached could run code in every service using the ``mc``
driver.  These tests plant values with a raw memcached client (the text
protocol over a plain socket) on a real memcached: pickles whose
``__reduce__`` would create a marker file, values of other flags, text
that is not JSON and JSON of the wrong shape.  The driver must never
execute them, must log them (rate-limited) and treat the member as not
heard from, and liveness of real members must keep working.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from nova_rpc_zmq.servicegroup.drivers import mc
from tests.support import scaled, wait_for

DOWN, INTERVAL = 3.0, 1.0
MC_LOGGER = "nova_rpc_zmq.servicegroup.drivers.mc"
FLAG_PICKLE, FLAG_INTEGER, FLAG_COMPRESSED, FLAG_TEXT = 1, 2, 8, 16


class Planted:
    """Unpickling this opens (so creates) ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> Any:
        return (open, (self.path, "a"))


class RawMemcached:
    """The memcached text protocol over one socket, with deadlines: the
    tests write exactly the bytes and flags an attacker would."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=scaled(5))
        self.buf = b""

    def _read_until(self, end: bytes) -> bytes:
        deadline = time.monotonic() + scaled(5)
        while not self.buf.endswith(end):
            if time.monotonic() > deadline:
                raise AssertionError("memcached did not answer: %r" % self.buf[-200:])
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("memcached closed the connection")
            self.buf += chunk
        out, self.buf = self.buf, b""
        return out

    def set(self, key: str, value: bytes, flags: int) -> None:
        """``set`` with the given flags; asserts STORED."""
        self.sock.sendall(b"set %s %d 0 %d\r\n%s\r\n"
                          % (key.encode(), flags, len(value), value))
        assert self._read_until(b"\r\n") == b"STORED\r\n"

    def get(self, key: str) -> tuple[int, bytes] | None:
        """(flags, value) of ``key``, or None when absent."""
        self.sock.sendall(b"get %s\r\n" % key.encode())
        reply = self._read_until(b"END\r\n")
        if reply == b"END\r\n":
            return None
        header, _, rest = reply.partition(b"\r\n")
        _, _, flags, length = header.split(b" ")
        return int(flags), rest[:int(length)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(memcached_server: Any) -> Iterator[RawMemcached]:
    client = RawMemcached(memcached_server.address)
    yield client
    client.close()


@pytest.fixture
def drivers(memcached_server: Any) -> Iterator[Any]:
    """``make()`` builds an mc driver on the session's memcached; all are
    stopped afterwards."""
    made: list[mc.McDriver] = []

    def make() -> mc.McDriver:
        driver = mc.McDriver([memcached_server.address], service_down_time=DOWN,
                             report_interval=INTERVAL)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.stop(leave=False)


def _group() -> str:
    return "g%s" % uuid.uuid4().hex[:10]


def _list_in_index(raw: RawMemcached, group: str, names: list[str]) -> None:
    """Make the group index list ``names`` too, so a reader asks for their
    keys (a planted member key is read deterministically, not raced
    against a heartbeat)."""
    now = time.time()
    raw.set(mc.index_key(group),
            json.dumps({"m": {n: now for n in names}}).encode(), FLAG_TEXT)


def _not_ours_lines(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == MC_LOGGER and "never unpickled" in r.getMessage()]


@pytest.mark.timeout(60)
def test_planted_pickle_is_never_unpickled(raw: RawMemcached, drivers: Any,
                                           tmp_path: Path, caplog: Any) -> None:
    """A pickle under a member key (flags 1, and the same bytes with flags
    0) is logged and ignored, never run; the real member stays up."""
    caplog.set_level(logging.WARNING, logger=MC_LOGGER)
    group = _group()
    writer = drivers()
    writer.join("host-a", group)
    marker = tmp_path / "unpickled-marker"
    payload = pickle.dumps(Planted(marker), protocol=2)
    _list_in_index(raw, group, ["host-a", "ghost", "ghost-raw"])
    raw.set(mc.member_key(group, "ghost"), payload, FLAG_PICKLE)
    raw.set(mc.member_key(group, "ghost-raw"), payload, 0)

    reader = drivers()
    records = {r.member: r for r in reader.members([group])[group]}
    assert not marker.exists(), "the driver unpickled a value from memcached"
    assert sorted(records) == ["ghost", "ghost-raw", "host-a"]
    assert records["host-a"].up
    for ghost in ("ghost", "ghost-raw"):
        assert not records[ghost].up and records[ghost].last_seen is None
        assert not reader.is_up(group, ghost)
    lines = _not_ours_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]  # rate-limited
    # either ghost may come first: the line names it and how it was stored
    said = lines[0].getMessage()
    assert (mc.member_key(group, "ghost") in said and "flags 1 (a pickle)" in said) \
        or (mc.member_key(group, "ghost-raw") in said and "flags 0 (not text)" in said), said
    assert reader.not_ours.count >= 2

    # liveness keeps working afterwards: a heartbeat passes, host-a is up
    beats = writer.beats
    wait_for(lambda: writer.beats > beats, 10, what="a heartbeat after the plant")
    assert reader.is_up(group, "host-a")
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_values_of_other_shapes_are_ignored(raw: RawMemcached, drivers: Any,
                                            caplog: Any) -> None:
    """Integers, compressed junk, non-UTF-8, not-JSON, JSON of the wrong
    shape and an infinite heartbeat time: each member is not heard from,
    the read does not raise, one log line covers them all."""
    caplog.set_level(logging.WARNING, logger=MC_LOGGER)
    group = _group()
    writer = drivers()
    writer.join("host-a", group)
    planted = {
        "int-junk": (b"not-a-number", FLAG_INTEGER),
        "compressed": (b"\x78\x9c garbage", FLAG_COMPRESSED | FLAG_TEXT),
        "latin1": (b"\xff\xfe\xfd", FLAG_TEXT),
        "not-json": (b"{'t': 1}", FLAG_TEXT),
        "a-list": (b"[1, 2, 3]", FLAG_TEXT),
        "no-time": (b'{"s": "x"}', FLAG_TEXT),
        "bool-time": (b'{"t": true}', FLAG_TEXT),
        "forever": (b'{"t": Infinity}', FLAG_TEXT),
        "nan-left": (json.dumps({"t": time.time(), "left": float("nan")}).encode(),
                     FLAG_TEXT),
        "unknown-flags": (b'{"t": 1}', 1 << 9),
    }
    _list_in_index(raw, group, ["host-a"] + sorted(planted))
    for name, (value, flags) in planted.items():
        raw.set(mc.member_key(group, name), value, flags)

    reader = drivers()
    records = {r.member: r for r in reader.members([group])[group]}
    assert records["host-a"].up
    assert {n for n, r in records.items() if r.up} == {"host-a"}
    assert all(records[n].last_seen is None for n in planted)
    assert reader.not_ours.count == len(planted)
    # a second read, and single-member reads: still no error, still one line
    reader.members([group])
    assert not reader.is_up(group, "forever")
    assert len(_not_ours_lines(caplog)) == 1
    assert reader.not_ours.count == 2 * len(planted) + 1
    # the connection was not left half-read: ordinary reads still work
    assert reader.is_up(group, "host-a")


@pytest.mark.timeout(60)
def test_planted_index_and_group_list_are_replaced(raw: RawMemcached, drivers: Any,
                                                   tmp_path: Path, caplog: Any) -> None:
    """A pickle planted over the group index and the group list is not
    run, and the next heartbeat writes our JSON over it (gets/cas: add
    would fail for ever on a key that exists)."""
    caplog.set_level(logging.WARNING, logger=MC_LOGGER)
    group = _group()
    writer = drivers()
    writer.join("host-a", group)
    marker = tmp_path / "unpickled-marker"
    payload = pickle.dumps(Planted(marker), protocol=2)
    raw.set(mc.index_key(group), payload, FLAG_PICKLE)
    raw.set(mc.GROUPS_KEY, payload, FLAG_PICKLE)

    def ours(key: str) -> Any:
        got = raw.get(key)
        return got is not None and got[0] == FLAG_TEXT and json.loads(got[1])

    index = wait_for(lambda: ours(mc.index_key(group)), 10,
                     what="the heartbeat to rewrite the planted index")
    assert "host-a" in index["m"]
    wait_for(lambda: ours(mc.GROUPS_KEY), 10,
             what="the heartbeat to rewrite the planted group list")
    reader = drivers()
    assert [r.member for r in reader.members([group])[group] if r.up] == ["host-a"]
    assert group in reader.groups()
    assert not marker.exists(), "the driver unpickled a value from memcached"
    assert writer.not_ours.count >= 1


@pytest.mark.timeout(60)
def test_driver_writes_only_text(raw: RawMemcached, drivers: Any) -> None:
    """Every key the driver writes is stored with the text flag (JSON),
    never as a pickle."""
    group = _group()
    writer = drivers()
    writer.join("host-a", group)
    for key in (mc.member_key(group, "host-a"), mc.index_key(group), mc.GROUPS_KEY):
        got = raw.get(key)
        assert got is not None and got[0] == FLAG_TEXT, (key, got)
        json.loads(got[1])
    writer.leave("host-a", group)
    got = raw.get(mc.member_key(group, "host-a"))
    assert got is not None and got[0] == FLAG_TEXT
    assert json.loads(got[1])["left"] > 0
