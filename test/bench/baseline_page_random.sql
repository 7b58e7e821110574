-- pgbench script: the baseline for batpak_page.sql: one random keyset page
-- of 1,000 rows in version order (btree on version), every column formed.
\set p random(0, :npages - 1)
SELECT count(e.*) FROM (SELECT * FROM events WHERE version > :p * 1000 ORDER BY version LIMIT 1000) e;
