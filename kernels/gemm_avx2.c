/* AVX2 GEMMs for Q4_0_R16 and Q6_K_R16 and their activation rows.
 *
 * AVX2 has no VNNI, but the Q4_0_R16 layout (kernels/gemm.h) still pays: a
 * 256-bit register holds the same 4-byte slice of 8 rows, maddubs (u8 x s8
 * -> pairs in s16) followed by one madd against ones (-> s32) forms the
 * 4-element dot of each row, and every weight block is unpacked once per
 * TILE activation rows instead of once per row as the plain dot product
 * does. The 8 maddubs results of one block (4 chunks x low/high nibbles)
 * are summed in s16 before the single madd: each result is at most
 * 2 * 15 * 127 = 3810 in magnitude (weight nibbles 0..15, Q8_0 quants in
 * [-127, 127], the range every Q8_0 quantizer here emits), so the 8-term sum
 * stays within 30480 < 32767: exact. Q4_0's zero point (q - 8) is the
 * activation row's precomputed 8 * sum of quants, subtracted once per block.
 */
#include <immintrin.h>
#include <string.h>

#include "gemm.h"
#include "kquant.h"
#include "legacy.h"

/* Activation rows per pass over the weights (columns of the output tile). */
#define TILE 4

void kern_act_q8_avx2(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8_with(x, K, n_b, dst, 0, kern_quant_q8_0_avx2);
}

static inline __m256i bcast32(const int8_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

/* One tile: nc (<= TILE) activation rows against one 16-row group. */
static inline __attribute__((always_inline)) void q4_tile(int64_t nb, const kern_block_q4_0_r16 *w,
							   const char *act, size_t stride, int nc,
							   float *y, int64_t ldy)
{
	__m256 acc[TILE][2];
	const float *d[TILE];
	const int32_t *s[TILE];
	const int8_t *qs[TILE];
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++) {
		const kern_act_q8_row a = kern_act_q8_row_at(act, stride, nb, c);
		acc[c][0] = acc[c][1] = _mm256_setzero_ps();
		d[c] = a.d;
		s[c] = a.s;
		qs[c] = a.qs;
	}
	const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
	for (int64_t i = 0; i < nb; i++) {
		_mm_prefetch((const char *)(w + i + 4), _MM_HINT_T0);
		_mm_prefetch((const char *)(w + i + 4) + 64, _MM_HINT_T0);
		_mm_prefetch((const char *)(w + i + 4) + 128, _MM_HINT_T0);
		_mm_prefetch((const char *)(w + i + 4) + 192, _MM_HINT_T0);
		_mm_prefetch((const char *)(w + i + 4) + 256, _MM_HINT_T0);
		__m256i sum[TILE][2];
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++)
			sum[c][0] = sum[c][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			const __m256i v0 = _mm256_loadu_si256((const __m256i *)w[i].qs[j]);
			const __m256i v1 = _mm256_loadu_si256((const __m256i *)(w[i].qs[j] + 32));
			const __m256i lo0 = _mm256_and_si256(v0, m4), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
			const __m256i lo1 = _mm256_and_si256(v1, m4), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
#pragma GCC unroll 4
			for (int c = 0; c < nc; c++) {
				const __m256i alo = bcast32(qs[c] + i * 32 + 4 * j);
				const __m256i ahi = bcast32(qs[c] + i * 32 + 16 + 4 * j);
				sum[c][0] = _mm256_add_epi16(sum[c][0], _mm256_add_epi16(_mm256_maddubs_epi16(lo0, alo),
											 _mm256_maddubs_epi16(hi0, ahi)));
				sum[c][1] = _mm256_add_epi16(sum[c][1], _mm256_add_epi16(_mm256_maddubs_epi16(lo1, alo),
											 _mm256_maddubs_epi16(hi1, ahi)));
			}
		}
		const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[i].d));
		const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w[i].d + 8)));
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++) {
			const __m256i zp = _mm256_set1_epi32(s[c][i]);
			const __m256 da = _mm256_set1_ps(d[c][i]);
			const __m256i i0 = _mm256_sub_epi32(_mm256_madd_epi16(sum[c][0], ones), zp);
			const __m256i i1 = _mm256_sub_epi32(_mm256_madd_epi16(sum[c][1], ones), zp);
			acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(dw0, da), acc[c][0]);
			acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(dw1, da), acc[c][1]);
		}
	}
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++) {
		_mm256_storeu_ps(y + (int64_t)c * ldy, acc[c][0]);
		_mm256_storeu_ps(y + (int64_t)c * ldy + 8, acc[c][1]);
	}
}


KERN_GEMM_TILED(kern_gemm_q4_0_r16_avx2, q4_tile, TILE)

/* ---- Q6_K_R16 ------------------------------------------------------------ */

void kern_act_q8k16_avx2(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8k16_with(x, K, n_b, dst, kern_quant_q8_k_avx2);
}

/* (sc, sc) in the two int16 halves of each row's 32-bit lane, for the 8
 * rows of half h of sub-block s: madd with it scales a row's pair sums. */
static inline __m256i q6k_scale_pairs(const kern_block_q6_K_r16 *w, int s, int h)
{
	const __m256i s32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w->sc[s] + 8 * h)));
	return _mm256_blend_epi16(s32, _mm256_slli_epi32(s32, 16), 0xAA);
}

/* One tile against one super-block, rows 8h .. 8h+7 of sub-block s:
 * maddubs of the unsigned quants (0..63) with the activations gives pair
 * sums of at most 2 * 63 * 127 = 16002, two of them added in int16 stay
 * below 32767 (exact); madd with the row's scale pairs takes them to int32
 * times the scale. Q6_K's offset of 32 is madd(scale pairs, -16 * the
 * activations' sum) = -32 * scale * sum (|16 * sum| <= 32512, gemm.h). */
static inline __attribute__((always_inline)) void q6k_sub(const kern_block_q6_K_r16 *w, int s, int h,
							   const kern_block_q8_K *const *a, int nc,
							   __m256i idot[][2])
{
	__m256i q[4];
#pragma GCC unroll 4
	for (int k = 0; k < 4; k++)
		q[k] = _mm256_loadu_si256((const __m256i *)(w->qs[s][k] + 32 * h));
	const __m256i sc = q6k_scale_pairs(w, s, h);
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++) {
		const int8_t *qa = a[c]->qs + 16 * s;
		const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(q[0], bcast32(qa)),
						    _mm256_maddubs_epi16(q[1], bcast32(qa + 4)));
		const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(q[2], bcast32(qa + 8)),
						    _mm256_maddubs_epi16(q[3], bcast32(qa + 12)));
		const __m256i off = _mm256_madd_epi16(sc, _mm256_set1_epi16((int16_t)(-16 * a[c]->bsums[s])));
		const __m256i v = _mm256_add_epi32(_mm256_madd_epi16(p0, sc), _mm256_madd_epi16(p1, sc));
		idot[c][h] = _mm256_add_epi32(idot[c][h], _mm256_add_epi32(v, off));
	}
}

static inline __attribute__((always_inline)) void q6k_tile(int64_t nb, const kern_block_q6_K_r16 *w,
							    const char *act, size_t stride, int nc,
							    float *y, int64_t ldy)
{
	const int64_t nsb = nb / (KERN_QK_K / 32);
	__m256 acc[TILE][2];
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++)
		acc[c][0] = acc[c][1] = _mm256_setzero_ps();
	for (int64_t i = 0; i < nsb; i++) {
		const char *ahead = (const char *)(w + i + 1);
		const kern_block_q8_K *a[TILE];
		__m256i idot[TILE][2];
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++) {
			a[c] = (const kern_block_q8_K *)(act + (size_t)c * stride) + i;
			idot[c][0] = idot[c][1] = _mm256_setzero_si256();
		}
#pragma GCC unroll 1
		for (int s = 0; s < 16; s++) {
			for (int l = 0; l < 5; l++) /* the next super-block's 69 lines */
				_mm_prefetch(ahead + (5 * s + l) * 64, _MM_HINT_T0);
			q6k_sub(w + i, s, 0, a, nc, idot);
			q6k_sub(w + i, s, 1, a, nc, idot);
		}
		const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[i].d));
		const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w[i].d + 8)));
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++) {
			const __m256 da = _mm256_set1_ps(a[c]->d);
			acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot[c][0]), _mm256_mul_ps(dw0, da), acc[c][0]);
			acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot[c][1]), _mm256_mul_ps(dw1, da), acc[c][1]);
		}
	}
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++) {
		_mm256_storeu_ps(y + (int64_t)c * ldy, acc[c][0]);
		_mm256_storeu_ps(y + (int64_t)c * ldy + 8, acc[c][1]);
	}
}

KERN_GEMM_TILED(kern_gemm_q6_k_r16_avx2, q6k_tile, TILE)
