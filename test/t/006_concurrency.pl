
# 006_concurrency.pl
#
# Many clients appending at once (pgbench): every append gets exactly one
# global sequence, 1..N without gaps; every entity's stream is dense and
# linked; batches from concurrent clients are never interleaved.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_batpak_node('concurrency');

# 8 clients x 200 appends: to 21 shared entities and to one per client.
$node->pgbench(
	'-n -c 8 -j 2 -t 200',
	0,
	[ qr{number of transactions actually processed: 1600/1600}, qr{number of failed transactions: 0 } ],
	[qr{^$}],
	'pgbench: 8 clients x 200 appends',
	{
		'006_shared@1' =>
		  q{SELECT batpak.append('ent-' || (random()*20)::int, 'scope', 'kind', '{"a":1}');},
		'006_own@1' =>
		  q{SELECT batpak.append('client-' || :client_id, 'scope', 'kind', '{"a":1}');},
	},
	'postgres');

is( $node->safe_psql('postgres',
		'SELECT count(*), min(global_sequence), max(global_sequence) FROM batpak.read_all()'),
	'1600|1|1600', 'read_all: 1600 events, global sequences 1..1600');
is(integrity_report($node), '1600|1|1600|1600|0|0',
	'global sequences distinct and in order, entity sequences dense, chains linked');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM batpak.read_all()
		   WHERE entity !~ '^(ent-([0-9]|1[0-9]|20)|client-[0-7])$'}),
	'0', 'only the entities the scripts name');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM (SELECT entity, count(*) AS n FROM batpak.read_all() GROUP BY entity) s
		   WHERE batpak.stream_version(entity) <> n}),
	'0', 'stream_version of every entity equals its number of events');
is(verify_report($node), expected_verify_report($node),
	'verify_chain(NULL) ok for every entity');

# 4 clients x 50 batches of 3, the middle event to a shared entity: each
# batch must occupy three consecutive global sequences, in array order.
$node->pgbench(
	'-n -c 4 -j 2 -t 50',
	0,
	[ qr{number of transactions actually processed: 200/200}, qr{number of failed transactions: 0 } ],
	[qr{^$}],
	'pgbench: 4 clients x 50 batches of 3',
	{
		'006_batch' => q{
SELECT count(*) FROM (SELECT gen_random_uuid()::text AS t) s, batpak.append_batch(ARRAY[
  ROW('batch-' || :client_id, 'scope', 'pair', jsonb_build_object('t', t, 'n', 1), NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
  ROW('ent-' || (random()*20)::int, 'scope', 'pair', jsonb_build_object('t', t, 'n', 2), NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
  ROW('batch-' || :client_id, 'scope', 'pair', jsonb_build_object('t', t, 'n', 3), NULL, NULL, NULL, NULL, NULL)::batpak.new_event]);
},
	},
	'postgres');

is(integrity_report($node), '2200|1|2200|2200|0|0',
	'2200 events: dense, in order, chains linked');
is( $node->safe_psql('postgres',
		q{SELECT count(*), count(*) FILTER (WHERE n <> 3 OR span <> 2 OR ns <> '{1,2,3}')
		    FROM (SELECT payload->>'t', count(*) AS n,
		                 max(global_sequence) - min(global_sequence) AS span,
		                 array_agg((payload->>'n')::int ORDER BY global_sequence) AS ns
		            FROM batpak.read_all() WHERE kind = 'pair' GROUP BY 1) s}),
	'200|0', '200 batches, each three consecutive global sequences in array order');
is(verify_report($node), expected_verify_report($node),
	'verify_chain(NULL) ok after the batches');

$node->stop('fast');
done_testing();
