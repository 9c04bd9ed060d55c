#include <immintrin.h>

#include "probe.h"

/* One VNNI step on every chain: 64 int8 multiply-adds each. */
#define PROBE_DP(c) c = _mm512_dpbusd_epi32(c, a, b)

/* 16 independent VNNI chains, each its own register (an array of
 * accumulators ends up on the stack, where every step becomes a load and a
 * store and the loop measures store forwarding instead). 16 chains cover
 * the instruction's latency (4-5 cycles) on two pipes. The empty asm tells
 * the compiler a changes each iteration, so no step can be hoisted or
 * folded. Returns the multiply-adds done. */
long long kern_probe_macs_avx512(long long iters)
{
	__m512i a = _mm512_set1_epi8(3);
	const __m512i b = _mm512_set1_epi8(-2);
	/* distinct starts, or the compiler merges the identical chains into one */
#define PROBE_C(k) c##k = _mm512_set1_epi32(k)
	__m512i PROBE_C(0), PROBE_C(1), PROBE_C(2), PROBE_C(3), PROBE_C(4), PROBE_C(5), PROBE_C(6),
		PROBE_C(7), PROBE_C(8), PROBE_C(9), PROBE_C(10), PROBE_C(11), PROBE_C(12), PROBE_C(13),
		PROBE_C(14), PROBE_C(15);
	for (long long i = 0; i < iters; i++) {
		__asm__("" : "+v"(a));
		PROBE_DP(c0); PROBE_DP(c1); PROBE_DP(c2); PROBE_DP(c3);
		PROBE_DP(c4); PROBE_DP(c5); PROBE_DP(c6); PROBE_DP(c7);
		PROBE_DP(c8); PROBE_DP(c9); PROBE_DP(c10); PROBE_DP(c11);
		PROBE_DP(c12); PROBE_DP(c13); PROBE_DP(c14); PROBE_DP(c15);
	}
	c0 = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
			      _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
	c8 = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
			      _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15)));
	c0 = _mm512_add_epi32(c0, c8);
	__asm__ volatile("" : : "v"(c0));
	return iters * 16 * 64;
}
