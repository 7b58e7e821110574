
# 017_sync_and_rotation.pl
#
# What a rotation does to the frontiers and to the readers' mappings.
#
# 1. Every sync makes the events written before it durable.  A rotation
#    syncs the finished segment; when the request that caused it is then
#    refused (here a compare-and-set mismatch), no event of the group moves
#    the frontiers, and the asynchronous events written before it used to
#    stay below the durable frontier (out of the cursors' reach, and the
#    writer would not sync them again) until some later append.  After the
#    refused call returns, batpak.stats must say durable = written and a
#    cursor must deliver the asynchronous event.
#
# 2. A backend that mapped the newest segment while it was preallocated
#    (1MB of zeros here) keeps a mapping longer than the file once the
#    rotation has cut the zeros off.  A frame whose length field is then
#    damaged on disk so that it runs into those cut pages must be reported
#    as damage (XX001, naming the segment and offset), not read through the
#    stale mapping (SIGBUS, which takes the whole server down).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# 1MB segments, preallocated whole; asynchronous appends stay unsynced for
# up to 10 s unless something else syncs them.
my $node = new_batpak_node('rotation',
	"batpak.segment_size = '1MB'\nbatpak.flush_delay = 10s\nbatpak.transactional = off\n"
	  . "restart_after_crash = off\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub frontiers
{
	return sql(q{SELECT written_sequence || '|' || durable_sequence || '|' || segments
	             FROM batpak.stats});
}

# --- 1. a refused request after a rotation --------------------------------------

sql(q{SELECT batpak.cursor_create('rot')});
sql(q{SELECT batpak.append('sync-1', 'rot', 'k', '{"n": 1}')});
is(frontiers(), '1|1|1', '1: a synchronous append is durable');

# An asynchronous append and the frontiers right after it, in one session.
# The writer syncs it within flush_delay (10 s): should that have happened
# already, try again with the next one (bounded).
my $async = 0;
my ($written, $durable);
ok( deadline_loop(
		60,
		sub {
			$async++;
			($written, $durable) = split /\|/, sql(
				qq{SET batpak.synchronous_commit = off;
				   DO \$\$ BEGIN PERFORM batpak.append('async-1', 'rot', 'k', '{"n": $async}'); END \$\$;
				   SELECT written_sequence || '|' || durable_sequence FROM batpak.stats});
			return $written == 1 + $async && $durable < $written;
		}),
	"1: an asynchronous append is written ($written) but not durable ($durable)");
my $last = $written;

# A 1.1MB event cannot join the first segment: the writer finishes (and
# syncs) it and starts the second, then refuses the event on its
# expected_sequence.
my ($state, $msg) = sql_error($node,
	q{SELECT batpak.append('sync-1', 'rot', 'k',
	         jsonb_build_object('big', repeat('x', 1100000)), expected_sequence => 7)});
is($state, 'BP001', "1: the oversized append is refused on its expected_sequence ($msg)");
is(frontiers(), "$last|$last|2",
	'1: after the refused call the rotation\'s sync has made every written event durable');
is( sql(q{SELECT string_agg(global_sequence || ':' || entity || ':' || entity_sequence, ',' ORDER BY global_sequence)
          FROM batpak.cursor_read('rot', 100)}),
	join(',', '1:sync-1:1', map { (1 + $_) . ":async-1:$_" } 1 .. $async),
	'1: the cursor delivers the asynchronous events');

# --- 2. a stale mapping and a damaged length --------------------------------------

# A reader maps segment 2 while it is the newest and preallocated to 1MB.
my $reader = $node->background_psql('postgres', on_error_stop => 0, timeout => 60);
$reader->query_safe("\\set VERBOSITY verbose");
sql(q{SELECT batpak.append('fill', 'rot', 'k', '{"n": 0}')});
my $first2 = $last + 1;
is($reader->query_safe("SELECT entity FROM batpak.read_all($last, 1)"), 'fill',
	'2: the reader has read from segment 2 while it is the newest');
is((stat(segment_dir($node) . '/00000002.seg'))[7], 1024 * 1024,
	'2: segment 2 is preallocated to 1MB');

# Three events of 300kB, then a fourth that does not fit: segment 2 ends
# about 100kB before 1MB, and the rotation cuts the rest off.
for my $i (1 .. 4)
{
	sql(qq{SELECT batpak.append('fill', 'rot', 'k',
	                            jsonb_build_object('big', repeat('y', 300000), 'i', $i))});
}
my $seg2 = parse_segment(segment_dir($node) . '/00000002.seg');
is(scalar(@{ $seg2->{frames} }), 4, '2: segment 2 holds four frames');
is($seg2->{tail}, 'eof', '2: and ends with its last frame (the zeros were cut)');
my $f = $seg2->{frames}[-1];
my $size = $seg2->{size};
ok($size < 1024 * 1024 - 2 * 8192, "2: segment 2 is $size bytes, pages short of the mapping");

# Damage: the last frame claims to run to 8kB before 1MB, past the file's end
# by more than a page.
my $claim = 1024 * 1024 - 8192 - $f->{offset} - 8;
patch_file(segment_dir($node) . '/00000002.seg', $f->{offset}, pack('V', $claim));

$reader->{stderr} = '';
my ($out) = $reader->query("SELECT count(*) FROM batpak.read_all($f->{global_sequence} - 1, 1)");
like($reader->{stderr}, qr/ERROR:\s+XX001:.*segment 00000002\.seg.*offset $f->{offset}/,
	'2: the read through the stale mapping reports the damaged frame');
is($out, '', '2: and returns no row');
$reader->{stderr} = '';
is($reader->query_safe('SELECT 1'), '1', '2: the reading session is still there');
$reader->quit;
is(sql(q{SELECT count(*) FROM batpak.read_all(0, 1)}), '1', '2: the server is still up');

$node->stop('immediate');
done_testing();
