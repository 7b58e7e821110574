#!/usr/bin/env bash
#
# test/bench/run.sh — batpak against the event stores PostgreSQL users pick
#
# Creates a throwaway cluster in a temporary directory with batpak preloaded,
# installs the baselines into it, measures every workload side by side in
# one run (each cell the median of three short runs, with the min–max
# spread), prints one Markdown table and writes it to test/bench/results.md.
# The cluster is stopped and the directory removed on exit, whatever happens.
#
# Baselines, all in the same cluster, installed here at bench time:
#   plain     a plain table events(id uuid primary key, stream text, version
#             bigint, type text, data jsonb, unique (stream, version)), INSERT
#   Message DB  @eventide/message-db from the npm registry (npm pack, or the
#             registry's tarball with curl), installed by its own
#             database/install.sh into database message_store:
#             write_message, get_stream_messages, get_category_messages
#   PgQ       Debian's postgresql-15-pgq3 (make bench installs it):
#             insert_event, next_batch / get_batch_events / finish_batch
#   the disk's fdatasync floor (pg_test_fsync), the physical limit
# A baseline that cannot be installed gets n/a cells with the reason.
#
# Sections, in the order they run (BENCH_ONLY names them):
#   fsync            fdatasync floor
#   load             the data the read sections need: 100 events in each of
#                    1,000 streams, then the bulk load up to 1,000,000 events
#                    (batpak, plain), Message DB and PgQ data for the category
#                    reads and consumers; with "startup" wanted, batpak's
#                    start-up is measured at 100k, 1M and (BENCH_SCALE >= 10)
#                    10M events as the store grows, and the index memory
#   reads            count(*) of read_all and of a 200k-event read_stream
#   stream-reads     random whole streams of 100 events
#   page-reads       random pages of 1,000 in global / category order
#   consumers        cursor_read vs keyset pages with a position table vs a
#                    Message DB consumer vs PgQ batches
#   consumer-latency append → NOTIFY (10 listeners) and → cursor_wait
#   writes           single-event appends at 1, 8, 32 and 64 clients, with
#                    p50/p99 latency (batpak immediate and transactional),
#                    and the floor: a statement that writes nothing, at 1
#                    and 32 clients
#   tx-writes        one and ten events per transaction (one: against the
#                    plain table's BEGIN; INSERT; COMMIT); a pending
#                    transaction held open
#   batches          1,000 events per statement
#   gates            three SQL gates against none
#
# Environment:
#   BENCH_SCALE   multiplies run lengths and data volume (default 1: 3 s
#                 pgbench runs (2 s in the client sweep), 1,000,000 loaded
#                 events; 0.1 for a smoke run, 10 adds the 10M start-up)
#   PGBIN         PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TMPDIR  where the temporary cluster goes (default $TMPDIR or /tmp);
#                 it must be on the disk you want to measure, not tmpfs
#   BENCH_RESULTS output file (default test/bench/results.md next to this file)
#   BENCH_KEEP=1  keep the temporary directory (logs, pgbench output)
#   BENCH_BASELINE_ONLY=1  skip the batpak workloads (checks the machine and
#                 the harness without the extension; batpak cells say n/a)
#   BENCH_ONLY    comma-separated sections to run, the others are skipped
#                 (e.g. BENCH_ONLY=load,consumers).  The table goes to
#                 stdout and to BENCH_RESULTS if set, not to
#                 test/bench/results.md
#   BENCH_PYTHON  a Python 3 with psycopg 3 for consumers.py (default: the
#                 first of /usr/bin/python3 and python3 that imports psycopg)
#   BENCH_MDB_TARBALL  a local @eventide/message-db tarball instead of the
#                 registry's
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
MDB_VERSION=1.3.1
# batpak's immediate mode (visible when durable), as the foundation measured
IMMEDIATE='-c batpak.transactional=off'

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
DUR=$(awk -v s="$BENCH_SCALE" 'BEGIN { d = int(3 * s + 0.5); print (d < 1 ? 1 : d) }')
# the client sweep runs SWEEP_DUR seconds plus one per 32 clients (pgbench
# counts the clients' connection time, ~15 ms each, into -T)
SWEEP_DUR=$(awk -v s="$BENCH_SCALE" 'BEGIN { d = int(1 * s + 0.5); print (d < 1 ? 1 : d) }')
SWEEP_CLIENTS="1 8 32 64"
NLOAD=$(awk -v s="$BENCH_SCALE" 'BEGIN { n = int(1000000 * s / 100000 + 0.5) * 100000; print (n < 100000 ? 100000 : n) }')
LOAD_BATCH=10000
# streams of 100 events for the stream reads: 1,000 of them (100,000
# events), fewer below BENCH_SCALE=1; they are the first events loaded
NSR=$(( NLOAD >= 1000000 ? 1000 : NLOAD / 1000 ))
NSR_EV=$(( NSR * 100 ))
# the bulk load fills the rest up to NLOAD: one hot entity of a fifth of
# NLOAD, the others spread over 1,000 entities
NHOT=$(( NLOAD / 5 / 10000 * 10000 )); (( NHOT >= 10000 )) || NHOT=10000
# Message DB and PgQ consumers read a fifth of the volume (their per-page
# cost does not grow with the table; a smaller table favours them if at all)
NCONS=$(( NLOAD / 5 / 1000 * 1000 ))
NPAGES=$(( NLOAD / 1000 ))
NAPPENDS=$(awk -v s="$BENCH_SCALE" 'BEGIN { n = int(300 * s + 0.5); print (n < 100 ? 100 : n) }')
# start-up is measured when the store holds each of these sizes
STARTUP_AT="$NSR_EV"
for s in 1000000 10000000; do (( s > NSR_EV && s <= NLOAD )) && STARTUP_AT="$STARTUP_AT $s"; done
[[ " $STARTUP_AT " == *" $NLOAD "* ]] || STARTUP_AT="$STARTUP_AT $NLOAD"

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
for f in floor_select1.sql baseline_insert.sql baseline_batch.sql baseline_page.sql baseline_page_random.sql baseline_stream100.sql \
	batpak_append.sql batpak_append_tx.sql batpak_batch.sql batpak_batch10.sql batpak_batch_build.sql \
	batpak_cursor_read.sql batpak_page.sql batpak_stream100.sql \
	mdb_write.sql mdb_batch.sql mdb_stream100.sql mdb_page.sql mdb_consume.sql \
	pgq_insert.sql pgq_batch.sql pgq_consume.sql; do
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
	# the load runs whenever a section needs its data (see needs_data)
	if [[ $name != machine && $name != load ]] && ! wanted "$name"; then
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
	local out=$WORK/pgbench-$tag.out tps lat failed file=$script
	[[ $file == /* ]] || file=$HERE/$script
	local len=(-T "${PGB_DUR:-$DUR}")
	[[ -z ${PGB_TX:-} ]] || len=(-t "$PGB_TX")
	if ! timeout $(( ${PGB_DUR:-$DUR} + 120 )) "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$jobs" "${len[@]}" \
		-D "payload=$PAYLOAD" -f "$file" "$@" >"$out" 2>&1; then
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

# sys_do SYS CMD...: CMD with the database and session options of system
# SYS: bp is batpak in immediate mode (batpak.transactional = off, visible
# when durable), bptx batpak with the default transactional mode, plain the
# plain table, mdb Message DB (its own database, search_path as Eventide's
# clients set it), pgq PgQ.
sys_do() {
	local sys=$1; shift
	case $sys in
		bp) PGDATABASE=postgres PGOPTIONS=$IMMEDIATE "$@" ;;
		mdb) PGDATABASE=message_store PGOPTIONS='-c search_path=message_store,public' "$@" ;;
		*) PGDATABASE=postgres PGOPTIONS='' "$@" ;;
	esac
}

# has SYS: is SYS installed and measured in this run?  (Set up in
# setup_cluster; the reason for a missing one is in SYS.why.)
has() {
	case $1 in
		bp*) [[ $BASELINE_ONLY != 1 ]] ;;
		mdb | pgq) [[ $(get "$1.ok") == 1 ]] ;;
		*) true ;;
	esac
}

# compare KEY CLIENTS UNITS [--latency] SYS:SCRIPT... [-- PGBENCH ARGS]
# The same workload on several systems: one unmeasured second of each, then
# $RUNS rounds in which each system runs once, so that drift in the machine
# favours none.  Stores KEY.SYS.rate (UNITS per transaction, per second) and
# KEY.SYS.lat (average ms); with --latency also KEY.SYS.p50 and .p99 from
# pgbench --log (every transaction); for batpak the events per writer
# fdatasync as KEY.SYS.per_fsync.
compare() {
	local key=$1 clients=$2 units=$3; shift 3
	local want_lat="" specs=() extra=() active=() s sys script jobs=1 i r tps rate lat p50 p99 c0 c1
	local -A v_rate=() v_lat=() v_p50=() v_p99=() ev=() fs=()
	if [[ ${1:-} == --latency ]]; then want_lat=1; shift; fi
	while (( $# > 0 )); do
		if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
		specs+=("$1"); shift
	done
	(( clients > 1 )) && jobs=2
	for s in "${specs[@]}"; do
		sys=${s%%:*}
		if has "$sys"; then active+=("$s"); else put "$key.$sys.why" "$(get "$sys.why")"; fi
	done
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	for s in "${active[@]}"; do
		PGB_DUR=$(( 1 + clients / 32 )) sys_do "${s%%:*}" pgb "$key-${s%%:*}-warmup" "$clients" "$jobs" "${s#*:}" "${extra[@]}" >/dev/null
	done
	for i in $(seq 1 "$RUNS"); do
		for s in "${active[@]}"; do
			sys=${s%%:*}; script=${s#*:}
			c0=""; if [[ $sys == bp* ]]; then c0=$(writer_counters); fi
			if [[ -n $want_lat ]]; then
				r=$(sys_do "$sys" pgb "$key-$sys-$i" "$clients" "$jobs" "$script" "${extra[@]}" \
					--log --log-prefix="$WORK/lat-$key-$sys-$i")
				lat=$(log_latency "$WORK/lat-$key-$sys-$i") || { echo "$key $sys run $i: no latency log" >&2; return 1; }
				read -r lat p50 p99 _ <<<"$lat"
				rm -f "$WORK/lat-$key-$sys-$i".*
				v_p50[$sys]+=" $p50"; v_p99[$sys]+=" $p99"
			else
				r=$(sys_do "$sys" pgb "$key-$sys-$i" "$clients" "$jobs" "$script" "${extra[@]}")
				read -r _ lat <<<"$r"
			fi
			read -r tps _ <<<"$r"
			rate=$(calc 't * u' -v t="$tps" -v u="$units")
			v_rate[$sys]+=" $rate"; v_lat[$sys]+=" $lat"
			if [[ -n $c0 ]]; then
				c1=$(writer_counters)
				[[ -n $c1 ]] || { echo "$key $sys run $i: batpak.stats unreadable after the run" >&2; return 1; }
				# "events_written fsyncs groups" before and after the run
				ev[$sys]=$(( ${ev[$sys]:-0} + $(cut -d' ' -f1 <<<"$c1") - $(cut -d' ' -f1 <<<"$c0") ))
				fs[$sys]=$(( ${fs[$sys]:-0} + $(cut -d' ' -f2 <<<"$c1") - $(cut -d' ' -f2 <<<"$c0") ))
			fi
			say "   $key $sys run $i: $(grp "$rate") /s, latency avg $(printf '%.3f' "$lat") ms${want_lat:+, p50 $(printf '%.3f' "$p50"), p99 $(printf '%.3f' "$p99") ms}"
		done
	done
	for s in "${active[@]}"; do
		sys=${s%%:*}
		# shellcheck disable=SC2086 # the lists are space-separated numbers
		put_stats "$key.$sys.rate" ${v_rate[$sys]}
		# shellcheck disable=SC2086
		put_stats "$key.$sys.lat" ${v_lat[$sys]}
		if [[ -n $want_lat ]]; then
			# shellcheck disable=SC2086
			put_stats "$key.$sys.p50" ${v_p50[$sys]}
			# shellcheck disable=SC2086
			put_stats "$key.$sys.p99" ${v_p99[$sys]}
		fi
		if (( ${fs[$sys]:-0} > 0 )); then
			put "$key.$sys.per_fsync" "$(calc 'e / f' -v e="${ev[$sys]}" -v f="${fs[$sys]}")"
		fi
	done
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

# fdatasync floor: pg_test_fsync -s 1, "fdatasync" line of the "one 8kB
# write" section.  The later sections (two writes, open_sync sizes, ...) are
# not needed, so the run is interrupted (SIGINT: it removes its file) as soon
# as that line is out; that keeps each run at ~3 s instead of ~20 s.
fsync_once() {
	local out=$WORK/fsync-$1.out deadline line
	local buf=()
	command -v stdbuf >/dev/null && buf=(stdbuf -oL)
	"${buf[@]}" "$PGBIN/pg_test_fsync" -s 1 -f "$WORK/fsync.testfile" >"$out" 2>&1 &
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
	install_baseline mdb "Message DB" install_mdb
	install_baseline pgq PgQ install_pgq
}

# install_baseline SYS NAME FN: run FN; SYS.ok = 1, or SYS.why says why not
# (the last line FN printed)
install_baseline() {
	local sys=$1 name=$2 why
	if why=$("$3" 2>&1); then
		put "$sys.ok" 1
		say "$name $(get "$sys.version") installed"
	else
		put "$sys.why" "$name not installed: $(tail -n 1 <<<"$why")"
		say "$(get "$sys.why")"
	fi
}

# Message DB from the npm registry, installed by its own install.sh into
# its own database (message_store), as its README says.  Nothing of it is
# kept in this repository.
install_mdb() {
	local dir=$WORK/mdb tgz=$WORK/mdb/message-db.tgz
	mkdir -p "$dir"
	if [[ -n ${BENCH_MDB_TARBALL:-} ]]; then
		cp "$BENCH_MDB_TARBALL" "$tgz"
	elif command -v npm >/dev/null 2>&1 \
		&& (cd "$dir" && timeout 120 npm pack --silent "@eventide/message-db@$MDB_VERSION" >npm.log 2>&1) \
		&& ls "$dir"/eventide-message-db-*.tgz >/dev/null 2>&1; then
		mv "$dir"/eventide-message-db-*.tgz "$tgz"
	elif command -v curl >/dev/null 2>&1 \
		&& timeout 120 curl -fsSL -o "$tgz" "https://registry.npmjs.org/@eventide/message-db/-/message-db-$MDB_VERSION.tgz"; then
		:
	else
		echo "could not fetch @eventide/message-db@$MDB_VERSION from the npm registry (npm pack and curl failed)"
		return 1
	fi
	tar -xzf "$tgz" -C "$dir"
	[[ -f $dir/package/database/install.sh ]] || { echo "the tarball has no database/install.sh"; return 1; }
	if ! PATH=$PGBIN:$PATH DATABASE_NAME=message_store PGOPTIONS='-c client_min_messages=warning' \
		timeout 300 bash "$dir/package/database/install.sh" >"$dir/install.log" 2>&1; then
		tail -n 5 "$dir/install.log"
		echo "its database/install.sh failed (see above)"
		return 1
	fi
	put mdb.version "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$dir/package/package.json")"
	sys_do mdb q "SELECT message_store.message_store_version()" >/dev/null
}

# PgQ from Debian's postgresql-15-pgq3: queue bench_w takes the write
# workloads; queue bench_c the consumers' events, ticked every 1,000 events
# (ticker_max_count) so that a batch is 1,000 events; consumers c0 .. c3
# (one per run) are registered before any event goes in.
install_pgq() {
	local sharedir
	sharedir=$("$PGBIN/pg_config" --sharedir)
	[[ -f $sharedir/extension/pgq.control ]] \
		|| { echo "postgresql-15-pgq3 is not installed ($sharedir/extension/pgq.control is missing; make bench installs it)"; return 1; }
	q "CREATE EXTENSION pgq" >/dev/null
	put pgq.version "$(q "SELECT extversion FROM pg_extension WHERE extname = 'pgq'")"
	q "SELECT pgq.create_queue('bench_w'); SELECT pgq.create_queue('bench_c');
	   SELECT pgq.set_queue_config('bench_c', 'ticker_max_count', '1000');
	   SELECT pgq.register_consumer('bench_c', 'c' || i) FROM generate_series(0, $RUNS) AS i" >/dev/null
}

# ---------------------------------------------------------------- the data

# load_sql KIND PART FROM TO: a psql script that loads events FROM .. TO-1
# of PART (sr: the streams of 100, 'sr-0' ..; bulk: the first NHOT into
# 'bench-hot', the others over 1,000 entities 'e0' ..), LOAD_BATCH per
# statement.  KIND: batpak | plain
load_sql() {
	local kind=$1 part=$2 from=$3 to=$4 a b ent
	echo '\set ON_ERROR_STOP on'
	a=$from
	while (( a < to )); do
		b=$(( a + LOAD_BATCH ))
		(( b > to )) && b=$to
		if [[ $part == sr ]]; then
			ent="'sr-' || (i % $NSR)"
		elif (( a < NHOT )); then
			ent="'bench-hot'"
			(( b > NHOT )) && b=$NHOT
		else
			ent="'e' || (i % 1000)"
		fi
		if [[ $kind == batpak ]]; then
			printf "SELECT count(*) FROM batpak.append_batch((SELECT array_agg(ROW(%s, 'bench', 'bench', \$p\$%s\$p\$::jsonb, NULL, NULL, NULL, NULL, NULL)::batpak.new_event) FROM generate_series(%d, %d) AS i));\n" \
				"$ent" "$PAYLOAD" "$a" $(( b - 1 ))
		else
			printf "INSERT INTO events (id, stream, version, type, data) SELECT gen_random_uuid(), %s, nextval('v'), 'bench', \$p\$%s\$p\$::jsonb FROM generate_series(%d, %d) AS i;\n" \
				"$ent" "$PAYLOAD" "$a" $(( b - 1 ))
		fi
		a=$b
	done
}

# timed_script KEY FILE OUT: run the psql script FILE (output to OUT),
# adding its time to KEY.secs
timed_script() {
	local key=$1 t0 t1
	t0=$(date +%s.%N)
	timeout 1800 "$PGBIN/psql" -X -q -A -t -f "$2" >"$3"
	t1=$(date +%s.%N)
	put "$key.secs" "$(calc 's + b - a' -v s="$(get "$key.secs")" -v a="$t0" -v b="$t1")"
}

# load_part KEY KIND PART FROM TO: run load_sql, adding its time to KEY.secs
load_part() {
	load_sql "$2" "$3" "$4" "$5" >"$WORK/load.sql"
	timed_script "$1" "$WORK/load.sql" /dev/null
}

# Index memory from batpak.stats; $1 is a key suffix (the store size).
stats_index() {
	local tag=$1 ev ib
	put "stats.row.$tag" "$(q "SELECT row_to_json(s) FROM batpak.stats s")"
	ev=$(q "SELECT events FROM batpak.stats")
	ib=$(q "SELECT index_bytes FROM batpak.stats")
	put "idx.$tag.events" "$ev"
	put "idx.$tag.bytes" "$ib"
	[[ $ev =~ ^[0-9]+$ && $ev -gt 0 ]] && put "idx.$tag.bpe" "$(calc 'b / e' -v b="$ib" -v e="$ev")"
	return 0
}

# startup_at SIZE: fast shutdown, pg_ctl start -w, then poll until 'ready';
# $RUNS times with the store at SIZE events; then its index memory.
startup_at() {
	local size=$1 i t0 t1 w starts=() readys=() writers=()
	if ! wanted startup || ! has bp; then return 0; fi
	# written_sequence: events (the visible frontier) lags the load's last COMMIT
	[[ $(q "SELECT written_sequence FROM batpak.stats") == "$size" ]] \
		|| { echo "start-up at $size: the store holds $(q "SELECT written_sequence FROM batpak.stats") events" >&2; return 1; }
	for i in $(seq 1 "$RUNS"); do
		stop_cluster
		t0=$(date +%s.%N)
		start_cluster
		t1=$(date +%s.%N)
		w=$(wait_ready 300)
		starts+=("$(calc 'b - a' -v a="$t0" -v b="$t1")")
		readys+=("$w")
		writers+=("$(q "SELECT extract(epoch FROM ready_at - started_at) FROM batpak.stats")")
		say "   $(grp "$size") events, restart $i: pg_ctl start ${starts[-1]} s, then ready after $w s"
	done
	put_stats "startup.$size.ready" "${readys[@]}"
	put_stats "startup.$size.pgstart" "${starts[@]}"
	put_stats "startup.$size.writer" "${writers[@]}"
	put startup.sizes "$(get startup.sizes) $size"
	stats_index "$size"
}

# The data of the read and consumer sections, loaded in the order the
# start-up measurements need: the streams of 100 first (the 100k store), then
# the bulk load in stages up to each start-up size.  batpak and the plain
# table get the same events (versions 1 .. NLOAD in load order); Message DB
# gets the streams of 100 and NCONS messages of category 'load', inserted
# into its table as write_message would store them (the write sections
# measure write_message itself); PgQ gets NCONS events through insert_event,
# 1,000 per statement, and a tick after each statement.
sec_load() {
	local size done_bulk=0 to
	if has bp; then
		load_part bpload batpak sr 0 "$NSR_EV"
		startup_at "$NSR_EV"
	fi
	load_part baseload plain sr 0 "$NSR_EV"
	for size in $STARTUP_AT; do
		(( size > NSR_EV )) || continue
		to=$(( size - NSR_EV ))
		if has bp; then
			load_part bpload batpak bulk "$done_bulk" "$to"
			startup_at "$size"
		fi
		load_part baseload plain bulk "$done_bulk" "$to"
		done_bulk=$to
	done
	if has bp; then
		put bpload.rate "$(calc 'n / s' -v n="$NLOAD" -v s="$(get bpload.secs)")"
		say "   batpak: $(grp "$NLOAD") events loaded at $(grp "$(get bpload.rate)") /s"
		[[ $(q "SELECT written_sequence FROM batpak.stats") == "$NLOAD" ]] \
			|| { echo "batpak holds $(q "SELECT written_sequence FROM batpak.stats") events, not $NLOAD" >&2; return 1; }
	fi
	put baseload.rate "$(calc 'n / s' -v n="$NLOAD" -v s="$(get baseload.secs)")"
	say "   plain: $(grp "$NLOAD") rows loaded at $(grp "$(get baseload.rate)") /s"
	QTIMEOUT=1800 q "VACUUM ANALYZE events" >/dev/null
	put baseidx.bytes "$(q "SELECT pg_indexes_size('events')")"
	put baseidx.rows "$(q "SELECT count(*) FROM events")"
	# keyset pages in global order need a btree on version; it exists only
	# while the read sections run (sec_writes drops it)
	QTIMEOUT=1800 q "CREATE INDEX events_version ON events (version)" >/dev/null

	if has mdb; then
		sys_do mdb q "INSERT INTO messages (stream_name, position, type, data)
		                SELECT 'sr-' || (i % $NSR), i / $NSR, 'bench', \$p\$$PAYLOAD\$p\$::jsonb
		                FROM generate_series(0, $(( NSR_EV - 1 ))) AS i" >/dev/null
		sys_do mdb q "INSERT INTO messages (stream_name, position, type, data)
		                SELECT 'load-' || (i % 1000), i / 1000, 'bench', \$p\$$PAYLOAD\$p\$::jsonb
		                FROM generate_series(0, $(( NCONS - 1 ))) AS i" >/dev/null
		QTIMEOUT=1800 sys_do mdb q "VACUUM ANALYZE messages" >/dev/null
		put mdb.load_start "$(sys_do mdb q "SELECT min(global_position) FROM messages WHERE category(stream_name) = 'load'")"
		put mdb.load_end "$(sys_do mdb q "SELECT max(global_position) FROM messages WHERE category(stream_name) = 'load'")"
		say "   Message DB: $(grp "$NSR_EV") + $(grp "$NCONS") messages inserted"
	fi
	if has pgq; then
		local i ticks
		{
			echo '\set ON_ERROR_STOP on'
			for (( i = 0; i < NCONS / 1000; i++ )); do
				printf "SELECT count(pgq.insert_event('bench_c', 'bench', \$p\$%s\$p\$)) FROM generate_series(1, 1000);\n" "$PAYLOAD"
				echo "SELECT 'tick ' || pgq.ticker('bench_c');"
			done
		} >"$WORK/load-pgq.sql"
		timed_script pgqload "$WORK/load-pgq.sql" "$WORK/load-pgq.out"
		ticks=$(grep -c '^tick [0-9]' "$WORK/load-pgq.out" || true)
		[[ $ticks == $(( NCONS / 1000 )) ]] || { echo "PgQ: $ticks ticks for $(( NCONS / 1000 )) statements" >&2; return 1; }
		put pgqload.rate "$(calc 'n / s' -v n="$NCONS" -v s="$(get pgqload.secs)")"
		say "   PgQ: $(grp "$NCONS") events through insert_event at $(grp "$(get pgqload.rate)") /s, $ticks ticks"
	fi
}

# Whether the data of sec_load is needed by a wanted section.
needs_data() {
	local s
	for s in load reads stream-reads page-reads consumers startup; do
		wanted "$s" && return 0
	done
	return 1
}

# ---------------------------------------------------------------- the reads

sec_reads() {
	if has bp; then
		bench_count bpall "SELECT count(*) FROM batpak.read_all()"
		bench_count bpstream "SELECT count(*) FROM batpak.read_stream('bench-hot')"
		# Informational: the function scan materializes every row in a
		# tuplestore of work_mem bytes before count(*) sees it, so the reads
		# depend on work_mem; the goal is judged at PostgreSQL's default (4MB).
		PGOPTIONS='-c work_mem=64MB' bench_count bpall_wm64 "SELECT count(*) FROM batpak.read_all()"
		PGOPTIONS='-c work_mem=64MB' bench_count bpstream_wm64 "SELECT count(*) FROM batpak.read_stream('bench-hot')"
	fi
	bench_count baseall "SELECT count(*) FROM events"
	bench_count basestream "SELECT count(*) FROM events WHERE stream = 'bench-hot'"
}

# The reads run one client and are CPU-bound and steady: runs of half DUR.
sec_stream_reads() {
	PGB_DUR=$(( (DUR + 1) / 2 )) compare sr 1 100 bp:batpak_stream100.sql plain:baseline_stream100.sql mdb:mdb_stream100.sql -- -D "nsr=$NSR"
}

sec_page_reads() {
	PGB_DUR=$(( (DUR + 1) / 2 )) compare pg 1 1000 bp:batpak_page.sql plain:baseline_page_random.sql mdb:mdb_page.sql \
		-- -D "npages=$NPAGES" -D "mpages=$(( NCONS / 1000 ))" -D "mstart=$(get mdb.load_start)"
}

# ---------------------------------------------------------------- consumers

# bench_pages KEY SYS SCRIPT NTX RESET CHECK WANT [pgbench args]: one
# unmeasured run, then $RUNS runs of pgbench, 1 client, NTX transactions of
# one page (batch) of 1,000 each.  RESET puts the consumer back at the start
# before each run; CHECK must then print WANT.  "@RUN@" in RESET, CHECK and
# the pgbench args is replaced by the run's number (0 for the unmeasured
# one).  KEY.rate is events/s.
bench_pages() {
	local key=$1 sys=$2 script=$3 ntx=$4 reset=$5 check=$6 want=$7; shift 7
	local i r tps got rates=() args a
	sync
	QTIMEOUT=120 q "CHECKPOINT" >/dev/null
	for i in $(seq 0 "$RUNS"); do
		args=()
		for a in "$@"; do args+=("${a//@RUN@/$i}"); done
		sys_do "$sys" q "${reset//@RUN@/$i}" >/dev/null
		r=$(PGB_TX=$ntx sys_do "$sys" pgb "$key-$i" 1 1 "$script" "${args[@]}")
		got=$(sys_do "$sys" q "${check//@RUN@/$i}")
		[[ $got == "$want" ]] || { echo "$key run $i: the check gave '$got', expected '$want'" >&2; return 1; }
		read -r tps _ <<<"$r"
		if (( i == 0 )); then
			say "   $key warm-up: $(grp "$(calc 't * 1000' -v t="$tps")") /s"
			continue
		fi
		rates+=("$(calc 't * 1000' -v t="$tps")")
		say "   $key run $i: $(grp "$(( ntx * 1000 ))") events in pages of 1,000: $(grp "${rates[-1]}") /s"
	done
	put "$key.rows" $(( ntx * 1000 ))
	put_stats "$key.rate" "${rates[@]}"
}

sec_consumers() {
	if has bp; then
		# cursor_read(name, 1000) from the start of the store, one call per
		# autocommit transaction (each commits the cursor's position)
		q "SELECT batpak.cursor_create('bench-read', start_after => 0)" >/dev/null
		bench_pages bpcread bptx batpak_cursor_read.sql "$NPAGES" \
			"SELECT batpak.cursor_seek('bench-read', 0)" \
			"SELECT position FROM batpak.cursors WHERE name = 'bench-read' AND gaps = 0" "$NLOAD"
		q "SELECT batpak.cursor_drop('bench-read')" >/dev/null
	fi
	# the plain table in version order (keyset pages through the btree on
	# version), the position kept in a table and advanced by the same
	# autocommit statement
	q "CREATE TABLE bench_cursor (name text PRIMARY KEY, last bigint NOT NULL, read_at timestamptz);
	   INSERT INTO bench_cursor VALUES ('bench-read', 0, NULL)" >/dev/null
	bench_pages basepage plain baseline_page.sql "$NPAGES" \
		"UPDATE bench_cursor SET last = 0 WHERE name = 'bench-read'" \
		"SELECT last FROM bench_cursor WHERE name = 'bench-read'" "$NLOAD"
	q "DROP TABLE bench_cursor" >/dev/null
	if has mdb; then
		# pages of category 'load' from its first position; each run must
		# record the last position as the consumer's position
		bench_pages mdbcons mdb mdb_consume.sql $(( NCONS / 1000 )) "SELECT 1" \
			"SELECT data->>'position' FROM messages WHERE stream_name = 'load:position-bench'
			  ORDER BY position DESC LIMIT 1" "$(get mdb.load_end)" -D "pos=$(get mdb.load_start)" -D "position_stream=load:position-bench"
	else
		put mdbcons.why "$(get mdb.why)"
	fi
	if has pgq; then
		# each run is its own consumer (c1 .. c3, c0 warms up); it must end
		# with no event pending
		bench_pages pgqcons pgq pgq_consume.sql $(( NCONS / 1000 )) \
			"SELECT 1" \
			"SELECT pending_events FROM pgq.get_consumer_info('bench_c', 'c@RUN@')" 0 -D "consumer=c@RUN@"
	else
		put pgqcons.why "$(get pgq.why)"
	fi
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

# ------------------------------------------------------------------ writes

# Each write section starts from empty tables, as a new application would:
# the plain table loaded for the reads is replaced by an empty one of the
# same definition, and Message DB's messages are truncated (PgQ writes to its
# own empty queue).  On the loaded tables every short run, which starts
# right after a CHECKPOINT, would pay a full-page image in the WAL for
# nearly every insert (a random uuid lands on a different leaf of the
# 1,000,000-entry primary key each time), an artefact of short runs that
# batpak, which writes no heap, never pays.  batpak's appends do not depend
# on the size of the store.
fresh_write_tables() {
	q "DROP TABLE IF EXISTS events;
	   CREATE TABLE events (id uuid PRIMARY KEY, stream text, version bigint, type text, data jsonb,
	                        UNIQUE (stream, version))" >/dev/null
	if has mdb; then
		sys_do mdb q "TRUNCATE messages" >/dev/null
	fi
}

# Single-event appends, one per transaction (autocommit), at each client
# count: batpak in immediate and in transactional mode, the plain table,
# Message DB's write_message and PgQ's insert_event; at 1 and 32 clients
# also the floor, a statement that writes nothing (floor_select1.sql).
sec_writes() {
	local c systems
	fresh_write_tables
	for c in $SWEEP_CLIENTS; do
		systems=(bp:batpak_append.sql)
		# batpak's transactional mode at 32 clients only (the goal of the
		# transactional issue); its 1-client latency is in sec_tx_writes
		(( c != 32 )) || systems+=(bptx:batpak_append.sql)
		systems+=(plain:baseline_insert.sql mdb:mdb_write.sql pgq:pgq_insert.sql)
		# the floor at 1 and 32 clients: the same round trip without a write
		(( c != 1 && c != 32 )) || systems+=(floor:floor_select1.sql)
		PGB_DUR=$(( SWEEP_DUR + c / 32 )) compare "w$c" "$c" 1 --latency "${systems[@]}"
	done
}

# tx10 SCRIPT: a pgbench script in $WORK running SCRIPT's statement ten
# times in one transaction, all ten to the stream its \set line picks.  One
# stream per transaction, as a command writes its events to one aggregate:
# batpak locks an entity with pending events until its transaction ends,
# like a row lock, so transactions writing to several random entities each
# deadlock as often as the same UPDATEs would (PostgreSQL's deadlock
# detector resolves them, one per deadlock_timeout).
tx10() {
	local out=$WORK/tx10-${1%.sql}.sql i
	{
		grep '^\\set' "$HERE/$1" || true
		echo "BEGIN;"
		for i in $(seq 1 10); do grep -v -e '^--' -e '^$' -e '^\\set' "$HERE/$1"; done
		echo "COMMIT;"
	} >"$out"
	echo "$out"
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

# One and ten events per transaction.  One: BEGIN; append; COMMIT against
# the plain table's BEGIN; INSERT; COMMIT (the same round trips) at 1
# client (latency) and at 32 (the autocommit rows of sec_writes are the
# other baselines' one-per-transaction figures); then at 32 alternating
# with runs where another transaction holds a pending event open.  Ten:
# ten appends / inserts / write_message / insert_event in one transaction,
# and batpak's append_batch of ten, at 32 clients.
sec_tx_writes() {
	fresh_write_tables
	if has bptx; then
		compare tx1 1 1 --latency bptx:batpak_append_tx.sql plain:baseline_insert_tx.sql
		compare tx32 32 1 bptx:batpak_append_tx.sql plain:baseline_insert_tx.sql
		alternate bptx32 run_tx32 bptx32open run_tx32_open "an open transaction"
	fi
	compare tx10 32 10 "bptx:$(tx10 batpak_append.sql)" bpb:batpak_batch10.sql \
		"plain:$(tx10 baseline_insert.sql)" "mdb:$(tx10 mdb_write.sql)" "pgq:$(tx10 pgq_insert.sql)"
}

run_tx32() { pgb "bptx32-$1" 32 2 batpak_append_tx.sql; }
run_tx32_open() { with_open_transaction pgb "bptx32open-$1" 32 2 batpak_append_tx.sql; }

# 1,000 events in one statement: append_batch (immediate mode), INSERT …
# SELECT, 1,000 write_message and 1,000 insert_event in one statement; the
# construction of append_batch's array alone; 4 clients for the two that
# scale with clients.
sec_batches() {
	fresh_write_tables
	PGB_DUR=$(( (DUR + 1) / 2 )) compare b1 1 1000 bp:batpak_batch.sql plain:baseline_batch.sql mdb:mdb_batch.sql pgq:pgq_batch.sql \
		bpbuild:batpak_batch_build.sql
	PGB_DUR=$(( (DUR + 1) / 2 )) compare b4 4 1000 bp:batpak_batch.sql plain:baseline_batch.sql
}

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
# (errexit does not hold inside the $(...) that alternate runs this in:
# every step is checked)
run_three_gates() {
	local r
	gates_on || return 1
	r=$(PGOPTIONS=$IMMEDIATE pgb "gates3-$1" 32 2 batpak_append.sql) || { gates_off; return 1; }
	gates_off || return 1
	echo "$r"
}
# cell KEY [UNIT] [DECIMALS]: "median unit [min–max]", or n/a with the
# reason (KEY's own, or the system's when it is not installed); UNIT
# defaults to /s
cell() {
	local k=$1 unit=${2-/s} d=${3:-0} m lo hi why
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

# lc KEY: the cell of KEY.rate with the p50/p99 latency of KEY (and for batpak the
# events per writer fdatasync)
lc() {
	local k=$1 out
	out=$(cell "$k.rate")
	[[ -z $(get "$k.p50") ]] || out="$out; p50 $(grp "$(get "$k.p50")" 2), p99 $(grp "$(get "$k.p99")" 2) ms"
	[[ -z $(get "$k.per_fsync") ]] || out="$out; $(printf '%.1f' "$(get "$k.per_fsync")") per fdatasync"
	echo "$out"
}

# floor_cell CLIENTS: the no-write statement's rate, with its p50/p99 at one
# client only: at 32 clients pgbench's log (its clock is read lazily, once
# for several steps of a client) gives most such statements 0 µs, so the
# percentiles would mean nothing there (p50 0, average 0.3 ms, seen here)
floor_cell() {
	if [[ $1 == 1 ]]; then lc w1.floor; else cell "w$1.floor.rate"; fi
}

# rt A B: the ratio A/B or "—"
rt() {
	local r
	r=$(ratio "$1" "$2")
	echo "${r:-—}"
}

# goal_ratio A B MIN: met A/B >= MIN
goal_ratio() {
	local a b
	a=$(get "$1"); b=$(get "$2")
	if [[ -z $a || -z $b ]]; then echo n/a; return; fi
	met "$(calc 'a / b' -v a="$a" -v b="$b")" '>=' "$3"
}

# row WORKLOAD BATPAK PLAIN MDB PGQ RATIO_PLAIN RATIO_MDB RATIO_PGQ GOAL MET
row() {
	local out="|" a
	for a in "$@"; do out+=" $a |"; done
	echo "$out"
}

report() {
	local small="" r v c fs_us k goal m
	fs_us=$(get fsync.us)
	(( NLOAD < 1000000 )) && small=" (BENCH_SCALE=$BENCH_SCALE: only $(grp "$NLOAD") events loaded; the goals are stated for ≥ 1,000,000)"

	echo "# batpak benchmark"
	echo
	echo "Generated by \`test/bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), BENCH_SCALE=$BENCH_SCALE" \
	     "($RUNS runs of each workload, ${DUR}s per pgbench run, ${SWEEP_DUR}s in the client sweep, the systems' runs alternating;" \
	     "cells are the median with [min–max]; ratios are batpak ÷ the baseline, of the medians)."
	echo
	echo "- Machine: $(get machine.cpu), $(get machine.nproc) CPUs (nproc), $(get machine.mem) RAM, $(get machine.kernel)"
	echo "- Load average (1/5/15 min) at the start: $(get machine.load_start), at the end: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine shows up in the spreads)"
	echo "- Disk: $(get machine.fs) in the temporary directory; fdatasync floor (pg_test_fsync -s 1, one 8kB write):" \
	     "$(cell fsync.ops ' ops/s' 0), $(cell fsync.us ' µs/op' 0): the physical limit of one durable write without group commit"
	echo "- PostgreSQL: $(get pg.version)"
	echo "- Settings: $(get pg.settings) (fsync and synchronous_commit are on: every commit and every batpak append waits for a durable write)"
	echo "- Payload: $(get payload.text_bytes) bytes of JSON text, $(get payload.jsonb_bytes) bytes as jsonb; the writes go to 100 streams/entities"
	echo "- plain table: \`events(id uuid primary key, stream text, version bigint, type text, data jsonb, unique (stream, version))\`, version from a sequence, \`INSERT\`"
	if has mdb; then
		echo "- Message DB: @eventide/message-db $(get mdb.version) from the npm registry, installed by its own \`database/install.sh\` into database message_store of the same cluster; \`write_message\` to streams \`bench-1\` … \`bench-100\` (one category: Message DB 1.3 serializes the writers of a category with an advisory lock held to commit), \`get_stream_messages\`, \`get_category_messages\`"
	else
		echo "- Message DB: $(get mdb.why)"
	fi
	if has pgq; then
		echo "- PgQ: extension pgq $(get pgq.version) (Debian's postgresql-15-pgq3) in the same database as batpak; \`insert_event\` into a queue without consumers; consumers use \`next_batch\` / \`get_batch_events\` / \`finish_batch\` on a queue ticked every 1,000 events"
	else
		echo "- PgQ: $(get pgq.why)"
	fi
	echo "- Data: batpak and the plain table hold $(grp "$NLOAD") events for the reads ($(grp "$NSR") streams of 100, one entity of $(grp "$NHOT"), the rest over 1,000 entities); Message DB the same $(grp "$NSR") streams of 100 and $(grp "$NCONS") messages in category \`load\`; PgQ $(grp "$NCONS") events"
	echo "- pgbench -M prepared; -j 2 from 2 clients up; \`$IMMEDIATE\` for batpak's immediate mode (visible when durable); transactional mode (the default) pays PostgreSQL's commit too"
	[[ $BASELINE_ONLY == 1 ]] && echo "- BENCH_BASELINE_ONLY=1: batpak was not measured"
	echo
	echo "| workload | batpak | plain table | Message DB | PgQ | batpak ÷ plain | batpak ÷ Message DB | batpak ÷ PgQ | goal | met? |"
	echo "|---|---|---|---|---|---|---|---|---|---|"

	# single-event appends
	for c in $SWEEP_CLIENTS; do
		goal="—"; m="—"
		if [[ $c == 1 ]]; then
			goal="p50 ≤ 1.3 fdatasyncs"
			m=n/a
			if [[ -n $(get w1.bp.p50) && -n $fs_us ]]; then
				r=$(calc 'l * 1000 / f' -v l="$(get w1.bp.p50)" -v f="$fs_us")
				m="$(met "$r" '<=' 1.3) (p50 = $(printf '%.1f' "$r") fdatasyncs"
				# the same measure for the INSERT of the same runs
				if [[ -n $(get w1.plain.p50) ]]; then
					m="$m; the plain table's INSERT: $(printf '%.1f' "$(calc 'l * 1000 / f' -v l="$(get w1.plain.p50)" -v f="$fs_us")")"
				fi
				m="$m)"
			fi
		elif [[ $c == 32 ]]; then
			goal="≥ 2× plain, ≥ 5× Message DB, ≥ 1× PgQ"
			m="$(goal_ratio w32.bp.rate w32.plain.rate 2), $(goal_ratio w32.bp.rate w32.mdb.rate 5), $(goal_ratio w32.bp.rate w32.pgq.rate 1)"
		fi
		row "single-event appends, $c client$( ((c > 1)) && echo s), one per transaction (autocommit); batpak in immediate mode: events/s; latency" \
			"$(lc "w$c.bp")" "$(lc "w$c.plain")" "$(lc "w$c.mdb")" "$(lc "w$c.pgq")" \
			"$(rt "w$c.bp.rate" "w$c.plain.rate")" "$(rt "w$c.bp.rate" "w$c.mdb.rate")" "$(rt "w$c.bp.rate" "w$c.pgq.rate")" "$goal" "$m"
		if [[ -n $(get "w$c.floor.rate") ]]; then
			row "the floor at $c client$( ((c > 1)) && echo s), not a system: a statement that writes nothing and waits for no disk, with the same parameter (\`SELECT octet_length(\$1::text)\`), in the same runs (statements/s; latency); batpak's immediate appends run at $(rt "w$c.bp.rate" "w$c.floor.rate") of its rate, the plain table's INSERT at $(rt "w$c.plain.rate" "w$c.floor.rate")" \
				"$(floor_cell "$c")" "—" "—" "—" "—" "—" "—" "—" "—"
		fi
		goal="—"; m="—"
		if [[ $c == 32 ]]; then
			goal="≥ 1× plain"
			m=$(goal_ratio w32.bptx.rate w32.plain.rate 1)
		fi
		[[ -n $(get "w$c.bptx.rate") ]] || continue
		row "the same, batpak in transactional mode (autocommit \`SELECT batpak.append(…)\`)" \
			"$(lc "w$c.bptx")" "(row above)" "(row above)" "(row above)" \
			"$(rt "w$c.bptx.rate" "w$c.plain.rate")" "$(rt "w$c.bptx.rate" "w$c.mdb.rate")" "$(rt "w$c.bptx.rate" "w$c.pgq.rate")" "$goal" "$m"
	done

	# transactions
	row "one event per transaction, 1 client: \`BEGIN; append; COMMIT\` / \`BEGIN; INSERT; COMMIT\` / Message DB and PgQ: the autocommit rows of 1 client" \
		"$(lc tx1.bptx); avg $(cell tx1.bptx.lat ' ms' 3)" "$(lc tx1.plain); avg $(cell tx1.plain.lat ' ms' 3)" "$(cell w1.mdb.lat ' ms' 3) avg (autocommit)" "$(cell w1.pgq.lat ' ms' 3) avg (autocommit)" \
		"$(rt tx1.bptx.rate tx1.plain.rate)" "$(rt tx1.bptx.rate w1.mdb.rate)" "$(rt tx1.bptx.rate w1.pgq.rate)" "— (pays the batpak fdatasync and PostgreSQL's commit)" "—"
	row "one event per transaction, 32 clients: \`BEGIN; append; COMMIT\` / \`BEGIN; INSERT; COMMIT\` (alternating) / Message DB and PgQ: the autocommit rows of 32 clients" \
		"$(cell tx32.bptx.rate)" "$(cell tx32.plain.rate)" "$(cell w32.mdb.rate) (autocommit)" "$(cell w32.pgq.rate) (autocommit)" \
		"$(rt tx32.bptx.rate tx32.plain.rate)" "$(rt tx32.bptx.rate w32.mdb.rate)" "$(rt tx32.bptx.rate w32.pgq.rate)" "≥ 1× plain" "$(goal_ratio tx32.bptx.rate tx32.plain.rate 1)"
	row "the same, batpak's \`BEGIN; append; COMMIT\` (3 runs alternating with the row below)" \
		"$(cell bptx32.rate)" "—" "—" "—" "—" "—" "—" "—" "—"
	row "the same while another transaction holds a pending batpak event open (runs alternating with the row above)" \
		"$(cell bptx32open.rate) = $(rt bptx32open.rate bptx32.rate) of the row above" "—" "—" "—" "—" "—" "—" "≥ 0.9× (at most 10% slower)" "$(goal_ratio bptx32open.rate bptx32.rate 0.9)"
	row "ten events per transaction, 32 clients: \`BEGIN;\` 10 × append / INSERT / write_message / insert_event \`COMMIT;\` (events/s)" \
		"$(lc tx10.bptx)" "$(lc tx10.plain)" "$(lc tx10.mdb)" "$(lc tx10.pgq)" \
		"$(rt tx10.bptx.rate tx10.plain.rate)" "$(rt tx10.bptx.rate tx10.mdb.rate)" "$(rt tx10.bptx.rate tx10.pgq.rate)" "—" "—"
	row "the same, batpak's ten as one \`append_batch\` of 10 (autocommit, transactional)" \
		"$(lc tx10.bpb)" "(row above)" "(row above)" "(row above)" \
		"$(rt tx10.bpb.rate tx10.plain.rate)" "$(rt tx10.bpb.rate tx10.mdb.rate)" "$(rt tx10.bpb.rate tx10.pgq.rate)" "—" "—"
	row "three gates written in SQL, 32 clients, immediate mode (runs alternating with no gates)" \
		"$(cell bpgates3.rate) = $(rt bpgates3.rate bpgates0.rate) of $(cell bpgates0.rate) without gates" "—" "—" "—" "—" "—" "—" "≥ 0.8×" "$(goal_ratio bpgates3.rate bpgates0.rate 0.8)"

	# batches
	local build=""
	if [[ -n $(get b1.bpbuild.rate) && -n $(get b1.bp.rate) ]]; then
		local a b
		a=$(get b1.bpbuild.rate); b=$(get b1.bp.rate)
		build="; building the array alone: $(cell b1.bpbuild.rate ' events/s'), $(printf '%.0f' "$(calc '100 * b / a' -v a="$a" -v b="$b")")% of the statement time"
	fi
	row "1,000 events in one statement, 1 client: \`append_batch\` (immediate mode) / INSERT … SELECT / 1,000 × write_message / 1,000 × insert_event (events/s)" \
		"$(cell b1.bp.rate)$build" "$(cell b1.plain.rate)" "$(cell b1.mdb.rate)" "$(cell b1.pgq.rate)" \
		"$(rt b1.bp.rate b1.plain.rate)" "$(rt b1.bp.rate b1.mdb.rate)" "$(rt b1.bp.rate b1.pgq.rate)" "≥ 200,000 events/s" "$(met "$(get b1.bp.rate)" '>=' 200000)"
	row "the same, 4 clients" "$(cell b4.bp.rate)" "$(cell b4.plain.rate)" "—" "—" "$(rt b4.bp.rate b4.plain.rate)" "—" "—" "≥ 200,000 events/s" "$(met "$(get b4.bp.rate)" '>=' 200000)"
	row "bulk load of $(grp "$NLOAD") events, $(grp "$LOAD_BATCH") per statement, 1 run (PgQ: $(grp "$NCONS"), 1,000 per statement and a tick each)" \
		"$(cell bpload.rate)" "$(cell baseload.rate)" "— (inserted directly)" "$(cell pgqload.rate)" \
		"$(rt bpload.rate baseload.rate)" "—" "$(rt bpload.rate pgqload.rate)" "—" "—"

	# reads
	local wm=""
	[[ -z $(get bpall_wm64.rate) ]] || wm=" (work_mem=64MB: $(cell bpall_wm64.rate /s))"
	row "\`count(*)\` of \`read_all()\`, $(num bpall.rows) events, vs \`count(*)\` of the table$small" \
		"$(cell bpall.rate)$wm" "$(cell baseall.rate)" "—" "—" "$(rt bpall.rate baseall.rate)" "—" "—" "≥ 1,000,000 events/s" "$(met "$(get bpall.rate)" '>=' 1000000)"
	wm=""
	[[ -z $(get bpstream_wm64.rate) ]] || wm=" (work_mem=64MB: $(cell bpstream_wm64.rate /s))"
	row "\`count(*)\` of \`read_stream\` of one entity of $(num bpstream.rows) events, vs \`count(*) … WHERE stream = …\`" \
		"$(cell bpstream.rate)$wm" "$(cell basestream.rate)" "—" "—" "$(rt bpstream.rate basestream.rate)" "—" "—" "≥ 1,000,000 events/s" "$(met "$(get bpstream.rate)" '>=' 1000000)"
	row "stream reads: a random whole stream of 100 events, 1 client (events/s; average ms per stream)" \
		"$(cell sr.bp.rate); $(cell sr.bp.lat ' ms' 3)" "$(cell sr.plain.rate); $(cell sr.plain.lat ' ms' 3)" "$(cell sr.mdb.rate); $(cell sr.mdb.lat ' ms' 3)" "—" \
		"$(rt sr.bp.rate sr.plain.rate)" "$(rt sr.bp.rate sr.mdb.rate)" "—" "—" "—"
	row "global / category reads: a random page of 1,000 (\`read_all(after, 1000)\` / keyset page on version / \`get_category_messages\`), 1 client (events/s)" \
		"$(cell pg.bp.rate)" "$(cell pg.plain.rate)" "$(cell pg.mdb.rate)" "—" \
		"$(rt pg.bp.rate pg.plain.rate)" "$(rt pg.bp.rate pg.mdb.rate)" "—" "—" "—"

	# consumers
	row "consumption from the start, pages of 1,000, each committing the consumer's position: \`cursor_read(name, 1000)\` / keyset page + position table / \`get_category_messages\` + position message / PgQ batch (events/s)" \
		"$(cell bpcread.rate) ($(num bpcread.rows) events)" "$(cell basepage.rate) ($(num basepage.rows) rows)" "$(cell mdbcons.rate) ($(num mdbcons.rows) messages)" "$(cell pgqcons.rate) ($(num pgqcons.rows) events)" \
		"$(rt bpcread.rate basepage.rate)" "$(rt bpcread.rate mdbcons.rate)" "$(rt bpcread.rate pgqcons.rate)" \
		"≥ 1,000,000 events/s; ≥ 10× Message DB" "$(met "$(get bpcread.rate)" '>=' 1000000), $(goal_ratio bpcread.rate mdbcons.rate 10)"
	local rl="—"
	[[ -n $(get cnotify.p50) && -n $(get cnotify_base.p50) ]] && rl="p50 $(ratio cnotify.p50 cnotify_base.p50), p99 $(ratio cnotify.p99 cnotify_base.p99) (latency: lower is better)"
	row "append → notification received, 10 LISTEN clients, transactional (autocommit append, one at a time, 1–5 ms apart; plain: INSERT + \`pg_notify\` in one statement): $(num cnotify.count) (event, listener) pairs" \
		"$(lat_cell cnotify)" "$(lat_cell cnotify_base)" "— (no notifications: consumers poll)" "— (no notifications: consumers poll after a ticker)" \
		"$rl" "—" "—" "p50 ≤ 2 ms, p99 ≤ 10 ms" "$(both "$(met "$(get cnotify.p50)" '<=' 2)" "$(met "$(get cnotify.p99)" '<=' 10)")"
	row "append → \`cursor_wait\` returns, 1 waiter, transactional: $(num cwait.count) wake-ups" \
		"$(lat_cell cwait)" "— (LISTEN, the row above)" "—" "—" "—" "—" "—" "p99 ≤ 10 ms" "$(met "$(get cwait.p99)" '<=' 10)"
	row "the same two in immediate mode (informational)" \
		"notification: $(lat_cell cnotify_imm); \`cursor_wait\`: $(lat_cell cwait_imm)" "—" "—" "—" "—" "—" "—" "—" "—"

	# start-up and memory
	local size
	for size in $(get startup.sizes); do
		goal="—"; m="—"
		if [[ $size == 1000000 ]]; then goal="≤ 3 s"; m=$(met "$(get "startup.$size.ready")" '<=' 3); fi
		row "start-up with $(grp "$size") events stored: \`pg_ctl start\` returned → \`batpak.stats\` says ready" \
			"$(cell "startup.$size.ready" ' s' 2) (writer: started → ready $(cell "startup.$size.writer" ' s' 2)); index $(printf '%.1f' "$(get "idx.$size.bpe")") B/event" \
			"$(cell "startup.$size.pgstart" ' s' 2) (\`pg_ctl start -w\` itself)" "—" "—" "—" "—" "—" "$goal" "$m"
	done
	local bpe bbpe="" bcell="n/a"
	bpe=$(get "idx.$NLOAD.bpe")
	if [[ -n $(get baseidx.bytes) && $(get baseidx.rows) -gt 0 ]]; then
		bbpe=$(calc 'b / n' -v b="$(get baseidx.bytes)" -v n="$(get baseidx.rows)")
		bcell="$(printf '%.1f' "$bbpe") B/row (on-disk btrees: pkey + unique, $(grp "$(get baseidx.rows)") rows)"
	fi
	r="—"
	[[ -n $bpe && -n $bbpe ]] && r=$(printf '%.2f×' "$(calc 'a / b' -v a="$bpe" -v b="$bbpe")")
	row "index memory per event (\`batpak.stats\`), $(grp "$NLOAD") events, after restart" \
		"$( [[ -n $bpe ]] && printf '%.1f B/event (%s B)' "$bpe" "$(grp "$(get "idx.$NLOAD.bytes")")" || echo n/a)" \
		"$bcell" "—" "—" "$r" "—" "—" "≤ 64 B/event" "$(met "$bpe" '<=' 64)"

	# Anything that failed or could not be measured.
	local notes
	notes=$(awk -F'\t' '$1 ~ /^failed\./ || $1 ~ /\.why$/ { print "- " $1 ": " $2 }' "$KV" | sort -u)
	if [[ -n $notes ]]; then
		echo
		echo "Not measured / failed:"
		echo
		echo "$notes"
	fi
	echo
	echo "Notes:"
	echo
	echo "- Immediate mode (batpak.transactional = off) is the foundation's mode: an append is visible when durable, like a committed row. Transactional mode (the default) also assigns an xid, writes a small WAL record and pays PostgreSQL's commit."
	echo "- Latency percentiles come from \`pgbench --log\` (every transaction of every measured run; the cell is the median of the runs' p50 and p99)."
	echo "- The append_batch statement builds its 1,000-element array with array_agg over generate_series and appends it; the construction is measured separately and included in the figure."
	echo "- batpak's reads are set-returning functions: PostgreSQL's function scan puts every row in a tuplestore (in memory up to work_mem, then a temporary file) before count(*) reads it back; the goals are judged at the default work_mem (4MB). count(*) on the plain table may use a parallel or index-only scan."
	echo "- The stream and page reads and the consumers read every column (\`count(e.*)\` on the plain table; Message DB's functions form every column as text)."
	echo "- Each read series starts after an OS \`sync\`; the reads are warm (the data was just written); start-up is measured with the OS page cache warm."
	echo "- Consumers: pgbench, 1 client, one page (batch) per transaction, one unmeasured run first. batpak's cursor is put back with \`cursor_seek\` before each run and must stand at $(num bpcread.rows) after it; the plain table's position row must say $(num basepage.rows); the Message DB consumer writes its position to \`load:position-bench\` with write_message once per page (Eventide's consumers do it every \`position_update_interval\` messages) and its last one must be the category's last; each PgQ run is a consumer registered before the load and must end with no pending event. Every commit waits for its WAL flush."
	echo "- Consumer latency (test/bench/consumers.py, psycopg $($PYTHON -c 'import psycopg; print(psycopg.__version__)' 2>/dev/null || echo '?')): $NAPPENDS measured appends per run, each after a random 1–5 ms pause, the clock started right before the append call; the 10 listeners are polled by one process with a selector; latency is per (event, listener) pair, to the first notification whose range covers the event; the waiter stamps cursor_wait's return. \"From its return\" is measured from the moment the append call returned."
	echo "- Index memory on the plain table's side is the on-disk size of its two btrees, for scale only."
	if [[ -n $(get "stats.row.$NLOAD") ]]; then
		echo "- batpak.stats after the last restart: \`$(get "stats.row.$NLOAD")\`"
	fi
	echo "- Whole run: $((SECONDS - T_BEGIN)) s."
}

# ==================================================================== main

say "batpak benchmark: BENCH_SCALE=$BENCH_SCALE, ${DUR}s per run (${SWEEP_DUR}s in the sweep), $RUNS runs, $(grp "$NLOAD") events to load, work dir $WORK"
section machine sec_machine
section fsync sec_fsync
setup_cluster
needs_data && section load sec_load
section reads sec_reads
section stream-reads sec_stream_reads
section page-reads sec_page_reads
section consumers sec_consumers
section consumer-latency sec_consumer_latency
section writes sec_writes
section tx-writes sec_tx_writes
section batches sec_batches
has bp && section gates sec_gates

report >"$WORK/results.md"
cat "$WORK/results.md"
if [[ -n $RESULTS ]]; then
	cp "$WORK/results.md" "$RESULTS"
	say "results written to $RESULTS"
else
	say "BENCH_ONLY: results not written to a file (set BENCH_RESULTS)"
fi
