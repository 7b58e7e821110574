/*-------------------------------------------------------------------------
 *
 * submit.c
 *	  The backend side of the submission queue: hand a request to the writer
 *	  through this backend's slot and wait for the reply on our latch.
 *
 * A request is built in place in this backend's buffer in the writer's
 * DSA area (kept from one request to the next), and announced by moving the
 * slot to SUBMITTED and setting the writer's latch.  The writer scans the
 * slots, so there is no separate list to keep consistent; it writes the
 * receipts into the same buffer.
 *
 * The wait must end, whatever happens: the writer replies (DONE), the writer
 * exits (its exit hook sets every waiting backend's latch and the state to
 * stopped), a new writer starts (the incarnation changes), the query is
 * cancelled, or batpak.writer_timeout passes.  A request the writer never
 * took is known not to be written, and is resubmitted to a restarted writer
 * within the timeout.  A request the writer took but did not answer has an
 * unknown outcome in immediate mode, and we say so (BP004); in transactional
 * mode the error's rollback settles it (batpak_wait_reply).  The slot is
 * then ABANDONED and the writer frees the request instead of replying, so a
 * late reply can never be mistaken for the answer to a later request of
 * this backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"

#include "batpak.h"

typedef enum BatpakWaitResult
{
	BATPAK_WAIT_DONE,
	BATPAK_WAIT_RESUBMIT		/* writer went away before taking it */
} BatpakWaitResult;

static uint64 batpak_request_counter = 0;
static bool batpak_exit_hook_registered = false;

/*
 * This backend's request buffer in the writer's DSA area.  It is kept from
 * one request to the next: allocating and freeing a large chunk per call
 * makes the DSA create and destroy a shared memory segment each time.  The
 * writer never frees it, except after we abandoned it (then we forget it);
 * we free it at backend exit.  It belongs to one index incarnation.
 */
static dsa_area *batpak_buf_area = NULL;
static dsa_pointer batpak_buf_dp = InvalidDsaPointer;
static Size batpak_buf_size = 0;
static uint32 batpak_buf_incarnation = 0;	/* the writer the area belongs to */

#define BATPAK_MIN_REQUEST_BUFFER	8192
#define BATPAK_MAX_KEPT_BUFFER		(1024 * 1024)


static BatpakSlot *
batpak_my_slot(void)
{
	return &BatpakCtl->slots[MyProc->pgprocno];
}

static bool
batpak_writer_gone(BatpakSlot *slot)
{
	return pg_atomic_read_u32(&BatpakCtl->incarnation) != slot->incarnation ||
		pg_atomic_read_u32(&BatpakCtl->state) == BATPAK_STATE_STOPPED;
}

/* The writer took over the buffer (to free it): forget it */
static void
batpak_forget_buffer(void)
{
	batpak_buf_area = NULL;
	batpak_buf_dp = InvalidDsaPointer;
	batpak_buf_size = 0;
}

/*
 * Called by shmem.c before it detaches from an index area: free our buffer
 * there while the area is still mapped, unless the writer owns it (our last
 * request was abandoned) or it is in use.
 */
void
batpak_release_request_buffer(void)
{
	BatpakSlot *slot;

	if (!DsaPointerIsValid(batpak_buf_dp) || BatpakCtl == NULL || MyProc == NULL)
	{
		batpak_forget_buffer();
		return;
	}
	slot = batpak_my_slot();
	if (pg_atomic_read_u32(&slot->state) == BATPAK_SLOT_IDLE)
		dsa_free(batpak_buf_area, batpak_buf_dp);
	batpak_forget_buffer();
}

/*
 * The caller is done with the request's receipts.  A buffer much larger than
 * usual (a big batch) is given back instead of being kept, so that a few
 * sessions cannot hold large parts of the writer's area between requests.
 */
void
batpak_request_done(void)
{
	if (batpak_buf_size > BATPAK_MAX_KEPT_BUFFER)
		batpak_release_request_buffer();
}

/* A buffer of at least size bytes in the current index area */
static dsa_pointer
batpak_get_buffer(BatpakIndex *idx, Size size)
{
	/*
	 * The buffer belongs to the area of the incarnation that allocated it
	 * (area pointers cannot tell: a new attachment may reuse the address).
	 * batpak_release_request_buffer() runs before every detach, so a buffer
	 * of another incarnation is not expected here; forget it if it is.
	 */
	if (DsaPointerIsValid(batpak_buf_dp) && batpak_buf_incarnation != idx->incarnation)
		batpak_forget_buffer();
	if (DsaPointerIsValid(batpak_buf_dp) && batpak_buf_size >= size)
		return batpak_buf_dp;
	if (DsaPointerIsValid(batpak_buf_dp))
		dsa_free(batpak_buf_area, batpak_buf_dp);
	batpak_forget_buffer();
	size = Max(size, BATPAK_MIN_REQUEST_BUFFER);
	batpak_buf_dp = dsa_allocate_extended(idx->area, size,
										  DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (!DsaPointerIsValid(batpak_buf_dp))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of shared memory for a batpak request of %zu bytes",
						size)));
	batpak_buf_area = idx->area;
	batpak_buf_size = size;
	batpak_buf_incarnation = idx->incarnation;
	return batpak_buf_dp;
}

/*
 * Give up on the request in our slot.  Returns the slot state that we found:
 * SUBMITTED (never taken: not written), PROCESSING (taken: unknown outcome)
 * or DONE (answered: the caller may still use the reply).
 */
static uint32
batpak_abandon(BatpakSlot *slot)
{
	uint32		expected = BATPAK_SLOT_SUBMITTED;

	if (pg_atomic_compare_exchange_u32(&slot->state, &expected, BATPAK_SLOT_IDLE))
		return BATPAK_SLOT_SUBMITTED;
	if (expected == BATPAK_SLOT_PROCESSING)
	{
		if (batpak_writer_gone(slot))
		{
			/* nobody will touch it again: the writer that took it is gone */
			pg_atomic_write_u32(&slot->state, BATPAK_SLOT_IDLE);
			return BATPAK_SLOT_PROCESSING;
		}
		if (pg_atomic_compare_exchange_u32(&slot->state, &expected,
										   BATPAK_SLOT_ABANDONED))
		{
			/* the writer frees the request when it is done with it */
			batpak_forget_buffer();
			return BATPAK_SLOT_PROCESSING;
		}
	}
	/* DONE (possibly just now): we own the slot again */
	if (expected != BATPAK_SLOT_DONE)
		elog(ERROR, "batpak submission slot in unexpected state %u", expected);
	return BATPAK_SLOT_DONE;
}

static void
batpak_exit_hook(int code, Datum arg)
{
	BatpakSlot *slot;
	uint32		state;

	if (BatpakCtl == NULL || MyProc == NULL)
		return;
	slot = batpak_my_slot();
	state = pg_atomic_read_u32(&slot->state);
	if (state != BATPAK_SLOT_IDLE && state != BATPAK_SLOT_ABANDONED &&
		batpak_abandon(slot) == BATPAK_SLOT_DONE)
		pg_atomic_write_u32(&slot->state, BATPAK_SLOT_IDLE);

	/*
	 * Give the buffer back (the area is still mapped: before_shmem_exit
	 * callbacks run before DSM detach), unless the writer owns it now.  A
	 * buffer is only ever held in the area we are attached to.
	 */
	batpak_release_request_buffer();
}

/* Wait until our slot is free again after an earlier abandoned request */
static void
batpak_wait_slot_idle(BatpakSlot *slot, TimestampTz deadline)
{
	for (;;)
	{
		uint32		state = pg_atomic_read_u32(&slot->state);
		long		remaining;

		if (state == BATPAK_SLOT_IDLE)
			return;
		if (state == BATPAK_SLOT_ABANDONED && batpak_writer_gone(slot))
		{
			pg_atomic_write_u32(&slot->state, BATPAK_SLOT_IDLE);
			return;
		}
		if (state != BATPAK_SLOT_ABANDONED)
			elog(ERROR, "batpak submission slot in unexpected state %u", state);
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
					 errmsg("batpak writer did not finish an earlier append of this session within batpak.writer_timeout")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 remaining, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* The reply is in the request, in our buffer: the slot is ours again */
static void
batpak_take_reply(BatpakSlot *slot)
{
	pg_atomic_write_u32(&slot->state, BATPAK_SLOT_IDLE);
}

/*
 * Wait for the writer's answer to our request.  When the writer went away
 * or the deadline passed after the writer took the request, its outcome is
 * unknown in immediate mode (BP004).  In transactional mode it is known:
 * whatever the writer wrote is pending under our (sub)transaction's xid,
 * and the error we raise aborts that (sub)transaction before it can
 * commit, so the events never become visible (the writer, or recovery,
 * settles them as rolled back): that is BP003, not written as far as
 * anyone will ever see.
 */
static BatpakWaitResult
batpak_wait_reply(BatpakSlot *slot, TimestampTz deadline, bool transactional)
{
	for (;;)
	{
		uint32		state = pg_atomic_read_u32(&slot->state);
		long		remaining;

		if (state == BATPAK_SLOT_DONE)
		{
			/*
			 * The fault cancel_after_answer (tests only): a cancel that
			 * arrives now, after the answer and before we took it.
			 */
			if (unlikely(batpak_inject_fault == BATPAK_FAULT_CANCEL_AFTER_ANSWER))
			{
				QueryCancelPending = true;
				InterruptPending = true;
				CHECK_FOR_INTERRUPTS();
			}
			/* the reply was written before DONE: read it after seeing DONE */
			pg_read_barrier();
			batpak_take_reply(slot);
			return BATPAK_WAIT_DONE;
		}
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (batpak_writer_gone(slot) || remaining <= 0)
		{
			switch (batpak_abandon(slot))
			{
				case BATPAK_SLOT_DONE:
					continue;
				case BATPAK_SLOT_SUBMITTED:
					if (remaining > 0)
						return BATPAK_WAIT_RESUBMIT;
					ereport(ERROR,
							(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
							 errmsg("batpak writer did not take the append within batpak.writer_timeout (%d ms)",
									batpak_writer_timeout_ms),
							 errdetail("Nothing was written."),
							 errhint("Check that the batpak writer is running; see the server log.")));
					break;
				default:
					if (transactional)
						ereport(ERROR,
								(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
								 errmsg("%s",
										remaining <= 0 ? "batpak writer did not answer the append within batpak.writer_timeout" :
										"batpak writer stopped while writing the append"),
								 errdetail("The writer had taken the append; the rollback that follows discards whatever it wrote for this call, which never becomes visible."),
								 errhint("Check that the batpak writer is running; see the server log.")));
					ereport(ERROR,
							(errcode(ERRCODE_BATPAK_OUTCOME_UNKNOWN),
							 errmsg("outcome of the append is unknown: %s",
									remaining <= 0 ? "the writer did not answer within batpak.writer_timeout" :
									"the writer stopped while writing it"),
							 errhint("Retry with the same idempotency key, or look the event up, to learn whether it was written.")));
			}
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 remaining, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* deadline of the request being built and submitted */
static TimestampTz batpak_deadline;

/*
 * Wait until the writer is ready and our slot idle, and return our request
 * buffer, of at least total bytes, in the current index area.
 */
static BatpakRequest *
batpak_prepare_buffer(Size total)
{
	BatpakIndex *idx;
	dsa_pointer dp;

	if (!batpak_wait_for_ready(batpak_deadline))
	{
		uint32		state = pg_atomic_read_u32(&BatpakCtl->state);
		char		io_error[sizeof(BatpakCtl->io_error)];
		int			io_error_code;

		if (state == BATPAK_STATE_FAILED)
			batpak_report_failed();

		/* a writer that keeps failing its I/O (a full disk): say so */
		LWLockAcquire(&BatpakCtl->lock, LW_SHARED);
		io_error_code = BatpakCtl->io_error_code;
		strlcpy(io_error, BatpakCtl->io_error, sizeof(io_error));
		LWLockRelease(&BatpakCtl->lock);
		if (io_error_code != 0)
			ereport(ERROR,
					(errcode(io_error_code),
					 errmsg("batpak writer is not available: it stopped after an I/O error: %s",
							io_error),
					 errdetail("Waited %d ms (batpak.writer_timeout) for a writer to recover; nothing was written.",
							   batpak_writer_timeout_ms),
					 errhint("The writer restarts and recovers by itself once it can write again (free space on the data directory's file system); see the server log.")));
		ereport(ERROR,
				(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
				 errmsg("batpak writer is not available (state: %s)",
						batpak_state_name(state)),
				 errdetail("Waited %d ms (batpak.writer_timeout); nothing was written.",
						   batpak_writer_timeout_ms),
				 errhint("Check that batpak is in shared_preload_libraries and see the server log for the writer's messages.")));
	}
	idx = batpak_attach_index(true);
	batpak_wait_slot_idle(batpak_my_slot(), batpak_deadline);
	dp = batpak_get_buffer(idx, total);
	return (BatpakRequest *) dsa_get_address(idx->area, dp);
}

/*
 * Start a request with room for the events and the receipts.  It is built
 * in place in this backend's buffer in the writer's DSA area, so neither the
 * events nor the receipts are copied; an error while building it leaves
 * only garbage in a buffer that the next request overwrites.  The request
 * is valid until the next one is created.
 */
BatpakRequest *
batpak_request_create(uint32 nevents, Size events_size, bool transactional,
					  bool synchronous)
{
	Size		receipts_off = MAXALIGN(offsetof(BatpakRequest, events) + events_size);
	Size		total = receipts_off + (Size) nevents * sizeof(BatpakReceipt);
	BatpakRequest *req;

	if (total > BATPAK_MAX_REQUEST_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("append request is too large"),
				 errdetail("The request needs %zu bytes; the limit is %zu.",
						   total, BATPAK_MAX_REQUEST_SIZE)));
	if (!batpak_exit_hook_registered)
	{
		before_shmem_exit(batpak_exit_hook, (Datum) 0);
		batpak_exit_hook_registered = true;
	}
	batpak_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  batpak_writer_timeout_ms);
	req = batpak_prepare_buffer(total);
	memset(req, 0, offsetof(BatpakRequest, events));
	req->nevents = nevents;
	req->total_size = total;
	req->receipts_off = receipts_off;
	req->synchronous = synchronous;
	/* superuser-only, see batpak.c; two are the session's own */
	req->fault = (batpak_inject_fault == BATPAK_FAULT_READ_PAUSE ||
				  batpak_inject_fault == BATPAK_FAULT_CANCEL_AFTER_ANSWER) ?
		BATPAK_FAULT_NONE : batpak_inject_fault;
	batpak_xact_prepare_request(req, transactional);
	return req;
}

/*
 * Submit req (from batpak_request_create) to the writer and wait for its
 * reply.  Returns the request, which then holds the receipts (it moves if a
 * restarted writer needs it in its new area); a refusal by the writer is
 * raised as the error it sent.  keep_interrupt: an interruption after the
 * writer took an immediate request is raised with its own SQLSTATE (the
 * outcome, unknown, in the detail) rather than as BP004, for a caller that
 * catches the errors of its append but must not swallow a cancel (the
 * denial record, gates.c).
 */
BatpakRequest *
batpak_submit_and_wait(BatpakRequest *req, bool keep_interrupt)
{
	BatpakSlot *slot = batpak_my_slot();
	volatile BatpakWaitResult result = BATPAK_WAIT_DONE;
	MemoryContext callercxt = CurrentMemoryContext;

	/*
	 * Read now: once we abandon a request the writer took, the writer frees
	 * it, and req must not be touched again.
	 */
	bool		transactional = (req->top_xid != 0);

	for (;;)
	{
		uint32		expected = BATPAK_SLOT_IDLE;
		Latch	   *writer_latch;

		Assert((char *) req == (char *) dsa_get_address(batpak_buf_area, batpak_buf_dp));

		slot->request = batpak_buf_dp;
		/*
		 * The incarnation of the area that holds the request: a writer
		 * started since then ignores it and makes us resubmit.
		 */
		slot->incarnation = batpak_buf_incarnation;
		slot->request_id = ++batpak_request_counter;
		slot->latch = MyLatch;
		if (!pg_atomic_compare_exchange_u32(&slot->state, &expected,
											BATPAK_SLOT_SUBMITTED))
			elog(ERROR, "batpak submission slot in unexpected state %u", expected);
		writer_latch = BatpakCtl->writer_latch;
		if (writer_latch != NULL)
			SetLatch(writer_latch);

		PG_TRY();
		{
			result = batpak_wait_reply(slot, batpak_deadline, transactional);
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			uint32		st = pg_atomic_read_u32(&slot->state);

			/* our own errors above leave the slot settled: pass them on */
			if (st == BATPAK_SLOT_IDLE || st == BATPAK_SLOT_ABANDONED)
				PG_RE_THROW();

			/*
			 * Interrupted (cancel, statement timeout) with the request still
			 * out: withdraw it.  If the writer had already taken it, the
			 * caller must learn that the outcome is unknown; in
			 * transactional mode it is known (see batpak_wait_reply).
			 */
			MemoryContextSwitchTo(callercxt);
			edata = CopyErrorData();
			switch (batpak_abandon(slot))
			{
				case BATPAK_SLOT_DONE:
					pg_read_barrier();
					batpak_take_reply(slot);

					/*
					 * The writer answered before the interrupt took effect.
					 * The cancel (or statement_timeout) still ends the
					 * statement: returning the receipts and dropping it let
					 * a statement of many appends run on unbounded.  But
					 * the events are written: say so, so that the caller
					 * does not append them again.  In transactional mode
					 * this error rolls back the (sub)transaction that
					 * appended them, so they never become visible.
					 */
					if (req->status == BATPAK_REPLY_OK &&
						edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
					{
						FlushErrorState();
						if (transactional)
							ereport(ERROR,
									(errcode(ERRCODE_QUERY_CANCELED),
									 errmsg("%s", edata->message),
									 errdetail("The writer had answered the append when the cancel took effect; the rollback that follows discards whatever it wrote for this call.")));
						ereport(ERROR,
								(errcode(ERRCODE_QUERY_CANCELED),
								 errmsg("%s", edata->message),
								 errdetail("The append had completed when the cancel took effect: its %u event(s) are in the store (the first receipt names global sequence " UINT64_FORMAT ").",
										   req->nevents, BATPAK_REQ_RECEIPTS(req)[0].global_seq),
								 errhint("Retry with the same idempotency key to get the receipts; without one, a retry appends again.")));
					}
					PG_RE_THROW();
					break;
				case BATPAK_SLOT_SUBMITTED:
					PG_RE_THROW();
					break;
				default:
					FlushErrorState();
					if (transactional)
						ereport(ERROR,
								(errcode(edata->sqlerrcode),
								 errmsg("%s", edata->message),
								 errdetail("The writer had taken the append when the wait was interrupted; the rollback that follows discards whatever it wrote for this call.")));
					if (keep_interrupt)
						ereport(ERROR,
								(errcode(edata->sqlerrcode),
								 errmsg("%s", edata->message),
								 errdetail("The writer had already taken the append when the wait was interrupted; whether it was written is unknown.")));
					ereport(ERROR,
							(errcode(ERRCODE_BATPAK_OUTCOME_UNKNOWN),
							 errmsg("outcome of the append is unknown: %s", edata->message),
							 errdetail("The writer had already taken the append when the wait was interrupted."),
							 errhint("Retry with the same idempotency key, or look the event up, to learn whether it was written.")));
			}
		}
		PG_END_TRY();

		if (result == BATPAK_WAIT_DONE && req->status == BATPAK_REPLY_WAIT)
		{
			/*
			 * Another transaction holds an entity (or key, or causation) of
			 * the request; the writer wrote nothing.  Wait for it to end,
			 * then try again with a fresh deadline.
			 */
			batpak_xact_wait(req->wait_xid);
			batpak_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  batpak_writer_timeout_ms);
			continue;
		}
		if (result == BATPAK_WAIT_DONE)
			break;

		/*
		 * The writer went away before taking the request, so it was not
		 * written: hand it to its successor.  Attaching to the new index
		 * detaches the old area, which holds the request: copy it out first.
		 */
		{
			Size		len = req->receipts_off;
			Size		total = req->total_size;
			char	   *copy = palloc(len);

			memcpy(copy, req, len);
			req = batpak_prepare_buffer(total);
			memcpy(req, copy, len);
			pfree(copy);
		}
	}

	if (req->status != BATPAK_REPLY_OK)
		ereport(ERROR,
				(errcode(req->sqlerrcode),
				 errmsg_internal("%s", req->errmsg),
				 req->errdetail[0] ? errdetail_internal("%s", req->errdetail) : 0));
	return req;
}
