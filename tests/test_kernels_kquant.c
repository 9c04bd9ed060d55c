/* Tests of the K-quant types (Q2_K Q3_K Q4_K Q5_K Q6_K, activation Q8_K):
 * dequantization against element formulas written from the block layout,
 * Q8_K quantization semantics, quantize/dequantize error bounds, reference
 * dots against float dots of dequantized data, every SIMD dot and Q8_K
 * quantizer this CPU runs against the reference at awkward super-block
 * counts, and the dispatch table. SIMD parts the CPU lacks are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "kernels/fp16.h"
#include "kernels/kernels.h"
#include "kernels/kquant.h"

#define QK KERN_QK_K
#define MAX_SB 257
#define MAX_N (MAX_SB * QK)

static const int awkward_sb[] = {1, 3, 7, 31, 33, 257};

/* ------------------------------------------------------------------ rng */

typedef struct rng {
	uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static float rng_unit(rng *r) /* [0, 1) */
{
	return (float)(rng_next(r) >> 40) / (float)(1u << 24);
}

static float rng_sym(rng *r) /* [-1, 1) */
{
	return 2.0f * rng_unit(r) - 1.0f;
}

static float rng_gauss(rng *r)
{
	return (rng_sym(r) + rng_sym(r) + rng_sym(r) + rng_sym(r)) * 0.8660254f;
}

enum fill_mode {
	FILL_NORMAL, /* roughly gaussian, unit scale */
	FILL_WIDE,   /* per-32 group scales spread over 2^-6 .. 2^6 */
	FILL_SPARSE, /* many zeros, all-zero super-blocks, a few extremes */
	FILL_OFFSET, /* all positive, away from zero */
	FILL_COUNT
};

static void fill(rng *r, float *x, int64_t n, enum fill_mode mode)
{
	float gs = 1.0f; /* FILL_WIDE: scale of the current 32-element group */
	for (int64_t i = 0; i < n; i++) {
		switch (mode) {
		case FILL_NORMAL:
			x[i] = rng_gauss(r);
			break;
		case FILL_WIDE:
			if (i % 32 == 0)
				gs = ldexpf(1.0f, (int)(rng_unit(r) * 13) - 6);
			x[i] = gs * rng_gauss(r);
			break;
		case FILL_SPARSE: {
			const float u = rng_unit(r);
			x[i] = u < 0.6f ? 0.0f : (u < 0.98f ? rng_gauss(r) : 40.0f * rng_sym(r));
			break;
		}
		case FILL_OFFSET:
			x[i] = 3.0f + rng_unit(r);
			break;
		default:
			x[i] = 0;
		}
	}
	if (mode == FILL_SPARSE && n >= 2 * QK) /* one all-zero super-block */
		memset(x + QK, 0, QK * sizeof *x);
}

/* ------------------------------------------------------------ type table */

typedef struct wtype {
	kern_type t;
	const char *name;
	size_t bsize;
	kern_to_float_fn deq;
	kern_from_float_fn quant;
	kern_vec_dot_fn dot_ref;
	kern_vec_dot_fn dot_avx2;
	kern_vec_dot_fn dot_avx512;
	double rmse_max; /* bound on rmse / rms(x) for FILL_NORMAL */
} wtype;

static const wtype wtypes[] = {
	{KERN_TYPE_Q2_K, "Q2_K", sizeof(kern_block_q2_K), kern_dequant_q2_k_ref,
	 kern_quant_q2_k_ref, kern_dot_q2_k_q8_k_ref, kern_dot_q2_k_q8_k_avx2,
	 kern_dot_q2_k_q8_k_avx512, 0.40},
	{KERN_TYPE_Q3_K, "Q3_K", sizeof(kern_block_q3_K), kern_dequant_q3_k_ref,
	 kern_quant_q3_k_ref, kern_dot_q3_k_q8_k_ref, kern_dot_q3_k_q8_k_avx2,
	 kern_dot_q3_k_q8_k_avx512, 0.22},
	{KERN_TYPE_Q4_K, "Q4_K", sizeof(kern_block_q4_K), kern_dequant_q4_k_ref,
	 kern_quant_q4_k_ref, kern_dot_q4_k_q8_k_ref, kern_dot_q4_k_q8_k_avx2,
	 kern_dot_q4_k_q8_k_avx512, 0.11},
	{KERN_TYPE_Q5_K, "Q5_K", sizeof(kern_block_q5_K), kern_dequant_q5_k_ref,
	 kern_quant_q5_k_ref, kern_dot_q5_k_q8_k_ref, kern_dot_q5_k_q8_k_avx2,
	 kern_dot_q5_k_q8_k_avx512, 0.055},
	{KERN_TYPE_Q6_K, "Q6_K", sizeof(kern_block_q6_K), kern_dequant_q6_k_ref,
	 kern_quant_q6_k_ref, kern_dot_q6_k_q8_k_ref, kern_dot_q6_k_q8_k_avx2,
	 kern_dot_q6_k_q8_k_avx512, 0.03},
};
#define N_WTYPES (sizeof wtypes / sizeof wtypes[0])

/* Scratch shared by the tests; allocated per test, freed by teardown. */
typedef struct scratch {
	float *x, *a, *wd, *ad;
	void *wq, *aq, *aq2;
} scratch;

static int setup(void **state)
{
	scratch *s = calloc(1, sizeof *s);
	if (!s)
		return -1;
	s->x = malloc(MAX_N * sizeof(float));
	s->a = malloc(MAX_N * sizeof(float));
	s->wd = malloc(MAX_N * sizeof(float));
	s->ad = malloc(MAX_N * sizeof(float));
	s->wq = malloc(MAX_SB * sizeof(kern_block_q8_K)); /* largest block */
	s->aq = malloc(MAX_SB * sizeof(kern_block_q8_K));
	s->aq2 = malloc(MAX_SB * sizeof(kern_block_q8_K));
	if (!s->x || !s->a || !s->wd || !s->ad || !s->wq || !s->aq || !s->aq2)
		return -1;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	scratch *s = *state;
	if (s) {
		free(s->x);
		free(s->a);
		free(s->wd);
		free(s->ad);
		free(s->wq);
		free(s->aq);
		free(s->aq2);
		free(s);
	}
	return 0;
}

/* Random bytes everywhere, with finite, moderate fp16 scale fields. */
static void random_blocks(rng *r, const wtype *w, void *vq, int nsb)
{
	uint8_t *p = vq;
	for (size_t i = 0; i < (size_t)nsb * w->bsize; i++)
		p[i] = (uint8_t)rng_next(r);
	for (int b = 0; b < nsb; b++) {
		uint8_t *blk = p + (size_t)b * w->bsize;
		const kern_fp16_t d = kern_fp32_to_fp16(rng_sym(r) * 0.05f);
		const kern_fp16_t dm = kern_fp32_to_fp16(rng_sym(r) * 0.05f);
		switch (w->t) {
		case KERN_TYPE_Q2_K:
			memcpy(blk + offsetof(kern_block_q2_K, d), &d, 2);
			memcpy(blk + offsetof(kern_block_q2_K, dmin), &dm, 2);
			break;
		case KERN_TYPE_Q3_K:
			memcpy(blk + offsetof(kern_block_q3_K, d), &d, 2);
			break;
		case KERN_TYPE_Q4_K:
			memcpy(blk + offsetof(kern_block_q4_K, d), &d, 2);
			memcpy(blk + offsetof(kern_block_q4_K, dmin), &dm, 2);
			break;
		case KERN_TYPE_Q5_K:
			memcpy(blk + offsetof(kern_block_q5_K, d), &d, 2);
			memcpy(blk + offsetof(kern_block_q5_K, dmin), &dm, 2);
			break;
		case KERN_TYPE_Q6_K:
			memcpy(blk + offsetof(kern_block_q6_K, d), &d, 2);
			break;
		default:
			break;
		}
	}
}

/* Random Q8_K rows with every int8 value possible (-128 included, which the
 * quantizer never emits) and consistent bsums. */
static void random_q8_k(rng *r, kern_block_q8_K *y, int nsb)
{
	for (int b = 0; b < nsb; b++) {
		y[b].d = 0.001f + rng_unit(r);
		for (int j = 0; j < QK; j++)
			y[b].qs[j] = (int8_t)(uint8_t)rng_next(r);
		if (b % 5 == 2) /* extremes */
			for (int j = 0; j < QK; j++)
				y[b].qs[j] = (j & 1) ? -128 : 127;
		for (int g = 0; g < 16; g++) {
			int sum = 0;
			for (int k = 0; k < 16; k++)
				sum += y[b].qs[16 * g + k];
			y[b].bsums[g] = (int16_t)sum;
		}
	}
}

/* ------------------------------------------- layout: element formulas */

/* Value of element e of a block, written from the ggml layout description
 * one element at a time (deliberately not the loop structure of _ref). */
static float elem_q2_k(const kern_block_q2_K *b, int e)
{
	const int h = e / 128, j = (e % 128) / 32, l = e % 32;
	const int q = (b->qs[32 * h + l] >> (2 * j)) & 3;
	const uint8_t sm = b->scales[e / 16];
	return kern_fp16_to_fp32(b->d) * (sm & 15) * q - kern_fp16_to_fp32(b->dmin) * (sm >> 4);
}

static float elem_q3_k(const kern_block_q3_K *b, int e)
{
	const int h = e / 128, j = (e % 128) / 32, l = e % 32, g = e / 16;
	const int q = (b->qs[32 * h + l] >> (2 * j)) & 3;
	const int hb = (b->hmask[e % 32] >> (e / 32)) & 1;
	const int lo = g < 8 ? (b->scales[g] & 15) : (b->scales[g - 8] >> 4);
	const int hi = (b->scales[8 + g % 4] >> (2 * (g / 4))) & 3;
	const int sc = (lo | (hi << 4)) - 32;
	return kern_fp16_to_fp32(b->d) * sc * (q + 4 * hb - 4);
}

static void scale_min_k4(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

static float elem_q4_k(const kern_block_q4_K *b, int e)
{
	const int c = e / 64, r = e % 64;
	const int q = r < 32 ? (b->qs[32 * c + r] & 15) : (b->qs[32 * c + r - 32] >> 4);
	int sc, m;
	scale_min_k4(b->scales, e / 32, &sc, &m);
	return kern_fp16_to_fp32(b->d) * sc * q - kern_fp16_to_fp32(b->dmin) * m;
}

static float elem_q5_k(const kern_block_q5_K *b, int e)
{
	const int c = e / 64, r = e % 64;
	int q = r < 32 ? (b->qs[32 * c + r] & 15) : (b->qs[32 * c + r - 32] >> 4);
	q += 16 * ((b->qh[e % 32] >> (e / 32)) & 1);
	int sc, m;
	scale_min_k4(b->scales, e / 32, &sc, &m);
	return kern_fp16_to_fp32(b->d) * sc * q - kern_fp16_to_fp32(b->dmin) * m;
}

static float elem_q6_k(const kern_block_q6_K *b, int e)
{
	const int h = e / 128, k = (e % 128) / 32, l = e % 32;
	const int lo = (b->ql[64 * h + 32 * (k & 1) + l] >> (k >= 2 ? 4 : 0)) & 15;
	const int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
	return kern_fp16_to_fp32(b->d) * b->scales[e / 16] * ((lo | (hi << 4)) - 32);
}

static float elem(const wtype *w, const void *blk, int e)
{
	switch (w->t) {
	case KERN_TYPE_Q2_K: return elem_q2_k(blk, e);
	case KERN_TYPE_Q3_K: return elem_q3_k(blk, e);
	case KERN_TYPE_Q4_K: return elem_q4_k(blk, e);
	case KERN_TYPE_Q5_K: return elem_q5_k(blk, e);
	case KERN_TYPE_Q6_K: return elem_q6_k(blk, e);
	default: return NAN;
	}
}

static void test_layout_dequant(void **state)
{
	scratch *s = *state;
	rng r = {11};
	for (size_t t = 0; t < N_WTYPES; t++) {
		const wtype *w = &wtypes[t];
		const int nsb = 9;
		random_blocks(&r, w, s->wq, nsb);
		w->deq(s->wq, s->wd, (int64_t)nsb * QK);
		for (int b = 0; b < nsb; b++) {
			const uint8_t *blk = (const uint8_t *)s->wq + (size_t)b * w->bsize;
			for (int e = 0; e < QK; e++) {
				const float want = elem(w, blk, e);
				const float got = s->wd[b * QK + e];
				if (fabsf(got - want) > 1e-6f * fabsf(want) + 1e-30f)
					fail_msg("%s block %d elem %d: got %g want %g", w->name, b, e,
						 got, want);
			}
		}
	}
}

/* ---------------------------------------------------------- Q8_K quant */

static void check_q8_k_block(const float *x, const kern_block_q8_K *y)
{
	float amax = 0;
	for (int j = 0; j < QK; j++)
		amax = fmaxf(amax, fabsf(x[j]));
	if (amax == 0) {
		assert_true(y->d == 0);
		for (int j = 0; j < QK; j++)
			assert_int_equal(y->qs[j], 0);
		for (int g = 0; g < 16; g++)
			assert_int_equal(y->bsums[g], 0);
		return;
	}
	assert_true(fabsf(fabsf(y->d) * 127 - amax) <= 1e-5f * amax);
	for (int j = 0; j < QK; j++) {
		assert_true(y->qs[j] >= -127);
		assert_true(fabsf(y->d * y->qs[j] - x[j]) <= 0.5001f * fabsf(y->d) + 1e-6f * amax);
	}
	for (int g = 0; g < 16; g++) {
		int sum = 0;
		for (int k = 0; k < 16; k++)
			sum += y->qs[16 * g + k];
		assert_int_equal(y->bsums[g], sum);
	}
}

static void test_q8_k_ref_semantics(void **state)
{
	scratch *s = *state;
	kern_block_q8_K *y = s->aq;
	/* Hand-made: largest magnitude is negative and first -> q = -127. */
	float *x = s->x;
	for (int j = 0; j < QK; j++)
		x[j] = (float)(j % 7) - 3.0f;
	x[5] = -6.0f;
	x[9] = 6.0f; /* same magnitude later: sign of the first one wins */
	kern_quant_q8_k_ref(x, y, QK);
	assert_true(y->d == 1.0f / (-127.f / -6.0f));
	assert_int_equal(y->qs[5], -127);
	assert_int_equal(y->qs[9], 127);
	check_q8_k_block(x, y);
	/* all-zero block (with a -0.0) gives d = 0 and zero quants/bsums */
	memset(x, 0, QK * sizeof *x);
	x[3] = -0.0f;
	memset(y, 0x5a, sizeof *y);
	kern_quant_q8_k_ref(x, y, QK);
	check_q8_k_block(x, y);
	rng r = {5};
	for (int m = 0; m < FILL_COUNT; m++) {
		fill(&r, s->x, 8 * QK, (enum fill_mode)m);
		kern_quant_q8_k_ref(s->x, s->aq, 8 * QK);
		for (int b = 0; b < 8; b++)
			check_q8_k_block(s->x + b * QK, (kern_block_q8_K *)s->aq + b);
	}
}

/* Inputs that stress the SIMD quantizer's agreement: exact .5 ties after
 * scaling, equal magnitudes of both signs, tiny values, zeros. */
static void fill_q8_tricky(rng *r, float *x, int nsb)
{
	for (int b = 0; b < nsb; b++) {
		float *p = x + b * QK;
		switch (b % 6) {
		case 0: /* max 127 -> iscale -1: k + 0.5 are exact ties */
			for (int j = 0; j < QK; j++)
				p[j] = (float)((int)(rng_unit(r) * 254) - 127) + ((j & 1) ? 0.5f : 0.f);
			p[rng_next(r) % QK] = 127.0f;
			break;
		case 1: /* duplicate max magnitude, negative first at a random spot */
			fill(r, p, QK, FILL_NORMAL);
			{
				const int k = (int)(rng_next(r) % (QK - 1));
				p[k] = -9.0f;
				p[k + 1 + (int)(rng_next(r) % (uint64_t)(QK - 1 - k))] = 9.0f;
			}
			break;
		case 2:
			memset(p, 0, QK * sizeof *p);
			break;
		case 3: /* tiny max; denormals beside it. (A denormal max makes
			 * -127/max overflow to inf in ggml too: not tested.) */
			for (int j = 0; j < QK; j++)
				p[j] = rng_sym(r) * ((j & 1) ? 1e-30f : 1e-39f);
			break;
		case 4:
			fill(r, p, QK, FILL_SPARSE);
			break;
		default:
			fill(r, p, QK, FILL_WIDE);
		}
	}
}

static void test_q8_k_simd_identical(void **state)
{
	scratch *s = *state;
	const kern_isa best = kern_isa_detect();
	if (best < KERN_ISA_AVX2)
		skip();
	kern_from_float_fn fns[2] = {kern_quant_q8_k_avx2, kern_quant_q8_k_avx512};
	rng r = {77};
	for (int v = 0; v < 2; v++) {
		if ((kern_isa)(v + 1) > best)
			continue;
		for (size_t k = 0; k < sizeof awkward_sb / sizeof awkward_sb[0]; k++) {
			const int nsb = awkward_sb[k];
			for (int m = 0; m <= FILL_COUNT; m++) {
				if (m == FILL_COUNT)
					fill_q8_tricky(&r, s->x, nsb);
				else
					fill(&r, s->x, (int64_t)nsb * QK, (enum fill_mode)m);
				memset(s->aq, 0x11, (size_t)nsb * sizeof(kern_block_q8_K));
				memset(s->aq2, 0x22, (size_t)nsb * sizeof(kern_block_q8_K));
				kern_quant_q8_k_ref(s->x, s->aq, (int64_t)nsb * QK);
				fns[v](s->x, s->aq2, (int64_t)nsb * QK);
				if (memcmp(s->aq, s->aq2, (size_t)nsb * sizeof(kern_block_q8_K)))
					fail_msg("q8_k %s differs from ref (sb %d, mode %d)",
						 kern_isa_name((kern_isa)(v + 1)), nsb, m);
			}
		}
	}
}

/* -------------------------------------------------- quantization error */

static double rel_rmse(const float *x, const float *y, int64_t n)
{
	double e = 0, p = 0;
	for (int64_t i = 0; i < n; i++) {
		e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
		p += (double)x[i] * x[i];
	}
	return p > 0 ? sqrt(e / p) : sqrt(e);
}

static void test_roundtrip_error(void **state)
{
	scratch *s = *state;
	rng r = {1234};
	const int nsb = 16;
	const int64_t n = (int64_t)nsb * QK;
	for (size_t t = 0; t < N_WTYPES; t++) {
		const wtype *w = &wtypes[t];
		for (int m = 0; m < FILL_COUNT; m++) {
			fill(&r, s->x, n, (enum fill_mode)m);
			w->quant(s->x, s->wq, n);
			w->deq(s->wq, s->wd, n);
			double e = rel_rmse(s->x, s->wd, n);
			/* Bounds: gaussian per type; wide/sparse a bit looser (fp16
			 * super-block scales, outliers); offset data is easy for
			 * the scale+min types and hard for the symmetric ones. */
			double bound = w->rmse_max;
			if (m == FILL_WIDE || m == FILL_SPARSE)
				bound *= 1.6;
			if (m == FILL_OFFSET)
				bound *= 0.5;
			print_message("  %s mode %d rel rmse %.4f (bound %.4f)\n", w->name, m, e,
				      bound);
			assert_true(e < bound);
		}
		/* all-zero input: exact zeros out */
		memset(s->x, 0, QK * sizeof(float));
		w->quant(s->x, s->wq, QK);
		w->deq(s->wq, s->wd, QK);
		for (int j = 0; j < QK; j++)
			assert_true(s->wd[j] == 0.0f);
		/* deterministic */
		fill(&r, s->x, QK, FILL_NORMAL);
		w->quant(s->x, s->wq, QK);
		memcpy(s->aq2, s->wq, w->bsize);
		w->quant(s->x, s->wq, QK);
		assert_memory_equal(s->aq2, s->wq, w->bsize);
	}
}

/* ------------------------------------------------------------- dots */

/* Float dot of dequantized rows and the sum of |terms| (error scale). */
static double float_dot(const float *a, const float *b, int64_t n, double *mag)
{
	double d = 0, m = 0;
	for (int64_t i = 0; i < n; i++) {
		d += (double)a[i] * b[i];
		m += fabs((double)a[i] * b[i]);
	}
	*mag = m;
	return d;
}

static void test_ref_dot_vs_float(void **state)
{
	scratch *s = *state;
	rng r = {99};
	for (size_t t = 0; t < N_WTYPES; t++) {
		const wtype *w = &wtypes[t];
		for (size_t k = 0; k < 5; k++) { /* 1..33 super-blocks */
			const int nsb = awkward_sb[k];
			const int64_t n = (int64_t)nsb * QK;
			for (int m = 0; m < FILL_COUNT + 1; m++) {
				if (m < FILL_COUNT) {
					fill(&r, s->x, n, (enum fill_mode)m);
					w->quant(s->x, s->wq, n);
					fill(&r, s->a, n, (enum fill_mode)((m + 1) % FILL_COUNT));
					kern_quant_q8_k_ref(s->a, s->aq, n);
				} else {
					random_blocks(&r, w, s->wq, nsb);
					random_q8_k(&r, s->aq, nsb);
				}
				w->deq(s->wq, s->wd, n);
				kern_dequant_q8_k_ref(s->aq, s->ad, n);
				double mag;
				const double want = float_dot(s->wd, s->ad, n, &mag);
				float got;
				w->dot_ref((int)n, &got, s->wq, s->aq);
				if (fabs(got - want) > 2e-5 * mag + 1e-20)
					fail_msg("%s ref dot sb %d mode %d: got %.9g want %.9g (mag %g)",
						 w->name, nsb, m, got, want, mag);
			}
		}
	}
}

static void test_simd_dots(void **state)
{
	scratch *s = *state;
	const kern_isa best = kern_isa_detect();
	if (best < KERN_ISA_AVX2)
		skip();
	rng r = {4242};
	for (size_t t = 0; t < N_WTYPES; t++) {
		const wtype *w = &wtypes[t];
		const kern_vec_dot_fn fns[2] = {w->dot_avx2, w->dot_avx512};
		for (size_t k = 0; k < sizeof awkward_sb / sizeof awkward_sb[0]; k++) {
			const int nsb = awkward_sb[k];
			const int64_t n = (int64_t)nsb * QK;
			for (int m = 0; m < FILL_COUNT + 1; m++) {
				if (m < FILL_COUNT) {
					fill(&r, s->x, n, (enum fill_mode)m);
					w->quant(s->x, s->wq, n);
					fill(&r, s->a, n, (enum fill_mode)((m + 2) % FILL_COUNT));
					kern_quant_q8_k_ref(s->a, s->aq, n);
				} else {
					random_blocks(&r, w, s->wq, nsb);
					random_q8_k(&r, s->aq, nsb);
				}
				w->deq(s->wq, s->wd, n);
				kern_dequant_q8_k_ref(s->aq, s->ad, n);
				double mag;
				(void)float_dot(s->wd, s->ad, n, &mag);
				float want;
				w->dot_ref((int)n, &want, s->wq, s->aq);
				for (int v = 0; v < 2; v++) {
					if ((kern_isa)(v + 1) > best)
						continue;
					float got = NAN;
					fns[v]((int)n, &got, s->wq, s->aq);
					if (!(fabs((double)got - want) <= 1e-5 * mag + 1e-20))
						fail_msg("%s %s dot sb %d mode %d: got %.9g ref %.9g (mag %g)",
							 w->name, kern_isa_name((kern_isa)(v + 1)), nsb,
							 m, got, want, mag);
				}
			}
		}
	}
}

static void test_q8_k_dot(void **state)
{
	scratch *s = *state;
	rng r = {3};
	const int nsb = 7;
	const int64_t n = (int64_t)nsb * QK;
	fill(&r, s->x, n, FILL_NORMAL);
	fill(&r, s->a, n, FILL_WIDE);
	kern_quant_q8_k_ref(s->x, s->aq2, n);
	kern_quant_q8_k_ref(s->a, s->aq, n);
	kern_dequant_q8_k_ref(s->aq2, s->wd, n);
	kern_dequant_q8_k_ref(s->aq, s->ad, n);
	double mag;
	const double want = float_dot(s->wd, s->ad, n, &mag);
	float got;
	kern_dot_q8_k_q8_k_ref((int)n, &got, s->aq2, s->aq);
	assert_true(fabs(got - want) <= 2e-5 * mag);
}

/* ------------------------------------------------------------ dispatch */

static void test_dispatch(void **state)
{
	(void)state;
	const kern_type kt[] = {KERN_TYPE_Q2_K, KERN_TYPE_Q3_K, KERN_TYPE_Q4_K,
				KERN_TYPE_Q5_K, KERN_TYPE_Q6_K, KERN_TYPE_Q8_K};
	const kern_isa best = kern_isa_detect();
	for (int isa = KERN_ISA_REF; isa <= (int)best; isa++) {
		kern_ops ops;
		memset(&ops, 0, sizeof ops);
		kern_ops_init_kquant(&ops, (kern_isa)isa);
		for (size_t i = 0; i < sizeof kt / sizeof kt[0]; i++) {
			assert_non_null(ops.to_float[kt[i]]);
			assert_non_null(ops.from_float[kt[i]]);
			assert_non_null(ops.vec_dot[kt[i]]);
		}
		/* it touches only its own types */
		assert_null(ops.vec_dot[KERN_TYPE_Q4_0]);
		assert_null(ops.to_float[KERN_TYPE_F32]);
		const kern_vec_dot_fn want = isa == KERN_ISA_REF    ? kern_dot_q4_k_q8_k_ref
					     : isa == KERN_ISA_AVX2 ? kern_dot_q4_k_q8_k_avx2
								    : kern_dot_q4_k_q8_k_avx512;
		assert_ptr_equal(ops.vec_dot[KERN_TYPE_Q4_K], want);
		assert_ptr_equal(ops.from_float[KERN_TYPE_Q4_K], kern_quant_q4_k_ref);
	}
	/* traits agree with the block structs */
	for (size_t t = 0; t < N_WTYPES; t++) {
		const kern_type_traits *tr = kern_type_info(wtypes[t].t);
		assert_non_null(tr);
		assert_int_equal(tr->blck_size, QK);
		assert_int_equal(tr->type_size, wtypes[t].bsize);
		assert_int_equal(tr->vec_dot_type, KERN_TYPE_Q8_K);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout_dequant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_q8_k_ref_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_q8_k_simd_identical, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ref_dot_vs_float, setup, teardown),
		cmocka_unit_test_setup_teardown(test_simd_dots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_q8_k_dot, setup, teardown),
		cmocka_unit_test(test_dispatch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
