"""Fixtures for the functional tests: real servers on loopback ports."""

from tests.fixtures.servers import (  # noqa: F401 - registered as fixtures
    memcached_server, postgres_server, redis_server, server_factory,
    zookeeper_server)
