# 011_consumers.pl
#
# Consumers: the notifier's NOTIFY batpak and durable cursors.
#
#   1. a real LISTEN client (test/t/listen.py, psycopg 3) receives ranges
#      {"from_sequence": a, "to_sequence": b} that together cover every
#      global sequence appended (rolled-back ones included), disjoint and in
#      order, ending at the visible frontier, while several clients append in
#      transactions (committed and rolled back), in immediate mode and in
#      batches;
#   2. a failing NOTIFY (batpak.inject_fault = 'notify') fails no append, is
#      counted and logged, and the next notification covers the failed range;
#   3. a listener that cannot consume (idle in a transaction) slows no append;
#   6. cursor_wait wakes at once on a matching event, not on another one, and
#      can be cancelled (57014);
#   5. a consumer group of 4 cursors over 10,000 events of 100 entities: each
#      event reaches exactly one member, each entity one member
#      (entity_group), in entity order;
#   4. an exactly-once consumer (cursor_read and the side effect in one
#      transaction) across a kill -9 of the postmaster under load: the
#      consumed rows are exactly the events read_all returns.
#
# Every wait is a bounded loop on a condition.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use IPC::Run;
use JSON::PP ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $python = python_with_psycopg();

my $node = new_batpak_node('consumers', "batpak.writer_timeout = '5s'\n");
my $tmp  = PostgreSQL::Test::Utils::tempdir;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub stats
{
	my (@cols) = @_;
	return sql('SELECT ' . join(', ', @cols) . ' FROM batpak.stats');
}

# Run a psql script file in the background; returns a hashref with the
# harness h and the outputs out, err.
sub start_script
{
	my ($name, $text, %opt) = @_;
	my $file = "$tmp/$name.sql";
	open(my $fh, '>', $file) or die "cannot write $file: $!";
	print $fh $text;
	close $fh;
	my %c = (name => $name, out => '', err => '');
	$c{h} = IPC::Run::start(
		[
			'psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
			'-d', $node->connstr('postgres') . " application_name=$name",
			'-f', $file
		],
		'<', '/dev/null', '>', \$c{out}, '2>', \$c{err});
	return \%c;
}

# Wait (bounded) until every client has ended; true if all did.
sub wait_clients
{
	my ($seconds, @clients) = @_;
	my $done = deadline_loop($seconds,
		sub { !grep { harness_running($_->{h}) } @clients });
	$_->{h}->finish for grep { !harness_running($_->{h}) } @clients;
	return $done;
}

# --- the LISTEN client ---------------------------------------------------------

# Start test/t/listen.py; wait (bounded) until it listens.
sub start_listener
{
	my %l = (in => '', out => '', err => '', notes => [], parsed => 0);
	$l{h} = IPC::Run::start(
		[ $python, "$FindBin::RealBin/listen.py", $node->connstr('postgres'), 'batpak', '240' ],
		'<', \$l{in}, '>', \$l{out}, '2>', \$l{err});
	ok(deadline_loop(30, sub { harness_running($l{h}); $l{out} =~ /^ready \d+$/m }),
		'listener: connected and listening')
	  or diag("listener stderr: $l{err}");
	($l{pid}) = $l{out} =~ /^ready (\d+)$/m;
	return \%l;
}

# The notifications a listener received so far: [from, to, payload] in
# arrival order.  A payload that is not exactly
# {"from_sequence": a, "to_sequence": b} with integers a <= b is kept as
# [undef, undef, payload].
sub notes
{
	my ($l) = @_;
	harness_running($l->{h});
	my @lines = split /\n/, $l->{out}, -1;
	pop @lines;    # an unfinished line stays for later
	for my $line (@lines[ $l->{parsed} .. $#lines ])
	{
		next unless $line =~ /^notify \d+ (\S+) (.*)$/;
		my ($channel, $payload) = ($1, $2);
		my $j = eval { JSON::PP::decode_json($payload) };
		if (   $channel eq 'batpak'
			&& ref $j eq 'HASH'
			&& join(',', sort keys %$j) eq 'from_sequence,to_sequence'
			&& $j->{from_sequence} =~ /^\d+$/
			&& $j->{to_sequence} =~ /^\d+$/
			&& $j->{from_sequence} <= $j->{to_sequence})
		{
			push @{ $l->{notes} }, [ $j->{from_sequence}, $j->{to_sequence}, $payload ];
		}
		else
		{
			push @{ $l->{notes} }, [ undef, undef, "$channel $payload" ];
		}
	}
	$l->{parsed} = @lines;
	return @{ $l->{notes} };
}

sub last_to
{
	my ($l) = @_;
	my @n = notes($l);
	return @n ? ($n[-1][1] // -1) : 0;
}

# Problems with a listener's notifications: malformed payloads, ranges that
# do not start right after the previous one.  The first must start at $start.
sub range_problems
{
	my ($l, $start) = @_;
	my @bad;
	my $expect = $start;
	for my $n (notes($l))
	{
		my ($from, $to, $payload) = @$n;
		if (!defined $from) { push @bad, "malformed: $payload"; next; }
		push @bad, "from $from, expected $expect" if $from != $expect;
		$expect = $to + 1;
	}
	return @bad;
}

sub stop_listener
{
	my ($l) = @_;
	$l->{in} .= "quit\n";
	ok(deadline_loop(30, sub { !harness_running($l->{h}) }), 'listener: ended');
	$l->{h}->finish;
	like($l->{out}, qr/^quit$/m, 'listener: it ended on our request');
	is($l->{err}, '', 'listener: no error output');
	return;
}

my $listener = start_listener();
is(sql(qq{SELECT backend_type, state FROM pg_stat_activity WHERE pid = $listener->{pid}}),
	'client backend|idle', 'listener: its backend is idle');

# --- 1. every sequence announced, once, in order -------------------------------

# 300 appends from 4 clients, 264 of them visible in the end:
#   n-a: 40 transactions of 2 appends, every 5th rolled back (64 visible);
#   n-b: immediate mode, 80 appends, a third of them in transactions that roll
#        back (visible all the same);
#   n-c: 16 batches of 5, transactional, every 4th rolled back (60 visible);
#   n-d: 60 autocommit transactional appends, every 10th in immediate mode.
# Each receipt is printed as V<global sequence> when the event must end up
# visible, H<global sequence> when it is rolled back.
my %script;
$script{a} = '';
for my $t (1 .. 40)
{
	my ($end, $tag) = $t % 5 == 0 ? ('ROLLBACK', 'H') : ('COMMIT', 'V');
	$script{a} .= "BEGIN;\n"
	  . qq{SELECT '$tag' || global_sequence FROM batpak.append('n-a-${\($t % 5)}', 'n', 'k', '{"t": $t}');\n}
	  . qq{SELECT '$tag' || global_sequence FROM batpak.append('n-a-x$t', 'n', 'k', '{"t": $t}');\n}
	  . "$end;\n";
}
$script{b} = "SET batpak.transactional = off;\n";
for my $t (1 .. 80)
{
	my $stmt = qq{SELECT 'V' || global_sequence FROM batpak.append('n-b-${\($t % 7)}', 'n', 'k', '{"t": $t}');\n};
	$script{b} .= $t % 3 == 0 ? "BEGIN;\n$stmt" . "ROLLBACK;\n" : $stmt;
}
$script{c} = '';
for my $t (1 .. 16)
{
	my $batch = sub {
		"SELECT '$_[0]' || r.global_sequence FROM batpak.append_batch(ARRAY(SELECT ROW("
		  . qq{'n-c-' || (i % 3), 'n', 'batch', jsonb_build_object('t', $t, 'i', i),}
		  . " NULL, NULL, NULL, NULL, NULL)::batpak.new_event FROM generate_series(1, 5) i)) r;\n";
	};
	$script{c} .= $t % 4 == 0 ? "BEGIN;\n" . $batch->('H') . "ROLLBACK;\n" : $batch->('V');
}
$script{d} = '';
for my $t (1 .. 60)
{
	my $stmt = qq{SELECT 'V' || global_sequence FROM batpak.append('n-d-${\($t % 4)}', 'n', 'k', '{"t": $t}');\n};
	$script{d} .= $t % 10 == 0
	  ? "SET batpak.transactional = off;\n${stmt}RESET batpak.transactional;\n"
	  : $stmt;
}
my @clients = map { start_script("n-$_", $script{$_}) } qw(a b c d);
ok(wait_clients(60, @clients), 'notify: the 4 clients ended');
my (@receipts, @visible);
for my $c (@clients)
{
	is($c->{err}, '', "notify: client $c->{name} saw no error");
	for my $line (split /\n/, $c->{out})
	{
		next unless $line =~ /^([VH])(\d+)$/;
		push @receipts, $2;
		push @visible, $2 if $1 eq 'V';
	}
}
is(join(',', sort { $a <=> $b } @receipts), join(',', 1 .. 300),
	'notify: 300 receipts, global sequences 1..300');
is(scalar(@visible), 264, 'notify: 264 of them not rolled back');

ok(deadline_loop(30, sub { stats('visible_sequence') eq '300' }),
	'notify: the visible frontier reaches 300 (rolled-back sequences included)');
is(sql('SELECT string_agg(global_sequence::text, \',\' ORDER BY global_sequence) FROM batpak.read_all()'),
	join(',', sort { $a <=> $b } @visible),
	'notify: read_all returns exactly the 264 events that were not rolled back');
ok(deadline_loop(30, sub { last_to($listener) >= 300 }),
	'notify: the listener was told about sequence 300')
  or diag("listener output: $listener->{out}\nstderr: $listener->{err}");
ok(deadline_loop(30, sub { stats('notified_sequence') eq '300' }),
	'notify: stats.notified_sequence reaches the visible frontier');
{
	my @n = notes($listener);
	is_deeply([ range_problems($listener, 1) ], [],
		'notify: the ranges start at 1 and each starts right after the previous one');
	is($n[-1][1], 300, 'notify: the last range ends at the visible frontier, 300');
	my %covered;
	for my $r (@n) { $covered{$_}++ for $r->[0] .. $r->[1]; }
	is(join(',', grep { ($covered{$_} // 0) != 1 } 1 .. 300), '',
		'notify: every sequence 1..300 is in exactly one range');
	is(stats('notifications', 'notifications_failed', 'visible_sequence', 'notified_sequence'),
		scalar(@n) . '|0|300|300',
		'notify: stats count every notification the listener received, none failed');
	cmp_ok(scalar(@n), '>=', 1, 'notify: ' . scalar(@n) . ' notifications for 300 appends');
}

# --- 2. a failing NOTIFY ---------------------------------------------------------

my $logpos = -s $node->logfile;
sql(q{ALTER SYSTEM SET batpak.inject_fault = 'notify'; SELECT pg_reload_conf();});
ok(deadline_loop(30, sub { sql('SHOW batpak.inject_fault') eq 'notify' }),
	'fault: the server reloaded the setting');

# Append 5 events at a time until a NOTIFY fails: until the notifier has read
# the new setting it may still announce some of them.
my @fault_seqs;
ok( deadline_loop(
		30,
		sub {
			push @fault_seqs, split /\n/, sql(join('',
				map { qq{SELECT global_sequence FROM batpak.append('fault-$_', 'n', 'k', '{}');\n} } 1 .. 5));
			my $last = $fault_seqs[-1];
			deadline_loop(10,
				sub { stats('notifications_failed') > 0 || stats('notified_sequence') >= $last });
			return stats('notifications_failed') > 0;
		}),
	'fault: stats.notifications_failed grows');
my $fault_last = $fault_seqs[-1];
is(join(',', @fault_seqs), join(',', 301 .. $fault_last),
	"fault: the appends succeed (sequences 301..$fault_last)");
ok(deadline_loop(30, sub { stats('visible_sequence') == $fault_last }),
	'fault: the events are visible');

# Once a NOTIFY failed, none succeeds: notified_sequence is the end of the
# last good notification.  The notifier retries every second and fails
# again, now covering everything appended.
my $last_good = stats('notified_sequence');
cmp_ok($last_good, '<', $fault_last, "fault: notified_sequence stays at $last_good");
my $fault_re = qr/WARNING:  batpak notifier could not notify sequences ${\($last_good + 1)} to $fault_last: injected fault: notify/;
ok(deadline_loop(30, sub { $node->log_contains($fault_re, $logpos) }),
	'fault: the server log names the failed range, ' . ($last_good + 1) . " to $fault_last")
  or diag(slurp_file($node->logfile, $logpos));
ok(deadline_loop(30, sub { last_to($listener) >= $last_good }),
	"fault: the listener got the notifications up to $last_good");
is(last_to($listener), $last_good, 'fault: and no further one');
is(stats('notified_sequence'), $last_good, 'fault: notified_sequence has not moved');
cmp_ok(stats('notifications_failed'), '>=', 2, 'fault: the retry failed too');

sql(q{ALTER SYSTEM RESET batpak.inject_fault; SELECT pg_reload_conf();});
my $after_fault = $fault_last + 1;
is(sql(q{SELECT global_sequence FROM batpak.append('fault-after', 'n', 'k', '{}')}), $after_fault,
	'fault: one more append after the reset');
ok(deadline_loop(30, sub { last_to($listener) >= $after_fault }),
	'fault: the listener is told about it')
  or diag("listener output: $listener->{out}");
{
	my @n = notes($listener);
	my @after = grep { $_->[1] > $last_good } @n;
	ok(@after >= 1 && $after[0][0] == $last_good + 1 && $after[0][1] >= $fault_last,
		"fault: the next notification covers the failed range: from "
		  . ($last_good + 1) . " to at least $fault_last")
	  or diag(explain(\@after));
	is_deeply([ range_problems($listener, 1) ], [], 'fault: still no gap and no overlap in the ranges');
	is(stats('notified_sequence', 'visible_sequence', 'notifications'),
		"$after_fault|$after_fault|" . scalar(@n), 'fault: stats agree with the listener again');
}

# --- 3. a listener that cannot consume slows no append -------------------------

my $lag = $node->background_psql('postgres', on_error_stop => 1);
my $lag_pid = $lag->query_safe('SELECT pg_backend_pid()');
$lag->query_safe('LISTEN batpak');
$lag->query_safe('BEGIN');
$lag->query_safe('SELECT 1');
is(sql("SELECT state FROM pg_stat_activity WHERE pid = $lag_pid"), 'idle in transaction',
	'lag: the second listener is idle in a transaction');
my $notifications_before = stats('notifications');
my $t0 = time();
my @lag_seqs = split /\n/, sql(join('',
	map { qq{SELECT global_sequence FROM batpak.append('lag-${\($_ % 10)}', 'n', 'k', '{"i": $_}');\n} }
	  1 .. 200));
my $lag_secs = time() - $t0;
my ($lag_first, $lag_last) = ($after_fault + 1, $after_fault + 200);
is(join(',', @lag_seqs[0, -1]) . '|' . scalar(@lag_seqs), "$lag_first,$lag_last|200",
	"lag: 200 appends succeed (in ${\sprintf('%.2f', $lag_secs)} s)");
cmp_ok($lag_secs, '<', 30, 'lag: within 30 s');
ok(deadline_loop(30, sub { stats('notified_sequence') == $lag_last }),
	'lag: the notifier announces them all');
cmp_ok(stats('notifications'), '>', $notifications_before, 'lag: the notification counter advanced');
ok(deadline_loop(30, sub { last_to($listener) >= $lag_last }), 'lag: the first listener got them');
is(sql("SELECT state FROM pg_stat_activity WHERE pid = $lag_pid"), 'idle in transaction',
	'lag: the second listener is still in its transaction');
# once it ends the transaction, it receives what was queued for it (psql
# prints notifications after a command)
my $lag_out = $lag->query_safe('COMMIT');
my @lag_ranges;
ok( deadline_loop(
		30,
		sub {
			$lag_out .= $lag->query_safe('SELECT 1');
			@lag_ranges = ();
			while ($lag_out =~ /Asynchronous notification "batpak" with payload "\{"from_sequence": (\d+), "to_sequence": (\d+)\}"/g)
			{
				push @lag_ranges, [ $1, $2 ];
			}
			return @lag_ranges && $lag_ranges[-1][1] >= $lag_last;
		}),
	"lag: after its COMMIT the second listener receives the queued notifications, up to $lag_last")
  or diag($lag_out);
{
	my ($expect, @bad) = ($lag_first);
	for my $r (@lag_ranges)
	{
		push @bad, "$r->[0]-$r->[1]" if $r->[0] != $expect || $r->[1] < $r->[0];
		$expect = $r->[1] + 1;
	}
	is(join(',', @bad) . '|' . ($expect - 1), "|$lag_last",
		"lag: its ranges run from $lag_first to $lag_last without gap or overlap");
}
$lag->quit;
is_deeply([ range_problems($listener, 1) ], [], 'lag: the first listener\'s ranges are still contiguous');

stop_listener($listener);

# --- 6. cursor_wait --------------------------------------------------------------

my $vis = stats('visible_sequence');
sql(qq{SELECT batpak.cursor_create('w', entity_prefix => 'w-', start_after => $vis)});
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_safe('\set VERBOSITY verbose');
my $waiter_pid = $waiter->query_safe('SELECT pg_backend_pid()');
my $wait_sql = q{SELECT pg_stat_activity.wait_event_type || '/' || wait_event FROM pg_stat_activity}
  . qq{ WHERE pid = $waiter_pid AND query LIKE '%cursor_wait%'};
$waiter->{stdin} .= qq{SELECT batpak.cursor_wait('w', 30000);\n\\echo waited\n};
ok(deadline_loop(30, sub { harness_running($waiter->{run}); sql($wait_sql) eq 'Extension/Extension' }),
	'wait: cursor_wait sleeps (wait event Extension)');
sql(q{SELECT batpak.append('x-other', 'n', 'k', '{}')});
is(sql(q{SELECT batpak.cursor_wait('w', 0)}), 'f',
	'wait: an event the cursor does not match: cursor_wait(0) is false');
is(sql($wait_sql), 'Extension/Extension', 'wait: and the waiting cursor_wait goes on waiting');
$t0 = time();
sql(q{SELECT batpak.append('w-1', 'n', 'k', '{}')});
ok(deadline_loop(30, sub { harness_running($waiter->{run}); $waiter->{stdout} =~ /waited/ }),
	'wait: the waiting cursor_wait returned');
my $woke = time() - $t0;
is($waiter->{stdout}, "t\nwaited\n", 'wait: it returned true');
cmp_ok($woke, '<', 5, "wait: within 5 s of the append (took ${\sprintf('%.3f', $woke)} s)");
$waiter->{stdout} = '';
is($waiter->query_safe(q{SELECT entity FROM batpak.cursor_read('w')}), 'w-1',
	'wait: cursor_read returns the matching event only');

$waiter->{stderr} = '';
$waiter->{stdin} .= qq{SELECT batpak.cursor_wait('w', 30000);\n\\echo cancelled\n};
ok(deadline_loop(30, sub { harness_running($waiter->{run}); sql($wait_sql) eq 'Extension/Extension' }),
	'cancel: cursor_wait sleeps again');
$t0 = time();
is(sql("SELECT pg_cancel_backend($waiter_pid)"), 't', 'cancel: pg_cancel_backend');
ok(deadline_loop(30, sub { harness_running($waiter->{run}); $waiter->{stdout} =~ /cancelled/ }),
	'cancel: cursor_wait ended');
cmp_ok(time() - $t0, '<', 5, 'cancel: within 5 s');
like($waiter->{stderr}, qr/ERROR:  57014: canceling statement due to user request/,
	'cancel: it failed with 57014');
$waiter->{stdout} = $waiter->{stderr} = '';
is($waiter->query_safe(q{SELECT batpak.cursor_wait('w', 0)}), 'f',
	'cancel: the session works on; nothing new for the cursor');
$waiter->quit;
is(sql(q{SELECT position FROM batpak.cursors WHERE name = 'w'}), $vis + 2,
	'cancel: the cursor stays after the event it delivered');

# --- 5. a consumer group ---------------------------------------------------------

my $g_start = stats('visible_sequence');
sql(join('',
	map { qq{SELECT batpak.cursor_create('g$_', start_after => $g_start, group_member => $_, group_size => 4);\n} }
	  0 .. 3));
for my $b (0 .. 9)
{
	my $from = $b * 1000 + 1;
	my $to   = $from + 999;
	is( sql(q{SELECT count(*), min(r.global_sequence), max(r.global_sequence) FROM batpak.append_batch(ARRAY(}
			  . q{SELECT ROW('grp-' || (i % 100), 'grp', 'k', jsonb_build_object('i', i), NULL, NULL, NULL, NULL, NULL)::batpak.new_event}
			  . qq{ FROM generate_series($from, $to) i)) r}),
		'1000|' . ($g_start + $from) . '|' . ($g_start + $to),
		"group: batch $b of 1,000 events");
}
my (%member_of_seq, %member_of_entity, %entity_seqs, @dup, @multi);
my @member_events = (0) x 4;
for my $m (0 .. 3)
{
	my $reads = 0;
	while (1)
	{
		my $out = sql(qq{SELECT global_sequence, entity, entity_sequence FROM batpak.cursor_read('g$m', 500)});
		last if $out eq '';
		die "group: member $m never runs dry" if ++$reads > 25;    # 12,500 events
		for my $row (split /\n/, $out)
		{
			my ($gs, $entity, $es) = split /\|/, $row;
			push @dup, $gs if exists $member_of_seq{$gs};
			$member_of_seq{$gs} = $m;
			push @multi, $entity
			  if exists $member_of_entity{$entity} && $member_of_entity{$entity} != $m;
			$member_of_entity{$entity} = $m;
			push @{ $entity_seqs{$entity} }, $es;
			$member_events[$m]++;
		}
	}
}
is(scalar(keys %member_of_seq), 10_000, 'group: the members got 10,000 events');
is_deeply(\@dup, [], 'group: no event reached two members');
is(join(',', grep { !exists $member_of_seq{$_} } $g_start + 1 .. $g_start + 10_000), '',
	'group: every sequence of the batches reached a member');
is_deeply(\@multi, [], 'group: every entity is consumed by one member only');
is(scalar(keys %member_of_entity), 100, 'group: 100 entities');
my %expected_member = map { split /\|/ }
  split /\n/, sql(q{SELECT 'grp-' || i, batpak.entity_group('grp-' || i, 4) FROM generate_series(0, 99) i});
is(join(',', map { "$_:$member_of_entity{$_}" } grep { $member_of_entity{$_} != ($expected_member{$_} // -1) }
		sort keys %member_of_entity),
	'', 'group: each entity went to member entity_group(entity, 4)');
is(join(',', grep { join(',', @{ $entity_seqs{$_} }) ne join(',', 1 .. 100) } sort keys %entity_seqs), '',
	'group: each entity\'s events arrived in order, entity sequences 1..100');
is(join(',', @member_events),
	join(',', map { my $m = $_; 100 * grep { $_ == $m } values %expected_member } 0 .. 3),
	'group: each member got 100 events per entity of its own');
is(sql(q{SELECT string_agg(name || ':' || position || ':' || lag || ':' || gaps, ',' ORDER BY name) FROM batpak.cursors WHERE name LIKE 'g_'}),
	join(',', map { "g$_:" . ($g_start + 10_000) . ':0:0' } 0 .. 3),
	'group: every member is at the end, no lag, no gaps');

# --- 4. exactly once across kill -9 ---------------------------------------------

sql(q{CREATE TABLE consumed (seq bigint PRIMARY KEY, entity text, entity_sequence bigint);
      CREATE TABLE consumer_stop ();
      SELECT batpak.cursor_create('eo');});

# Work units of 4 writers over entities eo-00..eo-19; each unit prints the
# receipts (A|global|entity sequence) and then U|unit once it is done.
# Transactions take their entities in name order (no deadlock).
my %units;
for my $u (1 .. 250)
{
	my @e = sort map { sprintf('eo-%02d', $_ % 20) } ($u, $u + 7);
	my $end = $u % 9 == 0 ? 'ROLLBACK' : 'COMMIT';
	push @{ $units{t} }, "BEGIN;\n"
	  . join('', map { qq{SELECT 'A|' || global_sequence || '|' || entity_sequence FROM batpak.append('$_', 'eo', 'pair', '{"u": $u}');\n} } @e)
	  . "$end;\nSELECT 'U|$u|$end';\n";
}
for my $u (1 .. 500)
{
	my $e = sprintf('eo-%02d', ($u * 3) % 20);
	push @{ $units{i} }, qq{SELECT 'A|' || global_sequence || '|' || entity_sequence FROM batpak.append('$e', 'eo', 'single', '{"u": $u}');\n}
	  . "SELECT 'U|$u|COMMIT';\n";
}
for my $u (1 .. 50)
{
	push @{ $units{b} }, q{SELECT 'A|' || global_sequence || '|' || entity_sequence FROM batpak.append_batch(ARRAY(}
	  . qq{SELECT ROW('eo-' || to_char((i + $u) % 20, 'FM00'), 'eo', 'batch', jsonb_build_object('u', $u), NULL, NULL, NULL, NULL, NULL)::batpak.new_event}
	  . " FROM generate_series(1, 10) i));\nSELECT 'U|$u|COMMIT';\n";
}
for my $u (1 .. 100)
{
	my $end = $u % 6 == 0 ? 'ROLLBACK' : 'COMMIT';
	push @{ $units{x} }, "BEGIN;\n"
	  . q{SELECT 'A|' || global_sequence || '|' || entity_sequence FROM batpak.append_batch(ARRAY(}
	  . qq{SELECT ROW('eo-' || to_char(i * 4 + $u % 4, 'FM00'), 'eo', 'txbatch', jsonb_build_object('u', $u), NULL, NULL, NULL, NULL, NULL)::batpak.new_event}
	  . " FROM generate_series(0, 4) i));\n$end;\nSELECT 'U|$u|$end';\n";
}
my %prologue = (t => '', i => "SET batpak.transactional = off;\n",
	b => "SET batpak.transactional = off;\n", x => '');

my $consumer_sql = '';
for (1 .. 5000)
{
	$consumer_sql .= q{SELECT batpak.cursor_wait('eo', 1000) AS woke, EXISTS (SELECT FROM consumer_stop) AS stop \gset
\if :stop
\q
\endif
BEGIN;
INSERT INTO consumed SELECT global_sequence, entity, entity_sequence FROM batpak.cursor_read('eo', 50);
COMMIT;
};
}

# acknowledged receipts ("global|entity sequence") and the last unit done,
# per writer
my (%acked, %last_unit);
sub collect_acks
{
	my ($w, $out) = @_;
	my @pending;
	for my $line (split /\n/, $out)
	{
		if ($line =~ /^A\|(\d+)\|(\d+)$/) { push @pending, "$1|$2"; }
		elsif ($line =~ /^U\|(\d+)\|(\w+)$/)
		{
			$acked{$_} = $w for ($2 eq 'COMMIT' ? @pending : ());
			@pending = ();
			$last_unit{$w} = $1;
		}
	}
	return;
}

# The consumer first works off the 10,000-odd events of the sections above,
# then follows the writers.
my $consumer = start_script('eo-consumer-1', $consumer_sql);
my $backlog = stats('visible_sequence');
ok( deadline_loop(
		60,
		sub {
			harness_running($consumer->{h});
			sql(q{SELECT position FROM batpak.cursors WHERE name = 'eo'}) == $backlog;
		}),
	"eo: the consumer caught up with the $backlog sequences already there")
  or diag("consumer stderr: $consumer->{err}");
my %writer = map {
	my $w = $_;
	($w => start_script("eo-$w", $prologue{$w} . join('', @{ $units{$w} })))
} qw(t i b x);

my $kill_after = 300 + int(rand(300));
ok( deadline_loop(
		60,
		sub {
			my $n = 0;
			for my $c (values %writer)
			{
				harness_running($c->{h});
				$n += () = $c->{out} =~ /^U\|/mg;
			}
			harness_running($consumer->{h});
			return $n >= $kill_after;
		}),
	"eo: the writers finished $kill_after of 900 units before the crash");
ok(harness_running($consumer->{h}), 'eo: the consumer is still running at the crash')
  or diag("consumer stderr: $consumer->{err}");

ok(crash_node($node) >= 2, 'eo: postmaster and children killed');
$node->start;
ok(wait_state($node, 'ready'), 'eo: writer ready after the crash');
# the notifier starts over at the horizon the new writer recovered: nothing
# recovered is announced, and notified_sequence says so at once
ok( deadline_loop(30,
		sub { sql('SELECT notified_sequence = visible_sequence FROM batpak.stats') eq 't' }),
	'eo: notified_sequence is the recovered frontier after the restart');
my ($consumed_before, $position_before) =
  split /\|/, sql(q{SELECT (SELECT count(*) FROM consumed), position FROM batpak.cursors WHERE name = 'eo'});
cmp_ok($position_before, '>', $backlog,
	"eo: the consumer had followed the writers (it committed position $position_before, "
	  . "$consumed_before events consumed)");
ok(wait_clients(60, values %writer, $consumer), 'eo: every client ended after the crash');
unlike($consumer->{err}, qr/duplicate key|ERROR:  (?!57P01|08)/,
	'eo: the consumer failed only by losing its connection')
  or diag($consumer->{err});
for my $w (sort keys %writer)
{
	collect_acks($w, $writer{$w}{out});
	unlike($writer{$w}{err}, qr/ERROR:  (?!57P01|08)/, "eo: writer $w failed only by losing its connection")
	  or diag($writer{$w}{err});
}

# The rest of the units, with a new LISTEN client and two consumers of the
# one cursor at once (each event must reach one of them: the primary key of
# consumed fails a consumer that is given an event twice).
my $restart_seq = stats('visible_sequence');
my $listener2 = start_listener();
my %writer2 = map {
	my $w = $_;
	my $from = ($last_unit{$w} // 0);    # the unit in flight is run again
	($w => start_script("eo2-$w", $prologue{$w} . join('', @{ $units{$w} }[ $from .. $#{ $units{$w} } ])))
} qw(t i b x);
my @consumers2 = map { start_script("eo-consumer-2$_", $consumer_sql) } qw(a b);
ok(wait_clients(60, values %writer2), 'eo: the writers finished after the restart');
for my $w (sort keys %writer2)
{
	is($writer2{$w}{err}, '', "eo: writer $w saw no error after the restart");
	collect_acks($w, $writer2{$w}{out});
	is($last_unit{$w}, scalar(@{ $units{$w} }), "eo: writer $w did all its units");
}
sql('INSERT INTO consumer_stop DEFAULT VALUES');
ok(wait_clients(30, @consumers2), 'eo: the two consumers stopped');
is($_->{err}, '', "eo: consumer $_->{name} saw no error") for @consumers2;

# the notifier after the crash: from what recovery found on
my $final_seq = stats('visible_sequence');
ok(deadline_loop(30, sub { last_to($listener2) >= $final_seq }),
	"eo: the new listener was told up to $final_seq");
is_deeply([ range_problems($listener2, $restart_seq + 1) ], [],
	'eo: its ranges start right after the sequences recovered (' . ($restart_seq + 1)
	  . ') and have no gap or overlap');
is(last_to($listener2), $final_seq, 'eo: and end at the visible frontier');
stop_listener($listener2);

# drain
my $drains = 0;
while (1)
{
	my $n = sql(q{BEGIN;
WITH c AS (INSERT INTO consumed SELECT global_sequence, entity, entity_sequence FROM batpak.cursor_read('eo', 50) RETURNING 1)
SELECT count(*) FROM c;
COMMIT;});
	last if $n == 0;
	die 'eo: the cursor never runs dry' if ++$drains > 1000;
}
is(sql(q{SELECT count(*) FROM batpak.cursor_read('eo')}) . '|' . sql(q{SELECT batpak.cursor_wait('eo', 0)}),
	'0|f', 'eo: the cursor is drained: cursor_read returns nothing, cursor_wait(0) is false');

my $total = sql('SELECT count(*) FROM batpak.read_all()');
is(sql('SELECT count(*) FROM consumed'), $total, "eo: consumed has as many rows as read_all ($total)");
is( sql(q{SELECT count(*) FROM consumed c FULL JOIN batpak.read_all() r ON r.global_sequence = c.seq
		   WHERE c.seq IS NULL OR r.global_sequence IS NULL
		      OR c.entity IS DISTINCT FROM r.entity OR c.entity_sequence IS DISTINCT FROM r.entity_sequence}),
	'0', 'eo: consumed is exactly what read_all returns');
my %consumed_rows = map { $_ => 1 } split /\n/, sql(q{SELECT seq || '|' || entity_sequence FROM consumed});
# every unit ended once with its U line (the one in flight at the crash ran
# again): the receipts of the committed ones are acknowledged
my $eo_committed = 2 * grep({ $_ % 9 != 0 } 1 .. 250) + 500 + 500 + 5 * grep({ $_ % 6 != 0 } 1 .. 100);
is(scalar(keys %acked), $eo_committed, "eo: $eo_committed distinct acknowledged receipts");
# an append in flight at the crash may or may not have happened; its unit ran
# again after the restart (at most 2 + 1 + 10 + 5 such events)
my $eo_events = sql(q{SELECT count(*) FROM batpak.read_all() WHERE scope = 'eo'});
ok($eo_events >= $eo_committed && $eo_events <= $eo_committed + 18,
	"eo: $eo_events events of the writers in the store, $eo_committed acknowledged");
is(join(',', grep { !$consumed_rows{$_} } sort keys %acked), '',
	'eo: every acknowledged receipt was consumed');
is( sql(q{SELECT count(*) FROM (SELECT entity_sequence,
		         row_number() OVER (PARTITION BY entity ORDER BY seq) AS rn FROM consumed) s
		   WHERE entity_sequence <> rn}),
	'0', 'eo: per entity the consumed entity sequences are 1..n');
is(sql(q{SELECT c.position = s.visible_sequence, c.lag, c.gaps = s.visible_sequence - }
		  . q{(SELECT count(*) FROM consumed) FROM batpak.cursors c, batpak.stats s WHERE c.name = 'eo'}),
	't|0|t', 'eo: the cursor is at the visible frontier and counted every rolled-back sequence as a gap');
is(sql('SELECT count(*) FROM batpak.verify_chain() WHERE NOT ok'), '0', 'eo: every chain verifies');

$node->stop;
done_testing();
