/* The LLaMA engine on models the suite makes itself (herd mkmodel's "mini"
 * shape): batching does not change results, errors leave state untouched,
 * and bad model files are refused with messages that name the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "kernels/gemm.h"
#include "model/llama.h"
#include "model/mkmodel.h"

static char dir[256];

static const char *model_path(const char *type)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/mini-%s.gguf", dir, type);
	return path;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/herd-test-llama-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	const char *types[] = {"Q4_0", "Q8_0", "F16", "Q4_K_M"};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char err[256];
		mkmodel_opts o = {.shape = "mini", .ftype = types[i], .out_path = model_path(types[i]), .seed = 7};
		if (mkmodel_write(&o, err, sizeof(err))) {
			fprintf(stderr, "mkmodel %s: %s\n", types[i], err);
			return -1;
		}
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static llama_model *load(const char *type, int repack)
{
	llama_model *m = NULL;
	char err[256] = "";
	if (llama_model_load(&m, model_path(type), err, sizeof(err)))
		fail_msg("load %s: %s", type, err);
	if (repack)
		assert_int_equal(llama_model_repack(m, KERN_REPACK_ALL), 0);
	return m;
}

static int32_t argmax(const float *v, int n)
{
	int32_t best = 0;
	for (int i = 1; i < n; i++)
		best = v[i] > v[best] ? i : best;
	return best;
}

#define NSEQ 16
#define NGEN 6

/* Each of NSEQ sequences (prompts of different lengths) generates NGEN greedy
 * tokens alone, then all together in shared steps: the tokens must match. */
static void check_batch_invariance_kv(const char *type, int repack, kern_type kv)
{
	llama_model *m = load(type, repack);
	llama_ctx *c;
	llama_ctx_opts o = {.n_ctx = 128, .n_kv_pages = NSEQ * 8, .max_step_tokens = 512, .kv_type = kv};
	assert_int_equal(llama_ctx_create(&c, m, &o), 0);
	const int V = m->hp.n_vocab;
	int32_t prompts[NSEQ][24];
	int plen[NSEQ];
	for (int s = 0; s < NSEQ; s++) {
		plen[s] = 3 + (s * 5) % 20;
		prompts[s][0] = 1;
		for (int j = 1; j < plen[s]; j++)
			prompts[s][j] = 3 + (s * 131 + j * 71) % (V - 3);
	}
	int32_t alone[NSEQ][NGEN], together[NSEQ][NGEN];
	float *logits = malloc(sizeof(float) * V * NSEQ);
	assert_non_null(logits);
	for (int s = 0; s < NSEQ; s++) {
		llama_seq q;
		llama_seq_init(&q);
		assert_int_equal(llama_eval(c, &q, prompts[s], plen[s], 0, logits), 0);
		for (int g = 0; g < NGEN; g++) {
			int32_t t = alone[s][g] = argmax(logits, V);
			llama_batch_seq b = {&q, &t, 1, LLAMA_LOGITS_LAST, logits};
			assert_int_equal(llama_decode(c, &b, 1), 0);
		}
		llama_seq_reset(c, &q);
	}
	const int free_before = llama_ctx_free_pages(c);
	llama_seq seqs[NSEQ];
	llama_batch_seq b[NSEQ];
	for (int s = 0; s < NSEQ; s++) {
		llama_seq_init(&seqs[s]);
		b[s] = (llama_batch_seq){&seqs[s], prompts[s], plen[s], LLAMA_LOGITS_LAST, logits + (size_t)s * V};
	}
	assert_int_equal(llama_decode(c, b, NSEQ), 0); /* every prompt in one step */
	int32_t next[NSEQ];
	for (int g = 0; g < NGEN; g++) {
		for (int s = 0; s < NSEQ; s++) {
			next[s] = together[s][g] = argmax(logits + (size_t)s * V, V);
			b[s] = (llama_batch_seq){&seqs[s], &next[s], 1, LLAMA_LOGITS_LAST, logits + (size_t)s * V};
		}
		assert_int_equal(llama_decode(c, b, NSEQ), 0);
	}
	for (int s = 0; s < NSEQ; s++) {
		for (int g = 0; g < NGEN; g++)
			if (alone[s][g] != together[s][g])
				fail_msg("%s%s: sequence %d token %d: alone %d, in a batch of %d %d", type,
					 repack ? " (gemm)" : "", s, g, alone[s][g], NSEQ, together[s][g]);
		llama_seq_reset(c, &seqs[s]);
	}
	assert_int_equal(llama_ctx_free_pages(c), free_before);
	free(logits);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
}

static void check_batch_invariance(const char *type, int repack)
{
	check_batch_invariance_kv(type, repack, KERN_TYPE_F16);
}

static void test_batch_invariance(void **state)
{
	(void)state;
	check_batch_invariance_kv("Q4_0", 1, KERN_TYPE_Q8_0);
	check_batch_invariance_kv("Q8_0", 0, KERN_TYPE_Q4_0);
	check_batch_invariance("Q4_0", 1);
	check_batch_invariance("Q4_0", 0);
	check_batch_invariance("Q8_0", 1);
	check_batch_invariance("Q4_K_M", 0);
	check_batch_invariance("F16", 0);
}

/* A prompt evaluated in one step gives exactly the logits of feeding it one
 * token at a time. */
static void prefill_equals_stepwise(kern_type kv)
{
	llama_model *m = load("Q4_0", 1);
	llama_ctx *c;
	llama_ctx_opts o = {.kv_type = kv};
	assert_int_equal(llama_ctx_create(&c, m, &o), 0);
	assert_int_equal(llama_ctx_kv_type(c), kv);
	const int V = m->hp.n_vocab, n = 37;
	int32_t toks[37];
	for (int i = 0; i < n; i++)
		toks[i] = i == 0 ? 1 : 3 + (i * 977) % (V - 3);
	float *all = malloc(sizeof(float) * V * n), *one = malloc(sizeof(float) * V);
	llama_seq s;
	llama_seq_init(&s);
	assert_int_equal(llama_eval(c, &s, toks, n, 1, all), 0);
	assert_int_equal(s.n_past, n);
	llama_seq_reset(c, &s);
	for (int i = 0; i < n; i++) {
		llama_batch_seq b = {&s, &toks[i], 1, LLAMA_LOGITS_LAST, one};
		assert_int_equal(llama_decode(c, &b, 1), 0);
		assert_memory_equal(one, all + (size_t)i * V, sizeof(float) * V);
	}
	llama_seq_reset(c, &s);
	free(all);
	free(one);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
}

static void test_prefill_equals_stepwise(void **state)
{
	(void)state;
	prefill_equals_stepwise(KERN_TYPE_F16);
	prefill_equals_stepwise(KERN_TYPE_Q8_0);
	prefill_equals_stepwise(KERN_TYPE_Q4_0);
}

/* KV cache types: names, page sizes, and what a model's head size allows. */
static void test_kv_types(void **state)
{
	(void)state;
	assert_int_equal(llama_kv_type_parse("q8_0"), KERN_TYPE_Q8_0);
	assert_int_equal(llama_kv_type_parse("F16"), KERN_TYPE_F16);
	assert_int_equal(llama_kv_type_parse("Q4_0"), KERN_TYPE_Q4_0);
	assert_int_equal(llama_kv_type_parse("q4_1"), -1);
	assert_int_equal(llama_kv_type_parse(NULL), -1);
	llama_model *m = load("F16", 0);
	const llama_hparams *hp = &m->hp;
	const size_t f16 = llama_kv_page_bytes(hp, KERN_TYPE_F16);
	assert_int_equal(f16, (size_t)hp->n_layer * 2 * LLAMA_KV_PAGE * hp->head_dim * hp->n_head_kv * 2);
	assert_int_equal(llama_kv_page_bytes(hp, KERN_TYPE_Q8_0) * 64, f16 * 34);
	assert_int_equal(llama_kv_page_bytes(hp, KERN_TYPE_Q4_0) * 64, f16 * 18);
	assert_int_equal(llama_kv_page_bytes(hp, KERN_TYPE_Q4_1), 0);
	llama_ctx *c = NULL;
	llama_ctx_opts o = {.kv_type = KERN_TYPE_Q4_1};
	assert_int_equal(llama_ctx_create(&c, m, &o), HERD_E_INVAL);
	assert_null(c);
	/* a head size that is not whole blocks of 32 cannot be quantized */
	llama_hparams odd = *hp;
	odd.head_dim = 8;
	assert_true(llama_kv_type_fits(&odd, KERN_TYPE_F16));
	assert_false(llama_kv_type_fits(&odd, KERN_TYPE_Q8_0));
	assert_true(llama_kv_type_fits(hp, KERN_TYPE_Q4_0));
	llama_model_destroy(m);
}

static void test_decode_errors(void **state)
{
	(void)state;
	llama_model *m = load("Q8_0", 0);
	llama_ctx *c;
	llama_ctx_opts o = {.n_ctx = 40, .n_kv_pages = 3, .max_step_tokens = 32};
	assert_int_equal(llama_ctx_create(&c, m, &o), 0);
	const int V = m->hp.n_vocab;
	float *logits = malloc(sizeof(float) * V);
	llama_seq s, t;
	llama_seq_init(&s);
	llama_seq_init(&t);
	int32_t toks[40];
	for (int i = 0; i < 40; i++)
		toks[i] = 5 + i;
	const int free0 = llama_ctx_free_pages(c);
	assert_int_equal(free0, 3);

	int32_t bad = V;
	llama_batch_seq b = {&s, &bad, 1, LLAMA_LOGITS_LAST, logits};
	assert_int_equal(llama_decode(c, &b, 1), HERD_E_INVAL); /* token out of range */
	b = (llama_batch_seq){&s, toks, 33, LLAMA_LOGITS_LAST, logits};
	assert_int_equal(llama_decode(c, &b, 1), HERD_E_NOSPACE); /* more than a step holds */
	assert_int_equal(s.n_past, 0);
	assert_int_equal(llama_ctx_free_pages(c), free0);

	b = (llama_batch_seq){&s, toks, 30, LLAMA_LOGITS_LAST, logits}; /* 2 pages */
	assert_int_equal(llama_decode(c, &b, 1), 0);
	assert_int_equal(llama_ctx_free_pages(c), 1);
	llama_batch_seq two[2] = {{&s, toks, 1, LLAMA_LOGITS_NONE, NULL}, {&t, toks, 20, LLAMA_LOGITS_NONE, NULL}};
	assert_int_equal(llama_decode(c, two, 2), HERD_E_NOSPACE); /* t needs 2 pages, 1 left */
	assert_int_equal(s.n_past, 30);
	assert_int_equal(t.n_past, 0);
	assert_int_equal(llama_ctx_free_pages(c), 1);
	two[1] = two[0];
	assert_int_equal(llama_decode(c, two, 2), HERD_E_INVAL); /* same sequence twice */

	b = (llama_batch_seq){&s, toks, 11, LLAMA_LOGITS_LAST, logits};
	assert_int_equal(llama_decode(c, &b, 1), HERD_E_NOSPACE); /* past n_ctx = 40 */
	llama_seq_truncate(c, &s, 10);
	assert_int_equal(s.n_past, 10);
	assert_int_equal(llama_ctx_free_pages(c), 2);
	llama_seq_reset(c, &s);
	llama_seq_reset(c, &t); /* a failed step may leave t's page list allocated */
	assert_int_equal(llama_ctx_free_pages(c), free0);
	free(logits);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
}

/* Rewrites the mini Q8_0 model with one change and expects load to fail with
 * code and a message containing want. */
static void check_bad_model(const char *arch, const char *drop_tensor, int code, const char *want)
{
	char err[512] = "", path[512];
	gguf_ctx *g;
	assert_int_equal(gguf_open(&g, model_path("Q8_0"), err, sizeof(err)), 0);
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
	if (arch)
		assert_int_equal(gguf_writer_set_str(w, "general.architecture", arch), 0);
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		char name[128];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
		if (drop_tensor && !strcmp(name, drop_tensor))
			continue;
		assert_int_equal(gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), 0);
	}
	snprintf(path, sizeof(path), "%s/bad.gguf", dir);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), 0);
	gguf_writer_destroy(w);
	gguf_close(g);
	llama_model *m = NULL;
	err[0] = 0;
	assert_int_equal(llama_model_load(&m, path, err, sizeof(err)), code);
	assert_null(m);
	if (!strstr(err, want))
		fail_msg("expected '%s' in the error, got '%s'", want, err);
}

static void test_bad_models(void **state)
{
	(void)state;
	check_bad_model("gpt2", NULL, HERD_E_UNSUPPORTED, "gpt2");
	check_bad_model(NULL, "blk.1.ffn_down.weight", HERD_E_MISSING, "blk.1.ffn_down.weight");
	check_bad_model(NULL, "output_norm.weight", HERD_E_MISSING, "output_norm.weight");
	/* a truncated file is refused by the GGUF reader */
	char path[512], cmd[1200], err[512] = "";
	snprintf(path, sizeof(path), "%s/trunc.gguf", dir);
	snprintf(cmd, sizeof(cmd), "head -c 100000 '%s' > '%s'", model_path("Q8_0"), path);
	assert_int_equal(system(cmd), 0);
	llama_model *m = NULL;
	assert_true(llama_model_load(&m, path, err, sizeof(err)) < 0);
	assert_null(m);
	assert_true(strlen(err) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_invariance),
		cmocka_unit_test(test_prefill_equals_stepwise),
		cmocka_unit_test(test_kv_types),
		cmocka_unit_test(test_decode_errors),
		cmocka_unit_test(test_bad_models),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
