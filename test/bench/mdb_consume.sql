-- pgbench script: a Message DB consumer, as Eventide's consumers work: read
-- the next 1,000 messages of category 'load' from :pos and record the
-- position in the consumer's position stream, in one transaction (Eventide
-- records it every position_update_interval messages; here once a page).
-- The position stream's name ('load:position-bench') comes in as
-- :position_stream: pgbench would take ':position' in a literal for a
-- variable.
BEGIN;
SELECT count(*) AS n, max(global_position) AS last
  FROM message_store.get_category_messages('load', :pos, 1000) \gset
\set pos :last + 1
SELECT message_store.write_message(gen_random_uuid()::text, :position_stream, 'Recorded',
                                   jsonb_build_object('position', :last::bigint));
COMMIT;
