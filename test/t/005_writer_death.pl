
# 005_writer_death.pl
#
# Appends never hang on a writer that is gone.  Appends that are waiting when
# the writer is terminated end within a bound, each with a receipt that is
# then in the store, with BP003 (not taken: not in the store) or with BP004
# (outcome unknown); the writer comes back and appends work again.  With no
# writer at all an append fails with BP003 after batpak.writer_timeout.  A
# waiting append can be cancelled.  A writer killed with SIGKILL makes the
# postmaster reinitialize; the appends it never took are not in the store.
# A query cancel sent to the writer or the notifier leaves both running.
#
# "Waiting" is made deterministic by SIGSTOPping the writer before the
# appends are sent; "no writer" by SIGSTOPping the postmaster (so that it
# cannot start a new writer) and terminating the writer.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = new_batpak_node('writer_death', "restart_after_crash = on\n");

sub writer_pid
{
	my $pid = $node->safe_psql('postgres', 'SELECT writer_pid FROM batpak.stats');
	die "no writer pid in batpak.stats" unless $pid =~ /^\d+$/;
	return $pid;
}

# An append in the background: psql -c, verbose errors, given writer_timeout.
sub start_append
{
	my ($tag, $timeout) = @_;
	my %c = (tag => $tag, out => '', err => '');
	local $ENV{PGOPTIONS} = "-c batpak.writer_timeout=$timeout";
	$c{h} = IPC::Run::start(
		[
			'psql', '-X', '-At', '-v', 'VERBOSITY=verbose',
			'-d', $node->connstr('postgres'), '-c',
			'SELECT ' . receipt_cols('r')
			  . qq{ FROM batpak.append('$tag', 'wd', 'k', '{"tag": "$tag"}') r}
		],
		'<', '/dev/null', '>', \$c{out}, '2>', \$c{err});
	return \%c;
}

sub running
{
	my ($c) = @_;
	return harness_running($c->{h});
}

# 'receipt', a SQLSTATE, or 'other: <stderr>' once the client has ended.
sub outcome
{
	my ($c) = @_;
	$c->{h}->finish;
	return 'receipt' if $c->{out} =~ /^[0-9a-f-]{36}\|\d+\|/;
	return $1 if $c->{err} =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return "other: $c->{err}";
}

sub active_appends
{
	my ($pattern) = @_;
	return qq{SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
	            AND pid <> pg_backend_pid() AND query LIKE '%batpak.append(''$pattern%'};
}

# The store's events tagged $tag, as receipt lines.
sub stored_with_tag
{
	my ($tag) = @_;
	return $node->safe_psql('postgres',
		'SELECT ' . receipt_cols('e') . " FROM batpak.read_all() e WHERE e.payload->>'tag' = '$tag'");
}

# Bounded: append until one succeeds (the writer may be restarting).
my $probes = 0;
sub wait_append_ok
{
	my ($label) = @_;
	my $deadline = time() + 90;
	while (time() < $deadline)
	{
		$probes++;
		my ($ret, $out, $err) = $node->psql('postgres',
			qq{SELECT global_sequence FROM batpak.append('probe', 'wd', 'k', '{"probe": $probes}')});
		return $out if $ret == 0;
		usleep(100_000);
	}
	return undef;
}

sub check_consistent
{
	my ($label) = @_;
	my $n = $node->safe_psql('postgres', 'SELECT count(*) FROM batpak.read_all()');
	is(integrity_report($node), "$n|1|$n|$n|0|0", "$label: sequences dense, chains linked");
	is(verify_report($node), expected_verify_report($node), "$label: verify_chain ok");
}

$node->safe_psql('postgres',
	q{SELECT batpak.append('seed', 'wd', 'k', jsonb_build_object('g', g)) FROM generate_series(1, 5) g});
my $w = writer_pid();
is( $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $w"),
	'1', 'batpak.stats.writer_pid is a process in pg_stat_activity');

# --- A: the writer is terminated while appends wait ---------------------------------

my @clients;
kill('STOP', $w) or die "cannot stop writer $w: $!";
my $ok = eval {
	@clients = map { start_append("wait-$_", '60s') } 1 .. 4;
	ok($node->poll_query_until('postgres', active_appends('wait-'), '4'),
		'A: four appends are waiting on the stopped writer');
	is(scalar(grep { running($_) } @clients), 4, 'A: none of them has returned');
	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($w)"),
		't', 'A: pg_terminate_backend(writer_pid)');
	1;
};
kill('CONT', $w);
die $@ unless $ok;

ok(deadline_loop(60, sub { !grep { running($_) } @clients }),
	'A: every waiting append ended within 60s');
ok(defined wait_append_ok('A'), 'A: appends work again after the writer was terminated');
isnt(writer_pid(), $w, 'A: a new writer runs');
for my $c (@clients)
{
	my $o = outcome($c);
	my $stored = stored_with_tag($c->{tag});
	note "A: $c->{tag}: $o";
	if ($o eq 'receipt')
	{
		chomp(my $line = $c->{out});
		is($stored, $line, "A: $c->{tag} got a receipt and is stored as receipted");
	}
	elsif ($o eq 'BP003')
	{
		is($stored, '', "A: $c->{tag} failed with BP003 and is not stored");
	}
	elsif ($o eq 'BP004')
	{
		ok(scalar(split /\n/, $stored) <= 1, "A: $c->{tag} failed with BP004, stored at most once");
	}
	else
	{
		fail("A: $c->{tag}: expected a receipt, BP003 or BP004, got $o");
	}
}
check_consistent('A');

# --- B: no writer at all: BP003 after writer_timeout --------------------------------

my $bg = $node->background_psql('postgres', on_error_stop => 0, timeout => 60);
$bg->set_query_timer_restart;
$bg->query_safe("\\set VERBOSITY verbose");
$bg->query_safe("SET batpak.writer_timeout = '1s'");
$w = writer_pid();
my $pm = $node->{_pid};
kill('STOP', $pm) or die "cannot stop postmaster $pm: $!";
$ok = eval {
	is($bg->query_safe("SELECT pg_terminate_backend($w)"), 't',
		'B: writer terminated while the postmaster cannot restart it');
	ok(deadline_loop(30, sub { my $s = proc_state($w); !defined $s || $s eq 'Z' }),
		'B: the writer has exited');
	$bg->{stderr} = '';
	my $t0 = time();
	my ($out) = $bg->query(
		q{SELECT global_sequence FROM batpak.append('nowriter', 'wd', 'k', '{"tag": "nowriter"}')});
	my $elapsed = time() - $t0;
	like($bg->{stderr}, qr/ERROR:\s+BP003:/, 'B: append without a writer fails with BP003');
	is($out, '', 'B: and returns no receipt');
	ok($elapsed < 30, sprintf('B: it failed after %.1fs (writer_timeout 1s), no hang', $elapsed));
	1;
};
kill('CONT', $pm);
die $@ unless $ok;
$bg->quit;

ok(defined wait_append_ok('B'), 'B: appends work again once the postmaster restarted the writer');
is(stored_with_tag('nowriter'), '', 'B: the append that got BP003 is not in the store');
check_consistent('B');

# --- C: a waiting append can be cancelled -------------------------------------------

$w = writer_pid();
my $c;
kill('STOP', $w) or die "cannot stop writer $w: $!";
$ok = eval {
	$c = start_append('cancel-1', '60s');
	ok($node->poll_query_until('postgres', active_appends('cancel-1'), '1'),
		'C: append waiting on the stopped writer');
	is( $node->safe_psql('postgres',
			q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
			   WHERE pid <> pg_backend_pid() AND query LIKE '%batpak.append(''cancel-1%'}),
		't', 'C: pg_cancel_backend');
	ok(deadline_loop(30, sub { !running($c) }), 'C: the cancelled append returned within 30s');
	1;
};
kill('CONT', $w);
die $@ unless $ok;
my $o = outcome($c);
ok($o eq '57014' || $o eq 'BP004', "C: cancelled append fails with 57014 or BP004 (got $o)");
ok(defined wait_append_ok('C'), 'C: the writer serves appends after the cancel');
if ($o eq '57014')
{
	is(stored_with_tag('cancel-1'), '', 'C: the cancelled append was never written');
}
else
{
	ok(scalar(split /\n/, stored_with_tag('cancel-1')) <= 1, 'C: written at most once');
}
check_consistent('C');

# --- E: a query cancel does not stop the writer or the notifier ----------------------
#
# pg_cancel_backend on either worker used to raise "canceling statement due
# to user request" at its next CHECK_FOR_INTERRUPTS and make it exit.  The
# append right after the cancel wakes the writer (and then the notifier) and
# takes each of them through its loop's CHECK_FOR_INTERRUPTS, so a worker
# that still honoured the cancel would be gone by the time it returns.

$w = writer_pid();
# the notifier idle (nothing left to announce), so that the cancel reaches it
# between notifications, which is what this part is about
ok(deadline_loop(30,
		sub { $node->safe_psql('postgres',
				'SELECT notified_sequence = visible_sequence FROM batpak.stats') eq 't' }),
	'E: the notifier has announced everything');
my $notifier = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'batpak notifier'});
like($notifier, qr/^\d+$/, 'E: the notifier is in pg_stat_activity');
my $elog = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($w), pg_cancel_backend($notifier)"),
	't|t', 'E: both workers were sent a query cancel');
my $eseq = $node->safe_psql('postgres',
	q{SELECT global_sequence FROM batpak.append('cancel-probe', 'wd', 'k', '{}')});
like($eseq, qr/^\d+$/, 'E: the append after the cancel got a receipt');
ok(deadline_loop(30,
		sub { $node->safe_psql('postgres', 'SELECT notified_sequence FROM batpak.stats') >= $eseq }),
	'E: the notifier announced the append');
is(writer_pid(), $w, 'E: the same writer serves');
is( $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'batpak notifier'}),
	$notifier, 'E: the same notifier runs');
is($node->safe_psql('postgres', 'SELECT state FROM batpak.stats'), 'ready', 'E: the writer is ready');
ok(!$node->log_contains(qr/canceling statement due to user request/, $elog),
	'E: no worker logged the cancel as an error');

# --- D: SIGKILL of the writer reinitializes the cluster --------------------------------

my $count_before = $node->safe_psql('postgres', 'SELECT count(*) FROM batpak.read_all()');
$w = writer_pid();
my $logpos = -s $node->logfile;
kill('STOP', $w) or die "cannot stop writer $w: $!";
@clients = map { start_append("crash-$_", '60s') } 1 .. 3;
my $waiting = $node->poll_query_until('postgres', active_appends('crash-'), '3');
kill('KILL', $w);
ok($waiting, 'D: three appends were waiting on the stopped writer when it was killed');
ok(deadline_loop(60, sub { !grep { running($_) } @clients }),
	'D: the waiting appends ended within 60s');
for my $cl (@clients)
{
	my $oc = outcome($cl);
	isnt($oc, 'receipt', "D: $cl->{tag} got no receipt");
}
ok(wait_append_ok('D'), 'D: appends work after the cluster reinitialized');
ok($node->log_contains(qr/\(PID $w\) was terminated by signal 9/, $logpos),
	'D: the postmaster logged the writer\'s death');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM batpak.read_all() WHERE payload->>'tag' LIKE 'crash-%'}),
	'0', 'D: none of the appends the killed writer never took is stored');
cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM batpak.read_all()'),
	'>', $count_before, 'D: the probe after the crash was stored');
check_consistent('D');

$node->stop('fast');
done_testing();
