#!/usr/bin/env bash
# Test the promises of setup.py: the oldest Python (python_requires) with
# the lowest version of every dependency (each '>=' floor of
# install_requires pinned with '=='), in a venv of its own, .venv-floors.
# Runs tests/unit and the db servicegroup tests there.
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
    say "Python $WANT WAS NOT AVAILABLE: the floors of setup.py were NOT tested."
    say "Set FLOORS_PYTHON to a Python $WANT to test them."
    say "************************************************************************"
    exit 0
fi

# The floors, from setup.py itself: 'name>=x' -> 'name==x'.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" - "$CONSTRAINTS" <<'EOF'
import ast, re, sys
tree = ast.parse(open("setup.py").read())
call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", "") == "setup")
reqs = next(k.value for k in call.keywords if k.arg == "install_requires")
pins = []
for req in ast.literal_eval(reqs):
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", req)
    if m:
        pins.append("%s==%s" % m.groups())
    else:
        print("[floors] no '>=' floor to pin: %s" % req)
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("[floors] pinned: " + " ".join(pins))
EOF

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# only the tools the tests need, not the lint and fuzz extras; pg8000 for
# the db tests on PostgreSQL (skipped when PostgreSQL cannot start)
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e . \
    "pytest>=7" pytest-timeout hypothesis psutil pg8000
say "installed:"
"$VENV/bin/python" -m pip freeze --exclude-editable | sed 's/^/[floors]   /'

set +e
NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE=${NOVA_RPC_ZMQ_TEST_TIMEOUT_SCALE:-2} \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider --timeout=600 \
    tests/unit tests/functional/test_servicegroup.py -k "unit or db" "$@"
rc=$?
set -e
say "python $("$VENV/bin/python" -V 2>&1 | cut -d' ' -f2), exit $rc, $(( $(date +%s) - started ))s"
exit $rc
