-- Cursors: create, read in the caller's transaction, filters, consumer
-- groups, gaps, the own-transaction frontier, wait, seek, drop, the view,
-- errors and ownership.  Sequences are shown relative to :base.
SELECT written_sequence AS base FROM batpak.stats \gset

SELECT batpak.cursor_create('c_all', start_after => :base);
SELECT batpak.cursor_create('c_kind', kinds => ARRAY['k.a'], start_after => :base);
SELECT batpak.cursor_create('c_scope', scope => 'sc2', start_after => :base);
SELECT batpak.cursor_create('c_prefix', entity_prefix => 'cp-1', start_after => :base);
SELECT batpak.cursor_create('c_g0', start_after => :base, group_member => 0, group_size => 2);
SELECT batpak.cursor_create('c_g1', start_after => :base, group_member => 1, group_size => 2);

-- nothing yet
SELECT count(*) FROM batpak.cursor_read('c_all');
SELECT batpak.cursor_wait('c_all', 0) AS has_events;

SELECT e.global_sequence - :base AS seq, e.entity_sequence
  FROM (VALUES (1, 'cp-1a', 'sc1', 'k.a'), (2, 'cp-1b', 'sc2', 'k.b'),
               (3, 'cp-2a', 'sc1', 'k.a'), (4, 'cp-1a', 'sc2', 'k.a'),
               (5, 'cp-2a', 'sc2', 'k.b'), (6, 'cp-1b', 'sc1', 'k.a'),
               (7, 'cp-3a', 'sc1', 'k.b'), (8, 'cp-1a', 'sc1', 'k.b')) v(n, ent, sc, k),
       LATERAL batpak.append(v.ent, v.sc, v.k, jsonb_build_object('n', v.n)) e
 ORDER BY v.n;

SELECT batpak.cursor_wait('c_all', 0) AS has_events;

-- in pages: each call starts where the last one ended
SELECT global_sequence - :base AS seq, entity, kind, payload FROM batpak.cursor_read('c_all', 3);
SELECT global_sequence - :base AS seq, entity, kind, payload FROM batpak.cursor_read('c_all', 3);
SELECT global_sequence - :base AS seq, entity, kind, payload FROM batpak.cursor_read('c_all', 3);
SELECT count(*) FROM batpak.cursor_read('c_all', 3);
SELECT batpak.cursor_wait('c_all', 0) AS has_events;

-- filters: those of read_all
SELECT global_sequence - :base AS seq, entity, kind FROM batpak.cursor_read('c_kind');
SELECT global_sequence - :base AS seq, entity, scope FROM batpak.cursor_read('c_scope');
SELECT global_sequence - :base AS seq, entity FROM batpak.cursor_read('c_prefix', NULL);

-- consumer groups: every event on exactly one member, by entity
SELECT 'g0' AS member, global_sequence - :base AS seq, entity,
       batpak.entity_group(entity, 2) AS entity_group
  FROM batpak.cursor_read('c_g0')
UNION ALL
SELECT 'g1', global_sequence - :base, entity, batpak.entity_group(entity, 2)
  FROM batpak.cursor_read('c_g1')
ORDER BY seq;
-- the split is a fixed function of the entity text (BLAKE2b), the same on
-- every platform and release
SELECT e, batpak.entity_group(e, 1) AS of1, batpak.entity_group(e, 2) AS of2,
       batpak.entity_group(e, 4) AS of4, batpak.entity_group(e, 1000) AS of1000
  FROM unnest(ARRAY['order-1', 'order-2', 'customer-42', 'with space']) e;

-- the position moves in the caller's transaction
SELECT batpak.cursor_seek('c_all', :base + 2);
BEGIN;
SELECT global_sequence - :base AS seq FROM batpak.cursor_read('c_all', 2);
SELECT position - :base AS position FROM batpak.cursors WHERE name = 'c_all';
ROLLBACK;
SELECT position - :base AS position_after_rollback FROM batpak.cursors WHERE name = 'c_all';
BEGIN;
SELECT global_sequence - :base AS seq FROM batpak.cursor_read('c_all', 2);
COMMIT;
SELECT global_sequence - :base AS seq FROM batpak.cursor_read('c_all', 1);
-- max_count 0 reads nothing and does not move
SELECT count(*) FROM batpak.cursor_read('c_all', 0);
SELECT position - :base AS position FROM batpak.cursors WHERE name = 'c_all';
SELECT count(*) FROM batpak.cursor_read('c_all');

-- gaps: a rolled-back event's sequence is skipped and counted
BEGIN;
SELECT global_sequence - :base AS rolled_back_seq FROM batpak.append('cp-1a', 'sc1', 'k.a', '{"n": 9}');
ROLLBACK;
SELECT global_sequence - :base AS seq, entity_sequence FROM batpak.append('cp-1a', 'sc1', 'k.a', '{"n": 10}');
SELECT global_sequence - :base AS seq, entity_sequence, payload FROM batpak.cursor_read('c_all');
SELECT global_sequence - :base AS seq, payload FROM batpak.cursor_read('c_kind');
SELECT name, position - :base AS position, gaps FROM batpak.cursors
 WHERE name IN ('c_all', 'c_kind', 'c_scope') ORDER BY name;

-- the own transaction's pending events are not delivered (they may still
-- roll back to a savepoint), nor anything after them
BEGIN;
SELECT global_sequence - :base AS seq FROM batpak.append('cp-1a', 'sc1', 'k.a', '{"n": 11}');
SELECT count(*) AS own_pending_read FROM batpak.cursor_read('c_all');
SELECT batpak.cursor_wait('c_all', 0) AS has_events;
-- waiting cannot help: it returns at once, even without a timeout
SET LOCAL statement_timeout = '5s';
SELECT batpak.cursor_wait('c_all', NULL) AS has_events_no_timeout;
COMMIT;
SELECT global_sequence - :base AS seq, payload FROM batpak.cursor_read('c_all');

-- immediate mode events are delivered like committed ones
SET batpak.transactional = off;
SELECT global_sequence - :base AS seq FROM batpak.append('cp-9', 'sc1', 'k.a', '{"n": 12}');
RESET batpak.transactional;
SELECT global_sequence - :base AS seq, entity FROM batpak.cursor_read('c_all');

-- events larger than the output buffer (8kB): each row gets its own
SELECT e.global_sequence - :base AS seq, length(e.payload->>'big') AS big
  FROM batpak.append_batch(ARRAY[
         ROW('cp-big', 'sc1', 'k.b', jsonb_build_object('big', repeat('x', 20000)), NULL, NULL, NULL, NULL, NULL),
         ROW('cp-big', 'sc1', 'k.b', jsonb_build_object('big', repeat('y', 300000)), NULL, NULL, NULL, NULL, NULL),
         ROW('cp-big', 'sc1', 'k.b', '{"big": "z"}', NULL, NULL, NULL, NULL, NULL)]::batpak.new_event[]) r,
       LATERAL batpak.get(r.event_id) e;
SELECT global_sequence - :base AS seq, length(payload->>'big') AS big, md5(payload->>'big') AS md5
  FROM batpak.cursor_read('c_all');

-- a bounded wait that finds nothing returns false
SELECT batpak.cursor_wait('c_all', 20) AS has_events;
SELECT batpak.cursor_wait('c_all', NULL) AS has_events_null_timeout_after_seek
  FROM batpak.cursor_seek('c_all', :base);

-- the view
SELECT name, scope, kinds, entity_prefix, group_member, group_size,
       position - :base AS position, lag, gaps, owner = current_user AS mine,
       read_at IS NOT NULL AS was_read
  FROM batpak.cursors WHERE name LIKE 'c\_%' ORDER BY name;

-- errors
SELECT try($$SELECT batpak.cursor_create('c_all')$$);
SELECT try($$SELECT batpak.cursor_create(NULL)$$);
SELECT try($$SELECT batpak.cursor_create('')$$);
SELECT try($$SELECT batpak.cursor_create(E'bad\nname')$$);
SELECT try($$SELECT batpak.cursor_create(repeat('n', 256))$$);
SELECT try($$SELECT batpak.cursor_create('e1', scope => '')$$);
SELECT try($$SELECT batpak.cursor_create('e1', entity_prefix => E'\t')$$);
SELECT try($$SELECT batpak.cursor_create('e1', kinds => '{}')$$);
SELECT try($$SELECT batpak.cursor_create('e1', kinds => ARRAY['a', NULL])$$);
SELECT try($$SELECT batpak.cursor_create('e1', kinds => '{{a},{b}}')$$);
SELECT try($$SELECT batpak.cursor_create('e1', kinds => ARRAY[''])$$);
SELECT try($$SELECT batpak.cursor_create('e1', start_after => -1)$$);
SELECT try($$SELECT batpak.cursor_create('e1', start_after => 9223372036854775807)$$);
SELECT try($$SELECT batpak.cursor_create('e1', group_member => 0)$$);
SELECT try($$SELECT batpak.cursor_create('e1', group_size => 2)$$);
SELECT try($$SELECT batpak.cursor_create('e1', group_member => 0, group_size => 0)$$);
SELECT try($$SELECT batpak.cursor_create('e1', group_member => 2, group_size => 2)$$);
SELECT try($$SELECT batpak.cursor_create('e1', group_member => -1, group_size => 2)$$);
SELECT try_detail($$SELECT batpak.cursor_create('e1', group_member => 5, group_size => 3)$$);
SELECT try($$SELECT batpak.cursor_read('nope')$$);
SELECT try($$SELECT batpak.cursor_read(NULL)$$);
SELECT try($$SELECT batpak.cursor_read('c_all', -1)$$);
SELECT try($$SELECT batpak.cursor_wait('nope', 0)$$);
SELECT try($$SELECT batpak.cursor_wait('c_all', -5)$$);
SELECT try($$SELECT batpak.cursor_seek('nope', 0)$$);
SELECT try($$SELECT batpak.cursor_seek('c_all', -1)$$);
SELECT try($$SELECT batpak.cursor_seek('c_all', NULL)$$);
SELECT try($$SELECT batpak.cursor_seek('c_all', 9223372036854775807)$$);
SELECT try($$SELECT batpak.cursor_drop('nope')$$);
SELECT try($$SELECT batpak.entity_group('x', 0)$$);
SELECT try($$SELECT batpak.entity_group('', 2)$$);
SELECT batpak.entity_group(NULL, 2) IS NULL AS strict_null;
-- rows that arrive another way are checked too
SELECT try($$INSERT INTO batpak.cursor_state (name, group_member) VALUES ('e2', 1)$$);
SELECT try($$INSERT INTO batpak.cursor_state (name, position) VALUES ('e3', -1)$$);
SELECT try($$INSERT INTO batpak.cursor_state (name, kinds) VALUES ('e4', '{}')$$);
SELECT try($$INSERT INTO batpak.cursor_state (name, group_member, group_size) VALUES ('e5', 3, 3)$$);
-- none of the failed calls left a cursor behind
SELECT count(*) FROM batpak.cursors WHERE name LIKE 'e%';

-- the positions are dumped with the extension
SELECT c.relname FROM pg_extension x, unnest(x.extconfig) t(oid), pg_class c
 WHERE x.extname = 'batpak' AND c.oid = t.oid ORDER BY 1;

-- ownership: a cursor belongs to its creator (and the creator's members)
CREATE ROLE cursor_user;
CREATE ROLE cursor_other;
GRANT USAGE ON SCHEMA batpak TO cursor_user, cursor_other;
GRANT EXECUTE ON FUNCTION batpak.cursor_create(text, text, text[], text, bigint, integer, integer),
    batpak.cursor_read(text, integer), batpak.cursor_wait(text, integer),
    batpak.cursor_seek(text, bigint), batpak.cursor_drop(text)
    TO cursor_user, cursor_other;
SELECT has_table_privilege('cursor_user', 'batpak.cursor_state', 'SELECT') AS user_reads_table,
       has_table_privilege('public', 'batpak.cursors', 'SELECT') AS public_reads_view,
       has_function_privilege('public', 'batpak.cursor_read(text, integer)', 'EXECUTE')
           AS public_executes;
SET ROLE cursor_user;
SELECT batpak.cursor_create('c_users', start_after => :base);
SELECT global_sequence - :base AS seq FROM batpak.cursor_read('c_users', 1);
SELECT try($$SELECT batpak.cursor_read('c_all', 1)$$);
SELECT try($$SELECT batpak.cursor_seek('c_all', 0)$$);
SELECT try($$SELECT batpak.cursor_drop('c_all')$$);
SELECT batpak.cursor_wait('c_all', 0) AS anyone_may_wait;
SELECT try($$SELECT count(*) FROM batpak.cursors$$);
RESET ROLE;
GRANT SELECT ON batpak.cursors TO cursor_user;
SET ROLE cursor_user;
SELECT try($$SELECT count(*) FROM batpak.cursors$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION batpak.stats_row() TO cursor_user;
SET ROLE cursor_user;
SELECT name, owner FROM batpak.cursors WHERE name = 'c_users';
SET ROLE cursor_other;
SELECT try($$SELECT batpak.cursor_read('c_users', 1)$$);
RESET ROLE;
GRANT cursor_user TO cursor_other;
SET ROLE cursor_other;
SELECT global_sequence - :base AS seq FROM batpak.cursor_read('c_users', 1);
SELECT batpak.cursor_drop('c_users');
RESET ROLE;

-- cursor_read advances the position, which needs an xid: not in a parallel
-- operation (a wrapper wrongly marked PARALLEL SAFE), with a clear error
-- instead of PostgreSQL's XX000; the position has not moved
SELECT batpak.cursor_create('c_par');
CREATE FUNCTION c_par_read() RETURNS bigint LANGUAGE sql PARALLEL SAFE AS
    $$ SELECT count(*) FROM batpak.cursor_read('c_par', 1) $$;
SET force_parallel_mode = on;
SELECT try($$SELECT c_par_read()$$);
RESET force_parallel_mode;
DROP FUNCTION c_par_read();
SELECT position FROM batpak.cursors WHERE name = 'c_par';

-- drop
SELECT batpak.cursor_drop(name) FROM batpak.cursors WHERE name LIKE 'c\_%';
SELECT count(*) FROM batpak.cursors;
DROP OWNED BY cursor_user, cursor_other;
DROP ROLE cursor_user, cursor_other;
