-- pgbench script: the baseline for batpak_stream100.sql: one stream of 100
-- rows in version order, every column formed.
\set s random(0, :nsr - 1)
SELECT count(e.*) FROM (SELECT * FROM events WHERE stream = 'sr-' || :s ORDER BY version) e;
