/*-------------------------------------------------------------------------
 *
 * crc.c
 *	  CRC-32C for checking frames on the read path, three streams at a time.
 *
 * Every frame a backend reads is checked against its CRC-32C, and that
 * check was the largest single cost of a read: about a quarter of a
 * 1,000-event read_all page (perf, 2026-11-24).  PostgreSQL 15's
 * pg_comp_crc32c_sse42 feeds the whole buffer through one chain of crc32
 * instructions; each takes the previous one's result, so the loop runs at
 * the instruction's latency (3 cycles per 8 bytes) while the CPU could
 * start one every cycle.
 *
 * batpak_crc32c computes the same CRC with three independent chains over
 * three consecutive blocks of a fixed length L and joins them.  The CRC is
 * linear: the state after blocks A, B, C, started from s, is
 *		shift(crc(s, A), 2L) ^ shift(crc(0, B), L) ^ crc(0, C)
 * where shift(c, n) = c * x^(8n) mod P (what running c through n zero
 * bytes gives).  In the bit-reflected representation the crc32 instruction
 * uses, a carry-less multiplication of c by K = x^(8n - 33) mod P gives a
 * 64-bit value D = c * K * x (the reflection costs one factor x), and the
 * crc32 instruction on D from a zero state computes D * x^32 mod P, so
 *		shift(c, n) = crc32_u64(0, clmul(c, x^(8n - 33) mod P)).
 * The constants are computed at load, bit by bit.
 *
 * Blocks of 128 bytes, then of 32, then the serial loop for what is left:
 * a 480-byte frame (the benchmark's) takes 12 ns instead of 29 in a loop
 * over cached data on the benchmark machine.
 *
 * Every check of a frame uses it (batpak_frame_decode: backends' reads and
 * the writer's recovery scan); frames are still written with PostgreSQL's
 * COMP_CRC32C, so any disagreement between the two fails the first read of
 * every test, and at load a self-test compares them on every length up to
 * past both block sizes, falling back to PostgreSQL's (with a WARNING) if
 * they disagree.  Without SSE 4.2 and PCLMULQDQ (checked at run time, as
 * PostgreSQL checks for its own crc32 path) or off x86-64 it is
 * PostgreSQL's COMP_CRC32C.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/pg_crc32c.h"

#include "batpak.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define BATPAK_CRC_3WAY 1
#include <cpuid.h>
#include <nmmintrin.h>
#include <wmmintrin.h>
#endif

static bool batpak_crc_fast = false;

#ifdef BATPAK_CRC_3WAY

#define CRC_BLOCK_LONG	128
#define CRC_BLOCK_SHORT	32

/* shift constants: x^(8n - 33) mod P for n = 2L and n = L, both L */
static uint64 crc_k_long2;
static uint64 crc_k_long1;
static uint64 crc_k_short2;
static uint64 crc_k_short1;

/* x^m mod P, bit-reflected: x^0 is the top bit; P reflected is 0x82F63B78 */
static uint32
crc_xpow(unsigned int m)
{
	uint32		c = 0x80000000;

	while (m-- > 0)
		c = (c >> 1) ^ ((c & 1) ? 0x82F63B78 : 0);
	return c;
}

__attribute__((target("sse4.2,pclmul")))
static inline uint32
crc_shift(uint32 c, uint64 k)
{
	__m128i		prod;

	prod = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int) c),
								_mm_cvtsi64_si128((long long) k), 0);
	return (uint32) _mm_crc32_u64(0, (uint64) _mm_cvtsi128_si64(prod));
}

static inline uint64
crc_load64(const unsigned char *p)
{
	uint64		w;

	memcpy(&w, p, sizeof(w));
	return w;
}

/*
 * Three chains over the blocks at p, p + len and p + 2 * len: each step of
 * the loop starts three crc32 instructions that do not wait on each other.
 */
__attribute__((target("sse4.2,pclmul")))
static inline uint32
crc_3way_block(uint32 crc, const unsigned char *p, int len,
			   uint64 k2, uint64 k1)
{
	uint32		a = crc;
	uint32		b = 0;
	uint32		c = 0;

	for (int i = 0; i < len; i += 8)
	{
		a = (uint32) _mm_crc32_u64(a, crc_load64(p + i));
		b = (uint32) _mm_crc32_u64(b, crc_load64(p + len + i));
		c = (uint32) _mm_crc32_u64(c, crc_load64(p + 2 * len + i));
	}
	return crc_shift(a, k2) ^ crc_shift(b, k1) ^ c;
}

__attribute__((target("sse4.2,pclmul")))
static pg_crc32c
crc_3way(pg_crc32c crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len >= 3 * CRC_BLOCK_LONG)
	{
		crc = crc_3way_block(crc, p, CRC_BLOCK_LONG, crc_k_long2, crc_k_long1);
		p += 3 * CRC_BLOCK_LONG;
		len -= 3 * CRC_BLOCK_LONG;
	}
	while (len >= 3 * CRC_BLOCK_SHORT)
	{
		crc = crc_3way_block(crc, p, CRC_BLOCK_SHORT, crc_k_short2, crc_k_short1);
		p += 3 * CRC_BLOCK_SHORT;
		len -= 3 * CRC_BLOCK_SHORT;
	}
	while (len >= 8)
	{
		crc = (uint32) _mm_crc32_u64(crc, crc_load64(p));
		p += 8;
		len -= 8;
	}
	while (len > 0)
	{
		crc = _mm_crc32_u8(crc, *p++);
		len--;
	}
	return crc;
}

/* SSE 4.2 (crc32) and PCLMULQDQ, from CPUID leaf 1's ECX */
static bool
crc_cpu_has_3way(void)
{
	unsigned int eax,
				ebx,
				ecx,
				edx;

	if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
		return false;
	return (ecx & bit_SSE4_2) != 0 && (ecx & bit_PCLMUL) != 0;
}
#endif							/* BATPAK_CRC_3WAY */

/*
 * The CRC-32C state after 'len' bytes at 'data', from state 'crc': the
 * same as COMP_CRC32C (INIT_CRC32C and FIN_CRC32C stay the caller's).
 */
pg_crc32c
batpak_crc32c(pg_crc32c crc, const void *data, size_t len)
{
#ifdef BATPAK_CRC_3WAY
	if (likely(batpak_crc_fast))
		return crc_3way(crc, data, len);
#endif
	COMP_CRC32C(crc, data, len);
	return crc;
}

/*
 * Decide, once per process image (the postmaster's _PG_init), whether
 * batpak_crc32c may use the three chains: the CPU must have the
 * instructions and the result must be PostgreSQL's on every length up to
 * past both block sizes and from unaligned starts.
 */
void
batpak_crc_init(void)
{
#ifdef BATPAK_CRC_3WAY
	unsigned char buf[3 * CRC_BLOCK_LONG + 3 * CRC_BLOCK_SHORT + 64];
	uint32		x = 2463534242u;

	batpak_crc_fast = false;
	if (!crc_cpu_has_3way())
		return;
	crc_k_long2 = crc_xpow(8 * 2 * CRC_BLOCK_LONG - 33);
	crc_k_long1 = crc_xpow(8 * CRC_BLOCK_LONG - 33);
	crc_k_short2 = crc_xpow(8 * 2 * CRC_BLOCK_SHORT - 33);
	crc_k_short1 = crc_xpow(8 * CRC_BLOCK_SHORT - 33);

	/* xorshift32: fixed, varied bytes */
	for (size_t i = 0; i < sizeof(buf); i++)
	{
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (unsigned char) x;
	}
	for (size_t start = 0; start < 8; start += 3)
	{
		for (size_t len = 0; len + start <= sizeof(buf); len++)
		{
			pg_crc32c	theirs;
			pg_crc32c	ours;

			INIT_CRC32C(theirs);
			COMP_CRC32C(theirs, buf + start, len);
			INIT_CRC32C(ours);
			ours = crc_3way(ours, buf + start, len);
			if (ours != theirs)
			{
				ereport(WARNING,
						(errmsg("batpak: the three-way CRC-32C disagrees with PostgreSQL's on %zu bytes; frames are checked with PostgreSQL's",
								len)));
				return;
			}
		}
	}
	batpak_crc_fast = true;
#endif
}
