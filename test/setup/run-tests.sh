#!/usr/bin/env bash
#
# test/setup/run-tests.sh
#
# Runs batpak's test suites against the installed extension and ends with
# one summary line, "batpak: N passed, N failed, N skipped" (tests counted as
# pg_regress test files, isolation specs and TAP test files).  Exits non-zero
# when anything failed.  The Makefile calls it for "make installcheck",
# "make installcheck-regress", "make installcheck-isolation" and
# "make check-tap"; it runs "make run-regress", "run-isolation" and
# "run-tap", which start their own temporary servers.
#
#   test/setup/run-tests.sh [regress] [isolation] [tap]     (default: all three)
#
# initdb and postgres refuse to run as root.  As root, the tree (without .git
# and build products) is copied to a temporary directory owned by
# BATPAK_TEST_USER (default postgres), the suites run there as that user, and
# their outputs (regression.diffs, results/, log/, output_iso/,
# tmp_check/log/) are copied back so they are where a non-root run leaves
# them.  BATPAK_KEEP_STAGING=1 keeps the copy; BATPAK_STAGE_DIR says where to
# make it (default $TMPDIR or /tmp).
#
# On failure it prints regression.diffs and the end of the server logs and of
# the TAP logs of the failed tests (BATPAK_LOG_LINES lines each, default 80).
#
# Passed on to make: PG_CONFIG, PROVE_TESTS, PROVE_FLAGS, EXTRA_REGRESS_OPTS.

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LOG_LINES=${BATPAK_LOG_LINES:-80}
DIFF_LINES=${BATPAK_DIFF_LINES:-600}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(regress isolation tap)
for p in "${phases[@]}"; do
	case $p in
		regress | isolation | tap) ;;
		*) echo "run-tests.sh: unknown suite '$p' (regress, isolation, tap)" >&2; exit 2 ;;
	esac
done

make_args=(--no-print-directory "PG_CONFIG=$PG_CONFIG")
[ -n "${PROVE_TESTS:-}" ] && make_args+=("PROVE_TESTS=$PROVE_TESTS")
[ -n "${PROVE_FLAGS:-}" ] && make_args+=("PROVE_FLAGS=$PROVE_FLAGS")
[ -n "${EXTRA_REGRESS_OPTS:-}" ] && make_args+=("EXTRA_REGRESS_OPTS=$EXTRA_REGRESS_OPTS")

# The outputs of each suite, relative to the tree.
outputs_of() {
	case $1 in
		regress) echo "regression.diffs regression.out results log tmp_check_regress" ;;
		isolation) echo "output_iso tmp_check_iso" ;;
		tap) echo "tmp_check" ;;
	esac
}

for p in "${phases[@]}"; do
	for o in $(outputs_of "$p"); do rm -rf "${REPO:?}/$o"; done
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/batpak-run.XXXXXX")
STAGE=
cleanup() {
	rm -rf "$WORK"
	if [ -n "$STAGE" ]; then
		if [ "${BATPAK_KEEP_STAGING:-0}" = 1 ]; then
			echo "run-tests.sh: kept the test copy in $STAGE"
		else
			rm -rf "$STAGE"
		fi
	fi
}
trap cleanup EXIT

if is_root; then
	ensure_run_user
	STAGE=$(mktemp -d "${BATPAK_STAGE_DIR:-${TMPDIR:-/tmp}}/batpak-test.XXXXXX")
	chmod 755 "$STAGE"
	chown "$RUN_USER": "$STAGE"
	echo "run-tests.sh: running as root: the suites run as user $RUN_USER in $STAGE"
	tar -C "$REPO" -cf - \
		--exclude=./.git --exclude=./demo_cluster --exclude='./tmp_check*' \
		--exclude=./results --exclude=./output_iso --exclude='*.o' \
		--exclude='*.so' --exclude='*.bc' . |
		as_owner tar -C "$STAGE" --no-same-owner -xf -
	TREE=$STAGE
else
	TREE=$REPO
fi

# Copy the outputs of a suite from the test copy back into the repository.
copy_back() {
	[ -n "$STAGE" ] || return 0
	local o
	for o in $(outputs_of "$1"); do
		[ -e "$STAGE/$o" ] || continue
		case $o in
			tmp_check | tmp_check_*)
				# the logs only: data directories can be large
				if [ -d "$STAGE/$o/log" ]; then
					mkdir -p "$REPO/$o"
					cp -R "$STAGE/$o/log" "$REPO/$o/"
				fi
				;;
			*) cp -R "$STAGE/$o" "$REPO/" ;;
		esac
	done
}

section() { printf '\n========== %s ==========\n' "$*"; }

show_tail() {
	local f=$1
	[ -f "$f" ] || return 0
	section "last $LOG_LINES lines of ${f#"$REPO"/}"
	tail -n "$LOG_LINES" "$f"
}

show_diffs() {
	local f=$1
	[ -s "$f" ] || return 0
	section "${f#"$REPO"/} (first $DIFF_LINES lines)"
	head -n "$DIFF_LINES" "$f"
}

total_pass=0
total_fail=0
total_skip=0
declare -A line_of

for phase in "${phases[@]}"; do
	out="$WORK/$phase.out"
	section "suite: $phase"
	set +e
	if [ -n "$STAGE" ]; then
		(cd "$STAGE" && as_owner make "${make_args[@]}" "run-$phase") 2>&1 | tee "$out"
	else
		make -C "$TREE" "${make_args[@]}" "run-$phase" 2>&1 | tee "$out"
	fi
	rc=${PIPESTATUS[0]}
	set -e
	copy_back "$phase"

	pass=0 fail=0 skip=0 failed_tap=()
	if grep -q '^run-[a-z]*: no .*, nothing to run$' "$out"; then
		line_of[$phase]="$phase: no tests"
		continue
	fi
	case $phase in
		regress | isolation)
			pass=$(grep -cE '\.\.\. +ok( |$)' "$out" || true)
			fail=$(grep -cE '\.\.\. +FAILED( |$)' "$out" || true)
			skip=$(grep -cE '\.\.\. +failed \(ignored\)' "$out" || true)
			;;
		tap)
			files=$(sed -n 's/^Files=\([0-9]*\),.*/\1/p' "$out" | tail -n 1)
			mapfile -t failed_tap < <(sed -n '/^Test Summary Report/,$ s/^\([^ ]*\.pl\) *(Wstat.*/\1/p' "$out")
			fail=${#failed_tap[@]}
			skip=$(grep -cE '^[^ ]+\.pl \.+ skipped' "$out" || true)
			pass=$(( ${files:-0} - fail - skip ))
			[ "$pass" -ge 0 ] || pass=0
			;;
	esac
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=1 # the suite itself failed (build, initdb, server start, ...)
	fi
	line_of[$phase]="$phase: $pass passed, $fail failed, $skip skipped"
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	total_skip=$((total_skip + skip))

	if [ "$fail" -ne 0 ]; then
		case $phase in
			regress)
				show_diffs "$REPO/regression.diffs"
				show_tail "$REPO/log/postmaster.log"
				show_tail "$REPO/log/initdb.log"
				;;
			isolation)
				show_diffs "$REPO/output_iso/regression.diffs"
				show_tail "$REPO/output_iso/log/postmaster.log"
				show_tail "$REPO/output_iso/log/initdb.log"
				;;
			tap)
				shown=0
				for t in "${failed_tap[@]}"; do
					name=$(basename "$t" .pl)
					for f in "$REPO/tmp_check/log/regress_log_$name" "$REPO/tmp_check/log/${name}"_*.log; do
						[ -f "$f" ] && { show_tail "$f"; shown=1; }
					done
				done
				if [ "$shown" -eq 0 ]; then
					for f in "$REPO"/tmp_check/log/*; do show_tail "$f"; done
				fi
				;;
		esac
	fi
done

section "summary"
for phase in "${phases[@]}"; do
	echo "  ${line_of[$phase]}"
done
if [ "$total_fail" -ne 0 ]; then
	echo "  outputs: regression.diffs, results/, log/ (pg_regress server), output_iso/, tmp_check/log/ (TAP)"
fi
echo "batpak: $total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
