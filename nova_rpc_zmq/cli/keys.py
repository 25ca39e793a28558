"""``nova-rpc-zmq keys``: make and show this host's CURVE keys.

``keys generate`` writes this host's key pair to ``rpc_zmq_curve_key_file``
(mode 0600) and its public certificate to ``<rpc_zmq_curve_keys_dir>/<host>
.key`` (mode 0644), so the host accepts itself, then says what to copy
where.  ``keys show`` prints the public certificate to give other hosts:
``nova-rpc-zmq keys show > /etc/nova/zmq/keys/$(hostname).key`` there.

Options not given on the command line come from the configuration
(``--config-file``, else nova.conf in its usual places), else from the
built-in defaults.  Exit status 0 on success, 1 when a file or option is
wrong (the reason and the fix go to stderr).
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any, Sequence

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.security import keys as keysmod

DEFAULT_KEY_FILE = "/etc/nova/zmq/host.key"
DEFAULT_KEYS_DIR = "/etc/nova/zmq/keys"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``keys`` (with ``generate`` and ``show``) to the top parser."""
    p = subparsers.add_parser(
        "keys", help="make and show this host's CURVE keys",
        description="Make this host's CURVE key pair and show the public "
                    "certificate other hosts need (rpc_zmq_curve).")
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION")
    actions.required = True

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config-file", action="append", default=[],
                         metavar="FILE",
                         help="nova.conf to read defaults from (repeatable)")
        sub.add_argument("--key-file", metavar="F",
                         help="this host's key pair file "
                              "(default: rpc_zmq_curve_key_file)")
        sub.add_argument("--host", metavar="H",
                         help="this host's name (default: rpc_zmq_host)")

    gen = actions.add_parser(
        "generate", help="write a new key pair and this host's certificate",
        description="Write a new key pair to the key file (mode 0600) and "
                    "the public certificate to KEYS_DIR/HOST.key (0644).")
    common(gen)
    gen.add_argument("--keys-dir", metavar="D",
                     help="directory of public certificates "
                          "(default: rpc_zmq_curve_keys_dir)")
    gen.add_argument("--force", action="store_true",
                     help="replace an existing key pair (hosts holding the "
                          "old public key will refuse this one until "
                          "updated)")
    gen.set_defaults(run=run, keys_command="generate")
    show = actions.add_parser(
        "show", help="print the public certificate to copy to other hosts",
        description="Print this host's public certificate, the content of "
                    "HOST.key in the other hosts' keys dirs.")
    common(show)
    show.set_defaults(run=run, keys_command="show")
    p.set_defaults(run=run)
    return p


def _settings(config_files: list[str],
              log_argv: Sequence[str] = ()) -> Any | None:
    """The configured Settings (logging set up from the same files and the
    oslo.log flags ``log_argv``), or None without a config module."""
    try:
        from nova_rpc_zmq import config
    except ImportError:
        return None
    argv: list[str] = []
    for path in config_files:
        argv += ["--config-file", path]
    if hasattr(config, "parse_args"):
        from nova_rpc_zmq import logs
        return logs.parse_args(argv + list(log_argv), "nova-rpc-zmq")
    return config.load_settings()


def _resolve(args: argparse.Namespace) -> tuple[str, str, str]:
    """(key file, keys dir, host): flags first, then config, then defaults."""
    key_file = args.key_file
    keys_dir = getattr(args, "keys_dir", None)
    host = args.host
    if key_file is None or keys_dir is None or host is None \
            or args.config_file:
        settings = _settings(args.config_file, getattr(args, "log_argv", []))
        if settings is not None:
            key_file = key_file or settings.rpc_zmq_curve_key_file
            keys_dir = keys_dir or settings.rpc_zmq_curve_keys_dir
            host = host or settings.rpc_zmq_host
    return (key_file or DEFAULT_KEY_FILE, keys_dir or DEFAULT_KEYS_DIR,
            host or socket.gethostname())


def run(args: argparse.Namespace) -> int:
    """Run ``keys generate`` or ``keys show``; return the exit status."""
    try:
        key_file, keys_dir, host = _resolve(args)
        if args.keys_command == "generate":
            return _generate(key_file, keys_dir, host, args.force)
        return _show(key_file, host)
    except ConfigurationError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1


def _generate(key_file: str, keys_dir: str, host: str, force: bool) -> int:
    own_cert = keysmod.cert_path(host, keys_dir)
    pair = keysmod.generate()
    keysmod.write_keypair(key_file, pair, force=force, host=host)
    keysmod.write_public(own_cert, pair.public, host=host)
    out = sys.stdout
    print("Wrote the CURVE key pair of %s to %s (mode 0600)." % (host,
                                                                key_file),
          file=out)
    print("Wrote its public certificate to %s (mode 0644), so %s accepts "
          "itself." % (own_cert, host), file=out)
    print("Public key: %s" % pair.public.decode("ascii"), file=out)
    print("Next:", file=out)
    print("  1. Copy %s to the rpc_zmq_curve_keys_dir of every host that "
          "talks to %s, under the same name %s.key." % (own_cert, host, host),
          file=out)
    print("  2. Copy each of those hosts' <host>.key into %s." % keys_dir,
          file=out)
    print("  3. Set rpc_zmq_curve = true on every host and restart the "
          "receivers and services.", file=out)
    print("  Keep %s secret: never copy it to another host." % key_file,
          file=out)
    return 0


def _show(key_file: str, host: str) -> int:
    pair = keysmod.load_keypair(key_file)
    sys.stdout.write(keysmod.format_certificate(pair.public, None, host))
    return 0
