"""What the tests, ``nova-rpc-zmq demo`` and the benchmarks share to run
the transport for real on this machine.

* ``procs``: free ports, waiting with a deadline (``wait_for``,
  ``Proc.wait_for_line``, ``Proc.wait_for_port``), child processes in their
  own session that ``stop`` with SIGTERM then SIGKILL, the checkout on a
  child's PYTHONPATH, and the command lines of the receiver and the sample
  services.
* ``hosts``: ``LocalHost``, one RPC host (temp dir, nova.conf, receiver,
  services) on a loopback address; ``loopback_address(n)`` is 127.0.0.n.

Only the tests, ``nova_rpc_zmq.cli`` and ``benchmarks`` import this
package (``.importlinter``); the transport itself never does.
"""

from nova_rpc_zmq.testing.hosts import LocalHost, loopback_address
from nova_rpc_zmq.testing.procs import (TIMEOUT_SCALE, Proc, checkout_root, child_env,
                                        free_port, port_open, receiver_argv, scaled,
                                        service_argv, stop_process, wait_for)

__all__ = ["LocalHost", "Proc", "TIMEOUT_SCALE", "checkout_root", "child_env", "free_port",
           "loopback_address", "port_open", "receiver_argv", "scaled", "service_argv",
           "stop_process", "wait_for"]
