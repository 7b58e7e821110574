# Transactional visibility across crashes (kill -9 of the postmaster): after
# restart exactly the events of the transactions that committed are visible.
#   A: a transaction that appended and had not committed at the crash;
#   B: the writer stopped (SIGSTOP) so that it never learns of a COMMIT and a
#      ROLLBACK before the crash: recovery asks the clog;
#   C: a crash at a random moment under 6 clients that commit and roll back
#      transactions of two events each (shared and own entities).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib 'test/t/lib';
use BatpakTest;

my $node = new_batpak_node('txcrash', "batpak.writer_timeout = '1s'\n");

sub restart_after_crash
{
	my ($label) = @_;
	ok(crash_node($node) >= 2, "$label: postmaster and children killed");
	$node->start;
	ok(wait_state($node, 'ready'), "$label: writer ready after the crash");
}

sub stream_text
{
	my ($entity) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT entity_sequence || ':' || kind FROM batpak.read_stream('$entity')});
}

# --- A: pending at the crash ------------------------------------------------

$node->safe_psql('postgres', q{SELECT batpak.append('a-ent', 'tx', 'committed', '{}')});
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_safe('BEGIN');
my $gs = $bg->query_safe(
	q{SELECT global_sequence FROM batpak.append('a-ent', 'tx', 'pending', '{}')});
is($node->safe_psql('postgres', 'SELECT pending_transactions, pending_events FROM batpak.stats'),
	'1|1', 'A: one transaction with one pending event before the crash');
restart_after_crash('A');
eval { $bg->quit };
is(stream_text('a-ent'), '1:committed', 'A: the uncommitted event is gone');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM batpak.read_all() WHERE global_sequence = $gs"),
	'0', 'A: its global sequence is a gap');
is($node->safe_psql('postgres', 'SELECT pending_transactions, pending_events FROM batpak.stats'),
	'0|0', 'A: nothing pending after recovery');
is($node->safe_psql('postgres',
		q{SELECT entity_sequence FROM batpak.append('a-ent', 'tx', 'next', '{}')}),
	'2', 'A: its entity sequence is used again');

# --- the entity wait is a lock wait: visible in pg_locks, cancellable ----------

my $holder = $node->background_psql('postgres', on_error_stop => 0);
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT batpak.append('w-ent', 'tx', 'held', '{}')});
$waiter->query_until(qr/started/, q{\echo started
SELECT batpak.append('w-ent', 'tx', 'waiting', '{}');
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		   WHERE wait_event_type = 'Lock' AND wait_event = 'transactionid'
		     AND query LIKE '%w-ent%waiting%'}),
	'wait: the second append waits on the first transaction\'s xid');
is( $node->safe_psql('postgres',
		q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
		   WHERE query LIKE '%w-ent%waiting%' AND pid <> pg_backend_pid()}),
	't', 'wait: pg_cancel_backend');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity
		   WHERE wait_event_type = 'Lock' AND query LIKE '%w-ent%waiting%'}),
	'wait: the cancelled append stopped waiting');
$holder->query_safe('COMMIT');
$waiter->quit;
$holder->quit;
like($waiter->{stderr}, qr/canceling statement due to user request/,
	'wait: the cancelled append failed with the cancel');
is(stream_text('w-ent'), '1:held', 'wait: the cancelled append wrote nothing');

# --- B: the writer never learns of the COMMIT / ROLLBACK ----------------------

my $s1 = $node->background_psql('postgres', on_error_stop => 0);
my $s2 = $node->background_psql('postgres', on_error_stop => 0);
$s1->query_safe('BEGIN');
$s1->query_safe(q{SELECT batpak.append('b-commit', 'tx', 'k', '{}')});
$s1->query_safe(q{SELECT batpak.append_batch(ARRAY[
	ROW('b-commit', 'tx', 'k2', '{}', NULL, NULL, 'b-key', NULL, NULL)::batpak.new_event,
	ROW('b-commit-2', 'tx', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])});
$s2->query_safe('BEGIN');
$s2->query_safe(q{SELECT batpak.append('b-rollback', 'tx', 'k', '{}')});
my $writer = $node->safe_psql('postgres', 'SELECT writer_pid FROM batpak.stats');
kill('STOP', $writer) or die "cannot stop the writer: $!";
my $ok = eval {
	# neither waits for the writer: the clog decides what readers see
	$s1->query_safe('COMMIT');
	$s2->query_safe('ROLLBACK');
	is(stream_text('b-commit') . '|' . stream_text('b-commit-2') . '|' . stream_text('b-rollback'),
		"1:k\n2:k2|1:k|", 'B: with the writer stopped, the COMMIT is visible at once, the ROLLBACK not');
	is($node->safe_psql('postgres', 'SELECT pending_transactions, pending_events FROM batpak.stats'),
		'2|4', 'B: the writer has settled neither');
	1;
};
restart_after_crash('B');    # SIGKILL ends the stopped writer too
die $@ unless $ok;
eval { $s1->quit };
eval { $s2->quit };
is(stream_text('b-commit'), "1:k\n2:k2", 'B: the committed transaction is visible');
is(stream_text('b-commit-2'), '1:k', 'B: with its whole batch');
is(stream_text('b-rollback'), '', 'B: the rolled-back one is not');
is($node->safe_psql('postgres',
		q{SELECT global_sequence IS NOT NULL FROM batpak.append('elsewhere', 'tx', 'k', '{}', NULL, NULL, 'b-key')}),
	't', 'B: the committed idempotency key survives');
is($node->safe_psql('postgres',
		q{SELECT kind FROM batpak.read_stream('b-commit') WHERE entity_sequence = 2}),
	'k2', 'B: and returned the original event');
is($node->safe_psql('postgres', 'SELECT pending_transactions, pending_events FROM batpak.stats'),
	'0|0', 'B: nothing pending after recovery');

# Recovery wrote the outcome down as markers: a clean restart reads the same.
$node->restart;
ok(wait_state($node, 'ready'), 'B: ready after a clean restart');
is(stream_text('b-commit') . '|' . stream_text('b-rollback'), "1:k\n2:k2|",
	'B: the same after a clean restart');

# --- C: crash at a random moment under load -------------------------------------

my $clients = 6;
my $txns    = 400;
my $tmp     = PostgreSQL::Test::Utils::tempdir;
my %plan;    # "c-t" => 'C' or 'R'
for my $c (1 .. $clients)
{
	open(my $fh, '>', "$tmp/tx$c.sql") or die $!;
	for my $t (1 .. $txns)
	{
		my $end = ($t * 7 + $c) % 3 == 0 ? 'ROLLBACK' : 'COMMIT';
		$plan{"$c-$t"} = substr($end, 0, 1);
		my $shared = 'c-shared-' . ($t % 4);
		print $fh "BEGIN;\n";
		print $fh qq{SELECT 'A' FROM batpak.append('$shared', 'tx', 'k', '{"c": $c, "t": $t}');\n};
		print $fh qq{SELECT 'A' FROM batpak.append('c-own-$c', 'tx', 'k', '{"c": $c, "t": $t}');\n};
		print $fh "$end;\nSELECT '$plan{\"$c-$t\"}|$c|$t';\n";
	}
	close $fh;
}
my (@h, @out, @err);
for my $c (1 .. $clients)
{
	($out[$c], $err[$c]) = ('', '');
	$h[$c] = IPC::Run::start(
		[
			'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-f', "$tmp/tx$c.sql"
		],
		'<', '/dev/null', '>', \$out[$c], '2>', \$err[$c]);
}
sub ends_seen
{
	my $n = 0;
	for my $c (1 .. $clients)
	{
		harness_running($h[$c]);
		$n += () = $out[$c] =~ /^[CR]\|/mg;
	}
	return $n;
}
my $kill_after = 150 + int(rand(150));
ok(deadline_loop(120, sub { ends_seen() >= $kill_after }),
	"C: clients ended at least $kill_after transactions before the kill");
restart_after_crash('C');
ok(deadline_loop(60, sub { !grep { harness_running($h[$_]) } 1 .. $clients }),
	'C: every client ended after the crash');

my (%ended, %last);
for my $c (1 .. $clients)
{
	$h[$c]->finish;
	unlike($err[$c], qr/ERROR:/, "C: client $c saw no SQL error");
	for my $line (split /\n/, $out[$c])
	{
		next if $line eq 'A';
		my ($kind, $lc, $lt) = split /\|/, $line;
		$ended{"$lc-$lt"} = $kind;
		$last{$lc} = $lt if !defined $last{$lc} || $lt > $last{$lc};
	}
}

# what is visible, per transaction
my %visible;
for my $row (split /\n/,
	$node->safe_psql('postgres',
		q{SELECT payload->>'c', payload->>'t', count(*) FROM batpak.read_all()
		   WHERE entity LIKE 'c-%' GROUP BY 1, 2}))
{
	my ($c, $t, $n) = split /\|/, $row;
	$visible{"$c-$t"} = $n;
}
my (@lost, @leaked, @torn);
for my $k (sort keys %plan)
{
	my ($c, $t) = split /-/, $k;
	my $v = $visible{$k} // 0;
	push @torn, $k if $v != 0 && $v != 2;
	if (($ended{$k} // '') eq 'C') { push @lost, $k if $v != 2; }
	elsif (($ended{$k} // '') eq 'R') { push @leaked, $k if $v != 0; }
	elsif ($v != 0)
	{
		# only the transaction in flight at the crash may have committed
		# without its client hearing of it, and only if it meant to commit
		my $inflight = $t == ($last{$c} // 0) + 1;
		push @leaked, $k unless $inflight && $plan{$k} eq 'C';
	}
}
is_deeply(\@lost, [], 'C: every transaction whose COMMIT returned is visible');
is_deeply(\@leaked, [], 'C: no event of a rolled-back or unfinished transaction is visible');
is_deeply(\@torn, [], 'C: every transaction is visible whole or not at all');
my $committed = grep { ($ended{$_} // '') eq 'C' } keys %plan;
ok($committed >= 50, "C: $committed committed transactions checked");

is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM (SELECT entity, entity_sequence,
		         row_number() OVER (PARTITION BY entity ORDER BY global_sequence) AS rn
		    FROM batpak.read_all()) s WHERE entity_sequence <> rn}),
	'0', 'C: every entity sequence dense among visible events');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM batpak.verify_chain() WHERE NOT ok'),
	'0', 'C: every chain verifies');
is($node->safe_psql('postgres', 'SELECT pending_transactions, pending_events FROM batpak.stats'),
	'0|0', 'C: nothing pending after recovery');

$node->stop;
done_testing();
