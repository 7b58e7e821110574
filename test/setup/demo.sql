-- test/setup/demo.sql
--
-- A short tour of batpak, run by "make demo" with psql --echo-all against a
-- fresh cluster.  Two entities (an order and a payment) linked by causation.

\pset null '(null)'
\pset pager off

-- 1. The first event of order-1001.  expected_sequence 0: the stream must be
--    empty.  The idempotency key makes a retry safe.
SELECT event_id, global_sequence, entity_sequence, encode(event_hash, 'hex') AS event_hash
FROM batpak.append('order-1001', 'shop', 'order.placed',
                   '{"customer": "ann", "total_cents": 4200}',
                   metadata => '{"source": "demo"}',
                   expected_sequence => 0,
                   idempotency_key => 'order-1001/placed') \gset placed_
\echo order.placed: event :placed_event_id, global :placed_global_sequence, entity :placed_entity_sequence

-- 2. A retry with the same key writes nothing and returns the same receipt.
SELECT event_id = :'placed_event_id' AS same_event, global_sequence
FROM batpak.append('order-1001', 'shop', 'order.placed',
                   '{"customer": "ann", "total_cents": 4200}',
                   idempotency_key => 'order-1001/placed');

-- 3. The payment, caused by the order: it inherits the order's correlation.
SELECT event_id, global_sequence, entity_sequence
FROM batpak.append('payment-77', 'shop', 'payment.captured',
                   '{"order": "order-1001", "amount_cents": 4200}',
                   causation_id => :'placed_event_id') \gset paid_
\echo payment.captured: event :paid_event_id, global :paid_global_sequence

-- 4. Back on the order, caused by the payment; compare-and-set on version 1.
SELECT global_sequence, entity_sequence, encode(prev_hash, 'hex') AS prev_hash
FROM batpak.append('order-1001', 'shop', 'order.paid', '{"paid": true}',
                   expected_sequence => 1,
                   causation_id => :'paid_event_id');

-- 5. A stale writer: expected version 1, but order-1001 is at 2 (SQLSTATE BP001).
\set ON_ERROR_STOP off
\set VERBOSITY verbose
SELECT * FROM batpak.append('order-1001', 'shop', 'order.cancelled', '{}',
                            expected_sequence => 1);
\set VERBOSITY default
\set ON_ERROR_STOP on

-- 6. An atomic batch: both events or neither.
SELECT global_sequence, entity_sequence
FROM batpak.append_batch(ARRAY[
    ROW('order-1001', 'shop', 'order.shipped', '{"carrier": "dhl"}', NULL, 2, NULL, NULL, NULL)::batpak.new_event,
    ROW('payment-77', 'shop', 'payment.settled', '{"batch": 9}', NULL, 1, NULL, NULL, :'paid_event_id')::batpak.new_event]);

-- 7. Reading: one stream, everything, one event.
SELECT entity_sequence, kind, payload, causation_id IS NOT NULL AS caused
FROM batpak.read_stream('order-1001');

SELECT global_sequence, entity, entity_sequence, kind,
       correlation_id = :'placed_event_id' AS in_order_correlation
FROM batpak.read_all();

SELECT entity, kind, payload, metadata FROM batpak.get(:'placed_event_id');

SELECT batpak.stream_version('order-1001') AS order_version,
       batpak.stream_version('nobody') AS unknown_version;

-- 8. Following the causal links.
SELECT global_sequence, entity, kind FROM batpak.read_correlated(:'placed_event_id');

SELECT global_sequence, entity, kind
FROM batpak.walk_ancestors((SELECT event_id FROM batpak.read_stream('order-1001', 1, 1)));

-- 9. The outbox pattern: events commit and roll back with the transaction.
--    Inside the transaction the event is visible to us only; after ROLLBACK
--    it is gone, and the entity sequence is given to the next append.
CREATE TEMP TABLE orders (id text PRIMARY KEY, status text);
BEGIN;
INSERT INTO orders VALUES ('order-1002', 'placed');
SELECT entity_sequence FROM batpak.append('order-1002', 'shop', 'order.placed', '{"customer": "bob"}');
SELECT batpak.stream_version('order-1002') AS seen_inside_the_transaction;
ROLLBACK;
SELECT batpak.stream_version('order-1002') AS after_rollback,
       (SELECT count(*) FROM orders) AS orders_after_rollback;
BEGIN;
INSERT INTO orders VALUES ('order-1002', 'placed');
SELECT entity_sequence FROM batpak.append('order-1002', 'shop', 'order.placed', '{"customer": "bob"}');
COMMIT;
SELECT entity_sequence, kind FROM batpak.read_stream('order-1002');

-- 10. Consuming: a durable cursor over the shop's orders.  Its position
--     moves in our transaction: ROLLBACK delivers the same events again,
--     COMMIT consumes them.  cursor_wait says whether there is more.
SELECT batpak.cursor_create('shipping', scope => 'shop', kinds => '{order.placed}');
BEGIN;
SELECT global_sequence, entity, payload FROM batpak.cursor_read('shipping', 10);
ROLLBACK;
BEGIN;
SELECT global_sequence, entity, payload FROM batpak.cursor_read('shipping', 10);
COMMIT;
SELECT batpak.cursor_wait('shipping', 0) AS more_to_read;
SELECT name, position, lag, gaps FROM batpak.cursors;

-- 11. Every entity's hash chain, recomputed from the segment files.
SELECT * FROM batpak.verify_chain();

-- 12. The writer's figures.
\x on
SELECT * FROM batpak.stats;
\x off
