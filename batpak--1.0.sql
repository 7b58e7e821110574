/* batpak--1.0.sql: the batpak event store */

\echo Use "CREATE EXTENSION batpak" to load this file. \quit

-- Loading the library checks that it is preloaded (see _PG_init), so this
-- comes first and a missing shared_preload_libraries entry fails cleanly.
CREATE FUNCTION batpak.stats_row(
    OUT state text, OUT writer_pid integer, OUT events bigint,
    OUT entities bigint, OUT segments integer, OUT store_bytes bigint,
    OUT index_bytes bigint, OUT index_bytes_per_event double precision,
    OUT written_sequence bigint, OUT durable_sequence bigint,
    OUT visible_sequence bigint, OUT requests bigint, OUT requests_failed bigint,
    OUT events_written bigint, OUT idempotent_hits bigint, OUT groups bigint,
    OUT fsyncs bigint, OUT bytes_written bigint, OUT started_at timestamptz,
    OUT ready_at timestamptz, OUT failure text,
    OUT pending_transactions bigint, OUT pending_events bigint,
    OUT transactions_committed bigint, OUT transactions_aborted bigint,
    OUT events_discarded bigint, OUT notified_sequence bigint,
    OUT notifications bigint, OUT notifications_failed bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'batpak_stats_row'
LANGUAGE C VOLATILE;

DO $$
BEGIN
    IF current_database() <> current_setting('batpak.database') THEN
        RAISE EXCEPTION 'batpak can only be created in database "%"',
            current_setting('batpak.database')
            USING ERRCODE = '55000',
                  DETAIL = format('The current database is "%s".', current_database()),
                  HINT = 'Create the extension in the database named by batpak.database, or change that setting and restart the server.';
    END IF;
END
$$;

CREATE TYPE batpak.receipt AS (
    event_id        uuid,
    global_sequence bigint,
    entity_sequence bigint,
    committed_at    timestamptz,
    event_hash      bytea,
    prev_hash       bytea
);

CREATE TYPE batpak.event AS (
    global_sequence bigint,
    event_id        uuid,
    entity          text,
    scope           text,
    kind            text,
    entity_sequence bigint,
    correlation_id  uuid,
    causation_id    uuid,
    committed_at    timestamptz,
    payload         jsonb,
    metadata        jsonb,
    event_hash      bytea,
    prev_hash       bytea
);

CREATE TYPE batpak.new_event AS (
    entity            text,
    scope             text,
    kind              text,
    payload           jsonb,
    metadata          jsonb,
    expected_sequence bigint,
    idempotency_key   text,
    correlation_id    uuid,
    causation_id      uuid
);

-- Writing

CREATE FUNCTION batpak.append(
    entity text, scope text, kind text, payload jsonb,
    metadata jsonb DEFAULT NULL, expected_sequence bigint DEFAULT NULL,
    idempotency_key text DEFAULT NULL, correlation_id uuid DEFAULT NULL,
    causation_id uuid DEFAULT NULL)
RETURNS batpak.receipt
AS 'MODULE_PATHNAME', 'batpak_append'
LANGUAGE C VOLATILE;

CREATE FUNCTION batpak.append_batch(events batpak.new_event[])
RETURNS SETOF batpak.receipt
AS 'MODULE_PATHNAME', 'batpak_append_batch'
LANGUAGE C VOLATILE ROWS 100;

-- Reading

CREATE FUNCTION batpak.get(event_id uuid)
RETURNS batpak.event
AS 'MODULE_PATHNAME', 'batpak_get'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION batpak.read_stream(
    entity text, after_sequence bigint DEFAULT 0, max_count integer DEFAULT NULL)
RETURNS SETOF batpak.event
AS 'MODULE_PATHNAME', 'batpak_read_stream'
LANGUAGE C VOLATILE ROWS 100;

CREATE FUNCTION batpak.read_all(
    after_sequence bigint DEFAULT 0, max_count integer DEFAULT NULL,
    scope text DEFAULT NULL, kinds text[] DEFAULT NULL,
    entity_prefix text DEFAULT NULL)
RETURNS SETOF batpak.event
AS 'MODULE_PATHNAME', 'batpak_read_all'
LANGUAGE C VOLATILE ROWS 1000;

CREATE FUNCTION batpak.stream_version(entity text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'batpak_stream_version'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION batpak.walk_ancestors(event_id uuid, max_depth integer DEFAULT NULL)
RETURNS SETOF batpak.event
AS 'MODULE_PATHNAME', 'batpak_walk_ancestors'
LANGUAGE C VOLATILE ROWS 10;

CREATE FUNCTION batpak.read_correlated(correlation_id uuid)
RETURNS SETOF batpak.event
AS 'MODULE_PATHNAME', 'batpak_read_correlated'
LANGUAGE C VOLATILE ROWS 10;

CREATE FUNCTION batpak.verify_chain(entity text DEFAULT NULL)
RETURNS TABLE(entity text, events bigint, ok boolean,
              first_bad_sequence bigint, detail text)
AS 'MODULE_PATHNAME', 'batpak_verify_chain'
LANGUAGE C VOLATILE ROWS 100;

CREATE VIEW batpak.stats AS SELECT * FROM batpak.stats_row();

-- Gates (caller-defined): see src/gates.c and the README.

-- check_function is the function's signature as text, schema-qualified
-- (what regprocedure prints with an empty search_path): it survives
-- pg_dump/pg_restore (the function is found again by name) and pg_upgrade
-- (which refuses reg* columns).  Renaming or moving a gate's function is
-- refused while the gate exists; dropping it drops the gate.
CREATE TABLE batpak.gate_definitions (
    name           text PRIMARY KEY,
    check_function text NOT NULL,
    scope          text,
    kinds          text[],
    entity_prefix  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     name NOT NULL DEFAULT current_user
);
SELECT pg_catalog.pg_extension_config_dump('batpak.gate_definitions', '');

-- Every row is checked, whichever way it arrives (gate_create, a direct
-- INSERT, pg_restore), and its signature is stored schema-qualified (even
-- pg_catalog's functions) and quoted, so that to_regprocedure finds the
-- same function again from any session, whatever its search_path.
CREATE FUNCTION batpak.gate_definitions_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    fn oid;
    p pg_catalog.pg_proc%ROWTYPE;
BEGIN
    IF NEW.name IS NULL OR NEW.name = '' OR octet_length(NEW.name) > 255
       OR NEW.name ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid gate name %', coalesce(quote_literal(NEW.name), 'NULL')
            USING ERRCODE = '22023',
                  DETAIL = 'A gate name is non-empty text of at most 255 bytes without control characters.';
    END IF;
    -- created_by says whether a superuser vouched for the gate (the owner
    -- rule below, and batpak_gate_call at every run): nobody else may put
    -- another role's name there (a restore run by a superuser keeps the
    -- dumped name; one run by anyone else records the restorer)
    IF NOT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false) THEN
        NEW.created_by := current_user;
    END IF;
    fn := pg_catalog.to_regprocedure(NEW.check_function);
    IF fn IS NULL THEN
        RAISE EXCEPTION 'function % does not exist', NEW.check_function USING ERRCODE = '42883';
    END IF;
    SELECT * INTO p FROM pg_catalog.pg_proc WHERE oid = fn;
    IF NOT FOUND OR p.prokind <> 'f' OR p.pronargs <> 1 OR p.proretset
       OR p.proargtypes[0] <> 'batpak.new_event'::regtype
       OR p.prorettype <> 'text'::regtype THEN
        RAISE EXCEPTION 'function % cannot be a gate', NEW.check_function
            USING ERRCODE = '42P13',
                  DETAIL = 'A gate function takes one batpak.new_event and returns text (NULL: pass, text: the denial message), and returns no set.';
    END IF;
    -- A temporary function goes with its session, and its schema is then
    -- another session's to fill: a later owner of that pg_temp_N could
    -- create a function of the same name, which would run as every appender.
    IF p.pronamespace = pg_catalog.pg_my_temp_schema()
       OR pg_catalog.pg_is_other_temp_schema(p.pronamespace) THEN
        RAISE EXCEPTION 'function % cannot be a gate: it is in a temporary schema', p.proname
            USING ERRCODE = '42P13',
                  HINT = 'Create the gate function in a permanent schema.';
    END IF;
    -- A gate runs as every appender, superusers included: only a function a
    -- superuser vouches for (owns) may be registered by anyone else.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = p.proowner)
       AND NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser may make a gate of function %, which a non-superuser owns',
                        NEW.check_function
            USING ERRCODE = '42501',
                  HINT = 'Gate functions run with the privileges of every appender; have a superuser own the function.';
    END IF;
    -- Schema-qualified always, pg_catalog too: regprocedure leaves a
    -- pg_catalog function unqualified, and to_regprocedure would then find
    -- a function of the same name that an appender's search_path puts
    -- before pg_catalog, and run it instead of the gate.
    NEW.check_function := format('%I.%I(%s)', (SELECT nspname FROM pg_catalog.pg_namespace
                                                WHERE oid = p.pronamespace),
                                 p.proname, p.proargtypes[0]::pg_catalog.regtype);
    -- The filters are checked as cursor_create checks its own: a filter no
    -- event can match (an empty kinds array, a kind over 255 bytes, a
    -- scope over 1024) would leave a gate that silently never runs.
    IF NEW.scope IS NOT NULL THEN
        IF NEW.scope = '' OR NEW.scope ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'invalid scope filter %', quote_literal(NEW.scope) USING ERRCODE = '22023';
        END IF;
        IF octet_length(NEW.scope) > 1024 THEN
            RAISE EXCEPTION 'scope filter is too long' USING ERRCODE = '22001',
                DETAIL = format('It is %s bytes; the limit is 1024 bytes.', octet_length(NEW.scope));
        END IF;
    END IF;
    IF NEW.entity_prefix IS NOT NULL THEN
        IF NEW.entity_prefix = '' OR NEW.entity_prefix ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'invalid entity_prefix filter %', quote_literal(NEW.entity_prefix)
                USING ERRCODE = '22023';
        END IF;
        IF octet_length(NEW.entity_prefix) > 1024 THEN
            RAISE EXCEPTION 'entity_prefix filter is too long' USING ERRCODE = '22001',
                DETAIL = format('It is %s bytes; the limit is 1024 bytes.', octet_length(NEW.entity_prefix));
        END IF;
    END IF;
    IF NEW.kinds IS NOT NULL THEN
        IF coalesce(array_ndims(NEW.kinds), 0) <> 1 THEN
            RAISE EXCEPTION 'kinds filter must be a one-dimensional, non-empty array' USING ERRCODE = '22023';
        END IF;
        IF array_position(NEW.kinds, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'kinds filter must not contain NULL' USING ERRCODE = '22004';
        END IF;
        FOR i IN array_lower(NEW.kinds, 1) .. array_upper(NEW.kinds, 1) LOOP
            IF NEW.kinds[i] = '' OR NEW.kinds[i] ~ '[[:cntrl:]]' THEN
                RAISE EXCEPTION 'invalid kind % in kinds filter', quote_literal(NEW.kinds[i])
                    USING ERRCODE = '22023';
            END IF;
            IF octet_length(NEW.kinds[i]) > 255 THEN
                RAISE EXCEPTION 'kind in kinds filter is too long' USING ERRCODE = '22001',
                    DETAIL = format('It is %s bytes; the limit is 255 bytes.', octet_length(NEW.kinds[i]));
            END IF;
        END LOOP;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER gate_definitions_check BEFORE INSERT OR UPDATE ON batpak.gate_definitions
    FOR EACH ROW EXECUTE FUNCTION batpak.gate_definitions_check();

CREATE FUNCTION batpak.gates_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'batpak_gates_changed'
LANGUAGE C;
CREATE TRIGGER gate_definitions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON batpak.gate_definitions
    FOR EACH STATEMENT EXECUTE FUNCTION batpak.gates_changed();

CREATE FUNCTION batpak.gate_create(name text, "check" regprocedure, scope text DEFAULT NULL,
                                   kinds text[] DEFAULT NULL, entity_prefix text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF gate_create.name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = '22004';
    END IF;
    IF "check" IS NULL THEN
        RAISE EXCEPTION 'check must not be null' USING ERRCODE = '22004';
    END IF;
    INSERT INTO batpak.gate_definitions (name, check_function, scope, kinds, entity_prefix)
    VALUES (gate_create.name, "check"::pg_catalog.text, gate_create.scope,
            gate_create.kinds, gate_create.entity_prefix);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'gate "%" already exists', gate_create.name USING ERRCODE = '42710';
END
$$;

CREATE FUNCTION batpak.gate_drop(name text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF gate_drop.name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = '22004';
    END IF;
    DELETE FROM batpak.gate_definitions g WHERE g.name = gate_drop.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gate "%" does not exist', gate_drop.name USING ERRCODE = '42704';
    END IF;
END
$$;

CREATE FUNCTION batpak.evaluate_gates(entity text, scope text, kind text, payload jsonb,
                                      metadata jsonb DEFAULT NULL)
RETURNS TABLE(gate text, message text)
AS 'MODULE_PATHNAME', 'batpak_evaluate_gates'
LANGUAGE C VOLATILE ROWS 10;

CREATE VIEW batpak.gates AS
    SELECT name AS gate, check_function, scope, kinds, entity_prefix, created_at, created_by
      FROM batpak.gate_definitions ORDER BY name COLLATE "C";

-- Dropping a gate's function (or its schema, or DROP OWNED) drops the gate.
CREATE FUNCTION batpak.gates_on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM batpak.gate_definitions g
     WHERE pg_catalog.to_regprocedure(g.check_function) IS NULL;
END
$$;
CREATE EVENT TRIGGER batpak_gates_on_drop ON sql_drop
    WHEN TAG IN ('DROP FUNCTION', 'DROP ROUTINE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION batpak.gates_on_drop();

-- Renaming or moving a gate's function (or renaming its schema) would leave
-- the gate pointing at a name that another function could take: refused.
CREATE FUNCTION batpak.gates_on_alter() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hit record;
BEGIN
    SELECT d.name, d.check_function INTO hit FROM batpak.gate_definitions d
     WHERE pg_catalog.to_regprocedure(d.check_function) IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot rename or move function %: batpak gate "%" uses it',
                        hit.check_function, hit.name
            USING ERRCODE = '2BP01',
                  HINT = 'Drop the gate first (batpak.gate_drop), then create it again.';
    END IF;
    -- nor hand a gate's function to a non-superuser unless a non-superuser
    -- registered it anyway (see gate_definitions_check)
    SELECT d.name, d.check_function INTO hit
      FROM batpak.gate_definitions d
      JOIN pg_catalog.pg_proc p ON p.oid = pg_catalog.to_regprocedure(d.check_function)
      JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
     WHERE NOT o.rolsuper
       AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                          WHERE r.rolname = d.created_by), false)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'function % of batpak gate "%" must stay owned by a superuser',
                        hit.check_function, hit.name
            USING ERRCODE = '42501';
    END IF;
END
$$;
CREATE EVENT TRIGGER batpak_gates_on_alter ON ddl_command_end
    WHEN TAG IN ('ALTER FUNCTION', 'ALTER ROUTINE', 'ALTER SCHEMA')
    EXECUTE FUNCTION batpak.gates_on_alter();

-- Consuming: cursors (see src/cursor.c and the README).  A cursor's position
-- lives in this ordinary table, so cursor_read advances it in the caller's
-- transaction: COMMIT consumes, ROLLBACK delivers the same events again.
-- The functions read and write it as its owner; the checks below also hold
-- for rows that arrive by pg_restore or a direct INSERT.
CREATE TABLE batpak.cursor_state (
    name          text PRIMARY KEY,
    scope         text,
    kinds         text[],
    entity_prefix text,
    group_member  integer,
    group_size    integer,
    position      bigint NOT NULL DEFAULT 0,
    gaps          bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    name NOT NULL DEFAULT current_user,
    read_at       timestamptz,
    CONSTRAINT cursor_name_valid
        CHECK (name <> '' AND octet_length(name) <= 255 AND name !~ '[[:cntrl:]]'),
    CONSTRAINT cursor_filters_valid
        CHECK ((scope IS NULL OR (scope <> '' AND scope !~ '[[:cntrl:]]'))
               AND (entity_prefix IS NULL OR (entity_prefix <> '' AND entity_prefix !~ '[[:cntrl:]]'))
               AND (kinds IS NULL OR (array_position(kinds, NULL) IS NULL
                                      AND coalesce(array_ndims(kinds), 0) = 1))),
    CONSTRAINT cursor_group_valid
        CHECK ((group_member IS NULL) = (group_size IS NULL)
               AND (group_size IS NULL
                    OR (group_size >= 1 AND group_member >= 0 AND group_member < group_size))),
    CONSTRAINT cursor_position_valid CHECK (position >= 0 AND gaps >= 0)
);
SELECT pg_catalog.pg_extension_config_dump('batpak.cursor_state', '');

CREATE FUNCTION batpak.cursor_create(name text, scope text DEFAULT NULL,
                                     kinds text[] DEFAULT NULL,
                                     entity_prefix text DEFAULT NULL,
                                     start_after bigint DEFAULT 0,
                                     group_member integer DEFAULT NULL,
                                     group_size integer DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'batpak_cursor_create'
LANGUAGE C VOLATILE;

CREATE FUNCTION batpak.cursor_read(name text, max_count integer DEFAULT 100)
RETURNS SETOF batpak.event
AS 'MODULE_PATHNAME', 'batpak_cursor_read'
LANGUAGE C VOLATILE ROWS 100;

CREATE FUNCTION batpak.cursor_wait(name text, timeout_ms integer DEFAULT 10000)
RETURNS boolean
AS 'MODULE_PATHNAME', 'batpak_cursor_wait'
LANGUAGE C VOLATILE;

CREATE FUNCTION batpak.cursor_seek(name text, after_sequence bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'batpak_cursor_seek'
LANGUAGE C VOLATILE;

CREATE FUNCTION batpak.cursor_drop(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'batpak_cursor_drop'
LANGUAGE C VOLATILE;

-- The member of a group of group_size that consumes entity's events
CREATE FUNCTION batpak.entity_group(entity text, group_size integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'batpak_entity_group'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- lag: global sequences between the cursor and the visible frontier
-- (rolled-back and non-matching ones included)
CREATE VIEW batpak.cursors AS
    SELECT c.name, c.scope, c.kinds, c.entity_prefix, c.group_member, c.group_size,
           c.position, GREATEST(s.visible_sequence - c.position, 0) AS lag,
           c.gaps, c.created_at, c.created_by AS owner, c.read_at
      FROM batpak.cursor_state c CROSS JOIN batpak.stats_row() s
     ORDER BY c.name COLLATE "C";

-- Nothing for PUBLIC: see the README's privileges section for the grants.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA batpak FROM PUBLIC;
REVOKE ALL ON batpak.stats FROM PUBLIC;
REVOKE ALL ON batpak.gates FROM PUBLIC;
REVOKE ALL ON batpak.gate_definitions FROM PUBLIC;
REVOKE ALL ON batpak.cursors FROM PUBLIC;
REVOKE ALL ON batpak.cursor_state FROM PUBLIC;
