/*-------------------------------------------------------------------------
 *
 * cursor.c
 *	  Durable cursors: cursor_create, cursor_read, cursor_wait, cursor_seek,
 *	  cursor_drop, and entity_group for consumer groups.
 *
 * A cursor is a row of batpak.cursor_state, an ordinary table: its filters
 * and its position, the last global sequence it has consumed.  cursor_read
 * locks the row (FOR NO KEY UPDATE), walks the store in global order from
 * the position like read_all, and writes the new position back, all in the
 * caller's transaction.  Hence:
 *
 *	- COMMIT consumes, ROLLBACK (or a crash before COMMIT) delivers the same
 *	  events again; a consumer that writes its side effects in the same
 *	  transaction processes every event exactly once.
 *	- Two sessions reading one cursor never get the same event: the second
 *	  waits for the first's row lock, then (READ COMMITTED re-reads the
 *	  locked row) starts from the position the first committed.  Under
 *	  REPEATABLE READ or SERIALIZABLE the second gets a serialization failure
 *	  instead (40001), as with any row updated concurrently.
 *
 * A cursor delivers events up to the consumer horizon of notify.c's
 * batpak_consumer_horizon: what the visible frontier allows (plus what the
 * clog already says committed beyond it, exactly as read_all), and never
 * past the durable frontier, so that a committed position never points
 * past an event that a crash could take back.  Rolled-back sequences are
 * skipped and counted in the cursor's gaps; the walk stops before an event
 * whose transaction is still open, so nothing is skipped that may commit
 * later.
 *
 * The table is read and written through SPI as its owner (callers need no
 * privilege on it, only EXECUTE on the functions), with statements that
 * name every object and operator with its schema: no search_path the
 * caller sets can run code as the owner.  A cursor belongs to the role
 * that created it: only that role, its members and superusers may read,
 * seek or drop it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "batpak.h"

PG_FUNCTION_INFO_V1(batpak_cursor_create);
PG_FUNCTION_INFO_V1(batpak_cursor_read);
PG_FUNCTION_INFO_V1(batpak_cursor_wait);
PG_FUNCTION_INFO_V1(batpak_cursor_seek);
PG_FUNCTION_INFO_V1(batpak_cursor_drop);
PG_FUNCTION_INFO_V1(batpak_entity_group);

#define CURSOR_NAME_MAX		255

/* Statements on batpak.cursor_state, prepared once per backend */
typedef enum CursorStmt
{
	CS_GET,						/* the row, no lock */
	CS_GET_NOKEY,				/* FOR NO KEY UPDATE: read, seek */
	CS_GET_UPDATE,				/* FOR UPDATE: drop */
	CS_INSERT,
	CS_MOVE,
	CS_DELETE,
	CS_COUNT
} CursorStmt;

/*
 * Each column cast to the type the C code reads it as: the table is the
 * extension's, but a superuser can detach its view and alter a column, and a
 * Datum of another type must not be read as this one.
 */
#define CS_COLUMNS "scope::pg_catalog.text, kinds::pg_catalog.text[], " \
	"entity_prefix::pg_catalog.text, group_member::pg_catalog.int4, " \
	"group_size::pg_catalog.int4, position::pg_catalog.int8, created_by::pg_catalog.name " \
	"FROM batpak.cursor_state WHERE name OPERATOR(pg_catalog.=) $1"

static const char *const cursor_sql[CS_COUNT] = {
	"SELECT " CS_COLUMNS,
	"SELECT " CS_COLUMNS " FOR NO KEY UPDATE",
	"SELECT " CS_COLUMNS " FOR UPDATE",
	"INSERT INTO batpak.cursor_state (name, scope, kinds, entity_prefix, group_member, "
	"group_size, position, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
	"ON CONFLICT (name) DO NOTHING",
	"UPDATE batpak.cursor_state SET position = $2, "
	"gaps = gaps OPERATOR(pg_catalog.+) $3, read_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1",
	"DELETE FROM batpak.cursor_state WHERE name OPERATOR(pg_catalog.=) $1",
};

static const int cursor_nargs[CS_COUNT] = {1, 1, 1, 8, 3, 1};

static SPIPlanPtr cursor_plans[CS_COUNT];

/* A cursor's row, as read */
typedef struct CursorRow
{
	BatpakFilter flt;
	uint64		position;
	Oid			owner;			/* InvalidOid if the role no longer exists */
} CursorRow;

/*
 * Run one of the statements as the table's owner.  An error on the way
 * leaves the user id switched, but (sub)transaction abort restores it.
 */
static int
cursor_exec(CursorStmt stmt, Datum *args, const char *nulls)
{
	Oid			save_user;
	int			save_sec;
	int			rc;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(batpak_rel_owner(batpak_extension_table("cursor_state")),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (cursor_plans[stmt] == NULL)
	{
		static const Oid argtypes[8] = {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID,
		INT4OID, INT4OID, INT8OID, NAMEOID};
		static const Oid move_types[3] = {TEXTOID, INT8OID, INT8OID};
		SPIPlanPtr	plan;

		plan = SPI_prepare(cursor_sql[stmt], cursor_nargs[stmt],
						   (Oid *) (stmt == CS_MOVE ? move_types : argtypes));
		if (plan == NULL)
			elog(ERROR, "could not prepare a batpak cursor statement: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep a batpak cursor statement");
		cursor_plans[stmt] = plan;
	}
	rc = SPI_execute_plan(cursor_plans[stmt], args, nulls, false, 0);
	SetUserIdAndSecContext(save_user, save_sec);
	if (rc < 0)
		elog(ERROR, "batpak cursor statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

static text *
cursor_name_arg(FunctionCallInfo fcinfo)
{
	text	   *name;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = PG_GETARG_TEXT_PP(0);
	batpak_check_coordinate("cursor name", VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
							CURSOR_NAME_MAX);
	return name;
}

static Datum
cursor_getcol(int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);
}

/*
 * Read the cursor's row (SPI connected) with the lock the statement takes;
 * ERROR if there is none.  The filter's values live in SPI memory.
 */
static void
cursor_fetch(text *name, CursorStmt stmt, CursorRow *row)
{
	Datum		arg = PointerGetDatum(name);
	Datum		d;
	bool		isnull;

	cursor_exec(stmt, &arg, NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("cursor \"%s\" does not exist", text_to_cstring(name))));
	memset(row, 0, sizeof(*row));
	d = cursor_getcol(1, &isnull);
	row->flt.scope = isnull ? NULL : DatumGetTextPP(d);
	d = cursor_getcol(2, &isnull);
	if (!isnull)
		batpak_filter_set_kinds(&row->flt, DatumGetArrayTypeP(d));
	d = cursor_getcol(3, &isnull);
	row->flt.prefix = isnull ? NULL : DatumGetTextPP(d);
	d = cursor_getcol(4, &isnull);
	row->flt.group_member = isnull ? 0 : DatumGetInt32(d);
	d = cursor_getcol(5, &isnull);
	row->flt.group_size = isnull ? 0 : DatumGetInt32(d);
	row->position = (uint64) DatumGetInt64(cursor_getcol(6, &isnull));
	d = cursor_getcol(7, &isnull);
	row->owner = get_role_oid(NameStr(*DatumGetName(d)), true);
}

static void
cursor_check_owner(text *name, const CursorRow *row)
{
	if (superuser())
		return;
	if (OidIsValid(row->owner) && has_privs_of_role(GetUserId(), row->owner))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("must be owner of cursor \"%s\"", text_to_cstring(name))));
}

static void
cursor_move(text *name, uint64 position, uint64 gaps)
{
	Datum		args[3];

	args[0] = PointerGetDatum(name);
	args[1] = Int64GetDatum((int64) position);
	args[2] = Int64GetDatum((int64) gaps);
	cursor_exec(CS_MOVE, args, NULL);
}

/*
 * The snapshot a cursor reads with and the limit of its walk (see the
 * header): the published and the durable frontier of the index's own
 * writer.  NULL without require_ready when the writer is not ready.
 */
static BatpakIndex *
cursor_snapshot(uint64 *frontier, uint64 *published, uint64 *limit, bool require_ready)
{
	uint64		durable;
	BatpakIndex *idx = batpak_read_snapshot_ex(frontier, published, &durable,
											   require_ready);

	*limit = (idx != NULL) ? Min(*published, durable) : 0;
	return idx;
}

/*
 * The last sequence a cursor may be placed after: the last durable one, for
 * the reason cursors read no further (a position past an event that a crash
 * takes back would skip the event that reuses its sequence).
 */
static void
cursor_check_sequence(const char *what, int64 seq)
{
	uint64		frontier;
	uint64		published;
	uint64		limit;

	if (seq < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be negative", what)));
	(void) cursor_snapshot(&frontier, &published, &limit, true);
	if ((uint64) seq > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s " INT64_FORMAT " is past the last event", what, seq),
				 errdetail("The last durable global sequence is " UINT64_FORMAT ".", limit)));
}

/* A text filter argument (NULL = any) into the INSERT's parameter */
static void
cursor_filter_text_arg(FunctionCallInfo fcinfo, int argno, const char *what,
					   Datum *arg, char *null)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
	{
		*null = 'n';
		return;
	}
	t = PG_GETARG_TEXT_PP(argno);
	batpak_check_coordinate(what, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
							BATPAK_MAX_COORD_LEN);
	*arg = PointerGetDatum(t);
}

Datum
batpak_cursor_create(PG_FUNCTION_ARGS)
{
	text	   *name = cursor_name_arg(fcinfo);
	Datum		args[8];
	char		nulls[8];
	int64		start_after = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);

	memset(nulls, ' ', sizeof(nulls));
	args[0] = PointerGetDatum(name);
	cursor_filter_text_arg(fcinfo, 1, "scope", &args[1], &nulls[1]);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
	{
		ArrayType  *kinds = PG_GETARG_ARRAYTYPE_P(2);
		BatpakFilter flt;

		if (ARR_NDIM(kinds) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("kinds must be a one-dimensional, non-empty array")));
		memset(&flt, 0, sizeof(flt));
		batpak_filter_set_kinds(&flt, kinds);
		for (int i = 0; i < flt.nkinds; i++)
		{
			if (flt.kinds[i] == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("kinds must not contain NULL")));
			batpak_check_coordinate("kind", VARDATA_ANY(flt.kinds[i]),
									VARSIZE_ANY_EXHDR(flt.kinds[i]), BATPAK_MAX_KIND_LEN);
		}
		args[2] = PointerGetDatum(kinds);
	}
	cursor_filter_text_arg(fcinfo, 3, "entity_prefix", &args[3], &nulls[3]);
	cursor_check_sequence("start_after", start_after);
	args[6] = Int64GetDatum(start_after);

	if (PG_ARGISNULL(5) != PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("group_member and group_size must be given together")));
	if (PG_ARGISNULL(5))
		nulls[4] = nulls[5] = 'n';
	else
	{
		int32		member = PG_GETARG_INT32(5);
		int32		size = PG_GETARG_INT32(6);

		if (size < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("group_size must be at least 1"),
					 errdetail("group_size is %d.", size)));
		if (member < 0 || member >= size)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("group_member must be between 0 and group_size - 1"),
					 errdetail("group_member is %d, group_size is %d.", member, size)));
		args[4] = Int32GetDatum(member);
		args[5] = Int32GetDatum(size);
	}
	args[7] = DirectFunctionCall1(namein,
								  CStringGetDatum(GetUserNameFromId(GetUserId(), false)));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cursor_exec(CS_INSERT, args, nulls);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("cursor \"%s\" already exists", text_to_cstring(name))));
	SPI_finish();
	PG_RETURN_VOID();
}

Datum
batpak_cursor_read(PG_FUNCTION_ARGS)
{
	text	   *name = cursor_name_arg(fcinfo);
	uint64		max_count = PG_UINT64_MAX;
	uint64		limit;
	BatpakOut	out;
	CursorRow	row;
	BatpakWalk	walk;

	/*
	 * cursor_read locks and advances the cursor's row, which needs an xid:
	 * in a parallel operation (a wrapper wrongly marked PARALLEL SAFE) that
	 * failed with XX000 "cannot assign XIDs during a parallel operation".
	 */
	if (IsInParallelMode())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot read a batpak cursor during a parallel operation"),
				 errhint("cursor_read advances the cursor's position; do not mark a function that calls it PARALLEL SAFE.")));
	if (!PG_ARGISNULL(1))
	{
		if (PG_GETARG_INT32(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_count must not be negative")));
		max_count = (uint64) PG_GETARG_INT32(1);
	}

	batpak_out_begin(fcinfo, &out);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cursor_fetch(name, CS_GET_NOKEY, &row);
	cursor_check_owner(name, &row);

	/* we may have waited for the lock: look at the store as it is now */
	out.idx = cursor_snapshot(&out.frontier, &out.published, &limit, true);
	memset(&walk, 0, sizeof(walk));
	walk.next = row.position + 1;
	if (max_count > 0)
		(void) batpak_walk_global(out.idx, out.frontier, limit,
								  &row.flt, &walk, max_count, &out);
	if (walk.next - 1 > row.position)
		cursor_move(name, walk.next - 1, walk.gaps);
	SPI_finish();
	batpak_out_end(&out);
	return (Datum) 0;
}

/*
 * Wait until an event the cursor would deliver is there.  The walk only
 * looks at each sequence once (walk.next carries over): a sleeper that is
 * woken many times costs what the new events cost.  Sleeping on publish_cv
 * after PrepareToSleep and a fresh check cannot miss a wake-up: the writer
 * moves a frontier before it broadcasts.
 */
Datum
batpak_cursor_wait(PG_FUNCTION_ARGS)
{
	text	   *name = cursor_name_arg(fcinfo);
	CursorRow	row;
	BatpakWalk	walk;
	TimestampTz deadline = 0;
	uint32		incarnation = 0;
	bool		found = false;

	if (!PG_ARGISNULL(1))
	{
		if (PG_GETARG_INT32(1) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout_ms must not be negative")));
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PG_GETARG_INT32(1));
	}
	/* it would wait for a writer that never starts there, timeout after timeout */
	batpak_check_not_standby();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cursor_fetch(name, CS_GET, &row);

	memset(&walk, 0, sizeof(walk));
	ConditionVariablePrepareToSleep(&BatpakCtl->publish_cv);
	for (;;)
	{
		uint32		state = pg_atomic_read_u32(&BatpakCtl->state);
		long		timeout = -1;
		uint64		frontier;
		uint64		published;
		uint64		limit;
		BatpakIndex *idx = NULL;

		/*
		 * A writer (re)starting: wait for it like for events (it broadcasts
		 * when it is ready; the 1 s cap covers a start that fails).  Only a
		 * failed store is an error (batpak_read_snapshot_ex raises it); the
		 * writer may also stop between the look at the state and the
		 * snapshot.  The walk reads without batpak_reader_frame's check,
		 * which its limit allows (batpak_read_snapshot_ex).
		 */
		if (state == BATPAK_STATE_READY || state == BATPAK_STATE_FAILED)
			idx = cursor_snapshot(&frontier, &published, &limit, false);
		if (idx != NULL)
		{
			/* a new writer may have recovered fewer events: look again */
			if (idx->incarnation != incarnation)
			{
				incarnation = idx->incarnation;
				walk.next = row.position + 1;
			}
			if (batpak_walk_global(idx, frontier, limit, &row.flt, &walk, 1, NULL) > 0)
			{
				found = true;
				break;
			}

			/*
			 * Our own pending event is in the way: it ends only after we
			 * return, so waiting cannot help.
			 */
			if (walk.blocked_by_self)
				break;
		}
		else
			timeout = 1000;
		if (!PG_ARGISNULL(1))
		{
			TimestampTz now = GetCurrentTimestamp();

			if (now >= deadline)
				break;
			timeout = Min(timeout < 0 ? PG_INT32_MAX : timeout,
						  TimestampDifferenceMilliseconds(now, deadline));
			if (timeout <= 0)
				timeout = 1;
		}
		/* wakes on a frontier move, a timeout, or an interrupt (CFI inside) */
		(void) ConditionVariableTimedSleep(&BatpakCtl->publish_cv, timeout,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	SPI_finish();
	PG_RETURN_BOOL(found);
}

Datum
batpak_cursor_seek(PG_FUNCTION_ARGS)
{
	text	   *name = cursor_name_arg(fcinfo);
	CursorRow	row;
	int64		after;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("after_sequence must not be null")));
	after = PG_GETARG_INT64(1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cursor_fetch(name, CS_GET_NOKEY, &row);
	cursor_check_owner(name, &row);
	cursor_check_sequence("after_sequence", after);
	cursor_move(name, (uint64) after, 0);
	SPI_finish();
	PG_RETURN_VOID();
}

Datum
batpak_cursor_drop(PG_FUNCTION_ARGS)
{
	text	   *name = cursor_name_arg(fcinfo);
	CursorRow	row;
	Datum		arg = PointerGetDatum(name);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cursor_fetch(name, CS_GET_UPDATE, &row);
	cursor_check_owner(name, &row);
	cursor_exec(CS_DELETE, &arg, NULL);
	SPI_finish();
	PG_RETURN_VOID();
}

Datum
batpak_entity_group(PG_FUNCTION_ARGS)
{
	text	   *entity = PG_GETARG_TEXT_PP(0);
	int32		size = PG_GETARG_INT32(1);

	batpak_check_coordinate("entity", VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity),
							BATPAK_MAX_COORD_LEN);
	if (size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("group_size must be at least 1"),
				 errdetail("group_size is %d.", size)));
	PG_RETURN_INT32(batpak_entity_member(VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity), size));
}
