/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Waking consumers: the condition variable that cursor_wait sleeps on,
 *	  and the notifier, a background worker that sends NOTIFY batpak when
 *	  the consumer horizon moves.
 *
 * The consumer horizon is the last global sequence a consumer may be told
 * about: min(visible frontier, durable frontier).  Below the visible
 * frontier no event waits for its transaction (see writer.c), so no
 * consumer that pages in global order can skip an event that commits later;
 * below the durable one no event can be lost by a crash, so no cursor
 * position can be committed past an event that a crash takes back (which
 * matters with batpak.synchronous_commit = off).
 *
 * Why a worker of its own and not the writer: sending a notification takes
 * a transaction, an xid and the cluster-wide heavyweight lock that
 * serializes NOTIFY commits (PreCommit_Notify), which any user transaction
 * that NOTIFYs holds through its commit; and it fails when the notification
 * queue is full because a listener lags.  None of that may slow or fail an
 * append, so the writer only sets the notifier's latch (and broadcasts the
 * condition variable) when a frontier moves, and the notifier sends one
 * notification covering everything that became visible since the last one.
 * While it sends, further groups accumulate and are covered by the next
 * notification: at most one notification per published group, fewer under
 * load.  A failed NOTIFY is logged and retried a second later (covering the
 * same range and whatever became visible meanwhile).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "batpak.h"

#define BATPAK_NOTIFY_CHANNEL		"batpak"
#define BATPAK_NOTIFY_RETRY_MS		1000

/*
 * The consumer horizon, see above.  Both frontiers only grow while a
 * writer runs; a reader that races with a writer restart sees 0 and waits.
 */
uint64
batpak_consumer_horizon(void)
{
	uint64		visible = pg_atomic_read_u64(&BatpakCtl->visible_seq);
	uint64		durable = pg_atomic_read_u64(&BatpakCtl->durable_seq);

	return Min(visible, durable);
}

/*
 * Called by the writer after it moved the visible or the durable frontier:
 * wakes the cursor_wait sleepers and the notifier.  Cheap when nobody
 * waits (a spinlock and an empty list).  A stale latch pointer (the
 * notifier just exited and its PGPROC was reused) only causes a spurious
 * wake-up of another process, which every latch user tolerates.
 */
void
batpak_frontiers_moved(void)
{
	Latch	   *latch = BatpakCtl->notifier_latch;

	ConditionVariableBroadcast(&BatpakCtl->publish_cv);
	if (latch != NULL)
		SetLatch(latch);
}

static void
notifier_exit_hook(int code, Datum arg)
{
	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	if (BatpakCtl->notifier_pid == MyProcPid)
	{
		BatpakCtl->notifier_latch = NULL;
		BatpakCtl->notifier_pid = 0;
	}
	LWLockRelease(&BatpakCtl->lock);
}

/*
 * Send NOTIFY batpak for from..to in a transaction of its own.  Returns
 * false (with the error logged) if it failed, e.g. because the queue is
 * full.
 */
static bool
notifier_send(uint64 from, uint64 to, MemoryContext cxt)
{
	char		payload[128];
	volatile bool ok = true;

	snprintf(payload, sizeof(payload),
			 "{\"from_sequence\": " UINT64_FORMAT ", \"to_sequence\": " UINT64_FORMAT "}",
			 from, to);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		if (batpak_inject_fault == BATPAK_FAULT_NOTIFY)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("injected fault: notify")));
		Async_Notify(BATPAK_NOTIFY_CHANNEL, payload);
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("batpak notifier could not notify sequences " UINT64_FORMAT " to " UINT64_FORMAT ": %s",
						from, to, edata->message),
				 errdetail("Appends go on; the next notification covers these sequences.")));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}

void
batpak_notifier_main(Datum main_arg)
{
	MemoryContext cxt;
	uint32		incarnation = 0;
	uint64		last = 0;
	TimestampTz retry_at = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(batpak_database, NULL, 0);
	pgstat_report_appname("batpak notifier");

	/*
	 * Notifications are lossy wake-ups: their transactions need not wait for
	 * their commit records to reach the disk.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	cxt = AllocSetContextCreate(TopMemoryContext, "batpak notifier",
								ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(cxt);

	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	BatpakCtl->notifier_latch = MyLatch;
	BatpakCtl->notifier_pid = MyProcPid;
	LWLockRelease(&BatpakCtl->lock);
	before_shmem_exit(notifier_exit_hook, (Datum) 0);

	for (;;)
	{
		long		timeout = -1;
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

		ResetLatch(MyLatch);

		/*
		 * A query cancel must not stop the notifier (pg_cancel_backend, or a
		 * script cancelling everything in pg_stat_activity): here, between
		 * notifications, there is nothing to cancel, and the ERROR it would
		 * raise made the worker exit.  SIGINT keeps its handler, though: a
		 * cancel during a NOTIFY transaction, and lock_timeout, which
		 * PostgreSQL delivers the same way, still end that transaction
		 * (notifier_send logs a WARNING and the next round retries).
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			proc_exit(1);		/* 1: restart me unless the server is stopping */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)
		{
			/* the writer (re)starts: it sets our latch when it publishes */
			timeout = BATPAK_NOTIFY_RETRY_MS;
			events |= WL_TIMEOUT;
		}
		else
		{
			uint32		inc;
			uint64		horizon;

			pg_read_barrier();	/* the state before what it guards */
			inc = pg_atomic_read_u32(&BatpakCtl->incarnation);

			/*
			 * A new writer: what it recovered was there before; tell about
			 * what it publishes from now on.  A new notifier (the last one
			 * died) goes on where the last one stopped with this writer.
			 */
			if (inc != incarnation)
			{
				incarnation = inc;
				if (BatpakCtl->notified_incarnation == inc)
					last = pg_atomic_read_u64(&BatpakCtl->notified_seq);
				else
				{
					last = pg_atomic_read_u64(&BatpakCtl->ready_seq);
					pg_atomic_write_u64(&BatpakCtl->notified_seq, last);
					BatpakCtl->notified_incarnation = inc;
				}
			}
			horizon = batpak_consumer_horizon();
			if (horizon > last)
			{
				TimestampTz now = GetCurrentTimestamp();

				if (retry_at != 0 && now < retry_at)
				{
					timeout = TimestampDifferenceMilliseconds(now, retry_at) + 1;
					events |= WL_TIMEOUT;
				}
				else if (notifier_send(last + 1, horizon, cxt))
				{
					last = horizon;
					retry_at = 0;
					pg_atomic_write_u64(&BatpakCtl->notified_seq, last);
					BatpakCtl->notified_incarnation = incarnation;
					pg_atomic_fetch_add_u64(&BatpakCtl->counters.notifications, 1);
					/* more may have become visible while we sent */
					SetLatch(MyLatch);
				}
				else
				{
					retry_at = TimestampTzPlusMilliseconds(now, BATPAK_NOTIFY_RETRY_MS);
					pg_atomic_fetch_add_u64(&BatpakCtl->counters.notifications_failed, 1);
					timeout = BATPAK_NOTIFY_RETRY_MS;
					events |= WL_TIMEOUT;
				}
			}
		}
		MemoryContextReset(cxt);
		(void) WaitLatch(MyLatch, events, timeout, PG_WAIT_EXTENSION);
	}
}
