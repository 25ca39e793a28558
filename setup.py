from setuptools import find_packages, setup

setup(
    name="nova-rpc-zmq",
    version="0.1.0",
    description="Broker-less RPC over ZeroMQ for OpenStack-style services, "
                "compatible with the Nova-era impl_zmq driver",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["nova_rpc_zmq", "nova_rpc_zmq.*"]),
    install_requires=[
        "pyzmq>=22",
        "eventlet>=0.33.3",  # 0.33.0-0.33.2 break on import with dnspython 2.3+
        "greenlet>=2",
        "oslo.config>=9",
        "python-memcached>=1.59",
        "kazoo>=2.9",
        "SQLAlchemy>=1.4",
        "orjson>=3.9",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout", "hypothesis", "atheris",
                 "psutil", "ruff", "mypy", "pg8000"],
        "bench": ["matplotlib", "psutil"],
        "rabbit": ["oslo.messaging"],
    },
    entry_points={
        "console_scripts": [
            "nova-rpc-zmq=nova_rpc_zmq.cli.main:main",
            # bin/nova-rpc-zmq-receiver runs the same from a checkout
            "nova-rpc-zmq-receiver=nova_rpc_zmq.cli.receiver:main",
        ],
    },
)
