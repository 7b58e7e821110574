
# 001_restart.pl
#
# Everything a client was told survives a clean (fast) and an unclean
# (immediate) shutdown: the events, their receipts, the per-entity hash
# chains, the idempotency keys, and where the sequences continue.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use BatpakTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_batpak_node('restart');

# Model of the store, maintained as receipts come back.
my @log;            # receipts in global order, each with its entity
my %stream;         # entity => [ receipts ]
my %by_key;         # idempotency key => receipt

# Check a receipt against the model and add it.
sub accept_receipt
{
	my ($r, $entity, $key, $what) = @_;
	my $prev = $stream{$entity} ? $stream{$entity}[-1] : undef;
	is($r->{global_sequence}, scalar(@log) + 1,
		"$what: global_sequence follows the last one");
	is($r->{entity_sequence}, $prev ? $prev->{entity_sequence} + 1 : 1,
		"$what: entity_sequence follows the entity's last one");
	is($r->{prev_hash}, $prev ? $prev->{event_hash} : zero_hash(),
		"$what: prev_hash is the entity's previous event_hash");
	like($r->{event_hash}, qr/^[0-9a-f]{64}$/, "$what: event_hash is 32 bytes");
	isnt($r->{event_hash}, $r->{prev_hash}, "$what: event_hash is not prev_hash");
	$r->{entity} = $entity;
	push @log, $r;
	push @{ $stream{$entity} }, $r;
	$by_key{$key} = $r if defined $key;
	return $r;
}

sub append1
{
	my ($entity, $args, $key, $what) = @_;
	my @r = receipts_of($node, "batpak.append($args)");
	is(scalar @r, 1, "$what: one receipt");
	return accept_receipt($r[0], $entity, $key, $what);
}

# --- a varied history -------------------------------------------------------

my $corr = 'c0ffee00-0000-4000-8000-000000000001';
my $a = append1('acct-1',
	qq{'acct-1', 'bank', 'opened', '{"owner": "ann"}', '{"source": "t"}', 0, 'key-a1', '$corr'},
	'key-a1', 'first append with metadata, key and correlation');
my $b = append1('acct-1',
	qq{'acct-1', 'bank', 'deposited', '{"amount": 10}', NULL, 1, NULL, NULL, '$a->{event_id}'},
	undef, 'append caused by the first');
my $c = append1('acct-2', q{'acct-2', 'bank', 'opened', '{"owner": "bob"}'},
	undef, 'append without correlation');

my @batch = receipts_of(
	$node, q{batpak.append_batch(ARRAY[
	ROW('acct-2', 'bank', 'deposited', '{"amount": 5}', NULL, NULL, 'key-b1', NULL, NULL)::batpak.new_event,
	ROW('acct-3', 'bank', 'opened', '{"owner": "cy"}', '{"m": 1}', 0, 'key-b2', NULL, NULL)::batpak.new_event,
	ROW('acct-1', 'bank', 'withdrawn', '{"amount": 3}', NULL, 2, NULL, NULL, NULL)::batpak.new_event])});
is(scalar @batch, 3, 'batch returns one receipt per event');
accept_receipt($batch[0], 'acct-2', 'key-b1', 'batch item 1');
accept_receipt($batch[1], 'acct-3', 'key-b2', 'batch item 2');
accept_receipt($batch[2], 'acct-1', undef, 'batch item 3');

for my $i (1 .. 6)
{
	my $entity = 'acct-' . (1 + $i % 3);
	append1($entity,
		qq{'$entity', 'bank', 'tick', '{"i": $i}', NULL, NULL, 'key-loop-$i'},
		"key-loop-$i", "loop append $i");
}
is(scalar @log, 12, '12 events appended');

# Correlation and causation as stored.
is( $node->safe_psql('postgres',
		"SELECT correlation_id, causation_id IS NULL FROM batpak.get('$a->{event_id}')"),
	"$corr|t",
	'explicit correlation is stored, no causation');
is( $node->safe_psql('postgres',
		"SELECT correlation_id, causation_id FROM batpak.get('$b->{event_id}')"),
	"$corr|$a->{event_id}",
	'correlation is inherited from the causing event');
is( $node->safe_psql('postgres',
		"SELECT correlation_id, causation_id IS NULL FROM batpak.get('$c->{event_id}')"),
	"$c->{event_id}|t",
	'without correlation nor causation the correlation is the event itself');

# read_all agrees with every receipt.
my $receipts_from_read_all = $node->safe_psql('postgres',
	'SELECT ' . receipt_cols('e') . ' FROM batpak.read_all() e');
is($receipts_from_read_all, join("\n", map { $_->{line} } @log),
	'read_all returns exactly the receipts, in global order');

my $snapshot = read_all_text($node);

# --- what must hold after every restart --------------------------------------

sub check_store
{
	my ($label) = @_;
	ok(wait_state($node, 'ready'), "$label: writer ready");

	is(read_all_text($node), $snapshot,
		"$label: read_all output identical to before");
	for my $entity (sort keys %stream)
	{
		is( $node->safe_psql('postgres',
				"SELECT batpak.stream_version('$entity')"),
			scalar @{ $stream{$entity} },
			"$label: stream_version($entity)");
	}
	my $n = scalar @log;
	is(integrity_report($node), "$n|1|$n|$n|0|0",
		"$label: sequences dense, chains linked, global order");
	is(verify_report($node), scalar(keys %stream) . "|t|$n|0",
		"$label: verify_chain(NULL) ok for every entity");
	is( $node->safe_psql('postgres',
			"SELECT global_sequence, entity FROM batpak.get('$log[-1]{event_id}')"),
		"$n|$log[-1]{entity}",
		"$label: get() finds the newest event");

	# Idempotency keys are durable: the key wins even when the call differs,
	# and nothing is written.
	for my $key (sort keys %by_key)
	{
		my @r = receipts_of($node,
			qq{batpak.append('other-$key', 'elsewhere', 'retry', '{"x": 1}', NULL, NULL, '$key')}
		);
		is(join("\n", map { $_->{line} } @r),
			$by_key{$key}{line},
			"$label: re-append with $key returns the original receipt");
	}
	my @r = receipts_of($node, q{batpak.append_batch(ARRAY[
		ROW('acct-9', 's', 'k', '{}', NULL, NULL, 'key-b2', NULL, NULL)::batpak.new_event,
		ROW('acct-9', 's', 'k', '{}', NULL, NULL, 'key-a1', NULL, NULL)::batpak.new_event])});
	is( join("\n", map { $_->{line} } @r),
		"$by_key{'key-b2'}{line}\n$by_key{'key-a1'}{line}",
		"$label: batch of known keys returns the original receipts");
	is( $node->safe_psql('postgres',
			'SELECT count(*), max(global_sequence) FROM batpak.read_all()'),
		"$n|$n", "$label: idempotent re-appends wrote nothing");
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM batpak.read_all() WHERE entity LIKE 'other-%' OR entity = 'acct-9'}),
		'0', "$label: no event of the retried entities");

	# New appends continue the sequences and the chain.
	my $entity = 'acct-2';
	my $key    = "key-after-$label";
	$key =~ s/\W/-/g;
	append1($entity,
		qq{'$entity', 'bank', 'after-restart', '{"label": "$label"}', NULL, }
		  . scalar(@{ $stream{$entity} }) . qq{, '$key'},
		$key, "$label: append after restart");
	$snapshot = read_all_text($node);
}

$node->stop('fast');
$node->start;
check_store('fast restart');

$node->stop('immediate');
$node->start;
check_store('immediate restart');

# And once more, so that the key and event appended after the immediate
# restart are checked across a restart too.
$node->stop('immediate');
$node->start;
check_store('second immediate restart');

$node->stop('fast');
done_testing();
