-- pgbench script: the Message DB baseline for batpak_page.sql: one random
-- page of 1,000 messages of category 'load' (its first global position is
-- :mstart; it holds :mpages pages).
\set p random(0, :mpages - 1)
SELECT count(*) FROM message_store.get_category_messages('load', :mstart + :p * 1000, 1000);
