"""The stores under the ``mc`` servicegroup driver: memcached through a
client that never unpickles, or an in-process store with the same rules.

Both have the same small interface (``alive``, ``get_multi``,
``set_multi``, ``merge``, ``close``); ``McDriver`` (``mc.py``) uses one.

Never unpickled: python-memcached by default unpickles every value stored
with flag 1, so anyone who can write to memcached would run code in every
service using the driver.  The driver writes only ``str`` values (JSON)
and reads through ``SafeClient``, which hands back the raw text of values
stored as bytes or text and refuses everything else (pickles, integers,
compressed values) without decoding it, returning a ``NotOurs`` record
instead; its pickler and unpickler refuse too.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from typing import Any, Callable, Iterable

from nova_rpc_zmq import errors

#: attempts of one gets/cas merge before leaving it to the next heartbeat
MERGE_TRIES = 8
#: python-memcached's flags for a value stored as bytes (0) or as text
_RAW_FLAGS = (0, 1 << 4)


@dataclasses.dataclass(frozen=True)
class NotOurs:
    """What ``SafeClient`` returns for a value it will not decode.

    ``flags`` are the memcached flags it was stored with (1 is a pickle),
    ``size`` its length in bytes, ``server`` where it came from.  The value
    itself is dropped unread.
    """

    server: str
    flags: int
    size: int


class RefusedValue(errors.RPCException):
    """A memcached value this driver will not unpickle or decompress."""


class RefusingUnpickler:
    """Stands in for ``pickle.Unpickler`` in the memcached client.

    ``load`` always raises ``RefusedValue``: a value stored with the pickle
    flag is someone else's, and unpickling it would run their code.
    """

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        self._file = file

    def load(self) -> Any:
        """Raise ``RefusedValue``; nothing is read."""
        raise RefusedValue("servicegroup mc never unpickles a memcached value")


class RefusingPickler:
    """Stands in for ``pickle.Pickler``: this driver stores only ``str``.

    Accepts the client's probing construction; ``dump`` raises TypeError,
    so a non-string value is a bug that shows, never a pickle in memcached.
    """

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        self._file = file

    def dump(self, obj: Any) -> None:
        """Raise TypeError naming the type that was about to be pickled."""
        raise TypeError("servicegroup mc stores only str values, not %s"
                        % type(obj).__name__)


def _refuse_decompress(data: bytes) -> bytes:
    """The client's decompressor: we never write compressed values, and
    inflating someone else's could exhaust memory."""
    raise RefusedValue("servicegroup mc never decompresses a memcached value")


@functools.lru_cache(maxsize=None)
def _safe_client_class() -> type:
    """``SafeClient``, built on first use so that python-memcached is
    imported only when memcached is configured."""
    import memcache  # python-memcached

    class SafeClient(memcache.Client):
        """python-memcached's Client that decodes only text values.

        Values stored as bytes or text come back as ``str``; any other
        value (pickle, integer, compressed, not UTF-8) comes back as a
        ``NotOurs`` record without being decoded.  Never raises for a
        value, so a planted one cannot desynchronise the connection.
        """

        def _recv_value(self, server: Any, flags: int, rlen: int) -> Any:
            # flags 0 makes the base class read the value off the socket
            # and return its bytes untouched: it never sees the real flags
            raw = super()._recv_value(server, 0, rlen)
            if flags in _RAW_FLAGS and isinstance(raw, (bytes, str)):
                try:
                    return raw.decode("utf-8") if isinstance(raw, bytes) else raw
                except UnicodeDecodeError:
                    pass
            return NotOurs(str(server), int(flags), int(rlen))

    return SafeClient


def make_client(servers: list[str], socket_timeout: float,
                dead_retry: float) -> Any:
    """A memcached client that never unpickles: a ``SafeClient`` whose
    pickler, unpickler and decompressor refuse as well."""
    cls = _safe_client_class()
    return cls(list(servers), socket_timeout=socket_timeout,
               dead_retry=dead_retry, cache_cas=True,
               pickler=RefusingPickler, unpickler=RefusingUnpickler,
               decompressor=_refuse_decompress)


class LocalStore:
    """In-process key/value store with memcached's time-to-live rules.

    One per process (``LocalStore.shared()``), so every API instance of the
    process sees the same members.  Thread-safe.
    """

    _shared: "LocalStore | None" = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> "LocalStore":
        """The process-wide store."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _live(self, key: str, now: float) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= now:
            del self._data[key]
            return None
        return value

    def alive(self) -> bool:
        return True

    def get_multi(self, keys: Iterable[str]) -> dict[str, str]:
        now = time.time()
        with self._lock:
            out = {}
            for k in keys:
                v = self._live(k, now)
                if v is not None:
                    out[k] = v
            return out

    def set_multi(self, mapping: dict[str, str], ttl: int) -> list[str]:
        expires = time.time() + ttl if ttl else None
        with self._lock:
            for k, v in mapping.items():
                self._data[k] = (v, expires)
        return []

    def merge(self, key: str, fn: Callable[[Any], str | None]) -> bool:
        with self._lock:
            new = fn(self._live(key, time.time()))
            if new is not None:
                self._data[key] = (new, None)
        return True

    def close(self) -> None:
        pass


class MemcachedStore:
    """The same small interface over python-memcached and real servers."""

    def __init__(self, servers: list[str], socket_timeout: float,
                 dead_retry: float) -> None:
        self.servers = list(servers)
        self._client = make_client(self.servers, socket_timeout, dead_retry)

    @property
    def client(self) -> Any:
        """The ``SafeClient`` (tests check that it never unpickles)."""
        return self._client

    def alive(self) -> bool:
        """True when at least one server accepts a connection."""
        return any(s.connect() for s in self._client.servers)

    def get_multi(self, keys: Iterable[str]) -> dict[str, Any]:
        """key -> str, or ``NotOurs`` for a value this driver did not write."""
        return self._client.get_multi(list(keys))

    def set_multi(self, mapping: dict[str, str], ttl: int) -> list[str]:
        return list(self._client.set_multi(mapping, time=ttl))

    def merge(self, key: str, fn: Callable[[Any], str | None]) -> bool:
        """Read-modify-write with gets/cas; False when it kept racing."""
        client = self._client
        for _ in range(MERGE_TRIES):
            # a NotOurs value is passed on (fn ignores it) and replaced by
            # cas below: add would fail for ever on the planted key
            current = client.gets(key)
            new = fn(current)
            if new is None:
                return True
            if current is None:
                ok = client.add(key, new)
            else:
                ok = client.cas(key, new)
            client.reset_cas()
            if ok:
                return True
        return False

    def close(self) -> None:
        self._client.disconnect_all()
