/* AVX-512 attention helpers over the f16 KV cache. */
#include <immintrin.h>

#include "fp16.h"
#include "ops.h"

float kern_dot_f32_f16_avx512(const float *x, const kern_fp16_t *y, int n)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	int i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i))), a0);
		a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i + 16))), a1);
	}
	for (; i + 16 <= n; i += 16)
		a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i),
				     _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(y + i))), a0);
	float r = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
	for (; i < n; i++)
		r += x[i] * kern_fp16_to_fp32(y[i]);
	return r;
}

void kern_axpy_f16_avx512(float *y, float a, const kern_fp16_t *x, int n)
{
	const __m512 va = _mm512_set1_ps(a);
	int i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))),
						      _mm512_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * kern_fp16_to_fp32(x[i]);
}

/* ---- attention over quantized KV rows (ops.h) ---------------------------
 * Scores with VNNI at 256 bits, one block per register, the signed K made
 * unsigned by an offset subtracted back exactly (kernels/dot_legacy_avx512.c):
 *   Q8_0: sum k q = dpbusd(k ^ 0x80, q) - dpbusd(128, q)
 *   Q4_0: sum (k - 8) q = dpbusd(k, q) - dpbusd(8, q)
 * the corrections computed once per query block. */

#define KV_MAX_BLOCKS 16 /* head size up to 512 */

static inline float kv_hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* corr[b] = dpbusd(c, q block b). */
static inline void kv_corr(const kern_block_q8_0 *y, int nb, char c, __m256i *corr)
{
	for (int b = 0; b < nb; b++)
		corr[b] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(c),
					      _mm256_loadu_si256((const __m256i *)y[b].qs));
}

void kern_kv_scores_q8_0_avx512(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	const kern_block_q8_0 *y = q;
	const int nb = hd / KERN_QK8_0;
	const __m256i flip = _mm256_set1_epi8((char)0x80);
	__m256i corr[KV_MAX_BLOCKS];
	kv_corr(y, nb, (char)0x80, corr);
	for (int j = 0; j < n; j++) {
		const kern_block_q8_0 *x = (const void *)((const char *)k + (size_t)j * stride);
		__m256 acc = _mm256_setzero_ps();
		for (int b = 0; b < nb; b++) {
			const __m256i xv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[b].qs), flip);
			const __m256i s = _mm256_sub_epi32(
				_mm256_dpbusd_epi32(_mm256_setzero_si256(), xv, _mm256_loadu_si256((const __m256i *)y[b].qs)),
				corr[b]);
			acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x[b].d) * _cvtsh_ss(y[b].d)), _mm256_cvtepi32_ps(s), acc);
		}
		sc[j] = kv_hsum(acc);
	}
}

void kern_kv_scores_q4_0_avx512(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	const kern_block_q8_0 *y = q;
	const int nb = hd / KERN_QK8_0;
	const __m256i m4 = _mm256_set1_epi8(0x0F);
	__m256i corr[KV_MAX_BLOCKS];
	kv_corr(y, nb, 8, corr);
	for (int j = 0; j < n; j++) {
		const kern_block_q4_0 *x = (const void *)((const char *)k + (size_t)j * stride);
		__m256 acc = _mm256_setzero_ps();
		for (int b = 0; b < nb; b++) {
			const __m128i t = _mm_loadu_si128((const __m128i *)x[b].qs);
			const __m256i xv = _mm256_and_si256(
				_mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1), m4);
			const __m256i s = _mm256_sub_epi32(
				_mm256_dpbusd_epi32(_mm256_setzero_si256(), xv, _mm256_loadu_si256((const __m256i *)y[b].qs)),
				corr[b]);
			acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x[b].d) * _cvtsh_ss(y[b].d)), _mm256_cvtepi32_ps(s), acc);
		}
		sc[j] = kv_hsum(acc);
	}
}

/* acc0/acc1 (32 floats) += a * the 16 + 16 int8 values lo, hi. */
#define KV_ACC32(a, lo, hi)                                                                         \
	do {                                                                                        \
		acc0 = _mm512_fmadd_ps((a), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), acc0);    \
		acc1 = _mm512_fmadd_ps((a), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), acc1);    \
	} while (0)

void kern_kv_values_q8_0_avx512(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	for (int b = 0; b < hd / KERN_QK8_0; b++) {
		float *y = o + b * KERN_QK8_0;
		__m512 acc0 = _mm512_loadu_ps(y), acc1 = _mm512_loadu_ps(y + 16);
		for (int j = 0; j < n; j++) {
			const kern_block_q8_0 *x = (const kern_block_q8_0 *)((const char *)v + (size_t)j * stride) + b;
			KV_ACC32(_mm512_set1_ps(w[j] * _cvtsh_ss(x->d)), _mm_loadu_si128((const __m128i *)x->qs),
				 _mm_loadu_si128((const __m128i *)(x->qs + 16)));
		}
		_mm512_storeu_ps(y, acc0);
		_mm512_storeu_ps(y + 16, acc1);
	}
}

void kern_kv_values_q4_0_avx512(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	const __m128i m4 = _mm_set1_epi8(0x0f), off = _mm_set1_epi8(8);
	for (int b = 0; b < hd / KERN_QK4_0; b++) {
		float *y = o + b * KERN_QK4_0;
		__m512 acc0 = _mm512_loadu_ps(y), acc1 = _mm512_loadu_ps(y + 16);
		for (int j = 0; j < n; j++) {
			const kern_block_q4_0 *x = (const kern_block_q4_0 *)((const char *)v + (size_t)j * stride) + b;
			const __m128i t = _mm_loadu_si128((const __m128i *)x->qs);
			KV_ACC32(_mm512_set1_ps(w[j] * _cvtsh_ss(x->d)), _mm_sub_epi8(_mm_and_si128(t, m4), off),
				 _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(t, 4), m4), off));
		}
		_mm512_storeu_ps(y, acc0);
		_mm512_storeu_ps(y + 16, acc1);
	}
}
#undef KV_ACC32
