-- pgbench script: one batpak.append in an explicit transaction
-- (batpak.transactional = on, the default): the event is durable when the
-- append returns and visible at COMMIT, which also pays PostgreSQL's own
-- commit.  Same entities and payload as batpak_append.sql.
\set sid random(1, 100)
BEGIN;
SELECT batpak.append('s' || :sid, 'bench', 'bench', :payload::jsonb);
COMMIT;
