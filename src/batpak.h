/*-------------------------------------------------------------------------
 *
 * batpak.h
 *	  Shared declarations of the batpak event store: limits, shared-memory
 *	  structures, the on-disk frame format and the interfaces between the
 *	  writer, the submission queue, the index and the SQL functions.
 *
 * See docs/decisions.md for the file format and the error codes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATPAK_H
#define BATPAK_H

#include "fmgr.h"
#include "funcapi.h"
#include "lib/dshash.h"
#include "port/pg_bswap.h"
#include "port/atomics.h"
#include "port/pg_crc32c.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/array.h"
#include "utils/dsa.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Limits */
#define BATPAK_MAX_COORD_LEN		1024	/* entity, scope, idempotency key */
#define BATPAK_MAX_KIND_LEN			255
#define BATPAK_MAX_BATCH_EVENTS		100000
#define BATPAK_MAX_REQUEST_SIZE		((Size) 1024 * 1024 * 1024)
#define BATPAK_GROUP_SOFT_LIMIT		((Size) 64 * 1024 * 1024)
#define BATPAK_HASH_LEN				32
#define BATPAK_EVENT_NATTS			13
#define BATPAK_KEY_LEN				16	/* BLAKE2b-128 of entity / key text */
#define BATPAK_RESERVED_KIND_PREFIX "batpak."

/* GUC defaults (kB or ms) */
#define BATPAK_DEFAULT_SEGMENT_SIZE_KB	(256 * 1024)
#define BATPAK_DEFAULT_MAX_EVENT_KB		(16 * 1024)
#define BATPAK_DEFAULT_FLUSH_DELAY_MS	10
#define BATPAK_DEFAULT_WRITER_TIMEOUT_MS 10000

/* Files */
#define BATPAK_DIR					"batpak"
#define BATPAK_SEGMENT_MAGIC		"BATPAKSG"
#define BATPAK_FORMAT_VERSION		2
#define BATPAK_SEGMENT_HEADER_SIZE	64
#define BATPAK_FRAME_HEADER_SIZE	8	/* body length + CRC32C */
#define BATPAK_BODY_FIXED_SIZE		108 /* fixed fields before the strings */
#define BATPAK_MAX_SEGMENTS			((uint32) 0xFFFFFF)

/* Frame flags */
#define BATPAK_FLAG_BATCH_BEGIN		0x0001
#define BATPAK_FLAG_BATCH_END		0x0002
#define BATPAK_FLAG_HAS_CAUSATION	0x0004
#define BATPAK_FLAG_HAS_METADATA	0x0008
#define BATPAK_FLAG_TRANSACTIONAL	0x0010	/* xid and top_xid are set */
#define BATPAK_FLAG_MARKER_COMMIT	0x0020	/* resolution marker, see writer.c */
#define BATPAK_FLAG_MARKER_ABORT	0x0040
#define BATPAK_FLAG_MARKERS			(BATPAK_FLAG_MARKER_COMMIT | BATPAK_FLAG_MARKER_ABORT)
#define BATPAK_FLAG_KNOWN			0x007F

/*
 * A position is the segment number in the high 32 bits and the byte offset
 * of the frame inside that segment in the low 32 bits (segments are at most
 * 1GB, see batpak.segment_size).
 */
#define BATPAK_POS(segno, off)		(((uint64) (segno) << 32) | (uint64) (off))
#define BATPAK_POS_SEGNO(pos)		((uint32) ((pos) >> 32) & BATPAK_MAX_SEGMENTS)
#define BATPAK_POS_OFFSET(pos)		((uint32) ((pos) & 0xFFFFFFFF))

/*
 * The index keeps an event's state in the free top bits of its position
 * (segment numbers have 24 bits):
 *	no flag: committed, visible to everyone;
 *	PENDING: durable, of a transaction that has not ended (or whose end the
 *		writer has not processed yet): visible only inside that transaction;
 *	HIDDEN: of a transaction that rolled back; never visible again.
 */
#define BATPAK_POS_PENDING			(UINT64CONST(1) << 62)
#define BATPAK_POS_HIDDEN			(UINT64CONST(1) << 63)
#define BATPAK_POS_FLAGS			(BATPAK_POS_PENDING | BATPAK_POS_HIDDEN)

/* Sequence -> position map: a directory of fixed-size chunks in the DSA */
#define BATPAK_SEQCHUNK_BITS		16
#define BATPAK_SEQCHUNK_SIZE		(1 << BATPAK_SEQCHUNK_BITS)
#define BATPAK_SEQDIR_SIZE			(1 << 17)	/* => 2^33 events */
#define BATPAK_MAX_EVENTS			((uint64) BATPAK_SEQDIR_SIZE * BATPAK_SEQCHUNK_SIZE)

/* Custom SQLSTATEs (class BP) */
#define ERRCODE_BATPAK_SEQUENCE_MISMATCH	MAKE_SQLSTATE('B','P','0','0','1')
#define ERRCODE_BATPAK_GATE_DENIED			MAKE_SQLSTATE('B','P','0','0','2')
#define ERRCODE_BATPAK_WRITER_UNAVAILABLE	MAKE_SQLSTATE('B','P','0','0','3')
#define ERRCODE_BATPAK_OUTCOME_UNKNOWN		MAKE_SQLSTATE('B','P','0','0','4')

/*
 * Full transaction ids travel as uint64 (U64FromFullTransactionId); 0 is
 * "none" (immediate mode).
 */

/* Writer states, as shown by batpak.stats */
typedef enum BatpakState
{
	BATPAK_STATE_STOPPED = 0,
	BATPAK_STATE_STARTING,
	BATPAK_STATE_RECOVERING,
	BATPAK_STATE_READY,
	BATPAK_STATE_FAILED
} BatpakState;

/*
 * Submission slot states.  A slot belongs to one PGPROC (indexed by
 * pgprocno), so only its backend ever moves it out of IDLE or DONE, and only
 * the writer moves it out of SUBMITTED (to PROCESSING) or PROCESSING.  Every
 * transition is a compare-and-exchange, which is a full memory barrier: the
 * request written before SUBMITTED and the reply written before DONE are
 * visible to the other side when it sees the new state.
 *
 *	IDLE --backend--> SUBMITTED --writer--> PROCESSING --writer--> DONE
 *	DONE --backend--> IDLE
 *	SUBMITTED --backend (gave up)--> IDLE: the writer never saw it
 *	PROCESSING --backend (gave up)--> ABANDONED --writer--> IDLE: the writer
 *		frees the request instead of replying
 */
#define BATPAK_SLOT_IDLE			0
#define BATPAK_SLOT_SUBMITTED		1
#define BATPAK_SLOT_PROCESSING		2
#define BATPAK_SLOT_DONE			3
#define BATPAK_SLOT_ABANDONED		4

typedef struct BatpakSlot
{
	pg_atomic_uint32 state;
	uint32		incarnation;	/* writer incarnation the request is for */
	uint64		request_id;		/* backend-local counter, for sanity checks */
	Latch	   *latch;			/* the submitting backend's latch */
	dsa_pointer request;		/* BatpakRequest in the index DSA */

	/*
	 * Transaction ends: the backend bumps resolve_begin, stores the commit
	 * LSN and the full top-level xid of a transaction that appended (or of
	 * one whose savepoint rolled back), then bumps resolve_gen (with a
	 * write barrier before) and sets the writer's latch.  The writer
	 * remembers in resolved_gen (its own field) the last generation it
	 * settled.  A later announcement may replace an earlier one before the
	 * writer looks: that is safe, see xact.c.  One being written while the
	 * writer reads (resolve_begin differs from resolve_gen after the read)
	 * is left for the writer's next look (writer_collect_resolves).
	 */
	pg_atomic_uint64 resolve_begin;
	pg_atomic_uint64 resolve_gen;
	uint64		resolve_top;
	uint64		resolve_lsn;
	uint64		resolved_gen;	/* writer only */
} BatpakSlot;

/* Counters shown by batpak.stats */
typedef struct BatpakCounters
{
	pg_atomic_uint64 requests;
	pg_atomic_uint64 requests_failed;
	pg_atomic_uint64 events_written;
	pg_atomic_uint64 idempotent_hits;
	pg_atomic_uint64 groups;
	pg_atomic_uint64 fsyncs;
	pg_atomic_uint64 bytes_written;
	pg_atomic_uint64 transactions_committed;
	pg_atomic_uint64 transactions_aborted;	/* incl. rolled-back savepoints */
	pg_atomic_uint64 events_discarded;
	pg_atomic_uint64 notifications;
	pg_atomic_uint64 notifications_failed;
} BatpakCounters;

typedef struct BatpakControl
{
	LWLock		lock;			/* protects the handles and the text fields */
	int			tranche_id;
	pid_t		writer_pid;
	Latch	   *writer_latch;
	pg_atomic_uint32 state;
	pg_atomic_uint32 incarnation;	/* bumped at each writer start */
	ConditionVariable state_cv; /* broadcast at every state change */

	/* index handles, valid when incarnation matches (under lock) */
	dsa_handle	dsa;
	dshash_table_handle streams_handle;
	dshash_table_handle idem_handle;
	dshash_table_handle corr_handle;
	dsa_pointer seqdir;

	/* frontiers: global sequences */
	pg_atomic_uint64 written_seq;
	pg_atomic_uint64 durable_seq;
	pg_atomic_uint64 visible_seq;

	/*
	 * Consumers: the writer broadcasts publish_cv and sets the notifier's
	 * latch whenever the visible or the durable frontier moves (see
	 * batpak_frontiers_moved).  ready_seq is the consumer horizon when the
	 * writer of this incarnation became ready: the notifier starts there.
	 */
	ConditionVariable publish_cv;
	Latch	   *notifier_latch;	/* under lock; NULL when no notifier runs */
	pid_t		notifier_pid;
	pg_atomic_uint64 ready_seq;
	pg_atomic_uint64 notified_seq;
	uint32		notified_incarnation;	/* notifier only: of notified_seq */

	BatpakCounters counters;
	pg_atomic_uint64 index_bytes;
	pg_atomic_uint64 entities;
	pg_atomic_uint64 pending_transactions;
	pg_atomic_uint64 pending_events;
	pg_atomic_uint64 store_bytes;
	pg_atomic_uint32 segments;
	pg_atomic_uint32 truncations;	/* segment files cut so far (storage.c) */

	TimestampTz started_at;
	TimestampTz ready_at;
	char		failure[1024];	/* why the store is failed */

	/*
	 * Writer only, kept across its restarts (not across a server restart):
	 * where the newest segment was last synced, and whether a write or sync
	 * failed since.  A successor discards what was written after that point
	 * before it recovers (see writer_discard_unsynced).  One writer runs at
	 * a time and the process switch orders the accesses.
	 */
	uint32		synced_segno;	/* 0: nothing synced by this server yet */
	uint64		synced_off;
	bool		io_failed;

	/*
	 * The I/O error that stopped the last writer, until a writer is ready
	 * again: an append that times out waiting for one reports it (under
	 * lock).
	 */
	int			io_error_code;
	char		io_error[512];

	int			nslots;
	BatpakSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} BatpakControl;

/* Shared index entries */
typedef struct BatpakStream
{
	uint8		key[BATPAK_KEY_LEN];	/* BLAKE2b-128 of the entity */
	uint64		last_seq;		/* entity sequence of the last event */
	uint8		last_hash[BATPAK_HASH_LEN];
	uint64		committed_seq;	/* entity sequence of the last committed one */
	uint64		pending_top;	/* transaction of the events after it, or 0 */
	uint64		pending_xid;	/* (sub)xid of the first of them: the one an
								 * appender of another transaction waits for */
	uint64		capacity;
	dsa_pointer seqs;			/* uint64 global sequences, [entity_seq - 1] */
} BatpakStream;

typedef struct BatpakIdemEntry
{
	uint8		key[BATPAK_KEY_LEN];	/* BLAKE2b-128 of the idempotency key */
	uint64		seq;
} BatpakIdemEntry;

typedef struct BatpakCorrEntry
{
	pg_uuid_t	correlation;
	uint64		count;
	uint64		capacity;
	dsa_pointer seqs;			/* uint64 global sequences, ascending */
} BatpakCorrEntry;

/*
 * A request, in the DSA, written by a backend and read by the writer.  The
 * events follow the header back to back (each BatpakEventReq is MAXALIGNed),
 * then the receipt array, which the writer fills in.
 */
typedef struct BatpakEventReq
{
	uint32		size;			/* whole item, MAXALIGNed */
	uint16		entity_len;
	uint16		scope_len;
	uint16		kind_len;
	uint16		idem_len;
	uint32		payload_len;
	uint32		metadata_len;	/* 0 with has_metadata false: NULL */
	bool		has_metadata;
	bool		has_expected;
	bool		has_correlation;
	bool		has_causation;
	int64		expected_sequence;
	pg_uuid_t	correlation_id;
	pg_uuid_t	causation_id;
	char		data[FLEXIBLE_ARRAY_MEMBER];	/* entity scope kind idem payload metadata */
} BatpakEventReq;

typedef struct BatpakReceipt
{
	pg_uuid_t	event_id;
	uint64		global_seq;
	uint64		entity_seq;
	TimestampTz committed_at;
	uint8		event_hash[BATPAK_HASH_LEN];
	uint8		prev_hash[BATPAK_HASH_LEN];
} BatpakReceipt;

#define BATPAK_REPLY_OK			0
#define BATPAK_REPLY_ERROR		1
#define BATPAK_REPLY_WAIT		2	/* wait for wait_xid to end, resubmit */

typedef struct BatpakRequest
{
	uint32		nevents;
	bool		batch;
	bool		synchronous;	/* wait for fdatasync */
	uint64		top_xid;		/* transactional: full top-level xid, else 0 */
	uint64		xid;			/* transactional: full xid of the subtransaction */
	uint64		requester_top;	/* the caller's top-level xid, even in
								 * immediate mode (0 if it has none) */
	uint64		xid_lsn;		/* WAL that must be flushed before the frames
								 * are written (see xact.c), or 0 */
	uint64		max_txn_events; /* transactional: batpak.max_transaction_events
								 * of the submitter, else 0 */
	int			fault;			/* the submitter's batpak.inject_fault */
	TransactionId wait_xid;		/* reply WAIT: the transaction to wait for */
	Size		total_size;
	Size		receipts_off;	/* offset of BatpakReceipt[nevents] */
	/* reply */
	int			status;
	int			sqlerrcode;
	char		errmsg[512];
	char		errdetail[512];
	char		events[FLEXIBLE_ARRAY_MEMBER];
} BatpakRequest;

#define BATPAK_REQ_RECEIPTS(req) \
	((BatpakReceipt *) ((char *) (req) + (req)->receipts_off))

/* On-disk integers are little-endian */
static inline uint32
batpak_le32(const void *p)
{
	uint32		v;

	memcpy(&v, p, 4);
#ifdef WORDS_BIGENDIAN
	v = pg_bswap32(v);
#endif
	return v;
}

/* Decoded frame: pointers into a buffer owned by the caller */
typedef struct BatpakFrame
{
	uint64		global_seq;
	uint64		entity_seq;
	pg_uuid_t	event_id;
	pg_uuid_t	correlation_id;
	pg_uuid_t	causation_id;
	TimestampTz committed_at;
	uint32		flags;
	uint64		xid;			/* full xids, 0 in immediate mode */
	uint64		top_xid;
	const char *entity;
	const char *scope;
	const char *kind;
	const char *idem;
	const char *payload;
	const char *metadata;
	uint16		entity_len;
	uint16		scope_len;
	uint16		kind_len;
	uint16		idem_len;
	uint32		payload_len;
	uint32		metadata_len;
	const uint8 *prev_hash;
	const uint8 *event_hash;
	const char *body;
	uint32		body_len;
} BatpakFrame;

/* Backend-local view of the shared index */
typedef struct BatpakIndex
{
	dsa_area   *area;
	dshash_table *streams;
	dshash_table *idem;
	dshash_table *corr;
	dsa_pointer *seqdir;
	uint32		incarnation;
} BatpakIndex;

/* batpak.c: GUCs */
extern char *batpak_database;
extern int	batpak_segment_size_kb;
extern int	batpak_max_event_size_kb;
extern bool batpak_synchronous_commit;
extern int	batpak_flush_delay_ms;
extern int	batpak_writer_timeout_ms;
extern bool batpak_transactional;
extern int	batpak_max_transaction_events;
extern int	batpak_inject_fault;

#define BATPAK_FAULT_NONE			0
#define BATPAK_FAULT_NOTIFY			1	/* the notifier's NOTIFY fails */
#define BATPAK_FAULT_WRITE			2	/* the writer's data write fails */
#define BATPAK_FAULT_PARTIAL_WRITE	3	/* ... after writing half of it */
#define BATPAK_FAULT_FSYNC			4	/* the writer's fdatasync fails */
#define BATPAK_FAULT_ENOSPC			5	/* half written, then disk full */
#define BATPAK_FAULT_DISCARD_CRASH	6	/* fdatasync fails, then the server
										 * crashes inside the discard */
#define BATPAK_FAULT_READ_PAUSE		7	/* a reader waits for an advisory
										 * lock before each frame it reads */
#define BATPAK_FAULT_XID_STATUS		8	/* the writer's look-up of a
										 * transaction's status fails */
#define BATPAK_FAULT_ANSWER_PAUSE	9	/* the writer holds its answer to
										 * the request until the backend
										 * gives up on it */
#define BATPAK_FAULT_CANCEL_AFTER_ANSWER 10	/* the session is cancelled just
											 * after the writer answered */
/* the advisory lock (one bigint key) a read_pause reader waits for */
#define BATPAK_READ_PAUSE_LOCK		INT64CONST(0x62617470616b)
extern bool batpak_loaded;

/* shmem.c */
extern BatpakControl *BatpakCtl;
extern void batpak_shmem_request(void);
extern void batpak_shmem_startup(void);
extern void batpak_check_loaded(void);
extern void batpak_check_not_standby(void);
extern BatpakIndex *batpak_attach_index(bool require_ready);
extern BatpakIndex *batpak_read_snapshot(uint64 *frontier, uint64 *published);
extern BatpakIndex *batpak_read_snapshot_ex(uint64 *frontier, uint64 *published,
											uint64 *durable, bool require_ready);
extern bool batpak_visible_frame(BatpakIndex *idx, uint64 seq, BatpakFrame *f);
extern uint64 batpak_visible_stream_count(BatpakIndex *idx, const uint8 *key);
extern const char *batpak_state_name(BatpakState state);
extern void batpak_report_failed(void);
extern void batpak_dshash_params(int which, dshash_parameters *params);
extern void batpak_set_state(BatpakState state);
extern bool batpak_wait_for_ready(TimestampTz deadline);

#define BATPAK_TABLE_STREAMS	0
#define BATPAK_TABLE_IDEM		1
#define BATPAK_TABLE_CORR		2

/* crc.c */
extern void batpak_crc_init(void);
extern pg_crc32c batpak_crc32c(pg_crc32c crc, const void *data, size_t len);

/* storage.c */
extern void batpak_segment_path(char *path, uint32 segno);
extern void batpak_hash_key(const char *data, Size len, uint8 *out);
extern void batpak_uuid_for_seq(uint64 seq, pg_uuid_t *out);
extern bool batpak_seq_from_uuid(const pg_uuid_t *id, uint64 *seq);
extern Size batpak_frame_size(const BatpakEventReq *ev);
extern void batpak_frame_build(char *dst, const BatpakEventReq *ev,
							   uint64 global_seq, uint64 entity_seq,
							   const pg_uuid_t *event_id,
							   const pg_uuid_t *correlation_id,
							   TimestampTz committed_at, uint32 flags,
							   uint64 xid, uint64 top_xid,
							   const uint8 *prev_hash, uint8 *event_hash_out);
extern Size batpak_marker_size(int nxids);
extern void batpak_marker_build(char *dst, uint32 flags, uint64 top_xid,
								const uint64 *xids, int nxids);
extern uint64 batpak_marker_xid(const BatpakFrame *f, int i);
#define BATPAK_DECODE_OK			0
#define BATPAK_DECODE_INCOMPLETE	1	/* runs past the bytes available */
#define BATPAK_DECODE_CORRUPT		2
extern int	batpak_frame_decode(const char *frame, Size avail, BatpakFrame *f,
								const char **why);
extern void batpak_report_corrupt(uint32 segno, uint64 offset, const char *why);
extern void batpak_frame_compute_hash(const BatpakFrame *f, uint8 *out);
extern void batpak_unmap_all(void);
extern void batpak_read_frame(uint64 pos, BatpakFrame *f);
extern const char *batpak_try_read_frame(uint64 pos, BatpakFrame *f);
extern const char *batpak_reader_try_frame(BatpakIndex *idx, uint64 pos, BatpakFrame *f);
extern void batpak_reader_frame(BatpakIndex *idx, uint64 pos, BatpakFrame *f);
extern void batpak_write_segment_header(int fd, uint32 segno, const uint8 *store_id);
extern bool batpak_check_segment_header(const char *buf, uint32 segno,
										uint8 *store_id, const char **why);

/* index.c */
extern void batpak_index_create(BatpakControl *ctl, dsa_area **area_out,
								BatpakIndex *idx);
extern uint64 batpak_index_seq_pos(BatpakIndex *idx, uint64 seq);
extern void batpak_index_set_seq_pos(BatpakIndex *idx, uint64 seq, uint64 pos);
extern void batpak_index_add_stream_event(BatpakIndex *idx, const uint8 *key,
										  uint64 entity_seq, uint64 global_seq,
										  const uint8 *event_hash,
										  uint64 pending_top, uint64 xid);

/* A stream's head and state, copied out of the index */
typedef struct BatpakStreamHead
{
	uint64		last_seq;
	uint8		last_hash[BATPAK_HASH_LEN];
	uint64		committed_seq;
	uint64		pending_top;
	uint64		pending_xid;
} BatpakStreamHead;

extern bool batpak_index_stream_head(BatpakIndex *idx, const uint8 *key,
									 BatpakStreamHead *head);
extern void batpak_index_stream_commit(BatpakIndex *idx, const uint8 *key);
extern void batpak_index_stream_truncate(BatpakIndex *idx, const uint8 *key,
										 uint64 last_seq, const uint8 *last_hash);
extern uint64 *batpak_index_stream_seqs(BatpakIndex *idx, const uint8 *key,
										uint64 after, uint64 max_count,
										BatpakStreamHead *head, int *count);
extern void batpak_index_add_idem(BatpakIndex *idx, const uint8 *key, uint64 seq);
extern bool batpak_index_find_idem(BatpakIndex *idx, const uint8 *key, uint64 *seq);
extern void batpak_index_remove_idem(BatpakIndex *idx, const uint8 *key, uint64 seq);
extern void batpak_index_add_corr(BatpakIndex *idx, const pg_uuid_t *corr,
								  uint64 seq);
extern uint64 *batpak_index_corr_seqs(BatpakIndex *idx, const pg_uuid_t *corr,
									  int *count);

/* submit.c */
extern BatpakRequest *batpak_request_create(uint32 nevents, Size events_size,
											 bool transactional, bool synchronous);
extern void batpak_release_request_buffer(void);
extern void batpak_request_done(void);
extern BatpakRequest *batpak_submit_and_wait(BatpakRequest *req, bool keep_interrupt);

/* xact.c */
extern void batpak_xact_prepare_request(BatpakRequest *req, bool transactional);
extern void batpak_xact_wait(TransactionId xid);
extern bool batpak_pending_visible(const BatpakFrame *f, bool *in_progress);
extern uint64 batpak_my_top_xid(void);

/* writer.c */
extern PGDLLEXPORT void batpak_writer_main(Datum main_arg);

/* notify.c */
extern PGDLLEXPORT void batpak_notifier_main(Datum main_arg);
extern void batpak_frontiers_moved(void);
extern uint64 batpak_consumer_horizon(void);

/* sql_read.c */
extern void batpak_event_values(const BatpakFrame *f, Datum *values, bool *nulls);
extern int	batpak_sort_seqs(uint64 *seqs, int n);

/* The filters of read_all and of cursors */
typedef struct BatpakFilter
{
	text	   *scope;			/* NULL: any */
	int			nkinds;
	text	  **kinds;			/* NULL: any */
	text	   *prefix;			/* NULL: any */
	int32		group_member;	/* group_size 0: no group */
	int32		group_size;
} BatpakFilter;

extern void batpak_filter_set_kinds(BatpakFilter *flt, ArrayType *kinds);

/* Materialized set-returning output of batpak.event rows */
typedef struct BatpakOut
{
	ReturnSetInfo *rsinfo;
	bool		direct;			/* rows formed by batpak_event_tuple */
	MemoryContext cxt;			/* of scratch: the caller's, not SPI's */
	char	   *scratch;
	Size		scratch_size;
	BatpakIndex *idx;
	uint64		frontier;		/* visible frontier: read_all's limit */
	uint64		published;		/* last sequence in the index */
} BatpakOut;

extern void batpak_materialize(FunctionCallInfo fcinfo);
extern void batpak_check_rowtype(TupleDesc desc, const Oid *typids, int natts,
								 const char *typname);
extern const Oid batpak_event_typids[];
#define BATPAK_RECEIPT_NATTS		6
extern const Oid batpak_receipt_typids[];
#define BATPAK_NEW_EVENT_NATTS		9
extern const Oid batpak_new_event_typids[];
extern void batpak_out_begin(FunctionCallInfo fcinfo, BatpakOut *out);
extern void batpak_out_end(BatpakOut *out);

/*
 * A walk in global order (read_all, cursors): next is the first sequence
 * not examined yet; gaps counts the rolled-back sequences passed.  The walk
 * stops at the limit, at max_count matches, or before the first event whose
 * transaction has not ended (blocked), so that nothing is skipped that may
 * become visible later.
 */
typedef struct BatpakWalk
{
	uint64		next;
	uint64		gaps;
	bool		blocked;
	bool		blocked_by_self;	/* by our own transaction's pending event */
} BatpakWalk;

extern uint64 batpak_walk_global(BatpakIndex *idx, uint64 frontier, uint64 limit,
								 const BatpakFilter *flt, BatpakWalk *walk,
								 uint64 max_count, BatpakOut *out);
extern int32 batpak_entity_member(const char *entity, Size len, int32 group_size);

/* Fields of one proposed event, as given by the caller */
typedef struct BatpakNewEvent
{
	text	   *entity;
	text	   *scope;
	text	   *kind;
	Jsonb	   *payload;
	Jsonb	   *metadata;		/* NULL when absent */
	bool		has_expected;
	int64		expected_sequence;
	text	   *idem;			/* NULL when absent */
	pg_uuid_t  *correlation_id; /* NULL when absent */
	pg_uuid_t  *causation_id;	/* NULL when absent */
} BatpakNewEvent;

/* gates.c */
extern bool batpak_record_denials;
extern char *batpak_gate_bypass_reason;
extern bool batpak_gate_bypass_check(char **newval, void **extra, GucSource source);
extern void batpak_gate_bypass_assign(const char *newval, void *extra);
extern void batpak_gates_apply(BatpakNewEvent *e, int item, bool synchronous);
extern Oid	batpak_extension_table(const char *relname);
extern Oid	batpak_rel_owner(Oid relid);

/* sql_write.c: input checks shared with other entry points */
extern void batpak_check_coordinate(const char *what, const char *s, Size len,
									Size maxlen);
extern void batpak_check_kind(const char *s, Size len);
extern void batpak_append_system_event(const BatpakNewEvent *e, bool synchronous);
extern void batpak_validate_event(const BatpakNewEvent *e, bool system);
extern void batpak_event_from_args(FunctionCallInfo fcinfo, BatpakNewEvent *e);

#endif							/* BATPAK_H */
