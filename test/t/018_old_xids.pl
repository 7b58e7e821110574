
# 018_old_xids.pl
#
# The writer settles a transaction that ended long ago while another
# session's subtransaction cache has overflowed.
#
# A review worried that the writer, which holds no snapshot (so no xmin that
# stops a checkpoint from truncating pg_subtrans), could ask
# TransactionIdIsInProgress about an ended xid whose pg_subtrans segment is
# gone, fail with "could not access status of transaction" and restart into
# the same failure.  It cannot: TransactionIdIsInProgress reads pg_subtrans
# only for overflowed transactions whose top xid precedes the xid asked
# about, and such a transaction, running, keeps the truncation below it.
# This test builds the case the review described and holds the writer to
# it: a pending transaction committed more than a pg_subtrans segment of
# xids ago while the writer was stopped (SIGSTOP), a checkpoint has removed
# that segment, a session holds an overflowed subtransaction cache; when
# the writer goes on it settles the transaction (committed, its event
# visible) and stays up.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_batpak_node('oldxids', "autovacuum = off\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $writer = sql('SELECT writer_pid FROM batpak.stats');
my $logpos = -s $node->logfile;

# A transaction with one pending event; the writer stops before it commits.
my $a = $node->background_psql('postgres', on_error_stop => 1);
$a->query_safe('BEGIN');
$a->query_safe(q{SELECT batpak.append('old-1', 'k', 'pending', '{"n": 1}')});
my $axid = $a->query_safe('SELECT txid_current()');
is(sql('SELECT pending_transactions || \'|\' || pending_events FROM batpak.stats'),
	'1|1', 'the transaction has one pending event');
ok(kill('STOP', $writer), 'SIGSTOP to the writer');
ok(deadline_loop(30, sub { (proc_state($writer) // '') eq 'T' }), 'the writer is stopped');
$a->query_safe('COMMIT');
$a->quit;

# Burn xids past the end of the transaction's pg_subtrans segment (65,536
# xids a segment), then checkpoint: the segment is removed.
my $seg = int($axid / 65536);
my $burn = ($seg + 1) * 65536 - $axid + 100;
sql(qq{SET synchronous_commit = off;
	DO \$\$ BEGIN
		FOR i IN 1..$burn LOOP
			PERFORM txid_current();
			COMMIT;
		END LOOP;
	END \$\$});
cmp_ok(sql('SELECT txid_current()'), '>=', ($seg + 1) * 65536,
	'the next xid is in a later pg_subtrans segment');
sql('CHECKPOINT');
my $segfile = $node->data_dir . sprintf('/pg_subtrans/%04X', $seg);
ok(!-e $segfile, "the checkpoint removed pg_subtrans segment $segfile");

# A session with 65 subtransactions that have xids (the cache holds 64),
# left open.
sql('CREATE TABLE t (i int)');
my $b = $node->background_psql('postgres', on_error_stop => 1);
$b->query_safe('BEGIN');
$b->query_safe(q{DO $$ BEGIN
	FOR i IN 1..65 LOOP
		BEGIN
			INSERT INTO t VALUES (i);
		EXCEPTION WHEN OTHERS THEN RAISE;
		END;
	END LOOP;
END $$});
# each row's xmin is the subtransaction that inserted it
is($b->query_safe('SELECT count(DISTINCT xmin::text) FROM t'),
	'65', 'the session has 65 subtransaction xids (the cache holds 64)');

ok(kill('CONT', $writer), 'the writer goes on');
ok( $node->poll_query_until('postgres',
		q{SELECT pending_transactions = 0 FROM batpak.stats}),
	'the writer settles the old transaction');
is(sql(q{SELECT entity_sequence || ':' || kind || ':' || payload::text
		 FROM batpak.read_stream('old-1')}),
	'1:pending:{"n": 1}', 'its event is visible: the transaction committed');
is(sql(q{SELECT state || '|' || writer_pid || '|' || transactions_committed || '|' || transactions_aborted
		 FROM batpak.stats}),
	"ready|$writer|1|0", 'the same writer is ready and counted one commit');
my $log = slurp_file($node->logfile, $logpos);
unlike($log, qr/could not access status of transaction/,
	'no failed status look-up in the log');

$b->query_safe('COMMIT');
$b->quit;
$node->stop;
done_testing();
