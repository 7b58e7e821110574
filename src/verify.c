/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  batpak.verify_chain: recompute every hash of one entity's chain, or of
 *	  every entity's, from the stored bytes.
 *
 * A chain is sound when its entity sequences run 1..n without a gap, each
 * event's prev_hash is the event_hash of the one before (zero for the
 * first), each stored event_hash equals BLAKE2b-256 over prev_hash and the
 * event's fields, and every frame passes its CRC.  Damage is reported as a
 * row (ok = false) rather than an error, so that one bad entity does not
 * hide the state of the others.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "batpak.h"

PG_FUNCTION_INFO_V1(batpak_verify_chain);

typedef struct VerifyTarget
{
	char	   *entity;
	uint8		key[BATPAK_KEY_LEN];
} VerifyTarget;

static void
verify_one(BatpakIndex *idx, const char *entity, const uint8 *key, Tuplestorestate *ts,
		   TupleDesc desc)
{
	uint64	   *seqs;
	int			n;
	BatpakStreamHead head;
	uint8		prev[BATPAK_HASH_LEN];
	char	   *detail = NULL;
	int64		first_bad = 0;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	/* the events this session sees: committed ones, and its own pending */
	n = (int) Min(batpak_visible_stream_count(idx, key), (uint64) INT_MAX);
	seqs = batpak_index_stream_seqs(idx, key, 0, (uint64) n, &head, &n);
	memset(prev, 0, sizeof(prev));
	for (int i = 0; i < n && detail == NULL; i++)
	{
		BatpakFrame f;
		uint8		hash[BATPAK_HASH_LEN];
		const char *why;
		uint64		pos = batpak_index_seq_pos(idx, seqs[i]);

		CHECK_FOR_INTERRUPTS();
		first_bad = i + 1;
		why = batpak_reader_try_frame(idx, pos, &f);
		if (why != NULL)
		{
			detail = psprintf("frame in segment %08X.seg at offset %u: %s",
							  BATPAK_POS_SEGNO(pos), BATPAK_POS_OFFSET(pos), why);
			break;
		}
		if (f.entity_len != strlen(entity) || memcmp(f.entity, entity, f.entity_len) != 0)
			detail = psprintf("global sequence " UINT64_FORMAT " belongs to another entity",
							  seqs[i]);
		else if (f.entity_seq != (uint64) i + 1)
			detail = psprintf("entity sequence " UINT64_FORMAT " found where %d was expected",
							  f.entity_seq, i + 1);
		else if (memcmp(f.prev_hash, prev, BATPAK_HASH_LEN) != 0)
			detail = psprintf("prev_hash does not match the event_hash of sequence %d", i);
		else
		{
			batpak_frame_compute_hash(&f, hash);
			if (memcmp(hash, f.event_hash, BATPAK_HASH_LEN) != 0)
				detail = pstrdup("event_hash does not match the event's contents");
		}
		memcpy(prev, f.event_hash, BATPAK_HASH_LEN);
	}

	values[0] = CStringGetTextDatum(entity);
	values[1] = Int64GetDatum(n);
	values[2] = BoolGetDatum(detail == NULL);
	if (detail != NULL)
	{
		values[3] = Int64GetDatum(first_bad);
		values[4] = CStringGetTextDatum(detail);
	}
	else
		nulls[3] = nulls[4] = true;
	tuplestore_putvalues(ts, desc, values, nulls);
	if (seqs)
		pfree(seqs);
}

static int
verify_cmp_target(const void *a, const void *b)
{
	return strcmp(((const VerifyTarget *) a)->entity, ((const VerifyTarget *) b)->entity);
}

Datum
batpak_verify_chain(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo;
	BatpakIndex *idx;
	uint64		frontier;
	VerifyTarget *targets;
	int			ntargets = 0;

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	idx = batpak_read_snapshot(&frontier, NULL);

	if (!PG_ARGISNULL(0))
	{
		text	   *entity = PG_GETARG_TEXT_PP(0);

		targets = palloc(sizeof(VerifyTarget));
		batpak_check_coordinate("entity", VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity),
								BATPAK_MAX_COORD_LEN);
		targets[0].entity = text_to_cstring(entity);
		batpak_hash_key(VARDATA_ANY(entity), VARSIZE_ANY_EXHDR(entity), targets[0].key);
		ntargets = 1;
	}
	else
	{
		dshash_seq_status status;
		BatpakStream *s;
		int			max = 64;
		uint64	   *firsts;

		/* collect keys and first events under the scan, names afterwards */
		targets = palloc(sizeof(VerifyTarget) * max);
		firsts = palloc(sizeof(uint64) * max);
		dshash_seq_init(&status, idx->streams, false);
		while ((s = dshash_seq_next(&status)) != NULL)
		{
			uint64	   *items;

			/* streams with committed events (pending ones may be cut) */
			if (s->committed_seq == 0)
				continue;
			items = dsa_get_address(idx->area, s->seqs);
			if (ntargets >= max)
			{
				max *= 2;
				targets = repalloc_huge(targets, sizeof(VerifyTarget) * max);
				firsts = repalloc_huge(firsts, sizeof(uint64) * max);
			}
			memcpy(targets[ntargets].key, s->key, BATPAK_KEY_LEN);
			firsts[ntargets] = items[0];
			ntargets++;
		}
		dshash_seq_term(&status);
		for (int i = 0; i < ntargets; i++)
		{
			BatpakFrame f;
			uint64		pos = batpak_index_seq_pos(idx, firsts[i]);
			const char *why = batpak_reader_try_frame(idx, pos, &f);

			if (why != NULL)
				targets[i].entity = psprintf("(unreadable: segment %08X.seg offset %u: %s)",
											 BATPAK_POS_SEGNO(pos), BATPAK_POS_OFFSET(pos), why);
			else
				targets[i].entity = pnstrdup(f.entity, f.entity_len);
		}
		qsort(targets, ntargets, sizeof(VerifyTarget), verify_cmp_target);
	}

	for (int i = 0; i < ntargets; i++)
		verify_one(idx, targets[i].entity, targets[i].key,
				   rsinfo->setResult, rsinfo->setDesc);
	return (Datum) 0;
}
