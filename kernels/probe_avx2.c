#include <immintrin.h>

#include "probe.h"

double kern_probe_read_avx2(const void *buf, size_t bytes)
{
	const __m256i *p = buf;
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	for (size_t i = 0; i + 4 <= bytes / 32; i += 4) {
		a0 = _mm256_xor_si256(a0, _mm256_load_si256(p + i));
		a1 = _mm256_xor_si256(a1, _mm256_load_si256(p + i + 1));
		a2 = _mm256_xor_si256(a2, _mm256_load_si256(p + i + 2));
		a3 = _mm256_xor_si256(a3, _mm256_load_si256(p + i + 3));
	}
	a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
	return (double)_mm256_extract_epi64(a0, 0); /* keeps the loads alive */
}

/* One AVX2 int8 dot step as herd's kernels do it (weights from L1, maddubs,
 * madd into 32-bit lanes, add): 32 multiply-adds. */
#define PROBE_DOT(c, k)                                                                   \
	c = _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_load_si256(&w[k])), one))

/* 8 independent chains, each its own register (an array would live on the
 * stack and turn every step into a load and a store), each on its own
 * weights so no two steps are the same expression; the memory clobber makes
 * every iteration load them again, so nothing is hoisted out of the loop.
 * Returns the multiply-adds done. */
long long kern_probe_macs_avx2(long long iters)
{
	const __m256i a = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
	__m256i w[8];
	for (int k = 0; k < 8; k++)
		w[k] = _mm256_set1_epi8((char)(k - 4));
	__m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
		c7 = c0;
	for (long long i = 0; i < iters; i++) {
		__asm__ volatile("" : : "r"(w) : "memory");
		PROBE_DOT(c0, 0); PROBE_DOT(c1, 1); PROBE_DOT(c2, 2); PROBE_DOT(c3, 3);
		PROBE_DOT(c4, 4); PROBE_DOT(c5, 5); PROBE_DOT(c6, 6); PROBE_DOT(c7, 7);
	}
	c0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
			      _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
	__asm__ volatile("" : : "x"(c0));
	return iters * 8 * 32;
}
