-- pgbench script: one random page of 1,000 events in global order.
\set p random(0, :npages - 1)
SELECT count(*) FROM batpak.read_all(:p * 1000, 1000);
