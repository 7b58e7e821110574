#!/usr/bin/env bash
#
# test/setup/deps.sh
#
# Installs the Debian packages batpak needs to build, test, demo and
# benchmark, and only those that are missing.  Safe to run again: when
# everything is present it touches nothing and needs no privileges.
#
#   test/setup/deps.sh            # install what is missing
#   test/setup/deps.sh --check    # only report; exit 1 if something is missing
#
# Extra packages can be added with BATPAK_EXTRA_PACKAGES="pkg1 pkg2".

set -euo pipefail

PACKAGES=(
	build-essential           # gcc, make, libc headers
	pkg-config
	postgresql-15             # server, initdb, pg_ctl
	postgresql-client-15      # psql
	postgresql-server-dev-15  # pg_config, PGXS, server headers
	postgresql-contrib        # pgbench (benchmarks)
	libsodium-dev             # BLAKE2b (crypto_generichash), randombytes
	libipc-run-perl           # PostgreSQL::Test::* TAP framework
	perl                      # prove
	python3                   # benchmark driver
	python3-psycopg           # benchmark driver (psycopg 3)
	util-linux                # runuser, to run the test servers unprivileged
)
# shellcheck disable=SC2206
PACKAGES+=(${BATPAK_EXTRA_PACKAGES:-})

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

# not_installed PKG...: print the given packages that dpkg does not list as installed
not_installed() {
	local pkg status
	for pkg in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
		[ "$status" = "installed" ] || echo "$pkg"
	done
}

mapfile -t missing < <(not_installed "${PACKAGES[@]}")

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PACKAGES[@]} required packages are installed"
	exit 0
fi

echo "deps: missing packages: ${missing[*]}"
if [ "$check_only" = 1 ]; then
	exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
	echo "deps: not root, using sudo"
else
	echo "deps: ERROR: installing packages needs root, and sudo is not available." >&2
	echo "deps: run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# One update first: package lists may be absent or stale on a fresh machine.
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

mapfile -t still < <(not_installed "${missing[@]}")
if [ ${#still[@]} -ne 0 ]; then
	echo "deps: ERROR: still missing after apt-get install: ${still[*]}" >&2
	exit 1
fi
echo "deps: installed ${missing[*]}"
