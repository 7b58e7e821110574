/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  The batpak writer: the background worker that alone writes the segment
 *	  files.  It rebuilds the index from the segments at start-up, then
 *	  serves appends in groups: take every submitted request, validate and
 *	  frame them, write the frames, fdatasync once for the whole group,
 *	  publish the events in the index, move the frontiers and reply.
 *
 * Transactions (issue 3, see also xact.c): an event appended inside a
 * transaction is written and synced like any other, then entered in the
 * index as PENDING and kept in this process's table of pending transactions
 * (W.txns).  Readers decide a pending event's visibility from the clog
 * themselves (xact.c).  When the transaction ends, its backend announces it
 * through its slot (resolve_gen); we read the outcome from the commit log
 * (clog), never from the message, then commit the events (clear the flag)
 * or discard them (hide them and cut the streams back), and write a
 * resolution marker frame, so that the segments alone say what happened.
 * Recovery replays the markers and asks the clog about the rest.  Rules:
 *	- the outcome always comes from the clog: TransactionIdIsInProgress
 *	  first, then TransactionIdDidCommit, as heapam does;
 *	- a COMMIT marker is written only after the commit record is flushed in
 *	  the WAL (XLogFlush in writer_write_pending, on every write path), so
 *	  the segments never claim a commit that a crash could take back from
 *	  PostgreSQL;
 *	- a marker is put in the group buffer before any frame that depends on
 *	  it (an entity sequence used again after a rollback);
 *	- an entity with pending events belongs to their transaction: a request
 *	  of another transaction is answered WAIT with the xid to wait for, and
 *	  its backend waits on that xid's lock in the lock manager
 *	  (XactLockTableWait, as for a row lock: cancellable, deadlocks detected)
 *	  and then resubmits.  Idempotency keys and causations of pending events
 *	  are treated alike.
 *
 * Crash safety rests on three rules:
 *	- nothing is published (visible to readers) or acknowledged before its
 *	  frames are written, and, for synchronous appends, synced;
 *	- a batch is bracketed by BEGIN/END flags and never spans segments, so
 *	  recovery can discard a batch whose END did not reach the disk;
 *	- after any failed write or sync the writer exits and its successor
 *	  rebuilds everything from what is actually in the files.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_crc32c.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "batpak.h"

#define BATPAK_PREALLOC_CHUNK	((Size) 4 * 1024 * 1024)

/*
 * The control file records where the newest segment was last synced, at
 * most once a second: recovery refuses a store whose data ends before that
 * point (a truncated segment), which the segments alone cannot show.
 */
/*
 * The name starts with PG_TEMP_FILE_PREFIX so that pg_basebackup leaves it
 * out: it copies files one by one while the writer runs, and a control file
 * copied after the segments could name a point the copied segments do not
 * reach, and the restored store would be refused.  A restored store starts
 * without it (no check until the writer writes the next one).
 */
#define BATPAK_CONTROL_FILE		BATPAK_DIR "/" PG_TEMP_FILE_PREFIX "_batpak_control"
#define BATPAK_CONTROL_TMP		BATPAK_DIR "/" PG_TEMP_FILE_PREFIX "_batpak_control.tmp"
#define BATPAK_CONTROL_SIZE		64
#define BATPAK_CONTROL_VERSION	1
#define BATPAK_CONTROL_INTERVAL_MS	1000
#define BATPAK_SWEEP_INTERVAL_MS	1000

/* An entity's head as the group in hand sees it */
typedef struct WriterHead
{
	uint8		key[BATPAK_KEY_LEN];
	uint64		last_seq;
	uint8		last_hash[BATPAK_HASH_LEN];
	uint64		pending_top;	/* transaction with pending events, or 0 */
	uint64		pending_xid;	/* the (sub)xid to wait for */
} WriterHead;

/* Undo record: a head's value before a request changed it */
typedef struct WriterUndo
{
	WriterHead *head;
	WriterHead	saved;
} WriterUndo;

/* An event to enter in the index once its frame is durable */
typedef struct WriterPub
{
	uint64		global_seq;
	uint64		entity_seq;
	uint64		pos;
	uint8		key[BATPAK_KEY_LEN];
	uint8		hash[BATPAK_HASH_LEN];
	uint8		prev_hash[BATPAK_HASH_LEN];
	uint64		xid;			/* full xids, 0 for an immediate event */
	uint64		top;
	bool		has_idem;
	bool		has_corr;
	uint8		idem[BATPAK_KEY_LEN];
	pg_uuid_t	corr;
} WriterPub;

/* A transaction with pending events, in W.txns */
typedef struct WriterTxn
{
	uint64		top;			/* hash key: full top-level xid */
	WriterPub  *events;			/* its pending events, in global order */
	Size		nevents;
	Size		maxevents;
} WriterTxn;

/* A transaction end announced through a slot */
typedef struct WriterResolve
{
	int			slotno;
	uint64		top;
	XLogRecPtr	lsn;
	uint64		gen;
} WriterResolve;

/* Outcome of building a request */
typedef enum WriterBuild
{
	BUILD_OK,
	BUILD_REFUSED,				/* reply filled in */
	BUILD_WAIT,					/* wait for W.wait_xid, then resubmit */
	BUILD_RESOLVE				/* settle W.resolve_target, then try again */
} WriterBuild;

/* Transaction states, from the clog */
#define XS_IN_PROGRESS	0
#define XS_COMMITTED	1
#define XS_ABORTED		2

typedef struct WriterGroupReq
{
	int			slotno;
	dsa_pointer dp;
	BatpakRequest *req;
	bool		ok;
	bool		abandoned;		/* the backend gave up waiting for it */
	Size		pub_start;
	Size		pub_end;
} WriterGroupReq;

/* In-group idempotency keys: key -> receipt of the event that used it */
typedef struct WriterIdem
{
	uint8		key[BATPAK_KEY_LEN];
	BatpakReceipt receipt;
	uint64		top;			/* transaction of the event, 0 if immediate */
	uint64		xid;
} WriterIdem;

typedef struct WriterState
{
	dsa_area   *area;
	BatpakIndex idx;
	uint32		incarnation;
	uint8		store_id[16];

	/* current segment */
	uint32		segno;
	int			fd;
	uint64		write_off;		/* end of data, including the group buffer */
	uint64		alloc_end;		/* file size: zero-filled beyond write_off */

	/* the group in hand */
	char	   *buf;
	Size		buf_len;
	Size		buf_cap;
	Size		pend_buf_off;	/* buf[pend_buf_off, buf_len) is not yet written;
								 * it all belongs to the current segment and
								 * ends at write_off */
	WriterPub  *pubs;
	Size		npubs;
	Size		maxpubs;
	WriterUndo *undo;
	Size		nundo;
	Size		maxundo;
	HTAB	   *heads;
	HTAB	   *group_idem;
	uint64		next_seq;		/* next global sequence to assign */
	uint64		published_seq;	/* last global sequence in the index */

	/* an I/O step that must end the writer if it fails (see rotation) */
	bool		in_rotation;

	/* batpak.inject_fault of a request of the group in hand, or NONE */
	int			group_fault;
	/* discard_crash: the end of the failed group's data in W.segno, or 0 */
	uint64		discard_crash_at;

	/* asynchronous appends written but not yet synced */
	bool		unsynced;
	TimestampTz unsynced_since;

	/* transactions with pending events, see the header */
	HTAB	   *txns;
	WriterGroupReq *group;		/* the group in hand */
	int			ngroup;
	WriterResolve *resolves;
	XLogRecPtr	marker_lsn;		/* WAL to flush before the buffer is written:
								 * commit records of COMMIT markers, xid
								 * records of transactional frames */
	bool		sweep_due;
	TimestampTz last_sweep;
	uint64		wait_xid;		/* set with BUILD_WAIT */
	uint64		resolve_target; /* set with BUILD_RESOLVE */
	bool		resolve_full;	/* ... to look at all its subtransactions */

	/* consumer horizon last announced, see batpak_frontiers_moved */
	uint64		horizon;

	/* what the control file says, and when we wrote it */
	uint32		control_segno;
	uint64		control_off;
	TimestampTz control_at;

	MemoryContext group_cxt;
} WriterState;

static WriterState W;

static void writer_flush_async(bool force);
static void writer_synced(void);
static XLogRecPtr writer_wal_inserted(void);
static void writer_discard_unsynced(void);
static int	writer_fault(void);
static void writer_wake_consumers(void);

/*
 * Wake every backend that has a request out, so that it looks at its slot
 * again: after this writer's exit (it is gone), or at a writer's start (the
 * requests of its predecessor will never be answered).
 */
static void
writer_wake_waiters(void)
{
	for (int i = 0; i < BatpakCtl->nslots; i++)
	{
		BatpakSlot *slot = &BatpakCtl->slots[i];

		if (pg_atomic_read_u32(&slot->state) != BATPAK_SLOT_IDLE &&
			slot->latch != NULL)
			SetLatch(slot->latch);
	}
}

static void
writer_exit_hook(int code, Datum arg)
{
	if (BatpakCtl == NULL)
		return;

	/*
	 * An error may have ended the writer while it held the control lock
	 * (creating the index): release it, or we would wait on ourselves.
	 */
	LWLockReleaseAll();
	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	BatpakCtl->writer_pid = 0;
	BatpakCtl->writer_latch = NULL;
	LWLockRelease(&BatpakCtl->lock);
	batpak_set_state(BATPAK_STATE_STOPPED);

	writer_wake_waiters();
}

static void
writer_fail_store(const char *fmt,...) pg_attribute_printf(1, 2);

/*
 * Enter the failed state: stay up, refuse every request with the reason.
 * Used for corruption found at start-up, which no restart would cure.
 */
static void
writer_fail_store(const char *fmt,...)
{
	va_list		ap;
	char		msg[sizeof(BatpakCtl->failure)];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	strlcpy(BatpakCtl->failure, msg, sizeof(BatpakCtl->failure));
	LWLockRelease(&BatpakCtl->lock);
	ereport(WARNING,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("batpak store is unavailable: %s", msg),
			 errhint("The writer refuses appends and reads until the damaged segment is repaired or restored.")));
	batpak_set_state(BATPAK_STATE_FAILED);
}

/* ----------------------------------------------------------------
 * Entity heads of the group in hand
 * ----------------------------------------------------------------
 */
static void
writer_reset_group_tables(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = BATPAK_KEY_LEN;
	ctl.entrysize = sizeof(WriterHead);
	ctl.hcxt = W.group_cxt;
	W.heads = hash_create("batpak heads", 256, &ctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(WriterIdem);
	W.group_idem = hash_create("batpak group keys", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	W.npubs = 0;
	W.nundo = 0;
	W.buf_len = 0;
	W.pend_buf_off = 0;
}

static WriterHead *
writer_head(const uint8 *key)
{
	WriterHead *h;
	bool		found;

	h = hash_search(W.heads, key, HASH_ENTER, &found);
	if (!found)
	{
		BatpakStreamHead bh;

		if (batpak_index_stream_head(&W.idx, key, &bh))
		{
			h->last_seq = bh.last_seq;
			memcpy(h->last_hash, bh.last_hash, BATPAK_HASH_LEN);
			h->pending_top = bh.pending_top;
			h->pending_xid = bh.pending_xid;
		}
		else
		{
			h->last_seq = 0;
			memset(h->last_hash, 0, BATPAK_HASH_LEN);
			h->pending_top = 0;
			h->pending_xid = 0;
		}
	}
	return h;
}

/* Drop a cached head whose stream a resolution changed in the index */
static void
writer_forget_head(const uint8 *key)
{
	if (W.heads != NULL)
		(void) hash_search(W.heads, key, HASH_REMOVE, NULL);
}

static void
writer_push_undo(WriterHead *h)
{
	if (W.nundo >= W.maxundo)
	{
		W.maxundo = Max(W.maxundo * 2, 1024);
		W.undo = repalloc_huge(W.undo, W.maxundo * sizeof(WriterUndo));
	}
	W.undo[W.nundo].head = h;
	W.undo[W.nundo].saved = *h;
	W.nundo++;
}

static WriterPub *
writer_push_pub(void)
{
	if (W.npubs >= W.maxpubs)
	{
		W.maxpubs = Max(W.maxpubs * 2, 1024);
		W.pubs = repalloc_huge(W.pubs, W.maxpubs * sizeof(WriterPub));
	}
	return &W.pubs[W.npubs++];
}

static void writer_txn_add(const WriterPub *p);
static void writer_set_error(BatpakRequest *req, int sqlerrcode, const char *detail,
							 const char *fmt,...) pg_attribute_printf(4, 5);

/*
 * Enter pubs[from, to) in the index: committed, or pending in their
 * transaction.
 */
static void
writer_publish(Size from, Size to)
{
	for (Size i = from; i < to; i++)
	{
		WriterPub  *p = &W.pubs[i];

		batpak_index_set_seq_pos(&W.idx, p->global_seq,
								 p->pos | (p->top != 0 ? BATPAK_POS_PENDING : 0));
		batpak_index_add_stream_event(&W.idx, p->key, p->entity_seq,
									  p->global_seq, p->hash, p->top, p->xid);
		if (p->has_idem)
			batpak_index_add_idem(&W.idx, p->idem, p->global_seq);
		if (p->has_corr)
			batpak_index_add_corr(&W.idx, &p->corr, p->global_seq);
		if (p->top != 0)
			writer_txn_add(p);
		W.published_seq = p->global_seq;
	}
}

/* ----------------------------------------------------------------
 * Pending transactions
 * ----------------------------------------------------------------
 */
/* Room for n more pending events of t (the array doubles) */
static void
writer_txn_reserve(WriterTxn *t, Size n)
{
	Size		newmax = t->maxevents;

	if (t->nevents + n <= newmax)
		return;
	while (newmax < t->nevents + n)
		newmax *= 2;
	t->events = repalloc_huge(t->events, newmax * sizeof(WriterPub));
	t->maxevents = newmax;
}

static void
writer_txn_add(const WriterPub *p)
{
	WriterTxn  *t;
	bool		found;

	t = hash_search(W.txns, &p->top, HASH_ENTER, &found);
	if (!found)
	{
		t->maxevents = 16;
		t->nevents = 0;
		t->events = MemoryContextAllocHuge(TopMemoryContext,
										   t->maxevents * sizeof(WriterPub));
		pg_atomic_fetch_add_u64(&BatpakCtl->pending_transactions, 1);
	}
	writer_txn_reserve(t, 1);
	t->events[t->nevents++] = *p;
	pg_atomic_fetch_add_u64(&BatpakCtl->pending_events, 1);
}

static void
writer_txn_remove(WriterTxn *t)
{
	uint64		top = t->top;

	pg_atomic_fetch_sub_u64(&BatpakCtl->pending_events, t->nevents);
	pg_atomic_fetch_sub_u64(&BatpakCtl->pending_transactions, 1);
	pfree(t->events);
	(void) hash_search(W.txns, &top, HASH_REMOVE, NULL);
}

/*
 * Discard the pending events of the (sub)transactions xids[0..nxids), or
 * all of them: hide them, forget their idempotency keys and cut their
 * streams back so that the entity sequences are used again.  The set is
 * every (sub)transaction that rolled back: a subtransaction's rollback
 * takes its committed children along, so the set holds every event
 * appended to a stream after the first one it holds, and going backwards
 * in global order each cut removes the stream's last event.
 */
static int
writer_xid_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

/* Sort xids[0 .. *n) and drop repeats */
static void
writer_sort_xids(uint64 *xids, int *n)
{
	int			kept = 0;

	if (*n < 2)
		return;
	qsort(xids, *n, sizeof(uint64), writer_xid_cmp);
	for (int i = 0; i < *n; i++)
		if (kept == 0 || xids[kept - 1] != xids[i])
			xids[kept++] = xids[i];
	*n = kept;
}

static void
writer_txn_discard(WriterTxn *t, Size from, const uint64 *xids, int nxids, bool all)
{
	Size		kept = from;
	Size		gone = 0;

	/*
	 * t->events[0 .. from) hold none of them (the caller knows); xids are
	 * sorted and unique (writer_sort_xids), so that a rollback of many
	 * subtransactions costs a binary search per event, not a scan.
	 */
	for (Size i = t->nevents; i-- > from;)
	{
		WriterPub  *p = &t->events[i];

		if (!all && bsearch(&p->xid, xids, nxids, sizeof(uint64),
							writer_xid_cmp) == NULL)
			continue;
		batpak_index_set_seq_pos(&W.idx, p->global_seq, p->pos | BATPAK_POS_HIDDEN);
		batpak_index_stream_truncate(&W.idx, p->key, p->entity_seq - 1, p->prev_hash);
		writer_forget_head(p->key);
		if (p->has_idem)
			batpak_index_remove_idem(&W.idx, p->idem, p->global_seq);
		p->global_seq = 0;
		gone++;
	}
	for (Size i = from; i < t->nevents; i++)
		if (t->events[i].global_seq != 0)
			t->events[kept++] = t->events[i];
	t->nevents = kept;
	pg_atomic_fetch_sub_u64(&BatpakCtl->pending_events, gone);
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.events_discarded, gone);
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.transactions_aborted, 1);
}

/* Commit every pending event of the transaction, and forget it */
static void
writer_txn_commit(WriterTxn *t)
{
	/*
	 * Positions first, streams second: a reader that finds a stream's
	 * committed_seq moved finds its events' positions committed too.
	 */
	for (Size i = 0; i < t->nevents; i++)
		batpak_index_set_seq_pos(&W.idx, t->events[i].global_seq, t->events[i].pos);
	pg_write_barrier();
	for (Size i = 0; i < t->nevents; i++)
	{
		WriterPub  *p = &t->events[i];

		if (i == 0 || memcmp(p->key, t->events[i - 1].key, BATPAK_KEY_LEN) != 0)
		{
			batpak_index_stream_commit(&W.idx, p->key);
			writer_forget_head(p->key);
		}
	}
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.transactions_committed, 1);
	writer_txn_remove(t);
}

/*
 * State of a transaction, from the procarray and the clog (as heapam asks
 * them: in progress first).  The clog entry must still exist: the segments
 * may name a transaction that the clog has long forgotten only if its
 * marker was lost, and then we refuse to guess (see xid8funcs.c's
 * TransactionIdInRecentPast for the same test).
 */
static int
writer_xid_status(uint64 fxid)
{
	FullTransactionId full = FullTransactionIdFromU64(fxid);
	TransactionId xid = XidFromFullTransactionId(full);
	FullTransactionId next = ReadNextFullTransactionId();
	uint32		epoch = EpochFromFullTransactionId(full);
	uint32		next_epoch = EpochFromFullTransactionId(next);
	int			result;

	if (!TransactionIdIsNormal(xid) || !FullTransactionIdPrecedes(full, next))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("batpak segments name transaction " UINT64_FORMAT ", which this cluster has not started",
						fxid),
				 errhint("Segment files belong to the cluster that wrote them.")));
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	/* test fault: a clog look-up that fails with the lock held */
	if (writer_fault() == BATPAK_FAULT_XID_STATUS)
		ereport(ERROR,
				(errcode(ERRCODE_IO_ERROR),
				 errmsg("injected fault: could not access status of transaction " UINT64_FORMAT,
						fxid)));
	if (epoch + 1 < next_epoch ||
		(epoch + 1 == next_epoch && xid < XidFromFullTransactionId(next)) ||
		TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid))
	{
		LWLockRelease(XactTruncationLock);
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("cannot learn the outcome of transaction " UINT64_FORMAT " of the batpak segments: the commit log no longer has it",
						fxid)));
	}
	if (TransactionIdIsInProgress(xid))
		result = XS_IN_PROGRESS;
	else if (TransactionIdDidCommit(xid))
		result = XS_COMMITTED;
	else
		result = XS_ABORTED;
	LWLockRelease(XactTruncationLock);
	return result;
}

static char *writer_reserve(Size len);

/* Append x to the palloc'd array *xids of *n entries (room for *max) */
static void
writer_add_xid(uint64 **xids, int *n, int *max, uint64 x)
{
	if (*n >= *max)
	{
		*max *= 2;
		*xids = repalloc(*xids, sizeof(uint64) * *max);
	}
	(*xids)[(*n)++] = x;
}

static void
writer_emit_marker(uint32 flags, uint64 top, const uint64 *xids, int nxids)
{
	batpak_marker_build(writer_reserve(batpak_marker_size(nxids)), flags, top,
						xids, nxids);
}

/*
 * Settle what can be settled of transaction t: discard the events of its
 * subtransactions that rolled back; once it has ended, commit or discard
 * the rest.  Each step puts a marker in the group buffer.  commit_lsn is the
 * end of the commit record if the backend told us, else invalid.
 */
static void
writer_resolve_txn(WriterTxn *t, XLogRecPtr commit_lsn, bool full)
{
	int			status = writer_xid_status(t->top);
	uint64	   *aborted = palloc(sizeof(uint64) * 8);
	int			naborted = 0;
	int			maxaborted = 8;
	uint64		last = 0;
	uint64		top = t->top;
	Size		from = t->nevents;

	if (status == XS_IN_PROGRESS && !full)
	{
		/*
		 * While the transaction runs, the events of its subtransactions
		 * that rolled back and are not settled yet are the last ones of
		 * t->events, so we look backwards only until the first event of a
		 * (sub)transaction that did not roll back.  Why: a backend
		 * announces a savepoint's rollback before it submits its next
		 * request, and we take announcements after requests
		 * (writer_serve_group) and settle them first, so no event of the
		 * transaction follows an unsettled rollback's events, except the
		 * rolled-back subtransaction's own (an abandoned request published
		 * after we settled, which writer_ack_resolves has us settle again).
		 * And a rollback to a savepoint takes exactly what was appended
		 * since the savepoint, the events after the last of the events
		 * appended before it.  Looking at all of them instead, as we did,
		 * made every settlement cost a status look-up per subtransaction
		 * of the transaction, and a loop of appends in exception blocks
		 * quadratic in the writer, which every session waits for.  One
		 * look-up per run of events of one subtransaction (a parent's
		 * events around a child's are two runs); repeats are dropped by
		 * writer_sort_xids.
		 */
		for (Size i = t->nevents; i-- > 0;)
		{
			uint64		x = t->events[i].xid;

			if (x == top)
				break;
			if (x != last)
			{
				if (writer_xid_status(x) != XS_ABORTED)
					break;
				last = x;
				writer_add_xid(&aborted, &naborted, &maxaborted, x);
			}
			from = i;
		}
		writer_sort_xids(aborted, &naborted);

		/*
		 * No assertion re-asks the clog about the events before "from": the
		 * session may roll back the subtransaction we stopped at (or the
		 * whole transaction) right after we looked, and a second look would
		 * then find rolled-back events before "from" that a later
		 * settlement takes, as it should.
		 */
		/* every event from "from" on is of a rolled-back subtransaction */
		if (naborted > 0)
		{
			writer_txn_discard(t, from, NULL, 0, true);
			writer_emit_marker(BATPAK_FLAG_MARKER_ABORT, top, aborted, naborted);
		}
	}
	else if (status != XS_ABORTED)
	{
		/*
		 * All of them: once the transaction has committed (a rolled-back
		 * subtransaction whose settlement we missed must not be committed
		 * with the rest), and when a request of the transaction itself
		 * is about to build on an event of a rolled-back subtransaction
		 * (full: writer_check_pending; it costs a look-up per
		 * subtransaction, but only then).  Not when the transaction rolled
		 * back: everything goes below, with one marker that covers its
		 * subtransactions too.
		 */
		for (Size i = 0; i < t->nevents; i++)
		{
			uint64		x = t->events[i].xid;

			if (x == top || x == last)
				continue;
			last = x;
			if (writer_xid_status(x) == XS_ABORTED)
				writer_add_xid(&aborted, &naborted, &maxaborted, x);
		}
		writer_sort_xids(aborted, &naborted);
		if (naborted > 0)
		{
			writer_txn_discard(t, 0, aborted, naborted, false);
			writer_emit_marker(BATPAK_FLAG_MARKER_ABORT, top, aborted, naborted);
		}
	}
	pfree(aborted);

	if (status == XS_IN_PROGRESS)
	{
		if (t->nevents == 0)
			writer_txn_remove(t);
		return;
	}
	if (t->nevents == 0)
		writer_txn_remove(t);
	else if (status == XS_COMMITTED)
	{
		writer_txn_commit(t);
		writer_emit_marker(BATPAK_FLAG_MARKER_COMMIT, top, NULL, 0);
		/* the marker must not reach the disk before the commit record */
		if (XLogRecPtrIsInvalid(commit_lsn))
			commit_lsn = writer_wal_inserted();
		W.marker_lsn = Max(W.marker_lsn, commit_lsn);
	}
	else
	{
		writer_txn_discard(t, 0, NULL, 0, true);
		writer_emit_marker(BATPAK_FLAG_MARKER_ABORT, top, NULL, 0);
		writer_txn_remove(t);
	}
}

/*
 * The end of the WAL inserted so far, as XLogFlush takes it.
 * GetXLogInsertRecPtr says where the next record will begin: after a record
 * that ended exactly at a page boundary, that is past the next page's
 * header, which no flush reaches before more WAL is inserted, and
 * XLogFlush fails with "xlog flush request ... is not satisfied" (met under
 * Valgrind's timing: the writer took it for an I/O error and restarted).
 * Back off to the boundary then: nothing lies between it and the header.
 */
static XLogRecPtr
writer_wal_inserted(void)
{
	XLogRecPtr	lsn = GetXLogInsertRecPtr();
	uint64		seg_off = XLogSegmentOffset(lsn, wal_segment_size);

	if (seg_off == SizeOfXLogLongPHD)
		return lsn - SizeOfXLogLongPHD;
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD && seg_off > XLOG_BLCKSZ)
		return lsn - SizeOfXLogShortPHD;
	return lsn;
}

/* Settle every pending transaction that can be settled */
static void
writer_sweep(void)
{
	HASH_SEQ_STATUS st;
	WriterTxn  *t;
	uint64	   *tops;
	int			n = 0;

	/* collect first: resolving removes entries */
	tops = palloc(sizeof(uint64) * Max(hash_get_num_entries(W.txns), 1));
	hash_seq_init(&st, W.txns);
	while ((t = hash_seq_search(&st)) != NULL)
		tops[n++] = t->top;
	for (int i = 0; i < n; i++)
	{
		t = hash_search(W.txns, &tops[i], HASH_FIND, NULL);
		if (t != NULL)
			writer_resolve_txn(t, InvalidXLogRecPtr, false);
	}
	pfree(tops);
	W.sweep_due = false;
	W.last_sweep = GetCurrentTimestamp();
}

/*
 * The visible frontier: no event at or below it has a pending event before
 * it in global order.
 */
static uint64
writer_visible_frontier(uint64 published)
{
	HASH_SEQ_STATUS st;
	WriterTxn  *t;
	uint64		frontier = published;

	hash_seq_init(&st, W.txns);
	while ((t = hash_seq_search(&st)) != NULL)
		if (t->nevents > 0 && t->events[0].global_seq - 1 < frontier)
			frontier = t->events[0].global_seq - 1;
	return frontier;
}

/* Does a request of transaction top belong to the group in hand? */
static bool
writer_group_has_txn(uint64 top)
{
	for (int i = 0; i < W.ngroup; i++)
		if (W.group[i].req->top_xid == top || W.group[i].req->requester_top == top)
			return true;
	return false;
}

/*
 * May req use an entity, idempotency key or causation held by pending
 * transaction top (whose waiting xid is xid)?  BUILD_OK for no transaction
 * and for req's own; otherwise settle the holder once (it may have ended
 * without telling us yet), then make req wait for it.  An immediate-mode
 * request of the holding transaction itself is refused: its events are
 * visible at once, so they cannot follow, be caused by or stand for
 * (idempotency) events that may still roll back, and it cannot wait for
 * its own transaction.
 */
static WriterBuild
writer_check_pending(BatpakRequest *req, uint64 top, uint64 xid, bool append,
					 bool retried)
{
	if (top == 0)
		return BUILD_OK;
	if (top == req->top_xid)
	{
		/*
		 * Our own transaction's events.  If the one we build on belongs to
		 * a subtransaction that has rolled back and is not settled, settle
		 * before using it.  For a key or a causation that is the event
		 * named; for an append, the entity's last event, and since the
		 * unsettled rolled-back events are the last ones of the
		 * transaction (writer_resolve_txn), its last event stands for it.
		 * A backstop: rollbacks are announced before the next request and
		 * settled before requests are built, and writer_ack_resolves
		 * settles again after an abandoned request, so we know of no way
		 * to get here.  This request is the transaction's only one in the
		 * group, so settling it here is safe.
		 */
		if (!retried)
		{
			uint64		x = xid;

			if (append)
			{
				WriterTxn  *t = hash_search(W.txns, &top, HASH_FIND, NULL);

				if (t != NULL && t->nevents > 0)
					x = t->events[t->nevents - 1].xid;
			}
			if (x != req->xid && writer_xid_status(x) == XS_ABORTED)
			{
				W.resolve_target = top;
				W.resolve_full = true;
				return BUILD_RESOLVE;
			}
		}
		return BUILD_OK;
	}
	if (top == req->requester_top)
	{
		if (append)
			writer_set_error(req, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
							 "The entity has events appended by this transaction while batpak.transactional was on; they are not committed yet.",
							 "cannot append in immediate mode to an entity with pending events of this transaction");
		else
			writer_set_error(req, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
							 "The causation_id or idempotency key names an event appended by this transaction while batpak.transactional was on; it is not committed yet.",
							 "cannot refer in immediate mode to a pending event of this transaction");
		return BUILD_REFUSED;
	}
	if (!retried && !writer_group_has_txn(top))
	{
		W.resolve_target = top;
		return BUILD_RESOLVE;
	}
	W.wait_xid = xid;
	return BUILD_WAIT;
}

/* ----------------------------------------------------------------
 * Segment files
 * ----------------------------------------------------------------
 */
static int
writer_open_segment(uint32 segno, bool create)
{
	char		path[MAXPGPATH];
	int			fd;

	batpak_segment_path(path, segno);
	fd = BasicOpenFilePerm(path, O_RDWR | PG_BINARY | (create ? O_CREAT | O_EXCL : 0),
						   pg_file_create_mode);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open segment file \"%s\": %m", path)));
	return fd;
}

/*
 * The fault to inject into the writer's I/O now (tests only): the one a
 * request of the group in hand asked for, else the writer's own setting.
 */
static int
writer_fault(void)
{
	if (W.group_fault != BATPAK_FAULT_NONE)
		return W.group_fault;
	return batpak_inject_fault;
}

/*
 * A write or sync of a segment failed: the files now differ from what this
 * process believes, and after a failed fdatasync the kernel may even have
 * dropped the dirty pages while the page cache still shows them, so no
 * later sync can be trusted to cover them (PostgreSQL's data_sync_retry =
 * off reasoning).  Mark the failure for our successor, which discards
 * everything written after the last successful sync before it recovers
 * (writer_discard_unsynced), and raise the error; the caller fails the
 * group and the writer exits.  errno is the failure's.
 */
static void
writer_io_error(const char *what, uint32 segno, uint64 off)
{
	int			save_errno = errno;
	int			code = (save_errno == ENOSPC) ? ERRCODE_DISK_FULL : ERRCODE_IO_ERROR;

	BatpakCtl->io_failed = true;
	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	BatpakCtl->io_error_code = code;
	snprintf(BatpakCtl->io_error, sizeof(BatpakCtl->io_error),
			 "could not %s segment %08X.seg at offset " UINT64_FORMAT ": %s",
			 what, segno, off, strerror(save_errno));
	LWLockRelease(&BatpakCtl->lock);
	errno = save_errno;
	ereport(ERROR,
			(errcode(code),
			 errmsg("could not %s segment %08X.seg at offset " UINT64_FORMAT ": %m",
					what, segno, off)));
}

/*
 * Sync the current segment; on success it is durable up to write_off, which
 * becomes the point a successor falls back to after an I/O error.
 */
static void
writer_fsync_fd(int fd, uint32 segno)
{
	Assert(fd == W.fd && segno == W.segno);
	if (writer_fault() == BATPAK_FAULT_FSYNC ||
		writer_fault() == BATPAK_FAULT_DISCARD_CRASH)
	{
		errno = EIO;
		writer_io_error("fdatasync", segno, W.write_off);
	}
	if (pg_fdatasync(fd) != 0)
		writer_io_error("fdatasync", segno, W.write_off);
	BatpakCtl->synced_segno = segno;
	BatpakCtl->synced_off = W.write_off;
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.fsyncs, 1);
}

/*
 * Create segment segno durably: header written and synced, directory entry
 * synced, before any frame goes into it.
 */
static int
writer_create_segment(uint32 segno)
{
	int			fd;

	if (segno > BATPAK_MAX_SEGMENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batpak store has reached its maximum number of segments")));
	fd = writer_open_segment(segno, true);
	batpak_write_segment_header(fd, segno, W.store_id);
	if (pg_fsync(fd) != 0)
		writer_io_error("fsync", segno, 0);
	fsync_fname(BATPAK_DIR, true);
	BatpakCtl->synced_segno = segno;
	BatpakCtl->synced_off = BATPAK_SEGMENT_HEADER_SIZE;
	pg_atomic_fetch_add_u32(&BatpakCtl->segments, 1);
	pg_atomic_fetch_add_u64(&BatpakCtl->store_bytes, BATPAK_SEGMENT_HEADER_SIZE);
	return fd;
}

static void
writer_pwrite(int fd, uint32 segno, const char *data, Size len, uint64 off)
{
	Size		done = 0;

	while (done < len)
	{
		ssize_t		n;

		errno = 0;
		n = pg_pwrite(fd, data + done, len - done, (off_t) (off + done));
		if (n <= 0)
		{
			if (errno == 0)
				errno = ENOSPC;
			writer_io_error("write", segno, off + done);
		}
		done += n;
	}
}

static void
writer_truncate(int fd, uint32 segno, uint64 size)
{
	/* first: readers' mappings may be longer than the file is about to be */
	pg_atomic_fetch_add_u32(&BatpakCtl->truncations, 1);
	if (ftruncate(fd, (off_t) size) != 0)
		writer_io_error("truncate", segno, size);
}

/*
 * Write the group's bytes that are not on their way yet.  They all belong to
 * the current segment (a rotation writes out the old segment's share before
 * it switches) and end at write_off.
 */
static void
writer_write_pending(void)
{
	Size		len = W.buf_len - W.pend_buf_off;
	int			fault = writer_fault();

	if (len == 0)
		return;

	/*
	 * Commit markers follow their commit records to disk, and frames the
	 * WAL records of their xids (see the header and xact.c).  Here, because
	 * a rotation writes the group's bytes too.
	 */
	if (!XLogRecPtrIsInvalid(W.marker_lsn))
	{
		XLogFlush(W.marker_lsn);
		W.marker_lsn = InvalidXLogRecPtr;
	}
	if (fault == BATPAK_FAULT_WRITE || fault == BATPAK_FAULT_PARTIAL_WRITE ||
		fault == BATPAK_FAULT_ENOSPC)
	{
		Size		half = (fault == BATPAK_FAULT_WRITE) ? 0 : (len + 1) / 2;

		writer_pwrite(W.fd, W.segno, W.buf + W.pend_buf_off, half, W.write_off - len);
		errno = (fault == BATPAK_FAULT_ENOSPC) ? ENOSPC : EIO;
		writer_io_error("write", W.segno, W.write_off - len + half);
	}
	writer_pwrite(W.fd, W.segno, W.buf + W.pend_buf_off, len, W.write_off - len);
	W.pend_buf_off = W.buf_len;
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.bytes_written, len);
	pg_atomic_fetch_add_u64(&BatpakCtl->store_bytes, len);
}

/*
 * Start a new segment.  The old one is finished first: the group's frames
 * for it are written, the zero-filled preallocation is cut off and the file
 * is synced, all before the new file exists.  So only the newest segment
 * can ever end in a torn or zero-filled tail, which is what recovery relies
 * on.  Nothing is acknowledged yet: the group's replies wait for its end.
 */
static void
writer_rotate(void)
{
	/* a refusal, not an I/O failure: checked before the point of no return */
	if (W.segno + 1 > BATPAK_MAX_SEGMENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batpak store has reached its maximum number of segments")));

	/*
	 * A failure from here on is not the request's fault and leaves the files
	 * in an unknown state: writer_process_request lets it end the writer,
	 * whose successor recovers from the files.
	 */
	W.in_rotation = true;
	writer_write_pending();
	writer_truncate(W.fd, W.segno, W.write_off);
	writer_fsync_fd(W.fd, W.segno);
	close(W.fd);
	writer_synced();

	W.fd = writer_create_segment(W.segno + 1);
	W.segno++;
	W.write_off = BATPAK_SEGMENT_HEADER_SIZE;
	W.alloc_end = BATPAK_SEGMENT_HEADER_SIZE;
	W.in_rotation = false;
}

/*
 * Zero-fill the current segment ahead of the data, as PostgreSQL does for
 * WAL: overwriting allocated blocks makes each group's fdatasync a data-only
 * flush, where appending would also have to commit the file size.
 */
static void
writer_preallocate(void)
{
	static char *zeros = NULL;
	uint64		target;

	if (W.write_off <= W.alloc_end)
		return;
	if (zeros == NULL)
		zeros = MemoryContextAllocZero(TopMemoryContext, BATPAK_PREALLOC_CHUNK);
	target = W.write_off + BATPAK_PREALLOC_CHUNK;
	target = Min(target, Max((uint64) batpak_segment_size_kb * 1024, W.write_off));
	while (W.alloc_end < target)
	{
		Size		n = Min(BATPAK_PREALLOC_CHUNK, target - W.alloc_end);

		writer_pwrite(W.fd, W.segno, zeros, n, W.alloc_end);
		W.alloc_end += n;
	}
}

static char *
writer_reserve(Size len)
{
	char	   *dst;

	if (W.buf_len + len > W.buf_cap)
	{
		Size		newcap = Max(W.buf_cap * 2, W.buf_len + len);

		W.buf = repalloc_huge(W.buf, newcap);
		W.buf_cap = newcap;
	}
	dst = W.buf + W.buf_len;
	W.buf_len += len;
	W.write_off += len;
	return dst;
}

/*
 * Write the group's frames (those of a segment finished by a rotation are
 * already out) and, for a synchronous group, fdatasync once.
 */
static void
writer_write_group(bool sync)
{
	writer_preallocate();
	writer_write_pending();
	if (sync)
	{
		writer_fsync_fd(W.fd, W.segno);
		writer_synced();
	}
}

/* ----------------------------------------------------------------
 * Requests
 * ----------------------------------------------------------------
 */
static void
writer_set_error(BatpakRequest *req, int sqlerrcode, const char *detail,
				 const char *fmt,...)
{
	va_list		ap;

	req->status = BATPAK_REPLY_ERROR;
	req->sqlerrcode = sqlerrcode;
	va_start(ap, fmt);
	vsnprintf(req->errmsg, sizeof(req->errmsg), fmt, ap);
	va_end(ap);
	strlcpy(req->errdetail, detail ? detail : "", sizeof(req->errdetail));
}

/* Read a published frame (mappings see the writer's own writes at once) */
static void
writer_read_frame(uint64 seq, BatpakFrame *f)
{
	batpak_read_frame(batpak_index_seq_pos(&W.idx, seq), f);
}

/* Receipt of a stored event, read back from its frame */
static void
writer_receipt_of(uint64 seq, BatpakReceipt *r)
{
	BatpakFrame f;

	writer_read_frame(seq, &f);
	r->event_id = f.event_id;
	r->global_seq = f.global_seq;
	r->entity_seq = f.entity_seq;
	r->committed_at = f.committed_at;
	memcpy(r->event_hash, f.event_hash, BATPAK_HASH_LEN);
	memcpy(r->prev_hash, f.prev_hash, BATPAK_HASH_LEN);
}

/*
 * Look an event id up among published events: true if it is there and not
 * rolled back, with its position (and state flags) in *pos.
 */
static bool
writer_find_event(const pg_uuid_t *id, BatpakFrame *f, uint64 *pos)
{
	uint64		seq;

	if (!batpak_seq_from_uuid(id, &seq) || seq > W.published_seq)
		return false;
	*pos = batpak_index_seq_pos(&W.idx, seq);
	if (*pos & BATPAK_POS_HIDDEN)
		return false;
	batpak_read_frame(*pos, f);
	return memcmp(f->event_id.data, id->data, 16) == 0;
}

static inline BatpakEventReq *
writer_next_event(BatpakEventReq *ev)
{
	return (BatpakEventReq *) ((char *) ev + ev->size);
}

/* Structural check of a request: a backend bug must not crash the writer */
static bool
writer_request_sane(BatpakRequest *req)
{
	char	   *p = req->events;
	char	   *end = (char *) req + req->receipts_off;

	if (req->receipts_off > req->total_size ||
		req->total_size - req->receipts_off < (Size) req->nevents * sizeof(BatpakReceipt))
		return false;
	for (uint32 i = 0; i < req->nevents; i++)
	{
		BatpakEventReq *ev = (BatpakEventReq *) p;

		if (p + offsetof(BatpakEventReq, data) > end ||
			ev->size < offsetof(BatpakEventReq, data) || ev->size > (Size) (end - p) ||
			offsetof(BatpakEventReq, data) + (Size) ev->entity_len + ev->scope_len +
			ev->kind_len + ev->idem_len + ev->payload_len + ev->metadata_len > ev->size ||
			ev->entity_len == 0 || ev->kind_len == 0)
			return false;
		p += ev->size;
	}
	return true;
}

/*
 * Validate a request against the store and the group so far, assign
 * sequences and frame its events into the group buffer.  Returns BUILD_OK,
 * or another outcome (see WriterBuild) after which the caller undoes
 * whatever this request changed.  retried: a BUILD_RESOLVE was settled
 * already, so a holder still there is waited for.
 */
static WriterBuild
writer_build_request(BatpakRequest *req, TimestampTz committed_at, bool retried)
{
	BatpakReceipt *receipts = BATPAK_REQ_RECEIPTS(req);
	BatpakEventReq *ev;
	bool	   *dup;
	Size		bytes = 0;
	uint32		nwrite = 0;
	uint32		written = 0;
	uint32		i;
	WriterBuild rc;

	if (!writer_request_sane(req))
	{
		writer_set_error(req, ERRCODE_INTERNAL_ERROR, NULL,
						 "malformed batpak request");
		return BUILD_REFUSED;
	}

	/* pass 1: idempotency hits, and the size of what is to be written */
	dup = palloc0(sizeof(bool) * Max(req->nevents, 1));
	ev = (BatpakEventReq *) req->events;
	for (i = 0; i < req->nevents; i++, ev = writer_next_event(ev))
	{
		if (ev->idem_len > 0)
		{
			uint8		key[BATPAK_KEY_LEN];
			const char *idem = ev->data + ev->entity_len + ev->scope_len + ev->kind_len;
			WriterIdem *gi;
			uint64		seq;

			batpak_hash_key(idem, ev->idem_len, key);
			gi = hash_search(W.group_idem, key, HASH_FIND, NULL);
			if (gi != NULL)
			{
				rc = writer_check_pending(req, gi->top, gi->xid, false, retried);
				if (rc != BUILD_OK)
					return rc;
				receipts[i] = gi->receipt;
				dup[i] = true;
			}
			else if (batpak_index_find_idem(&W.idx, key, &seq))
			{
				BatpakFrame f;
				uint64		pos = batpak_index_seq_pos(&W.idx, seq);

				batpak_read_frame(pos, &f);
				if (f.idem_len != ev->idem_len || memcmp(f.idem, idem, f.idem_len) != 0)
				{
					writer_set_error(req, ERRCODE_INTERNAL_ERROR, NULL,
									 "idempotency key hash collision");
					return BUILD_REFUSED;
				}
				if (pos & BATPAK_POS_PENDING)
				{
					rc = writer_check_pending(req, f.top_xid, f.xid, false, retried);
					if (rc != BUILD_OK)
						return rc;
				}
				writer_receipt_of(seq, &receipts[i]);
				dup[i] = true;
			}
			if (dup[i])
			{
				pg_atomic_fetch_add_u64(&BatpakCtl->counters.idempotent_hits, 1);
				continue;
			}
		}
		bytes += batpak_frame_size(ev);
		nwrite++;
	}
	if (nwrite == 0)
		return BUILD_OK;

	/*
	 * A transaction's pending events live in W.txns (160 bytes each) until
	 * it ends: cap them per transaction, as the submitter's
	 * batpak.max_transaction_events says, so that one runaway transaction
	 * cannot exhaust this process's memory.  Idempotent hits are not
	 * added, so they do not count: a retry at the limit still gets its
	 * receipt.  A backend has one request out at a time, so no other
	 * request of the same transaction is in this group; its rolled-back
	 * savepoints are normally settled already (announced before this
	 * request), but settle them once more before refusing.
	 *
	 * The room is reserved here, inside the caller's PG_TRY: an allocation
	 * failure refuses this request, where the same failure in
	 * writer_txn_add, after the group's write, would end the writer.  (The
	 * first request of a transaction needs at most a batch's worth, taken
	 * at publication.)
	 */
	if (req->top_xid != 0 && req->max_txn_events > 0)
	{
		WriterTxn  *t = hash_search(W.txns, &req->top_xid, HASH_FIND, NULL);
		uint64		have = t ? (uint64) t->nevents : 0;

		if (have + nwrite > req->max_txn_events)
		{
			char		detail[256];

			if (!retried && t != NULL)
			{
				W.resolve_target = req->top_xid;
				return BUILD_RESOLVE;
			}
			snprintf(detail, sizeof(detail),
					 "The transaction holds " UINT64_FORMAT " pending events and this call appends %u more; the limit is " UINT64_FORMAT " (batpak.max_transaction_events). Commit in smaller transactions, or append with batpak.transactional = off.",
					 have, nwrite, req->max_txn_events);
			writer_set_error(req, ERRCODE_PROGRAM_LIMIT_EXCEEDED, detail,
							 "transaction has too many pending batpak events");
			return BUILD_REFUSED;
		}
		if (t != NULL)
			writer_txn_reserve(t, nwrite);
	}

	/* a request never spans segments: rotate first if it would not fit */
	if (W.write_off > BATPAK_SEGMENT_HEADER_SIZE &&
		W.write_off + bytes > (uint64) batpak_segment_size_kb * 1024)
		writer_rotate();

	/* pass 2: sequences, checks, frames */
	ev = (BatpakEventReq *) req->events;
	for (i = 0; i < req->nevents; i++, ev = writer_next_event(ev))
	{
		uint8		key[BATPAK_KEY_LEN];
		WriterHead *h;
		WriterPub  *pub;
		pg_uuid_t	event_id;
		pg_uuid_t	correlation;
		uint32		flags = 0;
		Size		fsize;
		char	   *dst;
		uint64		pos;

		if (dup[i])
			continue;
		batpak_hash_key(ev->data, ev->entity_len, key);
		h = writer_head(key);
		rc = writer_check_pending(req, h->pending_top, h->pending_xid, true, retried);
		if (rc != BUILD_OK)
			return rc;
		if (ev->has_expected && (uint64) ev->expected_sequence != h->last_seq)
		{
			char		detail[256];

			snprintf(detail, sizeof(detail),
					 "Expected sequence " INT64_FORMAT ", actual sequence " UINT64_FORMAT ".",
					 ev->expected_sequence, h->last_seq);
			writer_set_error(req, ERRCODE_BATPAK_SEQUENCE_MISMATCH, detail,
							 "wrong expected sequence for entity \"%.*s\": expected " INT64_FORMAT ", actual " UINT64_FORMAT,
							 (int) Min(ev->entity_len, 200), ev->data,
							 ev->expected_sequence, h->last_seq);
			return BUILD_REFUSED;
		}
		if (W.next_seq >= BATPAK_MAX_EVENTS)
		{
			writer_set_error(req, ERRCODE_PROGRAM_LIMIT_EXCEEDED, NULL,
							 "batpak store is full");
			return BUILD_REFUSED;
		}

		batpak_uuid_for_seq(W.next_seq, &event_id);
		if (ev->has_correlation)
			correlation = ev->correlation_id;
		else
			correlation = event_id;
		if (ev->has_causation)
		{
			BatpakFrame cause;
			uint64		cause_pos;

			if (!writer_find_event(&ev->causation_id, &cause, &cause_pos))
			{
				writer_set_error(req, ERRCODE_FOREIGN_KEY_VIOLATION,
								 "causation_id must name an event already in the store.",
								 "causation event %s does not exist",
								 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&ev->causation_id))));
				return BUILD_REFUSED;
			}
			if (cause_pos & BATPAK_POS_PENDING)
			{
				rc = writer_check_pending(req, cause.top_xid, cause.xid, false, retried);
				if (rc != BUILD_OK)
					return rc;
			}
			if (!ev->has_correlation)
				correlation = cause.correlation_id;
		}

		if (written == 0)
			flags |= BATPAK_FLAG_BATCH_BEGIN;
		if (written == nwrite - 1)
			flags |= BATPAK_FLAG_BATCH_END;
		fsize = batpak_frame_size(ev);
		pos = BATPAK_POS(W.segno, W.write_off);
		dst = writer_reserve(fsize);

		writer_push_undo(h);
		receipts[i].event_id = event_id;
		receipts[i].global_seq = W.next_seq;
		receipts[i].entity_seq = h->last_seq + 1;
		receipts[i].committed_at = committed_at;
		memcpy(receipts[i].prev_hash, h->last_hash, BATPAK_HASH_LEN);
		batpak_frame_build(dst, ev, W.next_seq, h->last_seq + 1, &event_id,
						   &correlation, committed_at, flags,
						   req->xid, req->top_xid, h->last_hash,
						   receipts[i].event_hash);

		pub = writer_push_pub();
		pub->global_seq = W.next_seq;
		pub->entity_seq = h->last_seq + 1;
		pub->pos = pos;
		memcpy(pub->key, key, BATPAK_KEY_LEN);
		memcpy(pub->hash, receipts[i].event_hash, BATPAK_HASH_LEN);
		memcpy(pub->prev_hash, h->last_hash, BATPAK_HASH_LEN);
		pub->xid = req->xid;
		pub->top = req->top_xid;
		pub->has_idem = ev->idem_len > 0;
		if (pub->has_idem)
		{
			WriterIdem *gi;

			batpak_hash_key(ev->data + ev->entity_len + ev->scope_len + ev->kind_len,
							ev->idem_len, pub->idem);
			gi = hash_search(W.group_idem, pub->idem, HASH_ENTER, NULL);
			gi->receipt = receipts[i];
			gi->top = req->top_xid;
			gi->xid = req->xid;
		}
		pub->has_corr = memcmp(correlation.data, event_id.data, 16) != 0;
		pub->corr = correlation;

		h->last_seq++;
		memcpy(h->last_hash, receipts[i].event_hash, BATPAK_HASH_LEN);
		if (req->top_xid != 0 && h->pending_top == 0)
		{
			h->pending_top = req->top_xid;
			h->pending_xid = req->xid;
		}
		W.next_seq++;
		written++;
	}
	return BUILD_OK;
}

/*
 * Undo the effects of a refused request on the group state: heads, group
 * keys, sequences and the buffer.  Everything it added is at the end.
 */
static void
writer_undo_request(Size undo_mark, Size pub_mark, Size buf_mark,
					uint64 seq_mark)
{
	while (W.nundo > undo_mark)
	{
		WriterUndo *u = &W.undo[--W.nundo];

		*u->head = u->saved;
	}
	for (Size i = pub_mark; i < W.npubs; i++)
		if (W.pubs[i].has_idem)
			hash_search(W.group_idem, W.pubs[i].idem, HASH_REMOVE, NULL);
	W.npubs = pub_mark;
	if (W.buf_len > buf_mark)
	{
		Size		added = W.buf_len - buf_mark;

		/*
		 * A request lies within one segment, and rotates (if at all) before
		 * its first frame: its bytes are all pending in the current segment.
		 */
		Assert(buf_mark >= W.pend_buf_off);
		W.write_off -= added;
		W.buf_len = buf_mark;
	}
	W.next_seq = seq_mark;
}

/* Process one request inside the group; errors fail only this request */
static void
writer_process_request(WriterGroupReq *g, TimestampTz committed_at)
{
	BatpakRequest *req = g->req;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		retried = false;
	WriterBuild rc;

	pg_atomic_fetch_add_u64(&BatpakCtl->counters.requests, 1);
	for (;;)
	{
		Size		undo_mark = W.nundo;
		Size		pub_mark = W.npubs;
		Size		buf_mark = W.buf_len;
		uint64		seq_mark = W.next_seq;

		req->status = BATPAK_REPLY_OK;
		PG_TRY();
		{
			rc = writer_build_request(req, committed_at, retried);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* an I/O failure while rotating ends the writer, see writer_rotate */
			if (W.in_rotation)
				PG_RE_THROW();

			/*
			 * We go on serving, so nothing the error interrupted may stay
			 * held: a clog read that fails inside writer_xid_status leaves
			 * XactTruncationLock and the clog's own lock taken, and the
			 * latter would stop every commit of the cluster.  The writer
			 * holds no LWLock across this call.
			 */
			LWLockReleaseAll();
			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			writer_set_error(req, edata->sqlerrcode, edata->detail, "%s", edata->message);
			ereport(LOG,
					(errmsg("batpak writer refused an append: %s", edata->message)));
			FreeErrorData(edata);
			rc = BUILD_REFUSED;
		}
		PG_END_TRY();

		g->pub_start = pub_mark;
		if (rc == BUILD_OK)
			break;
		writer_undo_request(undo_mark, pub_mark, buf_mark, seq_mark);
		if (rc == BUILD_RESOLVE && !retried)
		{
			WriterTxn  *t = hash_search(W.txns, &W.resolve_target, HASH_FIND, NULL);

			/* outside the request's undo marks: the markers stay */
			if (t != NULL)
				writer_resolve_txn(t, InvalidXLogRecPtr, W.resolve_full);
			W.resolve_full = false;
			retried = true;
			continue;
		}
		if (rc == BUILD_WAIT)
		{
			req->status = BATPAK_REPLY_WAIT;
			req->wait_xid = XidFromFullTransactionId(FullTransactionIdFromU64(W.wait_xid));
		}
		else
			pg_atomic_fetch_add_u64(&BatpakCtl->counters.requests_failed, 1);
		break;
	}
	g->ok = (rc == BUILD_OK);
	g->pub_end = W.npubs;
}

/*
 * The fault answer_pause (tests only): the group is written, published and
 * (if a request of it is synchronous) synced; hold the answers until every request that asked for the pause
 * is given up by its backend (the slot goes ABANDONED), so that a cancel is
 * sure to fall between the writer's taking the request and its answer.  At
 * most 60 s, and not past a shutdown request.  The drain loop scans the
 * slots again after the group, so resetting our latch here loses nothing.
 */
static void
writer_answer_pause(WriterGroupReq *group, int n)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60000);

	while (!ShutdownRequestPending && GetCurrentTimestamp() < end)
	{
		bool		waiting = false;

		for (int i = 0; i < n; i++)
			if (group[i].req->fault == BATPAK_FAULT_ANSWER_PAUSE &&
				pg_atomic_read_u32(&BatpakCtl->slots[group[i].slotno].state) ==
				BATPAK_SLOT_PROCESSING)
				waiting = true;
		if (!waiting)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
writer_reply(WriterGroupReq *g)
{
	BatpakSlot *slot = &BatpakCtl->slots[g->slotno];
	uint32		expected = BATPAK_SLOT_PROCESSING;

	if (!pg_atomic_compare_exchange_u32(&slot->state, &expected, BATPAK_SLOT_DONE))
	{
		/* the backend gave up on it: the request is ours to free */
		Assert(expected == BATPAK_SLOT_ABANDONED);
		g->abandoned = true;
		dsa_free(W.area, g->dp);
		pg_atomic_write_u32(&slot->state, BATPAK_SLOT_IDLE);
	}
	if (slot->latch != NULL)
		SetLatch(slot->latch);
}

/* Take every submitted request of this incarnation, up to the soft limit */
static int
writer_collect(WriterGroupReq *group)
{
	int			n = 0;
	Size		bytes = 0;

	for (int i = 0; i < BatpakCtl->nslots && bytes < BATPAK_GROUP_SOFT_LIMIT; i++)
	{
		BatpakSlot *slot = &BatpakCtl->slots[i];
		uint32		expected = BATPAK_SLOT_SUBMITTED;

		if (pg_atomic_read_u32(&slot->state) != BATPAK_SLOT_SUBMITTED)
			continue;
		/* the backend set the slot's fields before SUBMITTED */
		pg_read_barrier();
		if (slot->incarnation != W.incarnation)
		{
			/* meant for a writer that is gone: make the backend resubmit */
			if (slot->latch != NULL)
				SetLatch(slot->latch);
			continue;
		}
		if (!pg_atomic_compare_exchange_u32(&slot->state, &expected,
											BATPAK_SLOT_PROCESSING))
			continue;
		group[n].slotno = i;
		group[n].dp = slot->request;
		group[n].req = dsa_get_address(W.area, slot->request);
		group[n].ok = false;
		group[n].abandoned = false;
		bytes += group[n].req->total_size;
		n++;
	}
	return n;
}

/* Transaction ends announced through the slots since we last looked */
static int
writer_collect_resolves(WriterResolve *out)
{
	int			n = 0;

	for (int i = 0; i < BatpakCtl->nslots; i++)
	{
		BatpakSlot *slot = &BatpakCtl->slots[i];
		uint64		gen = pg_atomic_read_u64(&slot->resolve_gen);

		if (gen == slot->resolved_gen)
			continue;

		/*
		 * The backend stored top and lsn before bumping the generation.
		 * If it began a newer announcement meanwhile (resolve_begin moved
		 * on), the two fields may be torn between the two: a new top with
		 * the old commit LSN would let a COMMIT marker reach the disk
		 * before the commit record.  Leave the slot for the next look; the
		 * backend sets our latch once it has bumped the generation.
		 */
		pg_read_barrier();
		out[n].slotno = i;
		out[n].top = slot->resolve_top;
		out[n].lsn = slot->resolve_lsn;
		out[n].gen = gen;
		pg_read_barrier();
		if (pg_atomic_read_u64(&slot->resolve_begin) != gen)
			continue;
		n++;
	}
	return n;
}

/*
 * Record the announcements as settled.  Not one from a backend whose
 * request of this group it had abandoned: that request was submitted before
 * the announcement (the backend gave up waiting, then rolled a savepoint
 * back), so it was built after we settled and its events of the rolled-back
 * subtransaction are published only now; the next group settles again.
 */
static void
writer_ack_resolves(WriterResolve *res, int n, WriterGroupReq *group, int ngroup)
{
	for (int i = 0; i < n; i++)
	{
		bool		again = false;

		for (int j = 0; j < ngroup && !again; j++)
			again = group[j].abandoned && group[j].slotno == res[i].slotno;
		if (!again)
			BatpakCtl->slots[res[i].slotno].resolved_gen = res[i].gen;
	}
}

static void
writer_refuse_all(WriterGroupReq *group, int n, int sqlerrcode,
				  const char *msg, const char *detail)
{
	for (int i = 0; i < n; i++)
	{
		writer_set_error(group[i].req, sqlerrcode, detail, "%s", msg);
		writer_reply(&group[i]);
	}
}

/*
 * Serve one group.  Returns the number of requests and transaction ends
 * handled (0 when there was nothing to do).
 */
static int
writer_serve_group(WriterGroupReq *group)
{
	int			n = writer_collect(group);
	int			nres;
	TimestampTz committed_at;
	bool		sync = false;
	bool		pause;
	uint64		first_seq;

	/*
	 * Transaction ends after the requests: a backend announces the end of a
	 * subtransaction before it submits its next request, so every end that
	 * precedes a request collected above is seen here and settled first.
	 * (The compare-and-exchange in writer_collect is a full barrier.)
	 */
	nres = writer_collect_resolves(W.resolves);

	/*
	 * Once a second, settle the pending transactions that ended without
	 * our hearing of it; checked here, so that a steady stream of requests
	 * cannot put it off.
	 */
	if (hash_get_num_entries(W.txns) > 0 &&
		TimestampDifferenceExceeds(W.last_sweep, GetCurrentTimestamp(),
								   BATPAK_SWEEP_INTERVAL_MS))
		W.sweep_due = true;
	if (n == 0 && nres == 0 && !W.sweep_due)
		return 0;

	if (pg_atomic_read_u32(&BatpakCtl->state) == BATPAK_STATE_FAILED)
	{
		char		msg[sizeof(BatpakCtl->failure) + 64];

		LWLockAcquire(&BatpakCtl->lock, LW_SHARED);
		snprintf(msg, sizeof(msg), "batpak store is unavailable: %s", BatpakCtl->failure);
		LWLockRelease(&BatpakCtl->lock);
		writer_refuse_all(group, n, ERRCODE_DATA_CORRUPTED, msg, NULL);
		writer_ack_resolves(W.resolves, nres, group, n);
		W.sweep_due = false;
		return n + nres;
	}

	MemoryContextReset(W.group_cxt);
	MemoryContextSwitchTo(W.group_cxt);
	writer_reset_group_tables();
	W.group = group;
	W.ngroup = n;
	committed_at = GetCurrentTimestamp();
	first_seq = W.next_seq;

	for (int i = 0; i < nres; i++)
	{
		WriterTxn  *t = hash_search(W.txns, &W.resolves[i].top, HASH_FIND, NULL);

		if (t != NULL)
			writer_resolve_txn(t, W.resolves[i].lsn, false);
	}
	if (W.sweep_due)
		writer_sweep();

	/* a fault a test asked for applies to the whole group (batpak.c) */
	W.group_fault = BATPAK_FAULT_NONE;
	pause = false;
	for (int i = 0; i < n; i++)
	{
		/* the pause is not an I/O fault: it must not hide one */
		if (group[i].req->fault == BATPAK_FAULT_ANSWER_PAUSE)
			pause = true;
		else if (group[i].req->fault > BATPAK_FAULT_NOTIFY)
			W.group_fault = group[i].req->fault;
	}

	for (int i = 0; i < n; i++)
	{
		writer_process_request(&group[i], committed_at);
		if (group[i].ok && group[i].req->synchronous)
			sync = true;
		/* the xids in the frames must be in the WAL first, see xact.c */
		if (group[i].ok && group[i].req->xid_lsn != 0)
			W.marker_lsn = Max(W.marker_lsn, (XLogRecPtr) group[i].req->xid_lsn);
	}

	if (W.buf_len > W.pend_buf_off || W.next_seq > first_seq)
	{
		/*
		 * A failed write or sync leaves the files in an unknown state (a
		 * failed fsync may even have dropped dirty pages): answer the group
		 * and exit, so that the next writer recovers from what is on disk.
		 */
		PG_TRY();
		{
			writer_write_group(sync);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(W.group_cxt);
			edata = CopyErrorData();
			FlushErrorState();
			for (int i = 0; i < n; i++)
				if (group[i].ok)
					writer_set_error(group[i].req, edata->sqlerrcode,
									 "The call's events were not acknowledged; the writer discards what it wrote after its last successful sync, restarts and recovers from the segment files.",
									 "%s", edata->message);
			for (int i = 0; i < n; i++)
				writer_reply(&group[i]);
			if (W.group_fault == BATPAK_FAULT_DISCARD_CRASH)
				W.discard_crash_at = W.write_off;
			W.group_fault = BATPAK_FAULT_NONE;

			/*
			 * Not serving from here on: a reader that meets the zeros
			 * (batpak_reader_try_frame) is told the writer stopped rather
			 * than that the store is damaged.
			 */
			batpak_set_state(BATPAK_STATE_STOPPED);
			/* a failure here leaves io_failed set for the successor */
			PG_TRY();
			{
				writer_discard_unsynced();
			}
			PG_CATCH();
			{
				EmitErrorReport();
				FlushErrorState();
			}
			PG_END_TRY();
			ereport(FATAL,
					(errcode(edata->sqlerrcode),
					 errmsg("batpak writer stops after an I/O error: %s", edata->message)));
		}
		PG_END_TRY();
		if (!sync)
		{
			if (!W.unsynced)
				W.unsynced_since = committed_at;
			W.unsynced = true;
		}
	}
	if (W.next_seq > first_seq)
	{
		writer_publish(0, W.npubs);
		pg_atomic_fetch_add_u64(&BatpakCtl->counters.events_written,
								W.next_seq - first_seq);

		/*
		 * The index entries must be visible before the frontiers that let
		 * readers look at them.
		 */
		pg_write_barrier();
		pg_atomic_write_u64(&BatpakCtl->written_seq, W.next_seq - 1);
		if (sync)
			pg_atomic_write_u64(&BatpakCtl->durable_seq, W.next_seq - 1);
	}
	/* also after resolutions alone: a commit or rollback moves it */
	pg_write_barrier();
	pg_atomic_write_u64(&BatpakCtl->visible_seq,
						writer_visible_frontier(W.next_seq - 1));

	/*
	 * A synchronous request answered only with receipts of earlier
	 * asynchronous appends wrote nothing, so nothing above synced: those
	 * events must be durable before it is told they exist.
	 */
	if (sync && W.unsynced)
		writer_flush_async(true);
	if (pause)
		writer_answer_pause(group, n);
	W.group_fault = BATPAK_FAULT_NONE;
	pg_atomic_fetch_add_u64(&BatpakCtl->counters.groups, 1);

	for (int i = 0; i < n; i++)
		writer_reply(&group[i]);
	writer_ack_resolves(W.resolves, nres, group, n);
	W.group = NULL;
	W.ngroup = 0;

	/* after the replies: consumers come second (see notify.c) */
	writer_wake_consumers();
	return n + nres;
}

/* Sync asynchronously appended events once batpak.flush_delay has passed */
static void
writer_flush_async(bool force)
{
	if (!W.unsynced)
		return;
	if (!force &&
		!TimestampDifferenceExceeds(W.unsynced_since, GetCurrentTimestamp(),
									batpak_flush_delay_ms))
		return;
	writer_fsync_fd(W.fd, W.segno);
	writer_synced();
}

/*
 * Everything written so far is on disk: the events of the groups before
 * this one (written_seq) are durable now.  Every sync goes through here,
 * because a sync that leaves durable_seq behind also clears W.unsynced, and
 * nothing would then move durable_seq until a later group wrote events: a
 * rotation for a request that is then refused, or a group of resolution
 * markers and idempotent hits, used to leave the asynchronous events before
 * it out of the cursors' and notifications' reach on a quiet store.  The
 * current group's own events become durable with their publication at the
 * group's end (writer_serve_group), after their index entries.
 */
static void
writer_synced(void)
{
	W.unsynced = false;
	pg_atomic_write_u64(&BatpakCtl->durable_seq,
						pg_atomic_read_u64(&BatpakCtl->written_seq));
}

/*
 * Wake cursor_wait sleepers and the notifier if the consumer horizon moved
 * since we last did.  Not while recovering: sleepers would wake into a store
 * that is not ready (the READY transition wakes them).
 */
static void
writer_wake_consumers(void)
{
	uint64		horizon = batpak_consumer_horizon();

	if (horizon == W.horizon ||
		pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)
		return;
	W.horizon = horizon;
	batpak_frontiers_moved();
}

/* ----------------------------------------------------------------
 * The control file
 * ----------------------------------------------------------------
 */

/*
 * Record the last sync point (BatpakCtl->synced_segno/off) in the control
 * file if it moved, at most once a second unless forced.  Written to a
 * temporary file, synced and renamed into place (durable_rename), so the
 * file is always whole.  It only ever names a point that was synced before,
 * so the segments never legitimately end before it.  A failure (a full
 * disk) is a WARNING: the file only serves to detect damage, and the next
 * try comes a second later.  Integers are in the machine's byte order, as
 * in pg_control: the file never leaves its cluster's machine type.
 */
static bool
writer_control_behind(void)
{
	return BatpakCtl->synced_segno != 0 &&
		(BatpakCtl->synced_segno != W.control_segno ||
		 BatpakCtl->synced_off != W.control_off);
}

static void
writer_write_control(bool force)
{
	char		buf[BATPAK_CONTROL_SIZE];
	uint32		segno = BatpakCtl->synced_segno;
	uint64		off = BatpakCtl->synced_off;
	pg_crc32c	crc;
	int			fd;

	/* only a ready writer knows its store id and a sync point of its own */
	if (!writer_control_behind() ||
		pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)
		return;
	if (!force &&
		!TimestampDifferenceExceeds(W.control_at, GetCurrentTimestamp(),
									BATPAK_CONTROL_INTERVAL_MS))
		return;
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "BATPAKCT", 8);
	buf[8] = BATPAK_CONTROL_VERSION;
	memcpy(buf + 12, &segno, 4);
	memcpy(buf + 16, &off, 8);
	memcpy(buf + 24, W.store_id, 16);
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, buf, BATPAK_CONTROL_SIZE - 4);
	FIN_CRC32C(crc);
	memcpy(buf + BATPAK_CONTROL_SIZE - 4, &crc, 4);

	W.control_at = GetCurrentTimestamp();
	fd = BasicOpenFilePerm(BATPAK_CONTROL_TMP, O_RDWR | O_CREAT | O_TRUNC | PG_BINARY,
						   pg_file_create_mode);
	if (fd < 0 ||
		pg_pwrite(fd, buf, sizeof(buf), 0) != sizeof(buf) ||
		pg_fsync(fd) != 0)
	{
		int			save_errno = errno ? errno : ENOSPC;

		if (fd >= 0)
			close(fd);
		errno = save_errno;
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", BATPAK_CONTROL_TMP)));
		return;
	}
	close(fd);
	if (durable_rename(BATPAK_CONTROL_TMP, BATPAK_CONTROL_FILE, WARNING) != 0)
		return;
	W.control_segno = segno;
	W.control_off = off;
}

/*
 * Read the control file: true and the sync point (segno, off) if there is one.  A damaged
 * one fails the store (message set in *why).
 */
static bool
writer_read_control(uint32 *segno, uint64 *off, uint8 *store_id, const char **why)
{
	char		buf[BATPAK_CONTROL_SIZE + 1];
	pg_crc32c	crc;
	pg_crc32c	stored;
	int			fd = BasicOpenFile(BATPAK_CONTROL_FILE, O_RDONLY | PG_BINARY);
	ssize_t		n;

	*why = NULL;
	if (fd < 0)
	{
		if (errno == ENOENT)
			return false;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open \"%s\": %m", BATPAK_CONTROL_FILE)));
	}
	n = pg_pread(fd, buf, sizeof(buf), 0);
	close(fd);
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, buf, BATPAK_CONTROL_SIZE - 4);
	FIN_CRC32C(crc);
	memcpy(&stored, buf + BATPAK_CONTROL_SIZE - 4, 4);
	if (n != BATPAK_CONTROL_SIZE || memcmp(buf, "BATPAKCT", 8) != 0 ||
		buf[8] != BATPAK_CONTROL_VERSION || !EQ_CRC32C(crc, stored))
	{
		*why = "the control file is damaged";
		return true;
	}
	memcpy(segno, buf + 12, 4);
	memcpy(off, buf + 16, 8);
	memcpy(store_id, buf + 24, 16);
	return true;
}

/* ----------------------------------------------------------------
 * Recovery
 * ----------------------------------------------------------------
 */
static int
writer_cmp_u32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* Segment numbers present in the directory, sorted */
static uint32 *
writer_list_segments(int *count)
{
	DIR		   *dir;
	struct dirent *de;
	uint32	   *segs = palloc(sizeof(uint32) * 16);
	int			n = 0,
				max = 16;

	dir = AllocateDir(BATPAK_DIR);
	while ((de = ReadDir(dir, BATPAK_DIR)) != NULL)
	{
		unsigned int segno;
		char		tail;

		if (strlen(de->d_name) != 12 ||
			sscanf(de->d_name, "%08X.se%c", &segno, &tail) != 2 || tail != 'g')
			continue;
		if (n >= max)
		{
			max *= 2;
			segs = repalloc(segs, sizeof(uint32) * max);
		}
		segs[n++] = segno;
	}
	FreeDir(dir);
	qsort(segs, n, sizeof(uint32), writer_cmp_u32);
	*count = n;
	return segs;
}

static bool writer_all_zero(int fd, uint64 from, uint64 to);

/*
 * Is the damaged frame at off (the first one that failed) the torn end of
 * the data rather than corruption?  Yes if it runs past the end of the file,
 * or if everything after it is zero and its own bytes end in a run of zeros
 * that a lost write explains: one that starts on a 512-byte sector boundary
 * (the unit in which a write reaches the disk), or one of at least 8 bytes
 * (the frame ends with its hash, and 8 zero bytes there by chance has odds
 * of 2^-64).  A complete frame that fails its CRC with its end in place is
 * corruption: recovery must fail closed on it.
 */
static bool
writer_torn_frame(int fd, uint64 off, uint64 file_size, int rc)
{
	char		len_bytes[4];
	char		tail[512];
	uint64		end;
	Size		n;
	Size		zeros = 0;

	if (rc == BATPAK_DECODE_INCOMPLETE)
		return true;
	if (pg_pread(fd, len_bytes, 4, (off_t) off) != 4)
		return true;
	end = off + BATPAK_FRAME_HEADER_SIZE + (uint64) batpak_le32(len_bytes);
	if (end > file_size)
		return true;
	if (!writer_all_zero(fd, end, file_size))
		return false;
	n = (Size) Min(sizeof(tail), end - off);
	if (pg_pread(fd, tail, n, (off_t) (end - n)) != (ssize_t) n)
		return false;
	while (zeros < n && tail[n - 1 - zeros] == 0)
		zeros++;
	return zeros >= 8 || (zeros > 0 && (end - zeros) % 512 == 0);
}

/*
 * Does an intact frame follow the damaged one at off?  A torn tail is the
 * end of what was written: nothing intact can come after it.  A damaged
 * frame with intact frames after it is corruption, even when its (damaged)
 * length makes it look cut off by the end of the file or by the zeros.  We
 * look for the frames that must come next, cheaply: an event frame carries
 * global sequence next_seq (if the damaged frame was a marker) or
 * next_seq + 1; a position is checked further (length, CRC) only when the
 * 8 bytes there match one of them.  Returns the offset found, or 0.
 */
static uint64
writer_intact_frame_after(int fd, uint64 off, uint64 file_size)
{
	Size		bufsize = 1024 * 1024;
	char	   *buf = palloc(bufsize + 16);
	uint64		want[2];
	uint64		found = 0;
	uint64		pos = off + 1;

	want[0] = W.next_seq;
	want[1] = W.next_seq + 1;
	while (found == 0 && pos + BATPAK_FRAME_HEADER_SIZE + 8 <= file_size)
	{
		Size		chunk = (Size) Min((uint64) bufsize + 16, file_size - pos);
		ssize_t		n = pg_pread(fd, buf, chunk, (off_t) pos);

		if (n < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read segment file at offset " UINT64_FORMAT ": %m", pos)));
		if (n < BATPAK_FRAME_HEADER_SIZE + 8)
			break;
		for (Size i = 0; i + BATPAK_FRAME_HEADER_SIZE + 8 <= (Size) n && i < bufsize; i++)
		{
			uint64		seq;
			uint64		body_len;
			char	   *frame;
			BatpakFrame f;
			const char *why;

			memcpy(&seq, buf + i + BATPAK_FRAME_HEADER_SIZE, 8);
#ifdef WORDS_BIGENDIAN
			seq = pg_bswap64(seq);
#endif
			if (seq != want[0] && seq != want[1])
				continue;
			body_len = batpak_le32(buf + i);
			if (body_len < BATPAK_BODY_FIXED_SIZE + 2 * BATPAK_HASH_LEN ||
				body_len > BATPAK_MAX_REQUEST_SIZE ||
				pos + i + BATPAK_FRAME_HEADER_SIZE + body_len > file_size)
				continue;
			frame = MemoryContextAllocHuge(CurrentMemoryContext,
										   BATPAK_FRAME_HEADER_SIZE + body_len);
			if (pg_pread(fd, frame, BATPAK_FRAME_HEADER_SIZE + body_len, (off_t) (pos + i)) ==
				(ssize_t) (BATPAK_FRAME_HEADER_SIZE + body_len) &&
				batpak_frame_decode(frame, BATPAK_FRAME_HEADER_SIZE + body_len, &f, &why) ==
				BATPAK_DECODE_OK)
				found = pos + i;
			pfree(frame);
			if (found != 0)
				break;
		}
		pos += Min((Size) n, bufsize);
	}
	pfree(buf);
	return found;
}

static bool
writer_all_zero(int fd, uint64 from, uint64 to)
{
	char		buf[8192];

	while (from < to)
	{
		Size		chunk = Min(sizeof(buf), to - from);
		ssize_t		n = pg_pread(fd, buf, chunk, (off_t) from);

		if (n <= 0)
			return false;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != 0)
				return false;
		from += n;
	}
	return true;
}

/* Read the scan buffer from off; returns how many bytes it holds */
static Size
writer_scan_fill(int fd, uint32 segno, char *buf, Size bufsize, uint64 off,
				 uint64 *buf_start)
{
	ssize_t		n = pg_pread(fd, buf, bufsize, (off_t) off);

	if (n < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read segment %08X.seg: %m", segno)));
	*buf_start = off;
	return (Size) n;
}

/*
 * Scan one segment, entering its complete batches in the index.  Returns
 * false if the store must fail (message set); *cut is set to the offset
 * where a torn tail begins, or 0 if the segment ends cleanly.
 */
static bool
writer_scan_segment(uint32 segno, int fd, uint64 file_size, bool newest,
					uint64 *cut, uint64 *data_end)
{
	Size		bufsize = 8 * 1024 * 1024;
	char	   *buf = palloc(bufsize);
	uint64		buf_start = 0;
	Size		buf_len = 0;
	uint64		off = BATPAK_SEGMENT_HEADER_SIZE;
	uint64		batch_start = 0;
	bool		in_batch = false;
	const char *why = NULL;

	*cut = 0;
	*data_end = file_size;
	writer_reset_group_tables();
	while (off < file_size)
	{
		BatpakFrame f;
		int			rc;
		uint64		avail_file = file_size - off;
		WriterHead *h;
		WriterPub  *pub;
		uint8		hash[BATPAK_HASH_LEN];
		Size		fsize;

		/* make sure the buffer holds the header, then the whole frame */
		if (off < buf_start || off + Min(avail_file, BATPAK_FRAME_HEADER_SIZE) > buf_start + buf_len)
			buf_len = writer_scan_fill(fd, segno, buf, bufsize, off, &buf_start);
		rc = batpak_frame_decode(buf + (off - buf_start), buf_start + buf_len - off, &f, &why);
		if (rc == BATPAK_DECODE_INCOMPLETE && avail_file >= BATPAK_FRAME_HEADER_SIZE)
		{
			uint32		body_len = batpak_le32(buf + (off - buf_start));

			if ((uint64) body_len + BATPAK_FRAME_HEADER_SIZE <= avail_file)
			{
				/* complete in the file, not in the buffer: read it whole */
				Size		need = (Size) body_len + BATPAK_FRAME_HEADER_SIZE;

				if (need > bufsize)
				{
					pfree(buf);
					bufsize = need;
					buf = MemoryContextAllocHuge(CurrentMemoryContext, bufsize);
				}
				buf_len = writer_scan_fill(fd, segno, buf, bufsize, off, &buf_start);
				rc = batpak_frame_decode(buf, buf_len, &f, &why);
			}
		}
		if (rc != BATPAK_DECODE_OK && writer_all_zero(fd, off, file_size))
		{
			/* zero-filled preallocation: the clean end of the data */
			*data_end = off;
			break;
		}
		if (rc != BATPAK_DECODE_OK && writer_torn_frame(fd, off, file_size, rc))
		{
			uint64		intact = writer_intact_frame_after(fd, off, file_size);

			/* looks torn, but what follows shows it is not the end */
			if (intact != 0)
			{
				writer_fail_store("corrupt frame in segment %08X.seg at offset " UINT64_FORMAT ": %s, and an intact frame follows at offset " UINT64_FORMAT,
								  segno, off, why ? why : "damaged frame", intact);
				return false;
			}
			/* a frame cut short by a crash: a torn tail */
			if (!newest)
			{
				writer_fail_store("truncated frame in segment %08X.seg at offset " UINT64_FORMAT ", which is not the newest segment",
								  segno, off);
				return false;
			}
			*cut = in_batch ? batch_start : off;
			break;
		}
		if (rc == BATPAK_DECODE_CORRUPT)
		{
			writer_fail_store("corrupt frame in segment %08X.seg at offset " UINT64_FORMAT ": %s",
							  segno, off, why);
			return false;
		}

		/* a resolution marker: replay it (markers never sit inside a batch) */
		if (f.flags & BATPAK_FLAG_MARKERS)
		{
			WriterTxn  *t;

			if (in_batch)
			{
				writer_fail_store("corrupt frame in segment %08X.seg at offset " UINT64_FORMAT ": resolution marker inside a batch",
								  segno, off);
				return false;
			}
			t = hash_search(W.txns, &f.top_xid, HASH_FIND, NULL);
			if (t != NULL)
			{
				if (f.flags & BATPAK_FLAG_MARKER_COMMIT)
					writer_txn_commit(t);
				else
				{
					int			nxids = (int) (f.payload_len / sizeof(uint64));
					uint64	   *xids = palloc(sizeof(uint64) * Max(nxids, 1));

					for (int i = 0; i < nxids; i++)
						xids[i] = batpak_marker_xid(&f, i);
					writer_sort_xids(xids, &nxids);
					writer_txn_discard(t, 0, xids, nxids, nxids == 0);
					pfree(xids);
					if (t->nevents == 0)
						writer_txn_remove(t);
				}
			}
			off += BATPAK_FRAME_HEADER_SIZE + f.body_len;
			continue;
		}

		/* the frame is intact: check its place in the store */
		if (f.global_seq != W.next_seq)
			why = "global sequence out of order";
		else if ((f.flags & BATPAK_FLAG_BATCH_BEGIN) && in_batch)
			why = "batch begins inside another batch";
		else if (!(f.flags & BATPAK_FLAG_BATCH_BEGIN) && !in_batch)
			why = "frame outside a batch";
		if (why == NULL)
		{
			batpak_hash_key(f.entity, f.entity_len, hash);
			h = writer_head(hash);
			if (f.entity_seq != h->last_seq + 1)
				why = "entity sequence out of order";
			else if (h->pending_top != 0 && h->pending_top != f.top_xid)
				why = "event follows pending events of another transaction without their resolution marker";
			else if (memcmp(f.prev_hash, h->last_hash, BATPAK_HASH_LEN) != 0)
				why = "previous hash does not match the entity's last event";
		}
		if (why != NULL)
		{
			writer_fail_store("corrupt frame in segment %08X.seg at offset " UINT64_FORMAT ": %s",
							  segno, off, why);
			return false;
		}

		if (f.flags & BATPAK_FLAG_BATCH_BEGIN)
		{
			in_batch = true;
			batch_start = off;
		}
		pub = writer_push_pub();
		pub->global_seq = f.global_seq;
		pub->entity_seq = f.entity_seq;
		pub->pos = BATPAK_POS(segno, off);
		memcpy(pub->key, hash, BATPAK_KEY_LEN);
		memcpy(pub->hash, f.event_hash, BATPAK_HASH_LEN);
		memcpy(pub->prev_hash, f.prev_hash, BATPAK_HASH_LEN);
		pub->xid = f.xid;
		pub->top = f.top_xid;
		pub->has_idem = f.idem_len > 0;
		if (pub->has_idem)
			batpak_hash_key(f.idem, f.idem_len, pub->idem);
		pub->has_corr = memcmp(f.correlation_id.data, f.event_id.data, 16) != 0;
		pub->corr = f.correlation_id;
		h->last_seq = f.entity_seq;
		memcpy(h->last_hash, f.event_hash, BATPAK_HASH_LEN);
		if (f.top_xid != 0 && h->pending_top == 0)
		{
			h->pending_top = f.top_xid;
			h->pending_xid = f.xid;
		}
		W.next_seq++;

		fsize = BATPAK_FRAME_HEADER_SIZE + f.body_len;
		off += fsize;
		if (f.flags & BATPAK_FLAG_BATCH_END)
		{
			writer_publish(0, W.npubs);
			W.npubs = 0;
			in_batch = false;
			/* keep the heads table small: published heads are in the index */
			if (hash_get_num_entries(W.heads) > 4096)
			{
				MemoryContextReset(W.group_cxt);
				writer_reset_group_tables();
			}
		}
	}
	if (*cut != 0)
		*data_end = *cut;
	if (in_batch && *cut == 0)
	{
		if (!newest)
		{
			writer_fail_store("batch without end mark in segment %08X.seg at offset " UINT64_FORMAT ", which is not the newest segment",
							  segno, batch_start);
			return false;
		}
		*cut = batch_start;
		*data_end = batch_start;
	}
	/* frames of a discarded batch were never published */
	if (*cut != 0)
		W.next_seq = W.published_seq + 1;
	W.npubs = 0;
	pfree(buf);
	MemoryContextReset(W.group_cxt);
	return true;
}

/*
 * Is segment segno a file whose creation did not finish: no room for a
 * frame, and no valid header?
 */
static bool
writer_unfinished_segment(uint32 segno)
{
	char		path[MAXPGPATH];
	char		header[BATPAK_SEGMENT_HEADER_SIZE];
	struct stat st;
	uint8		store_id[16];
	const char *why;
	int			fd;
	bool		valid;

	batpak_segment_path(path, segno);
	if (stat(path, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat segment \"%s\": %m", path)));
	if (st.st_size > BATPAK_SEGMENT_HEADER_SIZE)
		return false;
	if (st.st_size < BATPAK_SEGMENT_HEADER_SIZE)
		return true;
	fd = writer_open_segment(segno, false);
	memset(store_id, 0, sizeof(store_id));
	valid = pg_pread(fd, header, sizeof(header), 0) == sizeof(header) &&
		batpak_check_segment_header(header, segno, store_id, &why);
	close(fd);
	return !valid;
}

/*
 * After a failed write or sync (BatpakCtl->io_failed), make the newest
 * segment end where its last successful sync left it: overwrite everything
 * after that point with zeros, sync, and remove any later segment (one whose
 * creation failed).  What lies there was never acknowledged, except events
 * appended with batpak.synchronous_commit = off that were waiting for their
 * sync, which the documentation says a failure can lose.  Not truncated:
 * a backend may still be reading a mapped page of an asynchronous event
 * there (a read past the end of a file is SIGBUS); zeros are the clean end
 * recovery knows, and they reuse the allocated blocks, so this works on a
 * full disk too.
 *
 * Called by the failing writer before it exits and, if that did not get
 * through, by its successor before recovery; an error leaves the flag set
 * for the next try.  A crash of the whole server in between loses the mark
 * (it lives in shared memory): recovery then takes the files as they are,
 * as PostgreSQL's crash recovery takes the WAL it finds.  The zeros go
 * from the end of the file backwards, so that a crash in the middle leaves
 * the shape recovery knows, frames and then zeros (at worst a few of the
 * unacknowledged frames stay, as after a crash before the discard, and the
 * boundary looks like a torn tail).  Forwards, it left zeros, then frames,
 * which recovery must refuse as damage.  That holds for a crash of the
 * server, whose writes the page cache keeps in order; after a power loss the
 * blocks may reach the disk in any order, as for any unsynced write.
 */
static void
writer_discard_unsynced(void)
{
	uint32		segno = BatpakCtl->synced_segno;
	uint64		off = BatpakCtl->synced_off;
	char		path[MAXPGPATH];
	struct stat st;
	int			nsegs;
	uint32	   *segs;
	bool		removed = false;
	int			fd;

	if (!BatpakCtl->io_failed)
		return;
	if (segno == 0)
	{
		/* nothing was synced since the server started: recovery decides */
		BatpakCtl->io_failed = false;
		return;
	}
	if (W.fd >= 0)
	{
		close(W.fd);
		W.fd = -1;
	}

	segs = writer_list_segments(&nsegs);
	for (int i = 0; i < nsegs; i++)
	{
		if (segs[i] <= segno)
			continue;
		batpak_segment_path(path, segs[i]);
		if (unlink(path) != 0 && errno != ENOENT)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not remove segment \"%s\": %m", path)));
		removed = true;
		ereport(LOG,
				(errmsg("batpak: removed segment %08X.seg, created after the last successful sync",
						segs[i])));
	}
	if (removed)
		fsync_fname(BATPAK_DIR, true);

	batpak_segment_path(path, segno);
	fd = BasicOpenFilePerm(path, O_RDWR | PG_BINARY, pg_file_create_mode);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open segment file \"%s\": %m", path)));
	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat segment %08X.seg: %m", segno)));
	if ((uint64) st.st_size > off)
	{
		static char zeros[BLCKSZ];

		/*
		 * Everything up to the end of the file, without reading it first: a
		 * read can fail on the disk that just failed a write, and the blocks
		 * are allocated, so this needs no free space.
		 */
		for (uint64 end = (uint64) st.st_size; end > off;)
		{
			uint64		start = end - Min(sizeof(zeros), end - off);

			writer_pwrite(fd, segno, zeros, end - start, start);
			end = start;

			/*
			 * Test fault: crash once the zeros reach into the failed group's
			 * frames, with some of them left to zero; recovery then finds
			 * the shape a real crash here leaves (see 012_faults).
			 */
			if (W.discard_crash_at != 0 && segno == W.segno &&
				start < W.discard_crash_at && start > off)
				ereport(PANIC,
						(errmsg("injected fault: crash in the middle of the discard of segment %08X.seg at offset " UINT64_FORMAT,
								segno, start)));
		}
		if (pg_fsync(fd) != 0)
			writer_io_error("fsync", segno, off);
		ereport(LOG,
				(errmsg("batpak: discarded " UINT64_FORMAT " bytes of segment %08X.seg written after its last successful sync at offset " UINT64_FORMAT,
						(uint64) st.st_size - off, segno, off)));
	}
	close(fd);
	BatpakCtl->io_failed = false;
}

/* Rebuild the index from the segment files; false if the store failed */
static bool
writer_recover(void)
{
	int			nsegs;
	uint32	   *segs;
	struct stat st;
	uint64		total = 0;
	bool		has_control;
	uint32		control_segno = 0;
	uint64		control_off = 0;
	uint8		control_store[16];
	const char *why;

	if (stat(BATPAK_DIR, &st) != 0)
	{
		if (errno != ENOENT)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat directory \"%s\": %m", BATPAK_DIR)));
		if (MakePGDirectory(BATPAK_DIR) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", BATPAK_DIR)));
		fsync_fname(".", true);
	}

	W.next_seq = 1;
	W.published_seq = 0;
	memset(W.store_id, 0, sizeof(W.store_id));
	segs = writer_list_segments(&nsegs);
	has_control = writer_read_control(&control_segno, &control_off, control_store, &why);
	if (has_control && why != NULL && nsegs > 0)
	{
		writer_fail_store("%s (\"%s\"); remove it to start without the truncation check",
						  why, BATPAK_CONTROL_FILE);
		return false;
	}
	if (has_control && nsegs == 0 && why == NULL &&
		(control_segno > 1 || control_off > BATPAK_SEGMENT_HEADER_SIZE))
	{
		/* the most thorough truncation of all: never start afresh silently */
		writer_fail_store("no segment file, but segment %08X.seg was synced up to offset " UINT64_FORMAT "; to start a new, empty store remove \"%s\" too",
						  control_segno, control_off, BATPAK_CONTROL_FILE);
		return false;
	}
	if (has_control && nsegs == 0)
	{
		/* only a header was ever synced: nothing to lose, start afresh */
		if (unlink(BATPAK_CONTROL_FILE) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not remove \"%s\": %m", BATPAK_CONTROL_FILE)));
		has_control = false;
	}
	if (nsegs > 0 && has_control && segs[nsegs - 1] <= control_segno &&
		(segs[nsegs - 1] < control_segno || control_off > BATPAK_SEGMENT_HEADER_SIZE) &&
		writer_unfinished_segment(segs[nsegs - 1]))
	{
		writer_fail_store("segment %08X.seg is truncated at offset 0: it was synced up to offset " UINT64_FORMAT " of segment %08X.seg",
						  segs[nsegs - 1], control_off, control_segno);
		return false;
	}
	if (nsegs > 0 && writer_unfinished_segment(segs[nsegs - 1]))
	{
		char		path[MAXPGPATH];

		/*
		 * A crash interrupted writer_create_segment before the header was
		 * synced: the file cannot hold a frame (frames follow the synced
		 * header).  Remove it; the segment before it is the newest.
		 */
		batpak_segment_path(path, segs[nsegs - 1]);
		if (unlink(path) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not remove unfinished segment \"%s\": %m", path)));
		fsync_fname(BATPAK_DIR, true);
		ereport(LOG,
				(errmsg("batpak: removed unfinished segment %08X.seg (its creation was interrupted)",
						segs[nsegs - 1])));
		nsegs--;
	}
	pg_atomic_write_u32(&BatpakCtl->segments, nsegs);

	if (nsegs == 0)
	{
		randombytes_buf(W.store_id, sizeof(W.store_id));
		pg_atomic_write_u32(&BatpakCtl->segments, 0);
		pg_atomic_write_u64(&BatpakCtl->store_bytes, 0);
		W.fd = writer_create_segment(1);
		W.segno = 1;
		W.write_off = BATPAK_SEGMENT_HEADER_SIZE;
		W.alloc_end = BATPAK_SEGMENT_HEADER_SIZE;
		ereport(LOG, (errmsg("batpak: created a new store in \"%s\"", BATPAK_DIR)));
		return true;
	}

	for (int i = 0; i < nsegs; i++)
	{
		uint32		segno = segs[i];
		bool		newest = (i == nsegs - 1);
		char		header[BATPAK_SEGMENT_HEADER_SIZE];
		const char *why = NULL;
		int			fd;
		uint64		cut;
		uint64		data_end;

		if (segno != (uint32) i + 1)
		{
			writer_fail_store("segment %08X.seg is missing (found %08X.seg)", i + 1, segno);
			return false;
		}
		fd = writer_open_segment(segno, false);
		if (fstat(fd, &st) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat segment %08X.seg: %m", segno)));
		if (st.st_size < BATPAK_SEGMENT_HEADER_SIZE ||
			pg_pread(fd, header, sizeof(header), 0) != sizeof(header))
			why = "segment header is truncated";
		else
			(void) batpak_check_segment_header(header, segno, W.store_id, &why);
		if (why != NULL)
		{
			close(fd);
			writer_fail_store("corrupt frame in segment %08X.seg at offset 0: %s", segno, why);
			return false;
		}
		if (!writer_scan_segment(segno, fd, (uint64) st.st_size, newest, &cut,
								 &data_end))
		{
			close(fd);
			return false;
		}
		if (cut != 0)
		{
			/* only the newest segment is cut; it is synced below */
			Assert(newest);
			/* a tail can only be torn after the last sync: check first */
			if (has_control &&
				(segno < control_segno || (segno == control_segno && cut < control_off)))
			{
				close(fd);
				writer_fail_store("segment %08X.seg is damaged or truncated at offset " UINT64_FORMAT ": it was synced up to offset " UINT64_FORMAT " of segment %08X.seg",
								  segno, cut, control_off, control_segno);
				return false;
			}
			writer_truncate(fd, segno, cut);
			ereport(LOG,
					(errmsg("batpak: truncated torn tail of segment %08X.seg at offset " UINT64_FORMAT " (" UINT64_FORMAT " bytes discarded)",
							segno, cut, (uint64) st.st_size - cut)));
			st.st_size = cut;
		}
		else if (data_end != (uint64) st.st_size && !newest)
		{
			writer_fail_store("segment %08X.seg ends in zeros at offset " UINT64_FORMAT ", which is not the newest segment",
							  segno, data_end);
			close(fd);
			return false;
		}
		total += data_end;
		if (newest)
		{
			/*
			 * The previous writer may have died between writing a group and
			 * syncing it: its frames are in the page cache, so the scan saw
			 * them complete.  Make them durable before serving, or an
			 * idempotent retry could be acknowledged with a receipt for an
			 * event a power loss would still take away.
			 */
			if (pg_fsync(fd) != 0)
				writer_io_error("fsync", segno, data_end);
			BatpakCtl->synced_segno = segno;
			BatpakCtl->synced_off = data_end;
			W.fd = fd;
			W.segno = segno;
			W.write_off = data_end;
			W.alloc_end = st.st_size;
		}
		else
			close(fd);
	}
	pg_atomic_write_u64(&BatpakCtl->store_bytes, total);

	/* the segments must reach the last sync point the control file saw */
	if (has_control)
	{
		if (memcmp(control_store, W.store_id, sizeof(W.store_id)) != 0)
		{
			writer_fail_store("the control file \"%s\" belongs to another store than the segments",
							  BATPAK_CONTROL_FILE);
			return false;
		}
		if (W.segno < control_segno ||
			(W.segno == control_segno && W.write_off < control_off))
		{
			writer_fail_store("segment %08X.seg is truncated at offset " UINT64_FORMAT ": it was synced up to offset " UINT64_FORMAT " of segment %08X.seg",
							  W.segno, W.write_off, control_off, control_segno);
			return false;
		}
		W.control_segno = control_segno;
		W.control_off = control_off;
	}
	return true;
}

/* ----------------------------------------------------------------
 * Main
 * ----------------------------------------------------------------
 */
static void
writer_setup_index(void)
{
	LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
	if (BatpakCtl->dsa != DSM_HANDLE_INVALID)
	{
		/* release the previous writer's index; readers still on it keep it */
		dsa_area   *old = dsa_attach(BatpakCtl->dsa);

		dsa_unpin(old);
		dsa_detach(old);
		BatpakCtl->dsa = DSM_HANDLE_INVALID;
	}
	batpak_index_create(BatpakCtl, &W.area, &W.idx);
	W.incarnation = pg_atomic_add_fetch_u32(&BatpakCtl->incarnation, 1);
	W.idx.incarnation = W.incarnation;
	BatpakCtl->writer_pid = MyProcPid;
	BatpakCtl->writer_latch = MyLatch;
	BatpakCtl->started_at = GetCurrentTimestamp();
	BatpakCtl->failure[0] = '\0';
	LWLockRelease(&BatpakCtl->lock);

	/*
	 * Backends still waiting on a request of an earlier writer learn from
	 * the new incarnation that it is gone: wake them now rather than at
	 * their timeout.  (None can have submitted to us yet: we are not ready.)
	 */
	writer_wake_waiters();
}

void
batpak_writer_main(Datum main_arg)
{
	WriterGroupReq *group;
	uint64		saved_committed;
	uint64		saved_aborted;
	uint64		saved_discarded;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);

	/*
	 * A query cancel (pg_cancel_backend, or a script cancelling everything
	 * in pg_stat_activity) must not stop the writer: the ERROR it raised at
	 * the next CHECK_FOR_INTERRUPTS made the worker exit, and every append
	 * waited for a restart and an index rebuild.  The writer runs no
	 * statement anybody could mean to cancel; like the checkpointer, it
	 * ignores SIGINT.  SIGTERM still stops it cleanly.
	 */
	pqsignal(SIGINT, SIG_IGN);
	BackgroundWorkerUnblockSignals();

	if (sodium_init() < 0)
		ereport(FATAL, (errmsg("could not initialize libsodium")));

	BackgroundWorkerInitializeConnection(batpak_database, NULL, 0);
	pgstat_report_appname("batpak writer");

	memset(&W, 0, sizeof(W));
	W.fd = -1;
	W.group_cxt = AllocSetContextCreate(TopMemoryContext, "batpak writer group",
										ALLOCSET_DEFAULT_SIZES);
	W.buf_cap = 1024 * 1024;
	W.buf = MemoryContextAllocHuge(TopMemoryContext, W.buf_cap);
	W.pubs = MemoryContextAllocHuge(TopMemoryContext, sizeof(WriterPub) * 1024);
	W.maxpubs = 1024;
	W.undo = MemoryContextAllocHuge(TopMemoryContext, sizeof(WriterUndo) * 1024);
	W.maxundo = 1024;
	group = MemoryContextAlloc(TopMemoryContext, sizeof(WriterGroupReq) * BatpakCtl->nslots);
	W.resolves = MemoryContextAlloc(TopMemoryContext, sizeof(WriterResolve) * BatpakCtl->nslots);
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(WriterTxn);
		ctl.hcxt = TopMemoryContext;
		W.txns = hash_create("batpak pending transactions", 64, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	batpak_set_state(BATPAK_STATE_STARTING);
	before_shmem_exit(writer_exit_hook, (Datum) 0);
	writer_setup_index();

	batpak_set_state(BATPAK_STATE_RECOVERING);
	writer_discard_unsynced();
	pg_atomic_write_u64(&BatpakCtl->written_seq, 0);
	pg_atomic_write_u64(&BatpakCtl->durable_seq, 0);
	pg_atomic_write_u64(&BatpakCtl->visible_seq, 0);
	pg_atomic_write_u64(&BatpakCtl->pending_transactions, 0);
	pg_atomic_write_u64(&BatpakCtl->pending_events, 0);
	saved_committed = pg_atomic_read_u64(&BatpakCtl->counters.transactions_committed);
	saved_aborted = pg_atomic_read_u64(&BatpakCtl->counters.transactions_aborted);
	saved_discarded = pg_atomic_read_u64(&BatpakCtl->counters.events_discarded);
	if (writer_recover())
	{
		/* replaying markers is not settling transactions: keep the counters */
		pg_atomic_write_u64(&BatpakCtl->counters.transactions_committed, saved_committed);
		pg_atomic_write_u64(&BatpakCtl->counters.transactions_aborted, saved_aborted);
		pg_atomic_write_u64(&BatpakCtl->counters.events_discarded, saved_discarded);
		pg_atomic_write_u64(&BatpakCtl->written_seq, W.next_seq - 1);
		pg_atomic_write_u64(&BatpakCtl->durable_seq, W.next_seq - 1);

		/*
		 * Settle the transactions whose markers the segments lack: the clog
		 * knows their outcome (PostgreSQL finished its own recovery before
		 * starting us).  Ones still in progress (only this process died)
		 * stay pending until their backends end them.  This serves no
		 * request: nobody submits before we are ready.  It also publishes
		 * the visible frontier.
		 */
		W.sweep_due = true;
		PG_TRY();
		{
			(void) writer_serve_group(group);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/*
			 * E.g. an xid the clog cannot answer for: fail closed and say
			 * why.  The error may have left locks held (XactTruncationLock in
			 * writer_xid_status): we stay up, so release them.
			 */
			LWLockReleaseAll();
			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			FlushErrorState();
			writer_fail_store("cannot settle the pending transactions of the segments: %s",
							  edata->message);
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	if (pg_atomic_read_u32(&BatpakCtl->state) == BATPAK_STATE_RECOVERING)
	{
		BatpakCtl->ready_at = GetCurrentTimestamp();
		LWLockAcquire(&BatpakCtl->lock, LW_EXCLUSIVE);
		BatpakCtl->io_error_code = 0;
		BatpakCtl->io_error[0] = '\0';
		LWLockRelease(&BatpakCtl->lock);
		ereport(LOG,
				(errmsg("batpak writer ready: " UINT64_FORMAT " events in %u segments, recovered in %ld ms",
						W.next_seq - 1, W.segno,
						(long) TimestampDifferenceMilliseconds(BatpakCtl->started_at,
															   BatpakCtl->ready_at))));
		W.horizon = batpak_consumer_horizon();
		pg_atomic_write_u64(&BatpakCtl->ready_seq, W.horizon);
		pg_memory_barrier();	/* ready_seq before the state: see notify.c */
		batpak_set_state(BATPAK_STATE_READY);
		batpak_frontiers_moved();
		writer_write_control(true);
	}

	for (;;)
	{
		long		timeout = -1;
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* drain: serve groups until no request is waiting */
		while (writer_serve_group(group) > 0)
		{
			/* under a steady load too: both are rate-limited */
			writer_flush_async(false);
			writer_write_control(false);
			CHECK_FOR_INTERRUPTS();
		}

		if (ShutdownRequestPending)
		{
			/* leave the newest segment exactly as long as its data */
			if (W.fd >= 0 && pg_atomic_read_u32(&BatpakCtl->state) == BATPAK_STATE_READY)
			{
				writer_truncate(W.fd, W.segno, W.write_off);
				W.alloc_end = W.write_off;
				W.unsynced = true;
			}
			writer_flush_async(true);
			writer_write_control(true);
			ereport(LOG, (errmsg("batpak writer shutting down")));
			proc_exit(1);		/* 1: restart me unless the server is stopping */
		}

		writer_flush_async(false);
		writer_wake_consumers();
		writer_write_control(false);
		if (W.unsynced)
		{
			timeout = batpak_flush_delay_ms;
			events |= WL_TIMEOUT;
		}
		if (writer_control_behind() &&
			pg_atomic_read_u32(&BatpakCtl->state) == BATPAK_STATE_READY)
		{
			/* come back to record the sync point (writer_write_control) */
			timeout = timeout < 0 ? BATPAK_CONTROL_INTERVAL_MS : Min(timeout, BATPAK_CONTROL_INTERVAL_MS);
			events |= WL_TIMEOUT;
		}
		if (hash_get_num_entries(W.txns) > 0)
		{
			timeout = timeout < 0 ? BATPAK_SWEEP_INTERVAL_MS : Min(timeout, BATPAK_SWEEP_INTERVAL_MS);
			events |= WL_TIMEOUT;
		}
		(void) WaitLatch(MyLatch, events, timeout, PG_WAIT_EXTENSION);
	}
}
