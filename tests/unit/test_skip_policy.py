"""Skips are loud and, in CI, fatal (tests/skip_policy.py).

Each test runs a tiny suite with pytest's ``pytester`` (in this process)
whose conftest installs the policy with an allow-list of its own, and looks
at the exit status and the output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import skip_policy

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
from pathlib import Path
from tests import skip_policy

def pytest_configure(config):
    here = Path(__file__).parent
    skip_policy.install(config, here / "skips_allowed.txt", here)
"""

SUITE = """
import pytest

def test_runs():
    pass

def test_allowed():
    pytest.skip("tool frobnicate not installed")

def test_unexpected():
    pytest.skip("server would not start")
"""

ALLOWED = """
# comment
test_suite.py::test_allow* | frobnicate not installed | frobnicate has no wheel here
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throw-away suite with the policy installed and neither CI nor the
    developer switch set (each test sets what it needs)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(skip_policy.STRICT_ENV, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".txt", skips_allowed=ALLOWED)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``./dev test``'s reporting options, so the output is what CI shows."""
    return pytester.runpytest("-p", "no:cacheprovider", "-rfEsx", *args)


def test_unexpected_skip_under_ci_fails_the_run_and_says_why(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite=SUITE)
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    out = result.stdout.str()
    assert "UNEXPECTED SKIP (fatal because CI=true): server would not start" in out
    assert "test_suite.py::test_unexpected | server would not start |" in out
    assert re.search(r"unexpected skips: fatal because CI=true", out)
    # the allowed one still shows its reason (-rs) and does not fail
    assert re.search(r"SKIPPED \[1\] test_suite.py:\d+: tool frobnicate not "
                     r"installed", out)
    assert "FAILED test_suite.py::test_unexpected" in out
    assert "FAILED test_suite.py::test_allowed" not in out


def test_allowed_skip_under_ci_passes(suite: pytest.Pytester,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite=SUITE)
    result = run(suite, "-k", "not unexpected")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    assert "unexpected skips" not in result.stdout.str()


def test_allowed_test_skipping_for_another_reason_fails(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite="""
import pytest

def test_allowed():
    pytest.skip("network namespaces refused")
""")
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)


def test_skip_in_a_fixture_under_ci_is_an_error(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The multihost tests skip in a session fixture: each test errors."""
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite="""
import pytest

@pytest.fixture(scope="session")
def namespaces():
    pytest.skip("ip netns add refused")

def test_one(namespaces):
    pass

def test_two(namespaces):
    pass
""")
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=2)
    assert result.stdout.str().count("UNEXPECTED SKIP") >= 2


def test_module_skipped_at_collection_under_ci_fails_the_run(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite="""
import pytest
pytest.importorskip("no_such_module_here")

def test_never():
    pass
""", test_other="def test_fine():\n    pass\n")
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    assert "unexpected skips: fatal because CI=true" in out
    assert "test_suite.py [collect]" in out and "no_such_module_here" in out


def test_developer_switch_is_as_strict_as_ci(
        suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(skip_policy.STRICT_ENV, "1")
    suite.makepyfile(test_suite=SUITE)
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert ("UNEXPECTED SKIP (fatal because %s=1)" % skip_policy.STRICT_ENV
            in result.stdout.str())


def test_outside_ci_the_skip_passes_but_is_listed(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_suite=SUITE)
    result = run(suite)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)
    out = result.stdout.str()
    assert "skips not on skips_allowed.txt (fatal under CI=true)" in out
    assert "test_suite.py::test_unexpected [call]: server would not start" in out


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_ci_false_is_lenient(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                             value: str) -> None:
    monkeypatch.setenv("CI", value)
    suite.makepyfile(test_suite=SUITE)
    assert run(suite).ret == pytest.ExitCode.OK


def test_xfail_is_not_a_skip(suite: pytest.Pytester,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    suite.makepyfile(test_suite="""
import pytest

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known():
    assert False
""")
    result = run(suite)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(xfailed=1)


def test_half_written_allow_list_entry_is_a_usage_error(
        suite: pytest.Pytester) -> None:
    suite.makefile(".txt", skips_allowed="test_suite.py::* | \n")
    suite.makepyfile(test_suite=SUITE)
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "skips_allowed.txt:1" in result.stderr.str()


def test_multihost_without_namespaces_fails_under_ci(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real multihost fixture and the real allow-list: where ``ip netns
    add`` is refused, CI fails and names the reason."""
    from tests.multihost import netns
    monkeypatch.setattr(netns, "netns_unavailable",
                        lambda: "'ip netns add' refused: Operation not permitted")
    monkeypatch.setenv("CI", "true")
    # ids relative to the throw-away root, laid out like the repository,
    # so the real allow-list's patterns apply to them
    pytester.makeconftest("""
from pathlib import Path
from tests import skip_policy
from tests.multihost.conftest import netns_support  # noqa: F401

def pytest_configure(config):
    skip_policy.install(config, skip_policy.ALLOW_LIST, Path(__file__).parent)
""")
    hosts = pytester.mkpydir("tests").joinpath("multihost")
    hosts.mkdir()
    hosts.joinpath("test_hosts.py").write_text(
        "def test_three(netns_support):\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)
    assert "'ip netns add' refused" in result.stdout.str()


def test_postgres_that_does_not_start_fails_like_the_others(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a skip, even outside CI (every other server fails too)."""
    from tests.fixtures import servers

    def refuse(self: servers.ServerProcess) -> servers.ServerProcess:
        raise servers.ServerUnavailable("postgresql did not start: boom")

    monkeypatch.setattr(servers, "postgres_bindir", lambda: "/nonexistent/bin")
    monkeypatch.setattr(servers.PostgresServer, "start", refuse)
    # the server never starts, so its port is never bound: no free-port probe
    monkeypatch.setattr(servers, "free_port", lambda host="127.0.0.1": 1)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(skip_policy.STRICT_ENV, raising=False)
    pytester.makeconftest(
        "from tests.fixtures.servers import postgres_server, server_factory"
        "  # noqa: F401\n")
    pytester.makepyfile(test_db="""
def test_session(postgres_server):
    pass

def test_private(server_factory):
    server_factory("postgresql")
""")
    result = run(pytester)
    result.assert_outcomes(errors=1, failed=1)
    assert result.stdout.str().count("postgresql did not start: boom") >= 2


def test_the_real_allow_list_is_short_and_each_entry_names_real_tests() -> None:
    entries = skip_policy.load_allow_list(skip_policy.ALLOW_LIST)
    assert len(entries) <= 5, "keep tests/skips_allowed.txt short"
    for entry in entries:
        path, _, name = entry.pattern.partition("::")
        assert (ROOT / path).is_file(), entry
        assert len(entry.why) > 30, entry   # a reason a reviewer can check
        if name:
            source = (ROOT / path).read_text()
            functions = re.findall(r"^def (test_\w+)", source, re.M)
            assert any(re.fullmatch(
                name.replace("*", r"\w*").split("[")[0], f) for f in functions), entry


def test_dev_test_prints_skip_reasons_and_passes_ci_through() -> None:
    """``./dev test`` must show why each test skipped (-rs) in the CI log."""
    dev = (ROOT / "dev").read_text()
    case = re.search(r"^\s*test\)\n(.*?)^\s*;;", dev, re.M | re.S)
    assert case, "no test) case in ./dev"
    pytest_args = case.group(1).split("-m pytest", 1)[1]
    report = re.search(r"\s-r(\w+)", pytest_args)
    # s: skip reasons; f and E: pytest's default (failures, errors), which
    # a bare -rs would drop from the summary
    assert report and set("fEs") <= set(report.group(1)), pytest_args
    assert "CI" not in re.findall(r"unset (\w+)", case.group(1))
