#!/usr/bin/env bash
#
# test/bench/run.sh — batpak benchmark against a plain PostgreSQL table
#
# Creates a throwaway cluster in a temporary directory with batpak preloaded,
# measures the workloads below side by side in one run (each the median of
# three short runs, with the min–max spread), prints one Markdown table and
# writes it to test/bench/results.md.  The cluster is stopped and the
# directory removed on exit, whatever happens.
#
#   1. fdatasync floor of the disk (pg_test_fsync, "one 8kB write" section)
#   2. plain-table inserts (events table with uuid pk and unique (stream,
#      version)), 1 and 32 clients, and 1,000-row INSERT ... SELECT
#   3. batpak.append, 1 client (latency avg/p50/p99) and 32 clients, in
#      immediate mode (batpak.transactional = off); transactional appends
#      (autocommit, and BEGIN; append; COMMIT) at 1 and 32 clients, and at
#      32 clients while another transaction holds a pending event open
#      (alternating runs with and without it)
#      three gates written in SQL, 32 clients, runs alternating with none
#   4. batpak.append_batch of 1,000 events
#   5. reads after a bulk load: read_all and read_stream of a 200k-event
#      entity, against count(*) on the plain table
#   6. start-up: restart with the loaded store, seconds until batpak.stats
#      says 'ready'
#   7. index memory per event (batpak.stats)
#   8. consumers: cursor_read in batches of 1,000 over the loaded store,
#      against keyset pages of 1,000 of the plain table; append → NOTIFY
#      latency with 10 LISTEN clients and append → cursor_wait latency
#      (test/bench/consumers.py, Debian's python3-psycopg), against INSERT +
#      pg_notify in one transaction
#
# Environment:
#   BENCH_SCALE   multiplies run lengths and data volume (default 1: 5 s
#                 pgbench runs, 1,000,000 loaded events; 0.1 for a smoke run)
#   PGBIN         PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR  where the temporary cluster goes (default $TMPDIR or /tmp);
#                 it must be on the disk you want to measure, not tmpfs
#   BENCH_RESULTS output file (default test/bench/results.md next to this file)
#   BENCH_KEEP=1  keep the temporary directory (logs, pgbench output)
#   BENCH_BASELINE_ONLY=1  skip the batpak workloads (checks the machine and
#                 the harness without the extension; batpak cells say n/a)
#   BENCH_ONLY    comma-separated sections to run, the others are skipped
#                 (e.g. BENCH_ONLY=baseline-consumers,consumer-reads,consumer-latency);
#                 sections that need the loaded data load it themselves.
#                 The table goes to stdout and to BENCH_RESULTS if set, not
#                 to test/bench/results.md
#   BENCH_PYTHON  a Python 3 with psycopg 3 for consumers.py (default: the
#                 first of /usr/bin/python3 and python3 that imports psycopg)
#
# Run as root, the server runs as the "postgres" OS user (initdb refuses
# root); the clients connect over the Unix socket in the temporary directory.

set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_SCALE=${BENCH_SCALE:-1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RESULTS=${BENCH_RESULTS:-$HERE/results.md}
BASELINE_ONLY=${BENCH_BASELINE_ONLY:-0}
ONLY=${BENCH_ONLY:-}
[[ -z $ONLY || -n ${BENCH_RESULTS:-} ]] || RESULTS=
RUNS=3
T_BEGIN=$SECONDS

# The ~200-byte JSON payload of every event and row.
PAYLOAD='{"order_id": 1234567, "customer": "c-000042", "currency": "EUR", "total_cents": 129900, "items": [{"sku": "SKU-000123", "qty": 2, "price_cents": 49950}, {"sku": "SKU-000456", "qty": 1, "price_cents": 30000}]}'

die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[%s +%3ds] %s\n' "$(date +%H:%M:%S)" $((SECONDS - T_BEGIN)) "$*" >&2; }

# ---------------------------------------------------------------- arithmetic

# Floating-point expression via awk: calc '2 * x' x=3
calc() {
	local expr=$1; shift
	awk "$@" "BEGIN { printf \"%.6f\", ($expr) }"
}

# "median min max" of the numbers given as arguments (empty if none).
stats3() {
	[[ $# -gt 0 ]] || return 0
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
		      printf "%s %s %s", m, v[1], v[NR] }'
}

# Round and group thousands: 1234567.8 -> 1,234,568
grp() {
	awk -v x="$1" -v d="${2:-0}" 'BEGIN {
		s = sprintf("%." d "f", x); neg = (s ~ /^-/); sub(/^-/, "", s)
		i = index(s, "."); ip = i ? substr(s, 1, i - 1) : s; fp = i ? substr(s, i) : ""
		out = ""; while (length(ip) > 3) { out = "," substr(ip, length(ip) - 2) out; ip = substr(ip, 1, length(ip) - 3) }
		printf "%s%s%s%s", (neg ? "-" : ""), ip, out, fp }'
}

# Validate and derive the scale-dependent sizes.
if ! [[ $BENCH_SCALE =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || ! awk -v s="$BENCH_SCALE" 'BEGIN { exit !(s > 0) }'; then
	die "BENCH_SCALE must be a positive number, got '$BENCH_SCALE'"
fi
DUR=$(awk -v s="$BENCH_SCALE" 'BEGIN { d = int(5 * s + 0.5); print (d < 1 ? 1 : d) }')
NLOAD=$(awk -v s="$BENCH_SCALE" 'BEGIN { n = int(1000000 * s / 10000 + 0.5) * 10000; print (n < 10000 ? 10000 : n) }')
NHOT=$(( NLOAD / 5 / 10000 * 10000 )); (( NHOT >= 10000 )) || NHOT=10000
LOAD_BATCH=10000
# consumers: pages of 1,000 read per run, appends per latency run
NPAGES=$(( NLOAD / 1000 ))
NAPPENDS=$(awk -v s="$BENCH_SCALE" 'BEGIN { n = int(500 * s + 0.5); print (n < 100 ? 100 : n) }')

# ------------------------------------------------------------------ checks

for b in initdb pg_ctl postgres psql pgbench pg_test_fsync pg_config; do
	[[ -x $PGBIN/$b ]] || die "$PGBIN/$b not found; set PGBIN to the PostgreSQL 15 bin directory"
done
PGVER_BIN=$("$PGBIN/pg_config" --version)
[[ $PGVER_BIN == "PostgreSQL 15"* ]] || die "$PGBIN is $PGVER_BIN, not PostgreSQL 15"
if [[ $BASELINE_ONLY != 1 ]]; then
	ext_dir="$("$PGBIN/pg_config" --sharedir)/extension"
	lib_dir=$("$PGBIN/pg_config" --pkglibdir)
	[[ -f $ext_dir/batpak.control ]] \
		|| die "the batpak extension is not installed ($ext_dir/batpak.control is missing); run 'make install' first (or 'make bench')"
	[[ -f $lib_dir/batpak.so ]] \
		|| die "the batpak library is not installed ($lib_dir/batpak.so is missing); run 'make install' first (or 'make bench')"
fi
for f in baseline_insert.sql baseline_batch.sql batpak_append.sql batpak_append_tx.sql batpak_batch.sql batpak_batch_build.sql \
	baseline_page.sql baseline_page_ro.sql batpak_cursor_read.sql; do
	[[ -r $HERE/$f ]] || die "pgbench script $HERE/$f is missing"
done
[[ -r $HERE/consumers.py ]] || die "$HERE/consumers.py is missing"

# A Python 3 with psycopg 3 for consumers.py (Debian's python3-psycopg lives
# in /usr/bin/python3, which need not be the first python3 on PATH).  None:
# the latency cells say n/a.
PYTHON=
for p in ${BENCH_PYTHON:-} /usr/bin/python3 python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import psycopg' >/dev/null 2>&1; then
		PYTHON=$(command -v "$p")
		break
	fi
done

# initdb and the server refuse to run as root: run them as postgres.
if [[ $EUID -eq 0 ]]; then
	PG_OS_USER=${BENCH_OS_USER:-postgres}
	id "$PG_OS_USER" >/dev/null 2>&1 || die "running as root needs an OS user '$PG_OS_USER' for the server (set BENCH_OS_USER)"
	as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
	PG_OS_USER=$(id -un)
	as_pg() { "$@"; }
fi

# -------------------------------------------------------------- temp cluster

WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/batpak-bench.XXXXXX")
[[ $EUID -eq 0 ]] && chown "$PG_OS_USER" "$WORK"
cd "$WORK"
export PGDATA=$WORK/data
SERVER_LOG=$WORK/server.log
KV=$WORK/results.kv
: >"$KV"
CLUSTER_UP=0
FSYNC_PID=

cleanup() {
	local rc=$?
	set +e
	if [[ -n $FSYNC_PID ]]; then
		kill -INT "$FSYNC_PID" 2>/dev/null
		wait "$FSYNC_PID" 2>/dev/null
	fi
	if [[ $CLUSTER_UP == 1 || -f $PGDATA/postmaster.pid ]]; then
		say "stopping the temporary cluster"
		as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -t 60 -w stop >/dev/null 2>&1 \
			|| as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -t 30 -w stop >/dev/null 2>&1
	fi
	if [[ $rc -ne 0 && -f $SERVER_LOG ]]; then
		printf '\n--- last lines of the server log (%s) ---\n' "$SERVER_LOG" >&2
		tail -n 30 "$SERVER_LOG" >&2
	fi
	cd /
	if [[ ${BENCH_KEEP:-0} == 1 ]]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port: nothing listening on TCP and no socket of that number in WORK
# (the server listens on the Unix socket only, so this is belt and braces).
pick_port() {
	local p i
	for i in $(seq 1 100); do
		p=$(( 20000 + (RANDOM * 7 + i) % 30000 ))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
PORT=$(pick_port) || die "no free port found"

export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGPASSWORD PGSERVICE PGOPTIONS PGSSLMODE 2>/dev/null || true

# psql: quiet, unaligned, tuples only, stop at the first error, bounded.
q() { timeout "${QTIMEOUT:-600}" "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

start_cluster() {
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$SERVER_LOG" -t 120 -w start >/dev/null \
		|| die "the server did not start (see the log below)"
	CLUSTER_UP=1
}

stop_cluster() {
	as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -t 120 -w stop >/dev/null \
		|| die "the server did not stop within 120 s"
	CLUSTER_UP=0
}

# Poll batpak.stats until state = 'ready'; a failing query counts as not
# ready yet.  Prints the seconds waited; fails after $1 seconds.
wait_ready() {
	local limit=$1 t0 now state
	t0=$(date +%s.%N)
	while :; do
		state=$(QTIMEOUT=10 q "SELECT state FROM batpak.stats" 2>/dev/null || true)
		now=$(date +%s.%N)
		if [[ $state == ready ]]; then
			calc 'b - a' -v a="$t0" -v b="$now"
			return 0
		fi
		if awk -v a="$t0" -v b="$now" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
			echo "batpak did not become ready within ${limit}s (last state: '${state:-query failed}')" >&2
			return 1
		fi
		sleep 0.02
	done
}

# ------------------------------------------------------------ result store

# Results live in a key/value file so that each section can run in a subshell
# (a failed section reports n/a instead of ending the benchmark).
put() { printf '%s\t%s\n' "$1" "$2" >>"$KV"; }
get() { awk -F'\t' -v k="$1" '$1 == k { v = $2 } END { printf "%s", v }' "$KV"; }
# put_stats key v1 v2 v3 -> key (median), key.min, key.max
put_stats() {
	local k=$1 s; shift
	s=$(stats3 "$@")
	[[ -n $s ]] || return 0
	read -r med lo hi <<<"$s"
	put "$k" "$med"; put "$k.min" "$lo"; put "$k.max" "$hi"
}
na() { put "$1.why" "$2"; say "n/a: $1: $2"; }

# wanted SECTION: is it to run (BENCH_ONLY)?
wanted() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

# Run a section in a subshell with errexit on; record failures as n/a.
section() {
	local name=$1; shift
	if [[ $name != machine ]] && ! wanted "$name"; then
		say "== $name: skipped (BENCH_ONLY=$ONLY)"
		return 0
	fi
	say "== $name"
	set +e
	( set -e; "$@" )
	local rc=$?
	set -e
	if [[ $rc -ne 0 ]]; then
		put "failed.$name" "exit status $rc"
		say "section '$name' failed (exit status $rc); its cells will say n/a"
	fi
}

# ----------------------------------------------------------------- pgbench

# pgb TAG CLIENTS JOBS SCRIPT [more pgbench args]
# One run of $DUR seconds (or PGB_TX transactions per client, if set);
# writes "tps latency_avg_ms" or fails.
pgb() {
	local tag=$1 clients=$2 jobs=$3 script=$4; shift 4
	local out=$WORK/pgbench-$tag.out tps lat failed
	local len=(-T "$DUR")
	[[ -z ${PGB_TX:-} ]] || len=(-t "$PGB_TX")
	if ! timeout $(( DUR + 120 )) "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" "${len[@]}" \
		-D "payload=$PAYLOAD" -f "$HERE/$script" "$@" >"$out" 2>&1; then
		echo "pgbench $tag failed:" >&2
		tail -n 5 "$out" >&2
		return 1
	fi
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
	if [[ -n $failed && $failed != 0 ]]; then
		echo "pgbench $tag: $failed failed transactions" >&2
		return 1
	fi
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out" | head -n 1)
	lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -n 1)
	[[ -n $tps && -n $lat ]] || { echo "pgbench $tag: no tps in output" >&2; return 1; }
	echo "$tps $lat"
}

# Latency avg/p50/p99 (ms) from pgbench --log files with prefix $1.
log_latency() {
	cat "$1".* | awk '{ print $3 / 1000 }' | sort -g | awk '{ v[NR] = $1; s += $1 }
		END { if (NR == 0) exit 1
		      i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
		      i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
		      printf "%.6f %.6f %.6f %d", s / NR, v[i50], v[i99], NR }'
}

# "events_written fsyncs groups" from batpak.stats, or nothing when batpak is
# not there or the view has no such columns.
writer_counters() {
	[[ $BASELINE_ONLY != 1 ]] || return 0
	local cols
	cols=$(get stats.columns)
	[[ ", $cols, " == *", events_written, "* && ", $cols, " == *", fsyncs, "* && ", $cols, " == *", groups, "* ]] || return 0
	q "SELECT events_written || ' ' || fsyncs || ' ' || groups FROM batpak.stats" 2>/dev/null || true
}

# bench_tps KEY CLIENTS JOBS SCRIPT UNITS_PER_TX [latency]
# One warm-up second, then $RUNS runs; stores KEY.tps (units/s) and KEY.lat*
bench_tps() {
	local key=$1 clients=$2 jobs=$3 script=$4 units=$5 want_lat=${6:-}
	local i r tps lat rates=() lats=() p50s=() p99s=() res c0 c1 e0 e1 f0 f1 g0 g1
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	timeout 60 "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" -T 1 \
		-D "payload=$PAYLOAD" -f "$HERE/$script" >"$WORK/pgbench-$key-warmup.out" 2>&1 \
		|| { tail -n 5 "$WORK/pgbench-$key-warmup.out" >&2; return 1; }
	c0=$(writer_counters)
	for i in $(seq 1 "$RUNS"); do
		if [[ -n $want_lat ]]; then
			r=$(pgb "$key-$i" "$clients" "$jobs" "$script" --log --log-prefix="$WORK/lat-$key-$i")
			res=$(log_latency "$WORK/lat-$key-$i")
			read -r lat p50 p99 _ <<<"$res"
			lats+=("$lat"); p50s+=("$p50"); p99s+=("$p99")
		else
			r=$(pgb "$key-$i" "$clients" "$jobs" "$script")
			read -r _ lat <<<"$r"
			lats+=("$lat")
		fi
		read -r tps _ <<<"$r"
		rates+=("$(calc 't * u' -v t="$tps" -v u="$units")")
		say "   $key run $i: $(grp "${rates[-1]}") /s, latency avg $(printf '%.3f' "${lats[-1]}") ms"
	done
	put_stats "$key.rate" "${rates[@]}"
	put_stats "$key.lat" "${lats[@]}"
	c1=$(writer_counters)
	if [[ -n $c0 && -n $c1 ]]; then
		# events per fdatasync and per group over the measured runs
		read -r e0 f0 g0 <<<"$c0"
		read -r e1 f1 g1 <<<"$c1"
		if (( f1 > f0 && g1 > g0 )); then
			put "$key.per_fsync" "$(calc '(e1 - e0) / (f1 - f0)' -v e0="$e0" -v e1="$e1" -v f0="$f0" -v f1="$f1")"
			put "$key.per_group" "$(calc '(e1 - e0) / (g1 - g0)' -v e0="$e0" -v e1="$e1" -v g0="$g0" -v g1="$g1")"
			say "   $key: $(get "$key.per_fsync") events per fdatasync, $(get "$key.per_group") per group"
		fi
	fi
	if [[ -n $want_lat ]]; then
		put_stats "$key.p50" "${p50s[@]}"
		put_stats "$key.p99" "${p99s[@]}"
	fi
}

# Time one statement with psql's \timing; prints "ms first_result_value".
time_query() {
	local out ms val
	out=$(timeout "${QTIMEOUT:-600}" "$PGBIN/psql" -X -A -t -v ON_ERROR_STOP=1 \
		-c '\timing on' -c "$1" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
	ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | tail -n 1)
	val=$(grep -v -e '^Time: ' -e '^Timing is ' <<<"$out" | head -n 1)
	[[ -n $ms ]] || { echo "no timing in psql output: $out" >&2; return 1; }
	echo "$ms $val"
}

# bench_count KEY SQL: $RUNS timed runs of a count(*) query; KEY.rate is rows/s
bench_count() {
	local key=$1 sql=$2 i r ms n rates=() secs=()
	# both sides alike: dirty pages of the preceding load flushed, one
	# unmeasured run to warm caches
	sync
	time_query "$sql" >/dev/null
	for i in $(seq 1 "$RUNS"); do
		r=$(time_query "$sql")
		read -r ms n <<<"$r"
		[[ $n =~ ^[0-9]+$ ]] || { echo "$key: unexpected result '$n'" >&2; return 1; }
		rates+=("$(calc 'n / (ms / 1000)' -v n="$n" -v ms="$ms")")
		secs+=("$(calc 'ms / 1000' -v ms="$ms")")
		say "   $key run $i: $n rows in $(printf '%.3f' "${secs[-1]}") s = $(grp "${rates[-1]}") /s"
	done
	put "$key.rows" "$n"
	put_stats "$key.rate" "${rates[@]}"
	put_stats "$key.secs" "${secs[@]}"
}

# =================================================================== sections

sec_machine() {
	put machine.nproc "$(nproc)"
	put machine.mem "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	put machine.kernel "$(uname -srm)"
	put machine.cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	put machine.load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
	put machine.fs "$(df -PT "$WORK" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
}

# fdatasync floor: pg_test_fsync -s 2, "fdatasync" line of the "one 8kB
# write" section.  The later sections (two writes, open_sync sizes, ...) are
# not needed, so the run is interrupted (SIGINT: it removes its file) as soon
# as that line is out; that keeps each run at ~5 s instead of ~40 s.
fsync_once() {
	local out=$WORK/fsync-$1.out deadline line
	local buf=()
	command -v stdbuf >/dev/null && buf=(stdbuf -oL)
	"${buf[@]}" "$PGBIN/pg_test_fsync" -s 2 -f "$WORK/fsync.testfile" >"$out" 2>&1 &
	FSYNC_PID=$!
	deadline=$(( SECONDS + 90 ))
	line=
	while (( SECONDS < deadline )); do
		line=$(awk '/one 8kB write/ { s = 1 } /two 8kB writes/ { s = 0 }
			s && $1 == "fdatasync" && $3 == "ops/sec" { print; exit }' "$out")
		[[ -n $line ]] && break
		kill -0 "$FSYNC_PID" 2>/dev/null || break
		sleep 0.2
	done
	kill -INT "$FSYNC_PID" 2>/dev/null || true
	wait "$FSYNC_PID" 2>/dev/null || true
	FSYNC_PID=
	[[ -n $line ]] || { echo "pg_test_fsync gave no fdatasync line:" >&2; cat "$out" >&2; return 1; }
	awk '{ print $2, $4 }' <<<"$line"   # ops/sec usecs/op
}

sec_fsync() {
	local i r ops us opss=() uss=()
	for i in $(seq 1 "$RUNS"); do
		r=$(fsync_once "$i")
		read -r ops us <<<"$r"
		opss+=("$ops"); uss+=("$us")
		say "   fdatasync run $i: $ops ops/s, $us µs/op"
	done
	put_stats fsync.ops "${opss[@]}"
	put_stats fsync.us "${uss[@]}"
}

setup_cluster() {
	say "initdb in $WORK (port $PORT, server user $PG_OS_USER)"
	as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 \
		|| { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
	local preload="shared_preload_libraries = 'batpak'"
	[[ $BASELINE_ONLY == 1 ]] && preload="# batpak not preloaded (BENCH_BASELINE_ONLY=1)"
	as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<-EOF

		# --- test/bench/run.sh ---
		$preload
		listen_addresses = ''
		unix_socket_directories = '$WORK'
		port = $PORT
		shared_buffers = 256MB
		max_connections = 100
		fsync = on
		synchronous_commit = on
	EOF
	start_cluster
	local settings
	settings=$(q "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
	             FROM pg_settings WHERE name IN ('shared_buffers', 'max_connections', 'work_mem', 'fsync',
	               'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'max_wal_size',
	               'checkpoint_timeout', 'max_parallel_workers_per_gather', 'shared_preload_libraries')")
	put pg.settings "$settings"
	put pg.version "$(q "SELECT version()")"
	put payload.text_bytes "$(q "SELECT octet_length(\$p\$$PAYLOAD\$p\$)")"
	put payload.jsonb_bytes "$(q "SELECT pg_column_size(\$p\$$PAYLOAD\$p\$::jsonb)")"

	q "CREATE TABLE events (id uuid PRIMARY KEY, stream text, version bigint, type text, data jsonb,
	                        UNIQUE (stream, version));
	   CREATE SEQUENCE v;" >/dev/null
	if [[ $BASELINE_ONLY != 1 ]]; then
		local err
		if ! err=$(q "CREATE EXTENSION batpak" 2>&1); then
			die "CREATE EXTENSION batpak failed: $err"
		fi
		local w
		w=$(wait_ready 60) || die "the batpak writer never became ready after CREATE EXTENSION"
		say "batpak ready ($(printf '%.2f' "$w") s after CREATE EXTENSION)"
		put stats.columns "$(q "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
		                        WHERE attrelid = 'batpak.stats'::regclass AND attnum > 0 AND NOT attisdropped")"
	fi
}

sec_baseline_writes() {
	bench_tps base1 1 1 baseline_insert.sql 1 latency
	bench_tps base32 32 2 baseline_insert.sql 1
	bench_tps basebatch 1 1 baseline_batch.sql 1000
	bench_tps basebatch4 4 2 baseline_batch.sql 1000
}

# The foundation's rows measure immediate mode (visible when durable), as
# before transactional visibility existed; the transactional rows follow.
IMMEDIATE='-c batpak.transactional=off'

sec_batpak_writes() {
	PGOPTIONS=$IMMEDIATE bench_tps bp1 1 1 batpak_append.sql 1 latency
	PGOPTIONS=$IMMEDIATE bench_tps bp32 32 2 batpak_append.sql 1
	PGOPTIONS=$IMMEDIATE bench_tps bpbatch 1 1 batpak_batch.sql 1000
	PGOPTIONS=$IMMEDIATE bench_tps bpbatch4 4 2 batpak_batch.sql 1000
	PGOPTIONS=$IMMEDIATE bench_tps bpbuild 1 1 batpak_batch_build.sql 1000
}

# A session that appended in a transaction and stays open (pending event on
# an entity the workload does not touch) while $@ runs.
with_open_transaction() {
	local holder rc
	"$PGBIN/psql" -X -q -c "BEGIN" -c "SELECT batpak.append('held-open', 'bench', 'bench', '{}')" \
		-c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
	holder=$!
	local i
	for i in $(seq 1 200); do
		[[ $(q "SELECT pending_transactions FROM batpak.stats") -ge 1 ]] && break
		sleep 0.05
	done
	[[ $(q "SELECT pending_transactions FROM batpak.stats") -ge 1 ]] \
		|| { kill "$holder"; echo "the open transaction never appended" >&2; return 1; }
	set +e
	"$@"
	rc=$?
	set -e
	q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3600)%' AND pid <> pg_backend_pid()" >/dev/null
	wait "$holder" 2>/dev/null || true
	return $rc
}

# Three gates written in SQL, all passing the workload's events: created for
# one run and dropped for the next, alternately.
gates_on() {
	q "SELECT batpak.gate_create('g1_order_id', 'public.bench_gate_order_id(batpak.new_event)', kinds => ARRAY['bench']);
	   SELECT batpak.gate_create('g2_total', 'public.bench_gate_total(batpak.new_event)', scope => 'bench');
	   SELECT batpak.gate_create('g3_entity', 'public.bench_gate_entity(batpak.new_event)', entity_prefix => 's')" >/dev/null
}
gates_off() {
	q "SELECT batpak.gate_drop('g1_order_id'); SELECT batpak.gate_drop('g2_total');
	   SELECT batpak.gate_drop('g3_entity')" >/dev/null
}

sec_gates() {
	q "CREATE FUNCTION public.bench_gate_order_id(e batpak.new_event) RETURNS text LANGUAGE sql AS
	     \$\$ SELECT CASE WHEN NOT (e.payload ? 'order_id') THEN 'missing order_id' END \$\$;
	   CREATE FUNCTION public.bench_gate_total(e batpak.new_event) RETURNS text LANGUAGE sql AS
	     \$\$ SELECT CASE WHEN (e.payload->>'total_cents')::bigint < 0 THEN 'negative total' END \$\$;
	   CREATE FUNCTION public.bench_gate_entity(e batpak.new_event) RETURNS text LANGUAGE sql AS
	     \$\$ SELECT CASE WHEN e.entity !~ '^s[0-9]+\$' THEN 'unknown entity' END \$\$" >/dev/null
	alternate bpgates0 run_no_gates bpgates3 run_three_gates "three gates"
}

run_no_gates() { PGOPTIONS=$IMMEDIATE pgb "gates0-$1" 32 2 batpak_append.sql; }
run_three_gates() {
	local r
	gates_on
	r=$(PGOPTIONS=$IMMEDIATE pgb "gates3-$1" 32 2 batpak_append.sql) || { gates_off; return 1; }
	gates_off
	echo "$r"
}

sec_batpak_tx_writes() {
	bench_tps bptx1 1 1 batpak_append_tx.sql 1 latency
	# autocommit: one statement per transaction, like the baseline's INSERT
	bench_tps bpac32 32 2 batpak_append.sql 1
	alternate bptx32 run_tx32 bptx32open run_tx32_open "an open transaction"
}

run_tx32() { pgb "bptx32-$1" 32 2 batpak_append_tx.sql; }
run_tx32_open() { with_open_transaction pgb "bptx32open-$1" 32 2 batpak_append_tx.sql; }

# alternate KEY_A FN_A KEY_B FN_B WHAT: $RUNS rounds of FN_A then FN_B (each
# given the round number, each printing pgb's "tps latency"), so that drift
# in the machine favours neither side; stores KEY_A.rate and KEY_B.rate.
alternate() {
	local ka=$1 fa=$2 kb=$3 fb=$4 what=$5 i r tps a=() b=()
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	for i in $(seq 1 "$RUNS"); do
		r=$("$fa" "$i")
		read -r tps _ <<<"$r"
		a+=("$tps")
		r=$("$fb" "$i")
		read -r tps _ <<<"$r"
		b+=("$tps")
		say "   run $i: $(grp "${a[-1]}") /s without, $(grp "${b[-1]}") /s with $what"
	done
	put_stats "$ka.rate" "${a[@]}"
	put_stats "$kb.rate" "${b[@]}"
}

# Write a psql script that loads $NHOT events into one entity and the rest of
# $NLOAD over 1,000 entities, $LOAD_BATCH per statement.  $1: batpak|baseline
load_sql() {
	local kind=$1 done_n=0 ent n
	echo '\set ON_ERROR_STOP on'
	while (( done_n < NLOAD )); do
		n=$LOAD_BATCH
		(( done_n + n > NLOAD )) && n=$(( NLOAD - done_n ))
		if (( done_n < NHOT )); then ent="'bench-hot'"; else ent="'e' || (i % 1000)"; fi
		if [[ $kind == batpak ]]; then
			printf "SELECT count(*) FROM batpak.append_batch((SELECT array_agg(ROW(%s, 'bench', 'bench', \$p\$%s\$p\$::jsonb, NULL, NULL, NULL, NULL, NULL)::batpak.new_event) FROM generate_series(1, %d) AS i));\n" \
				"$ent" "$PAYLOAD" "$n"
		else
			printf "INSERT INTO events (id, stream, version, type, data) SELECT gen_random_uuid(), %s, nextval('v'), 'bench', \$p\$%s\$p\$::jsonb FROM generate_series(1, %d) AS i;\n" \
				"$ent" "$PAYLOAD" "$n"
		fi
		done_n=$(( done_n + n ))
	done
}

# load KEY KIND: run the load script once, timed (rate = loaded rows/s)
load_timed() {
	local key=$1 kind=$2 t0 t1 secs
	load_sql "$kind" >"$WORK/load-$kind.sql"
	t0=$(date +%s.%N)
	QTIMEOUT=1800 timeout 1800 "$PGBIN/psql" -X -q -A -t -f "$WORK/load-$kind.sql" >/dev/null
	t1=$(date +%s.%N)
	secs=$(calc 'b - a' -v a="$t0" -v b="$t1")
	put "$key.secs" "$secs"
	put "$key.rate" "$(calc 'n / s' -v n="$NLOAD" -v s="$secs")"
	say "   $key: $NLOAD rows in $(printf '%.1f' "$secs") s = $(grp "$(calc 'n / s' -v n="$NLOAD" -v s="$secs")") /s"
}

sec_baseline_reads() {
	load_timed baseload baseline
	QTIMEOUT=1800 q "VACUUM ANALYZE events" >/dev/null
	QTIMEOUT=600 q "CHECKPOINT" >/dev/null
	bench_count baseall "SELECT count(*) FROM events"
	bench_count basestream "SELECT count(*) FROM events WHERE stream = 'bench-hot'"
	put baseidx.bytes "$(q "SELECT pg_indexes_size('events')")"
	put baseidx.rows "$(q "SELECT count(*) FROM events")"
}

sec_batpak_reads() {
	load_timed bpload batpak
	bench_count bpall "SELECT count(*) FROM batpak.read_all()"
	bench_count bpstream "SELECT count(*) FROM batpak.read_stream('bench-hot')"
	# Informational: the function scan materializes every row in a tuplestore
	# of work_mem bytes before count(*) sees it, so the reads depend on
	# work_mem; the goal is judged at PostgreSQL's default (4MB).
	PGOPTIONS='-c work_mem=64MB' bench_count bpall_wm4 "SELECT count(*) FROM batpak.read_all()"
	PGOPTIONS='-c work_mem=64MB' bench_count bpstream_wm4 "SELECT count(*) FROM batpak.read_stream('bench-hot')"
}

# Index memory from batpak.stats; $1 is a key suffix (before/after restart).
stats_index() {
	local tag=$1 cols ev ib row
	cols=$(get stats.columns)
	row=$(q "SELECT row_to_json(s) FROM batpak.stats s")
	put "stats.row.$tag" "$row"
	[[ ", $cols, " == *", events, "* && ", $cols, " == *", index_bytes, "* ]] \
		|| { na "idx.$tag" "batpak.stats has no events/index_bytes columns (has: $cols)"; return 0; }
	ev=$(q "SELECT events FROM batpak.stats")
	ib=$(q "SELECT index_bytes FROM batpak.stats")
	put "idx.$tag.events" "$ev"
	put "idx.$tag.bytes" "$ib"
	if [[ ", $cols, " == *", index_bytes_per_event, "* ]]; then
		put "idx.$tag.view_bpe" "$(q "SELECT index_bytes_per_event FROM batpak.stats")"
	fi
	if [[ $ev =~ ^[0-9]+$ && $ev -gt 0 && $ib =~ ^[0-9]+$ ]]; then
		put "idx.$tag.bpe" "$(calc 'b / e' -v b="$ib" -v e="$ev")"
	else
		na "idx.$tag" "events=$ev index_bytes=$ib"
	fi
}

# Start-up: fast shutdown, pg_ctl start -w, then poll until 'ready'.
sec_startup() {
	local i t0 t1 w starts=() readys=() totals=() writers=()
	stats_index before
	for i in $(seq 1 "$RUNS"); do
		stop_cluster
		t0=$(date +%s.%N)
		start_cluster
		t1=$(date +%s.%N)
		w=$(wait_ready 120)
		starts+=("$(calc 'b - a' -v a="$t0" -v b="$t1")")
		readys+=("$w")
		if [[ ", $(get stats.columns), " == *", ready_at, "* ]]; then
			writers+=("$(q "SELECT extract(epoch FROM ready_at - started_at) FROM batpak.stats")")
		fi
		totals+=("$(calc 's + w' -v s="${starts[-1]}" -v w="$w")")
		say "   restart $i: pg_ctl start ${starts[-1]} s, then ready after $w s"
	done
	put_stats startup.ready "${readys[@]}"
	put_stats startup.pgstart "${starts[@]}"
	put_stats startup.total "${totals[@]}"
	[[ ${#writers[@]} -eq 0 ]] || put_stats startup.writer "${writers[@]}"
	stats_index after
}

# ---------------------------------------------------------------- consumers

# bench_pages KEY SCRIPT RESET_SQL CHECK_SQL [pgbench args]: one unmeasured
# run, then $RUNS runs of pgbench, 1 client, $NPAGES transactions of one
# page of 1,000 each.  RESET_SQL puts the consumer back at the start before
# each run; CHECK_SQL (if not empty) must then print NPAGES * 1,000, the
# rows the run consumed.  KEY.rate is rows/s.
bench_pages() {
	local key=$1 script=$2 reset=$3 check=$4; shift 4
	local i r tps got rates=() want=$(( NPAGES * 1000 ))
	sync
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	for i in $(seq 0 "$RUNS"); do
		q "$reset" >/dev/null
		r=$(PGB_TX=$NPAGES pgb "$key-$i" 1 1 "$script" "$@")
		if [[ -n $check ]]; then
			got=$(q "$check")
			[[ $got == "$want" ]] || { echo "$key run $i: consumed $got rows, expected $want" >&2; return 1; }
		fi
		read -r tps _ <<<"$r"
		if (( i == 0 )); then
			say "   $key warm-up: $(grp "$(calc 't * 1000' -v t="$tps")") /s"
			continue
		fi
		rates+=("$(calc 't * 1000' -v t="$tps")")
		say "   $key run $i: $(grp "$want") rows in pages of 1,000: $(grp "${rates[-1]}") /s"
	done
	put "$key.rows" "$want"
	put_stats "$key.rate" "${rates[@]}"
}

# The plain table paged in global order: keyset pagination on version (the
# global sequence) needs a btree on it, which the table of the other rows
# does not have; it is added here, after the index size was measured, and
# dropped again at the end.  The pages cover the bulk load (the last NLOAD
# versions), the same events as batpak's side.
sec_baseline_consumers() {
	local start
	if (( $(q "SELECT count(*) FROM events") < NLOAD )); then
		load_timed prep.baseload baseline	# BENCH_ONLY without baseline-reads
		QTIMEOUT=1800 q "VACUUM ANALYZE events" >/dev/null
	fi
	QTIMEOUT=1800 q "CREATE INDEX events_version ON events (version)" >/dev/null
	start=$(q "SELECT max(version) - $NLOAD FROM events")
	q "CREATE TABLE bench_cursor (name text PRIMARY KEY, last bigint NOT NULL, read_at timestamptz);
	   INSERT INTO bench_cursor VALUES ('bench-read', $start, NULL)" >/dev/null
	bench_pages basepage baseline_page.sql \
		"UPDATE bench_cursor SET last = $start WHERE name = 'bench-read'" \
		"SELECT count(*) FROM events WHERE version > $start
		    AND version <= (SELECT last FROM bench_cursor WHERE name = 'bench-read')"
	bench_pages basepage_ro baseline_page_ro.sql "SELECT 1" "" -D "last=$start"
	q "DROP INDEX events_version; DROP TABLE bench_cursor" >/dev/null
}

# cursor_read(name, 1000) from the start of the loaded store, one call per
# autocommit transaction.
sec_consumer_reads() {
	if (( $(q "SELECT visible_sequence FROM batpak.stats") < NLOAD )); then
		load_timed prep.bpload batpak		# BENCH_ONLY without batpak-reads
	fi
	q "SELECT batpak.cursor_create('bench-read', start_after => 0)" >/dev/null
	bench_pages bpcread batpak_cursor_read.sql \
		"SELECT batpak.cursor_seek('bench-read', 0)" \
		"SELECT position FROM batpak.cursors WHERE name = 'bench-read' AND gaps = 0"
	q "SELECT batpak.cursor_drop('bench-read')" >/dev/null
}

# consumer_run KEY RUN ARGS...: one run of consumers.py; stores its lines as
# KEY.run.RUN.<name>
consumer_run() {
	local key=$1 i=$2; shift 2
	local out=$WORK/consumers-$key-$i.out
	if ! timeout 300 "$PYTHON" "$HERE/consumers.py" "$@" --appends "$NAPPENDS" --seed "$i" \
		--payload "$PAYLOAD" >"$out" 2>"$out.err"; then
		echo "consumers.py $* (run $i) failed:" >&2
		tail -n 5 "$out.err" >&2
		return 1
	fi
	cat "$out.err" >&2
	awk -v k="$key.run.$i." '{ printf "%s%s\t%s\n", k, $1, $2 }' "$out" >>"$KV"
	say "   $key run $i: $(awk '{ v[$1] = $2 } END {
		printf "p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d", v["p50_ms"], v["p99_ms"], v["max_ms"], v["count"]
		if ("missed" in v) printf " (event, listener) pairs, %d missed, %.2f events per notification", v["missed"], v["events_per_notification"]
		if ("wakeups" in v) printf " wake-ups, %d events read along, %d empty wake-ups", v["extra"], v["empty"]
		printf "; append p50 %.3f ms; from the append'"'"'s return p50 %.3f ms, p99 %.3f ms", v["append_p50_ms"], v["post_p50_ms"], v["post_p99_ms"] }' "$out")"
}

# consumer_stats KEY: KEY.p50, KEY.p99 (median [min–max] of the runs) and
# the totals of the counters over the runs
consumer_stats() {
	local key=$1 f vals
	for f in p50_ms p99_ms max_ms post_p50_ms post_p99_ms append_p50_ms events_per_notification; do
		# "inf" (a pair that never got its notification) counts as 1e9 ms
		mapfile -t vals < <(awk -F'\t' -v p="$key.run." -v f="$f" \
			'index($1, p) == 1 && $1 ~ ("\\." f "$") { print ($2 == "inf" ? 1e9 : $2) }' "$KV")
		[[ ${#vals[@]} -eq 0 ]] || put_stats "$key.${f%_ms}" "${vals[@]}"
	done
	for f in count missed events extra empty; do
		put "$key.$f" "$(awk -F'\t' -v p="$key.run." -v f="$f" \
			'index($1, p) == 1 && $1 ~ ("\\." f "$") { s += $2; n++ } END { if (n) print s }' "$KV")"
	done
}

# Append → wake-up latency (consumers.py).  The runs of the different
# measurements alternate, so that drift in the machine favours none.
sec_consumer_latency() {
	[[ -n $PYTHON ]] || { echo "no Python 3 with psycopg (python3-psycopg; see BENCH_PYTHON)" >&2; return 1; }
	local specs=() spec key i
	if [[ $BASELINE_ONLY != 1 ]]; then
		specs+=("cnotify notify --listeners 10" "cwait wait")
	fi
	specs+=("cnotify_base notify --listeners 10 --baseline")
	if [[ $BASELINE_ONLY != 1 ]]; then
		specs+=("cnotify_imm notify --listeners 10 --immediate" "cwait_imm wait --immediate")
	fi
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	for i in $(seq 1 "$RUNS"); do
		for spec in "${specs[@]}"; do
			# shellcheck disable=SC2086 # spec is "key args..."
			consumer_run ${spec%% *} "$i" ${spec#* }
		done
	done
	for spec in "${specs[@]}"; do
		consumer_stats "${spec%% *}"
	done
}

# ================================================================== report

# cell KEY UNIT DECIMALS: "median unit [min–max]" or "n/a (why)"
cell() {
	local k=$1 unit=$2 d=${3:-0} m lo hi why
	m=$(get "$k"); lo=$(get "$k.min"); hi=$(get "$k.max")
	if [[ -z $m ]]; then
		why=$(get "${k%.*}.why")
		echo "n/a${why:+ ($why)}"
		return
	fi
	if [[ -n $lo && -n $hi ]]; then
		echo "$(grp "$m" "$d")${unit} [$(grp "$lo" "$d")–$(grp "$hi" "$d")]"
	else
		echo "$(grp "$m" "$d")${unit}"
	fi
}

# num KEY: the stored integer with thousands grouped, or "?"
num() {
	local v
	v=$(get "$1")
	if [[ -n $v ]]; then grp "$v"; else printf '?'; fi
}

# ratio A B DECIMALS: A/B or empty
ratio() {
	local a b
	a=$(get "$1"); b=$(get "$2")
	[[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" 'BEGIN { exit !(b > 0) }' || return 0
	printf '%.2f×' "$(calc 'a / b' -v a="$a" -v b="$b")"
}

# lat_cell KEY: "p50 … ms [min–max], p99 … ms [min–max]" of a consumers.py
# measurement, with the append's own p50 and any pair never notified
lat_cell() {
	local k=$1 out m
	if [[ -z $(get "$k.p50") ]]; then
		cell "$k.p50"
		return
	fi
	out="p50 $(cell "$k.p50" ' ms' 2), p99 $(cell "$k.p99" ' ms' 2), max $(grp "$(get "$k.max.max")" 1) ms"
	[[ -z $(get "$k.append_p50") ]] || out="$out (the append call itself: p50 $(grp "$(get "$k.append_p50")" 2) ms; from its return: p50 $(grp "$(get "$k.post_p50")" 2), p99 $(grp "$(get "$k.post_p99")" 2) ms)"
	m=$(get "$k.missed")
	[[ -z $m || $m == 0 ]] || out="$out, **$m of $(grp "$(get "$k.count")") pairs never notified**"
	echo "$out"
}

# both A B: yes if both are yes, n/a if either is, else **no**
both() {
	if [[ $1 == yes && $2 == yes ]]; then echo yes
	elif [[ $1 == n/a || $2 == n/a ]]; then echo n/a
	else echo "**no**"; fi
}

# met VALUE OP TARGET: yes/no (empty value: n/a)
met() {
	local v=$1 op=$2 t=$3
	[[ -n $v ]] || { echo "n/a"; return; }
	if awk -v v="$v" -v t="$t" -v op="$op" 'BEGIN { exit !((op == ">=") ? v >= t : v <= t) }'; then
		echo "yes"
	else
		echo "**no**"
	fi
}

report() {
	local fs_us small="" r v
	fs_us=$(get fsync.us)
	(( NLOAD < 1000000 )) && small=" (BENCH_SCALE=$BENCH_SCALE: only $(grp "$NLOAD") events loaded, goals are stated for ≥ 1,000,000)"

	echo "# batpak benchmark"
	echo
	echo "Generated by \`test/bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), BENCH_SCALE=$BENCH_SCALE" \
	     "($RUNS runs of ${DUR}s per pgbench workload; cells are the median with [min–max])."
	echo
	echo "- Machine: $(get machine.cpu), $(get machine.nproc) CPUs (nproc), $(get machine.mem) RAM, $(get machine.kernel)"
	echo "- Load average (1/5/15 min) at the start: $(get machine.load_start), at the end: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine shows up in the spreads)"
	echo "- Disk: $(get machine.fs) in the temporary directory; fdatasync floor (pg_test_fsync -s 2, one 8kB write):" \
	     "$(cell fsync.ops ' ops/s' 0), $(cell fsync.us ' µs/op' 0)"
	echo "- PostgreSQL: $(get pg.version)"
	echo "- Settings: $(get pg.settings) (fsync and synchronous_commit are on: every commit and every batpak append waits for a durable write)"
	echo "- Payload: $(get payload.text_bytes) bytes of JSON text, $(get payload.jsonb_bytes) bytes as jsonb; 100 streams/entities for the write workloads"
	echo "- Baseline: \`events(id uuid primary key, stream text, version bigint, type text, data jsonb, unique (stream, version))\`, version from a sequence; pgbench -M prepared, 32 clients use -j 2"
	[[ $BASELINE_ONLY == 1 ]] && echo "- BENCH_BASELINE_ONLY=1: batpak was not measured"
	echo
	echo "| workload | batpak | baseline | ratio | goal | met? |"
	echo "|---|---|---|---|---|---|"

	# 1-client latency
	local bl bp
	bp=$(cell bp1.lat ' ms' 3); bl=$(cell base1.lat ' ms' 3)
	if [[ -n $(get bp1.lat) ]]; then
		bp="avg $bp, p50 $(grp "$(get bp1.p50)" 3), p99 $(grp "$(get bp1.p99)" 3) ms"
		if [[ -n $fs_us ]]; then
			bp="$bp = $(printf '%.1f' "$(calc 'l * 1000 / f' -v l="$(get bp1.lat)" -v f="$fs_us")") fdatasyncs"
		fi
	fi
	if [[ -n $(get base1.lat) ]]; then
		bl="avg $bl, p50 $(grp "$(get base1.p50)" 3), p99 $(grp "$(get base1.p99)" 3) ms"
		if [[ -n $fs_us ]]; then
			bl="$bl = $(printf '%.1f' "$(calc 'l * 1000 / f' -v l="$(get base1.lat)" -v f="$fs_us")") fdatasyncs"
		fi
	fi
	r=$(ratio bp1.lat base1.lat)
	echo "| 1 client, immediate mode: latency per append / insert | $bp | $bl | ${r:-n/a} (latency, lower is better) | ≈ 1 fdatasync (informational) | — |"

	r=$(ratio bp1.rate base1.rate)
	echo "| 1 client: appends/s vs inserts/s | $(cell bp1.rate /s) | $(cell base1.rate /s) | ${r:-n/a} | — | — |"

	r=$(ratio bp32.rate base32.rate)
	v=$(get bp32.rate); local b32; b32=$(get base32.rate)
	local m32="n/a"
	[[ -n $v && -n $b32 ]] && m32=$(met "$(calc 'a / b' -v a="$v" -v b="$b32")" '>=' 2)
	local gc=""
	[[ -n $(get bp32.per_fsync) ]] && gc=" ($(printf '%.1f' "$(get bp32.per_fsync)") appends per writer fdatasync)"
	echo "| 32 clients, immediate mode: appends/s vs inserts/s | $(cell bp32.rate /s)$gc | $(cell base32.rate /s) | ${r:-n/a} | ≥ 2× baseline | $m32 |"

	# transactional visibility (issue 3)
	bp=$(cell bptx1.lat ' ms' 3)
	[[ -n $(get bptx1.lat) ]] && bp="avg $bp, p50 $(grp "$(get bptx1.p50)" 3), p99 $(grp "$(get bptx1.p99)" 3) ms"
	r=$(ratio bptx1.rate base1.rate)
	echo "| 1 client, transactional: BEGIN; append; COMMIT vs autocommit INSERT (latency) | $bp | $(cell base1.lat ' ms' 3) | ${r:-n/a} (rate) | — (pays the batpak fdatasync and PostgreSQL's commit) | — |"
	r=$(ratio bpac32.rate base32.rate)
	v=$(get bpac32.rate)
	local mac="n/a"
	[[ -n $v && -n $b32 ]] && mac=$(met "$(calc 'a / b' -v a="$v" -v b="$b32")" '>=' 1)
	echo "| 32 clients, transactional, autocommit \`SELECT batpak.append(…)\` (one event per transaction) vs inserts/s | $(cell bpac32.rate /s) | $(cell base32.rate /s) | ${r:-n/a} | ≥ 1× baseline | $mac |"
	r=$(ratio bptx32.rate base32.rate)
	v=$(get bptx32.rate)
	local mtx="n/a"
	[[ -n $v && -n $b32 ]] && mtx=$(met "$(calc 'a / b' -v a="$v" -v b="$b32")" '>=' 1)
	echo "| 32 clients, transactional: BEGIN; append; COMMIT vs inserts/s | $(cell bptx32.rate /s) | $(cell base32.rate /s) | ${r:-n/a} | ≥ 1× baseline | $mtx |"
	r=$(ratio bptx32open.rate bptx32.rate)
	v=$(get bptx32open.rate)
	local mopen="n/a"
	[[ -n $v && -n $(get bptx32.rate) ]] && mopen=$(met "$(calc 'a / b' -v a="$v" -v b="$(get bptx32.rate)")" '>=' 0.9)
	echo "| 32 clients, transactional, while another transaction holds a pending event open (vs the row above) | $(cell bptx32open.rate /s) | $(cell bptx32.rate /s) (no open transaction) | ${r:-n/a} | ≥ 0.9× (at most 10% slower) | $mopen |"

	r=$(ratio bpgates3.rate bpgates0.rate)
	v=$(get bpgates3.rate)
	local mg="n/a"
	[[ -n $v && -n $(get bpgates0.rate) ]] && mg=$(met "$(calc 'a / b' -v a="$v" -v b="$(get bpgates0.rate)")" '>=' 0.8)
	echo "| 32 clients, immediate mode, three gates written in SQL (vs no gates, alternating runs) | $(cell bpgates3.rate /s) | $(cell bpgates0.rate /s) (no gates) | ${r:-n/a} | ≥ 0.8× | $mg |"

	r=$(ratio bpbatch.rate basebatch.rate)
	local build=""
	if [[ -n $(get bpbuild.rate) && -n $(get bpbatch.rate) ]]; then
		local a b
		a=$(get bpbuild.rate); b=$(get bpbatch.rate)
		build=" (building the array alone: $(cell bpbuild.rate ' events/s'), i.e. $(printf '%.0f' "$(calc '100 * b / a' -v a="$a" -v b="$b")")% of the statement time"
		if awk -v a="$a" -v b="$b" 'BEGIN { exit !(a > b) }'; then
			build="$build; the append without it ≈ $(grp "$(calc '1 / (1 / b - 1 / a)' -v a="$a" -v b="$b")") events/s"
		fi
		build="$build)"
	fi
	echo "| append_batch of 1,000 events (whole statement)$build | $(cell bpbatch.rate ' events/s') | $(cell basebatch.rate ' rows/s') (1,000-row INSERT … SELECT) | ${r:-n/a} | ≥ 200,000 events/s | $(met "$(get bpbatch.rate)" '>=' 200000) |"
	r=$(ratio bpbatch4.rate basebatch4.rate)
	echo "| append_batch of 1,000 events, 4 clients (whole statement) | $(cell bpbatch4.rate ' events/s') | $(cell basebatch4.rate ' rows/s') (1,000-row INSERT … SELECT) | ${r:-n/a} | ≥ 200,000 events/s | $(met "$(get bpbatch4.rate)" '>=' 200000) |"

	r=$(ratio bpload.rate baseload.rate)
	echo "| bulk load of $(grp "$NLOAD") events, $(grp "$LOAD_BATCH") per statement (1 run) | $(cell bpload.rate ' events/s') | $(cell baseload.rate ' rows/s') | ${r:-n/a} | — | — |"

	local wm4=""
	[[ -n $(get bpall_wm4.rate) ]] && wm4=" (same query with work_mem=64MB: $(cell bpall_wm4.rate ' events/s'))"
	r=$(ratio bpall.rate baseall.rate)
	echo "| read_all: count(*) of $(num bpall.rows) events vs count(*) of $(num baseall.rows) rows$small | $(cell bpall.rate ' events/s')$wm4 | $(cell baseall.rate ' rows/s') | ${r:-n/a} | ≥ 1,000,000 events/s | $(met "$(get bpall.rate)" '>=' 1000000) |"

	wm4=""
	[[ -n $(get bpstream_wm4.rate) ]] && wm4=" (same query with work_mem=64MB: $(cell bpstream_wm4.rate ' events/s'))"
	r=$(ratio bpstream.rate basestream.rate)
	echo "| read_stream: count(*) of one entity with $(num bpstream.rows) events vs count(*) WHERE stream = … | $(cell bpstream.rate ' events/s')$wm4 | $(cell basestream.rate ' rows/s') | ${r:-n/a} | ≥ 1,000,000 events/s | $(met "$(get bpstream.rate)" '>=' 1000000) |"

	local ev; ev=$(get idx.after.events)
	echo "| start-up: pg_ctl start returned → stats.state = 'ready', $(num idx.after.events) events stored$small | $(cell startup.ready ' s' 2)$(wr=$(get startup.writer); [[ -z $wr ]] || printf ' (writer: started_at → ready_at %.2f s)' "$wr") | $(cell startup.pgstart ' s' 2) (pg_ctl start -w itself) | — | ≤ 3 s | $(met "$(get startup.ready)" '<=' 3) |"

	local bpe bbpe
	bpe=$(get idx.after.bpe)
	bbpe=""
	[[ -n $(get baseidx.bytes) && -n $(get baseidx.rows) ]] && (( $(get baseidx.rows) > 0 )) \
		&& bbpe=$(calc 'b / n' -v b="$(get baseidx.bytes)" -v n="$(get baseidx.rows)")
	local bcell="n/a" bpcell
	[[ -n $bbpe ]] && bcell="$(printf '%.1f' "$bbpe") B/row (on-disk btrees: pkey + unique, $(grp "$(get baseidx.rows)") rows)"
	if [[ -n $bpe ]]; then
		bpcell="$(printf '%.1f' "$bpe") B/event ($(grp "$(get idx.after.bytes)") B / $(grp "$ev") events, after restart"
		[[ -n $(get idx.before.bpe) ]] && bpcell="$bpcell; $(printf '%.1f' "$(get idx.before.bpe)") before restart"
		bpcell="$bpcell)"
	else
		bpcell="n/a"
		[[ -n $(get idx.after.why) ]] && bpcell="n/a ($(get idx.after.why))"
	fi
	r=""
	[[ -n $bpe && -n $bbpe ]] && r=$(printf '%.2f×' "$(calc 'a / b' -v a="$bpe" -v b="$bbpe")")
	echo "| index memory per event (batpak.stats) | $bpcell | $bcell | ${r:-n/a} | ≤ 64 B/event | $(met "$bpe" '<=' 64) |"

	# consumers
	local ro=""
	[[ -z $(get basepage_ro.rate) ]] || ro="; read-only pages with the position kept by the client, nothing to commit: $(cell basepage_ro.rate ' rows/s')"
	r=$(ratio bpcread.rate basepage.rate)
	echo "| consumer: \`count(*)\` of \`cursor_read(name, 1000)\`, one call per autocommit transaction (each commits the cursor's position), $(num bpcread.rows) events from the start of the store$small | $(cell bpcread.rate ' events/s') | $(cell basepage.rate ' rows/s') (keyset pages of 1,000 rows in \`version\` order through a btree on it added for this row, all columns, the position kept in a table and advanced by the same autocommit statement, \`UPDATE … FROM\` the page$ro) | ${r:-n/a} | ≥ 1,000,000 events/s | $(met "$(get bpcread.rate)" '>=' 1000000) |"

	local rl=""
	[[ -n $(get cnotify.p50) && -n $(get cnotify_base.p50) ]] \
		&& rl="p50 $(ratio cnotify.p50 cnotify_base.p50), p99 $(ratio cnotify.p99 cnotify_base.p99) (latency, lower is better)"
	echo "| append → notification received, 10 LISTEN clients, transactional (autocommit \`SELECT batpak.append(…)\`, one at a time, 1–5 ms apart): $(num cnotify.count) (event, listener) pairs over $RUNS runs | $(lat_cell cnotify) | $(lat_cell cnotify_base) (\`INSERT\` and \`pg_notify\` in one autocommit statement) | ${rl:-n/a} | p50 ≤ 2 ms, p99 ≤ 10 ms | $(both "$(met "$(get cnotify.p50)" '<=' 2)" "$(met "$(get cnotify.p99)" '<=' 10)") |"
	echo "| append → \`cursor_wait\` returns, 1 waiter, transactional (appends one at a time, 1–5 ms apart): $(num cwait.count) wake-ups over $RUNS runs | $(lat_cell cwait) | — (LISTEN, the row above, is plain PostgreSQL's wait) | — | p99 ≤ 10 ms | $(met "$(get cwait.p99)" '<=' 10) |"
	echo "| the same two in immediate mode (batpak.transactional = off), informational | notification: $(lat_cell cnotify_imm); \`cursor_wait\`: $(lat_cell cwait_imm) | — | — | — | — |"

	# Anything that failed or could not be measured.
	local notes
	notes=$(awk -F'\t' '$1 ~ /^failed\./ || $1 ~ /\.why$/ { print "- " $1 ": " $2 }' "$KV")
	if [[ -n $notes ]]; then
		echo
		echo "Not measured / failed:"
		echo
		echo "$notes"
	fi
	echo
	echo "Notes:"
	echo
	echo "- Immediate mode rows (and the append_batch rows) run with batpak.transactional = off (PGOPTIONS), as the foundation measured them; the transactional rows use the default (on), where each transaction also assigns an xid, writes a small WAL record for it and pays PostgreSQL's commit."
	echo "- Latency percentiles come from \`pgbench --log\` (every transaction of each 1-client run); the 1-client rows use -M prepared."
	echo "- The append_batch statement builds its 1,000-element array with array_agg over generate_series and appends it; the construction is measured separately and included in the figure."
	echo "- batpak's reads are set-returning functions: PostgreSQL's function scan puts every row in a tuplestore (in memory up to work_mem, then a temporary file) before count(*) reads it back; the work_mem=64MB figures show how much that costs when the tuplestore stays in memory longer. They are informational; the goal is judged at PostgreSQL's default work_mem (4MB)."
	echo "- count(*) on the plain table may use a parallel seq scan or an index-only scan; batpak reads run in the backend that calls them. The reads are warm (the data was just written)."
	echo "- Start-up is measured with the OS page cache warm (the segment files were just written)."
	echo "- Each read series starts after an OS \`sync\` and one unmeasured warm-up run, on both sides."
	echo "- Index memory on the baseline side is the on-disk size of its two btrees, for scale only."
	echo "- Consumer reads: pgbench, 1 client, $(grp "$NPAGES") transactions of one page per run (one unmeasured run first); before each run the cursor is put back at the start (\`cursor_seek(name, 0)\`) and after it its position must be $(num bpcread.rows); every commit waits for its WAL flush (synchronous_commit = on) on both sides. The plain table's pages are in \`version\` order (a global sequence) through a btree on \`version\` that exists only for that workload; they cover the rows of the bulk load (the last $(grp "$NLOAD") versions), as batpak's cursor covers its bulk load."
	echo "- Consumer latency (test/bench/consumers.py, psycopg $($PYTHON -c 'import psycopg; print(psycopg.__version__)' 2>/dev/null || echo '?')): $NAPPENDS measured appends per run (after 10 unmeasured), each after a random 1–5 ms pause; the clock starts right before the append call (so the append's own latency is included). The 10 listeners are polled by one process with a selector over their sockets, stamped when select() returns; latency is per (event, listener) pair, up to the first notification whose from_sequence..to_sequence covers the event. The waiter stamps cursor_wait's return, then consumes with cursor_read(name, 1000); latency is per wake-up, to the first event the read delivered. \"From its return\" is the same measured from the moment the append call returned to the appender (negative when the notification arrived first). Percentiles are nearest-rank within a run; cells are the median of the runs' p50 and p99 with [min–max]."
	if [[ -n $(get stats.row.after) ]]; then
		echo "- batpak.stats after the last restart: \`$(get stats.row.after)\`"
	fi
	echo "- Whole run: $((SECONDS - T_BEGIN)) s."
}

# ==================================================================== main

say "batpak benchmark: BENCH_SCALE=$BENCH_SCALE, ${DUR}s per run, $RUNS runs, $(grp "$NLOAD") events to load, work dir $WORK"
section machine sec_machine
section fsync sec_fsync
setup_cluster
section baseline-writes sec_baseline_writes
section baseline-reads sec_baseline_reads
section baseline-consumers sec_baseline_consumers
# batpak's reads, start-up and consumers run on the freshly loaded store, so
# that they are measured at the size the goals name, before the write
# workloads add their events.
if [[ $BASELINE_ONLY != 1 ]]; then
	section batpak-reads sec_batpak_reads
	section startup sec_startup
	section consumer-reads sec_consumer_reads
fi
section consumer-latency sec_consumer_latency
if [[ $BASELINE_ONLY != 1 ]]; then
	section batpak-writes sec_batpak_writes
	section batpak-tx-writes sec_batpak_tx_writes
	section gates sec_gates
fi

report >"$WORK/results.md"
cat "$WORK/results.md"
if [[ -n $RESULTS ]]; then
	cp "$WORK/results.md" "$RESULTS"
	say "results written to $RESULTS"
else
	say "BENCH_ONLY: results not written to a file (set BENCH_RESULTS)"
fi
