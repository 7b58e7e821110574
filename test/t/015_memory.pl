
# 015_memory.pl
#
# Resource use.  One session's memory stays flat over many appends: sampled
# from its own pg_backend_memory_contexts every tenth of the run, (1) inside
# one statement of immediate-mode appends and (2) across autocommit
# transactional appends, one statement each; after a warm-up tenth, the
# samples may not grow by more than 256 kB (a leak of 8 bytes per call would
# exceed that).  (3) The writer's private memory (Anonymous in
# /proc/PID/smaps_rollup) stays bounded under rounds of a 64-client pgbench
# load: after the first round it grows by less than 8 MB over the next four.
#
# MEMORY_APPENDS (default 100,000 for (1), a fifth of it for (2)) sets the
# length; "make test-long" runs 1,000,000.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n = $ENV{MEMORY_APPENDS} // 100_000;
my $tx_n = int($n / 5);
my $step = int($n / 10);

# the appends need not wait for the disk: the code paths are the same
my $node = new_batpak_node('memory',
	"max_connections = 80\nsynchronous_commit = off\nbatpak.synchronous_commit = off\n");

# The backend's memory contexts, summed, computed afresh at every call (a
# subquery on the view would be evaluated once: an uncorrelated one is an
# InitPlan, and a correlated one rescans the view's materialized rows).
$node->safe_psql('postgres', q{
	CREATE FUNCTION mem_total(anyelement) RETURNS numeric LANGUAGE plpgsql VOLATILE AS
	$$ BEGIN RETURN (SELECT sum(total_bytes) FROM pg_backend_memory_contexts); END $$;
});

sub check_flat
{
	my ($label, @samples) = @_;
	is(scalar(@samples), 10, "$label: 10 samples");
	my ($base, @rest) = @samples[ 1 .. $#samples ];
	my $max = $base;
	$max = $_ > $max ? $_ : $max for @rest;
	note "$label: memory samples @samples";
	cmp_ok($max - $base, '<=', 256 * 1024,
		"$label: memory after the first tenth grows by at most 256 kB ($base -> max $max)");
}

# (1) one statement, immediate mode
my @s1 = split /\n/, $node->safe_psql('postgres', qq{
	SET batpak.transactional = off;
	SELECT mem_total(i)
	  FROM (SELECT i, a.global_sequence
	          FROM generate_series(1, $n) i,
	               LATERAL batpak.append('mem-' || (i % 100), 'mem', 'k', jsonb_build_object('i', i)) a
	        OFFSET 0) calls  -- OFFSET 0: the filter below must not reach generate_series
	 WHERE i % $step = 0;
});
check_flat("one statement of $n immediate appends", @s1);

# (2) autocommit transactional appends, one statement each
my $script = '';
for my $k (1 .. $tx_n)
{
	$script .= "SELECT batpak.append('tx-' || ($k % 50), 'mem', 'k', '{\"k\": $k}') \\g /dev/null\n";
	$script .= "SELECT mem_total($k);\n" if $k % ($tx_n / 10) == 0;
}
my @s2 = split /\n/, $node->safe_psql('postgres', $script);
check_flat("$tx_n transactional appends, one per transaction", @s2);

is($node->safe_psql('postgres', 'SELECT count(*) FROM batpak.read_all()'), $n + $tx_n,
	'every append is stored');

# (3) the writer under 64 clients
my $pgbench_script = PostgreSQL::Test::Utils::tempdir . '/append.sql';
open(my $fh, '>', $pgbench_script) or die;
print $fh "\\set e random(1, 1000)\n"
  . "SELECT batpak.append('load-' || :e, 'mem', 'k', '{}');\n";
close $fh;
my $writer = $node->safe_psql('postgres', 'SELECT writer_pid FROM batpak.stats');

sub writer_anon
{
	open(my $f, '<', "/proc/$writer/smaps_rollup") or die "smaps_rollup of $writer: $!";
	my ($kb) = join('', <$f>) =~ /^Anonymous:\s+(\d+) kB/m;
	close $f;
	return $kb * 1024;
}
my @w;
for my $round (1 .. 5)
{
	$node->command_ok(
		[ 'pgbench', '-n', '-c', '64', '-j', '2', '-t', int($n / 500) || 1, '-f', $pgbench_script,
		  '-d', $node->connstr('postgres') ],
		"writer: pgbench round $round with 64 clients");
	push @w, writer_anon();
}
note "writer Anonymous bytes after each round: @w";
my $wmax = $w[1];
$wmax = $_ > $wmax ? $_ : $wmax for @w[ 2 .. 4 ];
cmp_ok($wmax - $w[0], '<=', 8 * 1024 * 1024,
	"writer: private memory grows by at most 8 MB after the first round ($w[0] -> max $wmax)");
is($node->safe_psql('postgres', 'SELECT writer_pid FROM batpak.stats'), $writer,
	'writer: the same writer served every round');

$node->stop;
done_testing();
