#!/usr/bin/env python3
#
# test/t/crashload.py: the load and the checks of the crash loop (013).
#
#   crashload.py load CONNINFO LOGDIR ROUND CLIENTS SEED
#   crashload.py check CONNINFO LOGDIR [final]
#
# load: CLIENTS threads append until their connection is lost (the test
# kills the server), and two consumers move the cursor "crashloop" into the
# table crash_consumed, each read and its insert in one transaction.  Every
# client writes, flushed line by line, to LOGDIR/r<ROUND>c<N>.log:
#   S <tag>...            about to send an immediate append or batch
#   A <tag>:<seq>...      its receipts came back (global sequences)
#   P <txn> <tag>...      a transaction appended these (not yet ended)
#   C <txn>               its COMMIT returned
#   X <txn>               its COMMIT is on its way
#   R <txn>               it rolled back (ROLLBACK returned, or an error)
#   E <sqlstate> <tag>... an immediate call failed
# Tags are unique per event (round, client, statement, item) and travel in the
# payload.  Prints "acked N" to stdout every 20 acknowledged operations.
#
# check: reads every log of LOGDIR and the store, and prints one line per
# check, "check <name> <count> <json list of problems>".  With "final" it
# first drains the cursor, and then demands that the consumed rows equal the
# store.

import glob
import json
import os
import random
import sys
import threading

import psycopg

SHARED = ["shared-%d" % i for i in range(4)]


def client(conninfo, logdir, rnd, c, seed, counter):
    rng = random.Random(seed * 1000 + c)
    log = open(os.path.join(logdir, "r%dc%d.log" % (rnd, c)), "a", buffering=1)
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute("SET batpak.transactional = off")
    except psycopg.Error:
        return
    i = 0
    while True:
        i += 1
        base = "r%dc%di%d" % (rnd, c, i)
        kind = rng.random()
        try:
            if kind < 0.35:
                ent = rng.choice(SHARED + ["own-%d" % c])
                tag = base + "e0"
                log.write("S %s\n" % tag)
                seq = conn.execute(
                    "SELECT global_sequence FROM batpak.append(%s, 'crash', 'one', %s)",
                    (ent, json.dumps({"tag": tag}))).fetchone()[0]
                log.write("A %s:%d\n" % (tag, seq))
            elif kind < 0.55:
                tags = [base + "e%d" % k for k in range(3)]
                ents = [rng.choice(SHARED), "own-%d" % c, "own-%d" % c]
                log.write("S %s\n" % " ".join(tags))
                seqs = conn.execute(
                    "SELECT global_sequence FROM batpak.append_batch(ARRAY["
                    + ", ".join(
                        "ROW(%s, 'crash', 'batch', %s, NULL, NULL, NULL, NULL, NULL)::batpak.new_event"
                        for _ in tags) + "])",
                    [x for t, e in zip(tags, ents) for x in (e, json.dumps({"tag": t}))]).fetchall()
                log.write("A %s\n" % " ".join("%s:%d" % (t, r[0]) for t, r in zip(tags, seqs)))
            else:
                n = rng.randint(1, 3)
                tags = [base + "e%d" % k for k in range(n)]
                txn = base
                conn.execute("BEGIN")
                conn.execute("SET LOCAL batpak.transactional = on")
                for t in tags:
                    ent = rng.choice(SHARED[:2] + ["own-%d" % c])
                    log.write("P %s %s\n" % (txn, t))
                    conn.execute(
                        "SELECT batpak.append(%s, 'crash', 'tx', %s)",
                        (ent, json.dumps({"tag": t})))
                if rng.random() < 0.25:
                    conn.execute("ROLLBACK")
                    log.write("R %s\n" % txn)
                else:
                    log.write("X %s\n" % txn)  # COMMIT on its way
                    conn.execute("COMMIT")
                    log.write("C %s\n" % txn)
        except psycopg.OperationalError:
            return
        except psycopg.Error as e:
            # e.g. a deadlock between two transactions: this one rolled back
            if conn.closed or conn.broken:
                return
            if kind >= 0.55:
                try:
                    conn.execute("ROLLBACK")
                except psycopg.OperationalError:
                    return
                log.write("R %s\n" % base)
            else:
                log.write("E %s %s\n" % (e.sqlstate, " ".join(tags if kind >= 0.35 else [tag])))
            continue
        with counter["lock"]:
            counter["n"] += 1
            if counter["n"] % 20 == 0:
                sys.stdout.write("acked %d\n" % counter["n"])
                sys.stdout.flush()


def consumer(conninfo):
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error:
        return
    while True:
        try:
            with conn.transaction():
                cur = conn.execute(
                    "INSERT INTO crash_consumed "
                    "SELECT global_sequence, payload->>'tag' "
                    "FROM batpak.cursor_read('crashloop', 50)")
                n = cur.rowcount
            if n == 0:
                conn.execute("SELECT batpak.cursor_wait('crashloop', 1000)")
        except psycopg.OperationalError:
            return
        except psycopg.Error as e:
            if conn.closed or conn.broken:
                return
            sys.stdout.write("consumer error %s %s\n" % (e.sqlstate, str(e).splitlines()[0]))
            sys.stdout.flush()


def load(conninfo, logdir, rnd, clients, seed):
    counter = {"n": 0, "lock": threading.Lock()}
    threads = [threading.Thread(target=client, args=(conninfo, logdir, rnd, c, seed, counter))
               for c in range(1, clients + 1)]
    threads += [threading.Thread(target=consumer, args=(conninfo,)) for _ in range(2)]
    for t in threads:
        t.daemon = True
        t.start()
    sys.stdout.write("started\n")
    sys.stdout.flush()
    for t in threads:
        t.join()
    sys.stdout.write("done %d\n" % counter["n"])
    sys.stdout.flush()


def check(conninfo, logdir, final):
    sent = set()        # immediate tags that were sent
    acked = {}          # immediate tags acknowledged -> receipt's sequence
    txn_tags = {}       # txn -> tags
    outcome = {}        # txn -> 'C' / 'R'
    in_commit = set()   # txn whose COMMIT was sent
    failed = set()      # immediate tags whose call failed (not BP004)
    for path in sorted(glob.glob(os.path.join(logdir, "*.log"))):
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # cut by the crash mid-line
                w = line.split()
                if w[0] == "S":
                    sent.update(w[1:])
                elif w[0] == "A":
                    for pair in w[1:]:
                        t, q = pair.split(":")
                        acked[t] = int(q)
                elif w[0] == "P":
                    txn_tags.setdefault(w[1], []).append(w[2])
                elif w[0] == "X":
                    in_commit.add(w[1])
                elif w[0] in ("C", "R"):
                    outcome[w[1]] = w[0]
                elif w[0] == "E" and w[1] != "BP004":
                    failed.update(w[2:])

    conn = psycopg.connect(conninfo, autocommit=True)
    if final:
        while True:
            with conn.transaction():
                n = conn.execute(
                    "INSERT INTO crash_consumed SELECT global_sequence, payload->>'tag' "
                    "FROM batpak.cursor_read('crashloop', 1000)").rowcount
            if n == 0:
                break
    rows = conn.execute(
        "SELECT global_sequence, payload->>'tag' FROM batpak.read_all()").fetchall()
    stored = {}
    dup = []
    for seq, tag in rows:
        if tag in stored:
            dup.append(tag)
        stored[tag] = seq

    def out(name, count, problems):
        sys.stdout.write("check %s %d %s\n" % (name, count, json.dumps(problems[:20])))

    out("duplicates", len(rows), dup)
    out("acknowledged_present", len(acked),
        sorted("%s: receipt %d, stored %s" % (t, q, stored.get(t))
               for t, q in acked.items() if stored.get(t) != q))
    committed = [t for x, o in outcome.items() if o == "C" for t in txn_tags.get(x, [])]
    out("committed_present", len(committed), sorted(t for t in committed if t not in stored))
    rolled = [t for x, o in outcome.items() if o == "R" for t in txn_tags.get(x, [])]
    out("rolled_back_absent", len(rolled), sorted(t for t in rolled if t in stored))
    # a transaction without an outcome: all its events or none; none unless
    # its COMMIT was on its way
    undecided = [x for x in txn_tags if x not in outcome]
    bad = []
    for x in undecided:
        have = [t for t in txn_tags[x] if t in stored]
        if have and (len(have) != len(txn_tags[x]) or x not in in_commit):
            bad.append("%s: %d of %d stored%s" % (x, len(have), len(txn_tags[x]),
                                                  "" if x in in_commit else ", COMMIT never sent"))
    out("undecided_all_or_none", len(undecided), bad)
    out("failed_absent", len(failed), sorted(t for t in failed if t in stored))
    known = sent | set(t for ts in txn_tags.values() for t in ts)
    out("stored_were_sent", len(stored), sorted(t for t in stored if t not in known))

    consumed = conn.execute(
        "SELECT global_sequence, tag FROM crash_consumed ORDER BY global_sequence").fetchall()
    wrong = ["%s consumed as %s, stored as %s" % (s, t, stored.get(t))
             for s, t in consumed if stored.get(t) != s]
    out("consumed_are_stored", len(consumed), wrong)
    last = consumed[-1][0] if consumed else 0
    got = set(s for s, _ in consumed)
    missed = [s for s, _ in rows if s <= last and s not in got]
    out("consumed_without_holes", last, missed)
    if final:
        out("consumed_everything", len(rows), sorted(set(s for s, _ in rows) - got))
    conn.close()


def main():
    if sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        check(sys.argv[2], sys.argv[3], len(sys.argv) > 4 and sys.argv[4] == "final")


if __name__ == "__main__":
    main()
