-- every refused input, with its SQLSTATE, and nothing written by any of them
SELECT written_sequence AS before FROM batpak.stats \gset

-- NULL required arguments: 22004
SELECT try($$SELECT batpak.append(NULL, 's', 'k', '{}')$$);
SELECT try($$SELECT batpak.append('e', NULL, 'k', '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', NULL, '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', 'k', NULL)$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[ROW('e', 's', 'k', NULL, NULL, NULL, NULL, NULL, NULL)]::batpak.new_event[])$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[ROW(NULL, 's', 'k', '{}', NULL, NULL, NULL, NULL, NULL)]::batpak.new_event[])$$);
SELECT try($$SELECT * FROM batpak.read_stream(NULL)$$);
SELECT try($$SELECT * FROM batpak.walk_ancestors(NULL)$$);
SELECT try($$SELECT * FROM batpak.read_correlated(NULL)$$);

-- empty coordinates and control characters: 22023
SELECT try($$SELECT batpak.append('', 's', 'k', '{}')$$);
SELECT try($$SELECT batpak.append('e', '', 'k', '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', '', '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', 'k', '{}', idempotency_key => '')$$);
SELECT try_detail($$SELECT batpak.append(E'e\n1', 's', 'k', '{}')$$);
SELECT try_detail($$SELECT batpak.append('e', E'\ts', 'k', '{}')$$);
SELECT try_detail($$SELECT batpak.append('e', 's', E'k\x7f', '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', 'k', '{}', idempotency_key => E'a\x01b')$$);
SELECT try($$SELECT batpak.stream_version('')$$);

-- too long: 22001
SELECT try_detail(format($$SELECT batpak.append(%L, 's', 'k', '{}')$$, repeat('x', 1025)));
SELECT try_detail(format($$SELECT batpak.append('e', %L, 'k', '{}')$$, repeat('é', 513)));
SELECT try_detail(format($$SELECT batpak.append('e', 's', %L, '{}')$$, repeat('k', 256)));
SELECT try(format($$SELECT batpak.append('e', 's', 'k', '{}', idempotency_key => %L)$$, repeat('i', 1025)));
-- the limits themselves are accepted
SELECT entity_sequence FROM batpak.append(repeat('x', 1024), repeat('s', 1024), repeat('k', 255), '{}', idempotency_key => repeat('i', 1024));

-- reserved kinds: 42939
SELECT try_detail($$SELECT batpak.append('e', 's', 'batpak.denial', '{}')$$);
SELECT try($$SELECT batpak.append('e', 's', 'batpak.', '{}')$$);
SELECT entity_sequence FROM batpak.append('e-kind', 's', 'batpak', '{}');
SELECT entity_sequence FROM batpak.append('e-kind', 's', 'Batpak.x', '{}');

-- negative sequences and counts: 22023
SELECT try($$SELECT batpak.append('e', 's', 'k', '{}', expected_sequence => -1)$$);
SELECT try($$SELECT * FROM batpak.read_all(-1)$$);
SELECT try($$SELECT * FROM batpak.read_all(0, -1)$$);
SELECT try($$SELECT * FROM batpak.read_stream('e', -5)$$);
SELECT try($$SELECT * FROM batpak.read_stream('e', 0, -1)$$);
SELECT try($$SELECT * FROM batpak.walk_ancestors('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -1)$$);

-- oversize events: 54000 (limit lowered for the test; superuser setting)
SET batpak.max_event_size = '1kB';
SELECT try_detail(format($$SELECT batpak.append('e', 's', 'k', %L)$$, jsonb_build_object('x', repeat('y', 1100))));
SELECT try(format($$SELECT * FROM batpak.append_batch(ARRAY[ROW('e', 's', 'k', '{}', %L, NULL, NULL, NULL, NULL)]::batpak.new_event[])$$, jsonb_build_object('m', repeat('y', 1100))));
SELECT entity_sequence FROM batpak.append('e-size', 's', 'k', jsonb_build_object('x', repeat('y', 900)));
RESET batpak.max_event_size;
-- a 4MB event goes through under the default 16MB limit
SELECT entity_sequence FROM batpak.append('e-big', 's', 'k', jsonb_build_object('x', repeat('y', 4 * 1024 * 1024)));
SELECT length(payload->>'x') FROM batpak.read_stream('e-big');

-- malformed batches
SELECT try_detail($$SELECT * FROM batpak.append_batch(array_fill(ROW('e','s','k','{}',NULL,NULL,NULL,NULL,NULL)::batpak.new_event, ARRAY[100001]))$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[[ROW('e','s','k','{}',NULL,NULL,NULL,NULL,NULL)::batpak.new_event]])$$);

-- an append writes: refused in a read-only transaction, as nextval is
BEGIN READ ONLY;
SELECT try($$SELECT batpak.append('e-ro', 's', 'k', '{}')$$);
ROLLBACK;
SET default_transaction_read_only = on;
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[ROW('e-ro','s','k','{}',NULL,NULL,NULL,NULL,NULL)::batpak.new_event])$$);
RESET default_transaction_read_only;
-- top-level metadata keys starting with "batpak." are batpak's own (a
-- caller could otherwise forge the record of a gate bypass)
SELECT try($$SELECT batpak.append('e-meta', 's', 'k', '{}', '{"batpak.gate_bypass": {"reason": "forged"}}')$$);
SELECT try($$SELECT * FROM batpak.append_batch(ARRAY[ROW('e-meta','s','k','{}','{"a": 1, "batpak.x": 2}',NULL,NULL,NULL,NULL)::batpak.new_event])$$);
SELECT try($$SELECT * FROM batpak.evaluate_gates('e-meta', 's', 'k', '{}', '{"batpak.": 1}')$$);

-- what was written: only the five accepted appends above
SELECT written_sequence - :before AS written FROM batpak.stats;
SELECT left(entity, 8) AS entity, length(entity) AS entity_len, left(kind, 8) AS kind,
       length(kind) AS kind_len, length(scope) AS scope_len
  FROM batpak.read_all(:before) ORDER BY global_sequence;

-- settings
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'batpak.%' ORDER BY name;
SELECT try($$SET batpak.no_such_setting = 1$$);

-- metadata: only top-level keys starting with "batpak." are reserved
SELECT entity_sequence FROM batpak.append('e-meta-ok', 's', 'k', '{}',
    '{"a": {"batpak.x": 1}, "batpakx": 2, "Batpak.y": 3}');

-- a cancel or statement_timeout ends a statement of many appends, also when
-- it arrives after the writer has answered one of them (it used to be
-- dropped then, and the statement ran on to the end: a third of such
-- statements completed); 50,000 synchronous appends cannot finish in
-- 200ms.  Stopped: 57014, or BP004 when the writer had taken an immediate
-- append in hand.  (012_faults places the cancel in each window on purpose.)
CREATE FUNCTION stopped(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'completed';
EXCEPTION
    WHEN query_canceled THEN
        RETURN 'stopped';
    WHEN OTHERS THEN
        IF SQLSTATE = 'BP004' THEN
            RETURN 'stopped';
        END IF;
        RAISE;
END
$$;
-- compiled before the timeout counts, which also covers the SETs
SELECT stopped('SELECT 1');
SET batpak.transactional = off;
SET statement_timeout = '200ms';
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
RESET statement_timeout;
RESET batpak.transactional;
SET statement_timeout = '200ms';
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
SELECT stopped($$SELECT count(batpak.append('e-timeout', 's', 'k', '{}')) FROM generate_series(1, 50000)$$);
RESET statement_timeout;

-- a row type of batpak's that a superuser altered: 42804, before any value is
-- formed and before anything is written
SELECT written_sequence AS before_altered FROM batpak.stats \gset
SELECT event_id AS some_event FROM batpak.read_all(0, 1) \gset
BEGIN;
ALTER TYPE batpak.event ADD ATTRIBUTE extra int;
SELECT try($$SELECT count(*) FROM batpak.read_all(0, 1)$$);
SELECT try(format('SELECT batpak.get(%L)', :'some_event'));
ROLLBACK;
BEGIN;
ALTER TYPE batpak.event ALTER ATTRIBUTE entity TYPE uuid;
SELECT try($$SELECT count(*) FROM batpak.read_stream('acct-1')$$);
ROLLBACK;
BEGIN;
ALTER TYPE batpak.receipt DROP ATTRIBUTE prev_hash;
SELECT try($$SELECT batpak.append('e-altered', 's', 'k', '{}')$$);
SET LOCAL batpak.transactional = off;
SELECT try($$SELECT batpak.append('e-altered', 's', 'k', '{}')$$);
SELECT try($$SELECT count(*) FROM batpak.append_batch(ARRAY[ROW('e-altered', 's', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])$$);
ROLLBACK;
BEGIN;
ALTER TYPE batpak.new_event ALTER ATTRIBUTE scope TYPE int;
SELECT try($$SELECT count(*) FROM batpak.append_batch(ARRAY[ROW('e-altered', 7, 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])$$);
ROLLBACK;
-- a gate whose SQL alters the receipt type: checked again after the gates
CREATE FUNCTION gate_alters_receipt(e batpak.new_event) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    ALTER TYPE batpak.receipt ALTER ATTRIBUTE event_id TYPE text;
    RETURN NULL;
END $$;
BEGIN;
SELECT batpak.gate_create('alters_receipt', 'gate_alters_receipt(batpak.new_event)',
                          entity_prefix => 'e-altered');
SELECT try($$SELECT batpak.append('e-altered', 's', 'k', '{}')$$);
SELECT try($$SELECT batpak.append_batch(ARRAY[ROW('e-altered', 's', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])$$);
ROLLBACK;
DROP FUNCTION gate_alters_receipt(batpak.new_event);
SELECT written_sequence - :before_altered AS written_while_altered FROM batpak.stats;
-- and unaltered, the same calls work
SELECT count(*) FROM batpak.read_all(0, 1);
SELECT (batpak.get(:'some_event')).event_id = :'some_event' AS got;
