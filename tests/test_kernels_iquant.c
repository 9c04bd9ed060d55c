/* Tests of the i-quant types (IQ4_NL IQ4_XS IQ3_S IQ3_XXS IQ2_S IQ2_XS
 * IQ2_XXS IQ1_S IQ1_M).
 *
 * With no argument (the reference): dequantization of bytes that llama.cpp's
 * ggml quantized, against ggml's own dequantization of them, bit for bit
 * (tests/fixtures/iq_dequant.bin, made outside the project: see
 * tests/fixtures/README.md); IQ4_NL/IQ4_XS quantization against ggml's bytes;
 * traits; reference dots against float dots of the dequantized rows; the
 * dispatch table.
 * With "avx2" or "avx512": every dot of that ISA against the reference at
 * awkward block counts, on ggml's blocks and on random bytes; exits 77 when
 * the CPU lacks the ISA. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/fp16.h"
#include "kernels/iquant.h"
#include "kernels/kquant.h"
#include "kernels/legacy.h"

#ifndef HERD_TEST_DATA
#define HERD_TEST_DATA "tests/fixtures"
#endif

#define MAX_BLK 257 /* blocks (of 256, or of 32 for IQ4_NL) per row at most */
#define MAX_N (MAX_BLK * 256)

static const int awkward[] = {1, 3, 7, 31, 33, 257};

static const kern_type iq_types[] = {
	KERN_TYPE_IQ4_NL, KERN_TYPE_IQ4_XS, KERN_TYPE_IQ3_S, KERN_TYPE_IQ3_XXS, KERN_TYPE_IQ2_S,
	KERN_TYPE_IQ2_XS, KERN_TYPE_IQ2_XXS, KERN_TYPE_IQ1_S, KERN_TYPE_IQ1_M,
};
#define N_IQ (sizeof iq_types / sizeof iq_types[0])

static kern_isa g_isa; /* the ISA under test (argv[1]) */

/* ------------------------------------------------------------------ rng */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static float rng_sym(uint64_t *s) /* [-1, 1) */
{
	return (float)(rng_next(s) >> 40) / (float)(1u << 23) - 1.0f;
}

static void fill_gauss(uint64_t *s, float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = (rng_sym(s) + rng_sym(s) + rng_sym(s) + rng_sym(s)) * 0.866f *
		       ((i / 32) % 5 == 2 ? 6.0f : 1.0f);
}

/* nblk random blocks of type t, with a block scale in [2^-8, 2^-2]. */
static void random_blocks(uint64_t *s, kern_type t, uint8_t *q, int nblk)
{
	const kern_iq_desc *ds = kern_iq_desc_of(t);
	for (size_t i = 0; i < (size_t)nblk * ds->type_size; i++)
		q[i] = (uint8_t)rng_next(s);
	for (int b = 0; b < nblk; b++) {
		uint8_t *blk = q + (size_t)b * ds->type_size;
		const float d = ldexpf(1.0f + 0.5f * rng_sym(s), -(int)(rng_next(s) % 7) - 2);
		const uint16_t h = kern_fp32_to_fp16(d);
		if (t == KERN_TYPE_IQ1_M) { /* the scale's nibbles top the 4 scale words */
			uint8_t *sc = ((kern_block_iq1_m *)blk)->scales;
			for (int k = 0; k < 4; k++)
				sc[2 * k + 1] = (uint8_t)((sc[2 * k + 1] & 0x0f) | (((h >> (4 * k)) & 0xf) << 4));
		} else {
			memcpy(blk, &h, 2);
		}
	}
}

/* ------------------------------------------------------- ggml fixture */

typedef struct iq_ref {
	uint32_t type, n, nbytes;
	const float *x;     /* input ggml quantized */
	const uint8_t *q;   /* ggml's bytes */
	const float *y;     /* ggml's dequantization */
} iq_ref;

static uint8_t *g_fix;
static iq_ref g_refs[N_IQ];
static int g_nrefs;

static void load_fixture(void)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/iq_dequant.bin", HERD_TEST_DATA);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	const long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	g_fix = malloc((size_t)size);
	assert_non_null(g_fix);
	assert_int_equal(fread(g_fix, 1, (size_t)size, f), (size_t)size);
	fclose(f);
	assert_memory_equal(g_fix, "HIQD", 4);
	uint32_t nt;
	memcpy(&nt, g_fix + 4, 4);
	assert_int_equal(nt, N_IQ);
	size_t off = 8;
	for (uint32_t k = 0; k < nt; k++) {
		iq_ref *r = &g_refs[k];
		assert_true(off + 12 <= (size_t)size);
		memcpy(&r->type, g_fix + off, 4);
		memcpy(&r->n, g_fix + off + 4, 4);
		memcpy(&r->nbytes, g_fix + off + 8, 4);
		off += 12;
		assert_true(off + 8ull * r->n + r->nbytes <= (size_t)size);
		r->x = (const float *)(g_fix + off);
		r->q = g_fix + off + 4ull * r->n;
		r->y = (const float *)(g_fix + off + 4ull * r->n + r->nbytes);
		off += 8ull * r->n + r->nbytes;
	}
	assert_int_equal(off, (size_t)size);
	g_nrefs = (int)nt;
}

/* Every type's dequantization of ggml's bytes equals ggml's, exactly. */
static void test_dequant_vs_ggml(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	float *y = malloc(MAX_N * sizeof(float));
	assert_non_null(y);
	for (int k = 0; k < g_nrefs; k++) {
		const iq_ref *r = &g_refs[k];
		assert_non_null(ops.to_float[r->type]);
		assert_int_equal(kern_row_size((int)r->type, r->n), r->nbytes);
		ops.to_float[r->type](r->q, y, r->n);
		int bad = 0;
		for (uint32_t i = 0; i < r->n; i++)
			if (!(y[i] == r->y[i]) && bad++ < 4)
				print_error("%s[%u]: %.9g, ggml %.9g\n", kern_type_name((int)r->type), i, y[i],
					    r->y[i]);
		if (bad)
			fail_msg("%s: %d of %u values differ from ggml", kern_type_name((int)r->type), bad, r->n);
	}
	free(y);
}

/* IQ4_NL/IQ4_XS quantization reproduces ggml's bytes (no importance matrix). */
static void test_quant_vs_ggml(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	uint8_t *q = malloc(MAX_N);
	assert_non_null(q);
	for (int k = 0; k < g_nrefs; k++) {
		const iq_ref *r = &g_refs[k];
		if (r->type != KERN_TYPE_IQ4_NL && r->type != KERN_TYPE_IQ4_XS)
			continue;
		assert_non_null(ops.from_float[r->type]);
		ops.from_float[r->type](r->x, q, r->n);
		size_t diff = 0;
		for (size_t i = 0; i < r->nbytes; i++)
			diff += q[i] != r->q[i];
		if (diff)
			fail_msg("%s: %zu of %u bytes differ from ggml's quantization", kern_type_name((int)r->type),
				 diff, r->nbytes);
	}
	free(q);
}

static void test_traits(void **state)
{
	(void)state;
	static const struct {
		kern_type t;
		const char *name;
		int blck;
		size_t bytes;
	} want[] = {
		{KERN_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66}, {KERN_TYPE_IQ2_XS, "IQ2_XS", 256, 74},
		{KERN_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98}, {KERN_TYPE_IQ1_S, "IQ1_S", 256, 50},
		{KERN_TYPE_IQ4_NL, "IQ4_NL", 32, 18},    {KERN_TYPE_IQ3_S, "IQ3_S", 256, 110},
		{KERN_TYPE_IQ2_S, "IQ2_S", 256, 82},     {KERN_TYPE_IQ4_XS, "IQ4_XS", 256, 136},
		{KERN_TYPE_IQ1_M, "IQ1_M", 256, 56},
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const kern_type_traits *tr = kern_type_info(want[i].t);
		assert_non_null(tr);
		assert_string_equal(tr->name, want[i].name);
		assert_int_equal(tr->blck_size, want[i].blck);
		assert_int_equal(tr->type_size, want[i].bytes);
		assert_true(tr->is_quantized);
		assert_int_equal(tr->vec_dot_type, want[i].t == KERN_TYPE_IQ4_NL ? KERN_TYPE_Q8_0 : KERN_TYPE_Q8_K);
		assert_int_equal(kern_row_size(want[i].t, 288), want[i].blck == 32 ? 9 * 18 : 0);
	}
	/* ggml's I8 I16 I32 I64 F64 (24..28) are no weight types of herd */
	for (int t = 24; t < 29; t++)
		assert_null(kern_type_info(t));
}

/* ---------------------------------------------------------------- dots */

typedef struct dot_case {
	kern_type t;
	int nblk, n;
	uint8_t *wq;
	void *aq;
	float *wd, *ad;
} dot_case;

/* Weights (ggml's blocks repeated, or random) and activations of case c. */
static void make_case(dot_case *c, uint64_t *s, int from_ggml)
{
	const kern_iq_desc *ds = kern_iq_desc_of(c->t);
	const iq_ref *r = NULL;
	for (int k = 0; k < g_nrefs; k++)
		if (g_refs[k].type == c->t)
			r = &g_refs[k];
	assert_non_null(r);
	if (from_ggml) {
		for (int b = 0; b < c->nblk; b++)
			memcpy(c->wq + (size_t)b * ds->type_size,
			       r->q + (size_t)(b % (r->nbytes / ds->type_size)) * ds->type_size, ds->type_size);
	} else {
		random_blocks(s, c->t, c->wq, c->nblk);
	}
	fill_gauss(s, c->ad, c->n);
	if (c->t == KERN_TYPE_IQ4_NL) {
		kern_quant_q8_0_ref(c->ad, c->aq, c->n);
		kern_dequant_q8_0_ref(c->aq, c->ad, c->n);
	} else {
		kern_quant_q8_k_ref(c->ad, c->aq, c->n);
		kern_dequant_q8_k_ref(c->aq, c->ad, c->n);
	}
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	ops.to_float[c->t](c->wq, c->wd, c->n);
}

static void alloc_case(dot_case *c)
{
	c->wq = malloc(MAX_BLK * 136);
	c->aq = malloc(MAX_BLK * sizeof(kern_block_q8_K));
	c->wd = malloc(MAX_N * sizeof(float));
	c->ad = malloc(MAX_N * sizeof(float));
	assert_true(c->wq && c->aq && c->wd && c->ad);
}

static void free_case(dot_case *c)
{
	free(c->wq);
	free(c->aq);
	free(c->wd);
	free(c->ad);
}

/* Float dot of the dequantized rows and the sum of |terms|. */
static double float_dot(const dot_case *c, double *mag)
{
	double d = 0, m = 0;
	for (int i = 0; i < c->n; i++) {
		d += (double)c->wd[i] * c->ad[i];
		m += fabs((double)c->wd[i] * c->ad[i]);
	}
	*mag = m;
	return d;
}

/* For every type, block count and data source: cmp(case, dot at g_isa). */
static void each_case(void (*cmp)(const dot_case *c, kern_vec_dot_fn dot, kern_vec_dot_fn ref))
{
	kern_ops ops, ref;
	kern_ops_init(&ops, g_isa);
	kern_ops_init(&ref, KERN_ISA_REF);
	dot_case c;
	alloc_case(&c);
	uint64_t s = 4242;
	for (size_t k = 0; k < N_IQ; k++) {
		c.t = iq_types[k];
		if (g_isa != KERN_ISA_REF && ops.vec_dot[c.t] == ref.vec_dot[c.t])
			fail_msg("%s has no %s dot", kern_type_name(c.t), kern_isa_name(g_isa));
		for (size_t a = 0; a < sizeof awkward / sizeof awkward[0]; a++) {
			c.nblk = awkward[a];
			c.n = c.nblk * kern_iq_desc_of(c.t)->blck_size;
			for (int src = 0; src < 2; src++) {
				make_case(&c, &s, src);
				cmp(&c, ops.vec_dot[c.t], ref.vec_dot[c.t]);
			}
		}
	}
	free_case(&c);
}

static void cmp_ref_float(const dot_case *c, kern_vec_dot_fn dot, kern_vec_dot_fn ref)
{
	(void)ref;
	double mag;
	const double want = float_dot(c, &mag);
	float got;
	dot(c->n, &got, c->wq, c->aq);
	if (!(fabs(got - want) <= 2e-5 * mag + 1e-20))
		fail_msg("%s ref dot, %d blocks: %.9g, float dot %.9g (mag %g)", kern_type_name(c->t), c->nblk, got,
			 want, mag);
}

static void cmp_simd_ref(const dot_case *c, kern_vec_dot_fn dot, kern_vec_dot_fn ref)
{
	double mag;
	(void)float_dot(c, &mag);
	float want, got = NAN;
	ref(c->n, &want, c->wq, c->aq);
	dot(c->n, &got, c->wq, c->aq);
	if (!(fabs((double)got - want) <= 1e-5 * mag + 1e-20))
		fail_msg("%s %s dot, %d blocks: %.9g, ref %.9g (mag %g)", kern_type_name(c->t), kern_isa_name(g_isa),
			 c->nblk, got, want, mag);
}

/* vec_dot4 at g_isa against four reference dots, rows ys bytes apart. */
static void test_dots4(void **state)
{
	(void)state;
	kern_ops ops, ref;
	kern_ops_init(&ops, g_isa);
	kern_ops_init(&ref, KERN_ISA_REF);
	dot_case c;
	alloc_case(&c);
	const size_t ys = MAX_BLK * sizeof(kern_block_q8_K) + 64;
	char *a4 = malloc(4 * ys);
	assert_non_null(a4);
	uint64_t s = 77;
	for (size_t k = 0; k < N_IQ; k++) {
		c.t = iq_types[k];
		assert_non_null(ops.vec_dot4[c.t]);
		for (size_t a = 0; a < sizeof awkward / sizeof awkward[0]; a += 2) {
			c.nblk = awkward[a];
			c.n = c.nblk * kern_iq_desc_of(c.t)->blck_size;
			for (int row = 0; row < 4; row++) { /* new activations per row (the weights: the last made) */
				make_case(&c, &s, row == 0);
				memcpy(a4 + row * ys, c.aq, ys - 64);
			}
			float got[8] = {0}, want[4];
			ops.vec_dot4[c.t](c.n, got, 2, c.wq, a4, ys);
			for (int row = 0; row < 4; row++) {
				ref.vec_dot[c.t](c.n, &want[row], c.wq, a4 + row * ys);
				if (!(fabs((double)got[2 * row] - want[row]) <= 1e-5 * (fabs(want[row]) + c.n)))
					fail_msg("%s %s dot4 row %d, %d blocks: %.9g, ref %.9g", kern_type_name(c.t),
						 kern_isa_name(g_isa), row, c.nblk, got[2 * row], want[row]);
			}
		}
	}
	free(a4);
	free_case(&c);
}

static void test_ref_dots(void **state)
{
	(void)state;
	each_case(cmp_ref_float);
}

static void test_simd_dots(void **state)
{
	(void)state;
	each_case(cmp_simd_ref);
}

/* IQ4 quantization error on gaussian data, and exact zeros for zeros. */
static void test_quant_error(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	const int n = 16 * 256;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	uint8_t *q = malloc(n);
	assert_true(x && y && q);
	const kern_type ts[2] = {KERN_TYPE_IQ4_NL, KERN_TYPE_IQ4_XS};
	for (int k = 0; k < 2; k++) {
		uint64_t s = 7;
		fill_gauss(&s, x, n);
		ops.from_float[ts[k]](x, q, n);
		ops.to_float[ts[k]](q, y, n);
		double e = 0, p = 0;
		for (int i = 0; i < n; i++) {
			e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
			p += (double)x[i] * x[i];
		}
		print_message("  %s rel rmse %.4f\n", kern_type_name(ts[k]), sqrt(e / p));
		assert_true(sqrt(e / p) < 0.12);
		memset(x, 0, 256 * sizeof(float));
		ops.from_float[ts[k]](x, q, 256);
		ops.to_float[ts[k]](q, y, 256);
		for (int i = 0; i < 256; i++)
			assert_true(y[i] == 0.0f);
	}
	free(x);
	free(y);
	free(q);
}

/* IQ3_S: herd's own search, an error no worse than 1.1 x ggml's on the
 * same input (ggml's bytes and input are in the fixture), deterministic,
 * and zeros for zeros. */
static double rel_err(const float *x, const float *y, int n)
{
	double e = 0, p = 0;
	for (int i = 0; i < n; i++) {
		e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
		p += (double)x[i] * x[i];
	}
	return sqrt(e / p);
}

static void test_quant_iq3_s(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	const iq_ref *r = NULL;
	for (int k = 0; k < g_nrefs; k++)
		if (g_refs[k].type == KERN_TYPE_IQ3_S)
			r = &g_refs[k];
	assert_non_null(r);
	assert_non_null(ops.from_float[KERN_TYPE_IQ3_S]);
	uint8_t *q = malloc(r->nbytes), *q2 = malloc(r->nbytes);
	float *y = malloc(r->n * sizeof(float));
	assert_true(q && q2 && y);
	ops.from_float[KERN_TYPE_IQ3_S](r->x, q, r->n);
	ops.from_float[KERN_TYPE_IQ3_S](r->x, q2, r->n);
	assert_memory_equal(q, q2, r->nbytes);
	ops.to_float[KERN_TYPE_IQ3_S](q, y, r->n);
	const double ours = rel_err(r->x, y, (int)r->n), ggml = rel_err(r->x, r->y, (int)r->n);
	print_message("  IQ3_S rel rmse %.4f (ggml %.4f)\n", ours, ggml);
	assert_true(ours <= 1.1 * ggml);
	float z[256] = {0};
	ops.from_float[KERN_TYPE_IQ3_S](z, q, 256);
	ops.to_float[KERN_TYPE_IQ3_S](q, y, 256);
	for (int i = 0; i < 256; i++)
		assert_true(y[i] == 0.0f);
	free(q);
	free(q2);
	free(y);
}

static void test_dispatch(void **state)
{
	(void)state;
	for (int isa = KERN_ISA_REF; isa <= (int)kern_isa_detect(); isa++) {
		kern_ops ops;
		memset(&ops, 0, sizeof ops);
		kern_ops_init_iquant(&ops, (kern_isa)isa);
		for (size_t k = 0; k < N_IQ; k++) {
			assert_non_null(ops.to_float[iq_types[k]]);
			assert_non_null(ops.vec_dot[iq_types[k]]);
		}
		assert_non_null(ops.from_float[KERN_TYPE_IQ4_NL]);
		assert_non_null(ops.from_float[KERN_TYPE_IQ4_XS]);
		assert_non_null(ops.from_float[KERN_TYPE_IQ3_S]);
		assert_null(ops.from_float[KERN_TYPE_IQ2_XXS]); /* needs an importance matrix */
		assert_null(ops.vec_dot[KERN_TYPE_Q4_0]); /* only its own types */
		const kern_vec_dot_fn want = isa == KERN_ISA_REF    ? kern_dot_iq4_xs_q8_k_ref
					     : isa == KERN_ISA_AVX2 ? kern_dot_iq4_xs_q8_k_avx2
								    : kern_dot_iq4_xs_q8_k_avx512;
		assert_ptr_equal(ops.vec_dot[KERN_TYPE_IQ4_XS], want);
	}
}

static int setup(void **state)
{
	(void)state;
	load_fixture();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	free(g_fix);
	return 0;
}

int main(int argc, char **argv)
{
	g_isa = KERN_ISA_REF;
	if (argc > 1) {
		g_isa = strcmp(argv[1], "avx512") == 0 ? KERN_ISA_AVX512 : KERN_ISA_AVX2;
		if (kern_isa_detect() < g_isa) {
			fprintf(stderr, "this CPU lacks %s: skipped\n", argv[1]);
			return 77;
		}
		const struct CMUnitTest simd[] = {cmocka_unit_test(test_simd_dots), cmocka_unit_test(test_dots4)};
		return cmocka_run_group_tests(simd, setup, teardown);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_traits),
		cmocka_unit_test(test_dequant_vs_ggml),
		cmocka_unit_test(test_quant_vs_ggml),
		cmocka_unit_test(test_quant_error),
		cmocka_unit_test(test_quant_iq3_s),
		cmocka_unit_test(test_ref_dots),
		cmocka_unit_test(test_dots4),
		cmocka_unit_test(test_dispatch),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
