"""Secrets never reach an error message, a log line or a repr.

Each test plants a recognisable secret - a real CURVE secret key in a key
file that fails to parse in one of many ways, or a database password - and
asserts that no raised message, captured log record, printed CLI output or
repr contains it (nor any 10-character piece of a key).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import zmq

from nova_rpc_zmq import config
from nova_rpc_zmq.cli import main as cli_main
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.redact import hide_key_text, mask_url
from nova_rpc_zmq.security import keys
from nova_rpc_zmq.security.policy import AllowList
from nova_rpc_zmq.servicegroup.drivers import db

PASSWORD = "Hunter2SecretPw"

needs_curve = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


def _pair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def _leaks(text: str, secret: str) -> list[str]:
    """Every 10-character piece of ``secret`` found in ``text``."""
    return [secret[i:i + 10] for i in range(len(secret) - 9) if secret[i:i + 10] in text]


def _broken_files(public: str, secret: str) -> dict[str, str]:
    """Key files holding ``secret`` that fail to parse, each another way."""
    other_public = _pair()[0]
    return {
        "secret before any section":
            '    secret-key = "%s"\ncurve\n    public-key = "%s"\n' % (secret, public),
        "secret in column 0":
            'curve\n    public-key = "%s"\nsecret-key = "%s"\n' % (public, secret),
        "bare secret, unindented": 'curve\n    public-key = "%s"\n%s\n' % (public, secret),
        "no '=' on the secret line":
            'curve\n    public-key = "%s"\n    secret-key "%s"\n' % (public, secret),
        "bare secret, indented": 'curve\n    public-key = "%s"\n    %s\n' % (public, secret),
        "secret under an unknown name":
            'curve\n    public-key = "%s"\n    %s = "x"\n' % (public, secret),
        "secret one character short":
            'curve\n    public-key = "%s"\n    secret-key = "%s"\n' % (public, secret[:-1]),
        "secret given twice":
            'curve\n    public-key = "%s"\n    secret-key = "%s"\n    secret-key = "%s"\n'
            % (public, secret, secret),
        "secret of another pair":
            'curve\n    public-key = "%s"\n    secret-key = "%s"\n' % (other_public, secret),
        "secret, no public key": 'curve\n    secret-key = "%s"\n' % secret,
    }


@needs_curve
def test_malformed_key_file_errors_never_echo_the_secret(tmp_path: Path) -> None:
    """Every way a key file can fail to parse raises a ConfigurationError
    that names the file and line but quotes no piece of the secret."""
    public, secret = _pair()
    for case, text in _broken_files(public, secret).items():
        path = tmp_path / "host.key"
        path.write_text(text)
        os.chmod(path, 0o600)
        with pytest.raises(ConfigurationError) as info:
            keys.load_keypair(str(path))
        message = str(info.value)
        assert str(path) in message, (case, message)
        assert not _leaks(message, secret), (case, message)


@needs_curve
def test_keys_show_and_allow_list_never_print_the_secret(tmp_path: Path, capsys: Any,
                                                          caplog: Any) -> None:
    """`nova-rpc-zmq keys show` on a broken key file, and the receiver's
    allow list reading a broken file in the keys dir, print and log the
    error without the secret."""
    public, secret = _pair()
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    caplog.set_level(logging.DEBUG)
    for n, (case, text) in enumerate(_broken_files(public, secret).items()):
        key_file = tmp_path / ("host%d.key" % n)
        key_file.write_text(text)
        os.chmod(key_file, 0o600)
        status = cli_main.main(["keys", "show", "--key-file", str(key_file),
                                "--host", "node1"])
        out, err = capsys.readouterr()
        assert status == 1 and "error:" in err, (case, out, err)
        assert not _leaks(out + err, secret), (case, err)
        (keys_dir / ("peer%d.key" % n)).write_text(text)
    allow = AllowList(str(keys_dir))
    allow.refresh(force=True)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "malformed key file" in logged
    assert not _leaks(logged, secret), logged


@needs_curve
def test_reprs_and_format_errors_hide_the_secret() -> None:
    """A Certificate's repr hides its secret (as KeyPair's does), and
    format_certificate's error for a bad secret quotes none of it."""
    public, secret = _pair()
    cert = keys.parse_certificate(keys.format_certificate(public.encode(), secret.encode()),
                                  "<test>")
    assert cert.secret == secret.encode()
    assert not _leaks(repr(cert), secret), repr(cert)
    assert not _leaks(repr(keys.KeyPair(public.encode(), secret.encode())), secret)
    bad = secret[:-1] + "~"  # '~' is no Z85 digit
    with pytest.raises(ValueError) as info:
        keys.format_certificate(public.encode(), bad.encode())
    assert not _leaks(str(info.value), secret) and bad[:8] not in str(info.value)


def test_config_errors_mask_the_database_password() -> None:
    """A database_connection that config rejects is quoted with the
    password masked; Settings' repr masks it too."""
    for url in ("nova:%s@db.example/nova" % PASSWORD, "  "):
        with pytest.raises(ConfigurationError) as info:
            config.load_settings(None, database_connection=url)
        assert PASSWORD not in str(info.value)
        assert "database" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        config.load_settings(None, database_connection="nova:%s@db.example/nova" % PASSWORD)
    assert "nova:***@db.example/nova" in str(info.value)
    settings = config.load_settings(
        None, database_connection="postgresql+pg8000://nova:%s@db.example/nova" % PASSWORD)
    assert settings.database_connection.endswith(":%s@db.example/nova" % PASSWORD)
    assert PASSWORD not in repr(settings)
    assert "postgresql+pg8000://nova:***@db.example/nova" in repr(settings)


@pytest.mark.parametrize("url", [
    "postgresql+pg8000://nova:%s@db.example:notaport/nova" % PASSWORD,
    "postgresql+nosuchdriver://nova:%s@db.example/nova" % PASSWORD,
    "nosuchdialect://nova:%s@db.example/nova" % PASSWORD,
    "nova:%s@db.example/nova" % PASSWORD,
])
def test_db_driver_errors_mask_the_password(url: str) -> None:
    """URLs SQLAlchemy cannot use raise a ConfigurationError that shows
    the URL with the password masked (not a bare ValueError)."""
    with pytest.raises(ConfigurationError) as info:
        db.make_engine(url, 1.0)
    assert PASSWORD not in str(info.value), str(info.value)
    assert ":***@db.example" in str(info.value), str(info.value)


@pytest.mark.parametrize("url", [
    "nova:%s@db.example/nova" % PASSWORD,
    "postgresql+pg8000://nova:%s@db.example:notaport/nova" % PASSWORD,
])
def test_status_command_masks_the_password(url: str, capsys: Any) -> None:
    """`nova-rpc-zmq status --database-connection URL` with a bad URL says
    why and exits 1, never printing the password."""
    status = cli_main.main(["status", "--servicegroup-driver", "db",
                            "--database-connection", url])
    out, err = capsys.readouterr()
    assert status == 1, (out, err)
    assert err.strip() and PASSWORD not in out + err, err
    assert "***" in err


def test_redaction_helpers() -> None:
    """The helpers mask what they must and leave ordinary text alone."""
    assert mask_url("postgresql://nova:pw/with:odd@db/nova") == "postgresql://nova:***@db/nova"
    assert mask_url("postgresql://nova@db/nova") == "postgresql://nova@db/nova"
    assert mask_url("sqlite:////var/lib/nova/sg.sqlite") == "sqlite:////var/lib/nova/sg.sqlite"
    assert mask_url("memcached at 10.0.0.5:11211 down") == "memcached at 10.0.0.5:11211 down"
    assert mask_url("error: bad password Hunter2x", ["Hunter2x"]) == "error: bad password ***"
    assert hide_key_text("unknown section 'curve2'") == "unknown section 'curve2'"
    public, secret = _pair()
    assert secret not in hide_key_text("line %r" % secret)
