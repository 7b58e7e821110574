
# 013_crash_loop.pl
#
# Rounds of kill -9 of the postmaster at a random moment under load: 16
# clients append single events, batches and transactions (a quarter rolled
# back) to shared and own entities, and two consumers move one cursor into a
# table, read and insert in one transaction.  Every client logs, line by line,
# what it sent and what came back (test/t/crashload.py).  After every restart:
# every acknowledged event is stored with the global sequence of its receipt,
# every committed transaction's events are stored, no rolled-back or failed
# call's event is, an undecided transaction (its COMMIT in flight) has all its
# events or none, no event is stored twice, nothing is stored that nobody
# sent, per-entity sequences are dense and chains verify, and the consumed
# rows are exactly the store's events up to the cursor's position.  At the end
# the cursor is drained: consumed = stored.
#
# CRASH_ROUNDS (default 3) sets the number of rounds ("make test-crash" runs
# 50); CRASH_SEED replays a run (the seed is printed).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $rounds  = $ENV{CRASH_ROUNDS} // 3;
my $clients = 16;
my $seed    = $ENV{CRASH_SEED} // (time() ^ $$);
note "crash loop: $rounds rounds, seed $seed (CRASH_SEED=$seed replays it)";
srand($seed);

my $python = python_with_psycopg();
my $driver = "$FindBin::RealBin/crashload.py";

my $node = new_batpak_node('crashloop',
	"restart_after_crash = on\nmax_connections = 60\n");
my $logdir = PostgreSQL::Test::Utils::tempdir;
$node->safe_psql('postgres', q{
	CREATE TABLE crash_consumed (global_sequence bigint PRIMARY KEY, tag text NOT NULL UNIQUE);
	SELECT batpak.cursor_create('crashloop');
});

sub run_checks
{
	my ($label, @extra) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $python, $driver, 'check', $node->connstr('postgres'), $logdir, @extra ],
		'<', '/dev/null', '>', \$out, '2>', \$err);
	ok($ok, "$label: the checker ran") or diag($err);
	my $n = 0;
	for my $line (split /\n/, $out)
	{
		next unless $line =~ /^check (\S+) (\d+) (.*)$/;
		$n++;
		is($3, '[]', "$label: $1 ($2 checked)");
	}
	ok($n >= 9, "$label: $n checks reported");
	my ($count, $min, $max, $distinct, $broken, $misordered) = split /\|/, integrity_report($node);
	is("$distinct|$broken|$misordered", "$count|0|0",
		"$label: $count events, each once, entity sequences dense and linked, global order kept");
	is(verify_report($node), expected_verify_report($node), "$label: verify_chain clean");
	return;
}

for my $round (1 .. $rounds)
{
	my $threshold = 40 + int(rand(360));
	my $extra_ms  = int(rand(300));
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ $python, $driver, 'load', $node->connstr('postgres'), $logdir, $round, $clients, $seed ],
		'<', '/dev/null', '>', \$out, '2>', \$err);
	my $acked = deadline_loop(
		120,
		sub {
			harness_running($h);
			my @a = $out =~ /^acked (\d+)$/mg;
			return @a && $a[-1] >= $threshold ? $a[-1] : 0;
		});
	ok($acked, "round $round: $threshold operations acknowledged before the crash")
	  or diag("driver: $out $err");
	usleep($extra_ms * 1000);
	crash_node($node);
	ok(deadline_loop(60, sub { !harness_running($h) }), "round $round: the load ended with the server");
	$h->finish;
	unlike($out, qr/^consumer error/m, "round $round: no consumer saw an error")
	  or diag($out);
	unlike($err, qr/Traceback/, "round $round: the driver did not fail") or diag($err);

	$node->start;
	ok(wait_state($node, 'ready'), "round $round: the writer is ready after the crash");
	run_checks("round $round");
}

run_checks('final', 'final');
$node->stop;
done_testing();
