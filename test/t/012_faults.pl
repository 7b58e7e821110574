
# 012_faults.pl
#
# Injected I/O faults (batpak.inject_fault, superuser only).  A failed write
# or fdatasync never acknowledges an event: every call of the failed group
# gets 58030 (53100 for a full disk) naming the segment and offset, the
# writer exits, and before it (or its successor) serves again it overwrites
# everything written after its last successful sync with zeros.  So the
# events of a failed call are never visible, not even after a kill -9, and
# their bytes are not in the files.  With the fault set for the whole server
# (a full disk that stays full), every append fails with 53100 until the
# fault is gone, then appends work again.  A read held (read_pause) between
# its snapshot and a frame while the writer fails and is replaced fails with
# BP003; a crash in the middle of the discard (discard_crash) leaves a store
# that recovery cuts back to its last sync point.  A failed look-up of a
# transaction's status (xid_status) refuses its request and leaves the
# writer serving with no lock taken.  A cancel that falls between the
# writer's taking an append and its answer (answer_pause) says that the
# outcome is unknown in immediate mode, and that the rollback discards the
# append in transactional mode.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A long flush delay: an asynchronous append stays unsynced while the test
# looks at it (part 4 does not depend on it, it reads the sync point).
my $node = new_batpak_node('faults',
	"restart_after_crash = on\nbatpak.flush_delay = 10s\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub writer_pid { return sql('SELECT writer_pid FROM batpak.stats'); }

# Wait until a writer other than $old_pid is ready.
sub wait_new_writer
{
	my ($old_pid) = @_;
	return deadline_loop(
		60,
		sub {
			my $row = sql(q{SELECT state || '|' || coalesce(writer_pid, 0) FROM batpak.stats});
			my ($state, $pid) = split /\|/, $row;
			return $state eq 'ready' && $pid != $old_pid;
		});
}

# Bytes of every segment file, concatenated.
sub store_bytes
{
	my $all = '';
	$all .= slurp_file(segment_dir($node) . "/$_") for segment_files($node);
	return $all;
}

sub newest_segment
{
	my @files = segment_files($node);
	return segment_dir($node) . "/$files[-1]";
}

# After a failure: the store holds exactly the events it held before
# ($before: read_all_text), chains verify, the failed entity's bytes are in
# no file, the newest segment parses to the end of its data and is zero
# after it, and the next append takes the next sequence.
sub check_store
{
	my ($label, $before, $tag, $gaps) = @_;
	is(read_all_text($node), $before, "$label: the store holds exactly the events it held before");
	is(verify_report($node), expected_verify_report($node), "$label: chains verify");
	my $bytes = store_bytes();
	is(index($bytes, $tag), -1, "$label: no byte of the failed call is in the segment files");
	my $seg = parse_segment(newest_segment());
	my @bad = grep { !$_->{crc_ok} || !$_->{layout_ok} } @{ $seg->{frames} };
	is(scalar(@bad), 0, "$label: every frame of the newest segment is intact");
	ok($seg->{tail} eq 'zeros' || $seg->{tail} eq 'eof',
		"$label: the newest segment ends in zeros after its data ($seg->{tail})");
	my $zeros = substr(slurp_file(newest_segment()), $seg->{data_end});
	is($zeros =~ tr/\0//c, 0, "$label: nothing but zeros after the data");
	my $next = sql('SELECT coalesce(max(global_sequence), 0) + 1 FROM batpak.read_all()') + $gaps;
	is(sql(qq{SELECT global_sequence FROM batpak.append('after-$tag', 'f', 'k', '{}')}),
		$next, "$label: the next append takes the next sequence");
}

# --- 1. each fault, set in the session of the failing call --------------------

# some events first, in both modes, over two segments' worth of groups
sql(q{SET batpak.transactional = off;
      SELECT count(*) FROM generate_series(1, 20) i,
        LATERAL batpak.append('base-' || (i % 3), 'f', 'k', jsonb_build_object('i', i))});
sql(q{SELECT count(*) FROM generate_series(1, 10) i,
        LATERAL batpak.append('base-tx', 'f', 'k', jsonb_build_object('i', i))});

my %cases = (
	write => {
		state => '58030',
		msg => qr/^could not write segment 00000001\.seg at offset \d+: Input\/output error$/,
		discarded => 0,
	},
	partial_write => {
		state => '58030',
		msg => qr/^could not write segment 00000001\.seg at offset \d+: Input\/output error$/,
		discarded => 1,
	},
	fsync => {
		state => '58030',
		msg => qr/^could not fdatasync segment 00000001\.seg at offset \d+: Input\/output error$/,
		discarded => 1,
	},
	enospc => {
		state => '53100',
		msg => qr/^could not write segment 00000001\.seg at offset \d+: No space left on device$/,
		discarded => 1,
	},
);

# Each call sets the fault (FAULT) right before the append that must fail;
# the last field is how many global sequences the call uses up for good (a
# rolled-back transaction's events stay in the files as a gap).
my @calls = (
	[ 'append, immediate',
		q{SET batpak.transactional = off; SET batpak.inject_fault = 'FAULT';
		  SELECT batpak.append('TAG', 'f', 'k', '{"big": "%s"}')}, 0 ],
	[ 'append_batch',
		q{SET batpak.inject_fault = 'FAULT';
		  SELECT count(*) FROM batpak.append_batch(ARRAY[
			ROW('TAG', 'f', 'k', '{"n": 1}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
			ROW('TAG', 'f', 'k', '{"n": 2, "big": "%s"}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
			ROW('TAG-2', 'f', 'k', '{"n": 3}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])}, 0 ],
	[ 'transactional append',
		q{BEGIN; SELECT batpak.append('base-tx', 'f', 'k', '{}');
		  SET LOCAL batpak.inject_fault = 'FAULT';
		  SELECT batpak.append('TAG', 'f', 'k', '{"big": "%s"}'); COMMIT;}, 1 ],
);

for my $fault (sort keys %cases)
{
	my $c = $cases{$fault};
	for my $call (@calls)
	{
		my ($what, $sql, $gaps) = @$call;
		my $label = "$fault, $what";
		(my $tag = "fault-$fault-$what") =~ s/[ ,]+/-/g;
		my $before = read_all_text($node);
		my $pid = writer_pid();
		my $logpos = -s $node->logfile;
		$sql =~ s/TAG/$tag/g;
		$sql =~ s/FAULT/$fault/g;
		$sql = sprintf($sql, 'x' x 5000);    # a group of several pages

		my ($state, $msg) = sql_error($node, $sql);
		is($state // 'no error', $c->{state}, "$label: the call fails with $c->{state}");
		like($msg // '', $c->{msg}, "$label: the message names the segment and the cause");

		ok(wait_new_writer($pid), "$label: a new writer serves");
		my $log = slurp_file($node->logfile, $logpos);
		like($log, qr/batpak writer stops after an I\/O error: could not/,
			"$label: the writer logged why it stopped");
		if ($c->{discarded})
		{
			like($log,
				qr/batpak: discarded [1-9]\d* bytes of segment 00000001\.seg written after its last successful sync at offset \d+/,
				"$label: what was written after the last sync was discarded");
		}
		check_store($label, $before, $tag, $gaps);
	}
}

# --- 2. only a superuser sets it ------------------------------------------------

sql(q{CREATE ROLE plain LOGIN; GRANT USAGE ON SCHEMA batpak TO plain;});
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET batpak.inject_fault = 'write';",
		extra_params => [ '-U', 'plain' ]);
	like($err, qr/ERROR:\s+42501: permission denied to set parameter "batpak\.inject_fault"/,
		'a non-superuser cannot set batpak.inject_fault');
}

# --- 3. an asynchronous append waiting for its sync when a sync fails ---------

{
	my $before = read_all_text($node);
	my $r = sql(q{SET batpak.synchronous_commit = off; SET batpak.transactional = off;
	              SELECT global_sequence FROM batpak.append('async-victim', 'f', 'k', '{}')});
	my $pid = writer_pid();
	my $logpos = -s $node->logfile;
	my ($state) = sql_error($node,
		q{SET batpak.inject_fault = 'fsync'; SELECT batpak.append('async-fsync', 'f', 'k', '{}')});
	is($state // 'no error', '58030', 'async: the synchronous call fails');
	ok(wait_new_writer($pid), 'async: a new writer serves');
	my $log = slurp_file($node->logfile, $logpos);
	my ($sync_off) = $log =~ /written after its last successful sync at offset (\d+)/;
	ok(defined $sync_off, 'async: the discard was logged with the sync point');

	# the asynchronous event survives exactly if its frame was synced before
	my $seg = parse_segment(newest_segment());
	my $present = sql(q{SELECT count(*) FROM batpak.read_stream('async-victim')});
	my ($victim) = grep { ($_->{entity} // '') eq 'async-victim' } @{ $seg->{frames} };
	if ($present)
	{
		ok(defined $victim && $victim->{end} <= $sync_off,
			'async: the asynchronous event is kept: it was synced before the failure');
	}
	else
	{
		is(read_all_text($node), $before,
			'async: the unsynced asynchronous event was discarded with the failed group (documented)');
	}
	note "asynchronous event $r " . ($present ? 'kept' : 'discarded');
	is(index(store_bytes(), 'async-fsync'), -1, 'async: the failed call is not in the files');
}

# --- 4. a full disk for the whole server, until space returns ------------------

my %acked;     # entity => 1 for appends that returned a receipt
my %failed;    # entity => SQLSTATE
my $n = 0;
sub try_append
{
	my $ent = 'disk-' . ++$n;
	my ($state, $msg) = sql_error($node,
		qq{SET batpak.transactional = off; SET batpak.writer_timeout = 3000;
		   SELECT batpak.append('$ent', 'f', 'k', '{}')});
	if (defined $state)
	{
		$failed{$ent} = $state;
		# in the group that failed, or waiting in vain for a writer that
		# fails to write its recovery markers: both name the cause
		return $msg =~ /^(batpak writer is not available: it stopped after an I\/O error: )?could not write segment 00000001\.seg at offset \d+: No space left on device$/
		  ? $state : "$state: $msg";
	}
	$acked{$ent} = 1;
	return 'ok';
}

sql(q{ALTER SYSTEM SET batpak.inject_fault = 'enospc'; SELECT pg_reload_conf();});
ok(deadline_loop(60, sub { try_append() eq '53100' }),
	'disk full: appends fail with 53100 once the writer has read the setting');
is(try_append(), '53100', 'disk full: the restarted writer fails the next append too');
is(try_append(), '53100', 'disk full: and the one after');
sql(q{ALTER SYSTEM RESET batpak.inject_fault; SELECT pg_reload_conf();});
ok(deadline_loop(60, sub { try_append() eq 'ok' }), 'space returns: appends work again');
is(try_append(), 'ok', 'space returns: and keep working');
my @other = grep { $failed{$_} ne '53100' } keys %failed;
is_deeply(\@other, [], 'disk full: every failed append failed with 53100');
my %stored = map { $_ => 1 } split /\n/,
  sql(q{SELECT DISTINCT entity FROM batpak.read_all() WHERE entity LIKE 'disk-%'});
is_deeply(\%stored, \%acked, 'disk full: exactly the acknowledged appends are stored');
is(verify_report($node), expected_verify_report($node), 'disk full: chains verify');

# --- 5. a read that spans a writer restart --------------------------------------
#
# A session takes its snapshot while an asynchronous event is there, then
# (batpak.inject_fault = 'read_pause') waits for an advisory lock before it
# reads the event's frame.  Meanwhile a failed sync makes the writer discard
# the unsynced event and stop, and its successor writes another event of the
# same size with the same sequence at the same offset.  When the session
# reads on, it must fail with BP003, not return the successor's event as
# the one its snapshot saw.  The event stays unsynced only until the
# writer's timed flush (flush_delay, 10 s); should that come first, the
# successor's event lands elsewhere and the attempt is repeated (bounded).

my $pause_lock = '108170704871787';    # BATPAK_READ_PAUSE_LOCK
my ($read_out, $read_err, $reused);
for my $attempt (1 .. 5)
{
	my $ent = "span-$attempt";
	my $holder = $node->background_psql('postgres', on_error_stop => 0, timeout => 120);
	$holder->query_safe("SELECT pg_advisory_lock($pause_lock)");
	my $a = sql(qq{SET batpak.synchronous_commit = off; SET batpak.transactional = off;
	               SELECT global_sequence FROM batpak.append('$ent', 'f', 'k', '{"v": "a"}')});
	my $reader = $node->background_psql('postgres', on_error_stop => 0, timeout => 120);
	$reader->query_safe("\\set VERBOSITY verbose\nSET batpak.inject_fault = 'read_pause'");
	$reader->query_until(qr/reading/,
		"\\echo reading\nSELECT entity || ' ' || payload::text FROM batpak.read_all($a - 1, 1);\n");
	ok( deadline_loop(
			60,
			sub {
				sql(qq{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
				       AND NOT granted AND mode = 'ShareLock'}) eq '1';
			}),
		"span $attempt: the reader waits before the frame of sequence $a");

	my $pid = writer_pid();
	my ($state) = sql_error($node,
		qq{SET batpak.transactional = off; SET batpak.inject_fault = 'fsync';
		   SELECT batpak.append('span-fault', 'f', 'k', '{}')});
	is($state // 'no error', '58030', "span $attempt: the failing sync's call fails");
	ok(wait_new_writer($pid), "span $attempt: a new writer serves");
	my $b = sql(qq{SET batpak.transactional = off;
	               SELECT global_sequence FROM batpak.append('$ent', 'f', 'k', '{"v": "b"}')});

	$holder->query_safe("SELECT pg_advisory_unlock($pause_lock)");
	$holder->quit;
	$reader->{stderr} = '';
	($read_out) = $reader->query("SELECT 'done'");
	$read_err = $reader->{stderr};
	$reader->quit;
	$reused = ($b eq $a);
	note "span $attempt: the reader saw sequence $a, the successor wrote $b";
	last if $reused;
}
ok($reused, "span: the successor's event took the discarded event's sequence");
like($read_err,
	qr/ERROR:\s+BP003:\s+batpak writer stopped or restarted during the read/,
	'span: the read across the restart fails with BP003');
is($read_out, 'done', 'span: and returns no row');

# --- 6. a crash in the middle of the discard ------------------------------------
#
# The discard after a failed sync writes its zeros from the end of the file
# backwards, so that a crash in the middle leaves what recovery knows:
# frames, then zeros (forwards it left zeros, then frames: damage).  Here
# the sync of a batch of three 5kB events fails and the server crashes
# (PANIC) once the zeros reach into the batch's frames with some of them
# left.  The crash loses the writer's mark of the failed sync (shared
# memory), so recovery takes the file as it is: it must find the batch
# without its end mark and cut it off at the last sync point.

{
	my $label = 'discard crash';
	my $tag = 'fault-discard-crash';
	my $before = read_all_text($node);
	my $sync_point = parse_segment(newest_segment())->{data_end};
	my $logpos = -s $node->logfile;
	my $pid = writer_pid();
	my $big = 'x' x 5000;
	my ($state, $msg) = sql_error($node,
		qq{SET batpak.inject_fault = 'discard_crash';
		   SELECT count(*) FROM batpak.append_batch(ARRAY[
			ROW('$tag', 'f', 'k', '{"n": 1, "big": "$big"}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
			ROW('$tag', 'f', 'k', '{"n": 2, "big": "$big"}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
			ROW('$tag', 'f', 'k', '{"n": 3, "big": "$big"}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])});
	# the writer answers the group before it discards, and the crash may
	# end the session before that answer reaches the client
	ok( ($state // '') eq '58030'
		  || ($msg // '') =~ /server closed the connection unexpectedly|terminating connection because of crash/,
		"$label: the call fails (58030 or the crash) instead of returning a receipt")
	  or diag "state " . ($state // 'none') . ": " . ($msg // '');
	# the answer comes before the discard: wait for a new writer, not for
	# "ready", which the failing one may still show (psql fails while the
	# server restarts)
	ok( deadline_loop(
			120,
			sub {
				my ($ret, $out) = $node->psql('postgres',
					q{SELECT state || '|' || coalesce(writer_pid, 0) FROM batpak.stats});
				return 0 if $ret != 0;
				my ($st, $p) = split /\|/, $out;
				return $st eq 'ready' && $p != $pid;
			}),
		"$label: the server restarts and a new writer is ready");
	my $log = slurp_file($node->logfile, $logpos);
	like($log, qr/PANIC:\s+injected fault: crash in the middle of the discard of segment 00000001\.seg at offset \d+/,
		"$label: the writer crashed inside the discard");
	unlike($log, qr/batpak: discarded \d+ bytes/, "$label: the discard did not finish");
	like($log,
		qr/batpak: truncated torn tail of segment 00000001\.seg at offset $sync_point \(\d+ bytes discarded\)/,
		"$label: recovery cut the unfinished batch off at the last sync point ($sync_point)");
	unlike($log, qr/batpak: .*(damaged|corrupt)/, "$label: recovery found no damage");
	check_store($label, $before, $tag, 0);
}

# --- 7. a failed look-up of a transaction's status -------------------------------
#
# The writer asks the clog about the transaction holding an entity while it
# builds a request; a failure there refuses that request only.  The failure
# may leave locks taken (the clog's, XactTruncationLock): a writer that went
# on serving without releasing them would stop every commit, or (here, where
# the fault leaves XactTruncationLock taken) fail once it held 200 of them.
# 250 refused look-ups in one transaction, then the same look-up without the
# fault must work, from the same writer.

{
	my $pid = writer_pid();
	my $out = sql(q{
		BEGIN;
		SELECT (batpak.append('xid-status', 'f', 'k', '{"n": 0}')).entity_sequence;
		DO $$
		DECLARE
			refused int := 0;
			other text := '';
		BEGIN
			PERFORM set_config('batpak.inject_fault', 'xid_status', true);
			FOR i IN 1 .. 250 LOOP
				BEGIN
					PERFORM batpak.append('xid-status', 'f', 'k', jsonb_build_object('n', i));
				EXCEPTION WHEN OTHERS THEN
					IF SQLSTATE = '58030' AND SQLERRM ~ '^injected fault: could not access status of transaction \d+$' THEN
						refused := refused + 1;
					ELSE
						other := SQLSTATE || ' ' || SQLERRM;
					END IF;
				END;
			END LOOP;
			PERFORM set_config('batpak.inject_fault', 'none', true);
			RAISE NOTICE 'refused %, other "%"', refused, other;
			PERFORM set_config('bench.refused', refused || '|' || other, true);
		END $$;
		SELECT current_setting('bench.refused');
		SAVEPOINT s;
		SELECT (batpak.append('xid-status', 'f', 'k', '{"n": 1}')).entity_sequence;
		COMMIT;});
	is($out, "1\n250|\n2", 'xid status: 250 failed look-ups refuse their appends only; the next one works');
	is(writer_pid(), $pid, 'xid status: the same writer serves');
	is(sql(q{SELECT string_agg(entity_sequence || ':' || (payload->>'n'), ',' ORDER BY entity_sequence)
	         FROM batpak.read_stream('xid-status')}),
		'1:0,2:1', 'xid status: exactly the two appended events are there');
}

# --- 8. a cancel while the writer holds its answer ------------------------------
#
# answer_pause: the writer writes and syncs the session's append, then holds
# its answer until the session gives up on it.  The test waits until the
# event is written (stats.written_sequence), then cancels the session, so the
# cancel falls between the writer's taking the append and its answer.  In
# transactional mode the outcome is known: the error rolls the transaction
# back, so the event never becomes visible (57014, with a detail saying so;
# it was BP004, "outcome unknown", before).  In immediate mode the caller
# cannot know (BP004), and the event is in fact stored.

# Append to entity in a background session set up by setup, with the writer
# holding its answer (answer_pause); wait until the writer has written it,
# cancel the session and return what the statement printed and its stderr.
sub cancel_paused_append
{
	my ($label, $setup, $entity) = @_;
	my $seq0 = sql('SELECT written_sequence FROM batpak.stats');
	my $bg = $node->background_psql('postgres', on_error_stop => 0, timeout => 120);
	$bg->query_safe("\\set VERBOSITY verbose\n$setup");
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/appending/,
		"\\echo appending\nSET batpak.inject_fault = 'answer_pause';\n"
		  . "SELECT global_sequence FROM batpak.append('$entity', 'f', 'k', '{}');\n");
	ok( deadline_loop(60, sub { sql('SELECT written_sequence FROM batpak.stats') > $seq0 }),
		"$label: the writer wrote the append");
	is(sql("SELECT pg_cancel_backend($pid)"), 't', "$label: the session is cancelled");
	$bg->{stderr} = '';
	my ($out) = $bg->query("SELECT 'done'");
	my $err = $bg->{stderr};
	$bg->quit;
	return ($out, $err);
}

for my $mode ('on', 'off')
{
	my $label = "answer pause, transactional $mode";
	my $ent = "pause-$mode";
	my $wpid = writer_pid();
	my ($out, $err) = cancel_paused_append($label, "SET batpak.transactional = $mode", $ent);
	is($out, 'done', "$label: the append returned no receipt");
	if ($mode eq 'on')
	{
		like($err,
			qr/ERROR:\s+57014: canceling statement due to user request\nDETAIL:\s+The writer had taken the append when the wait was interrupted; the rollback that follows discards whatever it wrote for this call\./,
			"$label: 57014, and the detail says the rollback discards it");
		is(sql(qq{SELECT count(*) FROM batpak.read_stream('$ent')}), '0',
			"$label: the event is not visible");
		is(sql(qq{SELECT entity_sequence FROM batpak.append('$ent', 'f', 'k', '{}')}), '1',
			"$label: the next append to the entity takes sequence 1 again");
	}
	else
	{
		like($err,
			qr/ERROR:\s+BP004: outcome of the append is unknown: canceling statement due to user request/,
			"$label: BP004, outcome unknown");
		is(sql(qq{SELECT string_agg(entity_sequence::text, ',') FROM batpak.read_stream('$ent')}), '1',
			"$label: the event is stored");
	}
	is(writer_pid(), $wpid, "$label: the same writer serves");

	# The same when the wait ends at batpak.writer_timeout (5 s; the writer
	# holds its answer for up to 60 s): BP003 in transactional mode, where
	# the rollback settles it, BP004 in immediate mode.
	$ent = "pause-timeout-$mode";
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET batpak.transactional = $mode;\n"
		  . "SET batpak.writer_timeout = '5s';\nSET batpak.inject_fault = 'answer_pause';\n"
		  . "SELECT global_sequence FROM batpak.append('$ent', 'f', 'k', '{}');");
	is($stdout, '', "$label, writer_timeout: no receipt");
	if ($mode eq 'on')
	{
		like($stderr,
			qr/ERROR:\s+BP003: batpak writer did not answer the append within batpak.writer_timeout\nDETAIL:\s+The writer had taken the append; the rollback that follows discards whatever it wrote for this call, which never becomes visible\./,
			"$label, writer_timeout: BP003, and the detail says the rollback discards it");
		is(sql(qq{SELECT count(*) FROM batpak.read_stream('$ent')}), '0',
			"$label, writer_timeout: the event is not visible");
	}
	else
	{
		like($stderr,
			qr/ERROR:\s+BP004: outcome of the append is unknown: the writer did not answer within batpak.writer_timeout/,
			"$label, writer_timeout: BP004, outcome unknown");
		is(sql(qq{SELECT count(*) FROM batpak.read_stream('$ent')}), '1',
			"$label, writer_timeout: the event is stored");
	}
	is(writer_pid(), $wpid, "$label, writer_timeout: the same writer serves");

	# A cancel that takes effect after the writer answered
	# (cancel_after_answer) ends the statement too, with 57014, and its
	# detail says what became of the append.
	$ent = "after-answer-$mode";
	($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET batpak.transactional = $mode;\n"
		  . "SET batpak.inject_fault = 'cancel_after_answer';\n"
		  . "SELECT global_sequence FROM batpak.append('$ent', 'f', 'k', '{}');");
	is($stdout, '', "$label, cancel after the answer: no receipt");
	if ($mode eq 'on')
	{
		like($stderr,
			qr/ERROR:\s+57014: canceling statement due to user request\nDETAIL:\s+The writer had answered the append when the cancel took effect; the rollback that follows discards whatever it wrote for this call\./,
			"$label, cancel after the answer: 57014, the rollback discards it");
		is(sql(qq{SELECT count(*) FROM batpak.read_stream('$ent')}), '0',
			"$label, cancel after the answer: the event is not visible");
	}
	else
	{
		my ($named) = $stderr =~
		  /ERROR:\s+57014: canceling statement due to user request\nDETAIL:\s+The append had completed when the cancel took effect: its 1 event\(s\) are in the store \(the first receipt names global sequence (\d+)\)\./;
		ok(defined $named, "$label, cancel after the answer: 57014, the event is in the store")
		  or diag $stderr;
		is(sql(qq{SELECT string_agg(global_sequence::text, ',') FROM batpak.read_stream('$ent')}),
			$named // 'none', "$label, cancel after the answer: the event named is the one stored");
	}
}

# A gate's denial recorded (record_denials) when the cancel takes effect
# after the writer answered the record: the cancel ends the statement (it
# used to be turned into a warning that the denial was not recorded, and
# BP002), and the detail says the record is stored.
sql(q{CREATE FUNCTION deny_all(e batpak.new_event) RETURNS text LANGUAGE sql
      AS $$ SELECT 'no' $$;
      SELECT batpak.gate_create('deny_all', 'deny_all(batpak.new_event)', entity_prefix => 'denied-')});
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET batpak.record_denials = on;\n"
		  . "SET batpak.inject_fault = 'cancel_after_answer';\n"
		  . "SELECT global_sequence FROM batpak.append('denied-1', 'f', 'k', '{}');");
	my ($named) = $stderr =~
	  /ERROR:\s+57014: canceling statement due to user request\nDETAIL:\s+Gate "deny_all" denied the append\. Recording the denial: The append had completed when the cancel took effect: its 1 event\(s\) are in the store \(the first receipt names global sequence (\d+)\)\./;
	ok(defined $named, 'denial record, cancel after the answer: 57014, the record is in the store')
	  or diag $stderr;
	is(sql(q{SELECT string_agg(global_sequence || ' ' || kind || ' ' || (payload->>'gate'), ',')
	         FROM batpak.read_stream('denied-1')}),
		($named // 'none') . ' batpak.denial deny_all', 'denial record, cancel after the answer: the record is stored');
}
# The same with the cancel between the writer's taking the record and its
# answer (answer_pause): the record's outcome is unknown to the session, so
# the statement ends with 57014 and says so (it used to become BP004 inside,
# then a warning and BP002, and a caller catching BP002 lost the cancel).
{
	my (undef, $err) = cancel_paused_append('denial record, cancel before the answer',
		'SET batpak.record_denials = on', 'denied-2');
	like($err,
		qr/ERROR:\s+57014: canceling statement due to user request\nDETAIL:\s+Gate "deny_all" denied the append\. Recording the denial: The writer had already taken the append when the wait was interrupted; whether it was written is unknown\./,
		'denial record, cancel before the answer: 57014, the record\'s outcome unknown');
	unlike($err, qr/WARNING/, 'denial record, cancel before the answer: no warning');
	is(sql(q{SELECT string_agg(kind, ',') FROM batpak.read_stream('denied-2')}),
		'batpak.denial', 'denial record, cancel before the answer: the record was written');
}

# The denial record is as synchronous as the denied call: a gate that turns
# batpak.synchronous_commit off does not make it asynchronous (it used to;
# with flush_delay 10 s the record then stayed unsynced).
sql(q{CREATE FUNCTION deny_async(e batpak.new_event) RETURNS text LANGUAGE plpgsql AS $$
      BEGIN
          PERFORM set_config('batpak.synchronous_commit', 'off', true);
          RETURN 'no';
      END $$;
      SELECT batpak.gate_create('deny_async', 'deny_async(batpak.new_event)', entity_prefix => 'async-denied-')});
{
	my ($state) = sql_error($node,
		q{SET batpak.record_denials = on;
		  SELECT batpak.append('async-denied-1', 'f', 'k', '{}')});
	is($state // 'no error', 'BP002', 'denial record, gate turns synchronous_commit off: denied');
	is(sql(q{SELECT (SELECT max(global_sequence) FROM batpak.read_stream('async-denied-1'))
	                || ' ' || (durable_sequence = written_sequence) FROM batpak.stats}),
		sql('SELECT written_sequence FROM batpak.stats') . ' true',
		'denial record, gate turns synchronous_commit off: the record is the last event and durable');
}
sql(q{SELECT batpak.gate_drop('deny_async'); DROP FUNCTION deny_async(batpak.new_event);
      SELECT batpak.gate_drop('deny_all'); DROP FUNCTION deny_all(batpak.new_event)});

# --- 9. a crash after all that changes nothing --------------------------------

my $before_crash = read_all_text($node);
crash_node($node);
$node->start;
ok(wait_state($node, 'ready'), 'crash: the writer is ready again');
is(read_all_text($node), $before_crash, 'crash: the same events after a kill -9 and restart');
is(integrity_report($node) =~ /\|0\|0$/ ? 1 : 0, 1, 'crash: sequences dense and ordered per entity');

$node->stop;
done_testing();
