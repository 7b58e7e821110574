-- docs/roles.sql: the roles of the README's "Privileges" section, as one script
-- (psql -f docs/roles.sql).  sql/10_privileges.sql runs this file, so what the
-- README shows is what is tested.

CREATE ROLE batpak_reader NOLOGIN;
GRANT USAGE ON SCHEMA batpak TO batpak_reader;
GRANT EXECUTE ON FUNCTION batpak.get(uuid), batpak.read_stream(text, bigint, integer),
  batpak.read_all(bigint, integer, text, text[], text), batpak.stream_version(text),
  batpak.walk_ancestors(uuid, integer), batpak.read_correlated(uuid),
  batpak.cursor_create(text, text, text[], text, bigint, integer, integer),
  batpak.cursor_read(text, integer), batpak.cursor_wait(text, integer),
  batpak.cursor_seek(text, bigint), batpak.cursor_drop(text),
  batpak.entity_group(text, integer), batpak.stats_row()
  TO batpak_reader;
-- the cursors view computes the lag with stats_row(), which its reader must execute
GRANT SELECT ON batpak.cursors TO batpak_reader;

CREATE ROLE batpak_writer NOLOGIN IN ROLE batpak_reader;
GRANT EXECUTE ON FUNCTION batpak.append(text, text, text, jsonb, jsonb, bigint, text, uuid, uuid),
  batpak.append_batch(batpak.new_event[]) TO batpak_writer;

-- batpak_admin is also the role whose members may bypass the gates
CREATE ROLE batpak_admin NOLOGIN IN ROLE batpak_writer;
GRANT EXECUTE ON FUNCTION batpak.verify_chain(text), batpak.stats_row(),
  batpak.gate_create(text, regprocedure, text, text[], text), batpak.gate_drop(text),
  batpak.evaluate_gates(text, text, text, jsonb, jsonb) TO batpak_admin;
GRANT SELECT ON batpak.stats, batpak.gates TO batpak_admin;
GRANT SELECT, INSERT, DELETE ON batpak.gate_definitions TO batpak_admin;
