
# 003_torn_tail.pl
#
# Recovery cuts a torn tail off the newest segment and logs where: a last
# frame cut short, a trailing batch whose END frame never made it (the whole
# batch goes, even its complete frames), and zeros after the last frame.
# Everything before the cut is intact and the lost sequences are handed out
# again.  A torn tail can only lie after the last sync point that the control
# file records (the writer records only synced points): the test moves that
# point back to where the tail begins, as a crash before the sync leaves it
# (013 shows that the control file never names an unsynced point; 016 that a
# cut before it is refused).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Immediate mode: these tests count and cut frames, and a transactional
# append adds a resolution marker after each event (009 covers those).
my $node = new_batpak_node('torn', "batpak.transactional = off\n");
my $segname = '00000001.seg';
my $segpath = segment_dir($node) . "/$segname";

sub append_one
{
	my ($args) = @_;
	my ($r) = receipts_of($node, "batpak.append($args)");
	return $r;
}

sub last_of
{
	my ($entity) = @_;
	return $node->safe_psql('postgres',
		"SELECT entity_sequence, encode(event_hash, 'hex') FROM batpak.read_stream('$entity')"
		  . ' ORDER BY entity_sequence DESC LIMIT 1');
}

# Parse the segment and check that the test reads it as documented: one
# segment, header magic and number, CRC and layout of every frame, frames in
# global order.
sub parse_checked
{
	my ($label, $n_frames) = @_;
	is_deeply([ segment_files($node) ], [$segname], "$label: one segment file");
	my $seg = parse_segment($segpath);
	is("$seg->{magic}|$seg->{segno}", "BATPAKSG|1", "$label: segment header");
	is(scalar @{ $seg->{frames} }, $n_frames, "$label: $n_frames frames");
	is_deeply(
		[ map { "$_->{global_sequence}|$_->{crc_ok}|$_->{layout_ok}" } @{ $seg->{frames} } ],
		[ map { "$_|1|1" } 1 .. $n_frames ],
		"$label: frames in order, CRC and layout as documented");
	return $seg;
}

# Start the node; check the writer is ready and the events before the cut
# are intact.  False if the writer did not become ready.
sub start_and_check
{
	my ($label, $n_events, $snapshot) = @_;
	$node->start;
	ok(wait_state($node, 'ready'), "$label: writer ready after recovery")
	  or return 0;
	is(read_all_text($node), $snapshot, "$label: earlier events intact");
	is(integrity_report($node), "$n_events|1|$n_events|$n_events|0|0",
		"$label: $n_events events, dense and linked");
	is(verify_report($node), expected_verify_report($node), "$label: verify_chain ok");
	return 1;
}

# Start the node and check the torn-tail LOG line and the cut as well.
sub start_and_check_cut
{
	my ($label, $offset, $discarded, $n_events, $snapshot) = @_;
	my $logpos = -s $node->logfile;
	my $ready = start_and_check($label, $n_events, $snapshot);
	my $expect = qr/batpak: truncated torn tail of segment \Q$segname\E at offset $offset \($discarded bytes discarded\)/;
	ok($node->log_contains($expect, $logpos),
		"$label: log says: truncated torn tail of segment $segname at offset $offset ($discarded bytes discarded)")
	  or diag(slurp_file($node->logfile, $logpos));
	is(-s $segpath, $offset, "$label: segment truncated at offset $offset") if $ready;
	return $ready;
}

# --- A: the last frame is cut short --------------------------------------------

append_one(q{'e1', 'torn', 'k', '{"n": 1}'});
append_one(q{'e2', 'torn', 'k', '{"n": 2}'});
append_one(q{'e1', 'torn', 'k', '{"n": 3}'});
append_one(q{'e2', 'torn', 'k', '{"n": 4}'});
my $snapshot = read_all_text($node);
my $e1_before = last_of('e1');
my $lost = append_one(q{'e1', 'torn', 'k', '{"n": 5}', NULL, NULL, 'torn-key'});
is("$lost->{global_sequence}|$lost->{entity_sequence}", '5|3', 'event 5 appended');

$node->stop('fast');
my $seg = parse_checked('A', 5);
my $last = $seg->{frames}[-1];
is($last->{flags} & 3, 3, 'A: a lone append is both BATCH_BEGIN and BATCH_END');
is($last->{event_id}, $lost->{event_id}, 'A: last frame is the last event');
my $cut = $seg->{data_end} - 10;
truncate_file($segpath, $cut);
set_control_point($node, 1, $last->{offset});
start_and_check_cut('A', $last->{offset}, $cut - $last->{offset}, 4, $snapshot);
is($node->safe_psql('postgres', "SELECT batpak.get('$lost->{event_id}') IS NULL"),
	't', 'A: the torn event is gone');
is($node->safe_psql('postgres', q{SELECT batpak.stream_version('e1')}),
	'2', 'A: stream_version of its entity is back to 2');

# Its idempotency key went with it: the same call writes it again, with the
# same sequences, linked to e1's surviving last event.
my ($e1_seq, $e1_hash) = split /\|/, $e1_before;
my $again = append_one(q{'e1', 'torn', 'k', '{"n": 5}', NULL, NULL, 'torn-key'});
is("$again->{global_sequence}|$again->{entity_sequence}|$again->{prev_hash}",
	"5|3|$e1_hash", 'A: next append gets the lost global sequence 5 again');

# --- B: a trailing batch without its END frame -----------------------------------

$snapshot = read_all_text($node);
my $before_batch = $node->safe_psql('postgres',
	q{SELECT batpak.stream_version('e1'), batpak.stream_version('e3')});
my $batch_sql = q{batpak.append_batch(ARRAY[
	ROW('e3', 'torn', 'b', '{"b": 1}', NULL, NULL, 'batch-key', NULL, NULL)::batpak.new_event,
	ROW('e1', 'torn', 'b', '{"b": 2}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
	ROW('e3', 'torn', 'b', '{"b": 3}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])};
my @batch = receipts_of($node, $batch_sql);
is(join(',', map { $_->{global_sequence} } @batch), '6,7,8', 'B: batch got 6, 7, 8');

$node->stop('fast');
$seg = parse_checked('B', 8);
my @bf = @{ $seg->{frames} }[ 5 .. 7 ];
is(join(',', map { $_->{flags} & 3 } @bf), '1,0,2',
	'B: batch frames flagged BEGIN, none, END');
# Cut right after the batch's second frame: both remaining frames are
# complete and their CRCs are fine, but the batch has no END.
truncate_file($segpath, $bf[1]{end});
set_control_point($node, 1, $bf[0]{offset});
start_and_check_cut('B', $bf[0]{offset}, $bf[1]{end} - $bf[0]{offset}, 5, $snapshot);
is( $node->safe_psql('postgres',
		'SELECT count(*) FROM unnest(ARRAY['
		  . join(', ', map { "'$_->{event_id}'::uuid" } @batch)
		  . ']) id WHERE batpak.get(id) IS NOT NULL'),
	'0', 'B: none of the batch\'s events survives');
is( $node->safe_psql('postgres',
		q{SELECT batpak.stream_version('e1'), batpak.stream_version('e3')}),
	$before_batch, 'B: stream versions as before the batch');
@batch = receipts_of($node, $batch_sql);
is( join(',', map { "$_->{global_sequence}/$_->{entity_sequence}" } @batch),
	'6/1,7/4,8/2', 'B: the batch written again gets 6, 7, 8');

# --- C: zeros after the last frame ---------------------------------------------
#
# What a crash leaves when the writer preallocates: free space, not damage.

$snapshot = read_all_text($node);
$node->stop('fast');
$seg = parse_checked('C', 8);
my $end = $seg->{data_end};
is($seg->{size}, $end, 'C: a clean shutdown leaves no bytes after the last frame');
open(my $fh, '>>:raw', $segpath) or die "$segpath: $!";
print $fh "\0" x 100;
close $fh;
start_and_check('C', 8, $snapshot);
my $next = append_one(q{'e2', 'torn', 'k', '{"n": 9}'});
is("$next->{global_sequence}|$next->{entity_sequence}", '9|3',
	'C: appends continue at 9');

$node->stop('fast');
$seg = parse_checked('C after append', 9);
is($seg->{frames}[8]{offset}, $end, 'C: the new frame starts where the data ended');
is($seg->{size}, $seg->{frames}[8]{end}, 'C: and the file ends with it');

# --- D: power cut, the last frame's end never reached the disk ---------------------
#
# The node is SIGKILLed (the segment keeps whatever preallocated space it
# had), then the end of the last frame is zeroed as if the page or sector
# holding it had not been written: from the middle of its body (D1), and
# only its last 10 bytes, inside event_hash (D2: a page boundary falling
# there).  Either way the frame is torn, not corrupt: it was never
# acknowledged, everything after it is zero, and recovery must cut it.

sub power_cut_case
{
	my ($label, $n_before, $zero_from) = @_;
	$node->start;
	ok(wait_state($node, 'ready'), "$label: writer ready") or return;
	my $snap = read_all_text($node);
	my $victim = append_one(qq{'e1', 'torn', 'k', '{"case": "$label"}'});
	is($victim->{global_sequence}, $n_before + 1, "$label: event appended");
	crash_node($node);
	my $seg = parse_segment($segpath);
	my $f = $seg->{frames}[-1];
	is("$f->{global_sequence}|$f->{end}", ($n_before + 1) . "|$seg->{data_end}",
		"$label: the victim is the last frame");
	unlike(read_bytes($segpath, $f->{end}, $seg->{size} - $f->{end}), qr/[^\0]/,
		"$label: only zeros after it (" . ($seg->{size} - $f->{end}) . ' bytes)');
	my $from = $zero_from->($f);
	patch_file($segpath, $from, "\0" x ($f->{end} - $from));
	set_control_point($node, 1, $f->{offset});
	start_and_check_cut($label, $f->{offset}, $seg->{size} - $f->{offset},
		$n_before, $snap)
	  or return;
	is($node->safe_psql('postgres', "SELECT batpak.get('$victim->{event_id}') IS NULL"),
		't', "$label: the torn event is gone");
	my $again = append_one(qq{'e1', 'torn', 'k', '{"case": "$label again"}'});
	is($again->{global_sequence}, $n_before + 1,
		"$label: its global sequence is handed out again");
	$node->stop('fast');
}

power_cut_case('D1', 9, sub { $_[0]{offset} + 8 + int($_[0]{length} / 2) });
power_cut_case('D2', 10, sub { $_[0]{end} - 10 });

done_testing();
