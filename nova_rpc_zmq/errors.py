"""The one error hierarchy of nova-rpc-zmq, rooted at ``RPCException``.

Legacy names (``RemoteError``, ``Timeout``, ``UnsupportedRpcVersion``, ...)
keep the meaning and the constructor arguments they had in Nova-era
``nova.rpc.common``; ``nova_rpc_zmq.rpc.common`` re-exports them.

Two families are kept apart, as the style guide asks:

* ``LocalError`` subclasses are *our caller's* mistakes (bad argument, bad
  configuration): raised at once, with the fix in the message.
* ``RemoteProtocolError`` is *a peer's* bad message: the code that meets it
  logs it with the peer and topic, counts it and drops the message.
"""

from __future__ import annotations

from typing import Any


class RPCException(Exception):
    """Root of every error this package raises on purpose."""

    msg_fmt = "An unknown RPC related exception occurred."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if not message:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.msg_fmt
        self.message = message
        super().__init__(message)


class RemoteError(RPCException):
    """A server raised an exception we may not rebuild as its own class.

    ``exc_type`` is the remote class name, ``value`` its message and
    ``traceback`` the remote traceback text.
    """

    msg_fmt = "Remote error: %(exc_type)s %(value)s\n%(traceback)s."

    def __init__(self, exc_type: str | None = None, value: str | None = None,
                 traceback: str | None = None) -> None:
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback
        super().__init__(exc_type=exc_type, value=value, traceback=traceback)


class Timeout(RPCException):
    """No answer in time (or, for legacy callers, no host to ask)."""

    msg_fmt = ('Timeout while waiting on RPC response - topic: "%(topic)s", '
               'RPC method: "%(method)s" info: "%(info)s"')

    def __init__(self, info: str | None = None, topic: str | None = None,
                 method: str | None = None) -> None:
        self.info = info
        self.topic = topic
        self.method = method
        super().__init__(None, info=info or "<unknown>",
                         topic=topic or "<unknown>",
                         method=method or "<unknown>")


class NoHostsError(Timeout):
    """The matchmaker knows no host for a topic.

    A ``Timeout`` subclass because legacy callers already handle
    ``Timeout`` for "nobody answered"; this one is raised at once.
    """

    def __init__(self, topic: str, source: str = "the matchmaker") -> None:
        self.source = source
        super().__init__(info="no host serves topic %r in %s; add the topic "
                              "and its hosts there" % (topic, source),
                         topic=topic)


class NoLiveHostsError(NoHostsError):
    """Every host listed for a topic is known to be down."""

    def __init__(self, topic: str, dead_hosts: list[str],
                 source: str = "the matchmaker") -> None:
        self.dead_hosts = list(dead_hosts)
        Timeout.__init__(self, info="every host of topic %r is down: %s "
                                    "(listed in %s)"
                                    % (topic, ", ".join(dead_hosts), source),
                         topic=topic)
        self.source = source


class DuplicateMessageError(RPCException):
    msg_fmt = "Found duplicate message(%(msg_id)s). Skipping it."


class InvalidRPCConnectionReuse(RPCException):
    msg_fmt = "Invalid reuse of an RPC connection."


class UnsupportedRpcVersion(RPCException):
    msg_fmt = "Specified RPC version, %(version)s, not supported by this endpoint."


class UnsupportedRpcEnvelopeVersion(RPCException):
    msg_fmt = ("Specified RPC envelope version, %(version)s, not supported by "
               "this endpoint.")


class RpcVersionCapError(RPCException):
    msg_fmt = "Specified RPC version cap, %(version_cap)s, is too low"


class RemoteProtocolError(RPCException):
    """A message from the network breaks the wire rules.

    ``reason`` is a short machine-friendly label used as the counter name
    (``bad_topic``, ``bad_json``, ``too_many_frames`` ...).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__("%s: %s" % (reason, detail) if detail else reason)


class AuthenticationError(RPCException):
    """A peer refused us (CURVE key not allowed, mechanism mismatch)."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__("host %s refused the connection: %s" % (host, reason))


class SocketBudgetError(RPCException):
    """This process may open no more sockets (EMFILE, or the ZeroMQ
    context's socket cap reached); the message names the limit and the fix.

    ``host`` is the peer that could not get a socket; ``limit`` the
    open-files limit in force. A fanout carries on with the other hosts.
    """

    def __init__(self, host: str, limit: int, open_sockets: int,
                 detail: str = "") -> None:
        self.host = host
        self.limit = limit
        self.open_sockets = open_sockets
        super().__init__(
            "cannot open a socket to host %s: this process reached its "
            "budget of open files (RLIMIT_NOFILE %d, %d outbound sockets "
            "open%s); raise the limit (`ulimit -n` before starting it, "
            "LimitNOFILE= in its systemd unit, nofile in "
            "/etc/security/limits.conf) or lower "
            "rpc_zmq_outbound_idle_timeout so idle peers' sockets close "
            "sooner" % (host, limit, open_sockets,
                        "; %s" % detail if detail else ""))


class LocalError(RPCException):
    """Our caller's mistake: raised at once, never sent on the wire."""


class ConfigurationError(LocalError):
    """A flag, config file or ring file is wrong; the message says the fix."""


class ClientException(Exception):
    """Wraps an exception a server method *expects* to raise.

    Raised through ``rpc.common.catch_client_exception``; the server logs it
    at debug level instead of as an error, and the caller gets the original.
    """

    def __init__(self) -> None:
        import sys
        self._exc_info = sys.exc_info()
        super().__init__()
