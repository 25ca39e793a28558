#!/bin/bash
# Install the servers the functional tests start by themselves: ZooKeeper,
# memcached, Redis, PostgreSQL and HAProxy (Debian 12 packages), plus a JRE
# for ZooKeeper.  Idempotent and non-interactive; run as root.
#
# The packages' own system services are NOT started or needed: the test
# fixtures (tests/fixtures/servers.py) run private instances on free
# loopback ports with their own data directories.  A policy-rc.d stops
# the post-install scripts from starting the services during install.
set -euo pipefail

# libsystemd-dev, pkg-config and gcc build systemd-python (extra "test"),
# which the receiver's use_journal test needs
want=(zookeeper memcached redis-server postgresql default-jre-headless iproute2
      haproxy libsystemd-dev pkg-config gcc)
missing=()
for pkg in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-servers: all present (${want[*]})"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-servers: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-servers: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # keep dpkg from starting the services (no init system in CI anyway)
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    trap '[ "$created_policy" -eq 1 ] && rm -f "$policy"' EXIT
    apt_get() {
        apt-get -y -q -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold "$@"
    }
    # refresh the package lists only when the first attempt cannot find them
    if ! apt_get install --no-install-recommends "${missing[@]}"; then
        apt-get update -q
        apt_get install --no-install-recommends "${missing[@]}"
    fi
fi

# what the fixtures look for
test -e /usr/share/java/zookeeper.jar || ls /usr/share/zookeeper/lib/*.jar >/dev/null
command -v java memcached redis-server haproxy >/dev/null
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
id postgres >/dev/null
echo "install-servers: ok"
