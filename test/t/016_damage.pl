
# 016_damage.pl
#
# Random damage to the files of a stopped store: a byte flipped anywhere in
# any segment (header, frame header, body, the last frame) or in the control
# file, or a segment truncated anywhere (older segments and the newest,
# mid-frame and on frame boundaries).  Every time, the store refuses to serve
# (state 'failed') and appends and reads fail with XX001 naming the file and
# the offset; nothing damaged is returned.  Restoring the files makes the
# store whole again.  Also: a byte flipped while the server runs is caught by
# the read that meets it.
#
# DAMAGE_ROUNDS (default 24) sets the number of random cases; DAMAGE_SEED
# replays a run (the seed is printed).

use strict;
use warnings;
use File::Copy qw(copy);
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $rounds = $ENV{DAMAGE_ROUNDS} // 24;
my $seed   = $ENV{DAMAGE_SEED} // (time() ^ $$);
note "random damage: $rounds cases, seed $seed (DAMAGE_SEED=$seed replays it)";
srand($seed);

# small segments: the store spans several
my $node = new_batpak_node('damage', "batpak.segment_size = '1MB'\n");
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 600) i,
	  LATERAL batpak.append('ent-' || (i % 7), 's', 'k',
	                        jsonb_build_object('i', i, 'pad', repeat('p', (i * 37) % 9000)));
	BEGIN;
	SELECT count(*) FROM generate_series(1, 20) i, LATERAL batpak.append('tx-' || (i % 3), 's', 'k', '{}');
	COMMIT;
	SELECT count(*) FROM batpak.append_batch(ARRAY(
	  SELECT ROW('batch-' || (i % 2), 's', 'b', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event
	    FROM generate_series(1, 30) i));
});
my $snapshot = read_all_text($node);
my $dir = segment_dir($node);
$node->stop('fast');
my $control = 'pgsql_tmp_batpak_control';
my @files = (segment_files($node), $control);
cmp_ok(scalar(@files), '>=', 4, "the store spans several segments (@files)");
my $pristine = PostgreSQL::Test::Utils::tempdir;
copy("$dir/$_", "$pristine/$_") or die "copy $_: $!" for @files;
my %size = map { $_ => -s "$dir/$_" } @files;

sub restore
{
	copy("$pristine/$_", "$dir/$_") or die "restore $_: $!" for @files;
}

# The store refuses: failed state, XX001 for a read and an append, and the
# message names a file and an offset.
sub check_refused
{
	my ($label) = @_;
	$node->start;
	ok(wait_state($node, 'failed'), "$label: the store refuses to serve");
	my $name = qr/(?:[0-9A-F]{8}\.seg|"batpak\/pgsql_tmp_batpak_control")/;
	for my $call ('SELECT count(*) FROM batpak.read_all()',
		q{SELECT batpak.append('fresh', 's', 'k', '{}')})
	{
		my ($state, $msg) = sql_error($node, $call);
		is($state // 'no error', 'XX001', "$label: '$call' fails with XX001");
		like($msg // '', qr/^batpak store is unavailable: .*$name/,
			"$label: the message names the file") or diag($msg);
	}
	my $why = $node->safe_psql('postgres', 'SELECT failure FROM batpak.stats');
	like($why, qr/(?:offset \d+|control file)/, "$label: the failure names the offset: $why");
	$node->stop('fast');
}

for my $round (1 .. $rounds)
{
	restore();
	# the control file one time in eight
	my $file = rand() < 0.125 ? $control : $files[ int(rand(@files - 1)) ];
	my $path = "$dir/$file";
	my $label;
	if ($file ne $control && $round % 3 == 0)
	{
		# truncation: anywhere, or exactly on a frame boundary
		my $seg = parse_segment($path);
		my @bounds = map { $_->{offset} } @{ $seg->{frames} };
		my $at = $round % 2 && @bounds > 1
		  ? $bounds[ 1 + int(rand(@bounds - 1)) ]
		  : int(rand($size{$file}));
		truncate_file($path, $at);
		$label = "case $round: $file truncated to $at of $size{$file} bytes";
	}
	else
	{
		# one byte: half of the cases in the last 200 bytes (the newest
		# segment's last frame, where the torn-tail rules apply)
		my $at = rand() < 0.5 && $file ne $control
		  ? $size{$file} - 1 - int(rand(200))
		  : int(rand($size{$file}));
		flip_byte($path, $at);
		$label = "case $round: byte $at of $file ($size{$file} bytes) flipped";
	}
	note $label;
	check_refused($label);
}

# A length that makes a frame in the middle of the newest segment look cut
# off by the end of the file: the intact frames after it show it is damage,
# even where the control file has not yet recorded them (moved back here).
restore();
{
	my $newest = (grep { /\.seg$/ } @files)[-1];
	my $seg = parse_segment("$dir/$newest");
	my $mid = int(@{ $seg->{frames} } / 2);
	my ($f, $next) = @{ $seg->{frames} }[ $mid, $mid + 1 ];
	flip_byte("$dir/$newest", $f->{offset} + 3);
	set_control_point($node, hex(substr($newest, 0, 8)), $f->{offset});
	$node->start;
	ok(wait_state($node, 'failed'), 'long length: the store refuses to serve');
	like($node->safe_psql('postgres', 'SELECT failure FROM batpak.stats'),
		qr/^corrupt frame in segment \Q$newest\E at offset $f->{offset}: .*, and an intact frame follows at offset $next->{offset}$/,
		'long length: the failure names the frame and the intact one after it');
	$node->stop('fast');
}

# every segment gone: never a silent new store
restore();
unlink("$dir/$_") or die "unlink $_: $!" for grep { /\.seg$/ } @files;
$node->start;
ok(wait_state($node, 'failed'), 'no segments: the store refuses to serve');
like($node->safe_psql('postgres', 'SELECT failure FROM batpak.stats'),
	qr/^no segment file, but segment [0-9A-F]{8}\.seg was synced up to offset \d+; to start a new, empty store remove "batpak\/pgsql_tmp_batpak_control" too$/,
	'no segments: the failure says what is missing and how to start afresh');
$node->stop('fast');

# whole again
restore();
$node->start;
ok(wait_state($node, 'ready'), 'restored: the store serves again');
is(read_all_text($node), $snapshot, 'restored: every event as before');

# a flip while running: the read that meets the frame says so
my $seg1 = parse_segment("$dir/00000001.seg");
my ($victim) = grep { $_->{payload_length} > 100 } @{ $seg1->{frames} };
flip_byte("$dir/00000001.seg", $victim->{payload_offset} + 50);
my ($state, $msg) = sql_error($node,
	"SELECT count(*) FROM batpak.read_stream('$victim->{entity}')");
is($state // 'no error', 'XX001', 'live flip: the read fails with XX001');
like($msg // '', qr/^corrupt frame in segment 00000001\.seg at offset $victim->{offset}: CRC mismatch$/,
	'live flip: the message names the segment and the frame\'s offset');
($state) = sql_error($node, "SELECT count(*) FROM batpak.read_all()");
is($state // 'no error', 'XX001', 'live flip: read_all fails too');
$node->stop('fast');
flip_byte("$dir/00000001.seg", $victim->{payload_offset} + 50);

done_testing();
