#!/usr/bin/env bash
# Test the promises of pyproject.toml: the oldest Python (requires-python)
# with the lowest version of every dependency (each '>=' floor of
# [project] dependencies and of the back-end extras pinned with '=='), in a
# venv of its own, .venv-floors, with extra "all" installed.
# Runs the unit and the functional suites there (./dev test runs them
# against the latest versions); what cannot run there is listed in
# EXCLUDE below, each with its reason.
#
# Python 3.9 comes from, in order: $FLOORS_PYTHON, pyenv, python3.9 on
# PATH, apt-get (as root).  When none can be had the script says loudly
# that the floors were not tested.
#
# Usage: .ci/floors.sh [extra pytest args]    (from any directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
VENV=${FLOORS_VENV:-.venv-floors}
WANT=3.9
started=$(date +%s)

say() { printf '[floors] %s\n' "$*"; }

is_wanted() {  # is $1 a runnable Python $WANT?
    [ -n "$1" ] && [ -x "$(command -v "$1" 2>/dev/null || true)" ] &&
        [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$WANT" ]
}

find_python() {
    local c
    for c in "${FLOORS_PYTHON:-}" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$WANT.*/bin/python$WANT \
             /root/.pyenv/versions/$WANT.*/bin/python$WANT "python$WANT"; do
        if is_wanted "$c"; then command -v "$c"; return 0; fi
    done
    # apt: Debian/Ubuntu releases that still ship 3.9 (needs root and venv support)
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null 2>&1 || true
        if apt-cache policy "python$WANT" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            say "installing python$WANT with apt-get"
            apt-get install -y -qq "python$WANT" "python$WANT-venv" >/dev/null 2>&1 || true
            if is_wanted "python$WANT"; then command -v "python$WANT"; return 0; fi
        fi
    fi
    return 1
}

if PY=$(find_python); then
    say "Python $WANT: $PY"
else
    # pinned floors such as pyzmq 22.0 have no wheels for newer Pythons:
    # without 3.9 the floors cannot be tested as promised, so say so loudly
    say "************************************************************************"
    say "Python $WANT WAS NOT AVAILABLE: the floors of pyproject.toml were NOT tested."
    say "Set FLOORS_PYTHON to a Python $WANT to test them."
    say "************************************************************************"
    exit 0
fi

# The floors, from pyproject.toml itself: 'name>=x' -> 'name==x', for the
# core and for every back-end extra ("all").  tomllib is 3.11+: parse with
# an interpreter that has it, else with a small reader of the one shape
# pyproject.toml uses there (arrays of "strings").
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
PARSE_PY=$PY
for c in python3 "$PY"; do
    if "$c" -c 'import tomllib' >/dev/null 2>&1; then PARSE_PY=$c; break; fi
done
"$PARSE_PY" - "$CONSTRAINTS" <<'EOF'
import re, sys

def load(path):
    """[project] of pyproject.toml: tomllib when there is one, else a tiny
    reader of `key = [ "string", ... ]` arrays under [project] and
    [project.optional-dependencies] (all this script needs)."""
    try:
        import tomllib
    except ImportError:
        tomllib = None
    if tomllib is not None:
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    project = {"optional-dependencies": {}}
    table, key, items = None, None, None
    for raw in open(path, encoding="utf-8"):
        line = raw.strip()
        if line.startswith("#"):
            continue
        line = re.sub(r'#[^"]*$', "", line).strip()  # a comment after the strings
        if items is not None:  # inside a multi-line array
            items += re.findall(r'"([^"]*)"', line)
            if line.endswith("]"):
                table[key], items = items, None
            continue
        head = re.fullmatch(r"\[([^\]]+)\]", line)
        if head:
            name = head.group(1).strip()
            table = (project if name == "project" else
                     project["optional-dependencies"]
                     if name == "project.optional-dependencies" else None)
            continue
        m = re.fullmatch(r'("?[A-Za-z0-9_.\-]+"?)\s*=\s*\[(.*)', line)
        if table is not None and m:
            key, rest = m.group(1).strip('"'), m.group(2)
            found = re.findall(r'"([^"]*)"', rest)
            if rest.endswith("]"):
                table[key] = found
            else:
                items = found
    return project

project = load("pyproject.toml")
extras = project.get("optional-dependencies", {})
reqs = list(project.get("dependencies", []))
for entry in extras.get("all", []):  # nova-rpc-zmq[zookeeper,memcached,...]
    m = re.fullmatch(r"\s*nova-rpc-zmq\[([^\]]*)\]\s*", entry)
    if not m:
        reqs.append(entry)
        continue
    for name in m.group(1).split(","):
        reqs += extras[name.strip()]
pins = []
for req in reqs:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", req)
    if not m:
        print("[floors] no '>=' floor to pin: %s" % req)
    elif "%s==%s" % m.groups() not in pins:
        pins.append("%s==%s" % m.groups())
if not project.get("dependencies") or not extras.get("all"):
    sys.exit("[floors] pyproject.toml: no [project] dependencies or extra 'all'")
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("[floors] pinned: " + " ".join(pins))
EOF

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# only the tools the tests need, not the lint and fuzz extras; pg8000 for
# the db tests on PostgreSQL (skipped when PostgreSQL cannot start),
# prometheus_client to parse /metrics as Prometheus does; systemd-python
# (built against libsystemd) for the use_journal test, where it can be built
JOURNAL=()
if command -v pkg-config >/dev/null && pkg-config --exists libsystemd; then
    JOURNAL=(systemd-python)
fi
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[all]" \
    "pytest>=7" pytest-timeout hypothesis psutil pg8000 prometheus_client \
    "${JOURNAL[@]}"
say "installed:"
"$VENV/bin/python" -m pip freeze --exclude-editable | sed 's/^/[floors]   /'

# Not run against the floors, each for its reason:
EXCLUDE=(
    # builds the wheel and installs it into a fresh venv with the *latest*
    # core dependencies from PyPI: it tests the package as an operator
    # installs it, not the floors (./dev test runs it)
    --ignore=tests/functional/test_wheel.py
)

set +e
NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE=${NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE:-2} \
    "$VENV/bin/python" -m pytest -q -rfEsx -p no:cacheprovider --timeout=600 \
    tests/unit tests/fuzz tests/functional "${EXCLUDE[@]}" "$@"
rc=$?
set -e
say "python $("$VENV/bin/python" -V 2>&1 | cut -d' ' -f2), exit $rc, $(( $(date +%s) - started ))s"
exit $rc
