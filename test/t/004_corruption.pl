
# 004_corruption.pl
#
# Damage that is not a torn tail fails closed: a complete frame with a bad
# CRC in the newest segment, or any damaged frame of an older segment, puts
# the store in state 'failed'; appends and reads then fail with XX001 naming
# the segment file and the offset of the damaged frame, and the file is left
# as it is.  A frame altered with a matching CRC is caught by the hash chain.

use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

sub file_md5
{
	my ($path) = @_;
	return md5_hex(slurp_file($path));
}

# Every frame of every segment parses as documented, sequences run on
# across segments, and each header carries its file's number.
sub check_segments
{
	my ($node, $label) = @_;
	my $expect = 1;
	my %segs;
	my @problems;
	for my $name (segment_files($node))
	{
		my $seg = parse_segment(segment_dir($node) . "/$name");
		push @problems, "$name: header $seg->{magic} #$seg->{segno}"
		  unless $seg->{magic} eq 'BATPAKSG' && sprintf('%08X.seg', $seg->{segno}) eq $name;
		push @problems, "$name: ends with $seg->{tail} at $seg->{data_end} of $seg->{size}"
		  unless $seg->{data_end} == $seg->{size};
		for my $f (@{ $seg->{frames} })
		{
			push @problems, "$name at $f->{offset}: crc_ok $f->{crc_ok} layout_ok $f->{layout_ok} "
			  . "global_sequence $f->{global_sequence}, expected $expect"
			  unless $f->{crc_ok} && $f->{layout_ok} && $f->{global_sequence} == $expect;
			$expect++;
		}
		$segs{$name} = $seg;
	}
	is_deeply(\@problems, [], "$label: segments parse as documented");
	return \%segs;
}

# The store refuses everything, naming segment and offset.
sub check_refused
{
	my ($node, $label, $segname, $offset, $some_event_id) = @_;
	ok(wait_state($node, 'failed'), "$label: batpak.stats.state is 'failed'");
	my $msg = qr/^batpak store is unavailable: corrupt frame in segment \Q$segname\E at offset $offset\b/;
	my %calls = (
		append      => q{SELECT batpak.append('fresh', 's', 'k', '{"x": 1}')},
		append_batch => q{SELECT * FROM batpak.append_batch(ARRAY[ROW('fresh', 's', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])},
		read_all    => q{SELECT count(*) FROM batpak.read_all()},
		read_stream => q{SELECT count(*) FROM batpak.read_stream('ent-1')},
		get         => qq{SELECT batpak.get('$some_event_id') IS NULL},
		verify_chain => q{SELECT count(*) FROM batpak.verify_chain(NULL)},
	);
	for my $fn (sort keys %calls)
	{
		my ($state, $text) = sql_error($node, $calls{$fn});
		is($state // 'no error', 'XX001', "$label: $fn fails with XX001");
		like($text // '', $msg, "$label: $fn error names $segname and offset $offset");
	}
	is($node->safe_psql('postgres', 'SELECT state FROM batpak.stats'),
		'failed', "$label: still failed after the refused calls");
}

# --- 1: bad CRC on a complete frame that is not the last ---------------------------

# Immediate mode: these tests count and cut frames, and a transactional
# append adds a resolution marker after each event (009 covers those).
my $node = new_batpak_node('corrupt_crc', "batpak.transactional = off\n");
$node->safe_psql('postgres',
	q{SELECT batpak.append('ent-' || (g % 3), 's', 'k', jsonb_build_object('g', g, 'text', repeat('y', 200)))
	  FROM generate_series(1, 10) g});
$node->stop('fast');
my $segs = check_segments($node, 'CRC');
is_deeply([ sort keys %$segs ], ['00000001.seg'], 'CRC: one segment');
my $path = segment_dir($node) . '/00000001.seg';
my $victim = $segs->{'00000001.seg'}{frames}[4];    # the 5th of 10 frames
flip_byte($path, $victim->{offset} + 8 + int($victim->{length} / 2));
my $after = parse_segment($path);
is_deeply([ map { $_->{crc_ok} } @{ $after->{frames} } ],
	[ 1, 1, 1, 1, 0, 1, 1, 1, 1, 1 ], 'CRC: only frame 5 has a bad CRC now');
my $md5 = file_md5($path);

$node->start;
my $intact_id = $segs->{'00000001.seg'}{frames}[0]{event_id};
check_refused($node, 'CRC', '00000001.seg', $victim->{offset}, $intact_id);
$node->restart;
check_refused($node, 'CRC after another restart', '00000001.seg', $victim->{offset},
	$intact_id);
$node->stop('fast');
is(file_md5($path), $md5, 'CRC: the damaged segment was left untouched');

# --- 2: damage in an older segment (its last frame) --------------------------------

$node = new_batpak_node('corrupt_old', "batpak.segment_size = '1MB'\nbatpak.transactional = off\n");
is($node->safe_psql('postgres', 'SHOW batpak.segment_size'), '1MB', 'segment_size is 1MB');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM (SELECT batpak.append('ent-' || (g % 4), 's', 'blob',
		    jsonb_build_object('g', g, 'pad', repeat('x', 10000))) FROM generate_series(1, 250) g) s}),
	'250', '250 events of 10kB appended');
$node->stop('fast');
$segs = check_segments($node, 'rotation');
my @names = sort keys %$segs;
ok(@names >= 2, 'rotation: at least two segments (' . join(' ', @names) . ')');
is($names[0], '00000001.seg', 'rotation: the oldest is 00000001.seg');
my $last_of_first = $segs->{'00000001.seg'}{frames}[-1];
ok($segs->{'00000001.seg'}{size} <= 1024 * 1024 + 8 + $last_of_first->{length},
	'rotation: 00000001.seg did not grow past segment_size by more than one frame');
$path = segment_dir($node) . '/00000001.seg';
flip_byte($path, $last_of_first->{offset} + 8 + int($last_of_first->{length} / 2));
$md5 = file_md5($path);
my $newest_md5 = file_md5(segment_dir($node) . "/$names[-1]");

$node->start;
check_refused($node, 'older segment', '00000001.seg', $last_of_first->{offset},
	$segs->{$names[-1]}{frames}[-1]{event_id});
$node->stop('fast');
is(file_md5($path), $md5, 'older segment: the damaged segment was left untouched');
is(file_md5(segment_dir($node) . "/$names[-1]"), $newest_md5,
	'older segment: the newest segment was left untouched');

# --- 3: a frame altered with a recomputed CRC: the hash chain catches it ---------

$node = new_batpak_node('tamper', "batpak.transactional = off\n");
$node->safe_psql('postgres',
	q{SELECT batpak.append('acct', 's', 'k', jsonb_build_object('n', g, 'note', 'aaaaaaaa'))
	  FROM generate_series(1, 5) g});
$node->stop('fast');
$path = segment_dir($node) . '/00000001.seg';
my $seg = parse_segment($path);
my $f = $seg->{frames}[2];    # entity_sequence 3 of 5
my $payload = read_bytes($path, $f->{payload_offset}, $f->{payload_length});
my $at = index($payload, 'aaaaaaaa');
ok($at >= 0, 'tamper: the note is in the payload bytes');
patch_file($path, $f->{payload_offset} + $at + 3, 'b');
my $body = read_bytes($path, $f->{offset} + 8, $f->{length});
patch_file($path, $f->{offset} + 4, pack('V', crc32c($body)));
is_deeply([ map { $_->{crc_ok} } @{ parse_segment($path)->{frames} } ],
	[ 1, 1, 1, 1, 1 ], 'tamper: every CRC matches after the edit');

$node->start;
$node->poll_query_until('postgres',
	q{SELECT state NOT IN ('starting', 'recovering') FROM batpak.stats})
  or die 'writer never left recovery';
my $state = $node->safe_psql('postgres', 'SELECT state FROM batpak.stats');
if ($state eq 'failed')
{
	# Recovery may check the chain itself; then it must fail closed and say where.
	check_refused($node, 'tamper', '00000001.seg', $f->{offset}, $seg->{frames}[0]{event_id});
}
else
{
	is($state, 'ready', 'tamper: recovery did not check hashes, store ready');
	is( $node->safe_psql('postgres',
			q{SELECT entity, events, ok, first_bad_sequence FROM batpak.verify_chain('acct')}),
		'acct|5|f|3', 'tamper: verify_chain reports entity_sequence 3 as the first bad one');
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FILTER (WHERE NOT ok), count(*) FROM batpak.verify_chain(NULL)}),
		'1|1', 'tamper: verify_chain(NULL) reports the entity as bad');
}
$node->stop('fast');

done_testing();
