-- batpak.synchronous_commit = off: the append returns after the write, the
-- event is visible at once, and the writer syncs it within batpak.flush_delay
SET batpak.synchronous_commit = off;
SELECT settle();
SELECT visible_sequence AS before FROM batpak.stats \gset
SELECT entity_sequence FROM batpak.append('async-1', 's', 'k', '{"n": 1}');
SELECT entity_sequence FROM batpak.append_batch(ARRAY[
    ROW('async-1', 's', 'k', '{"n": 2}', NULL, 1, NULL, NULL, NULL),
    ROW('async-1', 's', 'k', '{"n": 3}', NULL, 2, NULL, NULL, NULL)
]::batpak.new_event[]);
SELECT entity_sequence, payload FROM batpak.read_stream('async-1');
SELECT settle();
SELECT visible_sequence - :before AS visible_added FROM batpak.stats;
-- bounded wait for the flush (flush_delay is 10ms; allow 10 s)
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '10 seconds';
BEGIN
    WHILE (SELECT durable_sequence < visible_sequence FROM batpak.stats) LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'asynchronous appends not synced within 10 s';
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$$;
SELECT durable_sequence = visible_sequence AS synced FROM batpak.stats;
RESET batpak.synchronous_commit;
SELECT entity_sequence FROM batpak.append('async-1', 's', 'k', '{"n": 4}');
SELECT * FROM batpak.verify_chain('async-1');
