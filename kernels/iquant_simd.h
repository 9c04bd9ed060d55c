/* 256-bit decoders of the i-quant sub-blocks, shared by dot_iquant_avx2.c
 * and dot_iquant_avx512.c (include only from those: it needs AVX2).
 *
 * A decoder turns sub-block ib (32 elements) into an iq_v: mag, the 32
 * weight magnitudes |w| as unsigned bytes (<= 127); sgn, bytes whose sign
 * is that of w (nonzero wherever mag is); sc, 16 int16 scales, lane k for
 * elements 2k, 2k+1 (ls[0] in the low 128 bits, ls[1] in the high). The
 * weights and scales are those of the scalar decoders (kernels/iquant.h). */
#ifndef HERD_KERNELS_IQUANT_SIMD_H
#define HERD_KERNELS_IQUANT_SIMD_H

#include <immintrin.h>
#include <string.h>

#include "iquant.h"

typedef struct iq_v {
	__m256i mag, sgn, sc;
} iq_v;

static inline __attribute__((always_inline)) uint32_t iqs_rd32(const void *p)
{
	uint32_t u;
	memcpy(&u, p, 4);
	return u;
}

static inline __attribute__((always_inline)) __m256i iqs_sc(int a, int b)
{
	return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)a)), _mm_set1_epi16((short)b),
				       1);
}

/* 32 sign bits (bit j of byte l for element 8l + j) -> bytes -1 (set) or 1. */
static inline __attribute__((always_inline)) __m256i iqs_signs(uint32_t bits)
{
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
					       0x0101010101010101LL, 0);
	const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
	__m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
	b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
	return _mm256_or_si256(b, _mm256_set1_epi8(1));
}

/* The four 7-bit sign fields of aux through the parity table. */
static inline __attribute__((always_inline)) uint32_t iqs_ksigns4(uint32_t aux)
{
	return (uint32_t)kern_iq_ksigns[aux & 127] | (uint32_t)kern_iq_ksigns[(aux >> 7) & 127] << 8 |
	       (uint32_t)kern_iq_ksigns[(aux >> 14) & 127] << 16 | (uint32_t)kern_iq_ksigns[(aux >> 21) & 127] << 24;
}

static inline __attribute__((always_inline)) __m256i iqs_grid4(const uint64_t *g, int i0, int i1, int i2, int i3)
{
	return _mm256_set_epi64x((long long)g[i3], (long long)g[i2], (long long)g[i1], (long long)g[i0]);
}

/* Signed weights w: magnitude and sign. */
static inline __attribute__((always_inline)) iq_v iqs_signed(__m256i w, __m256i sc)
{
	return (iq_v){_mm256_abs_epi8(w), w, sc};
}

/* 16 packed nibbles -> 32 table values (low nibbles first), signed. */
static inline __attribute__((always_inline)) __m256i iqs_iq4_values(const uint8_t *qs)
{
	const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kern_iq4nl_values));
	const __m128i t = _mm_loadu_si128((const __m128i *)qs);
	const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
	return _mm256_shuffle_epi8(tab, _mm256_and_si256(b, _mm256_set1_epi8(0x0F)));
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq4_xs(const kern_block_iq4_xs *b, int ib)
{
	const int ls = kern_iq4xs_scale(b, ib);
	return iqs_signed(iqs_iq4_values(b->qs + 16 * ib), iqs_sc(ls, ls));
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq2_xxs(const kern_block_iq2_xxs *b, int ib)
{
	const uint8_t *q = (const uint8_t *)(b->qs + 4 * ib);
	const uint32_t aux = iqs_rd32(q + 4);
	const int ls = 2 * (int)(aux >> 28) + 1;
	return (iq_v){iqs_grid4(kern_iq2xxs_grid, q[0], q[1], q[2], q[3]), iqs_signs(iqs_ksigns4(aux)),
		      iqs_sc(ls, ls)};
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq2_xs(const kern_block_iq2_xs *b, int ib)
{
	const uint16_t *q = b->qs + 4 * ib;
	const uint32_t s = (uint32_t)kern_iq_ksigns[q[0] >> 9] | (uint32_t)kern_iq_ksigns[q[1] >> 9] << 8 |
			   (uint32_t)kern_iq_ksigns[q[2] >> 9] << 16 | (uint32_t)kern_iq_ksigns[q[3] >> 9] << 24;
	return (iq_v){iqs_grid4(kern_iq2xs_grid, q[0] & 511, q[1] & 511, q[2] & 511, q[3] & 511), iqs_signs(s),
		      iqs_sc(2 * (b->scales[ib] & 0xf) + 1, 2 * (b->scales[ib] >> 4) + 1)};
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq2_s(const kern_block_iq2_s *b, int ib)
{
	const uint8_t *q = b->qs + 4 * ib;
	const int h = b->qh[ib];
	return (iq_v){iqs_grid4(kern_iq2s_grid, q[0] | ((h << 8) & 0x300), q[1] | ((h << 6) & 0x300),
				q[2] | ((h << 4) & 0x300), q[3] | ((h << 2) & 0x300)),
		      iqs_signs(iqs_rd32(b->qs + KERN_QK_K / 8 + 4 * ib)),
		      iqs_sc(2 * (b->scales[ib] & 0xf) + 1, 2 * (b->scales[ib] >> 4) + 1)};
}

/* The 8 four-byte grid entries of IQ3 sub-block indices idx (8 x s32). */
static inline __attribute__((always_inline)) __m256i iqs_grid8(const uint32_t *g, __m256i idx)
{
	return _mm256_i32gather_epi32((const int *)g, idx, 4);
}

/* 8 index bytes at q, zero-extended to 8 x s32. */
static inline __attribute__((always_inline)) __m256i iqs_idx8(const uint8_t *q)
{
	return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)q));
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq3_xxs(const kern_block_iq3_xxs *b, int ib)
{
	const uint32_t aux = iqs_rd32(b->qs + KERN_QK_K / 4 + 4 * ib);
	const int ls = 2 * (int)(aux >> 28) + 1;
	return (iq_v){iqs_grid8(kern_iq3xxs_grid, iqs_idx8(b->qs + 8 * ib)), iqs_signs(iqs_ksigns4(aux)),
		      iqs_sc(ls, ls)};
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq3_s(const kern_block_iq3_s *b, int ib)
{
	/* bit k of qh is index k's 9th bit */
	const __m256i hi = _mm256_and_si256(_mm256_sllv_epi32(_mm256_set1_epi32(b->qh[ib]),
							      _mm256_setr_epi32(8, 7, 6, 5, 4, 3, 2, 1)),
					    _mm256_set1_epi32(256));
	const int ls = 2 * ((b->scales[ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
	return (iq_v){iqs_grid8(kern_iq3s_grid, _mm256_or_si256(iqs_idx8(b->qs + 8 * ib), hi)),
		      iqs_signs(iqs_rd32(b->signs + 4 * ib)), iqs_sc(ls, ls)};
}

/* IQ1: w = 8 * grid + delta (grid bytes -1/0/1, delta bytes +-1). */
static inline __attribute__((always_inline)) __m256i iqs_iq1_w(int i0, int i1, int i2, int i3, __m256i delta)
{
	const __m256i g = iqs_grid4(kern_iq1s_grid, i0, i1, i2, i3);
	return _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), g), delta);
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq1_s(const kern_block_iq1_s *b, int ib)
{
	const uint8_t *q = b->qs + 4 * ib;
	const int h = b->qh[ib];
	const __m256i delta = _mm256_set1_epi8(h & 0x8000 ? -1 : 1);
	const int ls = 2 * ((h >> 12) & 7) + 1;
	return iqs_signed(iqs_iq1_w(q[0] | ((h << 8) & 0x700), q[1] | ((h << 5) & 0x700), q[2] | ((h << 2) & 0x700),
				    q[3] | ((h >> 1) & 0x700), delta),
			  iqs_sc(ls, ls));
}

static inline __attribute__((always_inline)) long long iqs_delta8(int bit)
{
	return bit ? -1LL : 0x0101010101010101LL;
}

static inline __attribute__((always_inline)) iq_v iqs_dec_iq1_m(const kern_block_iq1_m *b, int ib)
{
	const uint8_t *q = b->qs + 4 * ib, *h = b->qh + 2 * ib;
	const int sc = b->scales[2 * (ib / 2)] | b->scales[2 * (ib / 2) + 1] << 8, sh = 6 * (ib % 2);
	const __m256i delta = _mm256_set_epi64x(iqs_delta8(h[1] & 0x80), iqs_delta8(h[1] & 0x08),
						iqs_delta8(h[0] & 0x80), iqs_delta8(h[0] & 0x08));
	return iqs_signed(iqs_iq1_w(q[0] | ((h[0] << 8) & 0x700), q[1] | ((h[0] << 4) & 0x700),
				    q[2] | ((h[1] << 8) & 0x700), q[3] | ((h[1] << 4) & 0x700), delta),
			  iqs_sc(2 * ((sc >> sh) & 7) + 1, 2 * ((sc >> (sh + 3)) & 7) + 1));
}

/* ---- the dot arithmetic ---- */

static inline __attribute__((always_inline)) float iqs_hsum_ps(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* 8 x s32: sum of ls * w * q8 over the sub-block. */
static inline __attribute__((always_inline)) __m256i iqs_sub32(iq_v v, const int8_t *q8)
{
	const __m256i y = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)q8), v.sgn);
	return _mm256_madd_epi16(_mm256_maddubs_epi16(v.mag, y), v.sc);
}

/* IQ4_NL x Q8_0: one 32-element block per register, its own scale. */
static inline __attribute__((always_inline)) __m256 iqs_iq4_nl_block(const kern_block_iq4_nl *x, const kern_block_q8_0 *y, __m256 acc)
{
	const iq_v v = iqs_signed(iqs_iq4_values(x->qs), _mm256_set1_epi16(1));
	return _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(x->d) * _cvtsh_ss(y->d)),
			       _mm256_cvtepi32_ps(iqs_sub32(v, y->qs)), acc);
}

/* The block scale d of each type's block i, as a float (F16C). */
#define IQS_D_PLAIN(x) _cvtsh_ss((x).d)
#define IQS_D_IQ1M(x) _cvtsh_ss(kern_iq1m_scale_bits((x).scales))

#endif
