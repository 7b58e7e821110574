# Gates survive pg_dump / pg_restore: the gate table is extension
# configuration, and its regprocedure column finds the function again by
# signature in the restored database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use lib 'test/t/lib';
use BatpakTest;

my $src = new_batpak_node('gates_src');
$src->safe_psql('postgres', q{
	CREATE SCHEMA rules;
	CREATE FUNCTION rules.max_total(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
	    SELECT CASE WHEN (e.payload->>'total')::numeric > 100 THEN 'too big' END $$;
	CREATE FUNCTION rules.no_test(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
	    SELECT CASE WHEN e.entity LIKE '%-test' THEN 'no tests' END $$;
	SELECT batpak.gate_create('total', 'rules.max_total(batpak.new_event)',
	                          scope => 'shop', kinds => ARRAY['order.placed']);
	SELECT batpak.gate_create('tests', 'rules.no_test(batpak.new_event)',
	                          entity_prefix => 'o-');
});
my $gates_sql = q{SELECT gate, check_function, scope, kinds, entity_prefix FROM batpak.gates};
my $before = $src->safe_psql('postgres', $gates_sql);
is($before,
	"tests|rules.no_test(batpak.new_event)|||o-\ntotal|rules.max_total(batpak.new_event)|shop|{order.placed}|",
	'two gates defined');

my $dump = PostgreSQL::Test::Utils::tempdir . '/gates.dump';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('postgres') ],
	'pg_dump of the database with the extension');
$src->stop;

# A fresh cluster with batpak preloaded and an empty store; the restore
# creates the extension, the functions, and the gate rows.
my $dst = PostgreSQL::Test::Cluster->new('gates_dst');
$dst->init;
$dst->append_conf('postgresql.conf', "shared_preload_libraries = 'batpak'\n");
$dst->start;
$dst->command_ok([ 'pg_restore', '--exit-on-error', '-d', $dst->connstr('postgres'), $dump ],
	'pg_restore into a fresh cluster');
ok(wait_state($dst, 'ready'), 'writer ready after the restore');
is($dst->safe_psql('postgres', $gates_sql), $before, 'the gates are back, with their functions');

my ($code, $msg) = sql_error($dst,
	q{SELECT batpak.append('o-1', 'shop', 'order.placed', '{"total": 500}')});
is("$code: $msg", 'BP002: append denied by gate "total": too big', 'the restored gate denies');
($code, $msg) = sql_error($dst,
	q{SELECT batpak.append('o-1-test', 'shop', 'order.placed', '{"total": 5}')});
is("$code: $msg", 'BP002: append denied by gate "tests": no tests',
	'gates run in name order after the restore');
is($dst->safe_psql('postgres',
		q{SELECT entity_sequence FROM batpak.append('o-1', 'shop', 'order.placed', '{"total": 5}')}),
	'1', 'an event that passes is written');

# dropping the schema of the functions takes the gates with it
$dst->safe_psql('postgres', 'DROP SCHEMA rules CASCADE');
is($dst->safe_psql('postgres', 'SELECT count(*) FROM batpak.gates'), '0',
	'dropping the functions removed their gates');
is($dst->safe_psql('postgres',
		q{SELECT entity_sequence FROM batpak.append('o-1', 'shop', 'order.placed', '{"total": 500}')}),
	'2', 'and nothing denies any more');

# pg_upgrade refuses reg* columns in user tables; the gate table stores the
# signature as text, so a store with gates can be upgraded.
$dst->safe_psql('postgres', q{
	CREATE FUNCTION public.keep(e batpak.new_event) RETURNS text LANGUAGE sql AS 'SELECT NULL::text';
	SELECT batpak.gate_create('kept', 'public.keep(batpak.new_event)');
});
$dst->stop;
my $new = PostgreSQL::Test::Cluster->new('gates_upg');
$new->init;
$new->append_conf('postgresql.conf', "shared_preload_libraries = 'batpak'\n");
my $bindir = $dst->config_data('--bindir');
my $workdir = PostgreSQL::Test::Utils::tempdir;
my ($stdout, $stderr);
my $ok = IPC::Run::run(
	[
		'pg_upgrade', '--check', '-b', $bindir, '-B', $bindir,
		'-d', $dst->data_dir, '-D', $new->data_dir,
		'-p', $dst->port, '-P', $new->port, '-s', $new->host
	],
	'>', \$stdout, '2>', \$stderr, init => sub { chdir $workdir });
ok($ok, 'pg_upgrade --check accepts the cluster with gates');
like($stdout, qr/Clusters are compatible/, 'pg_upgrade --check: clusters are compatible')
  or diag("pg_upgrade said:\n$stdout\n$stderr");
done_testing();
