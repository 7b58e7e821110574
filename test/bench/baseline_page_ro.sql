-- pgbench script: keyset pagination of the plain table by version, 1,000
-- rows a page, the position kept in the client (pgbench variable :last,
-- given with -D for the start): no write, no commit to wait for.
-- count(e.*) forms every row with all its columns.
SELECT count(e.*) AS n, max(e.version) AS last
  FROM (SELECT * FROM events WHERE version > :last ORDER BY version LIMIT 1000) e
\gset
