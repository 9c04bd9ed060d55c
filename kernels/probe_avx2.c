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

/* 8 independent chains of maddubs+madd over 32 int8 pairs each: 256 MACs
 * per chain step; returns MACs done. */
long long kern_probe_macs_avx2(long long iters)
{
	__m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), one = _mm256_set1_epi16(1);
	__m256i acc[8];
	for (int k = 0; k < 8; k++)
		acc[k] = _mm256_setzero_si256();
	for (long long i = 0; i < iters; i++)
		for (int k = 0; k < 8; k++)
			acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), one));
	__m256i s = acc[0];
	for (int k = 1; k < 8; k++)
		s = _mm256_add_epi32(s, acc[k]);
	__asm__ volatile("" : : "x"(s));
	return iters * 8 * 32;
}
