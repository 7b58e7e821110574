-- pgbench script: one plain-table insert in an explicit transaction, the
-- baseline for batpak_append_tx.sql (the same three statements, so both
-- pay the same round trips).  Same streams and payload as
-- baseline_insert.sql.
\set sid random(1, 100)
BEGIN;
INSERT INTO events (id, stream, version, type, data)
VALUES (gen_random_uuid(), 's' || :sid, nextval('v'), 'bench', :payload::jsonb);
COMMIT;
