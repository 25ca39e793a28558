"""The receiver's refusal summary carries its count.

A sender with a wrong server key is refused at every retry of libzmq
(about every 100 ms), before ZAP is asked; the authenticator logs the first
refusal at once, holds the next ones for ``warn_every`` seconds, and its
next line says how many came in between. Here ``warn_every`` is short, and
a log handler reads the counter in the authenticator's own thread at the
moment each line is written, so the count in the summary can be checked
exactly against the refusals counted.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import zmq

from nova_rpc_zmq.security import configure_server
from nova_rpc_zmq.security.keys import KeyPair
from nova_rpc_zmq.security.policy import AllowList
from nova_rpc_zmq.security.zap import BAD_HANDSHAKE, ZapAuthenticator
from tests.support import scaled, wait_for

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(60)]

HELD = re.compile(r"\((\d+) more like it since the last report\)")


class _Lines(logging.Handler):
    """Keeps each refusal line of the authenticator with the number of
    bad handshakes counted when it was written (same thread: exact)."""

    def __init__(self, auth: ZapAuthenticator) -> None:
        super().__init__(logging.WARNING)
        self.auth = auth
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "CURVE handshake refused on" in text and BAD_HANDSHAKE in text:
            self.lines.append((text, self.auth.refused.get(BAD_HANDSHAKE, 0)))


def test_summary_line_counts_the_refusals_in_between(tmp_path: Any) -> None:
    """Refusals in one interval give one line at once, then one line
    that says how many came in between: the count matches the counter."""
    server = KeyPair(*zmq.curve_keypair())
    client = KeyPair(*zmq.curve_keypair())
    wrong_server_key = zmq.curve_keypair()[0]
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o750)
    ctx = zmq.Context()
    interval = scaled(1.0)
    auth = ZapAuthenticator(ctx, AllowList(str(keys_dir)), warn_every=interval)
    lines = _Lines(auth)
    logger = logging.getLogger("nova_rpc_zmq.security.zap")
    logger.addHandler(lines)
    auth.start()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    configure_server(pull, server)
    auth.watch_server(pull)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.curve_secretkey = client.secret
    push.curve_publickey = client.public
    push.curve_serverkey = wrong_server_key
    try:
        push.connect("tcp://127.0.0.1:%d" % port)
        # libzmq retries the refused handshake by itself: the second line
        # comes with the first refusal after the interval
        wait_for(lambda: len(lines.lines) >= 2, 10 + interval,
                 what="a second refusal line")
    finally:
        push.close(0)
        logger.removeHandler(lines)
        pull.close(0)
        auth.stop()
        ctx.term()
    (first, at_first), (summary, at_summary) = lines.lines[:2]
    assert at_first == 1 and not HELD.search(first), first
    held = HELD.search(summary)
    assert held, summary
    # every refusal between the two lines is in the summary's count
    assert int(held.group(1)) == at_summary - 2, (summary, at_summary)
    assert int(held.group(1)) >= 2, "expected several refusals in %.1f s" % interval
