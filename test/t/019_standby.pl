# 019_standby.pl
#
# batpak on a hot standby: the segment files and the writer's index exist on
# the primary only (the writer waits for the end of recovery, which never
# comes on a standby), so reads fail with 0A000 and a message that says so
# instead of "writer is not ready ... retry shortly" (cursor_wait too, which
# would otherwise wait out its timeout again and again), appends fail as any
# write on a standby does (25006), and the primary is unaffected.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('standby_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'batpak'\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION batpak');
ok(wait_state($primary, 'ready'), 'primary: writer ready');
is( $primary->safe_psql('postgres',
		q{SELECT max(entity_sequence) FROM batpak.append_batch(ARRAY(
		    SELECT ROW('sb-1', 'sb', 'k', jsonb_build_object('i', i), NULL, NULL, NULL, NULL, NULL)::batpak.new_event
		      FROM generate_series(1, 3) i))}),
	'3', 'primary: three events appended');

$primary->safe_psql('postgres', q{SELECT batpak.cursor_create('sb-cursor')});
$primary->backup('sb');
my $standby = PostgreSQL::Test::Cluster->new('standby_standby');
$standby->init_from_backup($primary, 'sb', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby: in recovery');
is($standby->safe_psql('postgres', 'SELECT state FROM batpak.stats'),
	'stopped', 'standby: stats says the writer is stopped');

for my $read (
	q{SELECT count(*) FROM batpak.read_stream('sb-1')},
	q{SELECT count(*) FROM batpak.read_all()},
	q{SELECT batpak.stream_version('sb-1')},
	q{SELECT count(*) FROM batpak.verify_chain()},
	q{SELECT batpak.cursor_wait('sb-cursor', 100)})
{
	my ($state, $msg) = sql_error($standby, $read);
	is($state // '', '0A000', "standby: $read fails with 0A000");
	is($msg // '', 'batpak events cannot be read on a standby server',
		"standby: $read says why");
}
my ($astate) = sql_error($standby,
	q{SELECT batpak.append('sb-1', 'sb', 'k', '{}')});
is($astate // '', '25006', 'standby: an append fails with 25006');

is( $primary->safe_psql('postgres',
		q{SELECT string_agg(entity_sequence::text, ',' ORDER BY entity_sequence) FROM batpak.read_stream('sb-1')}),
	'1,2,3', 'primary: the events read back');

$standby->stop;
$primary->stop;
done_testing();
