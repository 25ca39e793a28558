"""A TCP proxy that records every byte it forwards, for tests that look at
what crosses the wire between two hosts (is it encrypted?)."""

from __future__ import annotations

import socket
import threading

from tests.support import hang_up


class RecordingProxy:
    """Listens on ``listen`` (address, port), forwards each connection to
    ``target`` and keeps a copy of the bytes sent in both directions.

    Thread-safe; ``close()`` stops accepting and closes every connection.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sent = bytearray()       # client -> target
        self._returned = bytearray()   # target -> client
        self.connections = 0
        self._socks: list[socket.socket] = []
        self._closed = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(listen)
        self._listener.listen(16)
        # a short accept timeout so close() is seen without a wake-up trick
        self._listener.settimeout(0.1)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def sent(self) -> bytes:
        """Every byte the connecting side sent so far."""
        with self._lock:
            return bytes(self._sent)

    def returned(self) -> bytes:
        """Every byte the target sent back so far."""
        with self._lock:
            return bytes(self._returned)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, 2)
            except OSError:
                client.close()   # the target is down: the peer reconnects
                continue
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            for src, dst, into in ((client, upstream, self._sent),
                                   (upstream, client, self._returned)):
                t = threading.Thread(target=self._pipe, args=(src, dst, into),
                                     daemon=True)
                self._threads.append(t)
                t.start()

    def _pipe(self, src: socket.socket, dst: socket.socket,
              into: bytearray) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    into += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # either side gone: close both, so the peer sees it and
            # reconnects (through us again)
            hang_up(src, dst)

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._closed.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        hang_up(*socks)
        for t in self._threads:
            t.join(5)
