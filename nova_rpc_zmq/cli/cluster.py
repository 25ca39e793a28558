"""The names ``nova-rpc-zmq demo`` and older callers import from here:
``LocalHost``, ``Proc`` and ``free_port`` now live in
``nova_rpc_zmq.testing`` (shared with the tests and the benchmarks)."""

from nova_rpc_zmq.testing import LocalHost, Proc, free_port

__all__ = ["LocalHost", "Proc", "free_port"]
