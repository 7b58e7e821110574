-- Caller-defined gates: pass, deny, errors, filters, order, batches, the
-- recorded denial, the dry run, the bypass, privileges and dependencies.
SELECT written_sequence AS base FROM batpak.stats \gset

CREATE FUNCTION gate_max_total(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN (e.payload->>'total')::numeric > 100
                THEN format('order total %s is over 100', e.payload->>'total') END $$;
CREATE FUNCTION gate_no_test_entities(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN e.entity LIKE '%-test' THEN 'test entities are not allowed' END $$;
CREATE FUNCTION gate_raises(e batpak.new_event) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF e.payload ? 'boom' THEN
        RAISE EXCEPTION 'gate exploded on %', e.entity USING ERRCODE = '22012';
    END IF;
    RETURN NULL;
END $$;

-- creating: the signature is checked, names are unique
SELECT batpak.gate_create('b_total', 'gate_max_total(batpak.new_event)',
                          kinds => ARRAY['order.placed', 'order.changed']);
SELECT batpak.gate_create('a_test', 'gate_no_test_entities(batpak.new_event)',
                          entity_prefix => 'go-');
SELECT batpak.gate_create('c_raises', 'gate_raises(batpak.new_event)', scope => 'shop');
SELECT try($$SELECT batpak.gate_create('b_total', 'gate_raises(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_create('bad_sig', 'length(text)')$$);
SELECT try($$SELECT batpak.gate_create('bad_ret', 'jsonb_typeof(jsonb)')$$);
SELECT try($$SELECT batpak.gate_create('no_fn', 'no_such_function(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_create('', 'gate_raises(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_create('empty_scope', 'gate_raises(batpak.new_event)', scope => '')$$);
SELECT try($$SELECT batpak.gate_create('null_kind', 'gate_raises(batpak.new_event)', kinds => ARRAY[NULL::text])$$);
SELECT try($$SELECT batpak.gate_create('null_fn', NULL)$$);
SELECT try($$SELECT batpak.gate_create(NULL, 'gate_raises(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_drop(NULL)$$);
-- filters no event could match are refused, as cursor_create refuses them
SELECT try($$SELECT batpak.gate_create('no_kinds', 'gate_raises(batpak.new_event)', kinds => '{}')$$);
SELECT try($$SELECT batpak.gate_create('kinds_2d', 'gate_raises(batpak.new_event)', kinds => '{{a},{b}}')$$);
SELECT try($$SELECT batpak.gate_create('empty_kind', 'gate_raises(batpak.new_event)', kinds => '{a,""}')$$);
SELECT try($$SELECT batpak.gate_create('ctl_kind', 'gate_raises(batpak.new_event)', kinds => ARRAY[E'k\x01'])$$);
SELECT try($$SELECT batpak.gate_create('long_kind', 'gate_raises(batpak.new_event)', kinds => ARRAY[repeat('k', 256)])$$);
SELECT try($$SELECT batpak.gate_create('long_scope', 'gate_raises(batpak.new_event)', scope => repeat('s', 1025))$$);
SELECT try($$SELECT batpak.gate_create('long_prefix', 'gate_raises(batpak.new_event)', entity_prefix => repeat('e', 1025))$$);
SELECT try($$SELECT batpak.gate_create('ctl_prefix', 'gate_raises(batpak.new_event)', entity_prefix => E'e\n')$$);
SELECT count(*) AS refused_gates_stored FROM batpak.gate_definitions
 WHERE name IN ('no_kinds', 'kinds_2d', 'empty_kind', 'ctl_kind', 'long_kind', 'long_scope',
                'long_prefix', 'ctl_prefix');
-- a function in a temporary schema is refused: the schema goes with the
-- session, and a later session given the same pg_temp_N could put its own
-- function of that name there, which would then run as every appender
CREATE FUNCTION pg_temp.gate_temp(e batpak.new_event) RETURNS text LANGUAGE sql AS $$ SELECT NULL::text $$;
SELECT try($$SELECT batpak.gate_create('temp_gate', 'pg_temp.gate_temp(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_drop('no_such_gate')$$);
SELECT gate, check_function, scope, kinds, entity_prefix FROM batpak.gates;

-- pass and deny
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 50}');
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 500}')$$);
-- filters: another kind, an entity outside the prefix, another scope
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.shipped', '{"total": 500}');
SELECT entity_sequence FROM batpak.append('cart-test', 'shop', 'order.placed', '{"total": 5}');
SELECT entity_sequence FROM batpak.append('go-2', 'other', 'order.placed', '{"boom": 1}');
-- order: a_test runs before b_total, its denial is the one reported
SELECT try($$SELECT batpak.append('go-x-test', 'shop', 'order.placed', '{"total": 500}')$$);
-- an error in a gate fails the append with that error
SELECT try($$SELECT batpak.append('go-3', 'shop', 'order.placed', '{"boom": 1}')$$);
SELECT batpak.stream_version('go-3') AS nothing_written;

-- a batch with one denied item writes nothing
SELECT try_detail($$SELECT * FROM batpak.append_batch(ARRAY[
    ROW('go-4', 'shop', 'order.placed', '{"total": 1}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event,
    ROW('go-4', 'shop', 'order.changed', '{"total": 101}', NULL, NULL, NULL, NULL, NULL)::batpak.new_event])$$);
SELECT batpak.stream_version('go-4') AS batch_wrote;

-- the dry run returns every denial, in gate order, and writes nothing
SELECT * FROM batpak.evaluate_gates('go-9-test', 'shop', 'order.placed', '{"total": 1000}');
SELECT * FROM batpak.evaluate_gates('go-9', 'shop', 'order.placed', '{"total": 1}');
SELECT try($$SELECT * FROM batpak.evaluate_gates('go-9', 'shop', 'order.placed', '{"boom": 1}')$$);
SELECT try($$SELECT * FROM batpak.evaluate_gates(NULL, 'shop', 'k', '{}')$$);
SELECT try($$SELECT * FROM batpak.evaluate_gates('', 'shop', 'k', '{}')$$);
SELECT batpak.stream_version('go-9') AS dry_run_wrote;

-- recorded denials: a batpak.denial event in the entity's stream, chained,
-- even though the denied call's transaction rolls back
SET batpak.record_denials = on;
BEGIN;
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 250}')$$);
ROLLBACK;
-- payload_hash: BLAKE2b-256 of the proposed payload's text form; for
-- '{"total": 250}' that is (b2sum -l 256) c164f4cc4a0b7409ba69af65e597df76cbfe3a5fe02b53ee5caa67cae927c07c
SELECT entity_sequence, kind, payload - 'payload_hash' AS payload,
       payload->>'payload_hash' = 'c164f4cc4a0b7409ba69af65e597df76cbfe3a5fe02b53ee5caa67cae927c07c' AS payload_hash_ok
  FROM batpak.read_stream('go-1');
SELECT entity, events, ok FROM batpak.verify_chain('go-1');
-- when the denial cannot be recorded (the entity holds pending events of
-- this very transaction, and the record is written in immediate mode), a
-- warning says so and the denial is raised all the same
BEGIN;
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.shipped', '{}');
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 260}')$$);
ROLLBACK;
SELECT count(*) AS denials_of_go_1 FROM batpak.read_stream('go-1') WHERE kind = 'batpak.denial';
-- the caller cannot write a reserved kind itself
SELECT try($$SELECT batpak.append('go-1', 'shop', 'batpak.denial', '{}')$$);
-- in a parallel operation (a parallel-safe function run by a worker, or by
-- the leader in parallel mode) no append runs, immediate ones included: the
-- gates could only be read there with the leader's snapshot, which in a
-- REPEATABLE READ transaction can predate a gate, so an append would pass
-- a gate created since (it did, in immediate mode), and a denial could not
-- be recorded; a passing append is refused the same
CREATE FUNCTION append_in_parallel(p jsonb) RETURNS bigint LANGUAGE sql PARALLEL SAFE AS
    $$ SELECT entity_sequence FROM batpak.append('gpar-1', 'shop', 'order.placed', p) $$;
SET batpak.transactional = off;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) AS gates_seen FROM batpak.gates;
SET LOCAL force_parallel_mode = on;
SELECT try($$SELECT append_in_parallel('{"total": 270}')$$);
SELECT try($$SELECT append_in_parallel('{"total": 5}')$$);
COMMIT;
RESET batpak.transactional;
SELECT batpak.stream_version('gpar-1') AS gpar_events;
RESET batpak.record_denials;

-- a gate cannot change the mode of the append it judges: the caller's
-- modes are taken before the gates run (this one turned the append into an
-- immediate one, which then outlived the rollback)
CREATE FUNCTION gate_flips_mode(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN set_config('batpak.transactional', 'off', true) = 'off' THEN NULL::text END $$;
SELECT batpak.gate_create('e_flip', 'gate_flips_mode(batpak.new_event)', entity_prefix => 'gflip-');
BEGIN;
SELECT entity_sequence FROM batpak.append('gflip-1', 'shop', 'k', '{}');
ROLLBACK;
SELECT batpak.stream_version('gflip-1') AS after_rollback;
SELECT batpak.gate_drop('e_flip');

-- the bypass: a superuser or a member of batpak_admin, recorded in the metadata
SET batpak.gate_bypass_reason = 'migration 2026-11';
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 900}', '{"by": "ops"}');
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 901}', '[1]')$$);
RESET batpak.gate_bypass_reason;
SELECT entity_sequence, metadata FROM batpak.read_stream('go-1', 3);
-- not for the whole server (the configuration file is read where no role
-- can be checked, so it would be ignored at every start): ALTER SYSTEM is
-- refused, and nothing reaches postgresql.auto.conf
\set VERBOSITY sqlstate
ALTER SYSTEM SET batpak.gate_bypass_reason = 'always';
\set VERBOSITY default
ALTER SYSTEM SET batpak.gate_bypass_reason = 'always';
SELECT count(*) AS in_auto_conf FROM pg_file_settings WHERE name = 'batpak.gate_bypass_reason';

CREATE ROLE batpak_admin NOLOGIN;
CREATE ROLE gate_admin_user NOLOGIN IN ROLE batpak_admin;
CREATE ROLE gate_writer NOLOGIN;
GRANT USAGE ON SCHEMA batpak TO gate_admin_user, gate_writer;
GRANT EXECUTE ON FUNCTION batpak.append(text, text, text, jsonb, jsonb, bigint, text, uuid, uuid)
    TO gate_admin_user, gate_writer;
REVOKE EXECUTE ON FUNCTION gate_max_total(batpak.new_event), gate_no_test_entities(batpak.new_event),
    gate_raises(batpak.new_event) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gate_max_total(batpak.new_event), gate_no_test_entities(batpak.new_event),
    gate_raises(batpak.new_event) TO gate_admin_user;
SET ROLE gate_writer;
SELECT try($$SET batpak.gate_bypass_reason = 'let me in'$$);
-- a gate runs with the caller's privileges: no EXECUTE on it, no append
-- (but an append no gate matches needs none)
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 1}')$$);
SELECT entity_sequence FROM batpak.append('elsewhere-1', 'other', 'order.shipped', '{}');
-- and the writer cannot change the gates
SELECT try($$SELECT batpak.gate_drop('b_total')$$);
SELECT try($$DELETE FROM batpak.gate_definitions$$);
RESET ROLE;
SET ROLE gate_admin_user;
SET batpak.gate_bypass_reason = 'admin fix';
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 999}');
RESET batpak.gate_bypass_reason;
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 999}')$$);
RESET ROLE;
SELECT entity_sequence, metadata->'batpak.gate_bypass' AS bypass
  FROM batpak.read_stream('go-1', 4);

-- a gate function that reads what the caller may not read fails for the caller
CREATE TABLE gate_secret (x int);
CREATE FUNCTION gate_reads_secret(e batpak.new_event) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN count(*) > 0 THEN 'secret rows exist' END FROM gate_secret $$;
GRANT EXECUTE ON FUNCTION gate_reads_secret(batpak.new_event) TO gate_admin_user;
SELECT batpak.gate_create('d_secret', 'gate_reads_secret(batpak.new_event)', entity_prefix => 'gsec-');
SELECT entity_sequence FROM batpak.append('gsec-1', 'shop', 'k', '{}');
SET ROLE gate_admin_user;
SELECT try($$SELECT batpak.append('gsec-1', 'shop', 'k', '{}')$$);
RESET ROLE;

-- a writer in a fresh session (its gate cache first loaded as itself, who
-- cannot read the definitions) is gated all the same
SELECT current_user AS super_user \gset
ALTER ROLE gate_admin_user LOGIN;
\c - gate_admin_user
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 777}')$$);
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 778}')$$);
\c - :super_user
-- a gate function in pg_catalog is stored schema-qualified too: a function
-- of the same name that an appender's search_path puts first is not run
-- instead (the gates are loaded anew under that search_path: creating the
-- shadow invalidates them)
CREATE FUNCTION pg_catalog.gate_cat_deny(e batpak.new_event) RETURNS text LANGUAGE sql
    AS $$ SELECT 'catalog gate says no'::text $$;
SELECT batpak.gate_create('cat_deny', 'gate_cat_deny(batpak.new_event)', scope => 'cat');
SELECT check_function FROM batpak.gates WHERE gate = 'cat_deny';
CREATE SCHEMA gate_shadow;
CREATE FUNCTION gate_shadow.gate_cat_deny(e batpak.new_event) RETURNS text LANGUAGE sql
    AS 'SELECT NULL::text';
SET search_path = gate_shadow, pg_catalog, public;
SELECT try($$SELECT batpak.append('cat-1', 'cat', 'k', '{}')$$);
RESET search_path;
SELECT batpak.gate_drop('cat_deny');
DROP FUNCTION pg_catalog.gate_cat_deny(batpak.new_event);
DROP SCHEMA gate_shadow CASCADE;
-- an operator of one's own in the search_path changes nothing (called
-- directly: the try() helper itself would use the hijacked operator)
CREATE SCHEMA gate_evil;
CREATE FUNCTION gate_evil.null_concat(text, text) RETURNS text LANGUAGE sql AS 'SELECT NULL::text';
CREATE OPERATOR gate_evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = gate_evil.null_concat);
SET search_path = gate_evil, pg_catalog, public;
SELECT 'a' || 'b' AS hijacked_concat;
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 779}');
RESET search_path;
DROP SCHEMA gate_evil CASCADE;

-- gates run in name order and stop at the first denial, even when a later
-- one is immutable (it is not folded ahead of the earlier one)
CREATE FUNCTION gate_first_denies(e batpak.new_event) RETURNS text LANGUAGE plpgsql AS $$
BEGIN RETURN CASE WHEN e.payload ? 'bad' THEN 'first gate says no' END; END $$;
CREATE FUNCTION gate_second_raises(e batpak.new_event) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN (e.payload->>'bad')::int > 0 THEN 'unreachable' END $$;
SELECT batpak.gate_create('ord_1', 'gate_first_denies(batpak.new_event)', scope => 'ord');
SELECT batpak.gate_create('ord_2', 'gate_second_raises(batpak.new_event)', scope => 'ord');
SELECT try($$SELECT batpak.append('ord-1', 'ord', 'k', '{"bad": "x"}')$$);
SELECT try($$SELECT batpak.append('ord-1', 'ord', 'k', '{"fine": 1}')$$);
SELECT batpak.gate_drop('ord_1');
SELECT try($$SELECT batpak.append('ord-1', 'ord', 'k', '{"bad": "x"}')$$);
SELECT batpak.gate_drop('ord_2');

-- a gate function that appends and changes the gates while it runs: the
-- running statement keeps its gates, the next append sees the new ones
CREATE FUNCTION gate_busy(e batpak.new_event) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM batpak.append('busy-log', 'log', 'seen', jsonb_build_object('entity', e.entity));
    IF NOT EXISTS (SELECT 1 FROM batpak.gates WHERE gate = 'busy_2') THEN
        PERFORM batpak.gate_create('busy_2', 'gate_first_denies(batpak.new_event)', scope => 'busy');
    END IF;
    RETURN NULL;
END $$;
SELECT batpak.gate_create('busy_1', 'gate_busy(batpak.new_event)', scope => 'busy');
SELECT entity_sequence FROM batpak.append('busy-1', 'busy', 'k', '{"bad": 1}');
SELECT try($$SELECT batpak.append('busy-1', 'busy', 'k', '{"bad": 1}')$$);
SELECT count(*) AS logged FROM batpak.read_stream('busy-log');
SELECT batpak.gate_drop('busy_1');
SELECT batpak.gate_drop('busy_2');

-- a gate's function cannot be renamed or moved while the gate exists
SELECT try($$ALTER FUNCTION gate_max_total(batpak.new_event) RENAME TO gate_renamed$$);
SELECT try($$ALTER FUNCTION gate_max_total(batpak.new_event) SET SCHEMA batpak$$);
SELECT gate, check_function FROM batpak.gates WHERE gate = 'b_total';

-- only a superuser may make a gate of a function a non-superuser owns
GRANT USAGE ON SCHEMA batpak TO gate_admin_user;
GRANT EXECUTE ON FUNCTION batpak.gate_create(text, regprocedure, text, text[], text)
    TO gate_admin_user;
GRANT SELECT, INSERT, UPDATE ON batpak.gate_definitions TO gate_admin_user;
GRANT CREATE ON SCHEMA public TO gate_admin_user;
SET ROLE gate_admin_user;
CREATE FUNCTION public.gate_by_admin(e batpak.new_event) RETURNS text LANGUAGE sql
    AS 'SELECT NULL::text';
SELECT try($$SELECT batpak.gate_create('by_admin', 'gate_by_admin(batpak.new_event)')$$);
SELECT try($$INSERT INTO batpak.gate_definitions (name, check_function)
             VALUES ('by_admin', 'public.gate_by_admin(batpak.new_event)')$$);
SELECT try($$SELECT batpak.gate_create('by_admin_ok', 'gate_max_total(batpak.new_event)', scope => 'none')$$);
-- nor claim that a superuser created its gate (created_by is what the
-- owner rule trusts): the row records who inserted it
INSERT INTO batpak.gate_definitions (name, check_function, scope, created_by)
VALUES ('by_admin_spoof', 'public.gate_max_total(batpak.new_event)', 'none', :'super_user');
UPDATE batpak.gate_definitions SET created_by = :'super_user' WHERE name = 'by_admin_spoof';
RESET ROLE;
SELECT gate, created_by FROM batpak.gates WHERE gate LIKE 'by_admin%';
SELECT batpak.gate_drop('by_admin_spoof');
SELECT batpak.gate_drop('by_admin_ok');
-- and the function must stay a superuser's however its owner changes:
-- REASSIGN OWNED and ALTER ROLE ... NOSUPERUSER pass no event trigger, so
-- the appends the gate matches fail (42501) instead of running code its
-- new owner may replace; back with a superuser, the gate runs again
CREATE ROLE gate_su SUPERUSER NOLOGIN;
CREATE FUNCTION public.gate_owned(e batpak.new_event) RETURNS text LANGUAGE sql
    AS 'SELECT NULL::text';
ALTER FUNCTION public.gate_owned(batpak.new_event) OWNER TO gate_su;
SET ROLE gate_admin_user;
SELECT batpak.gate_create('by_admin_owned', 'gate_owned(batpak.new_event)', scope => 'owned');
RESET ROLE;
SELECT entity_sequence FROM batpak.append('owned-1', 'owned', 'k', '{}');
ALTER ROLE gate_su NOSUPERUSER;
SELECT try($$SELECT batpak.append('owned-1', 'owned', 'k', '{}')$$);
SELECT try($$SELECT * FROM batpak.evaluate_gates('owned-1', 'owned', 'k', '{}')$$);
SELECT entity_sequence FROM batpak.append('other-1', 'other', 'k', '{}');
ALTER ROLE gate_su SUPERUSER;
SELECT entity_sequence FROM batpak.append('owned-1', 'owned', 'k', '{}');
REASSIGN OWNED BY gate_su TO gate_writer;
SELECT try($$SELECT batpak.append('owned-1', 'owned', 'k', '{}')$$);
ALTER FUNCTION public.gate_owned(batpak.new_event) OWNER TO gate_su;
SELECT entity_sequence FROM batpak.append('owned-1', 'owned', 'k', '{}');
SELECT batpak.gate_drop('by_admin_owned');
DROP FUNCTION public.gate_owned(batpak.new_event);
DROP ROLE gate_su;
DROP FUNCTION public.gate_by_admin(batpak.new_event);
REVOKE CREATE ON SCHEMA public FROM gate_admin_user;
REVOKE ALL ON batpak.gate_definitions FROM gate_admin_user;
REVOKE ALL ON FUNCTION batpak.gate_create(text, regprocedure, text, text[], text) FROM gate_admin_user;
DROP FUNCTION gate_busy(batpak.new_event), gate_first_denies(batpak.new_event),
    gate_second_raises(batpak.new_event);

-- an idempotent retry of a stored append gets its first receipt although
-- a gate would deny it now (nothing is written); a new key is judged, also
-- in a batch; a key of a pending event is not enough (its transaction may
-- still roll back), so there the gates run
SELECT written_sequence AS before_idem FROM batpak.stats \gset
SELECT entity_sequence, global_sequence - :before_idem AS rel
  FROM batpak.append('go-idem', 'shop', 'order.placed', '{"total": 50}',
                     idempotency_key => 'gk-1');
SELECT settle();
SELECT entity_sequence, global_sequence - :before_idem AS rel
  FROM batpak.append('go-idem', 'shop', 'order.placed', '{"total": 500}',
                     idempotency_key => 'gk-1');
SELECT try($$SELECT batpak.append('go-idem', 'shop', 'order.placed', '{"total": 500}',
                                  idempotency_key => 'gk-2')$$);
SELECT try_detail($$SELECT count(*) FROM batpak.append_batch(ARRAY[
    ROW('go-idem', 'shop', 'order.placed', '{"total": 500}', NULL, NULL, 'gk-1', NULL, NULL)::batpak.new_event,
    ROW('go-idem', 'shop', 'order.placed', '{"total": 500}', NULL, NULL, 'gk-3', NULL, NULL)::batpak.new_event])$$);
SELECT entity_sequence, global_sequence - :before_idem AS rel FROM batpak.append_batch(ARRAY[
    ROW('go-idem', 'shop', 'order.placed', '{"total": 500}', NULL, NULL, 'gk-1', NULL, NULL)::batpak.new_event,
    ROW('go-idem', 'shop', 'order.placed', '{"total": 70}', NULL, NULL, 'gk-5', NULL, NULL)::batpak.new_event]);
BEGIN;
SELECT entity_sequence FROM batpak.append('go-idem', 'shop', 'order.placed', '{"total": 60}',
                                          idempotency_key => 'gk-4');
SELECT try($$SELECT batpak.append('go-idem', 'shop', 'order.placed', '{"total": 600}',
                                  idempotency_key => 'gk-4')$$);
SELECT entity_sequence FROM batpak.append('go-idem', 'shop', 'order.placed', '{"total": 60}',
                                          idempotency_key => 'gk-4');
ROLLBACK;
SELECT entity_sequence, payload, metadata FROM batpak.read_stream('go-idem');
SELECT written_sequence - :before_idem AS written FROM batpak.stats;

-- dropping a gate's function removes the gate; gate_drop removes one
DROP FUNCTION gate_raises(batpak.new_event);
SELECT gate FROM batpak.gates;
SELECT batpak.gate_drop('d_secret');
SELECT batpak.gate_drop('a_test');
SELECT batpak.gate_drop('b_total');
SELECT count(*) AS gates_left FROM batpak.gates;
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 10000}');

DROP TABLE gate_secret;
DROP FUNCTION gate_max_total(batpak.new_event), gate_no_test_entities(batpak.new_event),
    gate_reads_secret(batpak.new_event);
REVOKE ALL ON SCHEMA batpak FROM gate_admin_user, gate_writer;
REVOKE ALL ON FUNCTION batpak.append(text, text, text, jsonb, jsonb, bigint, text, uuid, uuid)
    FROM gate_admin_user, gate_writer;
DROP ROLE gate_admin_user, gate_writer, batpak_admin;
