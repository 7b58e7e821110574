-- Privileges (issue 7): nothing is granted to PUBLIC; the reader, writer and
-- admin roles of the README (docs/roles.sql, run here as the README shows
-- it); names given by callers never reach SQL unquoted.

-- a role that was granted nothing can use nothing of batpak
CREATE ROLE priv_nobody NOLOGIN;
SELECT p.oid::regprocedure AS executable_without_grant
  FROM pg_proc p
 WHERE p.pronamespace = 'batpak'::regnamespace
   AND has_function_privilege('priv_nobody', p.oid, 'EXECUTE')
 ORDER BY 1;
SELECT c.relname AS usable_without_grant
  FROM pg_class c
 WHERE c.relnamespace = 'batpak'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')
   AND has_table_privilege('priv_nobody', c.oid,
                           'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
 ORDER BY 1;
SELECT has_schema_privilege('priv_nobody', 'batpak', 'USAGE') AS schema_usage,
       has_schema_privilege('priv_nobody', 'batpak', 'CREATE') AS schema_create;
-- and every function and relation of the extension is in that list of checks
SELECT count(*) > 20 AS functions_checked FROM pg_proc WHERE pronamespace = 'batpak'::regnamespace;

\i docs/roles.sql

CREATE ROLE priv_reader NOLOGIN IN ROLE batpak_reader;
CREATE ROLE priv_writer NOLOGIN IN ROLE batpak_writer;
CREATE ROLE priv_admin NOLOGIN IN ROLE batpak_admin;

-- a gate: it runs with the caller's privileges, so the writers may execute it
CREATE FUNCTION priv_gate(e batpak.new_event) RETURNS text LANGUAGE sql
    AS $$ SELECT CASE WHEN e.kind = 'forbidden' THEN 'not here' END $$;
REVOKE EXECUTE ON FUNCTION priv_gate(batpak.new_event) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION priv_gate(batpak.new_event) TO batpak_writer;

SET ROLE priv_admin;
SELECT batpak.gate_create('priv', 'priv_gate(batpak.new_event)', 'priv');
RESET ROLE;

-- the reader reads and consumes, and cannot write or change anything
SET ROLE priv_reader;
SELECT count(*) >= 0 AS reads FROM batpak.read_all();
SELECT try($$SELECT batpak.append('priv-1', 'priv', 'k', '{}')$$);
SELECT try($$SELECT batpak.append_batch(ARRAY[ROW('priv-1', 'priv', 'k', '{}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])$$);
SELECT batpak.cursor_create('reader_cursor', 'priv');
SELECT try($$SELECT batpak.gate_create('mine', 'priv_gate(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_drop('priv')$$);
SELECT try($$SELECT count(*) FROM batpak.verify_chain(NULL)$$);
SELECT try($$SELECT count(*) FROM batpak.stats$$);
SELECT try($$SELECT count(*) FROM batpak.gates$$);
SELECT try($$INSERT INTO batpak.gate_definitions (name, check_function) VALUES ('x', 'priv_gate(batpak.new_event)')$$);
SELECT try($$UPDATE batpak.cursor_state SET position = 0$$);
SELECT try($$SELECT count(*) FROM batpak.cursor_state$$);
SELECT try($$SET batpak.inject_fault = 'write'$$);
RESET ROLE;

-- the writer appends through the gates, and cannot bypass them, change them
-- or touch another role's cursor
SET ROLE priv_writer;
SELECT entity_sequence FROM batpak.append('priv-1', 'priv', 'ok', '{}');
SELECT try($$SELECT batpak.append('priv-1', 'priv', 'forbidden', '{}')$$);
SELECT try($$SET batpak.gate_bypass_reason = 'let me'$$);
SELECT try($$SELECT batpak.gate_drop('priv')$$);
SELECT try($$DELETE FROM batpak.gate_definitions$$);
SELECT try($$SELECT count(*) FROM batpak.cursor_read('reader_cursor')$$);
SELECT try($$SELECT batpak.cursor_seek('reader_cursor', 0)$$);
SELECT try($$SELECT batpak.cursor_drop('reader_cursor')$$);
SELECT try($$SET batpak.inject_fault = 'fsync'$$);
SELECT try($$SET batpak.record_denials = on$$);
RESET ROLE;

-- the admin changes the gates and may bypass them (recorded); the cursor
-- still belongs to its creator
SET ROLE priv_admin;
SET batpak.gate_bypass_reason = 'ops';
SELECT entity_sequence FROM batpak.append('priv-1', 'priv', 'forbidden', '{}');
SELECT entity_sequence, metadata FROM batpak.read_stream('priv-1', 1);
RESET batpak.gate_bypass_reason;
SELECT try($$SELECT batpak.append('priv-1', 'priv', 'forbidden', '{}')$$);
SELECT batpak.gate_drop('priv');
SELECT entity_sequence FROM batpak.append('priv-1', 'priv', 'forbidden', '{}');
SELECT try($$SELECT batpak.cursor_drop('reader_cursor')$$);
RESET ROLE;

-- the reader's cursor is the reader's
SET ROLE priv_reader;
SELECT kind, entity_sequence FROM batpak.cursor_read('reader_cursor');
SELECT batpak.cursor_drop('reader_cursor');
RESET ROLE;

-- names from callers stay data: quotes and SQL in gate, function, schema and
-- cursor names
CREATE TABLE priv_victim (x int);
CREATE SCHEMA "priv ""schema"" ; DROP TABLE priv_victim; --";
CREATE FUNCTION "priv ""schema"" ; DROP TABLE priv_victim; --"."g'); DROP TABLE priv_victim; --"(e batpak.new_event)
    RETURNS text LANGUAGE sql AS $$ SELECT CASE WHEN e.kind = 'no' THEN 'quoted gate says no' END $$;
SELECT batpak.gate_create($$gate'); DROP TABLE priv_victim; --$$,
    $$"priv ""schema"" ; DROP TABLE priv_victim; --"."g'); DROP TABLE priv_victim; --"(batpak.new_event)$$,
    'priv');
SELECT gate, check_function FROM batpak.gates WHERE scope = 'priv';
SELECT entity_sequence FROM batpak.append('priv-2', 'priv', 'yes', '{}');
SELECT try($$SELECT batpak.append('priv-2', 'priv', 'no', '{}')$$);
SELECT batpak.cursor_create($$c'); DROP TABLE priv_victim; --$$, $$priv'); --$$);
SELECT batpak.cursor_create($$c2$$, 'priv', ARRAY[$$k'); DROP TABLE priv_victim; --$$], $$p'); DROP TABLE priv_victim; --$$);
SELECT entity_sequence FROM batpak.append('priv-3', $$priv'); --$$, $$k'); DROP TABLE priv_victim; --$$, '{}');
SELECT entity, scope, kind FROM batpak.cursor_read($$c'); DROP TABLE priv_victim; --$$);
SELECT count(*) FROM batpak.cursor_read('c2');
SELECT name, scope FROM batpak.cursors ORDER BY name;
SELECT batpak.gate_drop($$gate'); DROP TABLE priv_victim; --$$);
SELECT batpak.cursor_drop($$c'); DROP TABLE priv_victim; --$$);
SELECT batpak.cursor_drop('c2');
SELECT count(*) AS victim_still_there FROM priv_victim;

DROP TABLE priv_victim;
DROP SCHEMA "priv ""schema"" ; DROP TABLE priv_victim; --" CASCADE;
DROP FUNCTION priv_gate(batpak.new_event);
DROP OWNED BY priv_nobody, priv_reader, priv_writer, priv_admin, batpak_reader, batpak_writer, batpak_admin;
DROP ROLE priv_nobody, priv_reader, priv_writer, priv_admin, batpak_admin, batpak_writer, batpak_reader;
