/*-------------------------------------------------------------------------
 *
 * xact.c
 *	  Transactional visibility, the backend's side: the transaction ids a
 *	  request carries, the transaction callbacks that tell the writer when a
 *	  transaction (or subtransaction) that appended has ended, and the wait
 *	  for another transaction that holds an entity.
 *
 * With batpak.transactional on (the default), an append assigns the
 * transaction an xid and sends both the top-level and the current
 * (sub)transaction's full xid; the writer stores them in the frames and
 * keeps the events pending (see writer.c).  At the end of the transaction
 * (XACT_EVENT_COMMIT / XACT_EVENT_ABORT), and at the rollback of a
 * subtransaction, we announce the top-level xid in our slot and wait for
 * the writer to settle it, so that when COMMIT returns every session sees
 * the events, and when ROLLBACK (TO SAVEPOINT) returns the entity sequences
 * are free again.  Both callbacks run after the clog has the outcome and
 * before our locks are released (xact.c in PostgreSQL: RecordTransaction*,
 * ProcArrayEndTransaction, CallXactCallbacks, ResourceOwnerRelease), so a
 * transaction waiting for ours (XactLockTableWait) wakes up only after the
 * writer has settled it.  The writer reads the outcome from the clog, never
 * from us: the announcement is only a wake-up, and the wait is bounded.
 * If the writer is slow or gone, the wait ends at batpak.writer_timeout and
 * the writer settles the transaction later (its once-a-second sweep, or
 * recovery).  The callbacks run with interrupts held and must not fail, so
 * they never raise an error.
 *
 * An xid stored in a segment must never be handed out again: after a crash,
 * PostgreSQL sets its next xid past the xids it finds in the WAL (and in
 * the last checkpoint), so an xid that was assigned but never logged before
 * the crash can be reused by a new transaction, whose commit would then
 * wrongly commit our pending events.  So the first append of each
 * (sub)transaction writes a tiny WAL record (a transactional logical
 * message, prefix "batpak.xid") carrying the xid, and the writer flushes
 * the WAL up to it before it writes the frames (xid_lsn in the request).
 * A subtransaction's xid is greater than its parents', so its record covers
 * them too.
 *
 * PREPARE TRANSACTION is refused when the transaction appended: a prepared
 * transaction would hold its entities across restarts, and the writer could
 * not tell its backend from a finished one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/message.h"
#include "storage/lmgr.h"
#include "storage/proc.h"

#include "batpak.h"

/* The top-level transaction that appended in transactional mode, or 0 */
static uint64 batpak_pending_top = 0;
static bool batpak_callbacks_registered = false;

/* The last (sub)xid whose WAL record we wrote, and where it ends */
static TransactionId batpak_logged_xid = InvalidTransactionId;
static XLogRecPtr batpak_logged_lsn = InvalidXLogRecPtr;

uint64
batpak_my_top_xid(void)
{
	FullTransactionId top = GetTopFullTransactionIdIfAny();

	return FullTransactionIdIsValid(top) ? U64FromFullTransactionId(top) : 0;
}

/*
 * Is this frame one of our own transaction's pending events, appended by a
 * subtransaction that has not rolled back?  (TransactionIdIsCurrentTransactionId
 * knows the subtransactions of ours that are still alive or committed.)
 */
bool
batpak_frame_is_mine(const BatpakFrame *f)
{
	if (f->top_xid == 0 || f->top_xid != batpak_my_top_xid())
		return false;
	return TransactionIdIsCurrentTransactionId(
		XidFromFullTransactionId(FullTransactionIdFromU64(f->xid)));
}

/*
 * Announce the end of (a subtransaction of) transaction top to the writer
 * and wait until it has settled it, at most batpak.writer_timeout.  Never
 * raises an error: called from transaction callbacks.
 *
 * A rollback does not wait when the writer left our last request
 * unanswered (we gave up on it: cancel, timeout): that is how a cancelled
 * append against a stuck writer ends, and the user is owed a prompt
 * answer.  Nothing depends on that wait for correctness: a transaction
 * that wants our entities makes the writer settle us first.
 */
static void
batpak_resolve_and_wait(uint64 top, XLogRecPtr lsn, bool commit)
{
	BatpakSlot *slot;
	Latch	   *writer_latch;
	TimestampTz deadline;

	if (BatpakCtl == NULL || MyProc == NULL)
		return;
	slot = &BatpakCtl->slots[MyProc->pgprocno];
	slot->latch = MyLatch;
	slot->resolve_lsn = lsn;
	pg_write_barrier();
	pg_atomic_write_u64(&slot->resolve_top, top);
	writer_latch = BatpakCtl->writer_latch;
	if (writer_latch != NULL)
		SetLatch(writer_latch);
	if (!commit && batpak_writer_unanswered)
		return;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   batpak_writer_timeout_ms);
	for (;;)
	{
		long		remaining;
		int			rc;

		if (pg_atomic_read_u64(&slot->resolve_top) != top)
			break;
		/* nobody to settle it now: the next writer's recovery will */
		if (pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)
			break;
		remaining = (long) TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   deadline);
		if (remaining <= 0)
		{
			ereport(LOG,
					(errmsg("batpak writer did not confirm the end of transaction " UINT64_FORMAT " within batpak.writer_timeout; it settles it later",
							top)));
			break;
		}
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_POSTMASTER_DEATH,
					   Min(remaining, 1000), PG_WAIT_EXTENSION);
		if (rc & WL_POSTMASTER_DEATH)
			break;
		ResetLatch(MyLatch);
	}
}

static void
batpak_xact_callback(XactEvent event, void *arg)
{
	if (batpak_pending_top == 0)
		return;
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot PREPARE a transaction that has appended batpak events"),
					 errdetail("Events appended with batpak.transactional on are pending until the transaction ends, and a prepared transaction outlives its session."),
					 errhint("Append with batpak.transactional = off, or commit the transaction without two-phase commit.")));
			break;
		case XACT_EVENT_COMMIT:
			{
				uint64		top = batpak_pending_top;

				batpak_pending_top = 0;
				batpak_resolve_and_wait(top, XactLastCommitEnd, true);
			}
			break;
		case XACT_EVENT_ABORT:
			{
				uint64		top = batpak_pending_top;

				batpak_pending_top = 0;
				batpak_resolve_and_wait(top, InvalidXLogRecPtr, false);
			}
			break;
		default:
			break;
	}
}

static void
batpak_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	/* a rolled-back savepoint discards the events appended since */
	if (event == SUBXACT_EVENT_ABORT_SUB && batpak_pending_top != 0 &&
		TransactionIdIsValid(GetCurrentTransactionIdIfAny()))
		batpak_resolve_and_wait(batpak_pending_top, InvalidXLogRecPtr, false);
}

/*
 * Fill in the transaction fields of a request about to be submitted: in
 * transactional mode, assign the xids and remember to announce the end.
 */
void
batpak_xact_prepare_request(BatpakRequest *req)
{
	if (batpak_transactional)
	{
		if (IsInParallelMode())
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
					 errmsg("cannot append batpak events during a parallel operation")));
		if (!batpak_callbacks_registered)
		{
			RegisterXactCallback(batpak_xact_callback, NULL);
			RegisterSubXactCallback(batpak_subxact_callback, NULL);
			batpak_callbacks_registered = true;
		}
		req->top_xid = U64FromFullTransactionId(GetTopFullTransactionId());
		req->xid = U64FromFullTransactionId(GetCurrentFullTransactionId());
		if (GetCurrentTransactionId() != batpak_logged_xid)
		{
			batpak_logged_lsn = LogLogicalMessage("batpak.xid", "", 0, true);
			batpak_logged_xid = GetCurrentTransactionId();
		}
		req->xid_lsn = batpak_logged_lsn;
		batpak_pending_top = req->top_xid;
	}
	else
	{
		req->top_xid = 0;
		req->xid = 0;
		req->xid_lsn = 0;
	}
	req->requester_top = batpak_my_top_xid();
}

/*
 * The writer answered WAIT: another transaction holds what the request
 * needs.  Wait for it in the lock manager, as for a row lock: cancellable,
 * lock_timeout applies, deadlocks are detected.
 */
void
batpak_xact_wait(TransactionId xid)
{
	if (!TransactionIdIsValid(xid) || TransactionIdIsCurrentTransactionId(xid))
		elog(ERROR, "batpak writer asked to wait for transaction %u", xid);
	XactLockTableWait(xid, NULL, NULL, XLTW_None);
}
