-- pgbench script: 1,000 PgQ insert_event calls in one statement (PgQ has no
-- batch call; this is its one-transaction batch).
SELECT count(pgq.insert_event('bench_w', 'bench', :payload))
FROM generate_series(1, 1000) AS i;
