#!/usr/bin/env bash
#
# test/setup/demo.sh
#
# A throwaway PostgreSQL cluster with batpak, for trying it by hand.
#
#   test/setup/demo.sh start    (re)create the cluster, start it, create the
#                               extension, run test/setup/demo.sql and leave
#                               the cluster running ("make demo")
#   test/setup/demo.sh stop     stop it ("make demo-stop")
#   test/setup/demo.sh remove   stop it and delete it ("make clean")
#
# The cluster lives in ./demo_cluster and listens only on a Unix socket in
# that directory (port BATPAK_DEMO_PORT, default 54329, which then only names
# the socket file, so it cannot clash with another server).  Expects batpak
# to be installed ("make install").  As root, the server runs as
# BATPAK_TEST_USER (default postgres); if that user cannot reach ./demo_cluster
# (say the tree is under /root) or the socket path would be too long, the
# cluster goes to $TMPDIR/batpak-demo instead, and the script says so.

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT=${BATPAK_DEMO_PORT:-54329}
DEFAULT_DIR="$REPO/demo_cluster"
FALLBACK_DIR="${TMPDIR:-/tmp}/batpak-demo"
# Where the last "start" put the cluster when it had to use FALLBACK_DIR.
POINTER="$REPO/.demo_cluster_location"

is_root && ensure_run_user
# Every path below is absolute; the server owner may not be allowed into the
# current directory (pg_ctl would complain).
cd /

say() { printf 'demo: %s\n' "$*"; }

cluster_dir() {
	if [ -f "$POINTER" ]; then
		cat "$POINTER"
	else
		echo "$DEFAULT_DIR"
	fi
}

pg_ctl_cmd() {
	if is_root; then
		printf 'runuser -u %s -- %s/pg_ctl' "$RUN_USER" "$PGBINDIR"
	else
		printf '%s/pg_ctl' "$PGBINDIR"
	fi
}

stop_cluster() {
	local dir=$1
	[ -d "$dir" ] || return 0
	if [ -f "$dir/postmaster.pid" ] &&
		as_owner pg_ctl -D "$dir" status >/dev/null 2>&1; then
		say "stopping the demo cluster in $dir"
		as_owner pg_ctl -D "$dir" -m fast -w stop >/dev/null
	fi
}

remove_cluster() {
	local dir=$1
	stop_cluster "$dir"
	if [ -d "$dir" ]; then
		say "removing $dir"
		rm -rf "$dir"
	fi
	rm -f "$POINTER"
}

start() {
	remove_cluster "$(cluster_dir)"

	local dir=$DEFAULT_DIR
	mkdir -p "$dir"
	chmod 700 "$dir"
	if is_root; then
		chown "$RUN_USER": "$dir"
		if ! as_owner test -w "$dir"; then
			say "user $RUN_USER cannot reach $dir (a parent directory is closed to it)"
			rm -rf "$dir"
			dir=$FALLBACK_DIR
		fi
	fi
	# A Unix socket path holds at most 107 bytes.
	if [ "$dir" != "$FALLBACK_DIR" ] && [ ${#dir} -gt $((107 - 16)) ]; then
		say "$dir is too long for a Unix socket path"
		rm -rf "$dir"
		dir=$FALLBACK_DIR
	fi
	if [ "$dir" = "$FALLBACK_DIR" ]; then
		remove_cluster "$dir"
		mkdir -p "$dir"
		chmod 700 "$dir"
		is_root && chown "$RUN_USER": "$dir"
		echo "$dir" >"$POINTER"
		say "using $dir instead"
	fi

	say "initdb in $dir"
	as_owner initdb -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
		>"$dir.initdb.log" 2>&1 ||
		{ cat "$dir.initdb.log" >&2; exit 1; }
	rm -f "$dir.initdb.log"
	cat <<-EOF | as_owner tee -a "$dir/postgresql.conf" >/dev/null

		# batpak demo
		listen_addresses = ''
		unix_socket_directories = '$dir'
		port = $PORT
		shared_preload_libraries = 'batpak'
		batpak.database = 'postgres'
	EOF

	say "starting the server (log: $dir/server.log)"
	if ! as_owner pg_ctl -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null; then
		tail -n 40 "$dir/server.log" >&2 || true
		exit 1
	fi

	local psql=("$PGBINDIR/psql" -X -h "$dir" -p "$PORT" -U postgres -d postgres)
	"${psql[@]}" -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION batpak'

	# The writer recovers before it serves; wait (bounded) until it is ready.
	local state='' i
	for i in $(seq 1 300); do
		state=$("${psql[@]}" -Atq -c 'SELECT state FROM batpak.stats') || true
		case $state in
			starting | recovering | '') sleep 0.1 ;;
			*) break ;;
		esac
	done
	if [ "$state" != ready ]; then
		say "the batpak writer is '$state', not ready; see $dir/server.log" >&2
		tail -n 40 "$dir/server.log" >&2 || true
		exit 1
	fi

	say "running test/setup/demo.sql"
	echo
	"${psql[@]}" -q -v ON_ERROR_STOP=1 --echo-all -f "$REPO/test/setup/demo.sql"

	cat <<-EOF

		The demo cluster is running in $dir (socket only, port $PORT).
		  connect:  psql -h $dir -p $PORT -U postgres postgres
		  stop:     $(pg_ctl_cmd) -D $dir stop     (or: make demo-stop)
		  remove:   make clean   (or run make demo again to start afresh)
	EOF
}

case ${1:-start} in
	start) start ;;
	stop) stop_cluster "$(cluster_dir)" ;;
	remove) remove_cluster "$(cluster_dir)" ;;
	*) echo "usage: $0 [start|stop|remove]" >&2; exit 2 ;;
esac
