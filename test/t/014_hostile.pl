
# 014_hostile.pl
#
# Hostile input: test/t/hostile.py makes HOSTILE_CALLS (default 10,000)
# malformed or extreme calls of every SQL function and view of batpak (NULLs,
# huge and empty strings, control characters, invalid names, deep and huge
# jsonb, huge, empty and multi-dimensional arrays, negative and enormous
# counts, wrong types through casts), each in its own statement.  Every call
# returns rows or an error with a SQLSTATE outside class XX, the connection
# survives every call, the server log shows no crashed process, and the store
# still verifies.  HOSTILE_SEED replays a run (the seed is printed).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $calls = $ENV{HOSTILE_CALLS} // 10000;
my $seed  = $ENV{HOSTILE_SEED} // (time() ^ $$);
note "hostile input: $calls calls, seed $seed (HOSTILE_SEED=$seed replays it)";

my $python = python_with_psycopg();

my $node = new_batpak_node('hostile', "restart_after_crash = off\n");
$node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 30) i,
	  LATERAL batpak.append('entity-' || (i % 3), 's', 'k', jsonb_build_object('i', i));
	CREATE FUNCTION hostile_gate(e batpak.new_event) RETURNS text
	  LANGUAGE sql AS $$ SELECT CASE WHEN e.kind = 'deny' THEN 'denied' END $$;
	CREATE FUNCTION hostile_gate_bad(integer) RETURNS text LANGUAGE sql AS $$ SELECT NULL $$;
	SELECT batpak.cursor_create('c1');
});
my $logpos = -s $node->logfile;

my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ $python, "$FindBin::RealBin/hostile.py", $node->connstr('postgres'), $calls, $seed ],
	'<', '/dev/null', '>', \$out, '2>', \$err);
ok($ok, 'the generator ran to the end') or diag($err);

my ($total, $total_ok, $total_err) = (0, 0, 0);
my @fns;
for my $line (split /\n/, $out)
{
	next unless $line =~ /^fn (\S+) (\d+) (\d+) (\d+)$/;
	push @fns, $1;
	$total += $2;
	$total_ok += $3;
	$total_err += $4;
	cmp_ok($2, '>=', 100, "$1: called $2 times ($3 returned rows, $4 errors)");
	is($3 + $4, $2, "$1: every call returned rows or an error");
}
is(scalar(@fns), 20, 'every function and view was called');
is($total, $calls, "$calls calls in all");
ok($total_ok > 0 && $total_err > 0, "both outcomes occur ($total_ok rows, $total_err errors)");
my ($states) = $out =~ /^sqlstates (.*)$/m;
note "SQLSTATEs: " . ($states // '?');
my ($problems) = $out =~ /^problems (.*)$/m;
is($problems, '[]', 'no call lost its connection or ended in an internal error');

my $log = slurp_file($node->logfile, $logpos);
unlike($log, qr/terminated by signal|was terminated|PANIC|TRAP:|server process .* exited with exit code [^01]/,
	'the server log shows no crashed process');
is($node->safe_psql('postgres', 'SELECT state FROM batpak.stats'), 'ready', 'the writer still serves');
is(verify_report($node), expected_verify_report($node), 'every chain verifies');
my ($count, $min, $max, $distinct, $broken, $misordered) = split /\|/, integrity_report($node);
is("$distinct|$broken|$misordered", "$count|0|0", "$count events, entity sequences dense and linked");

# The files: the directory 0700, every segment 0600, all owned by the server
# user (the user running the tests), after segments were created by rotation.
# (pgsql_tmp_batpak_control.tmp exists while the writer replaces the control
# file.)
$node->safe_psql('postgres', q{ALTER SYSTEM SET batpak.segment_size = '1MB'; SELECT pg_reload_conf();});
ok( deadline_loop(
		60,
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM batpak.append('big', 's', 'k', jsonb_build_object('p', repeat('x', 200000)))});
			return scalar(segment_files($node)) >= 3;
		}),
	'files: the store spans several segments');
my $dir = segment_dir($node);
my @st = stat($dir);
is(sprintf('%04o', $st[2] & 07777), '0700', 'files: the directory is 0700');
is($st[4], $<, 'files: the directory belongs to the server user');
for my $f (segment_files($node), 'pgsql_tmp_batpak_control')
{
	my @fs = stat("$dir/$f");
	is(sprintf('%04o', $fs[2] & 07777) . " uid $fs[4]", sprintf('0600 uid %d', $<),
		"files: $f is 0600 and belongs to the server user");
}
my @other = grep { !/^(?:[0-9A-F]{8}\.seg|pgsql_tmp_batpak_control(?:\.tmp)?)$/ } do { opendir(my $dh, $dir) or die; grep { !/^\.\.?$/ } readdir $dh };
is_deeply(\@other, [], 'files: nothing but segments and the control file in the directory');

$node->stop;
done_testing();
