-- pgbench script: one PgQ insert_event per transaction (the baseline for
-- batpak.append) into queue bench_w, the same payload as text.
SELECT pgq.insert_event('bench_w', 'bench', :payload);
