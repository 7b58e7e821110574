# test/setup/common.sh
#
# Shared by run-tests.sh and demo.sh (sourced, not run): where the repository
# and the PostgreSQL binaries are, and how to run a command as the
# unprivileged user that owns test and demo servers when we are root
# (initdb and postgres refuse to run as root).
#
# Environment:
#   PG_CONFIG         pg_config of the target PostgreSQL
#                     (default /usr/lib/postgresql/15/bin/pg_config, else pg_config)
#   BATPAK_TEST_USER  the OS user for servers when run as root (default
#                     postgres, which the postgresql-15 package creates; created
#                     as a system user if it does not exist)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [ -z "${PG_CONFIG:-}" ]; then
	if [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
if ! PGBINDIR=$("$PG_CONFIG" --bindir 2>/dev/null); then
	echo "$(basename "$0"): '$PG_CONFIG --bindir' failed; run 'make deps' or set PG_CONFIG" >&2
	exit 1
fi
export PG_CONFIG

is_root() { [ "$(id -u)" -eq 0 ]; }

# Make sure the unprivileged user exists; sets RUN_USER.
ensure_run_user() {
	RUN_USER=${BATPAK_TEST_USER:-postgres}
	if ! id -u "$RUN_USER" >/dev/null 2>&1; then
		echo "$(basename "$0"): creating system user $RUN_USER to run PostgreSQL servers"
		useradd --system --user-group --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_USER"
	fi
	if [ "$(id -u "$RUN_USER")" -eq 0 ]; then
		echo "$(basename "$0"): BATPAK_TEST_USER must not be root" >&2
		exit 1
	fi
}

# Run a command as the server owner: ourselves, or RUN_USER when root.  The
# environment is kept; PATH gets the PostgreSQL binaries first and only
# system directories after them (root's own tool directories are not
# readable by RUN_USER).
as_owner() {
	if is_root; then
		runuser -u "$RUN_USER" -- env \
			PATH="$PGBINDIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
			"$@"
	else
		env PATH="$PGBINDIR:$PATH" "$@"
	fi
}
