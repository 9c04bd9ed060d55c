/* Tests of the legacy weight types (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
 * Q8_1): ggml block semantics on hand-computed blocks, quantize/dequantize
 * round-trip error bounds, reference dots against float dots of the
 * dequantized data, every SIMD variant this CPU runs against the reference at
 * awkward lengths, SIMD quantizers bit-identical to the reference, and the
 * dispatch table. SIMD parts the CPU lacks are skipped. */
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
#include "kernels/legacy.h"

#define MAX_BLOCKS 257
#define MAX_N (MAX_BLOCKS * 32)

static const int awkward_blocks[] = {1, 3, 7, 31, 33, 255, 257};
static const int awkward_n[] = {1, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 255, 257, 1000, 4097, MAX_N};

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

enum fill_mode {
	FILL_NORMAL,  /* roughly gaussian, unit scale */
	FILL_WIDE,    /* magnitudes spread over 2^-12 .. 2^12 */
	FILL_SPARSE,  /* many zeros, all-zero blocks, a few extremes */
	FILL_OFFSET,  /* all positive, away from zero (min > 0 blocks) */
	FILL_COUNT
};

/* Fill x[0..n) with finite values whose quantization scales stay inside the
 * fp16 range (|x| <= big). */
static void fill(rng *r, float *x, int n, int mode, float big)
{
	for (int i = 0; i < n; i++) {
		float v = 0.0f;
		switch (mode) {
		case FILL_NORMAL:
			v = rng_sym(r) + rng_sym(r) + rng_sym(r);
			break;
		case FILL_WIDE:
			v = ldexpf(rng_sym(r), (int)(rng_next(r) % 25) - 12);
			break;
		case FILL_SPARSE: {
			const uint64_t k = rng_next(r) % 16;
			if ((i / 32) % 5 == 2 || k < 6)
				v = 0.0f;
			else if (k == 6)
				v = big;
			else if (k == 7)
				v = -big;
			else if (k == 8)
				v = -0.0f;
			else
				v = rng_sym(r) * 1e-3f;
			break;
		}
		default:
			v = 5.0f + rng_unit(r);
			break;
		}
		x[i] = v;
	}
}

/* ------------------------------------------------------------------ type table */

typedef struct type_case {
	kern_type type;
	kern_type dot_type;
	kern_to_float_fn dequant;
	kern_from_float_fn quant;
	kern_vec_dot_fn dot_ref;
	kern_vec_dot_fn dot_simd[3];      /* by kern_isa; [0] unused */
	kern_from_float_fn quant_simd[3]; /* by kern_isa; NULL when none */
	int has_min;                      /* Q4_1/Q5_1: x = d*q + m */
	float big;                        /* largest |x| test data may hold */
} type_case;

static const type_case cases[] = {
	{KERN_TYPE_F32, KERN_TYPE_F32, kern_dequant_f32_ref, kern_quant_f32_ref, kern_dot_f32_f32_ref,
	 {NULL, kern_dot_f32_f32_avx2, kern_dot_f32_f32_avx512}, {NULL, NULL, NULL}, 0, 1e15f},
	{KERN_TYPE_F16, KERN_TYPE_F16, kern_dequant_f16_ref, kern_quant_f16_ref, kern_dot_f16_f16_ref,
	 {NULL, kern_dot_f16_f16_avx2, kern_dot_f16_f16_avx512},
	 {NULL, kern_quant_f16_avx2, kern_quant_f16_avx512}, 0, 65504.0f},
	{KERN_TYPE_BF16, KERN_TYPE_BF16, kern_dequant_bf16_ref, kern_quant_bf16_ref, kern_dot_bf16_bf16_ref,
	 {NULL, kern_dot_bf16_bf16_avx2, kern_dot_bf16_bf16_avx512},
	 {NULL, kern_quant_bf16_avx2, kern_quant_bf16_avx512}, 0, 1e15f},
	{KERN_TYPE_Q4_0, KERN_TYPE_Q8_0, kern_dequant_q4_0_ref, kern_quant_q4_0_ref, kern_dot_q4_0_q8_0_ref,
	 {NULL, kern_dot_q4_0_q8_0_avx2, kern_dot_q4_0_q8_0_avx512}, {NULL, NULL, NULL}, 0, 3e4f},
	{KERN_TYPE_Q4_1, KERN_TYPE_Q8_1, kern_dequant_q4_1_ref, kern_quant_q4_1_ref, kern_dot_q4_1_q8_1_ref,
	 {NULL, kern_dot_q4_1_q8_1_avx2, kern_dot_q4_1_q8_1_avx512}, {NULL, NULL, NULL}, 1, 3e4f},
	{KERN_TYPE_Q5_0, KERN_TYPE_Q8_0, kern_dequant_q5_0_ref, kern_quant_q5_0_ref, kern_dot_q5_0_q8_0_ref,
	 {NULL, kern_dot_q5_0_q8_0_avx2, kern_dot_q5_0_q8_0_avx512}, {NULL, NULL, NULL}, 0, 3e4f},
	{KERN_TYPE_Q5_1, KERN_TYPE_Q8_1, kern_dequant_q5_1_ref, kern_quant_q5_1_ref, kern_dot_q5_1_q8_1_ref,
	 {NULL, kern_dot_q5_1_q8_1_avx2, kern_dot_q5_1_q8_1_avx512}, {NULL, NULL, NULL}, 1, 3e4f},
	{KERN_TYPE_Q8_0, KERN_TYPE_Q8_0, kern_dequant_q8_0_ref, kern_quant_q8_0_ref, kern_dot_q8_0_q8_0_ref,
	 {NULL, kern_dot_q8_0_q8_0_avx2, kern_dot_q8_0_q8_0_avx512},
	 {NULL, kern_quant_q8_0_avx2, kern_quant_q8_0_avx512}, 0, 3e4f},
	/* Q8_1's s = d * sum(q) is fp16: |x| much above 65504/32 overflows it
	 * (in ggml too), so its data stays smaller. */
	{KERN_TYPE_Q8_1, KERN_TYPE_Q8_1, kern_dequant_q8_1_ref, kern_quant_q8_1_ref, kern_dot_q8_1_q8_1_ref,
	 {NULL, NULL, NULL}, {NULL, kern_quant_q8_1_avx2, kern_quant_q8_1_avx512}, 0, 1000.0f},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static const type_case *case_of(kern_type t)
{
	for (size_t k = 0; k < N_CASES; k++)
		if (cases[k].type == t)
			return &cases[k];
	return NULL;
}

/* Scratch buffers for one test, large enough for MAX_N elements of any type. */
typedef struct scratch {
	float *x, *y, *xd, *yd;
	void *qx, *qy, *qz;
} scratch;

static int scratch_setup(void **state)
{
	scratch *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return -1;
	const size_t fbytes = MAX_N * sizeof(float);
	const size_t qbytes = MAX_N * sizeof(float) + 64; /* F32 is the widest */
	sc->x = malloc(fbytes);
	sc->y = malloc(fbytes);
	sc->xd = malloc(fbytes);
	sc->yd = malloc(fbytes);
	sc->qx = malloc(qbytes);
	sc->qy = malloc(qbytes);
	sc->qz = malloc(qbytes);
	*state = sc;
	if (!sc->x || !sc->y || !sc->xd || !sc->yd || !sc->qx || !sc->qy || !sc->qz)
		return -1;
	return 0;
}

static int scratch_teardown(void **state)
{
	scratch *sc = *state;
	if (sc) {
		free(sc->x);
		free(sc->y);
		free(sc->xd);
		free(sc->yd);
		free(sc->qx);
		free(sc->qy);
		free(sc->qz);
		free(sc);
	}
	return 0;
}

/* Per-block min term magnitude sum_b |m_b * s_b| of a Q4_1/Q5_1 row against
 * a Q8_1 row (fp16 s makes the reference differ from float by ~2^-11 of it). */
static double min_terms(const type_case *tc, const void *qx, const void *qy, int nb)
{
	double acc = 0.0;
	const kern_block_q8_1 *y = qy;
	for (int b = 0; b < nb; b++) {
		kern_fp16_t m = tc->type == KERN_TYPE_Q4_1 ? ((const kern_block_q4_1 *)qx)[b].m
							   : ((const kern_block_q5_1 *)qx)[b].m;
		acc += fabs((double)kern_fp16_to_fp32(m) * kern_fp16_to_fp32(y[b].s));
	}
	return acc;
}

static int blck(kern_type t)
{
	return kern_type_info(t)->blck_size;
}

/* ------------------------------------------------------------------ golden blocks */

static void test_golden_blocks(void **state)
{
	(void)state;
	float x[32], out[32];

	/* Q4_0, x_j = j - 16: max = -16 -> d = 2, q_j = min(15, (j + 1) / 2). */
	kern_block_q4_0 b4;
	for (int j = 0; j < 32; j++)
		x[j] = (float)(j - 16);
	kern_quant_q4_0_ref(x, &b4, 32);
	assert_int_equal(b4.d, 0x4000);
	for (int j = 0; j < 16; j++) {
		const int q0 = (j + 1) / 2, q1 = (j + 17) / 2 > 15 ? 15 : (j + 17) / 2;
		assert_int_equal(b4.qs[j], q0 | (q1 << 4));
	}
	assert_int_equal(b4.qs[0], 0x80);
	assert_int_equal(b4.qs[15], 0xF8);
	kern_dequant_q4_0_ref(&b4, out, 32);
	assert_true(out[0] == -16.0f && out[31] == 14.0f && out[1] == -14.0f);

	/* Q5_0, same data: d = 1, q_j = j; 5th bits in qh bits 16..31. */
	kern_block_q5_0 b5;
	kern_quant_q5_0_ref(x, &b5, 32);
	assert_int_equal(b5.d, 0x3C00);
	for (int j = 0; j < 16; j++)
		assert_int_equal(b5.qs[j], j | (j << 4));
	const uint8_t qh_expect[4] = {0x00, 0x00, 0xFF, 0xFF};
	assert_memory_equal(b5.qh, qh_expect, 4);
	kern_dequant_q5_0_ref(&b5, out, 32);
	for (int j = 0; j < 32; j++)
		assert_true(out[j] == x[j]);

	/* Q8_0 / Q8_1 with amax 127 -> d = 1: roundf ties go away from zero. */
	const float t[8] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 126.5f, -126.5f, 1.5f};
	const int8_t tq[8] = {127, 3, -3, 1, -1, 127, -127, 2};
	memset(x, 0, sizeof(x));
	memcpy(x + 4, t, sizeof(t));
	kern_block_q8_0 b8;
	kern_quant_q8_0_ref(x, &b8, 32);
	assert_int_equal(b8.d, 0x3C00);
	assert_memory_equal(b8.qs + 4, tq, 8);
	assert_int_equal(b8.qs[0], 0);
	kern_block_q8_1 b81;
	kern_quant_q8_1_ref(x, &b81, 32);
	assert_int_equal(b81.d, 0x3C00);
	assert_memory_equal(b81.qs + 4, tq, 8);
	assert_int_equal(b81.s, 0x5808); /* sum 129 */

	/* Q4_1, x_j = j: m = 0, d = 31/15, q = trunc(j*15/31 + 0.5). */
	kern_block_q4_1 b41;
	for (int j = 0; j < 32; j++)
		x[j] = (float)j;
	kern_quant_q4_1_ref(x, &b41, 32);
	assert_int_equal(b41.m, 0);
	assert_int_equal(b41.d, kern_fp32_to_fp16(31.0f / 15.0f));
	assert_int_equal(b41.qs[0] & 0x0F, 0);
	assert_int_equal(b41.qs[15] >> 4, 15);

	/* All-zero blocks quantize to zero scale and dequantize to zeros. */
	memset(x, 0, sizeof(x));
	for (size_t k = 0; k < N_CASES; k++) {
		uint8_t q[128];
		memset(q, 0xA5, sizeof(q));
		cases[k].quant(x, q, 32);
		cases[k].dequant(q, out, 32);
		for (int j = 0; j < 32; j++)
			assert_true(out[j] == 0.0f);
	}
}

/* ------------------------------------------------------------------ round trip */

/* Largest error quantize->dequantize may make on element j of a block of k
 * values x[0..k) (k = 32 for Q types, 1 otherwise). */
static double roundtrip_bound(kern_type t, const float *blk, int k, int j)
{
	float amax = 0.0f, min = blk[0], max = blk[0];
	for (int i = 0; i < k; i++) {
		amax = fmaxf(amax, fabsf(blk[i]));
		min = fminf(min, blk[i]);
		max = fmaxf(max, blk[i]);
	}
	/* a scale in fp16's subnormal range is off by up to half its step
	 * 2^-24, times |q| <= 128 */
	const double slack = 128 * 0x1p-25;
	switch (t) {
	case KERN_TYPE_F32: return 0.0;
	case KERN_TYPE_F16: return fabs(blk[j]) * 0x1p-11 + 0x1p-25;
	case KERN_TYPE_BF16: return fabs(blk[j]) * 0x1p-8;
	case KERN_TYPE_Q4_0: return 1.01 * amax / 8 + slack;
	case KERN_TYPE_Q5_0: return 1.01 * amax / 16 + slack;
	case KERN_TYPE_Q4_1: return 0.52 * (max - min) / 15 + 1e-3 * fabs(min) + slack;
	case KERN_TYPE_Q5_1: return 0.52 * (max - min) / 31 + 1e-3 * fabs(min) + slack;
	case KERN_TYPE_Q8_0:
	case KERN_TYPE_Q8_1: return 0.6 * amax / 127 + slack;
	default: return 0.0;
	}
}

static void test_roundtrip(void **state)
{
	scratch *sc = *state;
	rng r = {42};
	for (size_t k = 0; k < N_CASES; k++) {
		const type_case *tc = &cases[k];
		const int bs = blck(tc->type);
		const int qk = bs > 1 ? bs : 1;
		for (int mode = 0; mode < FILL_COUNT; mode++) {
			const int n = MAX_N;
			fill(&r, sc->x, n, mode, tc->type == KERN_TYPE_F16 ? 60000.0f : tc->big);
			tc->quant(sc->x, sc->qx, n);
			tc->dequant(sc->qx, sc->xd, n);
			for (int i = 0; i < n; i++) {
				const int b0 = i / qk * qk;
				const double err = fabs((double)sc->xd[i] - sc->x[i]);
				const double bound = roundtrip_bound(tc->type, sc->x + b0, qk, i - b0);
				if (!(err <= bound)) {
					fail_msg("%s mode %d: x[%d] = %g -> %g (err %g > %g)",
						 kern_type_name(tc->type), mode, i, (double)sc->x[i],
						 (double)sc->xd[i], err, bound);
				}
			}
		}
	}
}

/* ------------------------------------------------------------------ dots */

/* Quantize random x (weights) and y (activations) for tc at n elements; fill
 * sc->xd / sc->yd with their dequantized values. Returns sum |xd*yd| plus the
 * min-term magnitude: the scale the dot's rounding error is relative to. */
static double make_dot_data(scratch *sc, rng *r, const type_case *tc, int n, int mode_x, int mode_y)
{
	const type_case *yc = case_of(tc->dot_type);
	fill(r, sc->x, n, mode_x, tc->big);
	fill(r, sc->y, n, mode_y, yc->big > 3e4f ? 3e4f : yc->big);
	tc->quant(sc->x, sc->qx, n);
	yc->quant(sc->y, sc->qy, n);
	tc->dequant(sc->qx, sc->xd, n);
	yc->dequant(sc->qy, sc->yd, n);
	double absdot = 0.0;
	for (int i = 0; i < n; i++)
		absdot += fabs((double)sc->xd[i] * sc->yd[i]);
	if (tc->has_min)
		absdot += min_terms(tc, sc->qx, sc->qy, n / 32);
	return absdot;
}

static void test_ref_dot_vs_float(void **state)
{
	scratch *sc = *state;
	rng r = {7};
	for (size_t k = 0; k < N_CASES; k++) {
		const type_case *tc = &cases[k];
		for (size_t a = 0; a < sizeof(awkward_blocks) / sizeof(awkward_blocks[0]); a++) {
			for (int mode = 0; mode < FILL_COUNT; mode++) {
				const int n = awkward_blocks[a] * 32;
				const double absdot = make_dot_data(sc, &r, tc, n, mode, (mode + 1) % FILL_COUNT);
				double expect = 0.0;
				for (int i = 0; i < n; i++)
					expect += (double)sc->xd[i] * sc->yd[i];
				double tol = 2e-5 * absdot;
				if (tc->has_min) /* s_y is fp16: m * s off by 2^-11 relative */
					tol += 1e-3 * min_terms(tc, sc->qx, sc->qy, n / 32);
				float got = NAN;
				tc->dot_ref(n, &got, sc->qx, sc->qy);
				if (!(fabs(got - expect) <= tol))
					fail_msg("%s ref dot n=%d mode %d: %.9g vs float %.9g (tol %g)",
						 kern_type_name(tc->type), n, mode, (double)got, expect, tol);
			}
		}
	}
}

/* Every SIMD dot for isa against the reference. */
static void check_simd_dots(scratch *sc, kern_isa isa)
{
	rng r = {1234 + (uint64_t)isa};
	for (size_t k = 0; k < N_CASES; k++) {
		const type_case *tc = &cases[k];
		const kern_vec_dot_fn fn = tc->dot_simd[isa];
		if (!fn)
			continue;
		const int per_block = blck(tc->type) > 1;
		const size_t nlen = per_block ? sizeof(awkward_blocks) / sizeof(awkward_blocks[0])
					      : sizeof(awkward_n) / sizeof(awkward_n[0]);
		for (size_t a = 0; a < nlen; a++) {
			const int n = per_block ? awkward_blocks[a] * 32 : awkward_n[a];
			for (int mode = 0; mode < FILL_COUNT; mode++) {
				const double absdot =
					make_dot_data(sc, &r, tc, n, mode, (mode + 2) % FILL_COUNT);
				float want = NAN, got = NAN;
				tc->dot_ref(n, &want, sc->qx, sc->qy);
				fn(n, &got, sc->qx, sc->qy);
				const double tol = 5e-5 * absdot;
				if (!(fabs((double)got - want) <= tol))
					fail_msg("%s %s dot n=%d mode %d: %.9g vs ref %.9g (tol %g)",
						 kern_type_name(tc->type), kern_isa_name(isa), n, mode,
						 (double)got, (double)want, tol);
			}
		}
	}

	/* Q8_0 x Q8_0 on raw random bytes (-128 included: not produced by the
	 * quantizer, but legal in a file): exact integer sums let a one-block
	 * dot with d = 1 be compared exactly. Only the AVX-512 scheme is exact
	 * with -128 anywhere (AVX2's sign trick, like ggml's, is not). */
	kern_block_q8_0 *x = sc->qx, *y = sc->qy;
	for (int trial = 0; trial < 200; trial++) {
		for (int j = 0; j < 32; j++) {
			x[0].qs[j] = (int8_t)(rng_next(&r) & 0xFF);
			y[0].qs[j] = (int8_t)(rng_next(&r) & 0xFF);
			if (isa == KERN_ISA_AVX2 && x[0].qs[j] == -128)
				x[0].qs[j] = -127;
			if (isa == KERN_ISA_AVX2 && y[0].qs[j] == -128)
				y[0].qs[j] = -127;
		}
		x[0].d = y[0].d = 0x3C00;
		float want, got;
		kern_dot_q8_0_q8_0_ref(32, &want, x, y);
		cases[7].dot_simd[isa](32, &got, x, y);
		assert_true(want == got);
	}
}

static int isa_available(kern_isa isa)
{
	return kern_isa_detect() >= isa;
}

static void test_simd_dots_avx2(void **state)
{
	if (!isa_available(KERN_ISA_AVX2))
		skip();
	check_simd_dots(*state, KERN_ISA_AVX2);
}

static void test_simd_dots_avx512(void **state)
{
	if (!isa_available(KERN_ISA_AVX512))
		skip();
	check_simd_dots(*state, KERN_ISA_AVX512);
}

/* ------------------------------------------------------------------ SIMD quantizers */

/* Data meant to break a non-identical quantizer: exact .5 ties after
 * scaling, signed zeros, subnormals, amax at either sign, tiny and large
 * scales, plus (for float outputs) inf and NaN. */
static void fill_nasty(rng *r, float *x, int n, int allow_nonfinite)
{
	for (int i = 0; i < n; i++) {
		const int blk = i / 32, j = i % 32;
		float v;
		switch (blk % 8) {
		case 0: /* amax 127 -> d = 1: x.5 ties */
			v = j == 0 ? 127.0f : (float)((int)(rng_next(r) % 253) - 126) + 0.5f;
			break;
		case 1: /* amax 254 -> d = 2, id = 0.5: ties at odd integers */
			v = j == 5 ? -254.0f : (float)((int)(rng_next(r) % 507) - 253);
			break;
		case 2:
			v = j % 3 ? -0.0f : 0.0f;
			break;
		case 3: /* tiny: subnormal scale (1/d must stay finite: below that
			 * ggml's (int8_t)roundf(inf) is undefined behaviour) */
			v = j == 0 ? 0x1p-118f : ldexpf(rng_sym(r), -118 - (int)(rng_next(r) % 30));
			break;
		case 4:
			v = rng_sym(r) * 1e30f;
			break;
		case 5:
			v = ldexpf(rng_sym(r), (int)(rng_next(r) % 60) - 30);
			break;
		default:
			v = rng_sym(r) * 3.0f;
			break;
		}
		if (allow_nonfinite && rng_next(r) % 97 == 0) {
			const uint64_t k = rng_next(r) % 4;
			v = k == 0 ? INFINITY : k == 1 ? -INFINITY : k == 2 ? NAN : -NAN;
			if (k >= 2) { /* NaN with a payload */
				uint32_t u = kern_f32_bits(v) | (uint32_t)(rng_next(r) & 0x3FFFFF);
				v = kern_bits_f32(u);
			}
		}
		x[i] = v;
	}
}

static void check_simd_quant(scratch *sc, kern_isa isa)
{
	rng r = {99 + (uint64_t)isa};
	for (size_t k = 0; k < N_CASES; k++) {
		const type_case *tc = &cases[k];
		const kern_from_float_fn fn = tc->quant_simd[isa];
		if (!fn)
			continue;
		const int per_block = blck(tc->type) > 1;
		const size_t nlen = per_block ? sizeof(awkward_blocks) / sizeof(awkward_blocks[0])
					      : sizeof(awkward_n) / sizeof(awkward_n[0]);
		for (size_t a = 0; a < nlen; a++) {
			const int n = per_block ? awkward_blocks[a] * 32 : awkward_n[a];
			const size_t bytes = kern_row_size(tc->type, n);
			for (int mode = 0; mode <= FILL_COUNT; mode++) {
				if (mode == FILL_COUNT)
					fill_nasty(&r, sc->x, n, !per_block);
				else
					fill(&r, sc->x, n, mode, tc->big);
				memset(sc->qx, 0x5A, bytes + 16);
				memset(sc->qy, 0x5A, bytes + 16);
				tc->quant(sc->x, sc->qx, n);
				fn(sc->x, sc->qy, n);
				/* + 16: nothing written past the row either */
				if (memcmp(sc->qx, sc->qy, bytes + 16) != 0) {
					size_t at = 0;
					while (((uint8_t *)sc->qx)[at] == ((uint8_t *)sc->qy)[at])
						at++;
					fail_msg("%s %s quant n=%d mode %d differs at byte %zu",
						 kern_type_name(tc->type), kern_isa_name(isa), n, mode, at);
				}
			}
		}
	}
}

static void test_simd_quant_avx2(void **state)
{
	if (!isa_available(KERN_ISA_AVX2))
		skip();
	check_simd_quant(*state, KERN_ISA_AVX2);
}

static void test_simd_quant_avx512(void **state)
{
	if (!isa_available(KERN_ISA_AVX512))
		skip();
	check_simd_quant(*state, KERN_ISA_AVX512);
}


/* ------------------------------------------------------------------ llama.cpp fixtures */

/* Minimal GGUF (v2/v3) reader, enough to find tensors by name: the mini-*
 * fixtures hold the same random model as F32 and as each type llama-quantize
 * makes, so quantizing the F32 tensors with our reference must reproduce
 * llama.cpp's bytes exactly. */
typedef struct gguf_tensor {
	char name[96];
	uint32_t type;
	uint64_t nelem;
	uint64_t offset; /* from the start of the file */
} gguf_tensor;

typedef struct gguf_file {
	uint8_t *data;
	size_t size;
	gguf_tensor *tensors;
	uint64_t n_tensors;
} gguf_file;

typedef struct gguf_cursor {
	const uint8_t *p, *end;
	int bad;
	uint64_t align; /* general.alignment, 32 unless the file says */
} gguf_cursor;

static uint64_t cur_uint(gguf_cursor *c, int bytes)
{
	uint64_t v = 0;
	if (c->end - c->p < bytes) {
		c->bad = 1;
		return 0;
	}
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)c->p[i] << (8 * i);
	c->p += bytes;
	return v;
}

static void cur_skip(gguf_cursor *c, uint64_t n)
{
	if ((uint64_t)(c->end - c->p) < n) {
		c->bad = 1;
		return;
	}
	c->p += n;
}

static void cur_skip_value(gguf_cursor *c, uint32_t type, const char *key, size_t klen)
{
	static const int sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	if (type == 8) {
		cur_skip(c, cur_uint(c, 8));
	} else if (type == 9) {
		const uint32_t et = (uint32_t)cur_uint(c, 4);
		const uint64_t n = cur_uint(c, 8);
		for (uint64_t i = 0; i < n && !c->bad; i++)
			cur_skip_value(c, et, "", 0);
	} else if (type < 13) {
		if (klen == 17 && memcmp(key, "general.alignment", 17) == 0 && type == 4)
			c->align = cur_uint(c, 4);
		else
			cur_skip(c, (uint64_t)sizes[type]);
	} else {
		c->bad = 1;
	}
}

static void gguf_close(gguf_file *f)
{
	free(f->data);
	free(f->tensors);
	memset(f, 0, sizeof(*f));
}

/* 0 on success, -1 when the file is missing or malformed. */
static int gguf_load(gguf_file *f, const char *path)
{
	memset(f, 0, sizeof(*f));
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return -1;
	if (fseek(fp, 0, SEEK_END) != 0)
		goto fail;
	const long size = ftell(fp);
	if (size < 24 || fseek(fp, 0, SEEK_SET) != 0)
		goto fail;
	f->size = (size_t)size;
	f->data = malloc(f->size);
	if (!f->data || fread(f->data, 1, f->size, fp) != f->size)
		goto fail;
	fclose(fp);
	fp = NULL;

	gguf_cursor c = {f->data, f->data + f->size, 0, 32};
	if (cur_uint(&c, 4) != 0x46554747u) /* "GGUF" */
		goto fail;
	cur_uint(&c, 4); /* version */
	f->n_tensors = cur_uint(&c, 8);
	const uint64_t n_kv = cur_uint(&c, 8);
	for (uint64_t i = 0; i < n_kv && !c.bad; i++) {
		const uint64_t klen = cur_uint(&c, 8);
		const char *key = (const char *)c.p;
		cur_skip(&c, klen);
		const uint32_t type = (uint32_t)cur_uint(&c, 4);
		if (!c.bad)
			cur_skip_value(&c, type, key, (size_t)klen);
	}
	if (c.bad || f->n_tensors > 100000)
		goto fail;
	f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
	if (!f->tensors)
		goto fail;
	for (uint64_t i = 0; i < f->n_tensors && !c.bad; i++) {
		gguf_tensor *t = &f->tensors[i];
		const uint64_t nlen = cur_uint(&c, 8);
		if (nlen >= sizeof(t->name) || (uint64_t)(c.end - c.p) < nlen)
			goto fail;
		memcpy(t->name, c.p, nlen);
		cur_skip(&c, nlen);
		const uint32_t nd = (uint32_t)cur_uint(&c, 4);
		t->nelem = 1;
		for (uint32_t d = 0; d < nd && d < 8; d++)
			t->nelem *= cur_uint(&c, 8);
		t->type = (uint32_t)cur_uint(&c, 4);
		t->offset = cur_uint(&c, 8);
	}
	if (c.bad)
		goto fail;
	if (c.align == 0)
		goto fail;
	const uint64_t base = ((uint64_t)(c.p - f->data) + c.align - 1) / c.align * c.align;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		f->tensors[i].offset += base;
		if (f->tensors[i].offset > f->size)
			goto fail;
	}
	return 0;
fail:
	if (fp)
		fclose(fp);
	gguf_close(f);
	return -1;
}

static const gguf_tensor *gguf_find(const gguf_file *f, const char *name)
{
	for (uint64_t i = 0; i < f->n_tensors; i++)
		if (strcmp(f->tensors[i].name, name) == 0)
			return &f->tensors[i];
	return NULL;
}

static const char *fixtures_dir(void)
{
	const char *env = getenv("HERD_FIXTURES");
	if (env && *env)
		return env;
#ifdef HERD_FIXTURES
	return HERD_FIXTURES;
#else
	return "../shared/fixtures";
#endif
}

static void test_llama_cpp_fixtures(void **state)
{
	(void)state;
	static const char *const files[] = {"F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"};
	char path[4096];
	gguf_file src, dst;
	uint8_t *buf = NULL;
	int n_checked = 0;

	snprintf(path, sizeof(path), "%s/mini-F32.gguf", fixtures_dir());
	if (gguf_load(&src, path) != 0) {
		print_message("no llama.cpp fixtures at %s: skipped\n", fixtures_dir());
		skip();
	}
	for (size_t fi = 0; fi < sizeof(files) / sizeof(files[0]); fi++) {
		snprintf(path, sizeof(path), "%s/mini-%s.gguf", fixtures_dir(), files[fi]);
		if (gguf_load(&dst, path) != 0)
			continue;
		for (uint64_t i = 0; i < dst.n_tensors; i++) {
			const gguf_tensor *t = &dst.tensors[i];
			const type_case *tc = case_of((kern_type)t->type);
			const gguf_tensor *s = gguf_find(&src, t->name);
			if (!tc || t->type == KERN_TYPE_F32 || !s || s->type != KERN_TYPE_F32 ||
			    s->nelem != t->nelem)
				continue;
			const size_t bytes = kern_row_size((int)t->type, (int64_t)t->nelem);
			assert_true(bytes > 0 && t->offset + bytes <= dst.size);
			assert_true(s->offset + t->nelem * 4 <= src.size);
			buf = malloc(bytes);
			assert_non_null(buf);
			/* the F32 data is 32-byte aligned in the file: a float view is fine */
			tc->quant((const float *)(const void *)(src.data + s->offset), buf, (int64_t)t->nelem);
			if (memcmp(buf, dst.data + t->offset, bytes) != 0) {
				size_t at = 0;
				while (buf[at] == dst.data[t->offset + at])
					at++;
				fail_msg("%s: %s differs from llama.cpp at byte %zu of %zu",
					 files[fi], t->name, at, bytes);
			}
			free(buf);
			buf = NULL;
			n_checked++;
		}
		gguf_close(&dst);
	}
	gguf_close(&src);
	print_message("%d tensors bit-identical to llama.cpp's\n", n_checked);
	assert_true(n_checked > 0);
}

/* ------------------------------------------------------------------ dispatch */

static void test_ops_init(void **state)
{
	(void)state;
	const kern_isa best = kern_isa_detect();
	for (int isa = KERN_ISA_REF; isa <= KERN_ISA_AVX512; isa++) {
		kern_ops ops;
		memset(&ops, 0, sizeof(ops));
		kern_ops_init_legacy(&ops, (kern_isa)isa);
		for (size_t k = 0; k < N_CASES; k++) {
			const type_case *tc = &cases[k];
			const kern_isa eff = (kern_isa)isa > best ? best : (kern_isa)isa;
			assert_ptr_equal(ops.to_float[tc->type], tc->dequant);
			assert_non_null(ops.from_float[tc->type]);
			assert_non_null(ops.vec_dot[tc->type]);
			/* the best variant at or below the (clamped) isa */
			kern_vec_dot_fn want_dot = tc->dot_ref;
			kern_from_float_fn want_q = tc->quant;
			for (int v = 1; v <= (int)eff; v++) {
				if (tc->dot_simd[v])
					want_dot = tc->dot_simd[v];
				if (tc->quant_simd[v])
					want_q = tc->quant_simd[v];
			}
			assert_ptr_equal(ops.vec_dot[tc->type], want_dot);
			assert_ptr_equal(ops.from_float[tc->type], want_q);
			const kern_type_traits *tt = kern_type_info(tc->type);
			assert_non_null(tt);
			assert_int_equal(tt->vec_dot_type, tc->dot_type);
		}
		/* other families' slots are left alone */
		assert_null(ops.vec_dot[KERN_TYPE_Q4_K]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_blocks),
		cmocka_unit_test_setup_teardown(test_roundtrip, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_ref_dot_vs_float, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_simd_dots_avx2, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_simd_dots_avx512, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_simd_quant_avx2, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_simd_quant_avx512, scratch_setup, scratch_teardown),
		cmocka_unit_test(test_ops_init),
		cmocka_unit_test(test_llama_cpp_fixtures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
