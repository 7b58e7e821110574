#!/usr/bin/env bash
#
# test/setup/assert-check.sh PGSRC
#
# Runs every batpak suite against a PostgreSQL 15 built with assertions.
# Debian's server is built without them, so Assert() in PostgreSQL and in
# batpak is compiled out there, and memory freed or reset too early is not
# overwritten: a use after free can pass unnoticed.  --enable-cassert turns
# on Assert(), CLOBBER_FREED_MEMORY (freed memory is filled with 0x7F) and
# MEMORY_CONTEXT_CHECKING (overruns of palloc'd chunks are reported).
#
# PGSRC is a PostgreSQL 15 source tree (a release tarball or a git checkout;
# a checkout needs bison and flex, which this script installs through
# deps.sh; it must not have been configured in place).  It is built out of
# tree in $PREFIX.build and installed into
# $PREFIX (BATPAK_ASSERT_PREFIX, default /tmp/batpak-pgassert); a second run
# reuses both.  batpak is built and installed into it from a scratch copy of
# this tree (so the build products here stay Debian's), and
# run-tests.sh runs the three suites with that PG_CONFIG.
#
#   make check-assert PGSRC=/path/to/postgresql-15
#
# It takes about 2 minutes to build PostgreSQL on 2 cores, then as long as
# "make installcheck".

set -euo pipefail

SRC=${1:-${PGSRC:-}}
if [ -z "$SRC" ] || [ ! -x "$SRC/configure" ]; then
	echo "usage: $(basename "$0") PGSRC  (a PostgreSQL 15 source tree with its configure)" >&2
	exit 2
fi
SRC=$(cd "$SRC" && pwd)
if [ -e "$SRC/config.status" ]; then
	# PostgreSQL builds out of tree (VPATH) only from a clean source tree
	echo "$(basename "$0"): $SRC has been configured in place; run 'make distclean' there first" >&2
	exit 2
fi
version=$(sed -n "s/^PACKAGE_VERSION='\([0-9.]*\)'$/\1/p" "$SRC/configure")
case $version in
	15.*) ;;
	*) echo "$(basename "$0"): $SRC is PostgreSQL '$version', not 15" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PREFIX=${BATPAK_ASSERT_PREFIX:-/tmp/batpak-pgassert}
BUILD=$PREFIX.build
PGC=$PREFIX/bin/pg_config

BATPAK_EXTRA_PACKAGES="bison flex" "$REPO/test/setup/deps.sh"

if [ ! -x "$PGC" ] || [ "$("$PGC" --version)" != "PostgreSQL $version" ] ||
	! "$PGC" --configure | grep -q -- --enable-cassert; then
	echo "assert-check: building PostgreSQL $version with assertions in $BUILD"
	rm -rf "$BUILD" "$PREFIX"
	mkdir -p "$BUILD"
	(
		cd "$BUILD"
		"$SRC/configure" --prefix="$PREFIX" --enable-cassert --enable-debug \
			--enable-tap-tests --without-icu --without-readline --without-zlib \
			CFLAGS="-O1 -g" >configure.log 2>&1 ||
			{ tail -30 configure.log; exit 1; }
		# the generated headers first: world-bin's parallel sub-makes do not
		# wait for them
		{ make -s -C src/backend generated-headers &&
			make -j"$(nproc)" -s world-bin; } >build.log 2>&1 || { tail -40 build.log; exit 1; }
		make -s install-world-bin >install.log 2>&1 || { tail -40 install.log; exit 1; }
	)
fi

# batpak from a scratch copy: its objects are built for the assert server
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/batpak-assert.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
tar -C "$REPO" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=tmp_check --exclude='tmp_check_*' --exclude=results --exclude=log \
	--exclude=output_iso --exclude=demo_cluster -cf - . | tar -C "$STAGE" -xf -
make -C "$STAGE" -s PG_CONFIG="$PGC" >/dev/null
make -C "$STAGE" -s PG_CONFIG="$PGC" install >/dev/null
echo "assert-check: $("$PGC" --version), $("$PGC" --configure | grep -o -- --enable-cassert)"
rc=0
make -C "$STAGE" --no-print-directory PG_CONFIG="$PGC" installcheck || rc=$?
if [ $rc -ne 0 ]; then
	# keep what the failing suites left for a look
	keep=$REPO/tmp_check_assert
	rm -rf "$keep"
	mkdir -p "$keep"
	for o in regression.diffs results log output_iso tmp_check; do
		[ -e "$STAGE/$o" ] && cp -a "$STAGE/$o" "$keep/"
	done
	echo "assert-check: outputs kept in $keep"
fi
exit $rc
