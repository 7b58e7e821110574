# 008_restart_paths.pl
#
# Paths around a writer restart that the other tests do not take:
# - one session keeps appending (single events and large batches) across two
#   writer restarts: its request buffer, kept in the writer's shared area,
#   must move to the new area each time (never reused in the wrong one), and
#   be given back when the session ends;
# - a newest segment whose creation was interrupted (shorter than a header,
#   or a header that never made it to disk) is removed at start-up, not
#   taken for corruption.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_batpak_node('restarts');

# one psql session, three writer incarnations
my $restart = q{
SELECT pg_terminate_backend(writer_pid) FROM batpak.stats \gset
DO $$
DECLARE
    old int := (SELECT writer_pid FROM batpak.stats);
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        EXIT WHEN (SELECT state = 'ready' AND writer_pid IS DISTINCT FROM old
                     FROM batpak.stats);
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'writer did not come back';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
};
my $batch = sub {
	my ($tag) = @_;
	return "SELECT count(*) FROM batpak.append_batch((SELECT array_agg(ROW('big-$tag', 's', 'k', jsonb_build_object('i', i, 'pad', repeat('x', 500)), NULL, NULL, NULL, NULL, NULL)::batpak.new_event) FROM generate_series(1, 400) i));\n";
};
my $script = "\\set ON_ERROR_STOP on\n"
  . "SELECT entity_sequence FROM batpak.append('s1', 'x', 'k', '{\"n\": 1}');\n"
  . $batch->('a')
  . $restart
  . "SELECT entity_sequence FROM batpak.append('s1', 'x', 'k', '{\"n\": 2}');\n"
  . $batch->('b')
  . $restart
  . $batch->('c')
  . "SELECT entity_sequence FROM batpak.append('s1', 'x', 'k', '{\"n\": 3}');\n";
my ($ret, $out, $err) = $node->psql('postgres', $script);
is($ret, 0, 'one session appends across two writer restarts')
  or diag $err;
is($out, "1\n400\n2\n400\n400\n3", 'every append of the session got its receipt');

is($node->safe_psql('postgres',
		q{SELECT count(*), min(global_sequence), max(global_sequence) FROM batpak.read_all()}),
	'1203|1|1203', 'all 1,203 events stored, sequences dense');
is($node->safe_psql('postgres',
		q{SELECT string_agg(entity || ':' || events || ':' || ok, ',' ORDER BY entity) FROM batpak.verify_chain()}),
	'big-a:400:true,big-b:400:true,big-c:400:true,s1:3:true', 'every chain verifies');
is($node->safe_psql('postgres',
		q{SELECT string_agg(payload->>'n', ',' ORDER BY entity_sequence) FROM batpak.read_stream('s1')}),
	'1,2,3', 'the single appends are in order');
# a fresh session after the first one ended (its buffer was given back)
is($node->safe_psql('postgres',
		q{SELECT entity_sequence FROM batpak.append('s1', 'x', 'k', '{"n": 4}')}),
	'4', 'a new session appends after the old one left');
ok(!$node->log_contains(qr/TRAP|PANIC|server process .* was terminated by signal/),
	'no backend crashed');

# --- unfinished newest segment --------------------------------------------
my $dir = $node->data_dir . '/batpak';
$node->stop;
for my $case (['short', 10], ['zero header', 64])
{
	my ($label, $size) = @$case;
	open(my $fh, '>', "$dir/00000002.seg") or die "cannot create: $!";
	print $fh ("\0" x $size);
	close $fh;
	$node->start;
	ok(wait_state($node, 'ready'), "$label: store ready");
	ok(!-e "$dir/00000002.seg", "$label: unfinished segment removed");
	ok($node->log_contains(qr/batpak: removed unfinished segment 00000002\.seg/),
		"$label: removal logged");
	is($node->safe_psql('postgres',
			q{SELECT count(*) FROM batpak.read_all()}),
		$label eq 'short' ? '1204' : '1205', "$label: events intact");
	is($node->safe_psql('postgres',
			q{SELECT global_sequence FROM batpak.append('s1', 'x', 'k', '{}')}),
		$label eq 'short' ? '1205' : '1206', "$label: appends continue");
	$node->stop;
}

done_testing();
