-- pgbench script: builds the same 1,000-element batpak.new_event[] as
-- batpak_batch.sql without appending it (cost of the array construction).
SELECT cardinality((
  SELECT array_agg(ROW('s' || (i % 100), 'bench', 'bench', :payload::jsonb,
                       NULL, NULL, NULL, NULL, NULL)::batpak.new_event)
  FROM generate_series(1, 1000) AS i));
