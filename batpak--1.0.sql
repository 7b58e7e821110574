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
    OUT events_discarded bigint)
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

-- Nothing for PUBLIC: see the README's privileges section for the grants.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA batpak FROM PUBLIC;
REVOKE ALL ON batpak.stats FROM PUBLIC;
