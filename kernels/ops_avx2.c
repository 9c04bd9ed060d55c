/* AVX2 + F16C attention helpers over the f16 KV cache. */
#include <immintrin.h>

#include "fp16.h"
#include "ops.h"

float kern_dot_f32_f16_avx2(const float *x, const kern_fp16_t *y, int n)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
	int i = 0;
	for (; i + 16 <= n; i += 16) {
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), a0);
		a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i + 8))), a1);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i),
				     _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(y + i))), a0);
	a0 = _mm256_add_ps(a0, a1);
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	float r = _mm_cvtss_f32(s);
	for (; i < n; i++)
		r += x[i] * kern_fp16_to_fp32(y[i]);
	return r;
}

void kern_axpy_f16_avx2(float *y, float a, const kern_fp16_t *x, int n)
{
	const __m256 va = _mm256_set1_ps(a);
	int i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
						      _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] += a * kern_fp16_to_fp32(x[i]);
}

void kern_f32_to_f16_row_avx2(kern_fp16_t *y, const float *x, int n)
{
	int i = 0;
	for (; i + 8 <= n; i += 8)
		_mm_storeu_si128((__m128i *)(y + i),
				 _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
	for (; i < n; i++)
		y[i] = kern_fp32_to_fp16(x[i]);
}

/* ---- attention over quantized KV rows (ops.h) ---------------------------
 * Scores: per block, maddubs (u8 x s8 -> s16 pairs) and madd (-> 8 x s32)
 * as the legacy dots do: Q8_0 rows as |k| times sign(q, k), Q4_0 rows as the
 * nibbles times q minus 8 x q (a per-block correction computed once). */

#define KV_MAX_BLOCKS 16 /* head size up to 512 */

static inline float kv_hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

void kern_kv_scores_q8_0_avx2(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	const kern_block_q8_0 *y = q;
	const int nb = hd / KERN_QK8_0;
	const __m256i ones = _mm256_set1_epi16(1);
	for (int j = 0; j < n; j++) {
		const kern_block_q8_0 *x = (const void *)((const char *)k + (size_t)j * stride);
		__m256 acc = _mm256_setzero_ps();
		for (int b = 0; b < nb; b++) {
			const __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].qs);
			const __m256i yv = _mm256_loadu_si256((const __m256i *)y[b].qs);
			const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(xv, xv), _mm256_sign_epi8(yv, xv));
			acc = _mm256_fmadd_ps(_mm256_set1_ps(kern_fp16_to_fp32(x[b].d) * kern_fp16_to_fp32(y[b].d)),
					      _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);
		}
		sc[j] = kv_hsum(acc);
	}
}

static inline __m256i kv_nibbles(const uint8_t *qs)
{
	const __m128i t = _mm_loadu_si128((const __m128i *)qs);
	const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
	return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

void kern_kv_scores_q4_0_avx2(int hd, const void *q, const void *k, size_t stride, int n, float *sc)
{
	const kern_block_q8_0 *y = q;
	const int nb = hd / KERN_QK8_0;
	const __m256i ones = _mm256_set1_epi16(1), eight = _mm256_set1_epi8(8);
	__m256i corr[KV_MAX_BLOCKS];
	for (int b = 0; b < nb; b++)
		corr[b] = _mm256_madd_epi16(
			_mm256_maddubs_epi16(eight, _mm256_loadu_si256((const __m256i *)y[b].qs)), ones);
	for (int j = 0; j < n; j++) {
		const kern_block_q4_0 *x = (const void *)((const char *)k + (size_t)j * stride);
		__m256 acc = _mm256_setzero_ps();
		for (int b = 0; b < nb; b++) {
			const __m256i yv = _mm256_loadu_si256((const __m256i *)y[b].qs);
			const __m256i s = _mm256_sub_epi32(
				_mm256_madd_epi16(_mm256_maddubs_epi16(kv_nibbles(x[b].qs), yv), ones), corr[b]);
			acc = _mm256_fmadd_ps(_mm256_set1_ps(kern_fp16_to_fp32(x[b].d) * kern_fp16_to_fp32(y[b].d)),
					      _mm256_cvtepi32_ps(s), acc);
		}
		sc[j] = kv_hsum(acc);
	}
}

/* acc[0..4) (32 floats) += a * the 32 int8 values at q. */
static inline void kv_acc32(__m256 acc[4], __m256 a, __m128i lo, __m128i hi)
{
	acc[0] = _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), acc[0]);
	acc[1] = _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), acc[1]);
	acc[2] = _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), acc[2]);
	acc[3] = _mm256_fmadd_ps(a, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), acc[3]);
}

static inline void kv_load4(__m256 acc[4], const float *o)
{
	for (int i = 0; i < 4; i++)
		acc[i] = _mm256_loadu_ps(o + 8 * i);
}

static inline void kv_store4(float *o, const __m256 acc[4])
{
	for (int i = 0; i < 4; i++)
		_mm256_storeu_ps(o + 8 * i, acc[i]);
}

void kern_kv_values_q8_0_avx2(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	for (int b = 0; b < hd / KERN_QK8_0; b++) {
		__m256 acc[4];
		kv_load4(acc, o + b * KERN_QK8_0);
		for (int j = 0; j < n; j++) {
			const kern_block_q8_0 *x = (const kern_block_q8_0 *)((const char *)v + (size_t)j * stride) + b;
			kv_acc32(acc, _mm256_set1_ps(w[j] * kern_fp16_to_fp32(x->d)),
				 _mm_loadu_si128((const __m128i *)x->qs), _mm_loadu_si128((const __m128i *)(x->qs + 16)));
		}
		kv_store4(o + b * KERN_QK8_0, acc);
	}
}

void kern_kv_values_q4_0_avx2(int hd, const float *w, const void *v, size_t stride, int n, float *o)
{
	const __m128i m4 = _mm_set1_epi8(0x0f), off = _mm_set1_epi8(8);
	for (int b = 0; b < hd / KERN_QK4_0; b++) {
		__m256 acc[4];
		kv_load4(acc, o + b * KERN_QK4_0);
		for (int j = 0; j < n; j++) {
			const kern_block_q4_0 *x = (const kern_block_q4_0 *)((const char *)v + (size_t)j * stride) + b;
			const __m128i t = _mm_loadu_si128((const __m128i *)x->qs);
			kv_acc32(acc, _mm256_set1_ps(w[j] * kern_fp16_to_fp32(x->d)),
				 _mm_sub_epi8(_mm_and_si128(t, m4), off),
				 _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(t, 4), m4), off));
		}
		kv_store4(o + b * KERN_QK4_0, acc);
	}
}
