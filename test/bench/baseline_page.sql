-- pgbench script: the baseline for batpak_cursor_read.sql.  The next 1,000
-- rows of the plain table in global order (keyset pagination on version,
-- the global sequence, through a btree on it that run.sh adds for this
-- workload), with the consumer's position kept in a table and advanced in
-- the same (autocommit) statement, as cursor_read does with
-- batpak.cursor_state.  count(e.*) forms every row with all its columns.
-- (Of the single-statement forms tried, this was the fastest; a CTE that
-- materializes the page took twice as long.)
UPDATE bench_cursor c SET last = p.top, read_at = now()
  FROM (SELECT count(e.*) AS n, max(e.version) AS top
          FROM (SELECT * FROM events
                 WHERE version > (SELECT last FROM bench_cursor WHERE name = 'bench-read')
                 ORDER BY version
                 LIMIT 1000) e) p
 WHERE c.name = 'bench-read'
RETURNING p.n;
