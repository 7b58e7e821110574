-- pgbench script: 1,000 rows in one INSERT ... SELECT (the baseline for
-- batpak.append_batch of 1,000 events).
INSERT INTO events (id, stream, version, type, data)
SELECT gen_random_uuid(), 's' || (i % 100), nextval('v'), 'bench', :payload::jsonb
FROM generate_series(1, 1000) AS i;
