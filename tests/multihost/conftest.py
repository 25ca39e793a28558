"""Fixtures of the multi-host tests: skip without namespaces (a failure
under CI=true, tests/skip_policy.py), clean up earlier leftovers once, and
build clusters that are always torn down."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.multihost import netns


@pytest.fixture(scope="session")
def netns_support() -> None:
    """Skip (with the reason) when network namespaces cannot be used here;
    otherwise delete what earlier, dead runs left behind.

    The skip is not on tests/skips_allowed.txt on purpose: under CI=true it
    fails every multihost test, so CI cannot go green without them.
    """
    reason = netns.netns_unavailable()
    if reason:
        pytest.skip("network namespaces unavailable, the multihost tests "
                    "need root and 'ip netns add': %s" % reason)
    netns.remove_leftovers()


@pytest.fixture(scope="module")
def netns_cluster_factory(request: pytest.FixtureRequest,
                          netns_support: None) -> Callable[..., netns.NetnsCluster]:
    """``factory(**NetnsCluster kwargs)`` -> a started cluster.

    Each cluster is closed when the module ends, even when a test failed
    (a test may close it sooner; closing twice is harmless).
    """
    def factory(**kwargs: Any) -> netns.NetnsCluster:
        cluster = netns.NetnsCluster(**kwargs)
        request.addfinalizer(cluster.close)
        return cluster.start()
    return factory
