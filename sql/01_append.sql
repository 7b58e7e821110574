-- append: receipts, sequences, the hash chain, CAS, idempotency, links
CREATE TEMP TABLE r AS
SELECT 1 AS n, * FROM batpak.append('order-1', 'shop', 'order.created', '{"total": 10}');
INSERT INTO r SELECT 2, * FROM batpak.append('order-1', 'shop', 'order.paid', '{"amount": 10}', '{"by": "alice"}', 1);
INSERT INTO r SELECT 3, * FROM batpak.append('order-2', 'shop', 'order.created', '{"total": 5}', expected_sequence => 0);
SELECT n, global_sequence, entity_sequence, length(event_hash) AS hash_len,
       prev_hash = '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea AS first_in_chain
  FROM r ORDER BY n;
-- each prev_hash is the event_hash of the entity's previous event
SELECT b.prev_hash = a.event_hash AS chained FROM r a, r b WHERE a.n = 1 AND b.n = 2;
-- event ids are version 8 UUIDs that sort like the global sequence
SELECT n, substr(event_id::text, 15, 1) AS version, left(event_id::text, 18) AS prefix FROM r ORDER BY n;
-- the receipt matches what is stored
SELECT n, e.global_sequence = r.global_sequence AND e.entity_sequence = r.entity_sequence
          AND e.event_hash = r.event_hash AND e.prev_hash = r.prev_hash
          AND e.committed_at = r.committed_at AS same
  FROM r, batpak.get(r.event_id) e ORDER BY n;

-- compare-and-set
SELECT try_detail($$SELECT batpak.append('order-1', 'shop', 'order.paid', '{}', expected_sequence => 1)$$);
SELECT try_detail($$SELECT batpak.append('order-3', 'shop', 'order.paid', '{}', expected_sequence => 2)$$);
SELECT try_detail($$SELECT batpak.append('order-1', 'shop', 'order.paid', '{}', expected_sequence => 0)$$);
SELECT global_sequence, entity_sequence FROM batpak.append('order-1', 'shop', 'order.shipped', '{}', expected_sequence => 2);
SELECT batpak.stream_version('order-1') AS v1, batpak.stream_version('order-3') AS v3;

-- idempotency: the second call returns the first receipt and writes nothing
CREATE TEMP TABLE k AS
SELECT * FROM batpak.append('order-9', 'shop', 'order.created', '{"total": 1}', idempotency_key => 'create-order-9');
SELECT (SELECT written_sequence FROM batpak.stats) AS before_retry;
SELECT a.event_id = k.event_id AND a.global_sequence = k.global_sequence
       AND a.event_hash = k.event_hash AND a.committed_at = k.committed_at AS same_receipt
  FROM k, batpak.append('order-9', 'shop', 'order.created', '{"total": 1}', idempotency_key => 'create-order-9') a;
-- the key wins even when the rest of the call differs
SELECT a.event_id = k.event_id AS same_event
  FROM k, batpak.append('other', 'elsewhere', 'x', '{"different": true}', expected_sequence => 7,
                        idempotency_key => 'create-order-9') a;
SELECT (SELECT written_sequence FROM batpak.stats) AS after_retry,
       batpak.stream_version('other') AS other_version;

-- correlation: own id by default, inherited through causation, or explicit
CREATE TEMP TABLE c AS SELECT 1 AS n, * FROM batpak.append('flow', 'shop', 'cmd.place', '{}');
INSERT INTO c SELECT 2, * FROM batpak.append('flow', 'shop', 'evt.placed', '{}',
                 causation_id => (SELECT event_id FROM c WHERE n = 1));
INSERT INTO c SELECT 3, * FROM batpak.append('flow-b', 'shop', 'evt.reserved', '{}',
                 causation_id => (SELECT event_id FROM c WHERE n = 2));
INSERT INTO c SELECT 4, * FROM batpak.append('flow-c', 'shop', 'evt.other', '{}',
                 correlation_id => '11111111-2222-3333-4444-555555555555',
                 causation_id => (SELECT event_id FROM c WHERE n = 2));
SELECT c.n, e.correlation_id = (SELECT event_id FROM c WHERE n = 1) AS root_correlation,
       e.correlation_id = '11111111-2222-3333-4444-555555555555' AS explicit_correlation,
       e.causation_id = (SELECT event_id FROM c p WHERE p.n = c.n - 1) AS caused_by_previous,
       e.causation_id = (SELECT event_id FROM c p WHERE p.n = 2) AS caused_by_2
  FROM c, batpak.get(c.event_id) e ORDER BY c.n;
SELECT try($$SELECT batpak.append('flow', 'shop', 'evt', '{}', causation_id => '00000000-0000-8999-8000-000000000000')$$);
SELECT try($$SELECT batpak.append('flow', 'shop', 'evt', '{}', causation_id => 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')$$);

-- null metadata stays null, given metadata is kept
SELECT global_sequence, metadata FROM batpak.read_all() WHERE entity = 'order-1' ORDER BY 1;
