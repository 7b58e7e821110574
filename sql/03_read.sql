-- reading: streams, the global order with filters, links, verification
SELECT (SELECT written_sequence FROM batpak.stats) AS base \gset
SELECT count(*) FROM batpak.append_batch(ARRAY(
    SELECT ROW('acct-' || (i % 3), CASE WHEN i % 2 = 0 THEN 'bank' ELSE 'audit' END,
               CASE WHEN i % 4 = 0 THEN 'deposit' ELSE 'withdrawal' END,
               jsonb_build_object('i', i), NULL, NULL, NULL, NULL, NULL)::batpak.new_event
      FROM generate_series(1, 12) i));

SELECT global_sequence - :base AS rel, entity, scope, kind, entity_sequence, payload
  FROM batpak.read_all(:base) ORDER BY global_sequence;
SELECT global_sequence - :base AS rel, payload FROM batpak.read_all(:base, 3);
SELECT global_sequence - :base AS rel, entity FROM batpak.read_all(:base, scope => 'bank');
SELECT global_sequence - :base AS rel, kind FROM batpak.read_all(:base, kinds => ARRAY['deposit']);
SELECT global_sequence - :base AS rel FROM batpak.read_all(:base, kinds => ARRAY['deposit', 'nothing', NULL]);
SELECT count(*) FROM batpak.read_all(:base, kinds => ARRAY[]::text[]);
SELECT global_sequence - :base AS rel FROM batpak.read_all(:base, entity_prefix => 'acct-1');
SELECT global_sequence - :base AS rel FROM batpak.read_all(:base, 2, 'audit', ARRAY['withdrawal'], 'acct-');
SELECT count(*) FROM batpak.read_all(:base, 0);
SELECT count(*) FROM batpak.read_all(1000000);

SELECT entity_sequence, payload FROM batpak.read_stream('acct-1');
SELECT entity_sequence, payload FROM batpak.read_stream('acct-1', 2);
SELECT entity_sequence, payload FROM batpak.read_stream('acct-1', 1, 2);
SELECT count(*) FROM batpak.read_stream('acct-1', 4);
SELECT count(*) FROM batpak.read_stream('no-such-entity');
SELECT batpak.stream_version('acct-0'), batpak.stream_version('no-such-entity');

-- get: absent ids give NULL
SELECT batpak.get('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11') IS NULL AS foreign_uuid,
       batpak.get('00000000-0000-8fff-8000-000000000000') IS NULL AS beyond_end,
       batpak.get(NULL) IS NULL AS null_id;
-- an id with the right sequence but other random bits is not the event
SELECT batpak.get(overlay(event_id::text placing 'ffff' from 20)::uuid) IS NULL AS forged
  FROM batpak.read_all(:base, 1);

-- walk_ancestors: a causal chain of four, nearest first
CREATE TEMP TABLE w (n int, id uuid);
INSERT INTO w SELECT 1, event_id FROM batpak.append('chain', 'x', 'step', '{"n": 1}');
INSERT INTO w SELECT 2, event_id FROM batpak.append('chain', 'x', 'step', '{"n": 2}', causation_id => (SELECT id FROM w WHERE n = 1));
INSERT INTO w SELECT 3, event_id FROM batpak.append('chain-b', 'x', 'step', '{"n": 3}', causation_id => (SELECT id FROM w WHERE n = 2));
INSERT INTO w SELECT 4, event_id FROM batpak.append('chain', 'x', 'step', '{"n": 4}', causation_id => (SELECT id FROM w WHERE n = 3));
SELECT payload FROM batpak.walk_ancestors((SELECT id FROM w WHERE n = 4));
SELECT payload FROM batpak.walk_ancestors((SELECT id FROM w WHERE n = 4), 2);
SELECT count(*) FROM batpak.walk_ancestors((SELECT id FROM w WHERE n = 4), 0);
SELECT count(*) FROM batpak.walk_ancestors((SELECT id FROM w WHERE n = 1));
SELECT count(*) FROM batpak.walk_ancestors('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');

-- read_correlated: the root and everything that inherited its correlation
SELECT payload FROM batpak.read_correlated((SELECT id FROM w WHERE n = 1));
SELECT count(*) FROM batpak.read_correlated((SELECT id FROM w WHERE n = 2));
INSERT INTO w SELECT 5, event_id FROM batpak.append('corr', 'x', 'a', '{"n": 5}', correlation_id => 'c0000000-0000-4000-8000-000000000001');
INSERT INTO w SELECT 6, event_id FROM batpak.append('corr', 'x', 'b', '{"n": 6}', causation_id => (SELECT id FROM w WHERE n = 5));
SELECT payload FROM batpak.read_correlated('c0000000-0000-4000-8000-000000000001');

-- verify_chain: one entity, an unknown one, and all
SELECT * FROM batpak.verify_chain('acct-1');
SELECT * FROM batpak.verify_chain('no-such-entity');
SELECT entity, events, ok, first_bad_sequence, detail FROM batpak.verify_chain() ORDER BY entity;

-- stats: counters that this suite has driven
SELECT settle();
SELECT state, events = written_sequence AS events_visible,
       written_sequence = visible_sequence AND durable_sequence = visible_sequence AS frontiers_equal,
       entities, segments, index_bytes > 0 AS has_index, failure
  FROM batpak.stats;
