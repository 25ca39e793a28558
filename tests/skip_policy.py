"""Skips are loud and, in CI, fatal.

A skipped test is a promise that went untested: in CI that almost always
means the environment is broken (a server that failed to install or start,
network namespaces refused, a package missing), and a green run would hide
it.  So, when ``CI`` is true (or a developer sets
``NOVA_RPC_ZMQ_STRICT_SKIPS=1``), every skip that is not on the reviewed
allow-list ``tests/skips_allowed.txt`` fails the run:

* a skip while running a test (setup, call or teardown) is turned into a
  failure of that test whose message says which skip and why it is fatal;
* a skip while collecting a module is listed and sets the exit status.

Outside strict mode the same skips are listed at the end of the run as
"would fail under CI=true", so nobody learns it from CI first.

The allow-list has one entry a line: ``<test id glob> | <text the skip
reason must contain> | <why this may go untested in CI>``; a line that
starts with ``#`` is a comment.  ``tests/conftest.py`` calls :func:`install`; a test of this
module installs it on a throw-away suite with its own allow-list.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
#: The reviewed allow-list of the real suite.
ALLOW_LIST = HERE / "skips_allowed.txt"
#: Test ids in the allow-list are relative to the repository root.
REPO_ROOT = HERE.parent
#: Set to 1 to get CI's strictness on a developer machine.
STRICT_ENV = "NOVA_RPC_ZMQ_STRICT_SKIPS"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AllowedSkip:
    """One allow-list entry: which tests may skip, for what reason, and why
    that is acceptable in CI."""

    pattern: str
    reason_contains: str
    why: str
    line: int

    def allows(self, nodeid: str, reason: str) -> bool:
        """True when ``nodeid`` matches the glob and ``reason`` contains the
        entry's text (both must hold: a test allowed to skip for one reason
        must not silently skip for another)."""
        return (fnmatch.fnmatchcase(nodeid, self.pattern)
                and self.reason_contains in reason)


def strict_mode(environ: Any = None) -> str | None:
    """The variable that makes unexpected skips fatal (``"CI=true"``), or
    None when neither ``CI`` nor ``NOVA_RPC_ZMQ_STRICT_SKIPS`` is set true."""
    env = os.environ if environ is None else environ
    for name in ("CI", STRICT_ENV):
        value = env.get(name, "")
        if value.strip().lower() in _TRUE:
            return "%s=%s" % (name, value)
    return None


def load_allow_list(path: Path) -> list[AllowedSkip]:
    """Parse an allow-list file; raises pytest.UsageError naming the line
    when an entry lacks one of its three fields (a half-written entry must
    not allow more than meant)."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split("|")]
        if len(fields) != 3 or not all(fields):
            raise pytest.UsageError(
                "%s:%d: expected '<test id glob> | <reason text> | <why "
                "allowed in CI>', got %r" % (path, number, raw))
        entries.append(AllowedSkip(fields[0], fields[1], fields[2], number))
    return entries


def skip_reason(report: Any) -> str:
    """The human reason of a skipped report (pytest keeps it as the third
    item of a (path, line, "Skipped: reason") tuple)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    prefix = "Skipped: "
    return text[len(prefix):] if text.startswith(prefix) else text


@dataclass
class UnexpectedSkip:
    """A skip that no allow-list entry covers."""

    nodeid: str
    reason: str
    when: str


class SkipPolicy:
    """The pytest plugin: judges every skip against the allow-list."""

    def __init__(self, allowed: list[AllowedSkip], allow_list: Path,
                 root: Path, strict: str | None) -> None:
        self.allowed = allowed
        self.allow_list = allow_list
        self.root = root
        self.strict = strict
        self.unexpected: list[UnexpectedSkip] = []
        self._rootdir: Path | None = None

    # -- judging ----------------------------------------------------------

    def _repo_id(self, nodeid: str) -> str:
        """``nodeid`` relative to ``root`` (pytest's ids are relative to
        its rootdir, which depends on how it was started)."""
        if self._rootdir is None:
            return nodeid
        path, sep, rest = nodeid.partition("::")
        rel = os.path.relpath(self._rootdir / path, self.root)
        if rel.startswith(".."):
            return nodeid
        return rel.replace(os.sep, "/") + sep + rest

    def judge(self, nodeid: str, reason: str, when: str) -> UnexpectedSkip | None:
        """Record and return the skip when no entry allows it."""
        repo_id = self._repo_id(nodeid)
        if any(entry.allows(repo_id, reason) for entry in self.allowed):
            return None
        skip = UnexpectedSkip(repo_id, reason, when)
        self.unexpected.append(skip)
        return skip

    def _fatal_message(self, skip: UnexpectedSkip) -> str:
        return (
            "UNEXPECTED SKIP (fatal because %s): %s\n"
            "A skip in CI is a promise that went untested, usually a broken "
            "environment (a server that did not install or start, network "
            "namespaces refused, a package missing). Fix the environment; or, "
            "after review, allow it with a line in %s:\n"
            "    %s | %s | <why it may go untested in CI>"
            % (self.strict, skip.reason, self._shown(self.allow_list),
               skip.nodeid, skip.reason))

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # -- pytest hooks -------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._rootdir = Path(str(session.config.rootpath))

    def pytest_report_header(self, config: pytest.Config) -> str:
        if self.strict:
            return ("skip policy: %s, a skip not on %s FAILS the run"
                    % (self.strict, self._shown(self.allow_list)))
        return ("skip policy: lenient (CI=true or %s=1 make a skip not on %s "
                "fatal)" % (STRICT_ENV, self._shown(self.allow_list)))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: Any) -> Iterator[None]:
        outcome = yield
        report = outcome.get_result()
        # an xfail is reported as a skip that carries ``wasxfail``: not ours
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        skip = self.judge(report.nodeid, skip_reason(report), report.when)
        if skip is not None and self.strict:
            report.outcome = "failed"
            report.longrepr = self._fatal_message(skip)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # a module skipped while collecting cannot be turned into a failing
        # test (that would abort the whole session): it is recorded, and
        # the exit status is set when the session ends
        if report.skipped:
            self.judge(report.nodeid, skip_reason(report), "collect")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.strict and self.unexpected and session.exitstatus in (
                pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.unexpected:
            return
        if self.strict:
            title = "unexpected skips: fatal because %s" % self.strict
        else:
            title = "skips not on %s (fatal under CI=true)" % self._shown(
                self.allow_list)
        terminalreporter.write_sep("=", title, red=bool(self.strict),
                                   yellow=not self.strict)
        for skip in self.unexpected:
            terminalreporter.write_line("%s [%s]: %s" % (
                skip.nodeid, skip.when, skip.reason))
        terminalreporter.write_line(
            "Each is a promise that went untested. Fix the environment, or "
            "after review add '<test id glob> | <reason text> | <why>' to %s."
            % self._shown(self.allow_list))


def install(config: pytest.Config, allow_list: Path = ALLOW_LIST,
            root: Path = REPO_ROOT) -> SkipPolicy:
    """Register the policy on ``config`` (call from pytest_configure).

    ``allow_list``: the entries; ``root``: what their test ids are relative
    to.  Strictness comes from the environment (:func:`strict_mode`).
    """
    policy = SkipPolicy(load_allow_list(allow_list), allow_list, root,
                        strict_mode())
    config.pluginmanager.register(policy, "nova-rpc-zmq-skip-policy")
    return policy
