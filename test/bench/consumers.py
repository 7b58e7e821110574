#!/usr/bin/env python3
#
# test/bench/consumers.py — wake-up latency of batpak's consumers, for the
# "consumers" section of test/bench/run.sh
#
#   consumers.py notify [--listeners 10] [--appends 500] [--immediate] [--baseline]
#   consumers.py wait   [--appends 500] [--immediate]
#   (--seed N for the gaps, --payload JSON, --dump FILE for the raw times)
#
# notify: LISTENER connections LISTEN batpak, polled by one process with a
#   selector over their sockets; the receive time of a notification is taken
#   when select() returns with its socket readable.  An appender (this
#   process) appends APPENDS events one at a time, with a random gap of 1–5 ms
#   before each, and notes time.monotonic() right before each append call.
#   The latency of event s at listener L is the receive time of the first
#   notification at L whose from_sequence..to_sequence covers s, minus the
#   append start of s; percentiles are over all (event, listener) pairs.
#   With --baseline the appender inserts into the plain table "events" and
#   sends pg_notify('bench_base', ...) in the same (autocommit) transaction,
#   the usual plain-PostgreSQL way to wake consumers.
#
# wait: one waiter connection loops cursor_wait(name, 10000), then reads what
#   is there with cursor_read(name, 1000) (autocommit: each read commits the
#   position); the latency of a wake-up is the time cursor_wait returned
#   minus the append start of the first event the read then delivered.
#
# The listeners and the waiter run in a child process, so that no lock of
# the interpreter sits between a socket becoming readable and its timestamp;
# CLOCK_MONOTONIC (time.monotonic) is the same clock in both processes.
#
# Connections use libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
# as run.sh exports them).  Results go to stdout as "key value" lines
# (latencies in ms), progress and problems to stderr; exit status 1 if the
# measurement could not be made.

import argparse
import json
import multiprocessing
import random
import selectors
import sys
import time

import psycopg

DEFAULT_PAYLOAD = ('{"order_id": 1234567, "customer": "c-000042", "currency": "EUR", '
                   '"total_cents": 129900, "items": [{"sku": "SKU-000123", "qty": 2, '
                   '"price_cents": 49950}, {"sku": "SKU-000456", "qty": 1, "price_cents": 30000}]}')
STOP_CHANNEL = 'batpak_bench_stop'
BASE_CHANNEL = 'bench_base'
WARMUP = 10           # unmeasured appends first (plans prepared, caches warm)
GAP_MS = (1.0, 5.0)   # random gap before each append


def log(msg):
    print(f'consumers.py: {msg}', file=sys.stderr, flush=True)


def connect():
    return psycopg.connect('', autocommit=True)


def percentile(sorted_vals, p):
    """Nearest rank, as run.sh's log_latency: the ceil(p * n)-th value."""
    n = len(sorted_vals)
    i = int(n * p)
    if i < n * p:
        i += 1
    return sorted_vals[max(i, 1) - 1]


def summary(lat_s, prefix=''):
    """Lines for a list of latencies in seconds (inf = never arrived)."""
    v = sorted(x * 1000.0 for x in lat_s)
    if not v:
        raise SystemExit('consumers.py: no latencies measured')
    out = {
        'count': len(v),
        'p50_ms': percentile(v, 0.50),
        'p90_ms': percentile(v, 0.90),
        'p99_ms': percentile(v, 0.99),
        'max_ms': v[-1],
        'min_ms': v[0],
    }
    return {prefix + k: val for k, val in out.items()}


def emit(d):
    for k, v in d.items():
        if isinstance(v, float):
            print(f'{k} {v:.6f}' if v != float('inf') else f'{k} inf')
        else:
            print(f'{k} {v}')
    sys.stdout.flush()


# ------------------------------------------------------------------ notify

def listener_main(n, channel, pipe):
    """Child: n connections LISTEN channel; one selector over their sockets."""
    try:
        conns = [connect() for _ in range(n)]
        for c in conns:
            c.execute(f'LISTEN {channel}')
            c.execute(f'LISTEN {STOP_CHANNEL}')
        sel = selectors.DefaultSelector()
        for i, c in enumerate(conns):
            sel.register(c.pgconn.socket, selectors.EVENT_READ, i)
        pipe.send('ready')
        recs = []           # (listener, receive time, from, to)
        stopped = set()
        chan = channel.encode()
        while len(stopped) < n:
            ready = sel.select(timeout=120)
            t = time.monotonic()
            if not ready:
                raise RuntimeError('no notification for 120 s')
            for key, _ in ready:
                i = key.data
                pg = conns[i].pgconn
                pg.consume_input()
                while True:
                    nt = pg.notifies()
                    if nt is None:
                        break
                    if nt.relname == chan:
                        p = json.loads(nt.extra.decode())
                        recs.append((i, t, int(p['from_sequence']), int(p['to_sequence'])))
                    elif nt.relname == STOP_CHANNEL.encode() and i not in stopped:
                        stopped.add(i)
                        sel.unregister(key.fileobj)
        for c in conns:
            c.close()
        pipe.send(('ok', recs))
    except BaseException as e:  # report to the parent, whatever it is
        pipe.send(('error', f'listener: {type(e).__name__}: {e}'))


def notify_latency(starts, recs, nlisteners):
    """Per (event, listener): first covering notification's time - start.
    starts: {sequence: time}; returns (latencies, missed pairs)."""
    lo, hi = min(starts), max(starts)
    by_l = {i: [] for i in range(nlisteners)}
    for i, t, f, to in recs:
        by_l[i].append((t, f, to))
    lat = []
    missed = 0
    for i in range(nlisteners):
        first = {}
        for t, f, to in sorted(by_l[i]):
            for s in range(max(f, lo), min(to, hi) + 1):
                if s in starts and s not in first:
                    first[s] = t
        for s, t0 in starts.items():
            if s in first:
                lat.append(first[s] - t0)
            else:
                missed += 1
                lat.append(float('inf'))
    return lat, missed


def wait_notified(conn, seq, limit_s):
    """Until batpak.stats says the notifier has sent seq (or limit_s)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        got = conn.execute('SELECT notified_sequence FROM batpak.stats').fetchone()[0]
        if got is not None and got >= seq:
            return True
        time.sleep(0.01)
    return False


def timed_appends(conn, sql, params_of, args):
    """Run sql (returning the global sequence) WARMUP + args.appends times,
    each after a random GAP_MS pause, with params_of(k) as its parameters.
    Returns ({sequence: start time}, {sequence: end time}, [call durations])
    for the measured calls."""
    rng = random.Random(args.seed)
    starts = {}
    ends = {}
    append_s = []
    for k in range(WARMUP + args.appends):
        time.sleep(rng.uniform(*GAP_MS) / 1000.0)
        t0 = time.monotonic()
        seq = conn.execute(sql, params_of(k), prepare=True).fetchone()[0]
        t1 = time.monotonic()
        if k >= WARMUP:
            starts[seq] = t0
            ends[seq] = t1
            append_s.append(t1 - t0)
    return starts, ends, append_s


def run_notify(args):
    ctx = multiprocessing.get_context('fork')
    parent_end, child_end = ctx.Pipe()
    channel = BASE_CHANNEL if args.baseline else 'batpak'
    child = ctx.Process(target=listener_main, args=(args.listeners, channel, child_end))
    child.start()
    msg = parent_end.recv() if parent_end.poll(60) else 'timeout'
    if msg != 'ready':
        child.kill()
        raise SystemExit(f'consumers.py: the listeners did not start: {msg}')

    conn = connect()
    if args.immediate:
        conn.execute('SET batpak.transactional = off')
    if args.baseline:
        sql = ("WITH i AS (INSERT INTO events (id, stream, version, type, data) "
               "VALUES (gen_random_uuid(), %s, nextval('v'), 'bench', %s::jsonb) RETURNING version) "
               "SELECT version, pg_notify('" + BASE_CHANNEL + "', json_build_object("
               "'from_sequence', version, 'to_sequence', version)::text) FROM i")
    else:
        sql = ("SELECT global_sequence FROM batpak.append(%s, 'bench-consumers', 'bench', %s::jsonb)")
    starts, ends, append_s = timed_appends(
        conn, sql, lambda k: (f'c{k % 100}', args.payload), args)
    last = max(starts)
    if not args.baseline:
        if not wait_notified(conn, last, 10):
            log(f'the notifier had not sent sequence {last} after 10 s')
    time.sleep(0.2)     # stragglers: what arrives later counts as missed
    conn.execute(f'NOTIFY {STOP_CHANNEL}')
    msg = parent_end.recv() if parent_end.poll(60) else ('error', 'no result from the listeners in 60 s')
    child.join(10)
    if msg[0] != 'ok':
        raise SystemExit(f'consumers.py: {msg[1]}')
    recs = msg[1]
    if args.dump:
        with open(args.dump, 'w') as f:
            json.dump({'starts': starts, 'ends': ends, 'notifications': recs}, f)
    lat, missed = notify_latency(starts, recs, args.listeners)
    out = summary(lat)
    # the same from the append's return (negative: before the client had
    # the append's result), i.e. what the notification adds to the append
    post, _ = notify_latency(ends, recs, args.listeners)
    out.update(summary(post, 'post_'))
    out['events'] = len(starts)
    out['listeners'] = args.listeners
    out['missed'] = missed
    # notifications per listener that cover measured events, and the
    # events each covered (1.0: every append had its own notification)
    lo = min(starts)
    mine = [r for r in recs if r[3] >= lo and r[2] <= last]
    out['notifications'] = len(mine) / args.listeners
    out['events_per_notification'] = (
        sum(min(r[3], last) - max(r[2], lo) + 1 for r in mine) / len(mine) if mine else 0.0)
    out.update(summary(append_s, 'append_'))
    conn.close()
    emit(out)


# -------------------------------------------------------------------- wait

def waiter_main(name, pipe):
    """Child: cursor_wait, timestamp, cursor_read; until the stop event."""
    try:
        conn = connect()
        pipe.send('ready')
        recs = []           # (cursor_wait returned at, [(sequence, kind)])
        timeouts = 0
        while True:
            found = conn.execute('SELECT batpak.cursor_wait(%s, 10000)', (name,),
                                 prepare=True).fetchone()[0]
            t = time.monotonic()
            if not found:
                timeouts += 1
                if timeouts >= 3:
                    raise RuntimeError('cursor_wait timed out 3 times (30 s)')
                continue
            rows = conn.execute('SELECT global_sequence, kind FROM batpak.cursor_read(%s, 1000)',
                                (name,), prepare=True).fetchall()
            recs.append((t, rows))
            if any(k == 'bench-stop' for _, k in rows):
                break
        conn.close()
        pipe.send(('ok', recs))
    except BaseException as e:
        pipe.send(('error', f'waiter: {type(e).__name__}: {e}'))


def run_wait(args):
    name = 'bench-wait'
    scope = 'bench-wait'
    conn = connect()
    if conn.execute('SELECT 1 FROM batpak.cursors WHERE name = %s', (name,)).fetchone():
        conn.execute('SELECT batpak.cursor_drop(%s)', (name,))
    conn.execute('SELECT batpak.cursor_create(%s, scope => %s, '
                 'start_after => (SELECT visible_sequence FROM batpak.stats))', (name, scope))
    if args.immediate:
        conn.execute('SET batpak.transactional = off')

    ctx = multiprocessing.get_context('fork')
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=waiter_main, args=(name, child_end))
    child.start()
    msg = parent_end.recv() if parent_end.poll(60) else 'timeout'
    if msg != 'ready':
        child.kill()
        raise SystemExit(f'consumers.py: the waiter did not start: {msg}')
    time.sleep(0.05)    # let it reach its first cursor_wait

    sql = "SELECT global_sequence FROM batpak.append(%s, %s, %s, %s::jsonb)"
    starts, ends, append_s = timed_appends(
        conn, sql, lambda k: (f'w{k % 100}', scope, 'bench', args.payload), args)
    conn.execute(sql, ('w-stop', scope, 'bench-stop', '{}'))
    msg = parent_end.recv() if parent_end.poll(60) else ('error', 'no result from the waiter in 60 s')
    child.join(10)
    conn.execute('SELECT batpak.cursor_drop(%s)', (name,))
    conn.close()
    if msg[0] != 'ok':
        raise SystemExit(f'consumers.py: {msg[1]}')

    lat = []
    post = []           # from the append's return (may be negative)
    delivered = set()
    extra = 0           # events delivered by a read besides the one that woke the wait
    empty = 0           # wake-ups whose read found nothing
    for t, rows in msg[1]:
        seqs = [s for s, k in rows if s in starts]
        delivered.update(seqs)
        if not rows:
            empty += 1
            continue
        first = min(s for s, _ in rows)
        if first in starts:
            lat.append(t - starts[first])
            post.append(t - ends[first])
            extra += len(seqs) - 1
        else:
            extra += len(seqs)
    out = summary(lat)
    out.update(summary(post, 'post_'))
    out['events'] = len(starts)
    out['wakeups'] = len(lat)
    out['extra'] = extra
    out['empty'] = empty
    out['undelivered'] = len(set(starts) - delivered)
    out.update(summary(append_s, 'append_'))
    emit(out)
    if out['undelivered']:
        raise SystemExit(f"consumers.py: {out['undelivered']} events never delivered to the waiter")


def main():
    ap = argparse.ArgumentParser(description='batpak consumer wake-up latency')
    ap.add_argument('test', choices=['notify', 'wait'])
    ap.add_argument('--listeners', type=int, default=10)
    ap.add_argument('--appends', type=int, default=500)
    ap.add_argument('--immediate', action='store_true',
                    help='append with batpak.transactional = off')
    ap.add_argument('--baseline', action='store_true',
                    help='notify: INSERT into the plain table and pg_notify in the same transaction')
    ap.add_argument('--payload', default=DEFAULT_PAYLOAD)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--dump', metavar='FILE',
                    help='write the raw times (JSON) to FILE, to look into a tail')
    args = ap.parse_args()
    if args.appends < 1 or args.listeners < 1:
        ap.error('--appends and --listeners must be at least 1')
    if args.test == 'notify':
        run_notify(args)
    else:
        if args.baseline:
            ap.error('--baseline is for notify only')
        run_wait(args)


if __name__ == '__main__':
    main()
