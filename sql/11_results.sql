-- The results of batpak's set-returning functions live in a memory context
-- of batpak's that keeps its first block across statements and is reset
-- when the top-level transaction ends (sql_read.c, batpak_materialize).
-- Every way a result can end: read to the end, cut by an error, in a
-- rolled-back savepoint, held across COMMIT, spilled to a temporary file,
-- in a prepared transaction, two at once, in the target list.
SELECT (SELECT written_sequence FROM batpak.stats) AS base \gset
SELECT count(*) FROM batpak.append_batch(ARRAY(
    SELECT ROW('res-' || (i % 4), 'results', 'filled', jsonb_build_object('i', i, 'pad', repeat('x', 200)),
               NULL, NULL, NULL, NULL, NULL)::batpak.new_event
      FROM generate_series(1, 400) i));

-- an error in the middle of a result, then the same read again
SELECT global_sequence - :base AS rel, 10 / (global_sequence - :base - 3) AS q
  FROM batpak.read_all(:base, 5);
SELECT global_sequence - :base AS rel FROM batpak.read_all(:base, 5);

-- a savepoint rolled back after a read failed in it
BEGIN;
SELECT count(*) FROM batpak.read_all(:base, 10);
SAVEPOINT s;
SELECT 1 / ((payload->>'i')::int - 5) FROM batpak.read_all(:base, 10);
ROLLBACK TO SAVEPOINT s;
SELECT sum((payload->>'i')::int) FROM batpak.read_all(:base, 10);
COMMIT;

-- a holdable cursor outlives the transaction that read
BEGIN;
DECLARE held CURSOR WITH HOLD FOR
  SELECT global_sequence - :base AS rel, entity FROM batpak.read_all(:base, 6);
FETCH 2 FROM held;
COMMIT;
FETCH ALL FROM held;
CLOSE held;

-- a cursor without hold, abandoned by ROLLBACK in the middle
BEGIN;
DECLARE open_cursor CURSOR FOR SELECT global_sequence - :base AS rel FROM batpak.read_stream('res-1');
FETCH 3 FROM open_cursor;
ROLLBACK;
SELECT count(*), min(entity_sequence), max(entity_sequence) FROM batpak.read_stream('res-1');

-- past work_mem the result spills to a temporary file: read it whole, and
-- cut one with an error after the spill
SET work_mem = '64kB';
SELECT count(*), sum((payload->>'i')::int), count(DISTINCT entity) FROM batpak.read_all(:base);
SELECT (payload->>'i')::int / ((payload->>'i')::int - 399) FROM batpak.read_all(:base);
SELECT count(*) FROM batpak.read_all(:base);
RESET work_mem;

-- a procedure that commits inside a loop over a result (its portal is held)
CREATE TABLE results_seen (rel bigint);
CREATE PROCEDURE results_copy(base bigint) LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT global_sequence FROM batpak.read_all(base, 4) LOOP
        INSERT INTO results_seen VALUES (r.global_sequence - base);
        COMMIT;
    END LOOP;
END $$;
CALL results_copy(:base);
SELECT rel FROM results_seen ORDER BY rel;

-- a prepared transaction that read
BEGIN;
SELECT count(*) FROM batpak.read_all(:base, 50);
PREPARE TRANSACTION 'batpak_results';
COMMIT PREPARED 'batpak_results';

-- two results at once, and one in the target list
SELECT count(*) FROM batpak.read_all(:base, 100) a
  JOIN batpak.read_stream('res-2') s USING (event_id);
SELECT (batpak.read_all(:base, 3)).global_sequence - :base AS rel;

-- a batch's receipts use the same context
BEGIN;
SELECT count(*) FROM batpak.append_batch(ARRAY[
    ROW('res-x', 'results', 'filled', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event]);
ROLLBACK;
SELECT count(*) FROM batpak.read_stream('res-x');

-- many reads in one transaction do not pile up: the chunks one result
-- freed serve the next (200 reads of this file's 400 events, about 200 kB
-- each, stay within 2 MB), and the transaction's end gives back all but
-- the first block
CREATE FUNCTION results_memory(base bigint, reads int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1 .. reads LOOP
        SELECT count(*) INTO n FROM batpak.read_all(base, 400);
    END LOOP;
    RETURN (SELECT total_bytes FROM pg_backend_memory_contexts WHERE name = 'batpak results');
END $$;
SELECT results_memory(:base, 200) <= 2 * 1024 * 1024 AS bounded_within_transaction;
-- twenty results at once outgrow the first block; the end of the
-- transaction gives the rest back
CREATE FUNCTION results_peak(base bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE (SELECT 'SELECT count(*) FROM (' || string_agg(format('SELECT * FROM batpak.read_all(%s, 400)', base), ' UNION ALL ') || ') r'
               FROM generate_series(1, 20));
    RETURN (SELECT total_bytes FROM pg_backend_memory_contexts WHERE name = 'batpak results');
END $$;
SELECT results_peak(:base) > 1024 * 1024 + 8192 AS grew_within_transaction;
-- a result cut by an error caught in the same transaction stays until the
-- transaction ends; 300 of them (about 60 MB) stop piling up at the limit
-- (16 MB: later results go to their query's context)
CREATE FUNCTION results_caught(base bigint, tries int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    FOR i IN 1 .. tries LOOP
        BEGIN
            SELECT count(*) INTO n FROM batpak.read_all(base, 400)
             WHERE 1 / ((payload->>'i')::int - 400) IS NOT NULL;
        EXCEPTION WHEN division_by_zero THEN
            NULL;
        END;
    END LOOP;
    RETURN (SELECT total_bytes FROM pg_backend_memory_contexts WHERE name = 'batpak results');
END $$;
SELECT results_caught(:base, 300) BETWEEN 16 * 1024 * 1024 AND 18 * 1024 * 1024 AS caught_errors_bounded;
SELECT total_bytes < 1024 * 1024 + 8192 AS first_block_only
  FROM pg_backend_memory_contexts WHERE name = 'batpak results';
DROP FUNCTION results_memory(bigint, int);
DROP FUNCTION results_peak(bigint);
DROP FUNCTION results_caught(bigint, int);

DROP PROCEDURE results_copy(bigint);
DROP TABLE results_seen;

-- Rows are formed straight from the frame (sql_read.c, batpak_event_tuple).
-- Every column must round-trip across the 126-byte boundary between 1-byte
-- and 4-byte varlena headers and through lengths whose 4-byte header has a
-- zero low byte (192 and 256: entity, scope, kind, payload and metadata all
-- pass both), with and without each nullable column and with none null, in
-- every function that returns batpak.event, in memory and spilled, and equal
-- the row get() forms the generic way (heap_form_tuple).  Builds with
-- assertions also compare each row's bytes with the generic path's.
SELECT (SELECT written_sequence FROM batpak.stats) AS lbase \gset
CREATE TABLE layout AS
SELECT n,
       rpad('layout-' || n || '-', n, 'e') AS entity,
       rpad('sc', n - 10, 's') AS scope,
       rpad('kd', n - 20, 'k') AS kind,
       jsonb_build_object('p', repeat('p', n - 10)) AS payload,
       CASE WHEN n % 4 <> 1 THEN jsonb_build_object('m', repeat('m', n - 12)) END AS metadata,
       NULL::uuid AS event_id, NULL::uuid AS cause, NULL::uuid AS corr
  FROM generate_series(100, 275) n
 WHERE n <= 150 OR n BETWEEN 180 AND 215 OR n >= 244;
-- causal chains: every n = 1 (mod 3) starts one (no causation_id, its own
-- id is the correlation), the others are caused by the event before them
-- and inherit its correlation
DO $$
DECLARE
    r record;
    rc batpak.receipt;
    prev uuid;
    root uuid;
BEGIN
    FOR r IN SELECT * FROM layout ORDER BY n LOOP
        rc := batpak.append(r.entity, r.scope, r.kind, r.payload, metadata => r.metadata,
                            causation_id => CASE WHEN r.n % 3 <> 1 THEN prev END);
        IF r.n % 3 = 1 THEN
            root := rc.event_id;
        END IF;
        UPDATE layout SET event_id = rc.event_id,
                          cause = CASE WHEN r.n % 3 <> 1 THEN prev END,
                          corr = root
         WHERE n = r.n;
        prev := rc.event_id;
    END LOOP;
END $$;
-- what the data covers: the varlena sizes and the null combinations
SELECT count(*) FILTER (WHERE pg_column_size(entity) IN (192, 256)) AS entity_x64,
       count(*) FILTER (WHERE pg_column_size(scope) IN (192, 256)) AS scope_x64,
       count(*) FILTER (WHERE pg_column_size(kind) IN (192, 256)) AS kind_x64,
       count(*) FILTER (WHERE pg_column_size(payload) IN (192, 256)) AS payload_x64,
       count(*) FILTER (WHERE pg_column_size(metadata) IN (192, 256)) AS metadata_x64,
       count(*) FILTER (WHERE octet_length(entity) <= 126) AS entity_short,
       count(*) FILTER (WHERE pg_column_size(payload) - 4 <= 126) AS payload_short,
       count(*) FILTER (WHERE pg_column_size(metadata) - 4 <= 126) AS metadata_short
  FROM layout;
SELECT metadata IS NULL AS no_metadata, cause IS NULL AS no_cause, count(*)
  FROM layout GROUP BY 1, 2 ORDER BY 1, 2;
-- the rows whose every column is what was appended and what get() returns
CREATE FUNCTION layout_exact(rows batpak.event[]) RETURNS TABLE (n_rows bigint, exact bigint)
LANGUAGE sql AS $$
    SELECT count(*),
           count(*) FILTER (WHERE e.entity = l.entity AND e.scope = l.scope AND e.kind = l.kind
                              AND e.payload = l.payload AND e.payload::text = l.payload::text
                              AND e.metadata IS NOT DISTINCT FROM l.metadata
                              AND e.causation_id IS NOT DISTINCT FROM l.cause
                              AND e.correlation_id = l.corr
                              AND e.entity_sequence = 1
                              AND e.committed_at BETWEEN now() - interval '1 hour' AND clock_timestamp()
                              AND e.prev_hash = '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                              AND octet_length(e.event_hash) = 32
                              AND e = batpak.get(e.event_id))
      FROM unnest(rows) e JOIN layout l ON l.event_id = e.event_id
$$;
SELECT * FROM layout_exact(ARRAY(SELECT e FROM batpak.read_all(:lbase, 1000) e));
SELECT * FROM layout_exact(ARRAY(SELECT e FROM layout l, batpak.read_stream(l.entity) e));
SELECT * FROM layout_exact(ARRAY(SELECT DISTINCT ON (e.event_id) e
                                   FROM layout l, batpak.walk_ancestors(l.event_id) e));
SELECT * FROM layout_exact(ARRAY(SELECT DISTINCT ON (e.event_id) e
                                   FROM layout l, batpak.read_correlated(l.event_id) e));
SELECT batpak.cursor_create('layout', start_after => :lbase);
SELECT * FROM layout_exact(ARRAY(SELECT e FROM batpak.cursor_read('layout', 1000) e));
SET work_mem = '64kB';
SELECT * FROM layout_exact(ARRAY(SELECT e FROM batpak.read_all(:base) e));
RESET work_mem;
SELECT batpak.cursor_drop('layout');
DROP FUNCTION layout_exact(batpak.event[]);
DROP TABLE layout;
