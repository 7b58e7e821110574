/*-------------------------------------------------------------------------
 *
 * index.c
 *	  The shared index of the store, in a DSA area created by the writer:
 *	  global sequence -> position (a directory of fixed chunks), entity ->
 *	  stream head and its list of global sequences, idempotency key -> global
 *	  sequence, correlation id -> global sequences.
 *
 * Only the writer modifies the index, and it adds an event's entries before
 * it moves the frontiers past the event (with a write barrier in between,
 * see writer.c).  Readers read the frontiers first and ignore every entry
 * beyond them, so they never see half-published events.  The growable
 * arrays (a stream's or a correlation's sequences) are only replaced while
 * the writer holds the dshash entry exclusively, and readers copy what they
 * need while holding it shared, so a reader never touches a freed array.
 *
 * Transactions (see writer.c and xact.c): an event of a transaction that has
 * not ended is entered with BATPAK_POS_PENDING in its position and sits at
 * the end of its stream, after committed_seq.  At commit the flag is cleared
 * and committed_seq moves to the end; at rollback the position gets
 * BATPAK_POS_HIDDEN and the stream is cut back, so that the entity sequence
 * is used again.  Positions are 64-bit atomics, so a reader sees a flag
 * change whole.
 *
 * The event id needs no table: it encodes its global sequence (storage.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "batpak.h"

#define BATPAK_INITIAL_LIST		4

static dsa_pointer
batpak_index_alloc(dsa_area *area, Size size)
{
	pg_atomic_fetch_add_u64(&BatpakCtl->index_bytes, size);
	return dsa_allocate_extended(area, size, DSA_ALLOC_HUGE);
}

/*
 * dshash allocates each entry with a two-word header (next pointer, hash);
 * the bucket arrays, at most 8 bytes per entry at dshash's 3/4 load limit
 * right after a doubling, are counted as 8 bytes per entry too.  The figure
 * in batpak.stats is therefore the requested size, without the allocator's
 * rounding to size classes.
 */
#define BATPAK_DSHASH_OVERHEAD	(2 * sizeof(dsa_pointer) + sizeof(dsa_pointer))

static void
batpak_index_count_entry(Size entry_size)
{
	pg_atomic_fetch_add_u64(&BatpakCtl->index_bytes,
							MAXALIGN(entry_size) + BATPAK_DSHASH_OVERHEAD);
}

static void
batpak_index_free(dsa_area *area, dsa_pointer dp, Size size)
{
	pg_atomic_fetch_sub_u64(&BatpakCtl->index_bytes, size);
	dsa_free(area, dp);
}

/*
 * Create a new, empty index (writer only).  The caller publishes the handles
 * in the control block.
 */
void
batpak_index_create(BatpakControl *ctl, dsa_area **area_out, BatpakIndex *idx)
{
	dsa_area   *area;
	dshash_parameters params;
	Size		dirsize = sizeof(dsa_pointer) * BATPAK_SEQDIR_SIZE;
	dsa_pointer dir;

	area = dsa_create(ctl->tranche_id);
	dsa_pin(area);
	dsa_pin_mapping(area);

	memset(idx, 0, sizeof(*idx));
	idx->area = area;
	batpak_dshash_params(BATPAK_TABLE_STREAMS, &params);
	idx->streams = dshash_create(area, &params, NULL);
	batpak_dshash_params(BATPAK_TABLE_IDEM, &params);
	idx->idem = dshash_create(area, &params, NULL);
	batpak_dshash_params(BATPAK_TABLE_CORR, &params);
	idx->corr = dshash_create(area, &params, NULL);

	pg_atomic_write_u64(&ctl->index_bytes, 0);
	pg_atomic_write_u64(&ctl->entities, 0);
	dir = batpak_index_alloc(area, dirsize);
	idx->seqdir = dsa_get_address(area, dir);
	memset(idx->seqdir, 0, dirsize);
	for (int i = 0; i < BATPAK_SEQDIR_SIZE; i++)
		idx->seqdir[i] = InvalidDsaPointer;

	ctl->dsa = dsa_get_handle(area);
	ctl->streams_handle = dshash_get_hash_table_handle(idx->streams);
	ctl->idem_handle = dshash_get_hash_table_handle(idx->idem);
	ctl->corr_handle = dshash_get_hash_table_handle(idx->corr);
	ctl->seqdir = dir;
	*area_out = area;
}

uint64
batpak_index_seq_pos(BatpakIndex *idx, uint64 seq)
{
	dsa_pointer chunk;
	pg_atomic_uint64 *positions;

	if ((seq >> BATPAK_SEQCHUNK_BITS) >= BATPAK_SEQDIR_SIZE ||
		!DsaPointerIsValid(chunk = idx->seqdir[seq >> BATPAK_SEQCHUNK_BITS]))
		elog(ERROR, "batpak index has no position for global sequence " UINT64_FORMAT, seq);
	positions = dsa_get_address(idx->area, chunk);
	return pg_atomic_read_u64(&positions[seq & (BATPAK_SEQCHUNK_SIZE - 1)]);
}

void
batpak_index_set_seq_pos(BatpakIndex *idx, uint64 seq, uint64 pos)
{
	uint64		slot = seq >> BATPAK_SEQCHUNK_BITS;
	pg_atomic_uint64 *positions;

	if (slot >= BATPAK_SEQDIR_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batpak store is full: at most " UINT64_FORMAT " events",
						BATPAK_MAX_EVENTS - 1)));
	if (!DsaPointerIsValid(idx->seqdir[slot]))
	{
		dsa_pointer chunk = batpak_index_alloc(idx->area,
											   sizeof(pg_atomic_uint64) * BATPAK_SEQCHUNK_SIZE);

		positions = dsa_get_address(idx->area, chunk);
		for (int i = 0; i < BATPAK_SEQCHUNK_SIZE; i++)
			pg_atomic_init_u64(&positions[i], BATPAK_POS_HIDDEN);
		/* readers only look at it once the frontier passes, see header */
		idx->seqdir[slot] = chunk;
	}
	positions = dsa_get_address(idx->area, idx->seqdir[slot]);
	pg_atomic_write_u64(&positions[seq & (BATPAK_SEQCHUNK_SIZE - 1)], pos);
}

/* Append value to a growable uint64 list, doubling its capacity */
static void
batpak_list_append(dsa_area *area, dsa_pointer *list, uint64 *capacity,
				   uint64 count, uint64 value)
{
	uint64	   *items;

	if (count >= *capacity)
	{
		uint64		newcap = *capacity == 0 ? BATPAK_INITIAL_LIST : *capacity * 2;
		dsa_pointer newlist = batpak_index_alloc(area, newcap * sizeof(uint64));

		if (count > 0)
		{
			memcpy(dsa_get_address(area, newlist),
				   dsa_get_address(area, *list), count * sizeof(uint64));
			batpak_index_free(area, *list, *capacity * sizeof(uint64));
		}
		*list = newlist;
		*capacity = newcap;
	}
	items = dsa_get_address(area, *list);
	items[count] = value;
}

/*
 * Copy n items into a new palloc'd array.  Called under a dshash lock, so it
 * must not raise: returns NULL when out of memory, and the caller reports it
 * after releasing the lock.
 */
static uint64 *
batpak_list_copy(const uint64 *items, uint64 n)
{
	uint64	   *copy;

	copy = MemoryContextAllocExtended(CurrentMemoryContext,
									  Max(n, 1) * sizeof(uint64),
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
	if (copy != NULL)
		memcpy(copy, items, n * sizeof(uint64));
	return copy;
}

static void
batpak_list_copy_failed(uint64 n, const uint64 *copy)
{
	if (n > 0 && copy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory copying " UINT64_FORMAT " index entries", n)));
}

/*
 * Add an event at the end of its stream: committed (pending_top 0) or
 * pending in transaction pending_top, whose (sub)transaction is xid.
 */
void
batpak_index_add_stream_event(BatpakIndex *idx, const uint8 *key,
							  uint64 entity_seq, uint64 global_seq,
							  const uint8 *event_hash,
							  uint64 pending_top, uint64 xid)
{
	BatpakStream *s;
	bool		found;

	s = dshash_find_or_insert(idx->streams, key, &found);
	if (!found)
	{
		s->last_seq = 0;
		s->committed_seq = 0;
		s->pending_top = 0;
		s->pending_xid = 0;
		s->capacity = 0;
		s->seqs = InvalidDsaPointer;
		pg_atomic_fetch_add_u64(&BatpakCtl->entities, 1);
		batpak_index_count_entry(sizeof(BatpakStream));
	}
	if (entity_seq != s->last_seq + 1 ||
		(s->pending_top != 0 && s->pending_top != pending_top))
	{
		uint64		last = s->last_seq;
		uint64		holder = s->pending_top;

		dshash_release_lock(idx->streams, s);
		elog(ERROR, "batpak index: entity sequence " UINT64_FORMAT " after " UINT64_FORMAT " (pending transaction " UINT64_FORMAT ", new " UINT64_FORMAT ")",
			 entity_seq, last, holder, pending_top);
	}
	batpak_list_append(idx->area, &s->seqs, &s->capacity, s->last_seq, global_seq);
	s->last_seq = entity_seq;
	memcpy(s->last_hash, event_hash, BATPAK_HASH_LEN);
	if (pending_top == 0)
		s->committed_seq = entity_seq;
	else if (s->pending_top == 0)
	{
		s->pending_top = pending_top;
		s->pending_xid = xid;
	}
	dshash_release_lock(idx->streams, s);
}

static void
batpak_stream_copy_head(const BatpakStream *s, BatpakStreamHead *head)
{
	head->last_seq = s->last_seq;
	memcpy(head->last_hash, s->last_hash, BATPAK_HASH_LEN);
	head->committed_seq = s->committed_seq;
	head->pending_top = s->pending_top;
	head->pending_xid = s->pending_xid;
}

/*
 * Head of a stream as the writer knows it (published events, pending ones
 * included).  Returns false for an unknown entity.
 */
bool
batpak_index_stream_head(BatpakIndex *idx, const uint8 *key,
						 BatpakStreamHead *head)
{
	BatpakStream *s = dshash_find(idx->streams, key, false);

	if (s == NULL)
		return false;
	batpak_stream_copy_head(s, head);
	dshash_release_lock(idx->streams, s);
	return true;
}

/* The stream's pending events committed (writer only) */
void
batpak_index_stream_commit(BatpakIndex *idx, const uint8 *key)
{
	BatpakStream *s = dshash_find(idx->streams, key, true);

	if (s == NULL)
		elog(ERROR, "batpak index: committing an unknown stream");
	s->committed_seq = s->last_seq;
	s->pending_top = 0;
	s->pending_xid = 0;
	dshash_release_lock(idx->streams, s);
}

/*
 * Remove the stream's last event, a pending one, leaving last_seq whose
 * hash is last_hash (writer only): a rolled-back event's sequence is used
 * again.  Anything else is a bug that would corrupt the stream: refuse.
 */
void
batpak_index_stream_truncate(BatpakIndex *idx, const uint8 *key,
							 uint64 last_seq, const uint8 *last_hash)
{
	BatpakStream *s = dshash_find(idx->streams, key, true);
	uint64		committed;

	if (s == NULL)
		elog(ERROR, "batpak index: discarding events of an unknown stream");
	if (last_seq < s->committed_seq || last_seq + 1 != s->last_seq)
	{
		committed = s->committed_seq;
		dshash_release_lock(idx->streams, s);
		elog(ERROR, "batpak index: cannot cut a stream back to " UINT64_FORMAT " (committed " UINT64_FORMAT ")",
			 last_seq, committed);
	}
	s->last_seq = last_seq;
	memcpy(s->last_hash, last_hash, BATPAK_HASH_LEN);
	if (last_seq == s->committed_seq)
	{
		s->pending_top = 0;
		s->pending_xid = 0;
	}
	dshash_release_lock(idx->streams, s);
}

/*
 * Global sequences of the entity's events (committed and pending) with
 * entity sequence greater than 'after', at most max_count of them, in a
 * palloc'd array, and the stream's head at that moment.  The caller decides
 * what it may see: the first head->committed_seq events are committed.
 */
uint64 *
batpak_index_stream_seqs(BatpakIndex *idx, const uint8 *key, uint64 after,
						 uint64 max_count, BatpakStreamHead *head, int *count)
{
	BatpakStream *s = dshash_find(idx->streams, key, false);
	uint64	   *result = NULL;
	uint64		n = 0;

	*count = 0;
	memset(head, 0, sizeof(*head));
	if (s == NULL)
		return NULL;
	batpak_stream_copy_head(s, head);
	if (s->last_seq > after)
	{
		uint64	   *items = dsa_get_address(idx->area, s->seqs);

		n = Min(s->last_seq - after, max_count);
		n = Min(n, (uint64) (MaxAllocHugeSize / sizeof(uint64)));
		result = batpak_list_copy(items + after, n);
	}
	dshash_release_lock(idx->streams, s);
	batpak_list_copy_failed(n, result);
	*count = (int) n;
	return result;
}

void
batpak_index_add_idem(BatpakIndex *idx, const uint8 *key, uint64 seq)
{
	BatpakIdemEntry *e;
	bool		found;

	e = dshash_find_or_insert(idx->idem, key, &found);
	if (!found)
		batpak_index_count_entry(sizeof(BatpakIdemEntry));
	e->seq = seq;
	dshash_release_lock(idx->idem, e);
}

/* Forget a rolled-back event's key, if it still names that event */
void
batpak_index_remove_idem(BatpakIndex *idx, const uint8 *key, uint64 seq)
{
	BatpakIdemEntry *e = dshash_find(idx->idem, key, true);

	if (e == NULL)
		return;
	if (e->seq == seq)
	{
		dshash_delete_entry(idx->idem, e);
		pg_atomic_fetch_sub_u64(&BatpakCtl->index_bytes,
								MAXALIGN(sizeof(BatpakIdemEntry)) + BATPAK_DSHASH_OVERHEAD);
	}
	else
		dshash_release_lock(idx->idem, e);
}

bool
batpak_index_find_idem(BatpakIndex *idx, const uint8 *key, uint64 *seq)
{
	BatpakIdemEntry *e = dshash_find(idx->idem, key, false);

	if (e == NULL)
		return false;
	*seq = e->seq;
	dshash_release_lock(idx->idem, e);
	return true;
}

/*
 * Only events whose correlation differs from their own id are entered: a
 * correlation's root event is found through its id (see read_correlated).
 */
void
batpak_index_add_corr(BatpakIndex *idx, const pg_uuid_t *corr, uint64 seq)
{
	BatpakCorrEntry *e;
	bool		found;

	e = dshash_find_or_insert(idx->corr, corr, &found);
	if (!found)
	{
		e->count = 0;
		e->capacity = 0;
		e->seqs = InvalidDsaPointer;
		batpak_index_count_entry(sizeof(BatpakCorrEntry));
	}
	batpak_list_append(idx->area, &e->seqs, &e->capacity, e->count, seq);
	e->count++;
	dshash_release_lock(idx->corr, e);
}

/*
 * Every event entered under the correlation, rolled back and pending ones
 * included: the caller checks each one's state.
 */
uint64 *
batpak_index_corr_seqs(BatpakIndex *idx, const pg_uuid_t *corr, int *count)
{
	BatpakCorrEntry *e = dshash_find(idx->corr, corr, false);
	uint64	   *result = NULL;
	uint64		n;

	*count = 0;
	if (e == NULL)
		return NULL;
	n = Min(e->count, (uint64) (MaxAllocHugeSize / sizeof(uint64)));
	if (n > 0)
		result = batpak_list_copy(dsa_get_address(idx->area, e->seqs), n);
	dshash_release_lock(idx->corr, e);
	batpak_list_copy_failed(n, result);
	*count = (int) n;
	return result;
}
