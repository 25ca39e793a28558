"""CURVE key pairs and public certificates on disk.

Deployment model: every host keeps its key pair in one file,
``rpc_zmq_curve_key_file`` (mode 0600), and every host has a directory,
``rpc_zmq_curve_keys_dir``, of public certificates named ``<host>.key``.
That directory is both the receiver's allow list and where a sender finds
the server key of the host it sends to.

Files use the ZeroMQ certificate text format (the one ``zmq.auth`` and
czmq read and write), a small subset of ZPL::

    #   comment lines start with '#'
    metadata
        host = "node1"
    curve
        public-key = "<40 Z85 characters>"
        secret-key = "<40 Z85 characters>"     (key pair file only)

Section names start in column 0; ``name = value`` lines are indented and
belong to the section above them; values may be quoted.  Everything that
breaks these rules is a ``ConfigurationError`` naming the file, the line
and the fix.  No error message, log line or repr repeats secret key text:
text quoted from a file that failed to parse has every run of Z85
characters long enough to be key material hidden.

Keys are kept in their Z85 text form (40 bytes), which pyzmq's
``curve_publickey`` / ``curve_serverkey`` options accept directly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tempfile
from typing import TYPE_CHECKING

import zmq
from zmq.utils import z85

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.redact import hide_key_text

if TYPE_CHECKING:
    from nova_rpc_zmq import config

#: The Z85 digits in value order (ZeroMQ RFC 32).
Z85_DIGITS = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
              ".-:+=^!/*?&<>()[]{}@%$#")
_Z85_VALUE = {c: i for i, c in enumerate(Z85_DIGITS)}
Z85_KEY_LENGTH = 40
RAW_KEY_LENGTH = 32
#: Suffix of public certificates in a keys dir: ``<host>.key``.
CERT_SUFFIX = ".key"

_SECTIONS = ("metadata", "curve")
_CURVE_FIELDS = ("public-key", "secret-key")
_ENTRY_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_./-]*)\s*=\s*(.*)$")
# Host names become file names: no separators, no leading dot.
_HOST_FILE_RE = re.compile(r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$")
_GENERATE_HINT = "nova-rpc-zmq keys generate"


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair in Z85 form; ``secret`` is None for a public key.

    The repr never shows the secret half, so a KeyPair may be logged.
    """

    public: bytes
    secret: bytes | None = None

    def __repr__(self) -> str:
        return "KeyPair(public=%r, secret=%s)" % (
            self.public, "<hidden>" if self.secret else None)

    @property
    def public_raw(self) -> bytes:
        """The public key as its 32 raw bytes (what ZAP requests carry)."""
        return z85.decode(self.public)

    @classmethod
    def from_settings(cls, settings: config.Settings) -> "KeyPair":
        """This host's key pair, read from ``rpc_zmq_curve_key_file``."""
        return load_keypair(settings.rpc_zmq_curve_key_file)


@dataclasses.dataclass(frozen=True)
class Certificate:
    """Everything a certificate file holds: keys (Z85) and metadata.

    Like KeyPair's, the repr never shows the secret half.
    """

    public: bytes
    secret: bytes | None
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return "Certificate(public=%r, secret=%s, metadata=%r)" % (
            self.public, "<hidden>" if self.secret else None, self.metadata)


def curve_keypair(key_file: str) -> KeyPair:
    """This host's key pair for ``rpc_zmq_curve = true``: checks that
    libzmq has CURVE and reads ``key_file``. Raises ConfigurationError
    naming the option (``rpc_zmq_curve`` or ``rpc_zmq_curve_key_file``),
    the file and the fix."""
    if not zmq.has("curve"):
        raise ConfigurationError(
            "rpc_zmq_curve = true but this libzmq (%s) has no CURVE "
            "support: install a libzmq built with libsodium, or set "
            "rpc_zmq_curve = false" % zmq.zmq_version())
    try:
        return load_keypair(key_file)
    except ConfigurationError as exc:
        raise ConfigurationError("rpc_zmq_curve_key_file: %s" % exc) \
            from None


def generate() -> KeyPair:
    """A fresh CURVE key pair (needs a libzmq built with CURVE)."""
    if not zmq.has("curve"):
        raise ConfigurationError(
            "this libzmq (%s) has no CURVE support: install a libzmq built "
            "with libsodium, or set rpc_zmq_curve = false" % zmq.zmq_version())
    public, secret = zmq.curve_keypair()
    return KeyPair(public=public, secret=secret)


def is_z85_key(value: bytes | str) -> bool:
    """True when ``value`` is a 40-character Z85 text of a 32-byte key."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    if len(value) != Z85_KEY_LENGTH or not set(value) <= _Z85_VALUE.keys():
        return False
    # Each 5 digits encode 4 bytes; a group above 2**32 - 1 is no key.
    for start in range(0, Z85_KEY_LENGTH, 5):
        number = 0
        for char in value[start:start + 5]:
            number = number * 85 + _Z85_VALUE[char]
        if number >= 1 << 32:
            return False
    return True


# --------------------------------------------------------------- reading --

def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_certificate(text: str, path: str) -> Certificate:
    """Parse certificate ``text``; ``path`` is only used in error messages.

    Raises ConfigurationError naming ``path``, the line and the fix.
    """
    def fail(lineno: int, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError("%s line %d: %s; %s"
                                  % (path, lineno, problem, fix))

    def quote(text: str) -> str:
        # the file may hold a secret key: never repeat what could be one
        return hide_key_text(repr(text))

    section: str | None = None
    curve: dict[str, tuple[str, int]] = {}
    metadata: dict[str, str] = {}
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            if stripped not in _SECTIONS:
                raise fail(lineno, "unknown section %s" % quote(stripped),
                           "a certificate has only the sections 'metadata' "
                           "and 'curve' (names start in column 0, entries "
                           "are indented)")
            section = stripped
            continue
        match = _ENTRY_RE.match(stripped)
        if section is None:
            raise fail(lineno, "entry %s is outside any section" % quote(stripped),
                       "put it under an unindented 'curve' or 'metadata' "
                       "line")
        if match is None:
            raise fail(lineno, "%s is not a 'name = value' entry" % quote(stripped),
                       "write e.g. public-key = \"<40 Z85 characters>\"")
        name, value = match.group(1), _unquote(match.group(2))
        if section == "metadata":
            metadata[name] = value
            continue
        if name not in _CURVE_FIELDS:
            raise fail(lineno, "unknown curve entry %s" % quote(name),
                       "the curve section holds only public-key and "
                       "secret-key")
        if name in curve:
            raise fail(lineno, "%s is given twice (first on line %d)"
                       % (name, curve[name][1]), "keep only one")
        if not is_z85_key(value):
            raise fail(lineno, "%s is not a %d-character Z85 key"
                       % (name, Z85_KEY_LENGTH),
                       "copy the key again without changes, or make a new "
                       "pair with `%s`" % _GENERATE_HINT)
        curve[name] = (value, lineno)
    if "public-key" not in curve:
        raise fail(max(lineno, 1), "no public-key found",
                   "a certificate needs a 'curve' section with "
                   "public-key = \"...\"; copy it again from the other "
                   "host's `nova-rpc-zmq keys show`")
    public = curve["public-key"][0].encode("ascii")
    secret = curve["secret-key"][0].encode("ascii") \
        if "secret-key" in curve else None
    derived = _public_of(secret) if secret is not None else None
    if derived is not None and derived != public:
        raise fail(curve["secret-key"][1],
                   "secret-key does not belong to public-key (line %d)"
                   % curve["public-key"][1],
                   "restore the file from its backup or make a new pair "
                   "with `%s --force`" % _GENERATE_HINT)
    return Certificate(public=public, secret=secret, metadata=metadata)


def _public_of(secret: bytes) -> bytes | None:
    try:
        return zmq.curve_public(secret)
    except zmq.ZMQError:  # libzmq without CURVE: cannot verify the pair
        return None


def read_certificate(path: str) -> Certificate:
    """Read and parse the certificate file at ``path``.

    Raises ConfigurationError when it is missing, unreadable or malformed.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except FileNotFoundError:
        raise ConfigurationError(
            "CURVE certificate %s does not exist; create it with `%s` or "
            "copy it from its host" % (path, _GENERATE_HINT)) from None
    except OSError as exc:
        raise ConfigurationError("cannot read CURVE certificate %s: %s; fix "
                                 "its permissions" % (path, exc.strerror)
                                 ) from exc
    if len(data) > 64 * 1024:
        raise ConfigurationError("%s is larger than 64 KiB, so it is no "
                                 "CURVE certificate; point the option at "
                                 "the right file" % path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[:exc.start].count(b"\n") + 1
        raise ConfigurationError(
            "%s line %d: not UTF-8 text, so no CURVE certificate; point the "
            "option at the right file" % (path, lineno)) from exc
    return parse_certificate(text, path)


def check_private_mode(path: str) -> None:
    """Raise ConfigurationError unless only the owner may access ``path``."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise ConfigurationError("cannot stat CURVE key file %s: %s"
                                 % (path, exc.strerror)) from exc
    if mode & 0o077:
        raise ConfigurationError(
            "CURVE key file %s holds a secret key but group or others may "
            "access it (mode %04o); run `chmod 600 %s`" % (path, mode, path))


def load_keypair(path: str) -> KeyPair:
    """This host's key pair from ``path`` (both halves, mode 0600).

    Raises ConfigurationError when the file is missing, malformed, holds no
    secret key, or is accessible by group or others.
    """
    cert = read_certificate(path)
    if cert.secret is None:
        raise ConfigurationError(
            "%s holds only a public key; rpc_zmq_curve_key_file must be this "
            "host's key pair file made by `%s`" % (path, _GENERATE_HINT))
    check_private_mode(path)
    return KeyPair(public=cert.public, secret=cert.secret)


def load_public(path: str) -> bytes:
    """The Z85 public key of the certificate at ``path``.

    A file that also holds a secret key is accepted (its public half is
    returned).  Raises ConfigurationError when missing or malformed.
    """
    return read_certificate(path).public


def cert_path(host: str, keys_dir: str) -> str:
    """``keys_dir/<host>.key``; raises ConfigurationError for a host name
    that cannot be a file name (separators, leading dot)."""
    if not _HOST_FILE_RE.match(host or ""):
        raise ConfigurationError(
            "host name %r cannot name a key file in %s; use the host's plain "
            "name, FQDN or IP address" % (host, keys_dir))
    return os.path.join(keys_dir, host + CERT_SUFFIX)


def server_key_for(host: str, keys_dir: str) -> bytes:
    """The Z85 public key a sender must use as CURVE_SERVERKEY for ``host``.

    Reads ``keys_dir/<host>.key`` on every call (callers cache sockets, so
    this runs once per host).  Raises ConfigurationError when it is missing
    or malformed.
    """
    path = cert_path(host, keys_dir)
    if not os.path.exists(path):
        raise ConfigurationError(
            "no public key for host %s in %s: copy %s's `nova-rpc-zmq keys "
            "show` output to %s" % (host, keys_dir, host, path))
    return load_public(path)


# --------------------------------------------------------------- writing --

def format_certificate(public: bytes, secret: bytes | None = None,
                       host: str | None = None) -> str:
    """Certificate text for ``public`` (and ``secret``, for a key pair)."""
    for half, key in (("public", public), ("secret", secret)):
        if key is not None and not is_z85_key(key):
            # not even a prefix of the key: it may be the secret half
            raise ValueError("the %s key is not a %d-character Z85 CURVE key"
                             % (half, Z85_KEY_LENGTH))
    if secret is not None:
        banner = ["#   ZeroMQ CURVE key pair%s (nova-rpc-zmq)"
                  % (" of host %s" % host if host else ""),
                  "#   SECRET: keep this file mode 0600 on this host only.",
                  "#   Give other hosts `nova-rpc-zmq keys show` instead."]
    else:
        banner = ["#   ZeroMQ CURVE public certificate%s (nova-rpc-zmq)"
                  % (" of host %s" % host if host else ""),
                  "#   Copy it as <keys dir>/%s.key to every host that must "
                  "accept this one." % (host or "<host>")]
    lines = banner + ["", "metadata"]
    if host:
        lines.append('    host = "%s"' % host)
    lines += ["curve", '    public-key = "%s"' % public.decode("ascii")]
    if secret is not None:
        lines.append('    secret-key = "%s"' % secret.decode("ascii"))
    return "\n".join(lines) + "\n"


def _write_atomically(path: str, text: str, mode: int, dir_mode: int,
                      force: bool) -> None:
    """Write ``text`` to ``path`` with ``mode`` via a temp file and rename.

    The temp file is created with ``mode`` from the start (os.open), so the
    secret is never readable by others, not even for a moment.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=dir_mode, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError("cannot create directory %s for %s: %s"
                                 % (parent, path, exc.strerror)) from exc
    if not force and os.path.exists(path):
        raise ConfigurationError(
            "%s already exists; pass --force (force=True) to replace it, "
            "knowing that hosts holding the old public key will refuse this "
            "host until they get the new one" % path)
    fd, tmp = -1, ""
    try:
        # mkstemp gives a unique 0600 name; the suffix keeps it out of
        # '*.key' globs while it is being written.
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp", dir=parent)
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if force:
            os.replace(tmp, path)
        else:
            # link() fails if the target appeared meanwhile: no overwrite.
            os.link(tmp, path)
            os.unlink(tmp)
        tmp = ""
    except FileExistsError:
        raise ConfigurationError("%s already exists; pass --force to replace "
                                 "it" % path) from None
    except OSError as exc:
        raise ConfigurationError("cannot write %s: %s" % (path, exc.strerror)
                                 ) from exc
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_keypair(path: str, kp: KeyPair, force: bool = False,
                  host: str | None = None) -> None:
    """Write ``kp`` (both halves) to ``path`` with mode 0600, atomically.

    Missing parent directories are created with mode 0700.  Refuses to
    replace an existing file unless ``force``.  Raises ConfigurationError.
    """
    if kp.secret is None:
        raise ValueError("write_keypair needs a KeyPair with its secret half")
    _write_atomically(path, format_certificate(kp.public, kp.secret, host),
                      0o600, 0o700, force)


def write_public(path: str, public: bytes, host: str | None = None) -> None:
    """Write the public certificate of ``public`` to ``path`` (mode 0644),
    atomically, replacing any older file.  Raises ConfigurationError."""
    _write_atomically(path, format_certificate(public, None, host),
                      0o644, 0o755, True)
