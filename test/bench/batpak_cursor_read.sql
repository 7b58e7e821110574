-- pgbench script: the next 1,000 events of a durable cursor (run.sh puts it
-- back at the start with cursor_seek before each run).  Autocommit: each
-- call commits the cursor's new position.
SELECT count(*) FROM batpak.cursor_read('bench-read', 1000);
