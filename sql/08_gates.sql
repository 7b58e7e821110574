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
RESET batpak.record_denials;

-- the bypass: a superuser or a member of batpak_admin, recorded in the metadata
SET batpak.gate_bypass_reason = 'migration 2026-11';
SELECT entity_sequence FROM batpak.append('go-1', 'shop', 'order.placed', '{"total": 900}', '{"by": "ops"}');
SELECT try($$SELECT batpak.append('go-1', 'shop', 'order.placed', '{"total": 901}', '[1]')$$);
RESET batpak.gate_bypass_reason;
SELECT entity_sequence, metadata FROM batpak.read_stream('go-1', 3);

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
