"""nova-rpc-zmq: a broker-less RPC transport for OpenStack-style services."""

#: The package's one version: pyproject.toml reads it (setuptools dynamic
#: version), ``--version`` of every console script and the
#: ``nova_rpc_zmq_build_info`` metric print it.
__version__ = "0.1.0"
