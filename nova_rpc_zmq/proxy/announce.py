"""A proxy's registration in the matchmaker of its transport URL.

The proxy registers ``host:frontend_port:backend_port`` under
``proxied.PROXY_KEY`` (a publisher proxy also
``host:frontend_port:publisher_port`` under ``pubsub.PUBLISHER_KEY``) with a TTL of ``zmq_target_expire`` seconds,
registers again every ``zmq_target_update`` seconds from a thread of its
own (a slow or absent Redis never holds up the forwarding loop), and
unregisters when it stops. A failed registration is logged and retried
at the next turn; callers keep the proxies they knew meanwhile.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

LOG = logging.getLogger(__name__)

#: Seconds between attempts while the registration fails.
RETRY_SECONDS = 1.0


class Announcer:
    """Keeps each ``(key, member)`` of ``registrations`` registered in
    ``registry``.

    ``start`` registers once (raises what the registry raises, so that a
    proxy whose matchmaker is unreachable at start says so) and starts the
    refresh thread; ``stop`` ends it and unregisters (never raises).
    """

    def __init__(self, registry: Any, registrations: list[tuple[str, str]],
                 ttl: float, every: float) -> None:
        self.registry = registry
        self.registrations = list(registrations)
        self.ttl = ttl
        self.every = every if every > 0 else max(1.0, ttl / 2) if ttl > 0 \
            else 60.0
        self.ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh,
                                        name="announce", daemon=True)

    def _register(self) -> None:
        for key, member in self.registrations:
            self.registry.register(key, member, self.ttl)

    def _shown(self, where: str = "under") -> str:
        return ", ".join("%s %s %s" % (member, where, key)
                         for key, member in self.registrations)

    def start(self) -> None:
        self._register()
        self.ok = True
        LOG.info("registered %s in the %s matchmaker (TTL %ss, refreshed "
                 "every %ss)", self._shown(), self.registry.name, self.ttl,
                 self.every)
        self._thread.start()

    def _refresh(self) -> None:
        wait = self.every
        while not self._stop.wait(wait):
            try:
                self._register()
            except Exception as exc:  # noqa: BLE001 - retried, logged
                if self.ok:
                    LOG.error("could not refresh %s in the %s matchmaker "
                              "(retrying every %.0fs): %s", self._shown(),
                              self.registry.name, RETRY_SECONDS, exc)
                self.ok = False
                wait = RETRY_SECONDS
                continue
            if not self.ok:
                LOG.info("registered %s again", self._shown())
            self.ok = True
            wait = self.every

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        for key, member in self.registrations:
            self.registry.unregister(key, member)
        LOG.info("unregistered %s", self._shown("from"))
        self.registry.close()
