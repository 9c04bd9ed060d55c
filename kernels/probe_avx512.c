#include <immintrin.h>

#include "probe.h"

/* 24 independent VNNI chains of 64 int8 MACs each per step: enough to cover
 * the instruction's latency on every pipe that can issue it. */
long long kern_probe_macs_avx512(long long iters)
{
	const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
	__m512i acc[24];
	for (int k = 0; k < 24; k++)
		acc[k] = _mm512_setzero_si512();
	for (long long i = 0; i < iters; i++)
		for (int k = 0; k < 24; k++)
			acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
	__m512i s = acc[0];
	for (int k = 1; k < 24; k++)
		s = _mm512_add_epi32(s, acc[k]);
	__asm__ volatile("" : : "v"(s));
	return iters * 24 * 64;
}
