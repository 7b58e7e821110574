-- pgbench script: 1,000 Message DB write_message calls in one statement
-- (Message DB has no batch call; this is its one-transaction batch).
SELECT count(message_store.write_message(gen_random_uuid()::text, 'bench-' || (i % 100), 'bench', :payload::jsonb))
FROM generate_series(1, 1000) AS i;
