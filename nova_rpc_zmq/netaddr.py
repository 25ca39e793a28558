"""Addresses: bind addresses (``*``, an IP, an interface name) and peers.

Pure helpers; the only I/O is asking the kernel for an interface's address
and the resolver for a host name, both at start-up or once per peer.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from nova_rpc_zmq.errors import ConfigurationError

_SIOCGIFADDR = 0x8915


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name``, or None if it has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name[:15].encode()))
    except OSError:
        return None
    return socket.inet_ntoa(packed[20:24])


def resolve_bind_address(value: str) -> str:
    """Turn ``rpc_zmq_bind_address`` into something ZeroMQ can bind.

    ``*`` stays ``*``; an IP literal stays itself; anything else is taken as
    an interface name (``eth0``) and replaced by its IPv4 address.
    Raises ConfigurationError naming the option and the fix.
    """
    value = value.strip()
    if value in ("*", "0.0.0.0", "::"):
        return "*" if value != "::" else value
    if is_ip(value):
        return value.strip("[]")
    if value and all(c.isalnum() or c in "-_.:@" for c in value):
        addr = interface_address(value)
        if addr:
            return addr
    raise ConfigurationError(
        "rpc_zmq_bind_address = %r is neither '*', an IP address, nor a "
        "network interface with an IPv4 address on this machine; set it to "
        "'*', an address of this host, or an interface name such as eth0"
        % value)


def tcp_endpoint(host: str, port: int) -> str:
    """``tcp://host:port``, with brackets around IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    return "tcp://%s:%d" % (host, port)


def local_connect_address(bind_address: str) -> str:
    """Where a process on this host reaches its own receiver."""
    resolved = resolve_bind_address(bind_address)
    if resolved == "*" or resolved == "0.0.0.0":
        return "127.0.0.1"
    if resolved == "::":
        return "::1"
    return resolved


def resolves(host: str) -> list[str]:
    """Addresses ``host`` resolves to (empty when it does not resolve)."""
    if is_ip(host):
        return [host.strip("[]")]
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in seen:
            seen.append(addr)
    return seen
