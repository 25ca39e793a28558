"""Who may connect: the CURVE allow list, as a plain object (no sockets).

``AllowList`` holds the public keys found in ``rpc_zmq_curve_keys_dir``
(one public certificate ``<host>.key`` per host) and answers ZAP questions
with a ``Decision``.  The ZAP loop in ``zap.py`` consults it; tests call it
directly.

Key rotation needs no restart: add the host's new ``<host-new>.key`` (or
replace ``<host>.key``), remove the old file, and within ``check_interval``
seconds the next handshake sees the new set.  Connections that completed
their handshake before the change stay up (ZAP is asked once per
connection), so to cut off a compromised key at once, restart the receiver
after removing its file.

Decisions (ZAP status codes, ZMTP RFC 27):

=====================================  ======  =========================
request                                status  reason
=====================================  ======  =========================
CURVE, key listed                      200     OK (user id = host name)
CURVE, key not listed                  400     no matching key
CURVE, credentials not a 32-byte key   400     malformed credentials
NULL, PLAIN or any other mechanism     400     mechanism mismatch: CURVE
                                               required
keys dir missing or unreadable         500     keys dir unreadable
=====================================  ======  =========================

A malformed file in the directory is logged once (until it changes) and
skipped; the other files still load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from zmq.utils import z85

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.security import keys as keysmod

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

#: Reason labels, also the names of the refusal counters.
NO_MATCHING_KEY = "no matching key"
MECHANISM_MISMATCH = "mechanism mismatch"
MALFORMED_CREDENTIALS = "malformed credentials"
KEYS_DIR_UNREADABLE = "keys dir unreadable"

_CURVE = b"CURVE"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The answer to one ZAP request.

    ``status_code`` is the ZAP code as text ('200', '400' or '500');
    ``reason`` is one of the labels above (or 'OK') and becomes the ZAP
    status text; ``host`` is the key's host name when known.
    """

    allowed: bool
    status_code: str
    reason: str
    host: str | None = None
    detail: str = ""


# (name, mtime_ns, size, inode) of every '*.key' entry, plus the dir's own.
_Signature = tuple[Any, ...]


class AllowList:
    """The public keys allowed to connect, read from ``keys_dir``.

    Thread-safe.  ``check`` re-reads the directory when it changed, looking
    at most once every ``check_interval`` seconds (a listing and one stat
    per file).  Raises ConfigurationError at construction when ``keys_dir``
    is not a directory.
    """

    def __init__(self, keys_dir: str, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not os.path.isdir(keys_dir):
            raise ConfigurationError(
                "rpc_zmq_curve_keys_dir %s is not a directory; create it and "
                "put each allowed host's public certificate in it as "
                "<host>.key (`nova-rpc-zmq keys generate` starts it with this "
                "host's own)" % keys_dir)
        self.keys_dir = keys_dir
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[bytes, str] = {}   # raw 32-byte key -> host
        self._signature: _Signature | None = None
        self._unreadable: str | None = None
        self._next_check = 0.0
        self._reported: dict[str, tuple[Any, ...]] = {}
        self._refusals: dict[str, int] = {}
        self.reloads = 0
        self.refresh(force=True)

    @classmethod
    def from_settings(cls, settings: config.Settings, check_interval: float = 1.0
                      ) -> "AllowList":
        """The allow list of ``settings.rpc_zmq_curve_keys_dir``."""
        return cls(settings.rpc_zmq_curve_keys_dir, check_interval)

    # ----------------------------------------------------------- reading --
    def _scan(self) -> _Signature:
        """The directory's signature; raises OSError when unreadable."""
        top = os.stat(self.keys_dir)
        entries = []
        with os.scandir(self.keys_dir) as it:
            for entry in it:
                if not entry.name.endswith(keysmod.CERT_SUFFIX) \
                        or entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except OSError:  # removed while listing: next scan sees it
                    continue
                entries.append((entry.name, st.st_mtime_ns, st.st_size,
                                st.st_ino))
        return (top.st_mtime_ns, tuple(sorted(entries)))

    def _load(self, signature: _Signature) -> dict[bytes, str]:
        by_key: dict[bytes, str] = {}
        for name, mtime, size, ino in signature[1]:
            path = os.path.join(self.keys_dir, name)
            host = name[:-len(keysmod.CERT_SUFFIX)]
            stamp = (mtime, size, ino)
            try:
                cert = keysmod.read_certificate(path)
            except ConfigurationError as exc:
                if self._reported.get(path) != stamp:
                    self._reported[path] = stamp
                    LOG.error("skipping malformed key file: %s", exc)
                continue
            if cert.secret is not None and self._reported.get(path) != stamp:
                self._reported[path] = stamp
                LOG.warning("%s holds a secret key: a keys dir should hold "
                            "public certificates only (`nova-rpc-zmq keys "
                            "show` output); replace it and keep the secret "
                            "on its own host", path)
            raw = z85.decode(cert.public)
            if raw in by_key and by_key[raw] != host:
                LOG.warning("%s repeats the public key of %s.key; the key "
                            "is credited to %s", path, by_key[raw], host)
            by_key[raw] = host
        return by_key

    def refresh(self, force: bool = False) -> bool:
        """Re-read the directory if it changed (or ``force``); returns True
        when the allowed set was reloaded.  Never raises for a bad file."""
        with self._lock:
            now = self._clock()
            if not force and now < self._next_check:
                return False
            self._next_check = now + self.check_interval
            try:
                signature = self._scan()
            except OSError as exc:
                # Fail closed: a vanished dir must not keep old keys valid.
                reason = "%s: %s" % (self.keys_dir, exc.strerror)
                if self._unreadable != reason:
                    LOG.error("CURVE keys dir unreadable, refusing every "
                              "client until it is back: %s", reason)
                changed = self._unreadable is None
                self._unreadable = reason
                self._by_key = {}
                self._signature = None
                return changed
            if self._unreadable is not None:
                LOG.info("CURVE keys dir %s is readable again", self.keys_dir)
                self._unreadable = None
            if signature == self._signature:
                return False
            self._by_key = self._load(signature)
            self._signature = signature
            self.reloads += 1
            LOG.info("CURVE allow list %s: %d key(s) of host(s) %s",
                     self.keys_dir, len(self._by_key),
                     ", ".join(sorted(set(self._by_key.values()))) or "-")
            return True

    # ---------------------------------------------------------- deciding --
    def check(self, mechanism: bytes, client_key: bytes) -> Decision:
        """Decide on one ZAP request: ``mechanism`` (b'CURVE', b'NULL',
        b'PLAIN', ...) and, for CURVE, the client's 32 raw key bytes.

        Never raises; refusals are counted by reason.
        """
        self.refresh()
        if mechanism != _CURVE:
            decision = Decision(False, "400", MECHANISM_MISMATCH,
                                detail="CURVE required, peer offered %s"
                                % mechanism.decode("ascii", "replace"))
        elif not isinstance(client_key, bytes) \
                or len(client_key) != keysmod.RAW_KEY_LENGTH:
            decision = Decision(False, "400", MALFORMED_CREDENTIALS,
                                detail="CURVE credentials are not a %d-byte "
                                "key" % keysmod.RAW_KEY_LENGTH)
        else:
            with self._lock:
                unreadable = self._unreadable
                host = self._by_key.get(client_key)
            if unreadable is not None:
                decision = Decision(False, "500", KEYS_DIR_UNREADABLE,
                                    detail=unreadable)
            elif host is None:
                decision = Decision(
                    False, "400", NO_MATCHING_KEY,
                    detail="key %s is in no file of %s" % (
                        z85.encode(client_key).decode("ascii"),
                        self.keys_dir))
            else:
                return Decision(True, "200", "OK", host=host)
        with self._lock:
            self._refusals[decision.reason] = \
                self._refusals.get(decision.reason, 0) + 1
        return decision

    # -------------------------------------------------------- inspection --
    def hosts(self) -> dict[str, str]:
        """Allowed Z85 public key (text) -> host name, after a refresh."""
        self.refresh()
        with self._lock:
            return {z85.encode(k).decode("ascii"): h
                    for k, h in self._by_key.items()}

    def host_for(self, client_key: bytes) -> str | None:
        """The host whose raw 32-byte public key is ``client_key``."""
        self.refresh()
        with self._lock:
            return self._by_key.get(client_key)

    @property
    def refusals(self) -> dict[str, int]:
        """Refusals so far, by reason label (a copy)."""
        with self._lock:
            return dict(self._refusals)
