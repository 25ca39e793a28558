"""Suite-wide setup: the repository on sys.path, the skip policy
(tests/skip_policy.py: in CI a skip not on tests/skips_allowed.txt fails),
a marker per directory, and the network guard of the unit tests.

Markers (registered in pyproject.toml): every test under ``tests/unit`` is
``unit`` (no network, seconds: ``pytest -m unit``), under ``tests/fuzz``
``fuzz`` (property tests and a bounded atheris run, tens of seconds), under
``tests/functional`` and ``tests/oslo`` ``functional`` (real sockets,
processes, servers), under ``tests/multihost`` ``multihost`` (network
namespaces, root).
A ``unit`` test that opens a TCP/UDP socket or a ZeroMQ socket on a network
transport fails (tests/fixtures/netguard.py); ``NOVA_RPC_ZMQ_UNIT_NETWORK_GUARD=0``
turns the guard off.
"""

import os
import sys
from pathlib import Path
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402 - after the path set-up above

from tests import skip_policy  # noqa: E402
from tests.fixtures import netguard  # noqa: E402

HERE = Path(__file__).resolve().parent
#: tests/<directory> -> the marker its tests get (tests/oslo: oslo.messaging
#: over real sockets and processes)
DIRECTORY_MARKERS = {"unit": "unit", "fuzz": "fuzz", "functional": "functional",
                     "oslo": "functional", "multihost": "multihost"}


def pytest_configure(config: pytest.Config) -> None:
    """Judge every skip against the allow-list (strict under CI=true)."""
    skip_policy.install(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by the directory it lives in."""
    for item in items:
        try:
            top = Path(str(item.fspath)).resolve().relative_to(HERE).parts[0]
        except (ValueError, IndexError):
            continue
        marker = DIRECTORY_MARKERS.get(top)
        if marker is not None:
            item.add_marker(marker)


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Note whether the test itself failed (the guard then adds nothing)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed


def _guard_on() -> bool:
    """On unless NOVA_RPC_ZMQ_UNIT_NETWORK_GUARD says 0 (false, no, off)."""
    return os.environ.get(netguard.ENV, "").strip().lower() not in netguard.OFF


@pytest.fixture(autouse=True)
def _unit_network_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a ``unit`` test that used the network (unless the guard is off)."""
    if request.node.get_closest_marker("unit") is None or not _guard_on():
        yield
        return
    guard = netguard.NetworkGuard()
    with guard.active():
        yield
    if guard.uses and not request.node.stash.get(_CALL_FAILED, False):
        # a use the test caught (or a thread hid): the test passed, wrongly
        pytest.fail("unit test used the network %d time(s): %s"
                    % (len(guard.uses), "; ".join(guard.uses[:5])), pytrace=False)
