-- pgbench script: one batpak.append_batch of 1,000 events.  The whole
-- statement is measured, array construction included; batpak_batch_build.sql
-- measures the construction alone so the report can say how much of the time
-- it takes.
SELECT count(*) FROM batpak.append_batch((
  SELECT array_agg(ROW('s' || (i % 100), 'bench', 'bench', :payload::jsonb,
                       NULL, NULL, NULL, NULL, NULL)::batpak.new_event)
  FROM generate_series(1, 1000) AS i));
