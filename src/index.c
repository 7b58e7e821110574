/*-------------------------------------------------------------------------
 *
 * index.c
 *	  The shared index of the store, in a DSA area created by the writer:
 *	  global sequence -> position (a directory of fixed chunks), entity ->
 *	  stream head and its list of global sequences, idempotency key -> global
 *	  sequence, correlation id -> global sequences.
 *
 * Only the writer modifies the index, and it adds an event's entries before
 * it moves the visible frontier past the event (with a write barrier in
 * between, see writer.c).  Readers read the frontier first and ignore every
 * entry beyond it, so they never see half-published events.  The growable
 * arrays (a stream's or a correlation's sequences) are only replaced while
 * the writer holds the dshash entry exclusively, and readers copy what they
 * need while holding it shared, so a reader never touches a freed array.
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
	uint64	   *positions;

	if ((seq >> BATPAK_SEQCHUNK_BITS) >= BATPAK_SEQDIR_SIZE ||
		!DsaPointerIsValid(chunk = idx->seqdir[seq >> BATPAK_SEQCHUNK_BITS]))
		elog(ERROR, "batpak index has no position for global sequence " UINT64_FORMAT, seq);
	positions = dsa_get_address(idx->area, chunk);
	return positions[seq & (BATPAK_SEQCHUNK_SIZE - 1)];
}

void
batpak_index_set_seq_pos(BatpakIndex *idx, uint64 seq, uint64 pos)
{
	uint64		slot = seq >> BATPAK_SEQCHUNK_BITS;
	uint64	   *positions;

	if (slot >= BATPAK_SEQDIR_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batpak store is full: at most " UINT64_FORMAT " events",
						BATPAK_MAX_EVENTS - 1)));
	if (!DsaPointerIsValid(idx->seqdir[slot]))
	{
		dsa_pointer chunk = batpak_index_alloc(idx->area,
											   sizeof(uint64) * BATPAK_SEQCHUNK_SIZE);

		/* readers only look at it once the frontier passes, see header */
		idx->seqdir[slot] = chunk;
	}
	positions = dsa_get_address(idx->area, idx->seqdir[slot]);
	positions[seq & (BATPAK_SEQCHUNK_SIZE - 1)] = pos;
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

/* Number of leading items not beyond frontier (items ascend) */
static uint64
batpak_list_visible(const uint64 *items, uint64 count, uint64 frontier)
{
	uint64		lo = 0,
				hi = count;

	if (count == 0 || items[count - 1] <= frontier)
		return count;
	while (lo < hi)
	{
		uint64		mid = lo + (hi - lo) / 2;

		if (items[mid] <= frontier)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void
batpak_index_add_stream_event(BatpakIndex *idx, const uint8 *key,
							  uint64 entity_seq, uint64 global_seq,
							  const uint8 *event_hash)
{
	BatpakStream *s;
	bool		found;

	s = dshash_find_or_insert(idx->streams, key, &found);
	if (!found)
	{
		s->last_seq = 0;
		s->capacity = 0;
		s->seqs = InvalidDsaPointer;
		pg_atomic_fetch_add_u64(&BatpakCtl->entities, 1);
		batpak_index_count_entry(sizeof(BatpakStream));
	}
	if (entity_seq != s->last_seq + 1)
	{
		uint64		last = s->last_seq;

		dshash_release_lock(idx->streams, s);
		elog(ERROR, "batpak index: entity sequence " UINT64_FORMAT " after " UINT64_FORMAT,
			 entity_seq, last);
	}
	batpak_list_append(idx->area, &s->seqs, &s->capacity, s->last_seq, global_seq);
	s->last_seq = entity_seq;
	memcpy(s->last_hash, event_hash, BATPAK_HASH_LEN);
	dshash_release_lock(idx->streams, s);
}

/*
 * Head of a stream as the writer knows it (published events, including any
 * beyond the visible frontier).  Returns false for an unknown entity.
 */
bool
batpak_index_stream_head(BatpakIndex *idx, const uint8 *key,
						 uint64 *last_seq, uint8 *last_hash)
{
	BatpakStream *s = dshash_find(idx->streams, key, false);

	if (s == NULL)
		return false;
	*last_seq = s->last_seq;
	memcpy(last_hash, s->last_hash, BATPAK_HASH_LEN);
	dshash_release_lock(idx->streams, s);
	return true;
}

/*
 * Global sequences of the entity's visible events with entity sequence
 * greater than 'after', at most max_count of them, in a palloc'd array.
 */
uint64 *
batpak_index_stream_seqs(BatpakIndex *idx, const uint8 *key, uint64 after,
						 uint64 max_count, uint64 frontier, int *count)
{
	BatpakStream *s = dshash_find(idx->streams, key, false);
	uint64	   *result = NULL;
	uint64		visible;
	uint64		n = 0;

	*count = 0;
	if (s == NULL)
		return NULL;
	if (s->last_seq > 0)
	{
		uint64	   *items = dsa_get_address(idx->area, s->seqs);

		visible = batpak_list_visible(items, s->last_seq, frontier);
		if (visible > after)
		{
			n = Min(visible - after, max_count);
			n = Min(n, (uint64) (MaxAllocHugeSize / sizeof(uint64)));
			result = batpak_list_copy(items + after, n);
		}
	}
	dshash_release_lock(idx->streams, s);
	batpak_list_copy_failed(n, result);
	*count = (int) n;
	return result;
}

uint64
batpak_index_stream_version(BatpakIndex *idx, const uint8 *key, uint64 frontier)
{
	BatpakStream *s = dshash_find(idx->streams, key, false);
	uint64		version = 0;

	if (s == NULL)
		return 0;
	if (s->last_seq > 0)
		version = batpak_list_visible(dsa_get_address(idx->area, s->seqs),
									  s->last_seq, frontier);
	dshash_release_lock(idx->streams, s);
	return version;
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

uint64 *
batpak_index_corr_seqs(BatpakIndex *idx, const pg_uuid_t *corr, uint64 frontier,
					   int *count)
{
	BatpakCorrEntry *e = dshash_find(idx->corr, corr, false);
	uint64	   *result = NULL;
	uint64		n;

	*count = 0;
	if (e == NULL)
		return NULL;
	n = batpak_list_visible(dsa_get_address(idx->area, e->seqs), e->count, frontier);
	n = Min(n, (uint64) (MaxAllocHugeSize / sizeof(uint64)));
	if (n > 0)
		result = batpak_list_copy(dsa_get_address(idx->area, e->seqs), n);
	dshash_release_lock(idx->corr, e);
	batpak_list_copy_failed(n, result);
	*count = (int) n;
	return result;
}
