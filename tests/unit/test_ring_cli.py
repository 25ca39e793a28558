"""``nova-rpc-zmq ring check``: output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nova_rpc_zmq.cli import main as cli_main
from nova_rpc_zmq.matchmaker import ring as ringmod

ROOT = Path(__file__).resolve().parents[2]
RINGFILES = ROOT / "ringfiles"


def check(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["ring", "check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def table_resolver(monkeypatch):
    """Resolve from a fixed table, so no DNS query leaves the machine."""
    table = {"127.0.0.1": ["127.0.0.1"], "node-a": ["10.0.0.1"],
             "node-b": ["10.0.0.2", "fd00::2"]}
    monkeypatch.setattr(ringmod, "resolve_host",
                        lambda host: list(table.get(host, [])))
    return table


def test_valid_ring_all_resolving(capsys):
    code, out, err = check(capsys, str(RINGFILES / "all-in-one.json"))
    assert code == 0, err
    assert "9 topic(s), 1 host(s)" in out
    assert "compute (line 2)" in out
    assert "127.0.0.1 -> 127.0.0.1" in out
    assert out.rstrip().endswith("OK")
    assert err == ""


def test_addresses_are_shown(tmp_path, capsys, table_resolver):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"compute": ["node-a", "node-b"]}))
    code, out, _ = check(capsys, str(path))
    assert code == 0
    assert "node-a -> 10.0.0.1" in out
    assert "node-b -> 10.0.0.2, fd00::2" in out


def test_unresolvable_host_exits_1_with_line_and_fix(tmp_path, capsys,
                                                     table_resolver):
    path = tmp_path / "r.json"
    path.write_text('{\n"compute": ["node-a",\n  "c1p509"],\n'
                    '"volume": ["c1p509"]\n}')
    code, out, err = check(capsys, str(path))
    assert code == 1
    assert "c1p509" in out and "DOES NOT RESOLVE" in out
    assert "%s line 3: host 'c1p509' does not resolve" % path in err
    assert "/etc/hosts" in err
    assert err.count("does not resolve;") == 1      # one report per host
    assert "FAILED, 1 host(s)" in err


def test_no_resolve_option(capsys, table_resolver):
    code, out, err = check(capsys, "--no-resolve",
                           str(RINGFILES / "controller-computes.json"))
    assert code == 0, err
    assert "compute2" in out and "not resolved (--no-resolve)" in out


def test_invalid_ring_exits_1_with_position(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text("{\n 'scheduler': [\"o1p409\"]\n}")
    code, out, err = check(capsys, str(path))
    assert code == 1
    assert "%s line 2 column 2: invalid JSON" % path in err
    assert "double quotes" in err and "INVALID" in err
    assert out == ""


def test_bad_host_in_ring(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text('{"compute": [\n"ok",\n42]}')
    code, _, err = check(capsys, str(path))
    assert code == 1 and "line 3: host 42" in err


def test_missing_file(tmp_path, capsys):
    code, _, err = check(capsys, str(tmp_path / "nope.json"))
    assert code == 1 and "cannot read ring file" in err


def test_empty_topic_is_a_warning(tmp_path, capsys, table_resolver):
    path = tmp_path / "r.json"
    path.write_text('{"compute": ["node-a"], "cert": []}')
    code, out, err = check(capsys, str(path))
    assert code == 0
    assert "warning:" in err and "'cert' lists no host" in err
    assert "(no host)" in out


def test_ring_needs_an_action(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["ring"])
    assert exc.value.code == 2


@pytest.mark.timeout(60)
def test_command_line_process():
    proc = subprocess.run(
        [sys.executable, "-m", "nova_rpc_zmq.cli.main", "ring", "check",
         str(RINGFILES / "all-in-one.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nova_rpc_zmq.cli.main", "ring", "check",
         "--no-resolve", str(ROOT / "ringfiles" / "README.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "invalid JSON" in bad.stderr
