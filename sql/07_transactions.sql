-- Transactional visibility inside one session: read-your-own-writes,
-- rollback and savepoints, the stats counters, PREPARE TRANSACTION, and
-- immediate mode.  (What other sessions see is in specs/.)
SELECT settle();
SELECT written_sequence AS base FROM batpak.stats \gset
SELECT transactions_committed AS c0, transactions_aborted AS a0,
       events_discarded AS d0 FROM batpak.stats \gset
SHOW batpak.transactional;

-- own pending events are visible to get, read_stream, stream_version,
-- walk_ancestors; read_all stops at the visible frontier
BEGIN;
SELECT event_id AS first_id FROM batpak.append('tx-own', 'tx', 'opened', '{"n": 1}') \gset
SELECT event_id AS second_id
  FROM batpak.append('tx-own', 'tx', 'renamed', '{"n": 2}', NULL, 1, NULL, NULL, :'first_id') \gset
SELECT entity_sequence, kind, payload FROM batpak.read_stream('tx-own');
SELECT batpak.stream_version('tx-own');
SELECT kind FROM batpak.get(:'second_id');
SELECT kind FROM batpak.walk_ancestors(:'second_id');
SELECT count(*) AS read_all_sees FROM batpak.read_all(:base);
SELECT entity, events, ok FROM batpak.verify_chain('tx-own');
SELECT pending_transactions, pending_events, visible_sequence = :base AS frontier_held
  FROM batpak.stats;
COMMIT;
SELECT entity_sequence, kind FROM batpak.read_stream('tx-own');
SELECT count(*) AS read_all_sees FROM batpak.read_all(:base);
SELECT settle();
SELECT pending_transactions, pending_events, visible_sequence = written_sequence AS frontier_free
  FROM batpak.stats;

-- rollback: gone, entity sequence used again, the idempotency key free again
BEGIN;
SELECT event_id AS gone_id, global_sequence AS gone_seq
  FROM batpak.append('tx-own', 'tx', 'doomed', '{}', NULL, 2, 'tx-key-1') \gset
SELECT entity_sequence FROM batpak.append('tx-other', 'tx', 'doomed', '{}');
ROLLBACK;
SELECT batpak.get(:'gone_id') IS NULL AS gone;
SELECT batpak.stream_version('tx-own') AS own_version, batpak.stream_version('tx-other') AS other_version;
SELECT entity_sequence, global_sequence > :gone_seq AS after_the_gap
  FROM batpak.append('tx-own', 'tx', 'kept', '{}', NULL, 2, 'tx-key-1');
SELECT entity_sequence, kind FROM batpak.read_stream('tx-own');
SELECT count(*) AS events, count(*) FILTER (WHERE global_sequence = :gone_seq) AS gone_seen
  FROM batpak.read_all(:base);
SELECT entity, events, ok FROM batpak.verify_chain('tx-own');

-- savepoints: a rolled-back savepoint's events go, a released one's stay
BEGIN;
SELECT entity_sequence FROM batpak.append('tx-sp', 'tx', 'a', '{}');
SAVEPOINT s1;
SELECT entity_sequence FROM batpak.append('tx-sp', 'tx', 'b', '{}');
SAVEPOINT s2;
SELECT entity_sequence FROM batpak.append('tx-sp', 'tx', 'c', '{}');
RELEASE SAVEPOINT s2;
SELECT batpak.stream_version('tx-sp') AS before_rollback;
ROLLBACK TO SAVEPOINT s1;
SELECT batpak.stream_version('tx-sp') AS after_rollback;
SELECT entity_sequence FROM batpak.append('tx-sp', 'tx', 'd', '{}');
-- an error inside a savepoint discards that savepoint's events only
SAVEPOINT s3;
SELECT entity_sequence FROM batpak.append('tx-sp', 'tx', 'e', '{}');
SELECT try($$SELECT batpak.append('tx-sp', 'tx', 'f', '{}', NULL, 99)$$);
ROLLBACK TO SAVEPOINT s3;
COMMIT;
SELECT entity_sequence, kind FROM batpak.read_stream('tx-sp');
SELECT entity, events, ok FROM batpak.verify_chain('tx-sp');

-- a key used in a rolled-back savepoint is free again in the same
-- transaction, and the event appended with it then is the new one
BEGIN;
SAVEPOINT k1;
SELECT entity_sequence FROM batpak.append('tx-key-sp', 'tx', 'first', '{}', NULL, NULL, 'tx-key-sp');
ROLLBACK TO SAVEPOINT k1;
SELECT entity_sequence FROM batpak.append('tx-key-sp', 'tx', 'second', '{}', NULL, NULL, 'tx-key-sp');
SELECT kind FROM batpak.append('tx-key-sp-other', 'tx', 'third', '{}', NULL, NULL, 'tx-key-sp') r
  JOIN batpak.read_stream('tx-key-sp') s ON s.event_id = r.event_id;
COMMIT;
SELECT entity_sequence, kind FROM batpak.read_stream('tx-key-sp');

-- PREPARE TRANSACTION with pending events is refused (the transaction
-- rolls back); without batpak events it is not our business
BEGIN;
SELECT entity_sequence FROM batpak.append('tx-2pc', 'tx', 'k', '{}');
PREPARE TRANSACTION 'batpak_2pc';
BEGIN;
SELECT entity_sequence FROM batpak.append('tx-2pc', 'tx', 'k', '{}');
\set VERBOSITY sqlstate
PREPARE TRANSACTION 'batpak_2pc';
\set VERBOSITY default
SELECT batpak.stream_version('tx-2pc') AS after_prepare;
BEGIN;
CREATE TABLE no_batpak (x int);
PREPARE TRANSACTION 'no_batpak_2pc';
ROLLBACK PREPARED 'no_batpak_2pc';
SELECT to_regclass('no_batpak') IS NULL AS rolled_back;
SELECT count(*) AS prepared FROM pg_prepared_xacts;

-- immediate mode: visible at once, a rollback does not undo it
SET batpak.transactional = off;
BEGIN;
SELECT entity_sequence FROM batpak.append('tx-imm', 'tx', 'k', '{}');
ROLLBACK;
SELECT batpak.stream_version('tx-imm') AS immediate_survives_rollback;
RESET batpak.transactional;

-- mixing: an immediate append to an entity with pending events of the same
-- transaction is refused (it would commit after uncommitted events)
BEGIN;
SELECT entity_sequence FROM batpak.append('tx-mix', 'tx', 'k', '{}');
SET LOCAL batpak.transactional = off;
SELECT try($$SELECT batpak.append('tx-mix', 'tx', 'k', '{}')$$);
SELECT entity_sequence FROM batpak.append('tx-mix-2', 'tx', 'k', '{}');
COMMIT;
-- nor may an immediate append name a pending event of its transaction as its
-- cause or reuse its idempotency key: it would be visible at once, and stay
-- so, pointing at an event that may still roll back
BEGIN;
SELECT event_id AS mix_cause FROM batpak.append('tx-mix-3', 'tx', 'k', '{}',
                                                idempotency_key => 'tx-mix-key') \gset
SET LOCAL batpak.transactional = off;
SELECT try(format($$SELECT batpak.append('tx-mix-4', 'tx', 'k', '{}', causation_id => %L)$$,
                  :'mix_cause'));
SELECT try($$SELECT batpak.append('tx-mix-4', 'tx', 'k', '{}', idempotency_key => 'tx-mix-key')$$);
SELECT try($$SELECT count(*) FROM batpak.append_batch(ARRAY[
  ROW('tx-mix-4', 'tx', 'k', '{}', NULL, NULL, 'tx-mix-key', NULL, NULL)::batpak.new_event])$$);
SELECT batpak.stream_version('tx-mix-4') AS nothing_immediate;
ROLLBACK;
SELECT batpak.stream_version('tx-mix-3') AS cause_rolled_back,
       batpak.stream_version('tx-mix-4') AS nothing_stored;
-- but a key or an entity whose pending event a rolled-back savepoint took
-- away is free again for an immediate append
BEGIN;
SAVEPOINT s;
SELECT entity_sequence FROM batpak.append('tx-mix-5', 'tx', 'k', '{}',
                                          idempotency_key => 'tx-mix-key-5');
ROLLBACK TO s;
SET LOCAL batpak.transactional = off;
SELECT entity_sequence FROM batpak.append('tx-mix-6', 'tx', 'k', '{}',
                                          idempotency_key => 'tx-mix-key-5');
SELECT entity_sequence FROM batpak.append('tx-mix-5', 'tx', 'k', '{}');
ROLLBACK;
SELECT batpak.stream_version('tx-mix-5') AS immediate_kept,
       batpak.stream_version('tx-mix-6') AS keyed_kept;
SELECT entity, entity_sequence, kind FROM batpak.read_all(:base)
 WHERE entity LIKE 'tx-mix%' ORDER BY global_sequence;

-- a transactional append cannot run in a parallel worker (a function
-- wrongly marked PARALLEL SAFE): it needs an xid of its own
CREATE FUNCTION tx_par_append() RETURNS bigint LANGUAGE plpgsql PARALLEL SAFE AS $$
BEGIN RETURN (SELECT global_sequence FROM batpak.append('tx-par', 'tx', 'k', '{}')); END $$;
SET force_parallel_mode = on;
SELECT try($$SELECT tx_par_append()$$);
RESET force_parallel_mode;
DROP FUNCTION tx_par_append();
SELECT batpak.stream_version('tx-par') AS parallel_wrote;

-- the counters: commits of transactions that appended, rollbacks
-- (savepoints included) and discarded events
SELECT settle();
SELECT transactions_committed - :c0 AS committed,
       transactions_aborted - :a0 AS aborted,
       events_discarded - :d0 AS discarded,
       pending_transactions, pending_events
  FROM batpak.stats;

-- a transaction holds at most batpak.max_transaction_events pending events
-- (superusers only): the call that would pass the limit fails with 54000
-- and writes nothing, the transaction keeps what it has; immediate appends
-- do not count
CREATE FUNCTION tx_cap_events(entity text, n int) RETURNS batpak.new_event[]
LANGUAGE sql AS $$
    SELECT array_agg(ROW(entity, 'tx', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event)
      FROM generate_series(1, n) $$;
SELECT entity_sequence FROM batpak.append('tx-cap-key', 'tx', 'k', '{}',
                                          idempotency_key => 'cap-k1');
SET batpak.max_transaction_events = 5;
BEGIN;
SELECT count(*) FROM batpak.append_batch(tx_cap_events('tx-cap', 3));
SELECT try_detail($$SELECT count(*) FROM batpak.append_batch(tx_cap_events('tx-cap', 3))$$);
SELECT entity_sequence FROM batpak.append('tx-cap', 'tx', 'k', '{}');
SELECT entity_sequence FROM batpak.append('tx-cap', 'tx', 'k', '{}');
SELECT try_detail($$SELECT batpak.append('tx-cap', 'tx', 'k', '{}')$$);
-- an idempotent retry writes nothing: it gets its receipt at the limit
SELECT (batpak.get(r.event_id)).entity, r.entity_sequence
  FROM batpak.append('tx-cap-key', 'tx', 'k', '{}', idempotency_key => 'cap-k1') r;
SET LOCAL batpak.transactional = off;
SELECT count(*) FROM batpak.append_batch(tx_cap_events('tx-cap-imm', 6));
COMMIT;
-- a new transaction starts from nothing; a rolled-back savepoint gives
-- its events' room back
SELECT entity_sequence FROM batpak.append('tx-cap', 'tx', 'k', '{}');
BEGIN;
SAVEPOINT a;
SELECT count(*) FROM batpak.append_batch(tx_cap_events('tx-cap-sp', 4));
ROLLBACK TO a;
SELECT count(*) FROM batpak.append_batch(tx_cap_events('tx-cap-sp', 5));
COMMIT;
RESET batpak.max_transaction_events;
SELECT entity, count(*), max(entity_sequence) FROM batpak.read_all(:base)
 WHERE entity LIKE 'tx-cap%' GROUP BY entity ORDER BY entity;
CREATE ROLE tx_cap_user;
SET ROLE tx_cap_user;
SELECT try($$SET batpak.max_transaction_events = 100$$);
RESET ROLE;
DROP ROLE tx_cap_user;
DROP FUNCTION tx_cap_events(text, int);

-- Rollbacks to savepoints while the transaction runs: the writer settles
-- each from the end of the transaction's events (writer_resolve_txn).  A
-- released savepoint's events go with the enclosing one's rollback;
-- entity sequences and chains continue from what is left.
SELECT written_sequence AS sp_base FROM batpak.stats \gset
BEGIN;
SELECT entity_sequence FROM batpak.append('sp-a', 'tx', 'k', '{"n": 1}');
SAVEPOINT s1;
SELECT entity_sequence FROM batpak.append('sp-a', 'tx', 'k', '{"n": 2}');
SAVEPOINT s2;
SELECT entity_sequence FROM batpak.append('sp-b', 'tx', 'k', '{"n": 3}');
RELEASE s2;
SELECT entity_sequence FROM batpak.append('sp-a', 'tx', 'k', '{"n": 4}');
ROLLBACK TO s1;
SELECT entity_sequence FROM batpak.append('sp-b', 'tx', 'k', '{"n": 5}');
SELECT entity_sequence FROM batpak.append('sp-a', 'tx', 'k', '{"n": 6}');
SAVEPOINT s3;
SELECT entity_sequence FROM batpak.append('sp-c', 'tx', 'k', '{"n": 7}');
SAVEPOINT s4;
SELECT entity_sequence FROM batpak.append('sp-c', 'tx', 'k', '{"n": 8}');
ROLLBACK TO s4;
SELECT entity_sequence FROM batpak.append('sp-c', 'tx', 'k', '{"n": 9}');
ROLLBACK TO s3;
SELECT entity_sequence FROM batpak.append('sp-c', 'tx', 'k', '{"n": 10}');
-- appends in exception blocks, every other one rolled back, and a
-- rolled-back block that holds committed inner blocks
DO $$
BEGIN
    FOR i IN 11 .. 70 LOOP
        BEGIN
            PERFORM batpak.append('sp-d-' || (i % 3), 'tx', 'k', jsonb_build_object('n', i));
            IF i % 2 = 0 THEN
                RAISE EXCEPTION 'roll back';
            END IF;
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
    END LOOP;
    BEGIN
        FOR i IN 71 .. 75 LOOP
            BEGIN
                PERFORM batpak.append('sp-d-' || (i % 3), 'tx', 'k', jsonb_build_object('n', i));
            END;
        END LOOP;
        RAISE EXCEPTION 'roll back';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
END $$;
SELECT e, batpak.stream_version(e)
  FROM unnest(ARRAY['sp-a', 'sp-b', 'sp-c', 'sp-d-0', 'sp-d-1', 'sp-d-2']) e;
COMMIT;
SELECT settle();
SELECT entity, string_agg(entity_sequence || ':' || (payload->>'n'), ' ' ORDER BY entity_sequence)
  FROM batpak.read_all(:sp_base) WHERE entity LIKE 'sp-%' GROUP BY entity ORDER BY entity;
SELECT entity, events, ok FROM batpak.verify_chain() WHERE entity LIKE 'sp-%' ORDER BY entity;
SELECT pending_transactions, pending_events FROM batpak.stats;
