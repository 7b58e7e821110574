-- pgbench script: read one whole stream of 100 events (run.sh loads :nsr
-- streams 'sr-0' .. of 100 events each).
\set s random(0, :nsr - 1)
SELECT count(*) FROM batpak.read_stream('sr-' || :s);
