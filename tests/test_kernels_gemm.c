/* Row-interleaved layouts and their GEMMs: repack round trip; reference GEMM
 * against the plain types' reference dot products; every SIMD variant
 * against the reference at awkward sizes; SIMD activation preparation
 * bit-identical to the reference. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/gemm.h"
#include "kernels/kernels.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const kern_type plain_types[] = {KERN_TYPE_Q4_0, KERN_TYPE_Q8_0, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K};
#define N_PLAIN (sizeof(plain_types) / sizeof(plain_types[0]))

static void *make_matrix(const kern_ops *ops, kern_type t, int64_t rows, int64_t K)
{
	float *f = malloc(sizeof(float) * rows * K);
	void *q = malloc(kern_row_size(t, K) * rows);
	assert_non_null(f);
	assert_non_null(q);
	for (int64_t i = 0; i < rows * K; i++)
		f[i] = frand() * (i % 97 == 0 ? 4.0f : 1.0f);
	ops->from_float[t](f, q, rows * K);
	free(f);
	return q;
}

static void test_repack_round_trip(void **state)
{
	(void)state;
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	for (size_t ti = 0; ti < N_PLAIN; ti++) {
		const kern_type t = plain_types[ti];
		const int64_t rows = 48, K = kern_type_info(t)->blck_size == 256 ? 512 : 96;
		const size_t bytes = kern_row_size(t, K) * rows;
		void *plain = make_matrix(&ops, t, rows, K);
		void *r16 = malloc(kern_row_size(kern_repack_type(t), K) * rows), *back = malloc(bytes);
		assert_int_equal(kern_repack(t, plain, rows, K, r16), 0);
		assert_int_equal(kern_unpack_r16(kern_repack_type(t), r16, rows, K, back), 0);
		assert_memory_equal(plain, back, bytes);
		assert_memory_not_equal(plain, r16, bytes);
		if (t == KERN_TYPE_Q4_K) /* scales stored unpacked */
			assert_int_equal(kern_row_size(KERN_TYPE_Q4_K_R16, K), K / 256 * 156);
		if (t == KERN_TYPE_Q6_K) /* quants stored unpacked, one byte each */
			assert_int_equal(kern_row_size(KERN_TYPE_Q6_K_R16, K), K / 256 * 276);
		assert_int_equal(kern_r16_base_type(kern_repack_type(t)), t);
		assert_true(kern_type_is_r16(kern_repack_type(t)));
		assert_int_not_equal(kern_repack(t, plain, rows - 1, K, r16), 0); /* not a multiple of 16 */
		free(plain);
		free(r16);
		free(back);
	}
	assert_int_equal(kern_repack_type(KERN_TYPE_Q5_K), -1);
	assert_false(kern_type_is_r16(KERN_TYPE_Q6_K));
	/* the AVX2 policy interleaves the types AVX2 has a GEMM for */
	assert_int_equal(kern_repack_type_at(KERN_TYPE_Q6_K, KERN_REPACK_AVX2), KERN_TYPE_Q6_K_R16);
	assert_int_equal(kern_repack_type_at(KERN_TYPE_Q4_K, KERN_REPACK_AVX2), -1);
	assert_int_equal(kern_row_size(KERN_TYPE_Q4_0_R16, 64), kern_row_size(KERN_TYPE_Q4_0, 64));
}

/* Runs the GEMM of ops over a whole matrix: y[b][r]. */
static void gemm_all(const kern_ops *ops, kern_type r16, const void *w, int64_t rows, int64_t K,
		     const float *x, int n_b, float *y)
{
	const size_t stride = kern_act_stride(r16, K);
	void *act = aligned_alloc(64, stride * n_b);
	assert_non_null(act);
	ops->act[r16](x, K, n_b, act);
	const size_t group = kern_row_size(r16, K) * KERN_R;
	for (int64_t g = 0; g < rows / KERN_R; g++)
		ops->gemm[r16](K, (const char *)w + g * group, act, stride, n_b, y + g * KERN_R, rows);
	free(act);
}

static void check_gemm(kern_isa isa)
{
	kern_ops ref, simd;
	kern_ops_init(&ref, KERN_ISA_REF);
	kern_ops_init(&simd, isa);
	const int64_t Ks[] = {32, 96, 2048}, Ks_k[] = {256, 768, 2048};
	const int nbs[] = {1, 3, 4, 5, 7, 16, 33};
	for (size_t ti = 0; ti < N_PLAIN; ti++) {
		const kern_type t = plain_types[ti];
		const kern_type r16 = (kern_type)kern_repack_type(t);
		for (size_t ki = 0; ki < 3; ki++) {
			const int64_t K = kern_type_info(t)->blck_size == 256 ? Ks_k[ki] : Ks[ki], rows = 32;
			void *plain = make_matrix(&ref, t, rows, K);
			void *w = malloc(kern_row_size(r16, K) * rows);
			kern_repack(t, plain, rows, K, w);
			for (size_t bi = 0; bi < sizeof(nbs) / sizeof(nbs[0]); bi++) {
				const int n_b = nbs[bi];
				float *x = malloc(sizeof(float) * K * n_b);
				float *y_ref = malloc(sizeof(float) * rows * n_b);
				float *y_simd = malloc(sizeof(float) * rows * n_b);
				for (int64_t i = 0; i < K * n_b; i++)
					x[i] = frand();
				gemm_all(&ref, r16, w, rows, K, x, n_b, y_ref);
				gemm_all(&simd, r16, w, rows, K, x, n_b, y_simd);
				/* reference GEMM == plain reference dot of the same quantized data */
				const kern_type vdt = kern_type_info(t)->vec_dot_type;
				void *xq = malloc(kern_row_size(vdt, K));
				for (int b = 0; b < n_b; b++) {
					ref.from_float[vdt](x + b * K, xq, K);
					for (int64_t r = 0; r < rows; r++) {
						float d;
						ref.vec_dot[t]((int)K, &d, (const char *)plain + r * kern_row_size(t, K), xq);
						const float g = y_ref[b * rows + r], s = y_simd[b * rows + r];
						const float tol = 1e-4f * (1.0f + fabsf(d)) * sqrtf((float)K / 32);
						if (fabsf(g - d) > tol || fabsf(s - g) > tol)
							fail_msg("%s K=%ld n_b=%d b=%d r=%ld: dot %g, gemm ref %g, %s %g",
								 kern_type_name(r16), (long)K, n_b, b, (long)r, d, g,
								 kern_isa_name(isa), s);
					}
				}
				/* column b's result does not depend on how many columns ran with it */
				if (n_b > 1) {
					float *y1 = malloc(sizeof(float) * rows);
					gemm_all(&simd, r16, w, rows, K, x + (n_b - 1) * K, 1, y1);
					assert_memory_equal(y1, y_simd + (n_b - 1) * rows, sizeof(float) * rows);
					free(y1);
				}
				free(xq);
				free(x);
				free(y_ref);
				free(y_simd);
			}
			free(plain);
			free(w);
		}
	}
}

static void test_gemm_variants(void **state)
{
	(void)state;
	check_gemm(KERN_ISA_REF);
	if (kern_isa_detect() >= KERN_ISA_AVX2)
		check_gemm(KERN_ISA_AVX2);
	if (kern_isa_detect() >= KERN_ISA_AVX512)
		check_gemm(KERN_ISA_AVX512);
}

/* The SIMD activation rows of isa are byte-identical to the reference's. */
static void check_act(kern_isa isa)
{
	kern_ops ref, simd;
	kern_ops_init(&ref, KERN_ISA_REF);
	kern_ops_init(&simd, isa);
	const int64_t K = 256;
	const int n_b = 5;
	float x[256 * 5];
	for (int i = 0; i < K * n_b; i++)
		x[i] = frand() * (i % 7 ? 1.0f : 100.0f);
	x[3] = 0.5f; /* ties and zero blocks */
	memset(x + 64, 0, sizeof(float) * 32);
	for (int t = KERN_TYPE_Q4_0_R16; t <= KERN_TYPE_Q6_K_R16; t++) {
		const size_t bytes = kern_act_stride(t, K) * n_b;
		char *a = calloc(1, bytes), *b = calloc(1, bytes);
		ref.act[t](x, K, n_b, a);
		simd.act[t](x, K, n_b, b);
		assert_memory_equal(a, b, bytes);
		free(a);
		free(b);
	}
}

static void test_act_simd_identical(void **state)
{
	(void)state;
	if (kern_isa_detect() < KERN_ISA_AVX2)
		skip();
	check_act(KERN_ISA_AVX2);
	if (kern_isa_detect() >= KERN_ISA_AVX512)
		check_act(KERN_ISA_AVX512);
}

/* One ISA's GEMMs and activation rows (argv[1]: avx2 or avx512), so each
 * SIMD path is a test of its own; the SIMD GEMMs of the types that have one
 * are that ISA's, not a fallback. */
static kern_isa g_isa;

static void test_gemm_isa(void **state)
{
	(void)state;
	kern_ops ref, simd;
	kern_ops_init(&ref, KERN_ISA_REF);
	kern_ops_init(&simd, g_isa);
	assert_ptr_not_equal(simd.gemm[KERN_TYPE_Q4_0_R16], ref.gemm[KERN_TYPE_Q4_0_R16]);
	assert_ptr_not_equal(simd.gemm[KERN_TYPE_Q6_K_R16], ref.gemm[KERN_TYPE_Q6_K_R16]);
	check_gemm(g_isa);
	check_act(g_isa);
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		g_isa = strcmp(argv[1], "avx512") == 0 ? KERN_ISA_AVX512 : KERN_ISA_AVX2;
		if (kern_isa_detect() < g_isa) {
			fprintf(stderr, "this CPU lacks %s: skipped\n", argv[1]);
			return 77;
		}
		const struct CMUnitTest one[] = {cmocka_unit_test(test_gemm_isa)};
		return cmocka_run_group_tests(one, NULL, NULL);
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_repack_round_trip),
		cmocka_unit_test(test_gemm_variants),
		cmocka_unit_test(test_act_simd_identical),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
