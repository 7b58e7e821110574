-- pgbench script: one batpak.append per transaction, 100 entities, the same
-- ~200-byte payload as baseline_insert.sql (bound as a parameter).
\set sid random(1, 100)
SELECT batpak.append('s' || :sid, 'bench', 'bench', :payload::jsonb);
