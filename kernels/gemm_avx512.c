/* AVX-512 VNNI GEMMs for the row-interleaved types: lanes are the 16 rows of
 * a group; columns (activation rows) are processed TILE at a time so each
 * weight block is unpacked once and applied to TILE activations. */
#include <immintrin.h>
#include <string.h>

#include "gemm.h"
#include "kquant.h"
#include "legacy.h"

#define TILE 8
/* Blocks ahead of use that the weight prefetch asks for. */
#define GEMM_PREFETCH_BLOCKS 6

void kern_act_q8_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8_with(x, K, n_b, dst, 0, kern_quant_q8_0_avx512);
}

void kern_act_q8u_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8_with(x, K, n_b, dst, 1, kern_quant_q8_0_avx512);
}

static inline __m512i bcast32(const int8_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm512_set1_epi32(v);
}

static inline __attribute__((always_inline)) void q4_tile(int64_t nb, const kern_block_q4_0_r16 *w,
							   const char *act, size_t stride, int nc,
							   float *y, int64_t ldy)
{
	__m512 acc[TILE];
	const float *d[TILE];
	const int32_t *s[TILE];
	const int8_t *qs[TILE];
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++) {
		const kern_act_q8_row a = kern_act_q8_row_at(act, stride, nb, c);
		acc[c] = _mm512_setzero_ps();
		d[c] = a.d;
		s[c] = a.s;
		qs[c] = a.qs;
	}
	const __m512i m4 = _mm512_set1_epi8(0x0F);
	for (int64_t i = 0; i < nb; i++) {
		/* the first tile of a group streams it from memory: ask early */
		const char *ahead = (const char *)(w + i + GEMM_PREFETCH_BLOCKS);
		for (int l = 0; l < (int)sizeof(*w); l += 64)
			_mm_prefetch(ahead + l, _MM_HINT_T0);
		const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[i].d));
		__m512i lo[4], hi[4];
#pragma GCC unroll 4
		for (int j = 0; j < 4; j++) {
			const __m512i v = _mm512_loadu_si512((const void *)w[i].qs[j]);
			lo[j] = _mm512_and_si512(v, m4);
			hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
		}
#pragma GCC unroll 8
		for (int c = 0; c < nc; c++) {
			const int8_t *a = qs[c] + i * 32;
			/* two dependency chains: VNNI latency is several cycles */
			__m512i dot = _mm512_set1_epi32(-s[c][i]), dot2 = _mm512_setzero_si512();
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) {
				dot = _mm512_dpbusd_epi32(dot, lo[j], bcast32(a + 4 * j));
				dot2 = _mm512_dpbusd_epi32(dot2, hi[j], bcast32(a + 16 + 4 * j));
			}
			dot = _mm512_add_epi32(dot, dot2);
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
						 _mm512_mul_ps(dw, _mm512_set1_ps(d[c][i])), acc[c]);
		}
	}
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++)
		_mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}


KERN_GEMM_TILED(kern_gemm_q4_0_r16_avx512, q4_tile, TILE)

static inline __attribute__((always_inline)) void q8_tile(int64_t nb, const kern_block_q8_0_r16 *w,
							   const char *act, size_t stride, int nc,
							   float *y, int64_t ldy)
{
	__m512 acc[TILE];
	const float *d[TILE];
	const int8_t *qs[TILE];
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++) {
		const kern_act_q8_row a = kern_act_q8_row_at(act, stride, nb, c);
		acc[c] = _mm512_setzero_ps();
		d[c] = a.d;
		qs[c] = a.qs;
	}
	const __m512i ones = _mm512_set1_epi8(1);
	for (int64_t i = 0; i < nb; i++) {
		const char *ahead = (const char *)(w + i + GEMM_PREFETCH_BLOCKS);
		for (int l = 0; l < (int)sizeof(*w); l += 64)
			_mm_prefetch(ahead + l, _MM_HINT_T0);
		const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[i].d));
		__m512i q[8];
		__m512i wsum = _mm512_setzero_si512();
#pragma GCC unroll 8
		for (int g = 0; g < 8; g++) {
			q[g] = _mm512_loadu_si512((const void *)w[i].qs[g]);
			wsum = _mm512_dpbusd_epi32(wsum, ones, q[g]);
		}
		/* activations are stored +128: subtract 128 * sum(w) */
		const __m512i corr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(wsum, 7));
#pragma GCC unroll 8
		for (int c = 0; c < nc; c++) {
			const int8_t *a = qs[c] + i * 32;
			__m512i dot = corr, dot2 = _mm512_setzero_si512();
#pragma GCC unroll 4
			for (int g = 0; g < 8; g += 2) {
				dot = _mm512_dpbusd_epi32(dot, bcast32(a + 4 * g), q[g]);
				dot2 = _mm512_dpbusd_epi32(dot2, bcast32(a + 4 * g + 4), q[g + 1]);
			}
			dot = _mm512_add_epi32(dot, dot2);
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
						 _mm512_mul_ps(dw, _mm512_set1_ps(d[c][i])), acc[c]);
		}
	}
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++)
		_mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

KERN_GEMM_TILED(kern_gemm_q8_0_r16_avx512, q8_tile, TILE)

/* ---- Q4_K_R16 ------------------------------------------------------------ */

void kern_act_q8k_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8k_with(x, K, n_b, dst, kern_quant_q8_k_avx512);
}

#define TILE_K 4 /* columns per tile: 16 unpacked weight registers are live */

/* Per super-block: the integer dot of each sub-block times its 6-bit scale,
 * accumulated over the 8 sub-blocks (|sum| < 2^25, no overflow); the mins
 * as VNNI int16 pair dots against the activation's sub-block sums; then
 * d and dmin in float. */
static inline __attribute__((always_inline)) void q4k_tile(int64_t nb, const kern_block_q4_K_r16 *w,
							    const char *act, size_t stride, int nc,
							    float *y, int64_t ldy)
{
	const int64_t nsb = nb / (KERN_QK_K / 32);
	__m512 acc[TILE_K];
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++)
		acc[c] = _mm512_setzero_ps();
	const __m512i m4 = _mm512_set1_epi8(0x0F);
	for (int64_t i = 0; i < nsb; i++) {
		const char *ahead = (const char *)(w + i + 1);
		for (int l = 0; l < (int)sizeof(*w); l += 64)
			_mm_prefetch(ahead + l, _MM_HINT_T0);
		__m512i idot[TILE_K];
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++)
			idot[c] = _mm512_setzero_si512();
#pragma GCC unroll 1
		for (int j = 0; j < 4; j++) {
			__m512i lo[8], hi[8];
#pragma GCC unroll 8
			for (int k = 0; k < 8; k++) {
				const __m512i v = _mm512_loadu_si512((const void *)w[i].qs[j][k]);
				lo[k] = _mm512_and_si512(v, m4);
				hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
			}
			const __m512i sc_lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)w[i].sc[2 * j]));
			const __m512i sc_hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)w[i].sc[2 * j + 1]));
#pragma GCC unroll 4
			for (int c = 0; c < nc; c++) {
				const int8_t *qa = (const int8_t *)(act + (size_t)c * stride + i * KERN_ACT_Q8K_BYTES + 20 + 64 * j);
				__m512i dl = _mm512_setzero_si512(), dh = _mm512_setzero_si512();
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++) {
					dl = _mm512_dpbusd_epi32(dl, lo[k], bcast32(qa + 4 * k));
					dh = _mm512_dpbusd_epi32(dh, hi[k], bcast32(qa + 32 + 4 * k));
				}
				idot[c] = _mm512_add_epi32(idot[c], _mm512_add_epi32(_mm512_mullo_epi32(dl, sc_lo),
										     _mm512_mullo_epi32(dh, sc_hi)));
			}
		}
		const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[i].d));
		const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[i].dmin));
#pragma GCC unroll 4
		for (int c = 0; c < nc; c++) {
			const char *a = act + (size_t)c * stride + i * KERN_ACT_Q8K_BYTES;
			float da;
			memcpy(&da, a, 4);
			__m512i mins = _mm512_setzero_si512();
#pragma GCC unroll 4
			for (int t = 0; t < 4; t++)
				mins = _mm512_dpwssd_epi32(mins, _mm512_loadu_si512((const void *)w[i].m[t]),
							   bcast32((const int8_t *)(a + 4 + 4 * t)));
			const __m512 vda = _mm512_set1_ps(da);
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idot[c]), _mm512_mul_ps(dw, vda), acc[c]);
			acc[c] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmw, vda), acc[c]);
		}
	}
#pragma GCC unroll 4
	for (int c = 0; c < nc; c++)
		_mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

KERN_GEMM_TILED(kern_gemm_q4_k_r16_avx512, q4k_tile, TILE_K)

/* ---- Q6_K_R16 ------------------------------------------------------------ */

void kern_act_q8k16_avx512(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8k16_with(x, K, n_b, dst, kern_quant_q8_k_avx512);
}

/* Per sub-block of 16: the VNNI dot of the unsigned quants (0..63) with the
 * activations, started at -32 * the activations' sum (Q6_K's offset), then
 * times the row's int8 scale; |sum over the super-block| <= 63 * 127 * 128 *
 * 256 < 2^31. Then d in float. The quants need no unpacking: the 4 chunks
 * of a sub-block are applied to TILE columns straight from memory. */
static inline __attribute__((always_inline)) void q6k_tile(int64_t nb, const kern_block_q6_K_r16 *w,
							    const char *act, size_t stride, int nc,
							    float *y, int64_t ldy)
{
	const int64_t nsb = nb / (KERN_QK_K / 32);
	__m512 acc[TILE];
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++)
		acc[c] = _mm512_setzero_ps();
	for (int64_t i = 0; i < nsb; i++) {
		const char *ahead = (const char *)(w + i + 1);
		__m512i idot[TILE];
#pragma GCC unroll 8
		for (int c = 0; c < nc; c++)
			idot[c] = _mm512_setzero_si512();
#pragma GCC unroll 2
		for (int s = 0; s < 16; s++) {
			/* 4 lines of this super-block's quants per sub-block: the next
			 * super-block's 69 lines over its 16 sub-blocks */
			for (int l = 0; l < 5; l++)
				_mm_prefetch(ahead + (5 * s + l) * 64, _MM_HINT_T0);
			__m512i q[4];
#pragma GCC unroll 4
			for (int k = 0; k < 4; k++)
				q[k] = _mm512_loadu_si512((const void *)w[i].qs[s][k]);
			const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w[i].sc[s]));
#pragma GCC unroll 8
			for (int c = 0; c < nc; c++) {
				const kern_block_q8_K *a = (const kern_block_q8_K *)(act + (size_t)c * stride) + i;
				/* two dependency chains: VNNI latency is several cycles */
				__m512i dot = _mm512_set1_epi32(-32 * a->bsums[s]), dot2 = _mm512_setzero_si512();
#pragma GCC unroll 2
				for (int k = 0; k < 4; k += 2) {
					dot = _mm512_dpbusd_epi32(dot, q[k], bcast32(a->qs + 16 * s + 4 * k));
					dot2 = _mm512_dpbusd_epi32(dot2, q[k + 1], bcast32(a->qs + 16 * s + 4 * k + 4));
				}
				dot = _mm512_add_epi32(dot, dot2);
				idot[c] = _mm512_add_epi32(idot[c], _mm512_mullo_epi32(dot, sc));
			}
		}
		const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[i].d));
#pragma GCC unroll 8
		for (int c = 0; c < nc; c++) {
			const kern_block_q8_K *a = (const kern_block_q8_K *)(act + (size_t)c * stride) + i;
			acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idot[c]), _mm512_mul_ps(dw, _mm512_set1_ps(a->d)),
						 acc[c]);
		}
	}
#pragma GCC unroll 8
	for (int c = 0; c < nc; c++)
		_mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

KERN_GEMM_TILED(kern_gemm_q6_k_r16_avx512, q6k_tile, TILE)
