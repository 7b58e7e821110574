-- pgbench script: ten events in one transaction the batpak way, one
-- append_batch of 10 to one entity (autocommit, batpak.transactional = on),
-- like the ten-per-transaction scripts run.sh makes of the others.
\set sid random(1, 100)
SELECT count(*) FROM batpak.append_batch((
  SELECT array_agg(ROW('s' || :sid, 'bench', 'bench', :payload::jsonb,
                       NULL, NULL, NULL, NULL, NULL)::batpak.new_event)
  FROM generate_series(1, 10) AS i));
