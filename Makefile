# Makefile
#
# Build, install and test batpak with PGXS.
#
#   make deps     install the missing Debian packages (test/setup/deps.sh)
#   make          build batpak.so
#   make install  install into the PostgreSQL given by PG_CONFIG
#   make test     deps + build + install + every test suite, with a summary
#   make demo     deps + build + install + a running demo cluster in ./demo_cluster
#   make bench    deps (+ PgQ) + build + install + test/bench/run.sh (BENCH_SCALE=...)
#   make test-crash   the crash loop (test/t/013) with CRASH_ROUNDS (default 50) rounds
#   make test-long    1,000,000 appends in one session (015) and 100,000 hostile calls (014)
#   make check-assert PGSRC=...    every suite on PostgreSQL built from PGSRC with assertions
#   make check-valgrind PGSRC=...  the same with the server under Valgrind's memcheck
#
# Test suites (they need an installed batpak, see "make install"):
#   make installcheck            pg_regress (sql/), isolation (specs/), TAP (test/t/)
#   make installcheck-regress    pg_regress only: sql/*.sql against expected/*.out
#   make installcheck-isolation  isolation only: specs/*.spec against expected/*.out
#   make check-tap               TAP only: test/t/*.pl (PROVE_TESTS=test/t/003_x.pl for one)
#
# Every suite starts its own throwaway server(s); none needs a running cluster.
# PostgreSQL refuses to run as root, so as root the suites run as an
# unprivileged user (BATPAK_TEST_USER, default "postgres") in a copy of the
# tree; see test/setup/run-tests.sh.

EXTENSION = batpak
MODULE_big = batpak
OBJS = \
	src/batpak.o \
	src/shmem.o \
	src/storage.o \
	src/crc.o \
	src/index.o \
	src/writer.o \
	src/submit.o \
	src/sql_write.o \
	src/sql_read.o \
	src/verify.o \
	src/xact.o \
	src/gates.o \
	src/cursor.o \
	src/notify.o
DATA = batpak--1.0.sql
PGFILEDESC = "batpak - event store with a background writer"

# PGXS tracks no header dependencies: every object includes batpak.h.
$(OBJS): src/batpak.h

SHLIB_LINK += -lsodium
# The PGXS defaults already warn about most of these; stating them keeps the
# warnings on with any pg_config.  No -Werror: warnings are read, not fatal.
PG_CFLAGS += -Wall -Wmissing-prototypes -Wpointer-arith \
	-Wdeclaration-after-statement -Wformat-security -Wendif-labels

# pg_regress: every sql/*.sql, in name order, each against expected/NAME.out.
# ":=" so that an empty list leaves the variable empty for PGXS's ifdef.
REGRESS := $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=test/regress.conf

# Isolation tests: every specs/*.spec, each against expected/NAME.out.
ISOLATION := $(patsubst specs/%.spec,%,$(sort $(wildcard specs/*.spec)))
ISOLATION_OPTS = --temp-instance=./tmp_check_iso --temp-config=test/regress.conf

# TAP tests live in test/t/ (PGXS looks in t/ unless PROVE_TESTS is set).
TAP_TESTS = 1
PROVE_TESTS ?= $(sort $(wildcard test/t/*.pl))

# C locale and UTF8 in the regression database: output that does not depend
# on the machine's locale.
NO_LOCALE = 1
ENCODING = UTF8

# Our own installcheck (below) runs all three suites, also as root.
NO_INSTALLCHECK = 1

EXTRA_CLEAN = tmp_check tmp_check_regress tmp_check_iso tmp_check_assert tmp_check_valgrind \
	tmp_check_valgrind_suites results output_iso \
	regression.diffs regression.out log test-summary.log

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.DEFAULT_GOAL := all

ifneq ($(PGXS),)
include $(PGXS)

# The regression and isolation suites run in contrib_regression, which
# test/regress.conf names as batpak.database (the writer's database).
CONTRIB_TESTDB = contrib_regression
ISOLATION_TESTDB = contrib_regression

# The helpers of the TAP tests (BatpakTest.pm) are found on @INC too.
PG_PROVE_FLAGS += -I test/t/lib
else
# No PostgreSQL development files yet: only the targets that install them
# first (deps, test, demo, bench) can work.
all install run-regress run-isolation run-tap:
	@echo "Makefile: '$(PG_CONFIG) --pgxs' failed: PostgreSQL 15 development files are missing." >&2
	@echo "Makefile: run 'make deps' first, or set PG_CONFIG=/path/to/pg_config." >&2
	@exit 1

clean:
	rm -f $(OBJS) $(patsubst %.o,%.bc,$(OBJS)) $(MODULE_big).so
	rm -rf $(EXTRA_CLEAN)
endif

SETUP = test/setup

.PHONY: deps install-ext test test-crash test-long demo demo-stop bench check-assert check-valgrind \
	installcheck \
	installcheck-regress installcheck-isolation installcheck-tap check-tap \
	run-regress run-isolation run-tap

deps:
	@$(SETUP)/deps.sh

# "make install", with sudo when the PostgreSQL directories are not ours.
install-ext:
	@if [ "$$(id -u)" -eq 0 ] || { [ -w '$(DESTDIR)$(pkglibdir)' ] && [ -w '$(DESTDIR)$(datadir)/extension' ]; }; then \
		$(MAKE) --no-print-directory install PG_CONFIG='$(PG_CONFIG)'; \
	elif command -v sudo >/dev/null 2>&1; then \
		echo "install-ext: $(pkglibdir) is not writable, using sudo"; \
		sudo $(MAKE) --no-print-directory install PG_CONFIG='$(PG_CONFIG)'; \
	else \
		echo "install-ext: $(pkglibdir) is not writable and sudo is missing; run 'make install' as root" >&2; \
		exit 1; \
	fi

# Each step is a sub-make so that it sees what the previous one installed
# (the first run may have no pg_config before deps).
test:
	@$(SETUP)/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install-ext
	@$(MAKE) --no-print-directory installcheck

# The long crash loop: CRASH_ROUNDS=50 by default (make test runs 3).
test-crash:
	@$(SETUP)/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install-ext
	@CRASH_ROUNDS=$${CRASH_ROUNDS:-50} $(MAKE) --no-print-directory installcheck-tap \
		PROVE_TESTS=test/t/013_crash_loop.pl

# The long resource and hostile-input runs (make test runs 100,000 appends
# and 10,000 calls).
test-long:
	@$(SETUP)/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install-ext
	@MEMORY_APPENDS=$${MEMORY_APPENDS:-1000000} HOSTILE_CALLS=$${HOSTILE_CALLS:-100000} \
		$(MAKE) --no-print-directory installcheck-tap \
		PROVE_TESTS="test/t/014_hostile.pl test/t/015_memory.pl"

demo:
	@$(SETUP)/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install-ext
	@PG_CONFIG='$(PG_CONFIG)' $(SETUP)/demo.sh start

demo-stop:
	@PG_CONFIG='$(PG_CONFIG)' $(SETUP)/demo.sh stop

# The benchmark's baselines: PgQ from Debian; Message DB comes from the npm
# registry at bench time (npm pack, or curl when npm is missing).
BENCH_PACKAGES = postgresql-15-pgq3 curl ca-certificates

bench:
	@BATPAK_EXTRA_PACKAGES='$(BENCH_PACKAGES)' $(SETUP)/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory install-ext
	@PGBIN="$$('$(PG_CONFIG)' --bindir)" $(if $(BENCH_SCALE),BENCH_SCALE='$(BENCH_SCALE)') \
		test/bench/run.sh

# The suites, through test/setup/run-tests.sh: it runs the run-* targets
# below (as an unprivileged user when we are root), counts what passed and
# failed, prints the diffs and logs of failures and ends with a summary line.
RUN_TESTS = PG_CONFIG='$(PG_CONFIG)' PROVE_TESTS='$(PROVE_TESTS)' \
	PROVE_FLAGS='$(PROVE_FLAGS)' EXTRA_REGRESS_OPTS='$(EXTRA_REGRESS_OPTS)' \
	$(SETUP)/run-tests.sh

installcheck:
	@$(RUN_TESTS) regress isolation tap

installcheck-regress:
	@$(RUN_TESTS) regress

installcheck-isolation:
	@$(RUN_TESTS) isolation

installcheck-tap check-tap:
	@$(RUN_TESTS) tap

# Every suite against a PostgreSQL 15 built with assertions from the source
# tree PGSRC (Debian's server has none); see test/setup/assert-check.sh.
check-assert:
	@$(SETUP)/assert-check.sh '$(PGSRC)'

# The same with the server under Valgrind's memcheck (PostgreSQL built with
# USE_VALGRIND too): fails on any memcheck report.
check-valgrind:
	@$(SETUP)/assert-check.sh --valgrind '$(PGSRC)'

ifneq ($(PGXS),)
# The raw suites, as PGXS would run them.  They must not run as root, and
# they need "make install" first; run-tests.sh takes care of both.
run-regress:
ifneq ($(REGRESS),)
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
else
	@echo "run-regress: no sql/*.sql, nothing to run"
endif

run-isolation:
ifneq ($(ISOLATION),)
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
else
	@echo "run-isolation: no specs/*.spec, nothing to run"
endif

# As PGXS's prove_installcheck, with the tests of test/t/ and PG_CONFIG.
run-tap:
ifneq ($(strip $(PROVE_TESTS)),)
	rm -rf '$(CURDIR)'/tmp_check
	$(MKDIR_P) '$(CURDIR)'/tmp_check
	TESTDIR='$(CURDIR)' PATH="$(bindir):$(CURDIR):$$PATH" \
	PGPORT='6$(DEF_PGPORT)' \
	PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
	PG_CONFIG='$(PG_CONFIG)' \
	$(PROVE) $(PG_PROVE_FLAGS) $(PROVE_FLAGS) $(PROVE_TESTS)
else
	@echo "run-tap: no test/t/*.pl, nothing to run"
endif
endif

# make clean stops a running demo cluster before removing it.
clean: clean-demo
.PHONY: clean-demo
clean-demo:
	@if [ -e demo_cluster ]; then PG_CONFIG='$(PG_CONFIG)' $(SETUP)/demo.sh remove; fi
