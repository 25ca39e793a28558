"""What oslo.messaging's threading executor costs a server per message.

``python -m benchmarks.executor_floor [--messages 60000] [--workers 1,4,64]``

oslo.messaging's server hands every incoming message to its executor: for
``executor="threading"`` a futurist ``ThreadPoolExecutor`` of
``executor_thread_pool_size`` threads (64 by default). A driver cannot
take that hand-off away. This measures it alone: a child process pushes
small messages (300 bytes, paced to about 50,000/s) to a PULL socket;
this process reads them in one thread and either handles each itself
(``inline``) or submits each to a ``ThreadPoolExecutor`` of N workers, as
oslo.messaging's server does. It prints the CPU per message of this
process (user and system), the messages/s and the context switches per
message. Nothing here is ours: it is the floor under any oslo.messaging
driver's server on this machine.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import zmq

#: Bytes per message.
SIZE = 300
#: The pusher sleeps 10 ms after every this many messages.
BURST = 500


def push(endpoint: str, count: int) -> int:
    """The child: ``count`` messages to ``endpoint``, paced."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(endpoint)
    time.sleep(0.3)  # the reader is bound already; let the pipe come up
    payload = b"x" * SIZE
    for i in range(count):
        sock.send(payload)
        if i % BURST == 0:
            time.sleep(0.01)
    sock.close(linger=10000)
    ctx.term()
    return 0


def measure(workers: int, count: int) -> dict[str, Any]:
    """One run: 0 workers is ``inline``. Returns the figures."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, 30000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    done = threading.Event()
    handled = [0]
    lock = threading.Lock()

    def work(_message: bytes) -> None:
        with lock:
            handled[0] += 1
            if handled[0] >= count:
                done.set()

    executor = None
    if workers:
        import futurist
        executor = futurist.ThreadPoolExecutor(max_workers=workers)
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.executor_floor",
                              "--push", "tcp://127.0.0.1:%d" % port,
                              "--messages", str(count)])
    try:
        first = sock.recv()
        start = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_SELF)
        received = 1
        if executor is None:
            work(first)
        else:
            executor.submit(work, first)
        while received < count:
            message = sock.recv()
            received += 1
            if executor is None:
                work(message)
            else:
                executor.submit(work, message)
        done.wait(60)
        after = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = time.monotonic() - start
    finally:
        child.wait(60)
        if executor is not None:
            executor.shutdown()
        sock.close(0)
        ctx.term()
    n = float(count - 1)
    user = (after.ru_utime - before.ru_utime) / n * 1e6
    system = (after.ru_stime - before.ru_stime) / n * 1e6
    return {"workers": workers, "cpu_us": user + system, "user_us": user,
            "sys_us": system, "rate": n / elapsed,
            "voluntary_per_msg": (after.ru_nvcsw - before.ru_nvcsw) / n,
            "involuntary_per_msg": (after.ru_nivcsw - before.ru_nivcsw) / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.executor_floor")
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--workers", default="1,4,64",
                        help="pool sizes to measure besides inline")
    parser.add_argument("--push", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.push:
        return push(args.push, args.messages)
    sizes = [0] + [int(w) for w in args.workers.split(",") if w.strip()]
    print("reader | CPU us/msg (user + sys) | msgs/s | ctx switches/msg "
          "(voluntary + involuntary)")
    for workers in sizes:
        r = measure(workers, args.messages)
        name = "inline" if not workers else "executor, %d threads" % workers
        print("%s | %.1f (%.1f + %.1f) | %.0f | %.1f + %.1f" % (
            name, r["cpu_us"], r["user_us"], r["sys_us"], r["rate"],
            r["voluntary_per_msg"], r["involuntary_per_msg"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
