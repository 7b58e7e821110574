-- pgbench script: one plain-table insert per transaction (the baseline for
-- batpak.append).  100 streams; version comes from a global sequence, which
-- keeps (stream, version) unique without a max() lookup.  :payload is bound
-- as a parameter (run.sh passes it with -D and uses -M prepared).
\set sid random(1, 100)
INSERT INTO events (id, stream, version, type, data)
VALUES (gen_random_uuid(), 's' || :sid, nextval('v'), 'bench', :payload::jsonb);
