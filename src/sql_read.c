/*-------------------------------------------------------------------------
 *
 * sql_read.c
 *	  SQL entry points that read: get, read_stream, read_all, stream_version,
 *	  walk_ancestors, read_correlated and the stats row.
 *
 * Readers never talk to the writer: they read the frontiers, look positions
 * up in the shared index and read the frames.  Every frame entered in the
 * index is complete and immutable (see index.c and writer.c); what may
 * change is an event's state, kept in its position's flag bits: pending
 * events are visible as the clog says (batpak_pending_visible in xact.c),
 * rolled-back ones to nobody.  read_all stops at the first event whose
 * transaction has not ended.  A reader needs no lock beyond the index's own partition
 * locks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "batpak.h"

PG_FUNCTION_INFO_V1(batpak_get);
PG_FUNCTION_INFO_V1(batpak_read_stream);
PG_FUNCTION_INFO_V1(batpak_read_all);
PG_FUNCTION_INFO_V1(batpak_stream_version);
PG_FUNCTION_INFO_V1(batpak_walk_ancestors);
PG_FUNCTION_INFO_V1(batpak_read_correlated);
PG_FUNCTION_INFO_V1(batpak_stats_row);

/* Room batpak_event_datums needs for a frame's pass-by-reference columns */
static Size
batpak_event_datums_size(const BatpakFrame *f)
{
	return 3 * MAXALIGN(sizeof(pg_uuid_t)) +
		MAXALIGN(VARHDRSZ + f->entity_len) + MAXALIGN(VARHDRSZ + f->scope_len) +
		MAXALIGN(VARHDRSZ + f->kind_len) + MAXALIGN(VARHDRSZ + f->payload_len) +
		MAXALIGN(VARHDRSZ + f->metadata_len) + 2 * MAXALIGN(VARHDRSZ + BATPAK_HASH_LEN);
}

static Datum
batpak_put_varlena(char **p, const void *data, Size len)
{
	struct varlena *v = (struct varlena *) *p;

	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), data, len);
	*p += MAXALIGN(VARHDRSZ + len);
	return PointerGetDatum(v);
}

static Datum
batpak_put_uuid(char **p, const pg_uuid_t *u)
{
	pg_uuid_t  *copy = (pg_uuid_t *) *p;

	*copy = *u;
	*p += MAXALIGN(sizeof(pg_uuid_t));
	return UUIDPGetDatum(copy);
}

/*
 * The columns of batpak.event for a frame, with the pass-by-reference ones
 * built in buf (batpak_event_datums_size bytes): one buffer per row instead
 * of a palloc per column, which matters when a read returns millions.
 */
static void
batpak_event_datums(const BatpakFrame *f, char *buf, Datum *values, bool *nulls)
{
	char	   *p = buf;

	memset(nulls, 0, sizeof(bool) * BATPAK_EVENT_NATTS);
	values[0] = Int64GetDatum((int64) f->global_seq);
	values[1] = batpak_put_uuid(&p, &f->event_id);
	values[2] = batpak_put_varlena(&p, f->entity, f->entity_len);
	values[3] = batpak_put_varlena(&p, f->scope, f->scope_len);
	values[4] = batpak_put_varlena(&p, f->kind, f->kind_len);
	values[5] = Int64GetDatum((int64) f->entity_seq);
	values[6] = batpak_put_uuid(&p, &f->correlation_id);
	if (f->flags & BATPAK_FLAG_HAS_CAUSATION)
		values[7] = batpak_put_uuid(&p, &f->causation_id);
	else
		nulls[7] = true;
	values[8] = TimestampTzGetDatum(f->committed_at);
	/* jsonb is stored in its binary form: the bytes are the datum's body */
	values[9] = batpak_put_varlena(&p, f->payload, f->payload_len);
	if (f->flags & BATPAK_FLAG_HAS_METADATA)
		values[10] = batpak_put_varlena(&p, f->metadata, f->metadata_len);
	else
		nulls[10] = true;
	values[11] = batpak_put_varlena(&p, f->event_hash, BATPAK_HASH_LEN);
	values[12] = batpak_put_varlena(&p, f->prev_hash, BATPAK_HASH_LEN);
}

/* The columns of batpak.event for a frame, palloc'd in the current context */
void
batpak_event_values(const BatpakFrame *f, Datum *values, bool *nulls)
{
	batpak_event_datums(f, palloc(batpak_event_datums_size(f)), values, nulls);
}

/*
 * The tuplestores of batpak's set-returning functions live in a context of
 * ours, not in the query's.
 *
 * A materialized SRF's rows are palloc'd one by one in its tuplestore's
 * context.  In the per-query context (InitMaterializedSRF) every statement
 * gets fresh blocks from malloc and hands them back at its end, and glibc
 * gives blocks of 128kB and more back to the kernel: every page of every
 * result was faulted in again, statement after statement.  On the 2-vCPU
 * VMs of the benchmark that was 60% of the time of a 1,000-event
 * read_all.  batpak_result_cxt keeps its first block across statements;
 * the chunks tuplestore_end frees go to its free lists and serve the next
 * result.
 *
 * Lifetime: the executor ends every tuplestore (ExecEndFunctionScan, or the
 * ProjectSet's shutdown callback) before its transaction's XACT_EVENT_COMMIT
 * or _PREPARE: PreCommit_Portals drops the non-holdable portals and
 * persists the holdable ones (running them to completion) first, and
 * SPI's commit in a procedure holds pinned portals the same way.  An error
 * leaves its tuplestore unended; its memory (and a spilled BufFile's struct:
 * the file itself belongs to the resource owner) waits in the context until
 * the top-level transaction ends, when batpak_result_reset gives back all
 * but the first block.  (A savepoint's rollback cannot free it earlier:
 * nothing tells which chunks belonged to the subtransaction's results, and
 * a result of the parent may still be read.)  So that a transaction that
 * catches error after error (a retry loop in PL/pgSQL, a driver's
 * autosave) cannot pile such remains up without bound, a tuplestore goes
 * to the query's own context, as InitMaterializedSRF puts it, once the
 * context holds BATPAK_RESULT_LIMIT bytes.  A backend so keeps
 * BATPAK_RESULT_KEEP bytes between transactions, and at most about
 * BATPAK_RESULT_LIMIT plus one result within one.
 */
#define BATPAK_RESULT_KEEP	(1024 * 1024)
#define BATPAK_RESULT_LIMIT (16 * 1024 * 1024)

static MemoryContext batpak_result_cxt = NULL;
static bool batpak_result_callback = false;

static void
batpak_result_reset(XactEvent event, void *arg)
{
	if (batpak_result_cxt != NULL &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PREPARE))
		MemoryContextReset(batpak_result_cxt);
}

/*
 * InitMaterializedSRF(fcinfo, 0), with the tuplestore in batpak_result_cxt
 * (the tuple descriptor stays in the per-query context).
 */
void
batpak_materialize(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcxt;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("materialize mode required, but it is not allowed in this context")));
	/* the reset first: a context nobody resets must never take results */
	if (!batpak_result_callback)
	{
		RegisterXactCallback(batpak_result_reset, NULL);
		batpak_result_callback = true;
	}
	if (batpak_result_cxt == NULL)
		batpak_result_cxt = AllocSetContextCreate(TopMemoryContext,
												  "batpak results",
												  BATPAK_RESULT_KEEP,
												  BATPAK_RESULT_KEEP,
												  ALLOCSET_DEFAULT_MAXSIZE);

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->setDesc = tupdesc;
	if (MemoryContextMemAllocated(batpak_result_cxt, false) < BATPAK_RESULT_LIMIT)
		MemoryContextSwitchTo(batpak_result_cxt);
	rsinfo->setResult =
		tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
							  false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Rows of batpak.event formed straight from the frame.
 *
 * A read of 1,000 events spent a fifth of its time in the generic way to a
 * row: the columns copied into datums (batpak_event_datums), then
 * heap_compute_data_size and heap_fill_tuple walking the descriptor for
 * each row, with a palloc0 in between.  batpak_event_tuple writes the
 * MinimalTuple heap_form_minimal_tuple would make for these datums, byte
 * for byte, in one pass over the frame: the same header, null bitmap and
 * infomask, int8 and timestamptz aligned to 8, uuids unaligned, and every
 * varlena as fill_val stores it -- a 1-byte header (unaligned) when its
 * data is at most 126 bytes, which is when VARATT_CAN_MAKE_SHORT holds for
 * a packable column, else a 4-byte header aligned to 4.  Padding must be
 * zero, as palloc0 leaves it: deforming a row (att_align_pointer) takes a
 * nonzero byte where a varlena may start as its 1-byte header, so a
 * nonzero pad byte would be read as a value (a reviewer's experiment
 * crashed the backend with "unrecognized TOAST vartag").  Builds with
 * assertions form each row the generic way too and compare the bytes.
 *
 * It is used only when the descriptor is the one these rules were written
 * for (batpak_event_desc_direct: types, lengths, alignments and storage of
 * all 13 columns); anything else goes the generic way.
 */
const Oid	batpak_event_typids[BATPAK_EVENT_NATTS] = {
	INT8OID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, UUIDOID, UUIDOID,
	TIMESTAMPTZOID, JSONBOID, JSONBOID, BYTEAOID, BYTEAOID
};

/*
 * batpak forms and reads the values of its row types (batpak.event,
 * batpak.receipt, batpak.new_event) by column position and type.  A
 * superuser can ALTER TYPE them; forming a row of 13 values for a type of
 * 14 columns, or reading a uuid column as text, would read past arrays or
 * misread memory, so an altered type is refused before any value is made.
 */
void
batpak_check_rowtype(TupleDesc desc, const Oid *typids, int natts,
					 const char *typname)
{
	bool		ok = desc->natts == natts;

	for (int i = 0; ok && i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		ok = !att->attisdropped && att->atttypid == typids[i];
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("type %s no longer has the columns batpak was built for", typname),
				 errdetail("It has been altered; batpak forms and reads its values by column position and type."),
				 errhint("Undo the ALTER TYPE. A dropped attribute stays in the type and cannot be undone: then save the rows of batpak.gate_definitions and batpak.cursor_state, drop and recreate the extension (the events stay in the segment files) and load them back.")));
}

static bool
batpak_event_desc_direct(TupleDesc desc)
{
	/* count and types were checked by batpak_check_rowtype */
	for (int i = 0; i < BATPAK_EVENT_NATTS; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		switch (att->atttypid)
		{
			case INT8OID:
			case TIMESTAMPTZOID:
				if (att->attlen != 8 || !att->attbyval ||
					att->attalign != TYPALIGN_DOUBLE)
					return false;
				break;
			case UUIDOID:
				if (att->attlen != UUID_LEN || att->attbyval ||
					att->attalign != TYPALIGN_CHAR)
					return false;
				break;
			default:
				if (att->attlen != -1 || att->attbyval ||
					att->attalign != TYPALIGN_INT ||
					att->attstorage == TYPSTORAGE_PLAIN)
					return false;
				break;
		}
	}
	return true;
}

/* An upper bound of batpak_event_tuple's size for f */
static Size
batpak_event_tuple_size(const BatpakFrame *f)
{
	return MAXALIGN(SizeofMinimalTupleHeader + BITMAPLEN(BATPAK_EVENT_NATTS)) +
		3 * (sizeof(int64) + ALIGNOF_DOUBLE) + 3 * UUID_LEN +
		5 * (VARHDRSZ + ALIGNOF_INT) + 2 * (VARHDRSZ + ALIGNOF_INT + BATPAK_HASH_LEN) +
		(Size) f->entity_len + f->scope_len + f->kind_len + f->payload_len +
		f->metadata_len;
}

/* Zero the bytes up to the next multiple of align, as palloc0 leaves them */
static inline char *
tup_align(char *p, Size align)
{
	char	   *aligned = (char *) TYPEALIGN(align, p);

	while (p < aligned)
		*p++ = 0;
	return p;
}

static inline char *
tup_put_int8(char *p, int64 v)
{
	p = tup_align(p, ALIGNOF_DOUBLE);
	memcpy(p, &v, sizeof(v));
	return p + sizeof(v);
}

static inline char *
tup_put_uuid(char *p, const pg_uuid_t *u)
{
	memcpy(p, u->data, UUID_LEN);
	return p + UUID_LEN;
}

static inline char *
tup_put_varlena(char *p, const char *data, Size len)
{
	if (len <= VARATT_SHORT_MAX - VARHDRSZ_SHORT)
	{
		SET_VARSIZE_SHORT(p, VARHDRSZ_SHORT + len);
		memcpy(p + VARHDRSZ_SHORT, data, len);
		return p + VARHDRSZ_SHORT + len;
	}
	p = tup_align(p, ALIGNOF_INT);
	SET_VARSIZE(p, VARHDRSZ + len);
	memcpy(p + VARHDRSZ, data, len);
	return p + VARHDRSZ + len;
}

/*
 * Write the row of f into buf (batpak_event_tuple_size bytes, MAXALIGNed)
 * as a MinimalTuple; returns it.
 */
static MinimalTuple
batpak_event_tuple(const BatpakFrame *f, char *buf)
{
	MinimalTuple tup = (MinimalTuple) buf;
	bool		has_causation = (f->flags & BATPAK_FLAG_HAS_CAUSATION) != 0;
	bool		has_metadata = (f->flags & BATPAK_FLAG_HAS_METADATA) != 0;
	bool		hasnull = !has_causation || !has_metadata;
	Size		hoff;
	char	   *data;
	char	   *p;

	hoff = MAXALIGN(SizeofMinimalTupleHeader +
					(hasnull ? BITMAPLEN(BATPAK_EVENT_NATTS) : 0));
	memset(buf, 0, hoff);
	data = buf + hoff;
	Assert(data == (char *) MAXALIGN(data));

	p = tup_put_int8(data, (int64) f->global_seq);
	p = tup_put_uuid(p, &f->event_id);
	p = tup_put_varlena(p, f->entity, f->entity_len);
	p = tup_put_varlena(p, f->scope, f->scope_len);
	p = tup_put_varlena(p, f->kind, f->kind_len);
	p = tup_put_int8(p, (int64) f->entity_seq);
	p = tup_put_uuid(p, &f->correlation_id);
	if (has_causation)
		p = tup_put_uuid(p, &f->causation_id);
	p = tup_put_int8(p, (int64) f->committed_at);
	/* jsonb is stored in its binary form: the bytes are the datum's body */
	p = tup_put_varlena(p, f->payload, f->payload_len);
	if (has_metadata)
		p = tup_put_varlena(p, f->metadata, f->metadata_len);
	p = tup_put_varlena(p, (const char *) f->event_hash, BATPAK_HASH_LEN);
	p = tup_put_varlena(p, (const char *) f->prev_hash, BATPAK_HASH_LEN);
	Assert((Size) (p - buf) <= batpak_event_tuple_size(f));

	tup->t_len = p - buf;
	HeapTupleHeaderSetNatts(tup, BATPAK_EVENT_NATTS);
	tup->t_infomask = HEAP_HASVARWIDTH;
	if (hasnull)
	{
		/* one bit per column, set when it is not null */
		tup->t_infomask |= HEAP_HASNULL;
		tup->t_bits[0] = 0xFF & ~(has_causation ? 0 : 1 << 7);
		tup->t_bits[1] = 0x1F & ~(has_metadata ? 0 : 1 << (10 - 8));
	}
	tup->t_hoff = hoff + MINIMAL_TUPLE_OFFSET;
	return tup;
}

/* Materialized-SRF output, with one scratch buffer for every row */
void
batpak_out_begin(FunctionCallInfo fcinfo, BatpakOut *out)
{
	batpak_materialize(fcinfo);
	out->rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	batpak_check_rowtype(out->rsinfo->setDesc, batpak_event_typids,
						 BATPAK_EVENT_NATTS, "batpak.event");
	out->direct = batpak_event_desc_direct(out->rsinfo->setDesc);
	out->cxt = CurrentMemoryContext;
	out->scratch_size = 8192;
	out->scratch = MemoryContextAlloc(out->cxt, out->scratch_size);
	out->idx = batpak_read_snapshot(&out->frontier, &out->published);
}

static void
batpak_out_frame(BatpakOut *out, const BatpakFrame *f)
{
	Datum		values[BATPAK_EVENT_NATTS];
	bool		nulls[BATPAK_EVENT_NATTS];
	Size		need;

	need = out->direct ? batpak_event_tuple_size(f) : batpak_event_datums_size(f);
	if (need > out->scratch_size)
	{
		pfree(out->scratch);
		out->scratch_size = Max(need, out->scratch_size * 2);
		/* in out->cxt: a cursor calls this with SPI's context current */
		out->scratch = MemoryContextAllocHuge(out->cxt, out->scratch_size);
	}
	if (out->direct)
	{
		MinimalTuple tup = batpak_event_tuple(f, out->scratch);
		HeapTupleData htup;

#ifdef USE_ASSERT_CHECKING
		{
			char	   *buf = palloc(batpak_event_datums_size(f));
			MinimalTuple generic;

			batpak_event_datums(f, buf, values, nulls);
			generic = heap_form_minimal_tuple(out->rsinfo->setDesc, values, nulls);
			Assert(generic->t_len == tup->t_len &&
				   memcmp(generic, tup, tup->t_len) == 0);
			pfree(generic);
			pfree(buf);
		}
#endif

		/*
		 * tuplestore_puttuple copies the tuple (minimal_tuple_from_heap_tuple
		 * reads t_len and t_data only), so the buffer serves the next row;
		 * the HeapTupleData around a MinimalTuple is the executor's
		 * (tts_minimal_store_tuple).
		 */
		htup.t_len = tup->t_len + MINIMAL_TUPLE_OFFSET;
		htup.t_data = (HeapTupleHeader) ((char *) tup - MINIMAL_TUPLE_OFFSET);
		tuplestore_puttuple(out->rsinfo->setResult, &htup);
		return;
	}
	/* tuplestore_putvalues copies the values: the buffer serves the next row */
	batpak_event_datums(f, out->scratch, values, nulls);
	tuplestore_putvalues(out->rsinfo->setResult, out->rsinfo->setDesc, values, nulls);
}

/* Emit the event at seq if this session may see it; false if not */
static bool
batpak_out_seq(BatpakOut *out, uint64 seq)
{
	BatpakFrame f;

	if (seq > out->published || !batpak_visible_frame(out->idx, seq, &f))
		return false;
	batpak_out_frame(out, &f);
	return true;
}

void
batpak_out_end(BatpakOut *out)
{
	pfree(out->scratch);
}

static uint64
batpak_arg_count(FunctionCallInfo fcinfo, int argno, const char *what)
{
	int64		v;

	if (PG_ARGISNULL(argno))
		return PG_UINT64_MAX;
	v = fcinfo->args[argno].value;
	if (DatumGetInt64(v) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return (uint64) DatumGetInt64(v);
}

static uint64
batpak_arg_int4_count(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		return PG_UINT64_MAX;
	if (PG_GETARG_INT32(argno) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	return (uint64) PG_GETARG_INT32(argno);
}

static void
batpak_entity_key(text *entity, uint8 *key)
{
	batpak_check_coordinate("entity", VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity),
							BATPAK_MAX_COORD_LEN);
	batpak_hash_key(VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity), key);
}

/*
 * Read the frame at pos for a reader (batpak_reader_frame), or for a probe
 * (a walk without output: cursor_wait's question whether an event is
 * there), which must not fail when the writer restarts: cursor_wait waits
 * through restarts.  A probe reads no further than the durable frontier of
 * its snapshot (cursor_snapshot), and nothing there is ever discarded or
 * written again, so the old index still describes those bytes; the caller
 * sees the new incarnation at its next look and starts over.
 */
static void
batpak_walk_frame(BatpakIndex *idx, uint64 pos, BatpakFrame *f, bool probe)
{
	if (probe)
		batpak_read_frame(pos, f);
	else
		batpak_reader_frame(idx, pos, f);
}

/*
 * May this session see the published event at seq?  Committed events are
 * visible to all, pending ones as the clog says (batpak_pending_visible),
 * rolled-back ones to nobody.  Reads the frame into *f.  *in_progress (if
 * given) is set when the event's transaction has not ended.  probe: see
 * batpak_walk_frame.
 */
static bool
batpak_visible_frame_ex(BatpakIndex *idx, uint64 seq, BatpakFrame *f,
						bool *in_progress, bool probe)
{
	uint64		pos = batpak_index_seq_pos(idx, seq);
	bool		running = false;
	bool		visible = true;

	if (pos & BATPAK_POS_HIDDEN)
		visible = false;
	else
	{
		batpak_walk_frame(idx, pos, f, probe);
		if (pos & BATPAK_POS_PENDING)
			visible = batpak_pending_visible(f, &running);
	}
	if (in_progress)
		*in_progress = running;
	return visible;
}

bool
batpak_visible_frame(BatpakIndex *idx, uint64 seq, BatpakFrame *f)
{
	return batpak_visible_frame_ex(idx, seq, f, NULL, false);
}

/*
 * Number of the entity's events this session sees: the committed ones,
 * then those of the pending ones at the end of the stream that are visible
 * (up to the first that is not: a stream stays dense).
 */
uint64
batpak_visible_stream_count(BatpakIndex *idx, const uint8 *key)
{
	BatpakStreamHead head;
	uint64	   *seqs;
	uint64		count;
	int			n;

	if (!batpak_index_stream_head(idx, key, &head))
		return 0;
	count = head.committed_seq;
	if (head.last_seq == head.committed_seq)
		return count;
	seqs = batpak_index_stream_seqs(idx, key, head.committed_seq, PG_UINT64_MAX,
									&head, &n);
	for (int i = 0; i < n; i++)
	{
		BatpakFrame f;

		if (!batpak_visible_frame(idx, seqs[i], &f))
			break;
		count++;
	}
	if (seqs)
		pfree(seqs);
	return count;
}

/* Find a visible event by id; true with *f filled when it exists */
static bool
batpak_find_event(BatpakIndex *idx, uint64 published,
				  const pg_uuid_t *id, BatpakFrame *f)
{
	uint64		seq;

	if (!batpak_seq_from_uuid(id, &seq) || seq > published ||
		!batpak_visible_frame(idx, seq, f))
		return false;
	return memcmp(f->event_id.data, id->data, sizeof(id->data)) == 0;
}

Datum
batpak_get(PG_FUNCTION_ARGS)
{
	BatpakIndex *idx;
	BatpakFrame f;
	TupleDesc	tupdesc;
	Datum		values[BATPAK_EVENT_NATTS];
	bool		nulls[BATPAK_EVENT_NATTS];
	HeapTuple	tuple;
	uint64		frontier;
	uint64		published;

	idx = batpak_read_snapshot(&frontier, &published);
	if (!batpak_find_event(idx, published, PG_GETARG_UUID_P(0), &f))
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	batpak_check_rowtype(tupdesc, batpak_event_typids, BATPAK_EVENT_NATTS,
						 "batpak.event");
	tupdesc = BlessTupleDesc(tupdesc);
	batpak_event_values(&f, values, nulls);
	tuple = heap_form_tuple(tupdesc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}

Datum
batpak_read_stream(PG_FUNCTION_ARGS)
{
	BatpakOut	out;
	uint8		key[BATPAK_KEY_LEN];
	uint64		after;
	uint64		max_count;
	uint64	   *seqs;
	int			n;
	BatpakStreamHead head;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("entity must not be null")));
	batpak_entity_key(PG_GETARG_TEXT_PP(0), key);
	after = PG_ARGISNULL(1) ? 0 : batpak_arg_count(fcinfo, 1, "after_sequence");
	max_count = batpak_arg_int4_count(fcinfo, 2, "max_count");

	batpak_out_begin(fcinfo, &out);
	seqs = batpak_index_stream_seqs(out.idx, key, after, max_count, &head, &n);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();

		/*
		 * The committed events come first, then pending ones, visible up
		 * to the first that is not (a stream stays dense).
		 */
		if (!batpak_out_seq(&out, seqs[i]))
			break;
	}
	batpak_out_end(&out);
	return (Datum) 0;
}

/*
 * The member of a group of group_size that consumes an entity's events:
 * the first 8 bytes of the entity's BLAKE2b-128 index key, big-endian,
 * modulo group_size.  Stable across platforms, builds and restarts, and
 * spread evenly whatever the entity names look like.
 */
int32
batpak_entity_member(const char *entity, Size len, int32 group_size)
{
	uint8		key[BATPAK_KEY_LEN];
	uint64		h = 0;

	Assert(group_size >= 1);
	batpak_hash_key(entity, len, key);
	for (int i = 0; i < 8; i++)
		h = (h << 8) | key[i];
	return (int32) (h % (uint64) group_size);
}

void
batpak_filter_set_kinds(BatpakFilter *flt, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
					  &flt->nkinds);
	flt->kinds = palloc(sizeof(text *) * Max(flt->nkinds, 1));
	for (int i = 0; i < flt->nkinds; i++)
		flt->kinds[i] = nulls[i] ? NULL : DatumGetTextPP(elems[i]);
}

static bool
batpak_filter_match(const BatpakFilter *flt, const BatpakFrame *f)
{
	if (flt->scope &&
		(VARSIZE_ANY_EXHDR(flt->scope) != f->scope_len ||
		 memcmp(VARDATA_ANY(flt->scope), f->scope, f->scope_len) != 0))
		return false;
	if (flt->prefix &&
		(VARSIZE_ANY_EXHDR(flt->prefix) > f->entity_len ||
		 memcmp(VARDATA_ANY(flt->prefix), f->entity, VARSIZE_ANY_EXHDR(flt->prefix)) != 0))
		return false;
	if (flt->kinds)
	{
		bool		found = false;

		for (int i = 0; i < flt->nkinds && !found; i++)
			if (flt->kinds[i] && VARSIZE_ANY_EXHDR(flt->kinds[i]) == f->kind_len &&
				memcmp(VARDATA_ANY(flt->kinds[i]), f->kind, f->kind_len) == 0)
				found = true;
		if (!found)
			return false;
	}
	if (flt->group_size > 0 &&
		batpak_entity_member(f->entity, f->entity_len, flt->group_size) != flt->group_member)
		return false;
	return true;
}

/*
 * Walk the store in global order from walk->next up to limit, emitting (when
 * out is given) the events that match flt, at most max_count of them.
 *
 * Up to the writer's visible frontier nothing is pending: every event is
 * committed or rolled back.  Past it, the clog may already know more than
 * the writer: go on while the pending events met have ended, and stop at
 * the first whose transaction has not (ours included), so that a reader
 * paging by global sequence never skips an event that commits later.
 * Returns the number of matching events met.
 */
uint64
batpak_walk_global(BatpakIndex *idx, uint64 frontier, uint64 limit,
				   const BatpakFilter *flt, BatpakWalk *walk, uint64 max_count,
				   BatpakOut *out)
{
	uint64		matched = 0;

	walk->blocked = false;
	walk->blocked_by_self = false;
	while (walk->next <= limit && matched < max_count)
	{
		uint64		seq = walk->next;
		BatpakFrame f;
		uint64		pos;

		CHECK_FOR_INTERRUPTS();
		pos = batpak_index_seq_pos(idx, seq);
		if (pos & BATPAK_POS_HIDDEN)
		{
			walk->gaps++;
			walk->next++;
			continue;
		}
		if (seq <= frontier || !(pos & BATPAK_POS_PENDING))
			batpak_walk_frame(idx, pos, &f, out == NULL);
		else
		{
			bool		in_progress;
			bool		visible = batpak_visible_frame_ex(idx, seq, &f, &in_progress,
														  out == NULL);

			/* in progress and visible: our own pending event */
			if (in_progress)
			{
				walk->blocked = true;
				walk->blocked_by_self = visible;	/* only we see it */
				break;
			}
			if (!visible)
			{
				walk->gaps++;	/* rolled back, the writer does not know yet */
				walk->next++;
				continue;
			}
		}
		walk->next++;
		if (!batpak_filter_match(flt, &f))
			continue;
		if (out)
			batpak_out_frame(out, &f);
		matched++;
	}
	return matched;
}

Datum
batpak_read_all(PG_FUNCTION_ARGS)
{
	BatpakOut	out;
	BatpakFilter flt;
	BatpakWalk	walk;
	uint64		after;
	uint64		max_count;

	after = PG_ARGISNULL(0) ? 0 : batpak_arg_count(fcinfo, 0, "after_sequence");
	max_count = batpak_arg_int4_count(fcinfo, 1, "max_count");
	memset(&flt, 0, sizeof(flt));
	flt.scope = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	if (!PG_ARGISNULL(3))
		batpak_filter_set_kinds(&flt, PG_GETARG_ARRAYTYPE_P(3));
	flt.prefix = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);

	batpak_out_begin(fcinfo, &out);
	memset(&walk, 0, sizeof(walk));
	walk.next = after + 1;
	if (after < out.published)
		(void) batpak_walk_global(out.idx, out.frontier, out.published, &flt,
								  &walk, max_count, &out);
	batpak_out_end(&out);
	return (Datum) 0;
}

Datum
batpak_stream_version(PG_FUNCTION_ARGS)
{
	uint8		key[BATPAK_KEY_LEN];
	BatpakIndex *idx;
	uint64		frontier;

	batpak_entity_key(PG_GETARG_TEXT_PP(0), key);
	idx = batpak_read_snapshot(&frontier, NULL);
	PG_RETURN_INT64((int64) batpak_visible_stream_count(idx, key));
}

Datum
batpak_walk_ancestors(PG_FUNCTION_ARGS)
{
	BatpakOut	out;
	BatpakFrame f;
	uint64		max_depth;
	uint64		depth = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_id must not be null")));
	max_depth = batpak_arg_int4_count(fcinfo, 1, "max_depth");

	batpak_out_begin(fcinfo, &out);
	if (batpak_find_event(out.idx, out.published, PG_GETARG_UUID_P(0), &f))
	{
		/* causes always precede their effects, so this terminates */
		while (depth < max_depth && (f.flags & BATPAK_FLAG_HAS_CAUSATION))
		{
			pg_uuid_t	cause = f.causation_id;

			CHECK_FOR_INTERRUPTS();
			if (!batpak_find_event(out.idx, out.published, &cause, &f))
				break;
			batpak_out_frame(&out, &f);
			depth++;
		}
	}
	batpak_out_end(&out);
	return (Datum) 0;
}

static int
batpak_cmp_u64(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Sort and deduplicate; returns the new count */
int
batpak_sort_seqs(uint64 *seqs, int n)
{
	int			m = 0;

	if (n <= 1)
		return n;
	qsort(seqs, n, sizeof(uint64), batpak_cmp_u64);
	for (int i = 0; i < n; i++)
		if (m == 0 || seqs[m - 1] != seqs[i])
			seqs[m++] = seqs[i];
	return m;
}

Datum
batpak_read_correlated(PG_FUNCTION_ARGS)
{
	BatpakOut	out;
	pg_uuid_t  *corr;
	uint64	   *seqs;
	uint64	   *all;
	int			n;
	BatpakFrame f;
	uint64		root = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("correlation_id must not be null")));
	corr = PG_GETARG_UUID_P(0);

	batpak_out_begin(fcinfo, &out);
	/* the root: the event whose own id is the correlation id */
	if (batpak_find_event(out.idx, out.published, corr, &f) &&
		memcmp(f.correlation_id.data, corr->data, 16) == 0)
		root = f.global_seq;
	seqs = batpak_index_corr_seqs(out.idx, corr, &n);
	all = palloc(sizeof(uint64) * (n + 1));
	if (n > 0)
		memcpy(all, seqs, sizeof(uint64) * n);
	if (root != 0)
		all[n++] = root;
	n = batpak_sort_seqs(all, n);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		(void) batpak_out_seq(&out, all[i]);
	}
	batpak_out_end(&out);
	return (Datum) 0;
}

Datum
batpak_stats_row(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[29];
	bool		nulls[29];
	uint32		state;
	uint64		visible;
	char		failure[sizeof(BatpakCtl->failure)];
	pid_t		pid;
	TimestampTz started_at;
	TimestampTz ready_at;
	int			i = 0;
	BatpakCounters *c;

	batpak_check_loaded();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	if (tupdesc->natts != lengthof(values))
		elog(ERROR, "batpak.stats_row returns %d columns, expected %d",
			 tupdesc->natts, (int) lengthof(values));
	memset(nulls, 0, sizeof(nulls));

	LWLockAcquire(&BatpakCtl->lock, LW_SHARED);
	pid = BatpakCtl->writer_pid;
	started_at = BatpakCtl->started_at;
	ready_at = BatpakCtl->ready_at;
	strlcpy(failure, BatpakCtl->failure, sizeof(failure));
	LWLockRelease(&BatpakCtl->lock);
	state = pg_atomic_read_u32(&BatpakCtl->state);
	visible = pg_atomic_read_u64(&BatpakCtl->visible_seq);
	c = &BatpakCtl->counters;

	values[i++] = CStringGetTextDatum(batpak_state_name(state));
	if (pid != 0)
		values[i++] = Int32GetDatum(pid);
	else
		nulls[i++] = true;
	values[i++] = Int64GetDatum((int64) visible);
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->entities));
	values[i++] = Int32GetDatum((int32) pg_atomic_read_u32(&BatpakCtl->segments));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->store_bytes));
	if (state == BATPAK_STATE_READY)
	{
		uint64		total = pg_atomic_read_u64(&BatpakCtl->index_bytes);

		values[i++] = Int64GetDatum((int64) total);
		if (visible > 0)
			values[i++] = Float8GetDatum((double) total / (double) visible);
		else
			nulls[i++] = true;
	}
	else
	{
		nulls[i++] = true;
		nulls[i++] = true;
	}
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->written_seq));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->durable_seq));
	values[i++] = Int64GetDatum((int64) visible);
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->requests));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->requests_failed));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->events_written));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->idempotent_hits));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->groups));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->fsyncs));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->bytes_written));
	if (started_at != 0)
		values[i++] = TimestampTzGetDatum(started_at);
	else
		nulls[i++] = true;
	if (ready_at != 0 && state == BATPAK_STATE_READY)
		values[i++] = TimestampTzGetDatum(ready_at);
	else
		nulls[i++] = true;
	if (failure[0] != '\0' && state == BATPAK_STATE_FAILED)
		values[i++] = CStringGetTextDatum(failure);
	else
		nulls[i++] = true;
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->pending_transactions));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->pending_events));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->transactions_committed));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->transactions_aborted));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->events_discarded));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&BatpakCtl->notified_seq));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->notifications));
	values[i++] = Int64GetDatum((int64) pg_atomic_read_u64(&c->notifications_failed));
	Assert(i == lengthof(values));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
