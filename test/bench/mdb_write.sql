-- pgbench script: one Message DB write_message per transaction (the
-- baseline for batpak.append), 100 streams of category 'bench', the same
-- payload.  run.sh runs it in database message_store with
-- search_path = message_store, as Eventide's clients connect.
\set sid random(1, 100)
SELECT message_store.write_message(gen_random_uuid()::text, 'bench-' || :sid, 'bench', :payload::jsonb);
