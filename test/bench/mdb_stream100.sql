-- pgbench script: the Message DB baseline for batpak_stream100.sql.
\set s random(0, :nsr - 1)
SELECT count(*) FROM message_store.get_stream_messages('sr-' || :s);
