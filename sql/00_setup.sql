-- Set-up shared by the regression tests: the extension, and a helper that
-- runs a statement and returns 'ok' or its SQLSTATE and message, so that
-- error paths are asserted exactly.
CREATE EXTENSION batpak;

-- the writer connects to this database, which pg_regress has just created:
-- wait (bounded) until it has rebuilt its index and serves
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    WHILE (SELECT state FROM batpak.stats) <> 'ready' LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'batpak writer not ready: %', (SELECT state FROM batpak.stats);
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;

CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- the detail line of an error, for messages that put figures there
CREATE FUNCTION try_detail(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ': ' || SQLERRM || ' / ' || d;
END
$$;

SELECT state, events, entities, writer_pid IS NOT NULL AS has_writer
  FROM batpak.stats;

-- COMMIT does not wait for the writer (xact.c): it settles the ended
-- transactions a moment later, and until then batpak.stats shows them
-- pending and its visible_sequence behind.  Tests that look at those wait
-- here first (bounded).
CREATE FUNCTION settle() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '10 seconds';
BEGIN
    WHILE (SELECT pending_transactions > 0 OR visible_sequence < written_sequence FROM batpak.stats) LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the writer did not settle within 10 s: %', (SELECT row_to_json(s) FROM batpak.stats s);
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;
