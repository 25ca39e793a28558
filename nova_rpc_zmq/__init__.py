"""nova-rpc-zmq: a broker-less RPC transport for OpenStack-style services."""

__version__ = "0.1.0"
