/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  The on-disk format: segment headers, frames (CRC32C + BLAKE2b-256 hash
 *	  chain), event ids, and reading published frames through read-only
 *	  mappings of the segment files.
 *
 * Frames are immutable once the writer has published them, so any process
 * may read them without coordinating with the writer: the index only ever
 * hands out positions of frames that were completely written (and, for
 * synchronous appends, synced) before the visible frontier moved past them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "port/pg_crc32c.h"
#include "storage/fd.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "batpak.h"


/* Little-endian field access, independent of the platform's byte order */
static inline void
put_u64(char *p, uint64 v)
{
#ifdef WORDS_BIGENDIAN
	v = pg_bswap64(v);
#endif
	memcpy(p, &v, 8);
}

static inline void
put_u32(char *p, uint32 v)
{
#ifdef WORDS_BIGENDIAN
	v = pg_bswap32(v);
#endif
	memcpy(p, &v, 4);
}

static inline void
put_u16(char *p, uint16 v)
{
#ifdef WORDS_BIGENDIAN
	v = pg_bswap16(v);
#endif
	memcpy(p, &v, 2);
}

static inline uint64
get_u64(const char *p)
{
	uint64		v;

	memcpy(&v, p, 8);
#ifdef WORDS_BIGENDIAN
	v = pg_bswap64(v);
#endif
	return v;
}

static inline uint16
get_u16(const char *p)
{
	uint16		v;

	memcpy(&v, p, 2);
#ifdef WORDS_BIGENDIAN
	v = pg_bswap16(v);
#endif
	return v;
}

void
batpak_segment_path(char *path, uint32 segno)
{
	snprintf(path, MAXPGPATH, "%s/%08X.seg", BATPAK_DIR, segno);
}

/* BLAKE2b-128 of entity or idempotency key text: the index key */
void
batpak_hash_key(const char *data, Size len, uint8 *out)
{
	crypto_generichash(out, BATPAK_KEY_LEN, (const unsigned char *) data, len,
					   NULL, 0);
}

/*
 * Event ids are RFC 9562 version 8 UUIDs: 60 bits of global sequence
 * (big-endian, so ids sort like the sequence), the version and variant bits,
 * then 62 random bits.  See docs/decisions.md.
 */
void
batpak_uuid_for_seq(uint64 seq, pg_uuid_t *out)
{
	static uint8 key[crypto_stream_chacha20_KEYBYTES];
	static uint64 nonce = 0;
	static uint8 pool[4096];
	static Size pool_used = sizeof(pool);
	uint8	   *d = out->data;

	/*
	 * libsodium 1.0.18's randombytes_buf is a getrandom() system call per
	 * call.  Draw the random bits from a ChaCha20 keystream under a random
	 * key instead, 512 ids per block.
	 */
	if (pool_used + 8 > sizeof(pool))
	{
		uint8		n[crypto_stream_chacha20_NONCEBYTES];

		if (nonce == 0)
			randombytes_buf(key, sizeof(key));
		nonce++;
		memcpy(n, &nonce, sizeof(n));
		crypto_stream_chacha20(pool, sizeof(pool), n, key);
		pool_used = 0;
	}
	memcpy(d + 8, pool + pool_used, 8);
	pool_used += 8;
	d[0] = (uint8) (seq >> 52);
	d[1] = (uint8) (seq >> 44);
	d[2] = (uint8) (seq >> 36);
	d[3] = (uint8) (seq >> 28);
	d[4] = (uint8) (seq >> 20);
	d[5] = (uint8) (seq >> 12);
	d[6] = (uint8) (0x80 | ((seq >> 8) & 0x0F));
	d[7] = (uint8) seq;
	d[8] = (uint8) (0x80 | (d[8] & 0x3F));
}

bool
batpak_seq_from_uuid(const pg_uuid_t *id, uint64 *seq)
{
	const uint8 *d = id->data;

	if ((d[6] & 0xF0) != 0x80 || (d[8] & 0xC0) != 0x80)
		return false;
	*seq = ((uint64) d[0] << 52) | ((uint64) d[1] << 44) |
		((uint64) d[2] << 36) | ((uint64) d[3] << 28) |
		((uint64) d[4] << 20) | ((uint64) d[5] << 12) |
		((uint64) (d[6] & 0x0F) << 8) | (uint64) d[7];
	return *seq > 0;
}

Size
batpak_frame_size(const BatpakEventReq *ev)
{
	return BATPAK_FRAME_HEADER_SIZE + BATPAK_BODY_FIXED_SIZE +
		(Size) ev->entity_len + ev->scope_len + ev->kind_len + ev->idem_len +
		ev->payload_len + ev->metadata_len + 2 * BATPAK_HASH_LEN;
}

static void
batpak_hash_body(const uint8 *prev_hash, const char *body, Size len_without_hashes,
				 uint8 *out)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, BATPAK_HASH_LEN);
	crypto_generichash_update(&st, prev_hash, BATPAK_HASH_LEN);
	crypto_generichash_update(&st, (const unsigned char *) body, len_without_hashes);
	crypto_generichash_final(&st, out, BATPAK_HASH_LEN);
}

/* Write the frame header of the body_len-byte body at dst + 8: length, CRC */
static void
batpak_frame_seal(char *dst, uint32 body_len)
{
	pg_crc32c	crc;

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, dst + BATPAK_FRAME_HEADER_SIZE, body_len);
	FIN_CRC32C(crc);
	put_u32(dst, body_len);
	put_u32(dst + 4, crc);
}

/*
 * Write the frame of one event at dst (batpak_frame_size(ev) bytes) and
 * return its hash in event_hash_out.
 */
void
batpak_frame_build(char *dst, const BatpakEventReq *ev,
				   uint64 global_seq, uint64 entity_seq,
				   const pg_uuid_t *event_id, const pg_uuid_t *correlation_id,
				   TimestampTz committed_at, uint32 flags,
				   uint64 xid, uint64 top_xid,
				   const uint8 *prev_hash, uint8 *event_hash_out)
{
	Size		frame_len = batpak_frame_size(ev);
	uint32		body_len = (uint32) (frame_len - BATPAK_FRAME_HEADER_SIZE);
	char	   *body = dst + BATPAK_FRAME_HEADER_SIZE;
	char	   *p;
	Size		strings = (Size) ev->entity_len + ev->scope_len + ev->kind_len +
		ev->idem_len + ev->payload_len + ev->metadata_len;

	if (ev->has_causation)
		flags |= BATPAK_FLAG_HAS_CAUSATION;
	if (ev->has_metadata)
		flags |= BATPAK_FLAG_HAS_METADATA;
	if (xid != 0)
		flags |= BATPAK_FLAG_TRANSACTIONAL;

	put_u64(body, global_seq);
	put_u64(body + 8, entity_seq);
	memcpy(body + 16, event_id->data, 16);
	memcpy(body + 32, correlation_id->data, 16);
	if (ev->has_causation)
		memcpy(body + 48, ev->causation_id.data, 16);
	else
		memset(body + 48, 0, 16);
	put_u64(body + 64, (uint64) committed_at);
	put_u32(body + 72, flags);
	put_u16(body + 76, ev->entity_len);
	put_u16(body + 78, ev->scope_len);
	put_u16(body + 80, ev->kind_len);
	put_u16(body + 82, ev->idem_len);
	put_u32(body + 84, ev->payload_len);
	put_u32(body + 88, ev->metadata_len);
	put_u64(body + 92, xid);
	put_u64(body + 100, top_xid);
	/* the request keeps the strings in frame order already */
	p = body + BATPAK_BODY_FIXED_SIZE;
	memcpy(p, ev->data, strings);
	p += strings;
	memcpy(p, prev_hash, BATPAK_HASH_LEN);
	batpak_hash_body(prev_hash, body, p - body, event_hash_out);
	memcpy(p + BATPAK_HASH_LEN, event_hash_out, BATPAK_HASH_LEN);
	batpak_frame_seal(dst, body_len);
}

/*
 * Write a resolution marker (see writer.c): a frame without event fields
 * that records the end of pending events, batpak_marker_size(nxids) bytes.
 * COMMIT names the top-level transaction.  ABORT names the top-level
 * transaction and, in its payload, the (sub)transactions whose events are
 * discarded together; with none listed, all of the transaction's events
 * are.  One marker per resolution: a rolled-back savepoint takes its
 * committed children with it, and their events only form the end of each
 * stream all together.
 */
Size
batpak_marker_size(int nxids)
{
	return BATPAK_FRAME_HEADER_SIZE + BATPAK_BODY_FIXED_SIZE +
		(Size) nxids * sizeof(uint64) + 2 * BATPAK_HASH_LEN;
}

void
batpak_marker_build(char *dst, uint32 flags, uint64 top_xid,
					const uint64 *xids, int nxids)
{
	uint32		body_len = (uint32) (batpak_marker_size(nxids) - BATPAK_FRAME_HEADER_SIZE);
	char	   *body = dst + BATPAK_FRAME_HEADER_SIZE;

	memset(body, 0, body_len);
	put_u32(body + 72, flags);
	put_u32(body + 84, (uint32) (nxids * sizeof(uint64)));
	put_u64(body + 92, top_xid);
	put_u64(body + 100, top_xid);
	for (int i = 0; i < nxids; i++)
		put_u64(body + BATPAK_BODY_FIXED_SIZE + i * sizeof(uint64), xids[i]);
	batpak_frame_seal(dst, body_len);
}

/* The i-th xid listed in a decoded ABORT marker */
uint64
batpak_marker_xid(const BatpakFrame *f, int i)
{
	return get_u64(f->payload + i * sizeof(uint64));
}

/*
 * Decode the frame at 'frame', of which 'avail' bytes are present.  Checks
 * the length, the CRC and the internal consistency of the lengths; the hash
 * chain is checked by verify_chain and by recovery.
 */
int
batpak_frame_decode(const char *frame, Size avail, BatpakFrame *f,
					const char **why)
{
	uint32		body_len;
	uint32		crc_stored;
	pg_crc32c	crc;
	const char *body;
	const char *p;
	uint64		strings;

	*why = NULL;
	if (avail < BATPAK_FRAME_HEADER_SIZE)
	{
		*why = "incomplete frame header";
		return BATPAK_DECODE_INCOMPLETE;
	}
	body_len = batpak_le32(frame);
	crc_stored = batpak_le32(frame + 4);
	if (body_len < BATPAK_BODY_FIXED_SIZE + 2 * BATPAK_HASH_LEN ||
		body_len > BATPAK_MAX_REQUEST_SIZE)
	{
		*why = "invalid frame length";
		return BATPAK_DECODE_CORRUPT;
	}
	if ((Size) body_len + BATPAK_FRAME_HEADER_SIZE > avail)
	{
		*why = "frame runs past the end of the data";
		return BATPAK_DECODE_INCOMPLETE;
	}
	body = frame + BATPAK_FRAME_HEADER_SIZE;
	INIT_CRC32C(crc);
	crc = batpak_crc32c(crc, body, body_len);
	FIN_CRC32C(crc);
	if (!EQ_CRC32C(crc, crc_stored))
	{
		*why = "CRC mismatch";
		return BATPAK_DECODE_CORRUPT;
	}

	f->global_seq = get_u64(body);
	f->entity_seq = get_u64(body + 8);
	memcpy(f->event_id.data, body + 16, 16);
	memcpy(f->correlation_id.data, body + 32, 16);
	memcpy(f->causation_id.data, body + 48, 16);
	f->committed_at = (TimestampTz) get_u64(body + 64);
	f->flags = batpak_le32(body + 72);
	f->entity_len = get_u16(body + 76);
	f->scope_len = get_u16(body + 78);
	f->kind_len = get_u16(body + 80);
	f->idem_len = get_u16(body + 82);
	f->payload_len = batpak_le32(body + 84);
	f->metadata_len = batpak_le32(body + 88);
	f->xid = get_u64(body + 92);
	f->top_xid = get_u64(body + 100);
	strings = (uint64) f->entity_len + f->scope_len + f->kind_len +
		f->idem_len + f->payload_len + f->metadata_len;
	if (strings + BATPAK_BODY_FIXED_SIZE + 2 * BATPAK_HASH_LEN != body_len ||
		(f->flags & ~BATPAK_FLAG_KNOWN) != 0)
	{
		*why = "inconsistent frame fields";
		return BATPAK_DECODE_CORRUPT;
	}
	if (f->flags & BATPAK_FLAG_MARKERS)
	{
		/* a marker: exactly one kind, an xid, no event fields */
		if (f->flags != BATPAK_FLAG_MARKER_COMMIT &&
			f->flags != BATPAK_FLAG_MARKER_ABORT)
			*why = "inconsistent marker flags";
		else if (f->global_seq != 0 || f->entity_seq != 0 ||
				 strings != f->payload_len || f->payload_len % sizeof(uint64) != 0 ||
				 ((f->flags & BATPAK_FLAG_MARKER_COMMIT) && f->payload_len != 0) ||
				 f->xid == 0 || f->xid != f->top_xid)
			*why = "inconsistent marker fields";
	}
	else if (f->global_seq == 0 || f->entity_seq == 0 || f->entity_len == 0 ||
			 f->kind_len == 0)
		*why = "inconsistent frame fields";
	else if (((f->flags & BATPAK_FLAG_TRANSACTIONAL) != 0) !=
			 (f->xid != 0 && f->top_xid != 0) ||
			 (f->xid == 0) != (f->top_xid == 0))
		*why = "inconsistent transaction fields";
	if (*why != NULL)
		return BATPAK_DECODE_CORRUPT;
	p = body + BATPAK_BODY_FIXED_SIZE;
	f->entity = p;
	p += f->entity_len;
	f->scope = p;
	p += f->scope_len;
	f->kind = p;
	p += f->kind_len;
	f->idem = p;
	p += f->idem_len;
	f->payload = p;
	p += f->payload_len;
	f->metadata = p;
	p += f->metadata_len;
	f->prev_hash = (const uint8 *) p;
	f->event_hash = (const uint8 *) p + BATPAK_HASH_LEN;
	f->body = body;
	f->body_len = body_len;
	return BATPAK_DECODE_OK;
}

/* Recompute a decoded frame's hash from its stored bytes */
void
batpak_frame_compute_hash(const BatpakFrame *f, uint8 *out)
{
	batpak_hash_body(f->prev_hash, f->body, f->body_len - 2 * BATPAK_HASH_LEN,
					 out);
}

void
batpak_report_corrupt(uint32 segno, uint64 offset, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("corrupt frame in segment %08X.seg at offset " UINT64_FORMAT ": %s",
					segno, offset, why)));
}

/*
 * Segment mappings.  Readers map segment files read-only and decode frames
 * in place: no read system call and no copy per frame, which matters for a
 * stream whose frames are scattered through a segment.  The mappings are
 * kept per process from one call to the next (so an error cannot leak one)
 * and dropped when the writer restarts.
 *
 * Why a mapped page can never vanish under a reader (SIGBUS): the writer
 * only shortens a segment at three points, and never below a published
 * frame: recovery cuts a torn tail (frames that were never published),
 * rotation trims the zero-filled preallocation of the old segment, and a
 * clean shutdown trims the newest one.  Readers only touch frames at or
 * below the visible frontier.  MAP_SHARED maps the page cache itself, so
 * the writer's later writes are seen at once.
 */
#define BATPAK_MAX_MAPS		64

typedef struct BatpakMap
{
	uint32		segno;
	char	   *addr;
	Size		len;
	uint32		truncations;	/* BatpakCtl->truncations when mapped */
} BatpakMap;

static BatpakMap batpak_maps[BATPAK_MAX_MAPS];
static int	batpak_nmaps = 0;
static int	batpak_next_evict = 0;

void
batpak_unmap_all(void)
{
	for (int i = 0; i < batpak_nmaps; i++)
		if (batpak_maps[i].addr != NULL)
			munmap(batpak_maps[i].addr, batpak_maps[i].len);
	batpak_nmaps = 0;
	batpak_next_evict = 0;
}

/*
 * A mapping of segment segno covering at least [0, need_end), or NULL when
 * the file is shorter than that.
 */
static BatpakMap *
batpak_map_segment(uint32 segno, uint64 need_end)
{
	BatpakMap  *m = NULL;
	char		path[MAXPGPATH];
	struct stat st;
	int			fd;
	void	   *addr;

	for (int i = 0; i < batpak_nmaps; i++)
	{
		if (batpak_maps[i].segno != segno || batpak_maps[i].addr == NULL)
			continue;
		m = &batpak_maps[i];

		/*
		 * A mapping can be longer than its file once the writer has cut the
		 * file (a rotation cuts the old segment's zero-filled preallocation
		 * off, a clean shutdown the newest one's).  Published frames all lie
		 * before the cut, but a frame whose length field is damaged would
		 * send the CRC past the end of the file: SIGBUS, which takes the
		 * whole server down instead of reporting the damage.  So mappings are
		 * redone after any cut.  (A cut during a read remains possible; it
		 * takes damage on disk and a rotation in the same instant.)
		 */
		if (need_end <= m->len &&
			m->truncations == pg_atomic_read_u32(&BatpakCtl->truncations))
			return m;
		/* the file has grown or may have been cut since: map it again */
		munmap(m->addr, m->len);
		m->addr = NULL;
		break;
	}
	if (m == NULL)
	{
		for (int i = 0; i < batpak_nmaps && m == NULL; i++)
			if (batpak_maps[i].addr == NULL)
				m = &batpak_maps[i];
		if (m == NULL && batpak_nmaps < BATPAK_MAX_MAPS)
			m = &batpak_maps[batpak_nmaps++];
		if (m == NULL)
		{
			m = &batpak_maps[batpak_next_evict];
			batpak_next_evict = (batpak_next_evict + 1) % BATPAK_MAX_MAPS;
			munmap(m->addr, m->len);
		}
		m->addr = NULL;
	}
	m->segno = segno;
	/* before the size: a cut after it makes the mapping be redone */
	m->truncations = pg_atomic_read_u32(&BatpakCtl->truncations);
	pg_read_barrier();

	batpak_segment_path(path, segno);
	fd = BasicOpenFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0 || fstat(fd, &st) != 0)
	{
		int			save_errno = errno;

		if (fd >= 0)
			close(fd);
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open segment file \"%s\": %m", path)));
	}
	if ((uint64) st.st_size < need_end || st.st_size == 0)
	{
		close(fd);
		return NULL;
	}
	addr = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (addr == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not map segment file \"%s\": %m", path)));
	m->addr = addr;
	m->len = st.st_size;
	return m;
}

/*
 * Decode the frame at pos.  The decoded frame points into the segment's
 * mapping and stays valid until the next read.  Returns NULL, or why the
 * frame is damaged (published frames are complete, so any failure is
 * corruption).
 */
const char *
batpak_try_read_frame(uint64 pos, BatpakFrame *f)
{
	uint32		segno = BATPAK_POS_SEGNO(pos);
	uint64		off = BATPAK_POS_OFFSET(pos);
	BatpakMap  *m;
	const char *why;
	uint64		need;

	m = batpak_map_segment(segno, off + BATPAK_FRAME_HEADER_SIZE);
	if (m == NULL)
		return "position past the end of the segment";
	need = off + BATPAK_FRAME_HEADER_SIZE + (uint64) batpak_le32(m->addr + off);
	if (need > m->len)
	{
		m = batpak_map_segment(segno, need);
		if (m == NULL)
			return "frame runs past the end of the segment";
	}
	if (batpak_frame_decode(m->addr + off, m->len - off, f, &why) != BATPAK_DECODE_OK)
		return why;
	return NULL;
}

void
batpak_read_frame(uint64 pos, BatpakFrame *f)
{
	const char *why = batpak_try_read_frame(pos, f);

	if (why != NULL)
		batpak_report_corrupt(BATPAK_POS_SEGNO(pos), BATPAK_POS_OFFSET(pos), why);
}

/*
 * batpak_try_read_frame for a backend reading through idx, the index of one
 * writer incarnation.  What an index says about the files holds for its
 * incarnation only: after an I/O error the writer overwrites the events it
 * had not synced yet with zeros, and its successor writes new events, with
 * the same sequences, at the same offsets.  A successor bumps the
 * incarnation before it touches the files, so a frame decoded while the
 * incarnation is still the index's is that incarnation's own.  Otherwise,
 * or when a frame cannot be decoded while the writer is failing or gone,
 * the read stops with an error that says to repeat it, rather than return
 * another incarnation's event or call discarded bytes damage.  (A read that
 * spans a writer restart fails even when its events were all durable: the
 * restart is rare, the check is one atomic read per frame.)
 */
const char *
batpak_reader_try_frame(BatpakIndex *idx, uint64 pos, BatpakFrame *f)
{
	const char *why;

	/*
	 * Test fault: wait here, between the snapshot and the frame, until a
	 * test releases the lock (012_faults restarts the writer meanwhile).
	 * Readers hold no lock of their own at this point.
	 */
	if (unlikely(batpak_inject_fault == BATPAK_FAULT_READ_PAUSE))
		(void) DirectFunctionCall1(pg_advisory_xact_lock_shared_int8,
								   Int64GetDatum(BATPAK_READ_PAUSE_LOCK));
	why = batpak_try_read_frame(pos, f);

	pg_read_barrier();
	if (pg_atomic_read_u32(&BatpakCtl->incarnation) != idx->incarnation ||
		(why != NULL &&
		 (BatpakCtl->io_failed ||
		  pg_atomic_read_u32(&BatpakCtl->state) != BATPAK_STATE_READY)))
		ereport(ERROR,
				(errcode(ERRCODE_BATPAK_WRITER_UNAVAILABLE),
				 errmsg("batpak writer stopped or restarted during the read"),
				 errdetail("Events appended with batpak.synchronous_commit = off and not synced yet may have been discarded."),
				 errhint("Repeat the read.")));
	return why;
}

/* batpak_reader_try_frame, reporting a damaged frame */
void
batpak_reader_frame(BatpakIndex *idx, uint64 pos, BatpakFrame *f)
{
	const char *why = batpak_reader_try_frame(idx, pos, f);

	if (why != NULL)
		batpak_report_corrupt(BATPAK_POS_SEGNO(pos), BATPAK_POS_OFFSET(pos), why);
}

/* Segment header: magic, version, segno, store id, created at, CRC */
void
batpak_write_segment_header(int fd, uint32 segno, const uint8 *store_id)
{
	char		buf[BATPAK_SEGMENT_HEADER_SIZE];
	pg_crc32c	crc;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, BATPAK_SEGMENT_MAGIC, 8);
	put_u32(buf + 8, BATPAK_FORMAT_VERSION);
	put_u32(buf + 12, segno);
	memcpy(buf + 16, store_id, 16);
	put_u64(buf + 32, (uint64) GetCurrentTimestamp());
	INIT_CRC32C(crc);
	COMP_CRC32C(crc, buf, BATPAK_SEGMENT_HEADER_SIZE - 4);
	FIN_CRC32C(crc);
	put_u32(buf + BATPAK_SEGMENT_HEADER_SIZE - 4, crc);

	errno = 0;
	if (pg_pwrite(fd, buf, sizeof(buf), 0) != sizeof(buf))
	{
		if (errno == 0)
			errno = ENOSPC;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write header of segment %08X.seg: %m", segno)));
	}
}

/*
 * Check a segment header.  With store_id all zero, the store id is taken
 * from this header; otherwise it must match.
 */
bool
batpak_check_segment_header(const char *buf, uint32 segno, uint8 *store_id,
							const char **why)
{
	pg_crc32c	crc;
	static const uint8 zero[16] = {0};

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, buf, BATPAK_SEGMENT_HEADER_SIZE - 4);
	FIN_CRC32C(crc);
	if (memcmp(buf, BATPAK_SEGMENT_MAGIC, 8) != 0)
		*why = "bad segment magic";
	else if (!EQ_CRC32C(crc, batpak_le32(buf + BATPAK_SEGMENT_HEADER_SIZE - 4)))
		*why = "segment header CRC mismatch";
	else if (batpak_le32(buf + 8) != BATPAK_FORMAT_VERSION)
		*why = "unsupported segment format version";
	else if (batpak_le32(buf + 12) != segno)
		*why = "segment number in header does not match file name";
	else if (memcmp(store_id, zero, 16) != 0 && memcmp(store_id, buf + 16, 16) != 0)
		*why = "segment belongs to another store";
	else
	{
		memcpy(store_id, buf + 16, 16);
		return true;
	}
	return false;
}
