/*-------------------------------------------------------------------------
 *
 * gates.c
 *	  Caller-defined gates: functions that may deny an append before it
 *	  reaches the writer.
 *
 * A gate is a row of batpak.gate_definitions (see batpak--1.0.sql): a name,
 * a function (batpak.new_event) RETURNS text and filters on scope, kinds
 * and entity prefix.  Every append and every item of append_batch passes
 * the matching gates in name order, in the appending backend, with the
 * caller's privileges (an ordinary function call, through a kept SPI plan:
 * the caller needs EXECUTE on it, and only a SECURITY DEFINER gate function
 * runs as its owner, by its owner's choice); an item whose idempotency key
 * is already stored skips them (batpak_idem_stored).  NULL lets the event
 * pass; text denies it: the append fails with BP002, naming the gate and
 * carrying the text, and with batpak.record_denials on, a batpak.denial
 * event is first appended to the entity's stream (in immediate mode: the
 * denial stays recorded although the denied call's transaction rolls
 * back).  An error raised by a gate function fails the append with that
 * error.
 *
 * The definitions are cached per backend; a statement trigger on the table
 * (batpak.gates_changed) sends a relcache invalidation for it, so that
 * every backend reloads after a change commits, and this backend at once.
 *
 * batpak.gate_bypass_reason, settable only by superusers and members of
 * the role batpak_admin, makes appends skip the gates; they carry the
 * reason and the role that set it in their metadata under
 * "batpak.gate_bypass".
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "batpak.h"

PG_FUNCTION_INFO_V1(batpak_gates_changed);
PG_FUNCTION_INFO_V1(batpak_evaluate_gates);

#define BATPAK_ADMIN_ROLE		"batpak_admin"
#define BATPAK_DENIAL_KIND		"batpak.denial"
#define BATPAK_BYPASS_KEY		"batpak.gate_bypass"

bool		batpak_record_denials = false;
char	   *batpak_gate_bypass_reason = NULL;
static Oid	batpak_gate_bypass_setter = InvalidOid;	/* role that set it */

typedef struct BatpakGate
{
	char	   *name;
	char	   *signature;		/* as stored: "schema.function(batpak.new_event)" */
	Oid			fn;				/* InvalidOid: no such function (any more) */
	SPIPlanPtr	plan;			/* SELECT fn($1), kept; NULL until first use */
	text	   *scope;			/* NULL: any */
	int			nkinds;			/* -1: any */
	text	  **kinds;
	text	   *prefix;			/* NULL: any */
	bool		creator_super;	/* created_by is a superuser (when loaded) */
} BatpakGate;

/*
 * Kept plans that call a set of matching gates (a bit per gate, in name
 * order) in one statement: SELECT COALESCE('0:' || g0($1), '1:' || g1($1),
 * ...).  COALESCE stops at the first non-NULL argument, so the gates run in
 * order and none after the first denial, as if called one by one.
 */
typedef struct BatpakGateSet
{
	uint64		mask;
	SPIPlanPtr	plan;
} BatpakGateSet;

#define BATPAK_MAX_GATE_SETS	32

static MemoryContext gate_cxt = NULL;
static BatpakGate *gates = NULL;
static int	ngates = 0;
static BatpakGateSet gate_sets[BATPAK_MAX_GATE_SETS];
static int	ngate_sets = 0;
static Oid	gate_event_type = InvalidOid;
static bool gates_changed_during_load = false;

/*
 * Gate statements running in this backend.  A gate function may append or
 * evaluate gates itself; while an outer gate statement runs, the cache and
 * its kept plans must stay as they are (no reload, no eviction), or the
 * outer statement would run freed plans.
 */
static int	gate_depth = 0;
static bool gates_valid = false;
static Oid	gate_table_oid = InvalidOid;
static bool callback_registered = false;

static void
batpak_gates_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == gate_table_oid)
	{
		gates_valid = false;
		gates_changed_during_load = true;
	}
}

/*
 * A function changed (CREATE OR REPLACE, ALTER, DROP, REASSIGN OWNED), or a
 * role did (ALTER ROLE ... NOSUPERUSER, RENAME): reload, rebuild the plans
 * and check the functions' owners again (batpak_gate_call).
 */
static void
batpak_gates_proc_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	gates_valid = false;
	gates_changed_during_load = true;
}

/* The OID of one of the extension's tables in schema batpak */
Oid
batpak_extension_table(const char *relname)
{
	Oid			nsp = get_namespace_oid("batpak", false);
	Oid			rel = get_relname_relid(relname, nsp);

	if (!OidIsValid(rel))
		elog(ERROR, "batpak.%s does not exist", relname);
	return rel;
}

Oid
batpak_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

static text *
batpak_copy_text(Datum d)
{
	return (text *) PG_DETOAST_DATUM_COPY(d);
}

/* (Re)load the gate definitions into this backend's cache */
static void
batpak_gates_load(void)
{
	MemoryContext oldcxt;
	int			rc;
	Oid			owner;
	Oid			save_user;
	int			save_sec;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(batpak_gates_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, batpak_gates_proc_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, batpak_gates_proc_changed, (Datum) 0);
		callback_registered = true;
	}
	gate_table_oid = batpak_extension_table("gate_definitions");
	gate_event_type = InvalidOid;
	owner = batpak_rel_owner(gate_table_oid);
	if (gate_cxt == NULL)
		gate_cxt = AllocSetContextCreate(CacheMemoryContext, "batpak gates",
										 ALLOCSET_SMALL_SIZES);
	for (int i = 0; i < ngates; i++)
		if (gates[i].plan != NULL)
			SPI_freeplan(gates[i].plan);
	for (int i = 0; i < ngate_sets; i++)
		SPI_freeplan(gate_sets[i].plan);
	ngate_sets = 0;
	MemoryContextReset(gate_cxt);
	gates = NULL;
	ngates = 0;

	/*
	 * Valid only once loaded whole, and only if nothing changed meanwhile:
	 * an error half way (the caller's cancel, a lock timeout) must not leave
	 * an empty cache that lets every append through.
	 */
	gates_valid = false;
	gates_changed_during_load = false;

	/*
	 * Read as the table's owner: the gates apply to appenders who may not
	 * read the definitions.  Fully qualified, whatever the search_path.
	 */
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		SPIPlanPtr	plan;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		/* each column cast to the type read below (see CS_COLUMNS in cursor.c) */
		plan = SPI_prepare("SELECT name::pg_catalog.text, check_function::pg_catalog.text, "
						   "pg_catalog.to_regprocedure(check_function::pg_catalog.text)::pg_catalog.oid, "
						   "scope::pg_catalog.text, kinds::pg_catalog.text[], "
						   "entity_prefix::pg_catalog.text, "
						   "coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r "
						   "WHERE r.rolname = created_by::pg_catalog.name), false) "
						   "FROM batpak.gate_definitions "
						   "ORDER BY name COLLATE pg_catalog.\"C\"",
						   0, NULL);
		if (plan == NULL)
			elog(ERROR, "could not plan the read of batpak.gate_definitions: %s",
				 SPI_result_code_string(SPI_result));

		/*
		 * With the latest snapshot, not the statement's or the transaction's:
		 * a gate applies to every append that starts after its creation
		 * committed, whatever the appender's isolation level, and the cache
		 * outlives the snapshot it was read with.  A REPEATABLE READ
		 * transaction (or a long statement) that reloaded after a gate's
		 * invalidation arrived used to read the definitions as they were
		 * before the gate, and keep that list, valid, until the next change.
		 * A definition committed after this snapshot was taken sends its
		 * invalidation after it became visible (commit order), so we hear of
		 * it: during the load (gates_changed_during_load) or after.  A
		 * parallel operation cannot take a new snapshot: it reads with the
		 * active one and the list serves that call only (below).  Only
		 * evaluate_gates gets here in one, which writes nothing: appends
		 * are refused in a parallel operation (batpak_check_writable), as
		 * the leader's snapshot may predate a gate.
		 */
		rc = SPI_execute_snapshot(plan, NULL, NULL,
								  IsInParallelMode() ? InvalidSnapshot : GetLatestSnapshot(),
								  InvalidSnapshot, true, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read batpak.gate_definitions: %s", SPI_result_code_string(rc));
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();

	oldcxt = MemoryContextSwitchTo(gate_cxt);
	gates = palloc0(sizeof(BatpakGate) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BatpakGate *g = &gates[ngates];
		bool		isnull;
		Datum		d;

		g->name = pstrdup(TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull)));
		g->signature = pstrdup(TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		g->fn = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		g->scope = isnull ? NULL : batpak_copy_text(d);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		g->nkinds = -1;
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;

			deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &nulls, &g->nkinds);
			g->kinds = palloc(sizeof(text *) * Max(g->nkinds, 1));
			for (int k = 0; k < g->nkinds; k++)
				g->kinds[k] = nulls[k] ? NULL : batpak_copy_text(elems[k]);
		}
		d = SPI_getbinval(tup, desc, 6, &isnull);
		g->prefix = isnull ? NULL : batpak_copy_text(d);
		d = SPI_getbinval(tup, desc, 7, &isnull);
		g->creator_super = !isnull && DatumGetBool(d);
		g->plan = NULL;
		ngates++;
	}
	MemoryContextSwitchTo(oldcxt);
	SPI_finish();
	gates_valid = !gates_changed_during_load && !IsInParallelMode();
}

static bool
batpak_text_eq(const text *t, const char *s, Size len)
{
	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0;
}

static bool
batpak_gate_matches(const BatpakGate *g, const BatpakNewEvent *e)
{
	if (g->scope &&
		!batpak_text_eq(g->scope, VARDATA_ANY(e->scope), VARSIZE_ANY_EXHDR(e->scope)))
		return false;
	if (g->prefix &&
		(VARSIZE_ANY_EXHDR(g->prefix) > VARSIZE_ANY_EXHDR(e->entity) ||
		 memcmp(VARDATA_ANY(g->prefix), VARDATA_ANY(e->entity),
				VARSIZE_ANY_EXHDR(g->prefix)) != 0))
		return false;
	if (g->nkinds >= 0)
	{
		for (int k = 0; k < g->nkinds; k++)
			if (g->kinds[k] &&
				batpak_text_eq(g->kinds[k], VARDATA_ANY(e->kind), VARSIZE_ANY_EXHDR(e->kind)))
				return true;
		return false;
	}
	return true;
}

/* batpak.new_event's oid, looked up once per load of the gates */
static Oid
batpak_new_event_type(void)
{
	if (!OidIsValid(gate_event_type))
	{
		gate_event_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										  CStringGetDatum("new_event"),
										  ObjectIdGetDatum(get_namespace_oid("batpak", false)));
		if (!OidIsValid(gate_event_type))
			elog(ERROR, "type batpak.new_event does not exist");
	}
	return gate_event_type;
}

/* The event as a batpak.new_event value, for the gate functions */
static Datum
batpak_new_event_datum(const BatpakNewEvent *e)
{
	TupleDesc	desc;
	Datum		values[BATPAK_NEW_EVENT_NATTS];
	bool		nulls[BATPAK_NEW_EVENT_NATTS];
	HeapTuple	tup;

	desc = lookup_rowtype_tupdesc(batpak_new_event_type(), -1);
	batpak_check_rowtype(desc, batpak_new_event_typids, BATPAK_NEW_EVENT_NATTS,
						 "batpak.new_event");
	memset(nulls, 0, sizeof(nulls));
	values[0] = PointerGetDatum(e->entity);
	values[1] = PointerGetDatum(e->scope);
	values[2] = PointerGetDatum(e->kind);
	values[3] = JsonbPGetDatum(e->payload);
	values[4] = e->metadata ? JsonbPGetDatum(e->metadata) : (Datum) 0;
	nulls[4] = e->metadata == NULL;
	values[5] = Int64GetDatum(e->expected_sequence);
	nulls[5] = !e->has_expected;
	values[6] = e->idem ? PointerGetDatum(e->idem) : (Datum) 0;
	nulls[6] = e->idem == NULL;
	values[7] = e->correlation_id ? UUIDPGetDatum(e->correlation_id) : (Datum) 0;
	nulls[7] = e->correlation_id == NULL;
	values[8] = e->causation_id ? UUIDPGetDatum(e->causation_id) : (Datum) 0;
	nulls[8] = e->causation_id == NULL;
	tup = heap_form_tuple(desc, values, nulls);
	ReleaseTupleDesc(desc);
	return HeapTupleGetDatum(tup);
}

/*
 * "schema.function($1::batpak.new_event)" for the gate's function, both
 * names quoted: nothing from the caller reaches SQL unquoted.
 *
 * Every plan that calls a gate is built here, so this is where the owner
 * rule holds for good.  A gate runs as every appender, superusers included,
 * so its function must be owned by a superuser unless a superuser created
 * the gate (gate_definitions_check).  The event trigger refuses ALTER
 * FUNCTION ... OWNER TO, but REASSIGN OWNED and ALTER ROLE ... NOSUPERUSER
 * change the owner's standing without it; both invalidate the cache
 * (PROCOID, AUTHOID), the plans are built again, and a gate whose function
 * fails the rule refuses the appends it matches instead of running code a
 * non-superuser may have replaced.
 */
static char *
batpak_gate_call(const BatpakGate *g)
{
	HeapTuple	proc = OidIsValid(g->fn) ?
		SearchSysCache1(PROCOID, ObjectIdGetDatum(g->fn)) : NULL;
	Form_pg_proc form;
	char	   *call;

	if (!HeapTupleIsValid(proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function %s of batpak gate \"%s\" does not exist",
						g->signature, g->name),
				 errhint("Drop the gate with batpak.gate_drop.")));
	form = (Form_pg_proc) GETSTRUCT(proc);
	if (!g->creator_super && !superuser_arg(form->proowner))
	{
		char	   *owner = GetUserNameFromId(form->proowner, true);

		ReleaseSysCache(proc);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("function %s of batpak gate \"%s\" is owned by non-superuser \"%s\"",
						g->signature, g->name, owner ? owner : "?"),
				 errdetail("A gate runs as every appender; a function a non-superuser owns can be a gate only if a superuser created the gate."),
				 errhint("Have a superuser own the function again, or have a superuser drop and create the gate.")));
	}
	call = psprintf("%s($1::batpak.new_event)",
					quote_qualified_identifier(get_namespace_name(form->pronamespace),
											   NameStr(form->proname)));
	ReleaseSysCache(proc);
	return call;
}

/*
 * Prepare a gate statement.  A generic plan: with $1 as a constant the
 * planner would fold an immutable later gate at plan time, before an
 * earlier one could deny.  keep: keep it beyond this SPI connection.
 */
static SPIPlanPtr
batpak_gate_plan(const char *sql, const char *what, bool keep)
{
	Oid			argtype = batpak_new_event_type();
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, 1, &argtype, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "could not prepare the call of batpak gate %s: %s",
			 what, SPI_result_code_string(SPI_result));
	if (keep && SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep the plan of batpak gate %s", what);
	return plan;
}

/* Execute a gate statement (SPI connected) on the event: its one value */
static Datum
batpak_gate_exec(SPIPlanPtr plan, Datum event, bool *isnull)
{
	Datum		args[1];
	char		nulls[1] = {' '};
	int			rc;

	args[0] = event;
	rc = SPI_execute_plan(plan, args, nulls, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "batpak gate statement returned " UINT64_FORMAT " rows", SPI_processed);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/*
 * Run the gates of mask in order, in one statement (SPI connected): the
 * index of the first that denies and its message (in cxt), or -1.
 */
static int
batpak_gate_set_run(uint64 mask, Datum event, MemoryContext cxt, char **message)
{
	bool		isnull;
	Datum		result;
	char	   *str;
	char	   *colon;

	SPIPlanPtr	plan = NULL;

	for (int i = 0; i < ngate_sets && plan == NULL; i++)
		if (gate_sets[i].mask == mask)
			plan = gate_sets[i].plan;
	if (plan == NULL)
	{
		StringInfoData sql;
		bool		first = true;
		bool		keep;

		/* the operator qualified: the caller's search_path cannot swap it */
		initStringInfo(&sql);
		appendStringInfoString(&sql, "SELECT COALESCE(");
		for (int i = 0; i < ngates; i++)
		{
			if (!(mask & (UINT64CONST(1) << i)))
				continue;
			appendStringInfo(&sql, "%s'%d:'::pg_catalog.text OPERATOR(pg_catalog.||) %s",
							 first ? "" : ", ", i, batpak_gate_call(&gates[i]));
			first = false;
		}
		appendStringInfoChar(&sql, ')');

		/*
		 * Keep it, unless the table is full and an outer gate statement may
		 * be running the plan we would evict: then use it once.
		 */
		keep = ngate_sets < BATPAK_MAX_GATE_SETS || gate_depth <= 1;
		plan = batpak_gate_plan(sql.data, "set", keep);
		if (keep)
		{
			if (ngate_sets == BATPAK_MAX_GATE_SETS)
			{
				/* many filter combinations: forget the oldest */
				SPI_freeplan(gate_sets[0].plan);
				memmove(gate_sets, gate_sets + 1,
						sizeof(BatpakGateSet) * (BATPAK_MAX_GATE_SETS - 1));
				ngate_sets--;
			}
			gate_sets[ngate_sets].mask = mask;
			gate_sets[ngate_sets].plan = plan;
			ngate_sets++;
		}
	}
	result = batpak_gate_exec(plan, event, &isnull);
	if (isnull)
		return -1;
	str = TextDatumGetCString(result);
	colon = strchr(str, ':');
	if (colon == NULL)
		elog(ERROR, "malformed result of the batpak gates");
	*message = MemoryContextStrdup(cxt, colon + 1);
	return atoi(str);
}

/*
 * Run one gate (SPI connected): its denial message, allocated in cxt, or
 * NULL when the event passes.  The gate is called through a kept plan of
 * "SELECT fn($1)": the executor checks the caller's EXECUTE privilege, the
 * plan cache replans when the function changes, and the planner inlines a
 * simple SQL gate function instead of planning its body on every call.
 */
static char *
batpak_gate_run(BatpakGate *g, Datum event, MemoryContext cxt)
{
	bool		isnull;
	Datum		result;

	if (g->plan == NULL)
		g->plan = batpak_gate_plan(psprintf("SELECT %s", batpak_gate_call(g)), g->name, true);
	result = batpak_gate_exec(g->plan, event, &isnull);
	if (isnull)
		return NULL;
	return MemoryContextStrdup(cxt, TextDatumGetCString(result));
}

static void
batpak_gates_ensure(void)
{
	AcceptInvalidationMessages();
	/* inside a gate statement the cache stays as it is, see gate_depth */
	if (!gates_valid && gate_depth == 0)
		batpak_gates_load();
	else if (gates == NULL)
		batpak_gates_load();
}

/*
 * Append the denial as a batpak.denial event of the entity, if we can.
 * Appends never run in a parallel operation (batpak_check_writable), so a
 * subtransaction can be started here.
 */
static void
batpak_record_denial(const BatpakNewEvent *e, const char *gate, const char *message,
					 bool synchronous)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	uint8		hash[BATPAK_HASH_LEN];
	char		hex[BATPAK_HASH_LEN * 2 + 1];
	StringInfoData buf;
	BatpakNewEvent d;

	{
		/* of the payload's text form (payload::text), which SQL can redo */
		char	   *ptext = JsonbToCString(NULL, &e->payload->root, VARSIZE(e->payload));

		crypto_generichash(hash, sizeof(hash), (const unsigned char *) ptext,
						   strlen(ptext), NULL, 0);
	}
	for (int i = 0; i < BATPAK_HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", hash[i]);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"gate\": ");
	escape_json(&buf, gate);
	appendStringInfoString(&buf, ", \"message\": ");
	escape_json(&buf, message);
	appendStringInfoString(&buf, ", \"proposed_kind\": ");
	escape_json(&buf, text_to_cstring(e->kind));
	appendStringInfo(&buf, ", \"payload_hash\": \"%s\"}", hex);

	memset(&d, 0, sizeof(d));
	d.entity = e->entity;
	d.scope = e->scope;
	d.kind = cstring_to_text(BATPAK_DENIAL_KIND);
	d.payload = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));

	/*
	 * In a subtransaction, so that a failure to record (the entity held by
	 * this transaction's pending events, the writer away) leaves the denial
	 * itself to be reported, with a warning.  A cancel (or
	 * statement_timeout) is not such a failure: it ends the statement, and
	 * its detail says whether the record was written (submit.c).
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		batpak_append_system_event(&d, synchronous);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("%s", edata->message),
					 edata->detail ?
					 errdetail("Gate \"%s\" denied the append. Recording the denial: %s", gate, edata->detail) :
					 errdetail("Gate \"%s\" denied the append; the denial was not recorded.", gate)));
		ereport(WARNING,
				(errmsg("denial by gate \"%s\" %s: %s", gate,
						edata->sqlerrcode == ERRCODE_BATPAK_OUTCOME_UNKNOWN ?
						"perhaps not recorded" : "not recorded",
						edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* Add the bypass reason and role to the event's metadata */
static void
batpak_mark_bypass(BatpakNewEvent *e)
{
	StringInfoData buf;
	Jsonb	   *mark;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"" BATPAK_BYPASS_KEY "\": {\"reason\": ");
	escape_json(&buf, batpak_gate_bypass_reason);
	appendStringInfoString(&buf, ", \"role\": ");
	escape_json(&buf, GetUserNameFromId(OidIsValid(batpak_gate_bypass_setter) ?
										batpak_gate_bypass_setter : GetUserId(), false));
	appendStringInfoString(&buf, "}}");
	mark = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
	if (e->metadata == NULL)
		e->metadata = mark;
	else if (JB_ROOT_IS_OBJECT(e->metadata) && !JB_ROOT_IS_SCALAR(e->metadata))
		e->metadata = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
														 JsonbPGetDatum(e->metadata),
														 JsonbPGetDatum(mark)));
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metadata must be a JSON object when batpak.gate_bypass_reason is set"),
				 errdetail("The bypass is recorded in the metadata under \"%s\".", BATPAK_BYPASS_KEY)));
}

/* Does any gate apply to e? */
static bool
batpak_gates_any_match(const BatpakNewEvent *e)
{
	for (int i = 0; i < ngates; i++)
		if (batpak_gate_matches(&gates[i], e))
			return true;
	return false;
}

/*
 * Is the idempotency key idem already taken by an event that stays?  Then
 * the writer answers the append with that event's receipt and writes
 * nothing (writer.c, pass 1 of a request), so the gates have nothing to
 * judge: a retry of an append that succeeded, the very case idempotency
 * keys are for, must not be denied because a gate (or what it reads)
 * changed since.
 *
 * Only an event that the writer will not take back counts: entered in the
 * index neither pending (its transaction may still roll back, and then
 * this append is written and must pass the gates) nor hidden, and durable
 * (with batpak.synchronous_commit off a writer crash could drop it).  (A
 * commit that PostgreSQL's own synchronous_commit = off leaves unflushed
 * can still be lost in a crash of the server, and the event with it; but
 * then this append is lost with it, or its retry finds no key and passes
 * the gates.)  The durable frontier is the one of the index's own writer
 * (batpak_read_snapshot_ex), so the event and its frame stay what the
 * index says even if the writer restarts meanwhile.  Saying no is always
 * safe, it only runs the gates; so does a store that is not ready (the
 * append then fails or waits as it would have).  A committed event the
 * writer has not settled yet (still flagged pending) also gets a no.
 */
static bool
batpak_idem_stored(const text *idem)
{
	BatpakIndex *idx;
	uint8		key[BATPAK_KEY_LEN];
	uint64		seq;
	uint64		pos;
	uint64		frontier;
	uint64		durable;
	BatpakFrame f;

	/* a failed store is the append's to report */
	if (pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)
		return false;
	idx = batpak_read_snapshot_ex(&frontier, NULL, &durable, false);
	if (idx == NULL)
		return false;
	batpak_hash_key(VARDATA_ANY(idem), VARSIZE_ANY_EXHDR(idem), key);
	if (!batpak_index_find_idem(idx, key, &seq))
		return false;
	pos = batpak_index_seq_pos(idx, seq);
	if (seq > durable || (pos & BATPAK_POS_FLAGS) != 0)
		return false;
	/*
	 * The index holds a hash of the key: compare the key itself.  A frame
	 * that cannot be read is the writer's to report: say no.
	 */
	if (batpak_try_read_frame(pos, &f) != NULL)
		return false;
	return f.idem_len == VARSIZE_ANY_EXHDR(idem) &&
		memcmp(f.idem, VARDATA_ANY(idem), f.idem_len) == 0;
}

/*
 * Pass one proposed event through the gates (item: its 1-based place in a
 * batch, 0 for a lone append; synchronous: the call's mode, which a denial
 * record takes).  Raises BP002 at the first denial.
 */
void
batpak_gates_apply(BatpakNewEvent *e, int item, bool synchronous)
{
	if (batpak_gate_bypass_reason != NULL && batpak_gate_bypass_reason[0] != '\0')
	{
		batpak_mark_bypass(e);
		return;
	}
	batpak_gates_ensure();
	if (e->idem != NULL && batpak_gates_any_match(e) && batpak_idem_stored(e->idem))
		return;
	gate_depth++;
	PG_TRY();
	{
		MemoryContext cxt = CurrentMemoryContext;
		Datum		event = (Datum) 0;
		char	   *gate = NULL;
		char	   *message = NULL;

		if (ngates <= 64)
		{
			uint64		mask = 0;

			for (int i = 0; i < ngates; i++)
				if (batpak_gate_matches(&gates[i], e))
					mask |= UINT64CONST(1) << i;
			if (mask != 0)
			{
				int			denied;

				event = batpak_new_event_datum(e);
				if (SPI_connect() != SPI_OK_CONNECT)
					elog(ERROR, "SPI_connect failed");
				denied = batpak_gate_set_run(mask, event, cxt, &message);
				if (denied >= 0)
					gate = MemoryContextStrdup(cxt, gates[denied].name);
				SPI_finish();
			}
		}
		else
		{
			bool		connected = false;

			/* more gates than a mask holds: one statement per gate */
			for (int i = 0; i < ngates && message == NULL; i++)
			{
				BatpakGate *g = &gates[i];

				if (!batpak_gate_matches(g, e))
					continue;
				if (!connected)
				{
					event = batpak_new_event_datum(e);
					if (SPI_connect() != SPI_OK_CONNECT)
						elog(ERROR, "SPI_connect failed");
					connected = true;
				}
				message = batpak_gate_run(g, event, cxt);
				if (message != NULL)
					gate = MemoryContextStrdup(cxt, g->name);
			}
			if (connected)
				SPI_finish();
		}
		if (message != NULL)
		{
			if (batpak_record_denials)
				batpak_record_denial(e, gate, message, synchronous);
			ereport(ERROR,
					(errcode(ERRCODE_BATPAK_GATE_DENIED),
					 errmsg("append denied by gate \"%s\": %s", gate, message),
					 item > 0 ? errdetail("Event %d of the batch was denied; nothing was written.", item) : 0));
		}
	}
	PG_FINALLY();
	{
		gate_depth--;
	}
	PG_END_TRY();
}

/* Trigger function: the gate table changed, make every backend reload */
Datum
batpak_gates_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "batpak.gates_changed must be called as a trigger");
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	PG_RETURN_POINTER(NULL);
}

/*
 * batpak.evaluate_gates(entity, scope, kind, payload, metadata): run every
 * matching gate without writing, and return every denial.
 */
Datum
batpak_evaluate_gates(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo;
	BatpakNewEvent e;
	Datum		event;

	batpak_event_from_args(fcinfo, &e);
	batpak_validate_event(&e, false);

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	batpak_gates_ensure();
	event = batpak_new_event_datum(&e);
	gate_depth++;
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		for (int i = 0; i < ngates; i++)
		{
			Datum		values[2];
			bool		nulls[2] = {false, false};
			char	   *message;

			if (!batpak_gate_matches(&gates[i], &e))
				continue;
			message = batpak_gate_run(&gates[i], event, rsinfo->econtext->ecxt_per_query_memory);
			if (message == NULL)
				continue;
			/* the tuplestore lives in the per-query context, not SPI's */
			{
				MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);

				values[0] = CStringGetTextDatum(gates[i].name);
				values[1] = CStringGetTextDatum(message);
				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
				MemoryContextSwitchTo(old);
			}
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		gate_depth--;
	}
	PG_END_TRY();
	return (Datum) 0;
}

/*
 * GUC check hook of batpak.gate_bypass_reason: only superusers and members
 * of batpak_admin may set a reason.  Role membership needs the catalogs, so
 * a reason can only be set inside a session (SET / SET LOCAL).
 */
bool
batpak_gate_bypass_check(char **newval, void **extra, GucSource source)
{
	Oid			admin;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	/* a parallel worker takes the leader's settings as they are */
	if (InitializingParallelWorker)
		return true;
	/*
	 * Not for the whole server: the configuration file is read outside any
	 * transaction, where the role cannot be checked, so a reason there was
	 * ignored (with a complaint) at every start and reload; ALTER SYSTEM,
	 * validated as PGC_S_FILE inside a session, used to accept one anyway.
	 * A role's or database's setting and PGOPTIONS are applied at login
	 * inside the start-up transaction, checked against the role logging in.
	 */
	if (source == PGC_S_FILE)
	{
		GUC_check_errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM);
		GUC_check_errmsg("batpak.gate_bypass_reason cannot be set for the whole server");
		GUC_check_errhint("Set it in the session that needs it: SET LOCAL batpak.gate_bypass_reason = '...'.");
		return false;
	}
	if (!IsTransactionState() || !OidIsValid(GetUserId()))
	{
		GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
		GUC_check_errmsg("batpak.gate_bypass_reason can only be set with SET inside a session");
		return false;
	}
	admin = get_role_oid(BATPAK_ADMIN_ROLE, true);
	if (superuser() || (OidIsValid(admin) && is_member_of_role(GetUserId(), admin)))
	{
		/* remember who set it: the metadata names that role */
		Oid		   *setter = malloc(sizeof(Oid));

		if (setter == NULL)
			return false;
		*setter = GetUserId();
		*extra = setter;
		return true;
	}
	GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
	GUC_check_errmsg("permission denied to set batpak.gate_bypass_reason");
	GUC_check_errdetail("Only superusers and members of role \"%s\" may bypass the gates.",
						BATPAK_ADMIN_ROLE);
	return false;
}

void
batpak_gate_bypass_assign(const char *newval, void *extra)
{
	batpak_gate_bypass_setter = extra ? *(Oid *) extra : InvalidOid;
}
