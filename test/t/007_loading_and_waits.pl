# 007_loading_and_waits.pl
#
# Loading rules and the bounded waits of an append:
# - without shared_preload_libraries, CREATE EXTENSION fails with a hint;
# - with the writer frozen (SIGSTOP), an append fails with BP003 after
#   batpak.writer_timeout and a cancelled one (statement_timeout) fails with
#   57014; neither writes anything, and the session's next append works once
#   the writer runs again;
# - with the writer gone for good (not restarting within the timeout), an
#   append fails with BP003 naming the writer's state.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# --- not preloaded --------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
my ($ret, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION batpak');
isnt($ret, 0, 'CREATE EXTENSION fails without preloading');
like($err, qr/batpak can only be loaded via shared_preload_libraries/,
	'error says the library must be preloaded');
like($err, qr/HINT:\s+Add batpak to the shared_preload_libraries/,
	'hint names shared_preload_libraries');
is($plain->safe_psql('postgres',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'batpak'}),
	'0', 'no extension was created');
$plain->stop;

# --- frozen writer ----------------------------------------------------------
my $node = new_batpak_node('waits');
my $pid = $node->safe_psql('postgres', 'SELECT writer_pid FROM batpak.stats');
like($pid, qr/^\d+$/, 'writer pid is shown');
$node->safe_psql('postgres',
	q{SELECT batpak.append('w', 's', 'k', '{"n": 1}')});

kill 'STOP', $pid or die "cannot stop writer $pid: $!";
my ($state, $msg) = sql_error($node,
	"SET batpak.writer_timeout = '1s';\n"
	  . q{SELECT batpak.append('w', 's', 'k', '{"n": 2}');});
is($state, 'BP003', 'append to a frozen writer times out with BP003');
like($msg, qr/did not take the append within batpak.writer_timeout \(1000 ms\)/,
	'timeout message names the setting');

($state, $msg) = sql_error($node,
	"SET statement_timeout = '300ms';\n"
	  . q{SELECT batpak.append('w', 's', 'k', '{"n": 3}');});
is($state, '57014', 'statement_timeout cancels a waiting append');

kill 'CONT', $pid or die "cannot continue writer $pid: $!";
is($node->safe_psql('postgres',
		q{SELECT entity_sequence FROM batpak.append('w', 's', 'k', '{"n": 4}')}),
	'2', 'next append after the timeouts gets entity sequence 2');
is($node->safe_psql('postgres',
		q{SELECT string_agg(payload->>'n', ',' ORDER BY global_sequence) FROM batpak.read_all()}),
	'1,4', 'the timed-out and cancelled appends wrote nothing');
is($node->safe_psql('postgres',
		q{SELECT requests_failed FROM batpak.stats}),
	'0', 'the writer never saw the abandoned requests');

# --- writer not running -------------------------------------------------------
# Point the writer at a database that does not exist: it cannot start, and
# appends must fail within the timeout, not hang.
$node->stop;
$node->append_conf('postgresql.conf', "batpak.database = 'no_such_db'\n");
$node->start;
# the extension lives in "postgres"; the writer looks for "no_such_db"
($state, $msg) = sql_error($node,
	"SET batpak.writer_timeout = '1500ms';\n"
	  . q{SELECT batpak.append('w', 's', 'k', '{"n": 5}');});
is($state, 'BP003', 'append without a running writer fails with BP003');
like($msg, qr/batpak writer is not available \(state: (stopped|starting)\)/,
	'message names the writer state');
ok($node->log_contains(qr/database "no_such_db" does not exist/),
	'server log says why the writer is down');
$node->stop;

done_testing();
