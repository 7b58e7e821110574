#!/usr/bin/env python3
#
# test/t/hostile.py: malformed and extreme calls of every batpak SQL function
# (014).
#
#   hostile.py CONNINFO CALLS SEED
#
# Runs CALLS calls, each a statement of its own in autocommit mode, with
# arguments drawn from pools of hostile values per type: NULLs, empty and huge
# strings, control characters, quotes and SQL fragments, invalid names,
# deeply nested and large jsonb, empty, huge, multi-dimensional and
# NULL-holding arrays, negative and enormous counts, and values of the wrong
# type pushed through casts.  Every call must return rows or fail with an
# error carrying a SQLSTATE outside class XX (internal error, data
# corrupted), and the connection must survive it.  Prints one line per
# function "fn <name> <calls> <ok> <errors>", then "sqlstates <json>", then
# "problems <json list>" and exits 0.

import json
import random
import sys
import uuid

import psycopg
from psycopg import sql

NULL = "NULL"


def lit(v):
    return sql.Literal(v).as_string(None)


def text_pool(rng):
    return rng.choice([
        NULL, lit(""), lit("a"), lit("entity-1"), lit("e" * 1024), lit("e" * 1025),
        lit("k" * 255), lit("k" * 256), lit("x" * 100000), lit("tab\there"), lit("new\nline"),
        lit("\x01ctl"), lit("\x7f"), lit("batpak.reserved"), lit("batpak."), lit(" "),
        lit("é€😀"), lit("'; DROP TABLE batpak.cursor_state; --"), lit('"quoted"'),
        lit("%s%n%x"), lit("a\\b"), lit("ent/"), lit("ent/1"), lit("shared"),
        "repeat('z', 2000000)", "123::text", "'{\"a\":1}'::jsonb::text",
        "'abc'::text::bigint::text",     # 22P02 through a cast
    ])


def int_pool(rng):
    return rng.choice([
        NULL, "0", "1", "-1", "2", "10", "1000", "2147483647", "-2147483648",
        "'2147483648'::bigint::integer",  # 22003
        "'x'::text::integer",              # 22P02
        "1.5::numeric::integer",
    ])


def bigint_pool(rng):
    return rng.choice([
        NULL, "0", "1", "-1", "5", "100", "9223372036854775807", "-9223372036854775808",
        "'9223372036854775808'::numeric::bigint",  # 22003
        "'nope'::text::bigint",
        "1e300::float8::bigint",
    ])


def jsonb_pool(rng):
    depth = rng.choice([10, 1000, 6000])
    return rng.choice([
        NULL, "'{}'::jsonb", "'[]'::jsonb", "'null'::jsonb", "'1'::jsonb", "'\"s\"'::jsonb",
        "'{\"a\": [1, 2, {\"b\": null}]}'::jsonb",
        lit("[" * depth + "]" * depth) + "::jsonb",
        "'{not json'::text::jsonb",        # 22P02
        "jsonb_build_object('big', repeat('p', 100000))",
        "(SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, 5000) i)",
        "'{\"\\u0000\": 1}'::text::jsonb",  # 22P05
        "to_jsonb(repeat('q', 1024))",
    ])


def uuid_pool(rng, known):
    return rng.choice([
        NULL, lit(str(uuid.UUID(int=0))) + "::uuid", lit(str(uuid.UUID(int=(1 << 128) - 1))) + "::uuid",
        lit(str(uuid.UUID(int=rng.getrandbits(128)))) + "::uuid",
        lit(rng.choice(known)) + "::uuid" if known else NULL,
        "'not-a-uuid'::text::uuid",        # 22P02
    ])


def textarr_pool(rng):
    return rng.choice([
        NULL, "'{}'::text[]", "'{NULL}'::text[]", "'{\"\"}'::text[]", "ARRAY['one']",
        "ARRAY['one', 'two', NULL]", "'{{a,b},{c,d}}'::text[]",
        "(SELECT array_agg('k' || i) FROM generate_series(1, 20000) i)",
        "ARRAY[repeat('k', 300)]", "'{batpak.x}'::text[]", "'[0:1]={a,b}'::text[]",
        "'{a'::text::text[]",              # 22P02
    ])


def new_event(rng, known):
    return "ROW(%s, %s, %s, %s, %s, %s, %s, %s, %s)::batpak.new_event" % (
        text_pool(rng), text_pool(rng), text_pool(rng), jsonb_pool(rng), jsonb_pool(rng),
        bigint_pool(rng), text_pool(rng), uuid_pool(rng, known), uuid_pool(rng, known))


def good_event(rng, i):
    return ("ROW('batch-%d', 's', 'k', '{}'::jsonb, NULL, NULL, NULL, NULL, NULL)::batpak.new_event"
            % (i % 7))


def eventarr_pool(rng, known):
    c = rng.randrange(9)
    if c == 0:
        return NULL
    if c == 1:
        return "'{}'::batpak.new_event[]"
    if c == 2:
        return "ARRAY[NULL::batpak.new_event]"
    if c == 3:
        return "ARRAY[[%s], [%s]]" % (good_event(rng, 1), good_event(rng, 2))
    if c == 4:
        # good events and one bad one: all or nothing
        items = [good_event(rng, i) for i in range(rng.randrange(1, 50))]
        items.insert(rng.randrange(len(items) + 1), new_event(rng, known))
        return "ARRAY[%s]" % ", ".join(items)
    if c == 5:
        return ("(SELECT array_agg(ROW('many', 's', 'k', '{}', NULL, NULL, NULL, NULL, NULL)"
                "::batpak.new_event) FROM generate_series(1, %d))" % rng.choice([1000, 100001]))
    if c == 6:
        return "'{(,,,,,,,,)}'::batpak.new_event[]"
    if c == 7:
        return "'{\"(e,s,k,notjson,,,,,)\"}'::text::batpak.new_event[]"
    return "ARRAY[%s]" % ", ".join(new_event(rng, known) for _ in range(rng.randrange(1, 4)))


def regproc_pool(rng):
    return rng.choice([
        NULL, "'hostile_gate(batpak.new_event)'::regprocedure",
        "'pg_catalog.now()'::regprocedure", "'no_such_function(int)'::text::regprocedure",
        "'hostile_gate_bad(integer)'::regprocedure",
    ])


def calls(rng, known):
    t, i, b, j, u = (lambda: text_pool(rng)), (lambda: int_pool(rng)), (lambda: bigint_pool(rng)), \
        (lambda: jsonb_pool(rng)), (lambda: uuid_pool(rng, known))
    ta = lambda: textarr_pool(rng)
    cname = lambda: rng.choice([NULL, lit(""), lit("c1"), lit("c2"), lit("x" * 100),
                                lit("x" * 10000), lit("\x02"), lit("c 1"), lit("C1")])
    gname = lambda: rng.choice([NULL, lit(""), lit("g1"), lit("g" * 64), lit("g" * 10000)])
    return {
        "append": lambda: "SELECT * FROM batpak.append(%s, %s, %s, %s, %s, %s, %s, %s, %s)" % (
            t(), t(), t(), j(), j(), b(), t(), u(), u()),
        "append_batch": lambda: "SELECT count(*) FROM batpak.append_batch(%s)" % eventarr_pool(rng, known),
        "get": lambda: "SELECT * FROM batpak.get(%s)" % u(),
        "read_stream": lambda: "SELECT count(*) FROM batpak.read_stream(%s, %s, %s)" % (t(), b(), i()),
        "read_all": lambda: "SELECT count(*) FROM batpak.read_all(%s, %s, %s, %s, %s)" % (
            b(), i(), t(), ta(), t()),
        "stream_version": lambda: "SELECT batpak.stream_version(%s)" % t(),
        "walk_ancestors": lambda: "SELECT count(*) FROM batpak.walk_ancestors(%s, %s)" % (u(), i()),
        "read_correlated": lambda: "SELECT count(*) FROM batpak.read_correlated(%s)" % u(),
        "verify_chain": lambda: "SELECT count(*) FROM batpak.verify_chain(%s)" % t(),
        "evaluate_gates": lambda: "SELECT count(*) FROM batpak.evaluate_gates(%s, %s, %s, %s, %s)" % (
            t(), t(), t(), j(), j()),
        "gate_create": lambda: "SELECT batpak.gate_create(%s, %s, %s, %s, %s)" % (
            gname(), regproc_pool(rng), t(), ta(), t()),
        "gate_drop": lambda: "SELECT batpak.gate_drop(%s)" % gname(),
        "cursor_create": lambda: "SELECT batpak.cursor_create(%s, %s, %s, %s, %s, %s, %s)" % (
            cname(), t(), ta(), t(), b(), i(), i()),
        "cursor_read": lambda: "SELECT count(*) FROM batpak.cursor_read(%s, %s)" % (cname(), i()),
        "cursor_wait": lambda: "SELECT batpak.cursor_wait(%s, %s)" % (
            cname(), rng.choice([NULL, "0", "-1", "1", "10", "2147483647", "'1e10'::float8::integer"])),
        "cursor_seek": lambda: "SELECT batpak.cursor_seek(%s, %s)" % (cname(), b()),
        "cursor_drop": lambda: "SELECT batpak.cursor_drop(%s)" % cname(),
        "entity_group": lambda: "SELECT batpak.entity_group(%s, %s)" % (t(), i()),
        "stats_row": lambda: "SELECT count(*) FROM batpak.stats_row()",
        "views": lambda: rng.choice(["SELECT count(*) FROM batpak.stats", "SELECT count(*) FROM batpak.cursors",
                                     "SELECT count(*) FROM batpak.gates"]),
    }


def main():
    conninfo, ncalls, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    conn = psycopg.connect(conninfo, autocommit=True)
    # a cursor_wait on a live cursor with a huge timeout ends here (57014)
    conn.execute("SET statement_timeout = '500ms'")
    known = [str(r[0]) for r in conn.execute(
        "SELECT event_id FROM batpak.read_all(0, 50)").fetchall()]
    table = calls(rng, known)
    names = sorted(table)
    stats = {n: [0, 0, 0] for n in names}
    states = {}
    problems = []
    for k in range(ncalls):
        name = names[k % len(names)] if k < len(names) else rng.choice(names)
        stmt = table[name]()
        stats[name][0] += 1
        try:
            conn.execute(stmt).fetchall()
            stats[name][1] += 1
        except psycopg.Error as e:
            # (class 53/54/57 errors are OperationalError too: judge by the
            # connection, not by the class)
            if conn.broken:
                problems.append("%s: connection lost: %s (%s)" % (name, e, stmt[:200]))
                break
            stats[name][2] += 1
            st = e.sqlstate
            states[st] = states.get(st, 0) + 1
            if st is None or st.startswith("XX"):
                problems.append("%s: %s %s (%s)" % (name, st, str(e).splitlines()[0], stmt[:200]))
    for n in names:
        print("fn %s %d %d %d" % (n, *stats[n]))
    print("sqlstates " + json.dumps(states, sort_keys=True))
    print("problems " + json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
