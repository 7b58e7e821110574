
# BatpakTest.pm
#
# Shared helpers for batpak's TAP tests: starting a node with the library
# preloaded, waiting for the writer's state, capturing SQLSTATEs, reading the
# segment files ($PGDATA/batpak/%08X.seg) with the frame format fixed in
# docs/decisions.md, and crashing a node the way a power cut would (SIGKILL to
# the postmaster and every child at once).

package BatpakTest;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(
  new_batpak_node wait_state sql_error receipts_of receipt_cols
  read_all_text integrity_report verify_report expected_verify_report zero_hash
  segment_dir segment_files parse_segment crc32c flip_byte truncate_file
  patch_file read_bytes set_control_point
  crash_node child_pids wait_pids_gone proc_state deadline_loop
  harness_running python_with_psycopg
);

# PostgreSQL::Test::Cluster->init runs "$PG_REGRESS --config-auth"; the
# PGXS prove_installcheck target sets it, a hand-run prove does not.
BEGIN
{
	if (!defined $ENV{PG_REGRESS} || $ENV{PG_REGRESS} eq '')
	{
		my $pgxs = `pg_config --pgxs`;
		chomp $pgxs;
		(my $dir = $pgxs) =~ s{/src/makefiles/pgxs\.mk$}{};
		$ENV{PG_REGRESS} = "$dir/src/test/regress/pg_regress";
	}
}

# A crash test SIGKILLs the postmaster.  Its parent (pg_ctl) has exited, so it
# is an orphan; so are its children once it dies.  Unless some process reaps
# them, they stay zombies, and a zombie's pid passes kill(pid, 0): the next
# postmaster then refuses to start because postmaster.pid names a "live"
# process.  Becoming a child subreaper (Linux) makes those orphans ours, so
# crash_node() can reap them with waitpid().
my %PRCTL_SYSCALL = (x86_64 => 157, aarch64 => 167, i686 => 172, i386 => 172);
my $PR_SET_CHILD_SUBREAPER = 36;
{
	my $machine = (POSIX::uname())[4];
	my $nr = $PRCTL_SYSCALL{$machine};
	syscall($nr, $PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	  if defined $nr && $^O eq 'linux';
}

# 32 zero bytes, hex: prev_hash of the first event of an entity.
sub zero_hash { return '00' x 32; }

# Create, configure and start a node with batpak preloaded, create the
# extension in "postgres" and wait until the writer reports "ready".
sub new_batpak_node
{
	my ($name, $extra_conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'batpak'\n" . ($extra_conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION batpak');
	wait_state($node, 'ready')
	  or BAIL_OUT("batpak writer of node $name never became ready");
	return $node;
}

# Bounded poll until the writer has left 'starting' and 'recovering', then
# true if batpak.stats.state is $state.
sub wait_state
{
	my ($node, $state) = @_;
	$node->poll_query_until('postgres',
		q{SELECT state NOT IN ('starting', 'recovering') FROM batpak.stats})
	  or return 0;
	my $now = $node->safe_psql('postgres', 'SELECT state FROM batpak.stats');
	diag "batpak.stats.state is '$now', expected '$state'" if $now ne $state;
	return $now eq $state;
}

# Run $sql (one or more statements) with VERBOSITY verbose and return
# (sqlstate, message) of the first ERROR, or () when it succeeded.
sub sql_error
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		on_error_stop => 1);
	return () if $ret == 0;
	if ($stderr =~ /ERROR:\s+([0-9A-Z]{5}):\s+([^\n]*)/)
	{
		return ($1, $2);
	}
	return ('?????', $stderr);
}

# The receipt columns as text: bytea as plain hex so they compare with the
# hex of the segment files.
sub receipt_cols
{
	my ($alias) = @_;
	return join(', ',
		"$alias.event_id",        "$alias.global_sequence",
		"$alias.entity_sequence", "$alias.committed_at",
		"encode($alias.event_hash, 'hex')",
		"encode($alias.prev_hash, 'hex')");
}

# Run "SELECT <receipt columns> FROM $from r" and return the receipts as
# hashrefs (event_id, global_sequence, entity_sequence, committed_at,
# event_hash, prev_hash, line), in the order the function returned them.
sub receipts_of
{
	my ($node, $from) = @_;
	my $out = $node->safe_psql('postgres',
		'SELECT ' . receipt_cols('r') . " FROM $from r");
	my @receipts;
	for my $line (split /\n/, $out)
	{
		my %r;
		@r{qw(event_id global_sequence entity_sequence committed_at
			  event_hash prev_hash)} = split /\|/, $line, -1;
		$r{line} = $line;
		push @receipts, \%r;
	}
	return @receipts;
}

# Every column of read_all(), in the order it returns rows.
sub read_all_text
{
	my ($node, $args) = @_;
	$args //= '';
	return $node->safe_psql('postgres',
		"SELECT global_sequence, event_id, entity, scope, kind, entity_sequence,"
		  . " correlation_id, causation_id, committed_at, payload, metadata,"
		  . " encode(event_hash, 'hex'), encode(prev_hash, 'hex')"
		  . " FROM batpak.read_all($args)");
}

# "count|min|max|distinct|broken|misordered" over read_all():
# - count, min and max global_sequence and the number of distinct ones (dense
#   store: n|1|n|n);
# - broken: events whose entity_sequence is not their rank in the entity's
#   stream, or whose prev_hash is not the event_hash of the entity's previous
#   event (32 zero bytes for the first);
# - misordered: rows returned out of global order.
sub integrity_report
{
	my ($node) = @_;
	return $node->safe_psql(
		'postgres', q{
WITH e AS (SELECT *, row_number() OVER () AS pos FROM batpak.read_all()),
     w AS (SELECT e.*,
                  row_number() OVER s AS rank,
                  lag(event_hash) OVER s AS before,
                  lag(global_sequence) OVER (ORDER BY pos) AS prev_global
             FROM e WINDOW s AS (PARTITION BY entity ORDER BY global_sequence))
SELECT count(*),
       coalesce(min(global_sequence), 0),
       coalesce(max(global_sequence), 0),
       count(DISTINCT global_sequence),
       count(*) FILTER (WHERE entity_sequence <> rank
                        OR prev_hash <> coalesce(before, decode(repeat('00', 32), 'hex'))),
       count(*) FILTER (WHERE prev_global >= global_sequence)
  FROM w});
}

# "entities|all ok|events|bad" over verify_chain(NULL).
sub verify_report
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		'SELECT count(*), bool_and(ok), sum(events),'
		  . ' count(*) FILTER (WHERE NOT ok OR first_bad_sequence IS NOT NULL)'
		  . ' FROM batpak.verify_chain(NULL)');
}

# What verify_report() must say for the events read_all() returns: every
# entity ok, all events counted.
sub expected_verify_report
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT count(DISTINCT entity) || '|t|' || count(*) || '|0' FROM batpak.read_all()});
}

sub segment_dir
{
	my ($node) = @_;
	return $node->data_dir . '/batpak';
}

# Segment file names, oldest first.
sub segment_files
{
	my ($node) = @_;
	my $dir = segment_dir($node);
	opendir(my $dh, $dir) or croak "cannot open $dir: $!";
	my @files = sort grep { /^[0-9A-F]{8}\.seg$/ } readdir $dh;
	closedir $dh;
	return @files;
}

# CRC-32C (Castagnoli), as pg_crc32c computes it.
my @CRC_TABLE = map {
	my $c = $_;
	$c = ($c & 1) ? (($c >> 1) ^ 0x82F63B78) : ($c >> 1) for 1 .. 8;
	$c
} 0 .. 255;

sub crc32c
{
	my ($data) = @_;
	my $crc = 0xFFFFFFFF;
	$crc = $CRC_TABLE[ ($crc ^ $_) & 0xFF ] ^ ($crc >> 8)
	  for unpack('C*', $data);
	return $crc ^ 0xFFFFFFFF;
}

sub _uuid
{
	my $h = unpack('H*', $_[0]);
	return join('-',
		substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
		substr($h, 16, 4), substr($h, 20));
}

use constant {
	SEG_HEADER_SIZE   => 64,
	FRAME_HEADER_SIZE => 8,
	BODY_FIXED_SIZE   => 108,
	FLAG_BATCH_BEGIN  => 1,
	FLAG_BATCH_END    => 2,
};

# Parse a segment file per docs/decisions.md.  Returns a hashref:
#   magic, version, segno, size (file size), data_end (end of the last
#   complete frame), tail (what stopped the scan: 'eof', 'zeros', 'short'),
#   frames => [ { offset, length, crc, crc_ok, layout_ok, end, global_sequence,
#                 entity_sequence, event_id, flags, entity, kind,
#                 idempotency_key, event_hash, prev_hash } ]
sub parse_segment
{
	my ($path) = @_;
	open(my $fh, '<:raw', $path) or croak "cannot open $path: $!";
	local $/;
	my $data = <$fh>;
	close $fh;

	my %seg = (size => length($data), frames => []);
	croak "$path: shorter than its header" if length($data) < SEG_HEADER_SIZE;
	@seg{qw(magic version segno)} = unpack('a8 V V', $data);

	my $off = SEG_HEADER_SIZE;
	$seg{tail} = 'eof';
	while ($off < length($data))
	{
		if (length($data) - $off < FRAME_HEADER_SIZE)
		{
			$seg{tail} = 'short';
			last;
		}
		my ($len, $crc) = unpack('V V', substr($data, $off, FRAME_HEADER_SIZE));
		if ($len == 0 && $crc == 0)
		{
			$seg{tail} = 'zeros';
			last;
		}
		if ($off + FRAME_HEADER_SIZE + $len > length($data))
		{
			$seg{tail} = 'short';
			last;
		}
		my $body = substr($data, $off + FRAME_HEADER_SIZE, $len);
		my %f = (
			offset => $off,
			length => $len,
			crc    => $crc,
			crc_ok => crc32c($body) == $crc ? 1 : 0,
			end    => $off + FRAME_HEADER_SIZE + $len);
		if ($len >= BODY_FIXED_SIZE + 64)
		{
			my ($elen, $slen, $klen, $ilen, $plen, $mlen);
			(@f{qw(global_sequence entity_sequence)}) = unpack('Q< Q<', $body);
			$f{event_id} = _uuid(substr($body, 16, 16));
			$f{flags} = unpack('V', substr($body, 72, 4));
			(@f{qw(xid top_xid)}) = unpack('Q< Q<', substr($body, 92, 16));
			$f{marker} = ($f{flags} & 0x60) ? 1 : 0;
			($elen, $slen, $klen, $ilen, $plen, $mlen) =
			  unpack('v v v v V V', substr($body, 76, 16));
			my $p = BODY_FIXED_SIZE;
			$f{entity} = substr($body, $p, $elen);
			$p += $elen + $slen;
			$f{kind} = substr($body, $p, $klen);
			$p += $klen;
			$f{idempotency_key} = substr($body, $p, $ilen);
			$p += $ilen;
			$f{payload_offset} = $off + FRAME_HEADER_SIZE + $p;
			$f{payload_length} = $plen;
			$p += $plen + $mlen;
			$f{layout_ok} = ($p + 64 == $len) ? 1 : 0;
			$f{prev_hash}  = unpack('H*', substr($body, $len - 64, 32));
			$f{event_hash} = unpack('H*', substr($body, $len - 32, 32));
		}
		else
		{
			$f{layout_ok} = 0;
		}
		push @{ $seg{frames} }, \%f;
		$off = $f{end};
	}
	$seg{data_end} = $off;
	return \%seg;
}

# Make the control file ($PGDATA/batpak/pgsql_tmp_batpak_control, see writer.c) name another
# last sync point: what it would say had the writer not synced (or not yet
# recorded) what lies after it.  Layout: magic, version, segno at 12 (u32),
# offset at 16 (u64), store id, CRC32C of bytes 0..59 at 60, machine byte
# order (little-endian here).
sub set_control_point
{
	my ($node, $segno, $offset) = @_;
	my $path = segment_dir($node) . '/pgsql_tmp_batpak_control';
	my $c = read_bytes($path, 0, 64);
	croak "$path is not a batpak control file" unless substr($c, 0, 8) eq 'BATPAKCT';
	substr($c, 12, 4) = pack('V', $segno);
	substr($c, 16, 8) = pack('Q<', $offset);
	substr($c, 60, 4) = pack('V', crc32c(substr($c, 0, 60)));
	patch_file($path, 0, $c);
	return;
}

# Overwrite bytes of a file in place.
sub patch_file
{
	my ($path, $offset, $bytes) = @_;
	open(my $fh, '+<:raw', $path) or croak "cannot open $path: $!";
	sysseek($fh, $offset, 0) or croak "seek $path: $!";
	syswrite($fh, $bytes) == length($bytes) or croak "write $path: $!";
	close $fh or croak "close $path: $!";
	return;
}

sub read_bytes
{
	my ($path, $offset, $length) = @_;
	open(my $fh, '<:raw', $path) or croak "cannot open $path: $!";
	sysseek($fh, $offset, 0) or croak "seek $path: $!";
	sysread($fh, my $bytes, $length) == $length
	  or croak "read $path at $offset: $!";
	close $fh;
	return $bytes;
}

# XOR one byte of a file with 0xFF.
sub flip_byte
{
	my ($path, $offset) = @_;
	patch_file($path, $offset, chr(ord(read_bytes($path, $offset, 1)) ^ 0xFF));
	return;
}

sub truncate_file
{
	my ($path, $size) = @_;
	truncate($path, $size) or croak "cannot truncate $path to $size: $!";
	croak "$path is not $size bytes after truncate" unless -s $path == $size;
	return;
}

# The python3 that has psycopg 3 (Debian's python3-psycopg belongs to the
# system python3, which may not be the first python3 on PATH); dies without.
sub python_with_psycopg
{
	my ($python) = grep {
		system("$_ -c 'import psycopg' >/dev/null 2>&1") == 0
	} ('/usr/bin/python3', 'python3');
	die "no python3 with psycopg 3: install the Debian package python3-psycopg (make deps)\n"
	  unless defined $python;
	return $python;
}

# Run $cond->() until it returns true or $seconds pass; returns its last
# value.  Polls every 10ms: for conditions that are cheap to evaluate.
sub deadline_loop
{
	my ($seconds, $cond) = @_;
	my $deadline = time() + $seconds;
	while (1)
	{
		my $v = $cond->();
		return $v if $v;
		return $v if time() > $deadline;
		usleep(10_000);
	}
}

# Pump an IPC::Run harness without blocking; true while its process runs.
sub harness_running
{
	my ($h) = @_;
	return 0 unless $h->pumpable;
	$h->pump_nb;
	return $h->pumpable;
}

# Single-letter state of a process ('R', 'S', 'Z', ...), undef when gone.
sub proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return undef;
	my $stat = <$fh>;
	close $fh;
	return undef unless defined $stat;
	return $stat =~ /\)\s+(\S)/ ? $1 : undef;
}

# Pids whose parent is $ppid.
sub child_pids
{
	my ($ppid) = @_;
	my @kids;
	opendir(my $dh, '/proc') or croak "cannot read /proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $dh)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh>;
		close $fh;
		next unless defined $stat && $stat =~ /\)\s+\S\s+(\d+)/;
		push @kids, $pid if $1 == $ppid;
	}
	closedir $dh;
	return @kids;
}

# Wait (bounded) until none of @pids exists any more, reaping those that
# became our children.  True when all are gone.
sub wait_pids_gone
{
	my ($seconds, @pids) = @_;
	return deadline_loop(
		$seconds,
		sub {
			for my $pid (@pids)
			{
				waitpid($pid, POSIX::WNOHANG());
				return 0 if defined proc_state($pid);
			}
			return 1;
		});
}

# Simulate a power cut: stop the postmaster and all its children, SIGKILL
# them, then wait until every one of them is gone, so that the node can be
# started again.  Returns the number of processes killed.
sub crash_node
{
	my ($node) = @_;
	my $pm = $node->{_pid};
	croak 'node is not running' unless defined $pm;
	my @kids = child_pids($pm);
	note "SIGSTOP, then SIGKILL to postmaster $pm and children @kids";
	# All stopped first, so that all die in the same instant: signals go out
	# one process at a time, and a child that outlives the postmaster by a
	# moment may see it gone and act on it (the batpak writer leaves the
	# ready state on its way out, and a backend still running then reports
	# that instead of losing its connection).
	kill('STOP', $pm, @kids);
	my $n = kill('KILL', $pm, @kids);
	# Same bookkeeping as PostgreSQL::Test::Cluster::kill9.
	$node->{_pid} = undef;
	wait_pids_gone(60, $pm, @kids)
	  or BAIL_OUT("processes of the crashed node still exist after 60s");
	return $n;
}

1;
