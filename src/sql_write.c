/*-------------------------------------------------------------------------
 *
 * sql_write.c
 *	  SQL entry points that write: batpak.append and batpak.append_batch.
 *
 * Every input check happens here, in the calling backend, before anything
 * reaches the writer: a bad call costs the writer nothing and cannot fail
 * other sessions' appends.  The writer then checks what needs the store's
 * state (expected sequences, idempotency keys, causation links).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/typcache.h"

#include "batpak.h"

PG_FUNCTION_INFO_V1(batpak_append);
PG_FUNCTION_INFO_V1(batpak_append_batch);

/* The column types of batpak.receipt and batpak.new_event (batpak_check_rowtype) */
const Oid	batpak_receipt_typids[BATPAK_RECEIPT_NATTS] = {
	UUIDOID, INT8OID, INT8OID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID
};
const Oid	batpak_new_event_typids[BATPAK_NEW_EVENT_NATTS] = {
	TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT8OID, TEXTOID, UUIDOID, UUIDOID
};


void
batpak_check_coordinate(const char *what, const char *s, Size len, Size maxlen)
{
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (len > maxlen)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", what),
				 errdetail("It is %zu bytes; the limit is %zu bytes.", len, maxlen)));
	for (Size i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7F)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters", what),
					 errdetail("Byte %zu is 0x%02X.", i + 1, c)));
	}
}

void
batpak_check_kind(const char *s, Size len)
{
	batpak_check_coordinate("kind", s, len, BATPAK_MAX_KIND_LEN);
	if (len >= strlen(BATPAK_RESERVED_KIND_PREFIX) &&
		strncmp(s, BATPAK_RESERVED_KIND_PREFIX, strlen(BATPAK_RESERVED_KIND_PREFIX)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("kind \"%.*s\" is reserved", (int) Min(len, 255), s),
				 errdetail("Kinds starting with \"%s\" are reserved for batpak itself.",
						   BATPAK_RESERVED_KIND_PREFIX)));
}

static void
batpak_require(bool isnull, const char *what)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/* As batpak_require, for a field of item 'item' of a batch (1-based) */
static void
batpak_require_item(bool isnull, const char *field, int item)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s of event %d must not be null", field, item)));
}

/*
 * Top-level metadata keys starting with "batpak." are batpak's own (the
 * gate bypass record, gates.c): a caller who could write one could forge
 * the record of a bypass that never happened.  Like the reserved kinds.
 */
static void
batpak_check_metadata_keys(Jsonb *metadata)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (metadata == NULL || !JB_ROOT_IS_OBJECT(metadata) || JB_ROOT_IS_SCALAR(metadata))
		return;
	it = JsonbIteratorInit(&metadata->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && v.val.string.len >= strlen(BATPAK_RESERVED_KIND_PREFIX) &&
			memcmp(v.val.string.val, BATPAK_RESERVED_KIND_PREFIX,
				   strlen(BATPAK_RESERVED_KIND_PREFIX)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_RESERVED_NAME),
					 errmsg("metadata key \"%s\" is reserved",
							pnstrdup(v.val.string.val, v.val.string.len)),
					 errdetail("Top-level metadata keys starting with \"%s\" are written by batpak itself.",
							   BATPAK_RESERVED_KIND_PREFIX)));
	}
}

/*
 * Check the fields of one proposed event (system: batpak's own, which may
 * use a reserved kind).
 */
void
batpak_validate_event(const BatpakNewEvent *e, bool system)
{
	batpak_check_coordinate("entity", VARDATA_ANY(e->entity),
							VARSIZE_ANY_EXHDR(e->entity), BATPAK_MAX_COORD_LEN);
	batpak_check_coordinate("scope", VARDATA_ANY(e->scope),
							VARSIZE_ANY_EXHDR(e->scope), BATPAK_MAX_COORD_LEN);
	if (system)
		batpak_check_coordinate("kind", VARDATA_ANY(e->kind),
								VARSIZE_ANY_EXHDR(e->kind), BATPAK_MAX_KIND_LEN);
	else
		batpak_check_kind(VARDATA_ANY(e->kind), VARSIZE_ANY_EXHDR(e->kind));
	if (e->idem)
		batpak_check_coordinate("idempotency key", VARDATA_ANY(e->idem),
								VARSIZE_ANY_EXHDR(e->idem), BATPAK_MAX_COORD_LEN);
	if (!system)
		batpak_check_metadata_keys(e->metadata);
	if (e->has_expected && e->expected_sequence < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected_sequence must not be negative"),
				 errhint("Use NULL for no check and 0 for an entity that must have no events.")));
}

/*
 * The size of an event's request item, refused past batpak.max_event_size.
 * After the gates, which may add the bypass record to the metadata.
 */
static Size
batpak_event_size(const BatpakNewEvent *e)
{
	Size		size;
	Size		limit = (Size) batpak_max_event_size_kb * 1024;

	size = VARSIZE_ANY_EXHDR(e->entity) + VARSIZE_ANY_EXHDR(e->scope) +
		VARSIZE_ANY_EXHDR(e->kind) + (e->idem ? VARSIZE_ANY_EXHDR(e->idem) : 0) +
		VARSIZE(e->payload) - VARHDRSZ +
		(e->metadata ? VARSIZE(e->metadata) - VARHDRSZ : 0);
	if (size > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event is too large"),
				 errdetail("The event takes %zu bytes; batpak.max_event_size is %zu bytes.",
						   size, limit)));
	return MAXALIGN(offsetof(BatpakEventReq, data) + size);
}

/* Check one event as the caller gave it and return its item's size */
static Size
batpak_check_event(const BatpakNewEvent *e, bool system)
{
	batpak_validate_event(e, system);
	return batpak_event_size(e);
}

/*
 * An append writes: refused in a read-only transaction (and so on a hot
 * standby), as nextval is, although the writer, not this transaction,
 * writes the files.  Refused in a parallel operation too (a function
 * wrongly marked PARALLEL SAFE, or force_parallel_mode): a transactional
 * append needs an xid of its own, and the gates there could only be read
 * with the leader's snapshot, which under REPEATABLE READ may predate a
 * gate (see batpak_gates_load), so an immediate append would pass a gate
 * it must meet.  Before anything else, the gates included.
 */
static void
batpak_check_writable(const char *function)
{
	PreventCommandIfReadOnly(function);
	if (IsInParallelMode())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot append batpak events during a parallel operation"),
				 errhint("Do not mark a function that appends PARALLEL SAFE.")));
}

static char *
batpak_put(char *p, const void *data, Size len)
{
	memcpy(p, data, len);
	return p + len;
}

/* Write a checked event into the request at dst; returns the next item */
static char *
batpak_pack_event(char *dst, const BatpakNewEvent *e, Size itemsize)
{
	BatpakEventReq *ev = (BatpakEventReq *) dst;
	char	   *p;

	memset(ev, 0, offsetof(BatpakEventReq, data));
	ev->size = (uint32) itemsize;
	ev->entity_len = VARSIZE_ANY_EXHDR(e->entity);
	ev->scope_len = VARSIZE_ANY_EXHDR(e->scope);
	ev->kind_len = VARSIZE_ANY_EXHDR(e->kind);
	ev->idem_len = e->idem ? VARSIZE_ANY_EXHDR(e->idem) : 0;
	ev->payload_len = VARSIZE(e->payload) - VARHDRSZ;
	ev->has_metadata = e->metadata != NULL;
	ev->metadata_len = e->metadata ? VARSIZE(e->metadata) - VARHDRSZ : 0;
	ev->has_expected = e->has_expected;
	ev->expected_sequence = e->expected_sequence;
	ev->has_correlation = e->correlation_id != NULL;
	if (e->correlation_id)
		ev->correlation_id = *e->correlation_id;
	ev->has_causation = e->causation_id != NULL;
	if (e->causation_id)
		ev->causation_id = *e->causation_id;

	/* frame order: entity scope kind key payload metadata */
	p = ev->data;
	p = batpak_put(p, VARDATA_ANY(e->entity), ev->entity_len);
	p = batpak_put(p, VARDATA_ANY(e->scope), ev->scope_len);
	p = batpak_put(p, VARDATA_ANY(e->kind), ev->kind_len);
	if (e->idem)
		p = batpak_put(p, VARDATA_ANY(e->idem), ev->idem_len);
	p = batpak_put(p, VARDATA(e->payload), ev->payload_len);
	if (e->metadata)
		p = batpak_put(p, VARDATA(e->metadata), ev->metadata_len);
	return dst + itemsize;
}

/*
 * The columns of batpak.receipt; the two hashes and the id are built in buf
 * (BATPAK_RECEIPT_SCRATCH bytes), so a batch's receipts need no palloc each.
 */
#define BATPAK_RECEIPT_SCRATCH \
	(MAXALIGN(sizeof(pg_uuid_t)) + 2 * MAXALIGN(VARHDRSZ + BATPAK_HASH_LEN))

static void
batpak_receipt_values(const BatpakReceipt *r, char *buf, Datum *values, bool *nulls)
{
	pg_uuid_t  *id = (pg_uuid_t *) buf;
	bytea	   *hash = (bytea *) (buf + MAXALIGN(sizeof(pg_uuid_t)));
	bytea	   *prev = (bytea *) ((char *) hash + MAXALIGN(VARHDRSZ + BATPAK_HASH_LEN));

	*id = r->event_id;
	SET_VARSIZE(hash, VARHDRSZ + BATPAK_HASH_LEN);
	memcpy(VARDATA(hash), r->event_hash, BATPAK_HASH_LEN);
	SET_VARSIZE(prev, VARHDRSZ + BATPAK_HASH_LEN);
	memcpy(VARDATA(prev), r->prev_hash, BATPAK_HASH_LEN);
	memset(nulls, 0, sizeof(bool) * BATPAK_RECEIPT_NATTS);
	values[0] = UUIDPGetDatum(id);
	values[1] = Int64GetDatum((int64) r->global_seq);
	values[2] = Int64GetDatum((int64) r->entity_seq);
	values[3] = TimestampTzGetDatum(r->committed_at);
	values[4] = PointerGetDatum(hash);
	values[5] = PointerGetDatum(prev);
}

/*
 * The call's result type, batpak.receipt, refused if it was altered
 * (batpak_check_rowtype).  Checked before any write: an error after it
 * would hide the receipt of a written event.
 */
static TupleDesc
batpak_receipt_desc(FunctionCallInfo fcinfo)
{
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	batpak_check_rowtype(tupdesc, batpak_receipt_typids, BATPAK_RECEIPT_NATTS,
						 "batpak.receipt");
	return tupdesc;
}

/*
 * The event of a call whose first arguments are (entity, scope, kind,
 * payload, metadata), as append and evaluate_gates take them; the other
 * fields are left empty.
 */
void
batpak_event_from_args(FunctionCallInfo fcinfo, BatpakNewEvent *e)
{
	batpak_require(PG_ARGISNULL(0), "entity");
	batpak_require(PG_ARGISNULL(1), "scope");
	batpak_require(PG_ARGISNULL(2), "kind");
	batpak_require(PG_ARGISNULL(3), "payload");

	memset(e, 0, sizeof(*e));
	e->entity = PG_GETARG_TEXT_PP(0);
	e->scope = PG_GETARG_TEXT_PP(1);
	e->kind = PG_GETARG_TEXT_PP(2);
	e->payload = PG_GETARG_JSONB_P(3);
	e->metadata = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
}

Datum
batpak_append(PG_FUNCTION_ARGS)
{
	BatpakNewEvent e;
	BatpakRequest *req;
	Size		itemsize;
	TupleDesc	tupdesc;

	/* the modes are the caller's, taken before a gate could change them */
	bool		transactional = batpak_transactional;
	bool		synchronous = batpak_synchronous_commit;

	batpak_check_loaded();
	batpak_check_writable("batpak.append");
	batpak_event_from_args(fcinfo, &e);
	e.has_expected = !PG_ARGISNULL(5);
	e.expected_sequence = e.has_expected ? PG_GETARG_INT64(5) : 0;
	e.idem = PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6);
	e.correlation_id = PG_ARGISNULL(7) ? NULL : PG_GETARG_UUID_P(7);
	e.causation_id = PG_ARGISNULL(8) ? NULL : PG_GETARG_UUID_P(8);

	(void) batpak_check_event(&e, false);
	batpak_gates_apply(&e, 0, synchronous);
	/* after the gates (their SQL may alter the type), before the write */
	tupdesc = BlessTupleDesc(batpak_receipt_desc(fcinfo));
	/* a gate bypass adds to the metadata */
	itemsize = batpak_event_size(&e);
	req = batpak_request_create(1, itemsize, transactional, synchronous);
	req->batch = false;
	(void) batpak_pack_event(req->events, &e, itemsize);

	req = batpak_submit_and_wait(req, false);

	{
		Datum		values[BATPAK_RECEIPT_NATTS];
		bool		nulls[BATPAK_RECEIPT_NATTS];

		HeapTuple	tuple;

		batpak_receipt_values(BATPAK_REQ_RECEIPTS(req), palloc(BATPAK_RECEIPT_SCRATCH),
							  values, nulls);
		tuple = heap_form_tuple(tupdesc, values, nulls);
		batpak_request_done();
		PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
	}
}

/*
 * Append an event of batpak's own (a reserved kind, no gates), in immediate
 * mode: it stays whatever the calling transaction does.  Used to record a
 * gate's denial, synchronous as the denied call (read when it started,
 * before a gate could change it).
 */
void
batpak_append_system_event(const BatpakNewEvent *e, bool synchronous)
{
	Size		itemsize = batpak_check_event(e, true);
	BatpakRequest *req;

	req = batpak_request_create(1, itemsize, false, synchronous);
	req->batch = false;
	(void) batpak_pack_event(req->events, e, itemsize);
	(void) batpak_submit_and_wait(req, true);
	batpak_request_done();
}

/* Read the fields of one batpak.new_event composite */
static void
batpak_decode_new_event(HeapTupleHeader rec, TupleDesc tupdesc, int item,
						BatpakNewEvent *e)
{
	HeapTupleData tuple;
	Datum		values[BATPAK_NEW_EVENT_NATTS];
	bool		nulls[BATPAK_NEW_EVENT_NATTS];

	/* the caller checked tupdesc with batpak_check_rowtype */
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;
	heap_deform_tuple(&tuple, tupdesc, values, nulls);

	batpak_require_item(nulls[0], "entity", item);
	batpak_require_item(nulls[1], "scope", item);
	batpak_require_item(nulls[2], "kind", item);
	batpak_require_item(nulls[3], "payload", item);

	memset(e, 0, sizeof(*e));
	e->entity = DatumGetTextPP(values[0]);
	e->scope = DatumGetTextPP(values[1]);
	e->kind = DatumGetTextPP(values[2]);
	e->payload = DatumGetJsonbP(values[3]);
	e->metadata = nulls[4] ? NULL : DatumGetJsonbP(values[4]);
	e->has_expected = !nulls[5];
	e->expected_sequence = nulls[5] ? 0 : DatumGetInt64(values[5]);
	e->idem = nulls[6] ? NULL : DatumGetTextPP(values[6]);
	e->correlation_id = nulls[7] ? NULL : DatumGetUUIDP(values[7]);
	e->causation_id = nulls[8] ? NULL : DatumGetUUIDP(values[8]);
}

/* Refuse a batch that uses one idempotency key twice */
static void
batpak_check_batch_keys(BatpakNewEvent *events, int n)
{
	HASHCTL		ctl;
	HTAB	   *keys;
	int			nkeys = 0;

	for (int i = 0; i < n; i++)
		if (events[i].idem != NULL)
			nkeys++;
	if (nkeys < 2)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = BATPAK_KEY_LEN;
	ctl.entrysize = BATPAK_KEY_LEN;
	ctl.hcxt = CurrentMemoryContext;
	keys = hash_create("batpak batch keys", nkeys, &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		uint8		key[BATPAK_KEY_LEN];
		bool		found;

		if (events[i].idem == NULL)
			continue;
		batpak_hash_key(VARDATA_ANY(events[i].idem), VARSIZE_ANY_EXHDR(events[i].idem), key);
		(void) hash_search(keys, key, HASH_ENTER, &found);
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("idempotency key \"%s\" appears more than once in the batch",
							text_to_cstring(events[i].idem)),
					 errdetail("Event %d repeats the key of an earlier event.", i + 1)));
	}
	hash_destroy(keys);
}

Datum
batpak_append_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *arr;
	Oid			elemtype;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *elemnulls;
	int			n;
	TupleDesc	eventdesc;
	BatpakNewEvent *events;
	Size	   *sizes;
	Size		total = 0;
	BatpakRequest *req;
	char	   *p;
	char	   *scratch;
	BatpakReceipt *receipts;
	bool		transactional = batpak_transactional;
	bool		synchronous = batpak_synchronous_commit;

	batpak_check_loaded();
	batpak_check_writable("batpak.append_batch");
	batpak_require(PG_ARGISNULL(0), "events");
	batpak_materialize(fcinfo);
	batpak_check_rowtype(((ReturnSetInfo *) fcinfo->resultinfo)->setDesc,
						 batpak_receipt_typids, BATPAK_RECEIPT_NATTS,
						 "batpak.receipt");

	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("events must be a one-dimensional array")));
	elemtype = ARR_ELEMTYPE(arr);
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (n == 0)
		return (Datum) 0;
	if (n > BATPAK_MAX_BATCH_EVENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch has too many events"),
				 errdetail("It has %d events; the limit is %d.", n, BATPAK_MAX_BATCH_EVENTS)));

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
					  &elems, &elemnulls, &n);
	eventdesc = lookup_rowtype_tupdesc(elemtype, -1);
	batpak_check_rowtype(eventdesc, batpak_new_event_typids,
						 BATPAK_NEW_EVENT_NATTS, "batpak.new_event");

	events = palloc(sizeof(BatpakNewEvent) * n);
	sizes = palloc(sizeof(Size) * n);
	for (int i = 0; i < n; i++)
	{
		if (elemnulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("event %d must not be null", i + 1)));
		batpak_decode_new_event(DatumGetHeapTupleHeader(elems[i]), eventdesc, i + 1,
								&events[i]);
		(void) batpak_check_event(&events[i], false);
	}
	ReleaseTupleDesc(eventdesc);
	batpak_check_batch_keys(events, n);

	/* the gates see only valid events; one denial refuses the batch */
	for (int i = 0; i < n; i++)
	{
		batpak_gates_apply(&events[i], i + 1, synchronous);
		sizes[i] = batpak_event_size(&events[i]);
		total += sizes[i];
		if (total > BATPAK_MAX_REQUEST_SIZE)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("batch is too large"),
					 errdetail("The events take more than %zu bytes.", BATPAK_MAX_REQUEST_SIZE)));
	}

	/*
	 * A gate's SQL may have altered the type since batpak_materialize took
	 * the descriptor the receipts are formed with: if the type checks out
	 * now too, both have the same columns.
	 */
	(void) batpak_receipt_desc(fcinfo);
	req = batpak_request_create(n, total, transactional, synchronous);
	req->batch = true;
	p = req->events;
	for (int i = 0; i < n; i++)
		p = batpak_pack_event(p, &events[i], sizes[i]);

	req = batpak_submit_and_wait(req, false);

	receipts = BATPAK_REQ_RECEIPTS(req);
	scratch = palloc(BATPAK_RECEIPT_SCRATCH);
	for (int i = 0; i < n; i++)
	{
		Datum		values[BATPAK_RECEIPT_NATTS];
		bool		nulls[BATPAK_RECEIPT_NATTS];

		/* tuplestore_putvalues copies: the scratch serves every receipt */
		batpak_receipt_values(&receipts[i], scratch, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	batpak_request_done();
	return (Datum) 0;
}
