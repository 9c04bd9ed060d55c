/* Conformance with llama.cpp: for every mini-<TYPE>.gguf fixture, our
 * tokenization of the fixture prompt equals its .tokens and the mean KL
 * divergence of softmax(reference logits) against softmax(ours) is within
 * the bounds. The same for herd's own micro-<NAME>.gguf fixtures
 * (tests/fixtures: FFN 288, so llama-quantize's mixes hold IQ4_NL, and one
 * file with every i-quant type), whose .logits may hold only the first
 * positions. Exits 77 (skipped) when neither folder is there. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "herd/error.h"
#include "kernels/gemm.h"
#include "kernels/ops.h"
#include "model/llama.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif
#ifndef HERD_TEST_DATA
#define HERD_TEST_DATA "tests/fixtures"
#endif

static const char *PROMPT =
	"Once upon a time, a little robot named Pip found a shiny key under the old oak tree. "
	"It wondered what the key would open.";

static const char *fixture_dir(void)
{
	const char *d = getenv("HERD_FIXTURES");
	return d && *d ? d : HERD_FIXTURES;
}

static void *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = (size_t)n;
	return buf;
}

/* mode 0: best SIMD kernels, 1: scalar reference, 2: SIMD with matrices repacked
 * into the row-interleaved GEMM layouts, 3: an AVX2 machine's kernels and
 * repack policy (Q4_0 and Q6_K interleaved). */
static void check_file(const char *dir, const char *stem, const char *type, double bound, int mode,
		       kern_type kv)
{
	char path[1024], err[512] = "";
	snprintf(path, sizeof(path), "%s/%s-%s.gguf", dir, stem, type);
	llama_model *m = NULL;
	int rc = llama_model_load(&m, path, err, sizeof(err));
	if (rc)
		fail_msg("%s: %s", path, err);
	llama_ctx *c = NULL;
	if (mode >= 2)
		assert_int_equal(llama_model_repack(m, mode == 2 ? KERN_REPACK_ALL : KERN_REPACK_AVX2), 0);
	llama_ctx_opts o = {.n_threads = 0, .force_ref = mode == 1, .kv_type = kv,
			    .max_isa = mode == 3 ? KERN_ISA_AVX2 : 0};
	assert_int_equal(llama_ctx_create(&c, m, &o), 0);
	if (mode == 3)
		assert_int_equal(llama_ctx_isa(c), KERN_ISA_AVX2);

	size_t tsize, lsize;
	snprintf(path, sizeof(path), "%s/%s-%s.tokens", dir, stem, type);
	int32_t *ref_tok = read_file(path, &tsize);
	snprintf(path, sizeof(path), "%s/%s-%s.logits", dir, stem, type);
	float *ref_logits = read_file(path, &lsize);
	assert_non_null(ref_tok);
	assert_non_null(ref_logits);
	const int n_ref = (int)(tsize / 4), V = m->hp.n_vocab;
	const int rows = (int)(lsize / ((size_t)V * 4)); /* positions with reference logits */
	assert_int_equal(lsize, (size_t)rows * V * 4);
	assert_true(rows >= 1 && rows <= n_ref);

	int32_t ids[256];
	int n = tok_encode(m->vocab, PROMPT, strlen(PROMPT), TOK_ADD_BOS, ids, 256);
	assert_int_equal(n, n_ref);
	for (int i = 0; i < n; i++)
		if (ids[i] != ref_tok[i])
			fail_msg("%s: token %d is %d, llama.cpp has %d", type, i, ids[i], ref_tok[i]);

	float *logits = malloc(sizeof(float) * (size_t)n * V);
	assert_non_null(logits);
	llama_seq s;
	llama_seq_init(&s);
	assert_int_equal(llama_eval(c, &s, ids, n, 1, logits), 0);
	double sum = 0, worst = 0;
	int top_same = 0;
	for (int i = 0; i < rows; i++) {
		const float *r = ref_logits + (size_t)i * V, *o2 = logits + (size_t)i * V;
		for (int k = 0; k < V; k++)
			assert_true(isfinite(o2[k]));
		double kl = kern_kl_logits(r, o2, V);
		sum += kl;
		worst = kl > worst ? kl : worst;
		int ar = 0, ao = 0;
		for (int k = 1; k < V; k++) {
			ar = r[k] > r[ar] ? k : ar;
			ao = o2[k] > o2[ao] ? k : ao;
		}
		top_same += ar == ao;
	}
	const double mean = sum / rows;
	static const char *const mode_names[] = {"simd", "ref ", "gemm", "avx2"};
	printf("# %s-%-7s %s KV %-4s: mean KL %.3g (max %.3g, bound %.0e), same top token %d/%d\n", stem,
	       type, mode_names[mode], kern_type_name(kv), mean, worst, bound, top_same, rows);
	assert_true(mean <= bound);
	llama_seq_reset(c, &s);
	free(logits);
	free(ref_tok);
	free(ref_logits);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
}

static void check_type(const char *type, double bound, int mode)
{
	check_file(fixture_dir(), "mini", type, bound, mode, KERN_TYPE_F16);
}

static void check_micro(const char *type, double bound, int mode)
{
	check_file(HERD_TEST_DATA, "micro", type, bound, mode, KERN_TYPE_F16);
}

#define FIXTURE_TEST_IN(CHECK, N, T, B)                      \
	static void test_##N(void **state)                   \
	{                                                    \
		(void)state;                                 \
		CHECK(#T, B, 0);                             \
	}                                                    \
	static void test_##N##_ref(void **state)             \
	{                                                    \
		(void)state;                                 \
		CHECK(#T, B, 1);                             \
	}                                                    \
	static void test_##N##_gemm(void **state)            \
	{                                                    \
		(void)state;                                 \
		CHECK(#T, B, 2);                             \
	}                                                    \
	static void test_##N##_avx2(void **state)            \
	{                                                    \
		(void)state;                                 \
		if (kern_isa_detect() < KERN_ISA_AVX2)       \
			skip();                              \
		CHECK(#T, B, 3);                             \
	}
#define FIXTURE_TEST(T, B) FIXTURE_TEST_IN(check_type, T, T, B)

FIXTURE_TEST(F32, 1e-4)
FIXTURE_TEST(F16, 1e-4)
FIXTURE_TEST(BF16, 1e-4)
FIXTURE_TEST(Q8_0, 2e-3)
FIXTURE_TEST(Q4_0, 2e-3)
FIXTURE_TEST(Q4_1, 2e-3)
FIXTURE_TEST(Q5_0, 2e-3)
FIXTURE_TEST(Q5_1, 2e-3)
FIXTURE_TEST(Q2_K, 2e-3)
FIXTURE_TEST(Q3_K_M, 2e-3)
FIXTURE_TEST(Q4_K_M, 2e-3)
FIXTURE_TEST(Q5_K_M, 2e-3)
FIXTURE_TEST(Q6_K, 2e-3)
/* llama-quantize's Q2_K of the micro model (token_embd forced to Q2_K to
 * keep the file small): Q2_K Q3_K Q4_K, IQ4_NL for ffn_down's 288-wide rows */
FIXTURE_TEST_IN(check_micro, micro_Q2_K, Q2_K, 2e-3)
/* every i-quant type in one file, tensors from llama-quantize's files */
FIXTURE_TEST_IN(check_micro, micro_IQ_mix, IQ_mix, 2e-3)

/* Quantized KV pages against llama.cpp's f16-KV logits: the cache's
 * rounding on top of the weights' (kv_q8_0 / kv_q4_0 on both ISA paths). */
#define KV_TEST(T, KV, B)                                                            \
	static void test_##T##_kv_##KV(void **state)                                 \
	{                                                                            \
		(void)state;                                                         \
		check_file(fixture_dir(), "mini", #T, B, 0, KERN_TYPE_##KV);         \
		check_file(fixture_dir(), "mini", #T, B, 1, KERN_TYPE_##KV);         \
	}
KV_TEST(F32, Q8_0, 2e-3)
KV_TEST(F16, Q4_0, 5e-2)
KV_TEST(Q8_0, Q8_0, 3e-3)
KV_TEST(Q4_0, Q4_0, 5e-2)

#define T2(T)                                                                                       \
	cmocka_unit_test(test_##T), cmocka_unit_test(test_##T##_ref), cmocka_unit_test(test_##T##_gemm), \
		cmocka_unit_test(test_##T##_avx2)

int main(void)
{
	struct stat st;
	char probe[1024];
	snprintf(probe, sizeof(probe), "%s/mini-F32.gguf", fixture_dir());
	const int shared = stat(probe, &st) == 0;
	snprintf(probe, sizeof(probe), "%s/micro-IQ_mix.gguf", HERD_TEST_DATA);
	const int own = stat(probe, &st) == 0;
	if (!shared && !own) {
		fprintf(stderr, "fixtures not found at %s nor %s: skipped\n", fixture_dir(), HERD_TEST_DATA);
		return 77;
	}
	const struct CMUnitTest tests[] = {
		T2(F32), T2(F16), T2(BF16), T2(Q8_0), T2(Q4_0), T2(Q4_1), T2(Q5_0),
		T2(Q5_1), T2(Q2_K), T2(Q3_K_M), T2(Q4_K_M), T2(Q5_K_M), T2(Q6_K),
		cmocka_unit_test(test_F32_kv_Q8_0), cmocka_unit_test(test_F16_kv_Q4_0),
		cmocka_unit_test(test_Q8_0_kv_Q8_0), cmocka_unit_test(test_Q4_0_kv_Q4_0),
	};
	const struct CMUnitTest micro[] = {T2(micro_Q2_K), T2(micro_IQ_mix)};
	int rc = 0;
	if (shared)
		rc |= cmocka_run_group_tests_name("mini", tests, NULL, NULL);
	else
		fprintf(stderr, "fixtures not found at %s: mini files skipped\n", fixture_dir());
	if (own)
		rc |= cmocka_run_group_tests_name("micro", micro, NULL, NULL);
	return rc;
}
