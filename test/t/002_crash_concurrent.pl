
# 002_crash_concurrent.pl
#
# Several clients append concurrently (single events and batches, to shared
# and to their own entities); the postmaster and every child are SIGKILLed at
# once while they are still appending.  After restart every receipt a client
# got back is in the store, unchanged; sequences are dense; each client's
# statements are present as a prefix of what it sent (its last statement may
# have been written without the client hearing back), batches entire or not
# at all; every chain verifies.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $clients    = 6;
my $statements = 1500;    # per client: far more than get done before the kill
my $kill_after = 150;     # receipts seen by the test before it pulls the plug

# Immediate mode: this test asserts that every receipt survives and that the
# sequences stay dense; in transactional mode an append whose transaction had
# not committed at the crash is rightly discarded (009 tests that mode).
my $node = new_batpak_node('crash', "batpak.transactional = off\n");
my $tmp  = PostgreSQL::Test::Utils::tempdir;

# Statement $i of client $c: every 10th a batch of two events (shared entity
# and own entity), otherwise one event, to a shared entity for odd $i and to
# the client's own for even $i.  Every 10th+5 carries an idempotency key.
# Each output line: the receipt, then c and i.
sub events_of
{
	my ($c, $i) = @_;
	return $i % 10 == 0 ? 2 : 1;
}

my $cols = receipt_cols('r');
for my $c (1 .. $clients)
{
	open(my $fh, '>', "$tmp/client$c.sql") or die "client$c.sql: $!";
	for my $i (1 .. $statements)
	{
		my $shared = 'shared-' . ($i % 3);
		if ($i % 10 == 0)
		{
			print $fh "SELECT $cols, $c, $i FROM batpak.append_batch(ARRAY["
			  . qq{ROW('$shared', 'crash', 'pair', '{"c": $c, "i": $i, "p": 1}', NULL, NULL, 'kb-$c-$i', NULL, NULL)::batpak.new_event, }
			  . qq{ROW('own-$c', 'crash', 'pair', '{"c": $c, "i": $i, "p": 2}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event]) r;\n};
		}
		else
		{
			my $entity = $i % 2 ? $shared : "own-$c";
			my $key    = $i % 10 == 5 ? "'k-$c-$i'" : 'NULL';
			print $fh "SELECT $cols, $c, $i FROM batpak.append("
			  . qq{'$entity', 'crash', 'one', '{"c": $c, "i": $i, "p": 1}', NULL, NULL, $key) r;\n};
		}
	}
	close $fh;
}

my (@h, @out, @err);
for my $c (1 .. $clients)
{
	$out[$c] = '';
	$err[$c] = '';
	$h[$c] = IPC::Run::start(
		[
			'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-f', "$tmp/client$c.sql"
		],
		'<', '/dev/null', '>', \$out[$c], '2>', \$err[$c]);
}

sub lines_seen
{
	my $n = 0;
	for my $c (1 .. $clients)
	{
		harness_running($h[$c]);
		$n += () = $out[$c] =~ /\n/g;
	}
	return $n;
}

my $seen = deadline_loop(120, sub { lines_seen() >= $kill_after ? lines_seen() : 0 });
ok($seen >= $kill_after, "clients got at least $kill_after receipts before the kill");
my $running = grep { harness_running($h[$_]) } 1 .. $clients;
is($running, $clients, 'all clients still appending when the node is killed');

ok(crash_node($node) >= 2, 'postmaster and children killed with SIGKILL');

# Collect what every client printed before losing its connection.
ok(deadline_loop(60, sub { !grep { harness_running($h[$_]) } 1 .. $clients }),
	'every client ended after the crash');
my %receipt;       # global_sequence => [ receipt line, c, i ]
my %received;      # c => { i => receipts }
my $total_received = 0;
my @malformed;
for my $c (1 .. $clients)
{
	$h[$c]->finish;
	my $rc = $h[$c]->result;
	ok($rc == 2, "client $c lost its connection (psql exit code $rc)");
	unlike($err[$c], qr/ERROR:/, "client $c saw no SQL error");
	for my $line (split /\n/, $out[$c])
	{
		my @f = split /\|/, $line, -1;
		my ($gs, $lc, $li) = ($f[1], $f[6], $f[7]);
		if (@f != 8 || $lc ne $c || exists $receipt{$gs})
		{
			push @malformed, "client $c: $line";
			next;
		}
		$receipt{$gs} = [ join('|', @f[ 0 .. 5 ]), $lc, $li ];
		$received{$c}{$li}++;
		$total_received++;
	}
}
is_deeply(\@malformed, [], 'receipt lines well formed, each global_sequence given once');
my $total_sent = $clients * ($statements + $statements / 10);
ok($total_received >= $kill_after && $total_received < $total_sent,
	"crash interrupted the clients ($total_received of $total_sent receipts)");

$node->start;
ok(wait_state($node, 'ready'), 'writer ready after the crash');

# Everything in the store, by global sequence.
my %stored;
my %stored_count;    # c => { i => events }
for my $line (split /\n/,
	$node->safe_psql('postgres',
		'SELECT ' . receipt_cols('e') . ", e.entity, e.payload->>'c', e.payload->>'i' FROM batpak.read_all() e"))
{
	my @f = split /\|/, $line, -1;
	$stored{ $f[1] } = [ join('|', @f[ 0 .. 5 ]), $f[7], $f[8], $f[6] ];
	$stored_count{ $f[7] }{ $f[8] }++;
}
my $n = scalar keys %stored;

my @lost;
for my $gs (sort { $a <=> $b } keys %receipt)
{
	my ($line, $c, $i) = @{ $receipt{$gs} };
	my $s = $stored{$gs};
	push @lost, "receipt $line (client $c statement $i): "
	  . ($s ? "stored as $s->[0] (client $s->[1] statement $s->[2])" : 'absent')
	  unless $s && $s->[0] eq $line && $s->[1] eq $c && $s->[2] eq $i;
}
is_deeply(\@lost, [], "all $total_received receipts present with identical event_id, sequences, committed_at and hashes");

is(integrity_report($node), "$n|1|$n|$n|0|0",
	"global sequences exactly 1..$n, entity sequences dense, chains linked");
is(verify_report($node), expected_verify_report($node),
	'verify_chain(NULL) ok for every entity');

# Per client: the stored statements are a prefix 1..k; the client heard back
# about 1..r with k = r or k = r + 1 (the statement in flight); a batch is
# stored whole or not at all.
for my $c (1 .. $clients)
{
	my $r = 0;
	$r++ while $received{$c}{ $r + 1 };
	my @bad = map { "statement $_ has " . ($received{$c}{$_} // 0) . ' receipts' }
	  grep { ($received{$c}{$_} // 0) != ($_ <= $r ? events_of($c, $_) : 0) }
	  (1 .. $statements);
	is_deeply(\@bad, [], "client $c received the receipts of statements 1..$r in full");

	my $k = 0;
	$k++ while ($stored_count{$c}{ $k + 1 } // 0) == events_of($c, $k + 1);
	my @extra = grep { ($stored_count{$c}{$_} // 0) != 0 } ($k + 1 .. $statements);
	is_deeply(\@extra, [], "client $c: stored statements are exactly 1..$k");
	ok($k == $r || $k == $r + 1, "client $c: stored $k statements, received $r");
}

# Idempotency keys written before the crash are still known.
my @keyed = grep { $receipt{$_}[2] % 10 == 5 } sort { $a <=> $b } keys %receipt;
ok(@keyed > 0, 'some keyed appends were acknowledged');
my $retry_sql = join(";\n",
	map {
		my ($c, $i) = @{ $receipt{$_} }[ 1, 2 ];
		"SELECT $cols FROM batpak.append('elsewhere', 'crash', 'retry', '{}', NULL, NULL, 'k-$c-$i') r"
	} @keyed);
is($node->safe_psql('postgres', $retry_sql),
	join("\n", map { $receipt{$_}[0] } @keyed),
	're-appending acknowledged keys returns the original receipts');
is($node->safe_psql('postgres', 'SELECT count(*), max(global_sequence) FROM batpak.read_all()'),
	"$n|$n", 'the retries wrote nothing');

# Appends continue at max + 1 and extend the chain.
my $last = $node->safe_psql('postgres',
	q{SELECT entity_sequence, encode(event_hash, 'hex') FROM batpak.read_stream('shared-0')
	  ORDER BY entity_sequence DESC LIMIT 1});
my ($last_seq, $last_hash) = split /\|/, $last;
my ($next) = receipts_of($node, q{batpak.append('shared-0', 'crash', 'after', '{}')});
is( "$next->{global_sequence}|$next->{entity_sequence}|$next->{prev_hash}",
	($n + 1) . '|' . ($last_seq + 1) . "|$last_hash",
	'next append gets max + 1 and links to the entity\'s last event');

$node->stop('fast');
done_testing();
