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
 * keeps the events pending (see writer.c).
 *
 * Who decides what a reader sees: the clog, exactly as for heap tuples.  A
 * pending event is visible to another session once TransactionIdDidCommit
 * says its (sub)transaction committed (after TransactionIdIsInProgress says
 * it has ended), to its own transaction while its subtransaction has not
 * rolled back, and never after a rollback (batpak_pending_visible).  So
 * COMMIT does not wait for the writer: when it returns, the clog says
 * committed and every session sees the events.  The writer settles pending
 * events in the index later (commit: clear the flag; rollback: hide the
 * events and cut the streams back for the entity sequences to be used
 * again) and records the outcome in a marker frame, so that the segments
 * alone say what happened after the clog is truncated.
 *
 * At the end of the transaction (XACT_EVENT_COMMIT / XACT_EVENT_ABORT) and
 * at the rollback of a subtransaction we announce the top-level xid in our
 * slot and set the writer's latch, without waiting: the callbacks run with
 * interrupts held and must not fail, and nothing depends on the writer
 * being quick.  Ordering makes a lost announcement harmless:
 *	- a later announcement of ours normally replaces an earlier one only
 *	  after we appended again in between (a transaction without batpak
 *	  appends does not announce), and the writer collects announcements
 *	  after the requests of each group, so it has seen the earlier one by
 *	  then; when an append failed before reaching the writer, or was
 *	  abandoned and we announce again while the writer reads our slot (it
 *	  then leaves the slot for its next look, see writer_collect_resolves),
 *	  an end may go unannounced, and the next two rules cover it;
 *	- a savepoint's rollback is announced before our next append of the
 *	  same transaction is submitted, so the writer cuts the streams back
 *	  before it builds that append;
 *	- another transaction that wants one of our entities waits for our xid
 *	  and its next request makes the writer settle us from the clog
 *	  (BUILD_RESOLVE in writer.c); a once-a-second sweep settles the rest.
 *
 * An xid stored in a segment must never be handed out again: after a crash,
 * PostgreSQL sets its next xid past the xids it finds in the WAL (and in
 * the last checkpoint), so an xid that was assigned but never logged before
 * the crash can be reused by a new transaction, whose commit would then
 * wrongly commit our pending events.  So the first append of each
 * (sub)transaction writes a tiny WAL record (a transactional logical
 * message, prefix "batpak.xid") carrying the xid, and the writer flushes
 * the WAL up to it (xid_lsn in the request) before it writes the frames:
 * it never writes a frame with an xid whose record could still be lost.
 * By then the concurrent commits of other backends have usually flushed it
 * already (measured slightly faster than flushing here, before submitting).
 * A subtransaction's xid is greater than its parents', so its record
 * covers them too.
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
#include "storage/procarray.h"

#include "batpak.h"

/* The top-level transaction that appended in transactional mode, or 0 */
static uint64 batpak_pending_top = 0;
static bool batpak_callbacks_registered = false;

/* The last (sub)xid whose WAL record we wrote, and where the record ends */
static uint64 batpak_logged_xid = 0;	/* full xid: a 32-bit one recurs */
static XLogRecPtr batpak_logged_lsn = InvalidXLogRecPtr;

uint64
batpak_my_top_xid(void)
{
	FullTransactionId top = GetTopFullTransactionIdIfAny();

	return FullTransactionIdIsValid(top) ? U64FromFullTransactionId(top) : 0;
}

/*
 * May this session see an event whose index position says PENDING (f is
 * its frame)?  Its own transaction's events while their subtransaction is
 * alive or committed; another transaction's once it has committed.
 * *in_progress tells read_all's frontier that the outcome is not known yet.
 */
bool
batpak_pending_visible(const BatpakFrame *f, bool *in_progress)
{
	TransactionId xid = XidFromFullTransactionId(FullTransactionIdFromU64(f->xid));

	*in_progress = false;
	if (f->top_xid == batpak_my_top_xid())
	{
		/*
		 * Ours: visible to us, and still to be committed, unless its
		 * subtransaction rolled back (then it never will be).
		 */
		*in_progress = TransactionIdIsCurrentTransactionId(xid);
		return *in_progress;
	}
	if (TransactionIdIsInProgress(xid))
	{
		*in_progress = true;
		return false;
	}
	return TransactionIdDidCommit(xid);
}

/*
 * Announce the end of (a subtransaction of) transaction top to the writer.
 * Never raises an error: called from transaction callbacks.
 */
static void
batpak_announce_end(uint64 top, XLogRecPtr lsn)
{
	BatpakSlot *slot;
	Latch	   *writer_latch;

	if (BatpakCtl == NULL || MyProc == NULL)
		return;
	slot = &BatpakCtl->slots[MyProc->pgprocno];
	/* a full barrier: the writer sees the bump before any of the stores */
	pg_atomic_fetch_add_u64(&slot->resolve_begin, 1);
	slot->resolve_top = top;
	slot->resolve_lsn = lsn;
	pg_write_barrier();
	pg_atomic_fetch_add_u64(&slot->resolve_gen, 1);
	writer_latch = BatpakCtl->writer_latch;
	if (writer_latch != NULL)
		SetLatch(writer_latch);
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
			batpak_announce_end(batpak_pending_top, XactLastCommitEnd);
			batpak_pending_top = 0;
			break;
		case XACT_EVENT_ABORT:
			batpak_announce_end(batpak_pending_top, InvalidXLogRecPtr);
			batpak_pending_top = 0;
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
		batpak_announce_end(batpak_pending_top, InvalidXLogRecPtr);
}

/*
 * Fill in the transaction fields of a request about to be submitted: in
 * transactional mode, assign the xids and remember to announce the end.
 */
void
batpak_xact_prepare_request(BatpakRequest *req, bool transactional)
{
	if (transactional)
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
		if (req->xid != batpak_logged_xid)
		{
			batpak_logged_lsn = LogLogicalMessage("batpak.xid", "", 0, true);
			batpak_logged_xid = req->xid;
		}
		req->xid_lsn = batpak_logged_lsn;
		req->max_txn_events = (uint64) batpak_max_transaction_events;
		batpak_pending_top = req->top_xid;
	}
	else
	{
		req->top_xid = 0;
		req->xid = 0;
		req->xid_lsn = 0;
		req->max_txn_events = 0;
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
