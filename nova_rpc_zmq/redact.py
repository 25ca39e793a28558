"""Hide secrets in text meant for people: error messages and log lines.

Two kinds of secret reach such text by accident: the password of a
database URL (``database_connection``) and CURVE key material echoed from a
key file that failed to parse.  Both helpers are pure functions of text.
"""

from __future__ import annotations

import re
from typing import Iterable

#: what a masked password reads as (SQLAlchemy's own choice)
MASK = "***"

# ``[scheme://]user:password@`` - the password runs to the last '@' of the
# token, so an unescaped '/' or ':' inside it is still hidden; ``(?!//)``
# keeps ``scheme://user@host`` (no password) from reading as one.
_USERINFO_RE = re.compile(
    r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^\s:/@'\"]*):(?!//)(?P<pw>[^\s'\"]*)@")
#: The Z85 alphabet (ZeroMQ RFC 32).  A run this long of its characters
#: may be (part of) a key: 12 characters are 76 bits of a 256-bit key.
_Z85_RUN_RE = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{12,}")


def mask_url(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the password of every ``user:password@`` masked
    (``postgresql://nova:***@db/nova``), and every literal of ``secrets``
    (e.g. the parsed password, which a driver may echo) replaced too."""
    out = _USERINFO_RE.sub(lambda m: "%s:%s@" % (m.group("head"), MASK), text)
    for secret in secrets:
        # a one- or two-character password would mask half the message
        if secret and len(secret) >= 3:
            out = out.replace(secret, MASK)
    return out


def hide_key_text(text: str) -> str:
    """``text`` with every run of 12 or more Z85 characters replaced by
    ``<N characters hidden>``: a line of a key file that failed to parse
    may hold a secret key, so an error message never repeats it."""
    return _Z85_RUN_RE.sub(lambda m: "<%d characters hidden>" % len(m.group(0)), text)
