/* I-quant reference decoding (one decoder per type, the model of
 * kernels/iquant.h), dequantization, and the IQ4_NL/IQ4_XS quantizers. */
#include "iquant.h"

#include <math.h>
#include <string.h>

#include "fp16.h"
#include "kquant.h"

const int8_t kern_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
				      1,    13,   25,  38,  53,  69,  89,  113};

static inline uint32_t rd32(const void *p)
{
	uint32_t u;
	memcpy(&u, p, 4);
	return u;
}

/* w[0..8) = the 8 grid bytes of g, negated where the sign bit is set. */
static inline void put8(int8_t *w, uint64_t g, unsigned signs)
{
	for (int j = 0; j < 8; j++) {
		const int v = (int)((g >> (8 * j)) & 0xff);
		w[j] = (int8_t)((signs >> j) & 1 ? -v : v);
	}
}

/* Two 4-element grid entries as one 8-element one. */
static inline uint64_t pair4(uint32_t a, uint32_t b)
{
	return (uint64_t)a | (uint64_t)b << 32;
}

static void dec_iq4_nl(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq4_nl *b = blk;
	(void)ib;
	for (int j = 0; j < 16; j++) {
		w[j] = kern_iq4nl_values[b->qs[j] & 0xf];
		w[j + 16] = kern_iq4nl_values[b->qs[j] >> 4];
	}
	ls[0] = ls[1] = 1;
}

static void dec_iq4_xs(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq4_xs *b = blk;
	const uint8_t *qs = b->qs + 16 * ib;
	for (int j = 0; j < 16; j++) {
		w[j] = kern_iq4nl_values[qs[j] & 0xf];
		w[j + 16] = kern_iq4nl_values[qs[j] >> 4];
	}
	ls[0] = ls[1] = kern_iq4xs_scale(b, ib);
}

static void dec_iq2_xxs(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq2_xxs *b = blk;
	const uint8_t *q = (const uint8_t *)(b->qs + 4 * ib);
	const uint32_t aux = rd32(q + 4);
	for (int l = 0; l < 4; l++)
		put8(w + 8 * l, kern_iq2xxs_grid[q[l]], kern_iq_ksigns[(aux >> (7 * l)) & 127]);
	ls[0] = ls[1] = 2 * (int)(aux >> 28) + 1;
}

static void dec_iq2_xs(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq2_xs *b = blk;
	for (int l = 0; l < 4; l++) {
		const uint16_t q = b->qs[4 * ib + l];
		put8(w + 8 * l, kern_iq2xs_grid[q & 511], kern_iq_ksigns[q >> 9]);
	}
	ls[0] = 2 * (b->scales[ib] & 0xf) + 1;
	ls[1] = 2 * (b->scales[ib] >> 4) + 1;
}

static void dec_iq2_s(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq2_s *b = blk;
	const uint8_t *qs = b->qs + 4 * ib, *signs = b->qs + KERN_QK_K / 8 + 4 * ib;
	for (int l = 0; l < 4; l++)
		put8(w + 8 * l, kern_iq2s_grid[qs[l] | ((b->qh[ib] << (8 - 2 * l)) & 0x300)], signs[l]);
	ls[0] = 2 * (b->scales[ib] & 0xf) + 1;
	ls[1] = 2 * (b->scales[ib] >> 4) + 1;
}

static void dec_iq3_xxs(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq3_xxs *b = blk;
	const uint8_t *qs = b->qs + 8 * ib;
	const uint32_t aux = rd32(b->qs + KERN_QK_K / 4 + 4 * ib);
	for (int l = 0; l < 4; l++)
		put8(w + 8 * l, pair4(kern_iq3xxs_grid[qs[2 * l]], kern_iq3xxs_grid[qs[2 * l + 1]]),
		     kern_iq_ksigns[(aux >> (7 * l)) & 127]);
	ls[0] = ls[1] = 2 * (int)(aux >> 28) + 1;
}

static void dec_iq3_s(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq3_s *b = blk;
	const uint8_t *qs = b->qs + 8 * ib, *signs = b->signs + 4 * ib;
	const int qh = b->qh[ib];
	for (int l = 0; l < 4; l++) {
		const int i0 = qs[2 * l] | ((qh << (8 - 2 * l)) & 256);
		const int i1 = qs[2 * l + 1] | ((qh << (7 - 2 * l)) & 256);
		put8(w + 8 * l, pair4(kern_iq3s_grid[i0], kern_iq3s_grid[i1]), signs[l]);
	}
	ls[0] = ls[1] = 2 * ((b->scales[ib / 2] >> (4 * (ib % 2))) & 0xf) + 1;
}

/* IQ1: w = 8 * grid + delta, grid bytes in {-1, 0, 1}, delta +-1. */
static inline void put8_iq1(int8_t *w, int idx, int delta)
{
	const uint64_t g = kern_iq1s_grid[idx];
	for (int j = 0; j < 8; j++)
		w[j] = (int8_t)(8 * (int8_t)((g >> (8 * j)) & 0xff) + delta);
}

static void dec_iq1_s(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq1_s *b = blk;
	const uint8_t *qs = b->qs + 4 * ib;
	const unsigned qh = b->qh[ib];
	const int delta = qh & 0x8000 ? -1 : 1;
	for (int l = 0; l < 4; l++)
		put8_iq1(w + 8 * l, qs[l] | (((qh >> (3 * l)) & 7) << 8), delta);
	ls[0] = ls[1] = 2 * ((qh >> 12) & 7) + 1;
}

static void dec_iq1_m(const void *restrict blk, int ib, int8_t w[32], int ls[2])
{
	const kern_block_iq1_m *b = blk;
	const uint8_t *qs = b->qs + 4 * ib, *qh = b->qh + 2 * ib;
	const unsigned sc = (unsigned)(b->scales[2 * (ib / 2)] | b->scales[2 * (ib / 2) + 1] << 8);
	for (int l = 0; l < 4; l++) {
		const unsigned h = qh[l / 2] >> (4 * (l % 2));
		put8_iq1(w + 8 * l, qs[l] | ((h & 7) << 8), h & 8 ? -1 : 1);
	}
	ls[0] = 2 * ((sc >> (6 * (ib % 2))) & 7) + 1;
	ls[1] = 2 * ((sc >> (6 * (ib % 2) + 3)) & 7) + 1;
}

#define IQ_DESC(T, N, BS, U) {KERN_TYPE_##T, BS, sizeof(kern_block_##N), U, dec_##N}
static const kern_iq_desc iq_descs[] = {
	IQ_DESC(IQ4_NL, iq4_nl, KERN_QK4_NL, 1.0f),  IQ_DESC(IQ4_XS, iq4_xs, KERN_QK_K, 1.0f),
	IQ_DESC(IQ3_S, iq3_s, KERN_QK_K, 1.0f),      IQ_DESC(IQ3_XXS, iq3_xxs, KERN_QK_K, 0.25f),
	IQ_DESC(IQ2_S, iq2_s, KERN_QK_K, 0.125f),    IQ_DESC(IQ2_XS, iq2_xs, KERN_QK_K, 0.125f),
	IQ_DESC(IQ2_XXS, iq2_xxs, KERN_QK_K, 0.125f), IQ_DESC(IQ1_S, iq1_s, KERN_QK_K, 0.125f),
	IQ_DESC(IQ1_M, iq1_m, KERN_QK_K, 0.125f),
};
#undef IQ_DESC

const kern_iq_desc *kern_iq_desc_of(kern_type t)
{
	for (size_t k = 0; k < sizeof(iq_descs) / sizeof(iq_descs[0]); k++)
		if (iq_descs[k].type == t)
			return &iq_descs[k];
	return NULL;
}

float kern_iq_block_d(kern_type t, const void *blk)
{
	if (t == KERN_TYPE_IQ1_M)
		return kern_fp16_to_fp32(kern_iq1m_scale_bits(((const kern_block_iq1_m *)blk)->scales));
	kern_fp16_t d; /* every other i-quant block starts with d */
	memcpy(&d, blk, sizeof(d));
	return kern_fp16_to_fp32(d);
}

static void iq_dequant(kern_type t, const void *restrict vx, float *restrict y, int64_t n)
{
	const kern_iq_desc *ds = kern_iq_desc_of(t);
	const uint8_t *x = vx;
	for (int64_t i = 0; i < n / ds->blck_size; i++, x += ds->type_size) {
		const float d = kern_iq_block_d(t, x);
		for (int ib = 0; ib < ds->blck_size / 32; ib++, y += 32) {
			int8_t w[32];
			int ls[2];
			ds->decode(x, ib, w, ls);
			for (int j = 0; j < 32; j++)
				y[j] = d * (float)ls[j / 16] * ds->unit * (float)w[j];
		}
	}
}

#define IQ_DEQUANT(N, T)                                                                 \
	void kern_dequant_##N##_ref(const void *restrict x, float *restrict y, int64_t n) \
	{                                                                                \
		iq_dequant(KERN_TYPE_##T, x, y, n);                                      \
	}
IQ_DEQUANT(iq4_nl, IQ4_NL)
IQ_DEQUANT(iq4_xs, IQ4_XS)
IQ_DEQUANT(iq3_s, IQ3_S)
IQ_DEQUANT(iq3_xxs, IQ3_XXS)
IQ_DEQUANT(iq2_s, IQ2_S)
IQ_DEQUANT(iq2_xs, IQ2_XS)
IQ_DEQUANT(iq2_xxs, IQ2_XXS)
IQ_DEQUANT(iq1_s, IQ1_S)
IQ_DEQUANT(iq1_m, IQ1_M)
#undef IQ_DEQUANT

/* ------------------------------------------------------ IQ4 quantization */

/* Index of the table value nearest to v (ties to the upper one). */
static int iq4_best(float v)
{
	const int8_t *t = kern_iq4nl_values;
	if (v <= t[0])
		return 0;
	if (v >= t[15])
		return 15;
	int lo = 0, hi = 15;
	while (hi - lo > 1) {
		const int mid = (lo + hi) / 2;
		if (v < t[mid])
			hi = mid;
		else
			lo = mid;
	}
	return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

/* sum w q x and sum w q^2 over 32 elements quantized with inverse scale id. */
static void iq4_sums(const float *x, float id, float *sqx, float *sq2, uint8_t *L)
{
	float a = 0, b = 0;
	for (int j = 0; j < 32; j++) {
		const int l = iq4_best(id * x[j]);
		const float q = kern_iq4nl_values[l], w = x[j] * x[j];
		if (L)
			L[j] = (uint8_t)l;
		a += w * q * x[j];
		b += w * q * q;
	}
	*sqx = a;
	*sq2 = b;
}

/* Best scale of a 32-element group (weights x^2), with its indices in L:
 * the scale through the extreme value, then 15 nearby tries. */
static float iq4_group_scale(const float *x, uint8_t *L)
{
	float amax = 0, max = 0;
	for (int j = 0; j < 32; j++)
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	if (amax < 1e-15f) {
		memset(L, 0, 32);
		return 0;
	}
	const int v0 = kern_iq4nl_values[0];
	float sqx, sq2;
	iq4_sums(x, 1.0f / (-max / v0), &sqx, &sq2, L);
	float d = sqx / sq2, best = d * sqx;
	for (int itry = -7; itry <= 7; itry++) {
		iq4_sums(x, (float)(itry + v0) / max, &sqx, &sq2, NULL);
		if (sq2 > 0 && sqx * sqx > best * sq2) {
			d = sqx / sq2;
			best = d * sqx;
		}
	}
	return d;
}

static void iq4_pack(const uint8_t L[32], uint8_t qs[16])
{
	for (int j = 0; j < 16; j++)
		qs[j] = (uint8_t)(L[j] | L[j + 16] << 4);
}

void kern_quant_iq4_nl_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_iq4_nl *y = vy;
	for (int64_t i = 0; i < n / KERN_QK4_NL; i++, x += KERN_QK4_NL) {
		uint8_t L[32];
		const float d = iq4_group_scale(x, L);
		y[i].d = kern_fp32_to_fp16(d);
		const float id = d ? 1.0f / d : 0.0f;
		for (int j = 0; j < 32; j++)
			L[j] = (uint8_t)iq4_best(id * x[j]);
		iq4_pack(L, y[i].qs);
	}
}

/* One IQ4_XS super-block: 8 group scales, then a 6-bit scale of each
 * relative to the super scale -max/32, and indices requantized with it. */
static void iq4_xs_block(const float *x, kern_block_iq4_xs *y)
{
	float sc[8], max_scale = 0, amax_scale = 0;
	uint8_t L[32];
	for (int ib = 0; ib < 8; ib++) {
		sc[ib] = iq4_group_scale(x + 32 * ib, L);
		if (fabsf(sc[ib]) > amax_scale) {
			amax_scale = fabsf(sc[ib]);
			max_scale = sc[ib];
		}
	}
	const float d = -max_scale / 32, id = d ? 1.0f / d : 0.0f;
	y->d = kern_fp32_to_fp16(d);
	y->scales_h = 0;
	memset(y->scales_l, 0, sizeof(y->scales_l));
	for (int ib = 0; ib < 8; ib++) {
		int l = kern_nearest_int(id * sc[ib]);
		l = l < -32 ? -32 : (l > 31 ? 31 : l);
		const float dl = d * (float)l, idl = dl ? 1.0f / dl : 0.0f;
		for (int j = 0; j < 32; j++)
			L[j] = (uint8_t)iq4_best(idl * x[32 * ib + j]);
		iq4_pack(L, y->qs + 16 * ib);
		l += 32;
		y->scales_l[ib / 2] |= (uint8_t)((l & 0xf) << (4 * (ib % 2)));
		y->scales_h |= (uint16_t)((l >> 4) << (2 * ib));
	}
}

void kern_quant_iq4_xs_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	kern_block_iq4_xs *y = vy;
	for (int64_t i = 0; i < n / KERN_QK_K; i++)
		iq4_xs_block(x + KERN_QK_K * i, y + i);
}
