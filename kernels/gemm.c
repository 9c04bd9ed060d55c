/* Row-interleaved layouts: repacking, activation preparation, the scalar
 * reference GEMMs, and their variant table. */
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "herd/error.h"
#include "kquant.h"
#include "legacy.h"
#include "variant.h"

int kern_repack_policy(kern_isa isa)
{
	return isa >= KERN_ISA_AVX512 ? KERN_REPACK_ALL : isa >= KERN_ISA_AVX2 ? KERN_REPACK_AVX2 : 0;
}

int kern_repack_worthwhile(void)
{
	return kern_repack_policy(kern_isa_detect());
}

int kern_repack_type_at(kern_type t, int policy)
{
	if (policy == KERN_REPACK_ALL ||
	    (policy == KERN_REPACK_AVX2 && (t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q6_K)))
		return kern_repack_type(t);
	return -1;
}

int kern_repack_type(kern_type t)
{
	switch (t) {
	case KERN_TYPE_Q4_0: return KERN_TYPE_Q4_0_R16;
	case KERN_TYPE_Q8_0: return KERN_TYPE_Q8_0_R16;
	case KERN_TYPE_Q4_K: return KERN_TYPE_Q4_K_R16;
	case KERN_TYPE_Q6_K: return KERN_TYPE_Q6_K_R16;
	default: return -1;
	}
}

int kern_type_is_r16(int t)
{
	return kern_r16_base_type(t) >= 0;
}

int kern_r16_base_type(int t)
{
	switch (t) {
	case KERN_TYPE_Q4_0_R16: return KERN_TYPE_Q4_0;
	case KERN_TYPE_Q8_0_R16: return KERN_TYPE_Q8_0;
	case KERN_TYPE_Q4_K_R16: return KERN_TYPE_Q4_K;
	case KERN_TYPE_Q6_K_R16: return KERN_TYPE_Q6_K;
	default: return -1;
	}
}

/* Moves 4-byte words between plain blocks and interleaved chunks; pack = 1
 * goes plain -> R16. */
static int r16_convert(int r16, const void *src, int64_t n_rows, int64_t K, void *dst, int pack)
{
	if (n_rows % KERN_R || K % 32 || n_rows < 0 || K <= 0)
		return HERD_E_INVAL;
	const int64_t nb = K / 32;
	const int q4 = r16 == KERN_TYPE_Q4_0_R16;
	const size_t pb = q4 ? sizeof(kern_block_q4_0) : sizeof(kern_block_q8_0);
	const size_t gb = KERN_R * pb;
	const int words = q4 ? 4 : 8; /* 4-byte words of quants per row per block */
	for (int64_t g = 0; g < n_rows / KERN_R; g++)
		for (int64_t b = 0; b < nb; b++) {
			char *pg = (char *)(pack ? dst : (void *)src) + (size_t)(g * nb + b) * gb;
			for (int r = 0; r < KERN_R; r++) {
				char *pr = (char *)(pack ? (void *)src : dst) +
					   ((size_t)(g * KERN_R + r) * nb + b) * pb;
				/* d is the first field of both block kinds */
				if (pack)
					memcpy(pg + 2 * r, pr, 2);
				else
					memcpy(pr, pg + 2 * r, 2);
				for (int j = 0; j < words; j++) {
					char *gw = pg + 2 * KERN_R + (size_t)j * 64 + 4 * r;
					char *rw = pr + 2 + 4 * j;
					if (pack)
						memcpy(gw, rw, 4);
					else
						memcpy(rw, gw, 4);
				}
			}
		}
	return 0;
}

/* Q4_K: the 12-byte packed scales of one row become unpacked bytes and
 * int16 min pairs; quants move as 4-byte words like Q4_0's. */
static void q4k_pack(void *gv, int r, const void *bv)
{
	kern_block_q4_K_r16 *g = gv;
	const kern_block_q4_K *b = bv;
	uint8_t sc[8], m[8];
	kern_kquant_unpack_scale_min_k4(b->scales, sc, m);
	g->d[r] = b->d;
	g->dmin[r] = b->dmin;
	for (int s = 0; s < 8; s++) {
		g->sc[s][r] = sc[s];
		g->m[s / 2][r][s % 2] = m[s];
	}
	for (int j = 0; j < 4; j++)
		for (int c = 0; c < 8; c++)
			memcpy(&g->qs[j][c][4 * r], b->qs + 32 * j + 4 * c, 4);
}

/* Inverse of q4k_pack, re-encoding the scales as Q4_K packs them. */
static void q4k_unpack(void *bv, const void *gv, int r)
{
	kern_block_q4_K *b = bv;
	const kern_block_q4_K_r16 *g = gv;
	uint8_t sc[8], m[8];
	for (int s = 0; s < 8; s++) {
		sc[s] = g->sc[s][r];
		m[s] = (uint8_t)g->m[s / 2][r][s % 2];
	}
	b->d = g->d[r];
	b->dmin = g->dmin[r];
	for (int j = 0; j < 4; j++) {
		b->scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
		b->scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
		b->scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
	}
	for (int j = 0; j < 4; j++)
		for (int c = 0; c < 8; c++)
			memcpy(b->qs + 32 * j + 4 * c, &g->qs[j][c][4 * r], 4);
}

/* Q6_K element e = 128h + 32k + l (k 0..3, l 0..31): low 4 bits in
 * ql[64h + 32(k & 1) + l] (low nibble for k < 2, high for k >= 2), high 2
 * bits at bit 2k of qh[32h + l]; its scale is scales[e / 16]. */
static void q6k_pack(void *gv, int r, const void *bv)
{
	kern_block_q6_K_r16 *g = gv;
	const kern_block_q6_K *b = bv;
	for (int e = 0; e < KERN_QK_K; e++) {
		const int h = e / 128, k = e % 128 / 32, l = e % 32;
		const uint8_t lo = (uint8_t)(b->ql[64 * h + 32 * (k & 1) + l] >> (k >= 2 ? 4 : 0)) & 0xF;
		const uint8_t hi = (uint8_t)(b->qh[32 * h + l] >> (2 * k)) & 3;
		g->qs[e / 16][e % 16 / 4][4 * r + e % 4] = (uint8_t)(lo | hi << 4);
	}
	g->d[r] = b->d;
	for (int s = 0; s < 16; s++)
		g->sc[s][r] = b->scales[s];
	if (r == 0)
		memset(g->pad, 0, sizeof(g->pad));
}

static void q6k_unpack(void *bv, const void *gv, int r)
{
	kern_block_q6_K *b = bv;
	const kern_block_q6_K_r16 *g = gv;
	memset(b->ql, 0, sizeof(b->ql));
	memset(b->qh, 0, sizeof(b->qh));
	for (int e = 0; e < KERN_QK_K; e++) {
		const int h = e / 128, k = e % 128 / 32, l = e % 32;
		const uint8_t q = g->qs[e / 16][e % 16 / 4][4 * r + e % 4];
		b->ql[64 * h + 32 * (k & 1) + l] |= (uint8_t)((q & 0xF) << (k >= 2 ? 4 : 0));
		b->qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
	}
	b->d = g->d[r];
	for (int s = 0; s < 16; s++)
		b->scales[s] = g->sc[s][r];
}

/* The K-quant layouts: each row's super-block moves into (pack) or out of
 * its group's interleaved super-block through the type's row functions. */
typedef struct kq_r16_codec {
	size_t plain, group; /* bytes of a plain super-block, of a group's */
	void (*pack)(void *g, int r, const void *b);
	void (*unpack)(void *b, const void *g, int r);
} kq_r16_codec;

static const kq_r16_codec *kq_codec(int r16)
{
	static const kq_r16_codec q4k = {sizeof(kern_block_q4_K), sizeof(kern_block_q4_K_r16), q4k_pack,
					 q4k_unpack};
	static const kq_r16_codec q6k = {sizeof(kern_block_q6_K), sizeof(kern_block_q6_K_r16), q6k_pack,
					 q6k_unpack};
	return r16 == KERN_TYPE_Q4_K_R16 ? &q4k : r16 == KERN_TYPE_Q6_K_R16 ? &q6k : NULL;
}

static int kq_convert(const kq_r16_codec *k, const void *src, int64_t n_rows, int64_t K, void *dst, int pack)
{
	if (n_rows % KERN_R || K % KERN_QK_K || n_rows < 0 || K <= 0)
		return HERD_E_INVAL;
	const int64_t nb = K / KERN_QK_K;
	for (int64_t g = 0; g < n_rows / KERN_R; g++)
		for (int64_t b = 0; b < nb; b++) {
			const size_t gi = (size_t)(g * nb + b);
			for (int r = 0; r < KERN_R; r++) {
				const size_t pi = (size_t)(g * KERN_R + r) * nb + b;
				if (pack)
					k->pack((char *)dst + gi * k->group, r, (const char *)src + pi * k->plain);
				else
					k->unpack((char *)dst + pi * k->plain, (const char *)src + gi * k->group, r);
			}
		}
	return 0;
}

int kern_repack(kern_type t, const void *src, int64_t n_rows, int64_t K, void *dst)
{
	const int r16 = kern_repack_type(t);
	if (kq_codec(r16))
		return kq_convert(kq_codec(r16), src, n_rows, K, dst, 1);
	return r16 < 0 ? HERD_E_INVAL : r16_convert(r16, src, n_rows, K, dst, 1);
}

int kern_unpack_r16(kern_type r16, const void *src, int64_t n_rows, int64_t K, void *dst)
{
	if (kq_codec(r16))
		return kq_convert(kq_codec(r16), src, n_rows, K, dst, 0);
	return kern_type_is_r16(r16) ? r16_convert(r16, src, n_rows, K, dst, 0) : HERD_E_INVAL;
}

size_t kern_act_stride(int r16, int64_t K)
{
	if (r16 == KERN_TYPE_Q4_K_R16)
		return ((size_t)(K / KERN_QK_K) * KERN_ACT_Q8K_BYTES + 63) / 64 * 64;
	if (r16 == KERN_TYPE_Q6_K_R16)
		return ((size_t)(K / KERN_QK_K) * sizeof(kern_block_q8_K) + 63) / 64 * 64;
	return ((size_t)(K / 32) * 8 + (size_t)K + 63) / 64 * 64;
}

void kern_act_q8_with(const float *restrict x, int64_t K, int n_b, void *restrict dst, int unsigned_q,
		      kern_from_float_fn quant_q8_0)
{
	const int64_t nb = K / 32;
	for (int b = 0; b < n_b; b++) {
		const kern_act_q8_row a = kern_act_q8_row_at(dst, kern_act_stride(KERN_TYPE_Q4_0_R16, K), nb, b);
		for (int64_t i = 0; i < nb; i++) {
			kern_block_q8_0 blk;
			quant_q8_0(x + (size_t)b * K + i * 32, &blk, 32);
			a.d[i] = kern_fp16_to_fp32(blk.d);
			int32_t sum = 0;
			for (int j = 0; j < 32; j++)
				sum += blk.qs[j];
			a.s[i] = unsigned_q ? 0 : 8 * sum;
			for (int j = 0; j < 32; j++)
				a.qs[i * 32 + j] = (int8_t)(unsigned_q ? (uint8_t)(blk.qs[j] ^ 0x80) : blk.qs[j]);
		}
	}
}

void kern_act_q8_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8_with(x, K, n_b, dst, 0, kern_quant_q8_0_ref);
}

void kern_act_q8u_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8_with(x, K, n_b, dst, 1, kern_quant_q8_0_ref);
}

void kern_gemm_q4_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nb = K / 32;
	const kern_block_q4_0_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const kern_act_q8_row a = kern_act_q8_row_at(act, act_stride, nb, b);
		const float *d = a.d;
		const int32_t *s = a.s;
		const int8_t *qs = a.qs;
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nb; i++) {
				int32_t dot = 0;
				for (int j = 0; j < 4; j++)
					for (int e = 0; e < 4; e++) {
						const uint8_t q = w[i].qs[j][4 * r + e];
						dot += (q & 15) * qs[i * 32 + 4 * j + e];
						dot += (q >> 4) * qs[i * 32 + 16 + 4 * j + e];
					}
				acc += (float)(dot - s[i]) * (kern_fp16_to_fp32(w[i].d[r]) * d[i]);
			}
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

void kern_gemm_q8_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nb = K / 32;
	const kern_block_q8_0_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const kern_act_q8_row a = kern_act_q8_row_at(act, act_stride, nb, b);
		const float *d = a.d;
		const uint8_t *qs = (const uint8_t *)a.qs;
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nb; i++) {
				int32_t dot = 0;
				for (int g = 0; g < 8; g++)
					for (int e = 0; e < 4; e++)
						dot += w[i].qs[g][4 * r + e] * (qs[i * 32 + 4 * g + e] - 128);
				acc += (float)dot * (kern_fp16_to_fp32(w[i].d[r]) * d[i]);
			}
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

/* One Q8_K super-block of activations into the Q4_K_R16 layout. */
void kern_act_q8k_from_block(const kern_block_q8_K *q, char *dst)
{
	memcpy(dst, &q->d, 4);
	int16_t sums[8];
	for (int s = 0; s < 8; s++)
		sums[s] = (int16_t)(q->bsums[2 * s] + q->bsums[2 * s + 1]);
	memcpy(dst + 4, sums, sizeof(sums));
	memcpy(dst + 20, q->qs, KERN_QK_K);
}

void kern_act_q8k_with(const float *restrict x, int64_t K, int n_b, void *restrict dst,
		       kern_from_float_fn quant_q8_k)
{
	const int64_t nsb = K / KERN_QK_K;
	for (int b = 0; b < n_b; b++) {
		char *row = (char *)dst + (size_t)b * kern_act_stride(KERN_TYPE_Q4_K_R16, K);
		for (int64_t i = 0; i < nsb; i++) {
			kern_block_q8_K q;
			quant_q8_k(x + (size_t)b * K + i * KERN_QK_K, &q, KERN_QK_K);
			kern_act_q8k_from_block(&q, row + i * KERN_ACT_Q8K_BYTES);
		}
	}
}

void kern_act_q8k_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8k_with(x, K, n_b, dst, kern_quant_q8_k_ref);
}

void kern_gemm_q4_k_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nsb = K / KERN_QK_K;
	const kern_block_q4_K_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const char *row = (const char *)act + (size_t)b * act_stride;
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nsb; i++) {
				const char *a = row + i * KERN_ACT_Q8K_BYTES;
				float da;
				int16_t sums[8];
				memcpy(&da, a, 4);
				memcpy(sums, a + 4, sizeof(sums));
				const int8_t *qa = (const int8_t *)(a + 20);
				int32_t dot = 0, mins = 0;
				for (int j = 0; j < 4; j++) {
					int32_t lo = 0, hi = 0;
					for (int c = 0; c < 8; c++)
						for (int e = 0; e < 4; e++) {
							const uint8_t q = w[i].qs[j][c][4 * r + e];
							lo += (q & 15) * qa[64 * j + 4 * c + e];
							hi += (q >> 4) * qa[64 * j + 32 + 4 * c + e];
						}
					dot += lo * w[i].sc[2 * j][r] + hi * w[i].sc[2 * j + 1][r];
					mins += w[i].m[j][r][0] * sums[2 * j] + w[i].m[j][r][1] * sums[2 * j + 1];
				}
				acc += da * (kern_fp16_to_fp32(w[i].d[r]) * (float)dot -
					     kern_fp16_to_fp32(w[i].dmin[r]) * (float)mins);
			}
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

void kern_act_q8k16_with(const float *restrict x, int64_t K, int n_b, void *restrict dst,
			 kern_from_float_fn quant_q8_k)
{
	const size_t stride = kern_act_stride(KERN_TYPE_Q6_K_R16, K);
	for (int b = 0; b < n_b; b++)
		quant_q8_k(x + (size_t)b * K, (char *)dst + (size_t)b * stride, K);
}

void kern_act_q8k16_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	kern_act_q8k16_with(x, K, n_b, dst, kern_quant_q8_k_ref);
}

/* Row r of one Q6_K_R16 super-block against one Q8_K block: the integer
 * sum over sub-blocks of scale * sum((q - 32) * a). */
static int32_t q6k_r16_isum(const kern_block_q6_K_r16 *w, int r, const kern_block_q8_K *a)
{
	int32_t isum = 0;
	for (int s = 0; s < 16; s++) {
		int32_t dot = -32 * a->bsums[s];
		for (int c = 0; c < 4; c++)
			for (int e = 0; e < 4; e++)
				dot += w->qs[s][c][4 * r + e] * a->qs[16 * s + 4 * c + e];
		isum += w->sc[s][r] * dot;
	}
	return isum;
}

void kern_gemm_q6_k_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nsb = K / KERN_QK_K;
	const kern_block_q6_K_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const kern_block_q8_K *a = (const kern_block_q8_K *)((const char *)act + (size_t)b * act_stride);
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nsb; i++)
				acc += kern_fp16_to_fp32(w[i].d[r]) * a[i].d * (float)q6k_r16_isum(&w[i], r, &a[i]);
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

/* The interleaved types have no per-row dot: only activation preparation
 * and the 16-row GEMM, with AVX-512 (VNNI) variants, and AVX2 ones for
 * Q4_0_R16 and Q6_K_R16 alone (kern_repack_worthwhile keeps AVX2 machines'
 * other types plain). */
static const kern_type_variants gemm_variants[] = {
	{.type = KERN_TYPE_Q4_0_R16,
	 .act = {[KERN_ISA_REF] = kern_act_q8_ref, [KERN_ISA_AVX2] = kern_act_q8_avx2,
		 [KERN_ISA_AVX512] = kern_act_q8_avx512},
	 .gemm = {[KERN_ISA_REF] = kern_gemm_q4_0_r16_ref, [KERN_ISA_AVX2] = kern_gemm_q4_0_r16_avx2,
		  [KERN_ISA_AVX512] = kern_gemm_q4_0_r16_avx512}},
	{.type = KERN_TYPE_Q8_0_R16,
	 .act = {[KERN_ISA_REF] = kern_act_q8u_ref, [KERN_ISA_AVX512] = kern_act_q8u_avx512},
	 .gemm = {[KERN_ISA_REF] = kern_gemm_q8_0_r16_ref, [KERN_ISA_AVX512] = kern_gemm_q8_0_r16_avx512}},
	{.type = KERN_TYPE_Q4_K_R16,
	 .act = {[KERN_ISA_REF] = kern_act_q8k_ref, [KERN_ISA_AVX512] = kern_act_q8k_avx512},
	 .gemm = {[KERN_ISA_REF] = kern_gemm_q4_k_r16_ref, [KERN_ISA_AVX512] = kern_gemm_q4_k_r16_avx512}},
	{.type = KERN_TYPE_Q6_K_R16,
	 .act = {[KERN_ISA_REF] = kern_act_q8k16_ref, [KERN_ISA_AVX2] = kern_act_q8k16_avx2,
		 [KERN_ISA_AVX512] = kern_act_q8k16_avx512},
	 .gemm = {[KERN_ISA_REF] = kern_gemm_q6_k_r16_ref, [KERN_ISA_AVX2] = kern_gemm_q6_k_r16_avx2,
		  [KERN_ISA_AVX512] = kern_gemm_q6_k_r16_avx512}},
};

void kern_ops_init_gemm(kern_ops *ops, kern_isa isa)
{
	kern_ops_fill_types(ops, gemm_variants, sizeof(gemm_variants) / sizeof(gemm_variants[0]), isa);
}
