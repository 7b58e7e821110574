/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The control block in the main shared memory segment, and each
 *	  backend's attachment to the writer's index area.
 *
 * The index lives in a DSA area that the writer creates afresh at each
 * start (it is derived data, rebuilt from the segments).  The area is
 * pinned so that it survives its creator; the next writer unpins the old
 * one under the control lock, after which it disappears when the last
 * backend still mapping it detaches.  Backends compare the incarnation
 * number with the one they attached to at every call, so nobody keeps using
 * an index that no longer describes the store.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/memutils.h"

#include "batpak.h"

BatpakControl *BatpakCtl = NULL;

static BatpakIndex batpak_my_index;
static bool batpak_my_index_valid = false;

static int
batpak_num_slots(void)
{
	/* every PGPROC has a pgprocno below this bound (see InitProcGlobal) */
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
batpak_shmem_size(void)
{
	return add_size(offsetof(BatpakControl, slots),
					mul_size(batpak_num_slots(), sizeof(BatpakSlot)));
}

void
batpak_shmem_request(void)
{
	RequestAddinShmemSpace(batpak_shmem_size());
}

void
batpak_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	BatpakCtl = ShmemInitStruct("batpak control", batpak_shmem_size(), &found);
	if (!found)
	{
		int			i;

		memset(BatpakCtl, 0, batpak_shmem_size());
		BatpakCtl->tranche_id = LWLockNewTrancheId();
		LWLockInitialize(&BatpakCtl->lock, BatpakCtl->tranche_id);
		pg_atomic_init_u32(&BatpakCtl->state, BATPAK_STATE_STOPPED);
		pg_atomic_init_u32(&BatpakCtl->incarnation, 0);
		ConditionVariableInit(&BatpakCtl->state_cv);
		BatpakCtl->dsa = DSM_HANDLE_INVALID;
		pg_atomic_init_u64(&BatpakCtl->written_seq, 0);
		pg_atomic_init_u64(&BatpakCtl->durable_seq, 0);
		pg_atomic_init_u64(&BatpakCtl->visible_seq, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.requests, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.requests_failed, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.events_written, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.idempotent_hits, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.groups, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.fsyncs, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.bytes_written, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.transactions_committed, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.transactions_aborted, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.events_discarded, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.notifications, 0);
		pg_atomic_init_u64(&BatpakCtl->counters.notifications_failed, 0);
		ConditionVariableInit(&BatpakCtl->publish_cv);
		BatpakCtl->notifier_latch = NULL;
		pg_atomic_init_u64(&BatpakCtl->ready_seq, 0);
		pg_atomic_init_u64(&BatpakCtl->notified_seq, 0);
		pg_atomic_init_u64(&BatpakCtl->pending_transactions, 0);
		pg_atomic_init_u64(&BatpakCtl->pending_events, 0);
		pg_atomic_init_u64(&BatpakCtl->index_bytes, 0);
		pg_atomic_init_u64(&BatpakCtl->entities, 0);
		pg_atomic_init_u64(&BatpakCtl->store_bytes, 0);
		pg_atomic_init_u32(&BatpakCtl->segments, 0);
		pg_atomic_init_u32(&BatpakCtl->truncations, 0);
		BatpakCtl->nslots = batpak_num_slots();
		for (i = 0; i < BatpakCtl->nslots; i++)
		{
			pg_atomic_init_u32(&BatpakCtl->slots[i].state, BATPAK_SLOT_IDLE);
			BatpakCtl->slots[i].request = InvalidDsaPointer;
			pg_atomic_init_u64(&BatpakCtl->slots[i].resolve_gen, 0);
			pg_atomic_init_u64(&BatpakCtl->slots[i].resolve_begin, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(BatpakCtl->tranche_id, "batpak");
}

/*
 * Called by every SQL entry point: a library loaded without preloading has
 * already failed in _PG_init, but a session can still reach the functions
 * of an extension created while the library was preloaded and then removed.
 */
void
batpak_check_loaded(void)
{
	if (!batpak_loaded || BatpakCtl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batpak is not loaded via shared_preload_libraries"),
				 errhint("Add batpak to the shared_preload_libraries configuration variable in postgresql.conf and restart the server.")));
}

const char *
batpak_state_name(BatpakState state)
{
	switch (state)
	{
		case BATPAK_STATE_STOPPED:
			return "stopped";
		case BATPAK_STATE_STARTING:
			return "starting";
		case BATPAK_STATE_RECOVERING:
			return "recovering";
		case BATPAK_STATE_READY:
			return "ready";
		case BATPAK_STATE_FAILED:
			return "failed";
	}
	return "unknown";
}

void
batpak_set_state(BatpakState state)
{
	pg_atomic_write_u32(&BatpakCtl->state, state);
	ConditionVariableBroadcast(&BatpakCtl->state_cv);
}

void
batpak_report_failed(void)
{
	char		failure[sizeof(BatpakCtl->failure)];

	LWLockAcquire(&BatpakCtl->lock, LW_SHARED);
	strlcpy(failure, BatpakCtl->failure, sizeof(failure));
	LWLockRelease(&BatpakCtl->lock);

	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("batpak store is unavailable: %s", failure),
			 errhint("The writer refuses to serve until the damaged segment is repaired or restored; see the server log.")));
}

/*
 * Wait until the writer is ready, failed, or the deadline passes.  Returns
 * true when the state is ready.  The writer broadcasts the condition variable
 * at each state change, including its exit, so this sleeps without polling.
 */
bool
batpak_wait_for_ready(TimestampTz deadline)
{
	bool		ready = false;

	for (;;)
	{
		uint32		state = pg_atomic_read_u32(&BatpakCtl->state);
		long		remaining;

		if (state == BATPAK_STATE_READY)
		{
			ready = true;
			break;
		}
		if (state == BATPAK_STATE_FAILED)
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		ConditionVariableTimedSleep(&BatpakCtl->state_cv, remaining,
									PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return ready;
}

void
batpak_dshash_params(int which, dshash_parameters *params)
{
	memset(params, 0, sizeof(*params));
	params->compare_function = dshash_memcmp;
	params->hash_function = dshash_memhash;
	params->tranche_id = BatpakCtl->tranche_id;
	switch (which)
	{
		case BATPAK_TABLE_STREAMS:
			params->key_size = BATPAK_KEY_LEN;
			params->entry_size = sizeof(BatpakStream);
			break;
		case BATPAK_TABLE_IDEM:
			params->key_size = BATPAK_KEY_LEN;
			params->entry_size = sizeof(BatpakIdemEntry);
			break;
		case BATPAK_TABLE_CORR:
			params->key_size = sizeof(pg_uuid_t);
			params->entry_size = sizeof(BatpakCorrEntry);
			break;
		default:
			elog(ERROR, "unknown batpak table %d", which);
	}
}

static void
batpak_detach_index(void)
{
	if (!batpak_my_index_valid)
		return;
	/* our request buffer lives in this area: give it back first */
	batpak_release_request_buffer();
	dshash_detach(batpak_my_index.streams);
	dshash_detach(batpak_my_index.idem);
	dshash_detach(batpak_my_index.corr);
	dsa_detach(batpak_my_index.area);
	memset(&batpak_my_index, 0, sizeof(batpak_my_index));
	batpak_my_index_valid = false;
}

/*
 * On a hot standby the writer never starts (it waits for the end of
 * recovery), so "not ready, retry shortly" would be untrue: say what it is.
 * (Backends cannot connect during crash recovery, and a promoted standby is
 * out of recovery, so this fires on standbys only.)
 */
void
batpak_check_not_standby(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("batpak events cannot be read on a standby server"),
				 errdetail("The segment files and the writer's index exist on the primary only."),
				 errhint("Read from the primary.")));
}

/*
 * Return this backend's view of the current index, attaching (again) when
 * the writer has restarted since the last call.  With require_ready, a store
 * that is not serving raises the matching error; the writer must be ready
 * (or failed, which raises) before an index exists at all.
 */
BatpakIndex *
batpak_attach_index(bool require_ready)
{
	uint32		state;
	uint32		incarnation;
	dshash_parameters params;

	batpak_check_loaded();

	state = pg_atomic_read_u32(&BatpakCtl->state);
	if (state == BATPAK_STATE_FAILED)
		batpak_report_failed();
	if (state != BATPAK_STATE_READY)
	{
		if (!require_ready)
			return NULL;

		batpak_check_not_standby();
		ereport(ERROR,
				(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
				 errmsg("batpak writer is not ready (state: %s)",
						batpak_state_name(state)),
				 errhint("The writer rebuilds its index at start-up; retry shortly, and check the server log if it does not become ready.")));
	}

	incarnation = pg_atomic_read_u32(&BatpakCtl->incarnation);
	if (batpak_my_index_valid && batpak_my_index.incarnation == incarnation)
		return &batpak_my_index;

	batpak_detach_index();
	/* a restarted writer may have cut a torn tail: map segments afresh */
	batpak_unmap_all();

	/*
	 * Attach under the control lock: the writer unpins an old area and
	 * publishes a new handle while holding it exclusively, so the handle we
	 * read here cannot be freed before our attachment holds it.
	 */
	LWLockAcquire(&BatpakCtl->lock, LW_SHARED);
	state = pg_atomic_read_u32(&BatpakCtl->state);
	if (state != BATPAK_STATE_READY || BatpakCtl->dsa == DSM_HANDLE_INVALID)
	{
		LWLockRelease(&BatpakCtl->lock);
		if (state == BATPAK_STATE_FAILED)
			batpak_report_failed();
		if (!require_ready)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
				 errmsg("batpak writer is not ready (state: %s)",
						batpak_state_name(state))));
	}
	PG_TRY();
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		batpak_my_index.area = dsa_attach(BatpakCtl->dsa);
		dsa_pin_mapping(batpak_my_index.area);
		batpak_dshash_params(BATPAK_TABLE_STREAMS, &params);
		batpak_my_index.streams = dshash_attach(batpak_my_index.area, &params,
												BatpakCtl->streams_handle, NULL);
		batpak_dshash_params(BATPAK_TABLE_IDEM, &params);
		batpak_my_index.idem = dshash_attach(batpak_my_index.area, &params,
											 BatpakCtl->idem_handle, NULL);
		batpak_dshash_params(BATPAK_TABLE_CORR, &params);
		batpak_my_index.corr = dshash_attach(batpak_my_index.area, &params,
											 BatpakCtl->corr_handle, NULL);
		batpak_my_index.seqdir = dsa_get_address(batpak_my_index.area,
												 BatpakCtl->seqdir);
		batpak_my_index.incarnation = pg_atomic_read_u32(&BatpakCtl->incarnation);
		MemoryContextSwitchTo(oldcxt);
	}
	PG_FINALLY();
	{
		LWLockRelease(&BatpakCtl->lock);
	}
	PG_END_TRY();
	batpak_my_index_valid = true;
	return &batpak_my_index;
}

/*
 * The index and the frontiers to read with, consistent with each other:
 * the frontiers are global, the index belongs to one writer incarnation.  A
 * new writer bumps the incarnation before it touches the frontiers, so
 * frontiers read before an unchanged incarnation (with a barrier between)
 * were set by the writer of the index we hold.  *frontier is the visible
 * frontier (read_all's limit), *published the last global sequence entered
 * in the index (pending and rolled-back events included).
 */
BatpakIndex *
batpak_read_snapshot(uint64 *frontier, uint64 *published)
{
	return batpak_read_snapshot_ex(frontier, published, NULL, true);
}

/*
 * The same, also with *durable (if not NULL), the durable frontier of the
 * index's writer: what lies at or below it that writer never discards, nor
 * does its successor write there again, so it can be read through this
 * index whatever happens to the writer after.  Without require_ready, NULL
 * when the writer is not ready (it may stop between a caller's look at the
 * state and this); a failed store still raises.
 */
BatpakIndex *
batpak_read_snapshot_ex(uint64 *frontier, uint64 *published, uint64 *durable,
						bool require_ready)
{
	for (;;)
	{
		BatpakIndex *idx = batpak_attach_index(require_ready);

		if (idx == NULL)
			return NULL;
		*frontier = pg_atomic_read_u64(&BatpakCtl->visible_seq);
		if (published != NULL)
			*published = pg_atomic_read_u64(&BatpakCtl->written_seq);
		if (durable != NULL)
			*durable = pg_atomic_read_u64(&BatpakCtl->durable_seq);
		pg_read_barrier();
		if (pg_atomic_read_u32(&BatpakCtl->incarnation) == idx->incarnation)
			return idx;
		CHECK_FOR_INTERRUPTS();
	}
}
