#!/usr/bin/env bash
#
# test/setup/assert-check.sh [--valgrind] PGSRC
#
# Runs every batpak suite against a PostgreSQL 15 built with assertions.
# Debian's server is built without them, so Assert() in PostgreSQL and in
# batpak is compiled out, and memory freed or reset too early is not
# overwritten: a use after free can pass unnoticed.  --enable-cassert turns
# on Assert(), CLOBBER_FREED_MEMORY (freed memory is filled with 0x7F) and
# MEMORY_CONTEXT_CHECKING (overruns of palloc'd chunks are reported).
#
# With --valgrind, PostgreSQL is also built with USE_VALGRIND (palloc'd
# memory is marked undefined and freed chunks inaccessible to Valgrind's
# memcheck) into its own prefix, and its postgres is replaced by a wrapper
# that runs the server under memcheck: every backend and the writer, which
# the postmaster forks.  Memcheck finds what the assertions cannot: reads of
# bytes never written (a frame with uninitialised padding written to a
# segment, whose CRC and hash would then depend on garbage), reads past a
# palloc'd chunk.  The check fails if any process reported an error; the
# reports are printed and kept in $REPO/tmp_check_valgrind.  initdb's
# bootstrap and the version probes run without Valgrind.
#
# PGSRC is a PostgreSQL 15 source tree (a release tarball or a git checkout;
# a checkout needs bison and flex, which this script installs through
# deps.sh; it must not have been configured in place).  It is built out of
# tree in $PREFIX.build and installed into $PREFIX (BATPAK_ASSERT_PREFIX,
# default /tmp/batpak-pgassert, or /tmp/batpak-pgvalgrind with --valgrind);
# a second run reuses both.  batpak is built and installed into it from a
# scratch copy of this tree (so the build products here stay Debian's), and
# run-tests.sh runs the three suites with that PG_CONFIG.
#
#   make check-assert PGSRC=/path/to/postgresql-15
#   make check-valgrind PGSRC=/path/to/postgresql-15
#
# It takes about 2 minutes to build PostgreSQL on 2 cores, then as long as
# "make installcheck" (longer under Valgrind).

set -euo pipefail

VALGRIND=0
if [ "${1:-}" = --valgrind ]; then
	VALGRIND=1
	shift
fi
SRC=${1:-${PGSRC:-}}
if [ -z "$SRC" ] || [ ! -x "$SRC/configure" ]; then
	echo "usage: $(basename "$0") [--valgrind] PGSRC  (a PostgreSQL 15 source tree with its configure)" >&2
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
if [ $VALGRIND -eq 1 ]; then
	PREFIX=${BATPAK_ASSERT_PREFIX:-/tmp/batpak-pgvalgrind}
	CFLAGS_PG="-O1 -g -DUSE_VALGRIND"
	PACKAGES="bison flex valgrind"
	NAME=valgrind-check
else
	PREFIX=${BATPAK_ASSERT_PREFIX:-/tmp/batpak-pgassert}
	CFLAGS_PG="-O1 -g"
	PACKAGES="bison flex"
	NAME=assert-check
fi
BUILD=$PREFIX.build
PGC=$PREFIX/bin/pg_config
VGLOGS=$PREFIX/valgrind-logs

BATPAK_EXTRA_PACKAGES="$PACKAGES" "$REPO/test/setup/deps.sh"

if [ ! -x "$PGC" ] || [ "$("$PGC" --version)" != "PostgreSQL $version" ] ||
	! "$PGC" --configure | grep -q -- --enable-cassert ||
	[ "$("$PGC" --cflags | grep -c -- -DUSE_VALGRIND)" -ne $VALGRIND ]; then
	echo "$NAME: building PostgreSQL $version with assertions in $BUILD"
	rm -rf "$BUILD" "$PREFIX"
	mkdir -p "$BUILD"
	(
		cd "$BUILD"
		"$SRC/configure" --prefix="$PREFIX" --enable-cassert --enable-debug \
			--enable-tap-tests --without-icu --without-readline --without-zlib \
			CFLAGS="$CFLAGS_PG" >configure.log 2>&1 ||
			{ tail -30 configure.log; exit 1; }
		# the generated headers first: world-bin's parallel sub-makes do not
		# wait for them
		{ make -s -C src/backend generated-headers &&
			make -j"$(nproc)" -s world-bin; } >build.log 2>&1 || { tail -40 build.log; exit 1; }
		make -s install-world-bin >install.log 2>&1 || { tail -40 install.log; exit 1; }
	)
fi

if [ $VALGRIND -eq 1 ] && [ ! -e "$PREFIX/bin/postgres.bin" ]; then
	# The wrapper takes the place of postgres, where initdb, pg_ctl and
	# pg_regress look for it; postgres finds its share and lib directories
	# from postgres.bin's path, the same directory.  The error markers tell
	# the reports from Valgrind's notes; each process the postmaster forks
	# writes its own log (%p).
	cp "$SRC/src/tools/valgrind.supp" "$PREFIX/valgrind.supp"
	mv "$PREFIX/bin/postgres" "$PREFIX/bin/postgres.bin"
	cat >"$PREFIX/bin/postgres" <<WRAPPER
#!/bin/sh
# written by batpak's test/setup/assert-check.sh --valgrind
case " \$* " in
*" --boot "* | *" --single "* | *" -V "* | *" --version "* | *" -C "* | *" --describe-config "* | *" --check "*)
	exec "\$0.bin" "\$@" ;;
esac
exec valgrind --quiet --trace-children=no --track-origins=yes --num-callers=30 \\
	--leak-check=no --error-limit=no --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \\
	--suppressions="$PREFIX/valgrind.supp" --suppressions="$PREFIX/batpak-valgrind.supp" \\
	--log-file="$VGLOGS/%p.log" "\$0.bin" "\$@"
WRAPPER
	chmod 755 "$PREFIX/bin/postgres"
fi
if [ $VALGRIND -eq 1 ]; then
	# ours, afresh on every run (PostgreSQL's was copied with the wrapper)
	cp "$REPO/test/setup/valgrind.supp" "$PREFIX/batpak-valgrind.supp"
	# written by the servers of the test user
	rm -rf "$VGLOGS"
	mkdir -p "$VGLOGS"
	chmod 1777 "$VGLOGS"
fi

# batpak from a scratch copy: its objects are built for the assert server
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/batpak-assert.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
tar -C "$REPO" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=tmp_check --exclude='tmp_check_*' --exclude=results --exclude=log \
	--exclude=output_iso --exclude=demo_cluster -cf - . | tar -C "$STAGE" -xf -
make -C "$STAGE" -s PG_CONFIG="$PGC" >/dev/null
make -C "$STAGE" -s PG_CONFIG="$PGC" install >/dev/null
echo "$NAME: $("$PGC" --version), $("$PGC" --configure | grep -o -- --enable-cassert)" \
	"$([ $VALGRIND -eq 1 ] && echo "and USE_VALGRIND, the server under memcheck")"
rc=0
make -C "$STAGE" --no-print-directory PG_CONFIG="$PGC" installcheck || rc=$?
if [ $VALGRIND -eq 1 ]; then
	reports=$(grep -l VALGRINDERROR-BEGIN "$VGLOGS"/*.log 2>/dev/null || true)
	nlogs=$(find "$VGLOGS" -name '*.log' | wc -l)
	if [ "$nlogs" -eq 0 ]; then
		echo "$NAME: no server process wrote a memcheck log: the wrapper did not run" >&2
		rc=1
	elif [ -n "$reports" ]; then
		echo "$NAME: memcheck reported errors in $(echo "$reports" | wc -l) of $nlogs server processes:"
		for r in $reports; do
			sed -n '/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/p' "$r" | head -60
		done
		rm -rf "$REPO/tmp_check_valgrind"
		cp -a "$VGLOGS" "$REPO/tmp_check_valgrind"
		echo "$NAME: the reports are kept in $REPO/tmp_check_valgrind"
		rc=1
	else
		echo "$NAME: memcheck reported no errors in $nlogs server processes"
	fi
fi
if [ $rc -ne 0 ]; then
	# keep what the failing suites left for a look
	keep=$REPO/tmp_check_$([ $VALGRIND -eq 1 ] && echo valgrind_suites || echo assert)
	rm -rf "$keep"
	mkdir -p "$keep"
	for o in regression.diffs results log output_iso tmp_check; do
		[ -e "$STAGE/$o" ] && cp -a "$STAGE/$o" "$keep/"
	done
	echo "$NAME: outputs kept in $keep"
fi
exit $rc
