/* mkmodel: mini models in several file types reopened and checked (keys,
 * shapes, the llama.cpp type mix, finite weights of the intended scale),
 * determinism across runs and thread counts, the synthetic and copied
 * vocabularies, option errors, and the `herd mkmodel` CLI when HERD_BIN is
 * set. With the fixtures, the type mix is compared with llama.cpp's own
 * mini-*.gguf files tensor by tensor. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "model/ftype.h"
#include "model/gguf.h"
#include "model/mkmodel.h"
#include "model/tokenizer.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/herd_test_mkmodel.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	DIR *d = opendir(tmpdir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char p[512];
			snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmpdir);
	return 0;
}

static const char *fixtures_dir(void)
{
	const char *d = getenv("HERD_FIXTURES");
	if (!d || !*d)
		d = HERD_FIXTURES;
	struct stat st;
	return stat(d, &st) == 0 && S_ISDIR(st.st_mode) ? d : NULL;
}

static void tpath(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void make(const char *ftype, const char *out, const char *vocab, uint64_t seed, int threads)
{
	char err[1024];
	mkmodel_opts o = {.shape = "mini", .ftype = ftype, .out_path = out, .vocab_path = vocab,
			  .seed = seed, .n_threads = threads};
	const int rc = mkmodel_write(&o, err, sizeof(err));
	if (rc)
		fail_msg("mkmodel %s: %d %s", ftype, rc, err);
}

static uint8_t *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(*n ? *n : 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, *n, f), *n);
	fclose(f);
	return b;
}

static int64_t get_i(const gguf_ctx *g, const char *k)
{
	int64_t v = -1;
	if (gguf_get_int(g, k, &v))
		fail_msg("key %s missing or not an integer", k);
	return v;
}

static const gguf_tensor *tensor(const gguf_ctx *g, const char *name)
{
	const gguf_tensor *t = gguf_find_tensor(g, name);
	if (!t)
		fail_msg("tensor %s missing", name);
	return t;
}

static void check_str(const gguf_ctx *g, const char *k, const char *want)
{
	gguf_str s;
	if (gguf_get_str(g, k, &s))
		fail_msg("key %s missing", k);
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.ptr, want, s.len);
}

/* Metadata, tensor names and shapes of the mini shape. */
static void check_mini(const gguf_ctx *g, ftype_id ft)
{
	check_str(g, "general.architecture", "llama");
	check_str(g, "general.name", "herd demo (random weights)");
	check_str(g, "tokenizer.ggml.model", "llama");
	check_str(g, "tokenizer.chat_template", mkmodel_chat_template());
	assert_int_equal(get_i(g, "llama.context_length"), 2048);
	assert_int_equal(get_i(g, "llama.embedding_length"), 256);
	assert_int_equal(get_i(g, "llama.block_count"), 2);
	assert_int_equal(get_i(g, "llama.feed_forward_length"), 768);
	assert_int_equal(get_i(g, "llama.rope.dimension_count"), 32);
	assert_int_equal(get_i(g, "llama.attention.head_count"), 8);
	assert_int_equal(get_i(g, "llama.attention.head_count_kv"), 2);
	assert_int_equal(get_i(g, "llama.vocab_size"), 2048);
	assert_int_equal(get_i(g, "general.file_type"), (int64_t)ft);
	assert_int_equal(get_i(g, "tokenizer.ggml.bos_token_id"), 1);
	assert_int_equal(get_i(g, "tokenizer.ggml.eos_token_id"), 2);
	assert_int_equal(get_i(g, "tokenizer.ggml.unknown_token_id"), 0);
	double d;
	assert_int_equal(gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &d), 0);
	assert_true(fabs(d - 1e-5) < 1e-9);
	assert_int_equal(gguf_get_float(g, "llama.rope.freq_base", &d), 0);
	assert_true(d == 10000.0);
	gguf_vtype t;
	uint64_t n;
	const void *p;
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &t, &n, &p), 0);
	assert_int_equal(n, 2048);
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_FLOAT32);
	assert_int_equal(n, 2048);
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &t, &n, &p), 0);
	assert_int_equal(t, GGUF_VT_INT32);
	assert_int_equal(n, 2048);

	assert_int_equal(gguf_n_tensors(g), 3 + 9 * 2);
	/* llama.cpp's order */
	static const char *const order[] = {
		"token_embd.weight",        "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
		"blk.0.attn_k.weight",      "blk.0.attn_v.weight",    "blk.0.attn_output.weight",
		"blk.0.ffn_norm.weight",    "blk.0.ffn_gate.weight",  "blk.0.ffn_up.weight",
		"blk.0.ffn_down.weight",    "blk.1.attn_norm.weight", "blk.1.attn_q.weight",
		"blk.1.attn_k.weight",      "blk.1.attn_v.weight",    "blk.1.attn_output.weight",
		"blk.1.ffn_norm.weight",    "blk.1.ffn_gate.weight",  "blk.1.ffn_up.weight",
		"blk.1.ffn_down.weight",    "output_norm.weight",     "output.weight"};
	for (int i = 0; i < 21; i++) {
		const gguf_tensor *x = gguf_tensor_at(g, i);
		assert_int_equal(x->name.len, strlen(order[i]));
		assert_memory_equal(x->name.ptr, order[i], x->name.len);
	}
	const struct {
		const char *name;
		int64_t ne0, ne1;
	} shapes[] = {{"token_embd.weight", 256, 2048},     {"blk.0.attn_q.weight", 256, 256},
		      {"blk.1.attn_k.weight", 256, 64},     {"blk.1.attn_v.weight", 256, 64},
		      {"blk.0.attn_output.weight", 256, 256}, {"blk.0.ffn_gate.weight", 256, 768},
		      {"blk.0.ffn_up.weight", 256, 768},    {"blk.0.ffn_down.weight", 768, 256},
		      {"output.weight", 256, 2048},         {"output_norm.weight", 256, 1},
		      {"blk.1.ffn_norm.weight", 256, 1}};
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		const gguf_tensor *x = tensor(g, shapes[i].name);
		assert_int_equal(x->ne[0], shapes[i].ne0);
		assert_int_equal(x->ne[1], shapes[i].ne1);
		assert_int_equal(x->n_dims, shapes[i].ne1 == 1 ? 1 : 2);
		if (x->n_dims == 1) {
			assert_int_equal(x->type, KERN_TYPE_F32);
			for (int j = 0; j < 256; j++)
				assert_true(((const float *)x->data)[j] == 1.0f);
		}
	}
}

/* Every weight finite; matrices with std near 1/sqrt(n_in). */
static void check_weights(const gguf_ctx *g)
{
	kern_ops ops;
	kern_ops_init(&ops, KERN_ISA_REF);
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		const int64_t n = t->ne[0] * t->ne[1];
		float *f = malloc(sizeof(float) * (size_t)n);
		assert_non_null(f);
		assert_non_null(ops.to_float[t->type]);
		ops.to_float[t->type](t->data, f, n);
		double s2 = 0;
		for (int64_t j = 0; j < n; j++) {
			assert_true(isfinite(f[j]));
			s2 += (double)f[j] * f[j];
		}
		if (t->n_dims == 2) {
			const double sd = sqrt(s2 / (double)n), want = 1.0 / sqrt((double)t->ne[0]);
			if (sd < 0.8 * want || sd > 1.25 * want)
				fail_msg("%.*s: std %g, expected about %g", (int)t->name.len, t->name.ptr,
					 sd, want);
		}
		free(f);
	}
}

static kern_type type_of(const gguf_ctx *g, const char *name)
{
	return tensor(g, name)->type;
}

static void test_types(void **state)
{
	(void)state;
	static const struct {
		const char *ftype;
		ftype_id id;
		kern_type base, output, attn_v0, attn_v1, ffn_down0, ffn_down1, attn_out;
	} cases[] = {
		{"F32", FTYPE_ALL_F32, KERN_TYPE_F32, KERN_TYPE_F32, KERN_TYPE_F32, KERN_TYPE_F32,
		 KERN_TYPE_F32, KERN_TYPE_F32, KERN_TYPE_F32},
		{"BF16", FTYPE_BF16, KERN_TYPE_BF16, KERN_TYPE_BF16, KERN_TYPE_BF16, KERN_TYPE_BF16,
		 KERN_TYPE_BF16, KERN_TYPE_BF16, KERN_TYPE_BF16},
		{"Q8_0", FTYPE_Q8_0, KERN_TYPE_Q8_0, KERN_TYPE_Q8_0, KERN_TYPE_Q8_0, KERN_TYPE_Q8_0,
		 KERN_TYPE_Q8_0, KERN_TYPE_Q8_0, KERN_TYPE_Q8_0},
		{"q4_0", FTYPE_Q4_0, KERN_TYPE_Q4_0, KERN_TYPE_Q6_K, KERN_TYPE_Q4_0, KERN_TYPE_Q4_0,
		 KERN_TYPE_Q4_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_0},
		{"Q5_1", FTYPE_Q5_1, KERN_TYPE_Q5_1, KERN_TYPE_Q6_K, KERN_TYPE_Q5_1, KERN_TYPE_Q5_1,
		 KERN_TYPE_Q5_1, KERN_TYPE_Q5_1, KERN_TYPE_Q5_1},
		{"Q2_K", FTYPE_Q2_K, KERN_TYPE_Q2_K, KERN_TYPE_Q6_K, KERN_TYPE_Q4_K, KERN_TYPE_Q4_K,
		 KERN_TYPE_Q3_K, KERN_TYPE_Q3_K, KERN_TYPE_Q3_K},
		{"Q3_K_S", FTYPE_Q3_K_S, KERN_TYPE_Q3_K, KERN_TYPE_Q6_K, KERN_TYPE_Q3_K, KERN_TYPE_Q3_K,
		 KERN_TYPE_Q3_K, KERN_TYPE_Q3_K, KERN_TYPE_Q3_K},
		{"Q3_K_M", FTYPE_Q3_K_M, KERN_TYPE_Q3_K, KERN_TYPE_Q6_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K,
		 KERN_TYPE_Q4_K, KERN_TYPE_Q4_K, KERN_TYPE_Q4_K},
		{"Q3_K_L", FTYPE_Q3_K_L, KERN_TYPE_Q3_K, KERN_TYPE_Q6_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K,
		 KERN_TYPE_Q5_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K},
		{"Q4_K_S", FTYPE_Q4_K_S, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K,
		 KERN_TYPE_Q4_K, KERN_TYPE_Q4_K, KERN_TYPE_Q4_K},
		{"Q4_K_M", FTYPE_Q4_K_M, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K,
		 KERN_TYPE_Q4_K, KERN_TYPE_Q6_K, KERN_TYPE_Q4_K},
		{"Q5_K_S", FTYPE_Q5_K_S, KERN_TYPE_Q5_K, KERN_TYPE_Q6_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K,
		 KERN_TYPE_Q5_K, KERN_TYPE_Q5_K, KERN_TYPE_Q5_K},
		{"Q6_K", FTYPE_Q6_K, KERN_TYPE_Q6_K, KERN_TYPE_Q6_K, KERN_TYPE_Q6_K, KERN_TYPE_Q6_K,
		 KERN_TYPE_Q6_K, KERN_TYPE_Q6_K, KERN_TYPE_Q6_K},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[512], err[512];
		tpath(path, sizeof(path), "types.gguf");
		make(cases[i].ftype, path, NULL, 7, 2);
		gguf_ctx *g;
		if (gguf_open(&g, path, err, sizeof(err)))
			fail_msg("%s", err);
		check_mini(g, cases[i].id);
		assert_int_equal(type_of(g, "token_embd.weight"), cases[i].base);
		assert_int_equal(type_of(g, "blk.0.attn_q.weight"), cases[i].base);
		assert_int_equal(type_of(g, "blk.1.ffn_up.weight"), cases[i].base);
		assert_int_equal(type_of(g, "output.weight"), cases[i].output);
		assert_int_equal(type_of(g, "blk.0.attn_v.weight"), cases[i].attn_v0);
		assert_int_equal(type_of(g, "blk.1.attn_v.weight"), cases[i].attn_v1);
		assert_int_equal(type_of(g, "blk.0.ffn_down.weight"), cases[i].ffn_down0);
		assert_int_equal(type_of(g, "blk.1.ffn_down.weight"), cases[i].ffn_down1);
		assert_int_equal(type_of(g, "blk.1.attn_output.weight"), cases[i].attn_out);
		check_weights(g);
		gguf_close(g);
	}
}

/* The mix of TinyLlama's 22 layers, against llama.cpp's rules by hand. */
static void test_plan_tinyllama(void **state)
{
	(void)state;
	const int64_t ne_v[2] = {2048, 256}, ne_d[2] = {5632, 2048}, ne_o[2] = {2048, 32000};
	ftype_plan p;
	ftype_plan_init(&p, FTYPE_Q4_K_M, 22, 32, 4, 1);
	for (int i = 0; i < 22; i++) {
		const int more = i < 2 || i >= 19 || (i - 2) % 3 == 2;
		assert_int_equal(ftype_tensor_type(&p, "blk.x.attn_v.weight", 2, ne_v, KERN_TYPE_F16),
				 more ? KERN_TYPE_Q6_K : KERN_TYPE_Q4_K);
		assert_int_equal(ftype_tensor_type(&p, "blk.x.ffn_down.weight", 2, ne_d, KERN_TYPE_F16),
				 more ? KERN_TYPE_Q6_K : KERN_TYPE_Q4_K);
	}
	assert_int_equal(ftype_tensor_type(&p, "output.weight", 2, ne_o, KERN_TYPE_F16),
			 KERN_TYPE_Q6_K);
	assert_int_equal(ftype_tensor_type(&p, "output_norm.weight", 1, ne_o, KERN_TYPE_F32),
			 KERN_TYPE_F32);
	ftype_plan_init(&p, FTYPE_Q3_K_M, 22, 32, 4, 1);
	for (int i = 0; i < 22; i++) {
		assert_int_equal(ftype_tensor_type(&p, "blk.x.attn_v.weight", 2, ne_v, KERN_TYPE_F16),
				 i < 2 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K);
		assert_int_equal(ftype_tensor_type(&p, "blk.x.ffn_down.weight", 2, ne_d, KERN_TYPE_F16),
				 i < 1 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K);
	}
	ftype_plan_init(&p, FTYPE_Q4_K_S, 22, 32, 4, 1);
	for (int i = 0; i < 22; i++) {
		assert_int_equal(ftype_tensor_type(&p, "blk.x.attn_v.weight", 2, ne_v, KERN_TYPE_F16),
				 i < 4 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K);
		assert_int_equal(ftype_tensor_type(&p, "blk.x.ffn_down.weight", 2, ne_d, KERN_TYPE_F16),
				 i < 2 ? KERN_TYPE_Q5_K : KERN_TYPE_Q4_K);
	}
	/* Q2_K with less grouping keeps attn_v at Q3_K; tied embeddings take
	 * the output rule; odd rows fall back */
	ftype_plan_init(&p, FTYPE_Q2_K, 22, 32, 32, 0);
	assert_int_equal(ftype_tensor_type(&p, "blk.0.attn_v.weight", 2, ne_v, KERN_TYPE_F16),
			 KERN_TYPE_Q3_K);
	assert_int_equal(ftype_tensor_type(&p, "token_embd.weight", 2, ne_o, KERN_TYPE_F16),
			 KERN_TYPE_Q6_K);
	const int64_t odd[2] = {96, 8}, odder[2] = {40, 8};
	assert_int_equal(ftype_tensor_type(&p, "blk.0.attn_q.weight", 2, odd, KERN_TYPE_F16),
			 KERN_TYPE_IQ4_NL); /* llama.cpp's fallback, now that herd has the type */
	assert_int_equal(ftype_tensor_type(&p, "blk.0.attn_q.weight", 2, odder, KERN_TYPE_F16),
			 KERN_TYPE_F16);
	assert_int_equal(ftype_tensor_type(&p, "output.weight", 2, odd, KERN_TYPE_F16),
			 KERN_TYPE_Q8_0);
	ftype_plan_init(&p, FTYPE_Q4_K_M, 22, 32, 4, 1);
	assert_int_equal(ftype_tensor_type(&p, "blk.0.ffn_up.weight", 2, odd, KERN_TYPE_F16),
			 KERN_TYPE_Q5_0);
	ftype_id id;
	assert_int_equal(ftype_parse("q4_k", &id), 0);
	assert_int_equal(id, FTYPE_Q4_K_M);
	assert_int_equal(ftype_parse("Q9_9", &id), HERD_E_UNSUPPORTED);
	assert_string_equal(ftype_name(FTYPE_BF16), "BF16");
	assert_null(ftype_name(99));

	const mkmodel_shape *s = mkmodel_shape_find("tinyllama-1.1b");
	assert_non_null(s);
	assert_int_equal(s->n_embd, 2048);
	assert_int_equal(s->n_ff, 5632);
	assert_int_equal(s->n_layer, 22);
	assert_int_equal(s->n_head, 32);
	assert_int_equal(s->n_head_kv, 4);
	assert_int_equal(s->n_vocab, 32000);
	assert_int_equal(s->n_ctx, 2048);
	assert_null(mkmodel_shape_find("llama-70b"));
}

/* llama.cpp's own files: same tensors, shapes and types, type by type. */
static void test_fixture_mix(void **state)
{
	(void)state;
	const char *d = fixtures_dir();
	if (!d)
		skip();
	static const char *const types[] = {"F32",  "F16",  "BF16", "Q8_0",   "Q4_0",
					    "Q4_1", "Q5_0", "Q5_1", "Q2_K",   "Q3_K_M",
					    "Q4_K_M", "Q5_K_M", "Q6_K"};
	char vocab[512];
	snprintf(vocab, sizeof(vocab), "%s/ggml-vocab-llama-spm.gguf", d);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char fix[512], mine[512], err[512];
		snprintf(fix, sizeof(fix), "%s/mini-%s.gguf", d, types[i]);
		tpath(mine, sizeof(mine), "mix.gguf");
		make(types[i], mine, vocab, 1, 2);
		gguf_ctx *a, *b;
		if (gguf_open(&a, fix, err, sizeof(err)) || gguf_open(&b, mine, err, sizeof(err)))
			fail_msg("%s", err);
		assert_int_equal(gguf_n_tensors(a), gguf_n_tensors(b));
		for (int64_t j = 0; j < gguf_n_tensors(a); j++) {
			const gguf_tensor *ta = gguf_tensor_at(a, j);
			char name[128];
			snprintf(name, sizeof(name), "%.*s", (int)ta->name.len, ta->name.ptr);
			const gguf_tensor *tb = gguf_find_tensor(b, name);
			if (!tb)
				fail_msg("%s: %s missing", types[i], name);
			if (ta->type != tb->type)
				fail_msg("%s: %s is %s, llama.cpp made %s", types[i], name,
					 kern_type_name(tb->type), kern_type_name(ta->type));
			assert_int_equal(ta->n_dims, tb->n_dims);
			for (int k = 0; k < 4; k++)
				assert_int_equal(ta->ne[k], tb->ne[k]);
			assert_int_equal(ta->size, tb->size);
		}
		/* file type and the llama hyper-parameters agree */
		static const char *const keys[] = {
			"general.file_type",         "llama.context_length",
			"llama.embedding_length",    "llama.block_count",
			"llama.feed_forward_length", "llama.rope.dimension_count",
			"llama.attention.head_count", "llama.attention.head_count_kv",
			"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			assert_int_equal(get_i(a, keys[k]), get_i(b, keys[k]));
		gguf_close(a);
		gguf_close(b);
	}
}

static void test_determinism(void **state)
{
	(void)state;
	char p1[512], p2[512], p3[512];
	tpath(p1, sizeof(p1), "d1.gguf");
	tpath(p2, sizeof(p2), "d2.gguf");
	tpath(p3, sizeof(p3), "d3.gguf");
	const char *const types[] = {"Q4_0", "Q4_K_M", "F16"};
	for (int i = 0; i < 3; i++) {
		make(types[i], p1, NULL, 42, 1);
		make(types[i], p2, NULL, 42, 3);
		make(types[i], p3, NULL, 43, 2);
		size_t n1, n2, n3;
		uint8_t *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2), *b3 = slurp(p3, &n3);
		assert_int_equal(n1, n2);
		assert_memory_equal(b1, b2, n1);
		assert_int_equal(n1, n3);
		/* another seed changes the weights (and the description), not the layout */
		gguf_ctx *g;
		char err[256];
		assert_int_equal(gguf_open_mem(&g, b1, n1, err, sizeof(err)), 0);
		const size_t data = gguf_data_offset(g);
		gguf_close(g);
		assert_true(memcmp(b1 + data, b3 + data, n1 - data) != 0);
		free(b1);
		free(b2);
		free(b3);
	}
}

static void test_synth_vocab(void **state)
{
	(void)state;
	char path[512], err[512];
	tpath(path, sizeof(path), "vocab.gguf");
	const int sizes[2] = {2048, 32000};
	for (int k = 0; k < 2; k++) {
		const int nv = sizes[k];
		gguf_writer *w;
		assert_int_equal(gguf_writer_create(&w), 0);
		assert_int_equal(mkmodel_synth_vocab(w, nv, err, sizeof(err)), 0);
		assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), 0);
		gguf_writer_destroy(w);
		gguf_ctx *g;
		assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
		gguf_vtype t;
		uint64_t n;
		const void *sc, *ty;
		assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &t, &n, &sc), 0);
		assert_int_equal(n, (uint64_t)nv);
		assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &t, &n, &ty), 0);
		assert_int_equal(n, (uint64_t)nv);
		gguf_str s;
		assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &s), 0);
		assert_memory_equal(s.ptr, "<unk>", 5);
		assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 2, &s), 0);
		assert_memory_equal(s.ptr, "</s>", 4);
		assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3 + 0x41, &s), 0);
		assert_int_equal(s.len, 6);
		assert_memory_equal(s.ptr, "<0x41>", 6);
		assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 259, &s), 0);
		assert_int_equal(s.len, 4);
		assert_memory_equal(s.ptr, "\xe2\x96\x81t", 4); /* "▁t", prefix of "▁the" */
		for (int i = 0; i < nv; i++) {
			int32_t tt;
			memcpy(&tt, (const uint8_t *)ty + 4 * i, 4);
			assert_int_equal(tt, i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);
		}
		/* unique pieces, and the tokenizer accepts the vocabulary */
		tok_vocab *v;
		if (tok_create(&v, g, err, sizeof(err)))
			fail_msg("tok_create: %s", err);
		for (int i = 0; i < nv; i++) {
			assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s), 0);
			if (tok_find(v, s.ptr, s.len) != i)
				fail_msg("piece %d '%.*s' is not unique", i, (int)s.len, s.ptr);
		}
		int32_t ids[64];
		const char *text = "the robot found a key";
		const int nt = tok_encode(v, text, strlen(text), 0, ids, 64);
		assert_true(nt > 0 && nt < 12); /* words, not bytes */
		for (int i = 0; i < nt; i++)
			assert_true(ids[i] >= 259);
		tok_destroy(v);
		gguf_close(g);
	}
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(mkmodel_synth_vocab(w, 100, err, sizeof(err)), HERD_E_INVAL);
	gguf_writer_destroy(w);
}

static void test_vocab_copy(void **state)
{
	(void)state;
	const char *d = fixtures_dir();
	if (!d)
		skip();
	char vocab[512], path[512], err[512];
	snprintf(vocab, sizeof(vocab), "%s/ggml-vocab-llama-spm.gguf", d);
	tpath(path, sizeof(path), "v.gguf");
	make("Q4_0", path, vocab, 3, 2);
	gguf_ctx *g, *v;
	assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
	assert_int_equal(gguf_open(&v, vocab, err, sizeof(err)), 0);
	check_mini(g, FTYPE_Q4_0);
	/* the first 2048 pieces, as in the mini fixtures */
	for (uint64_t i = 0; i < 2048; i++) {
		gguf_str a, b;
		assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &a), 0);
		assert_int_equal(gguf_get_arr_str(v, "tokenizer.ggml.tokens", i, &b), 0);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.ptr, b.ptr, a.len);
	}
	gguf_vtype t;
	uint64_t n;
	const void *pa, *pb;
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &t, &n, &pa), 0);
	assert_int_equal(gguf_get_arr(v, "tokenizer.ggml.scores", &t, &n, &pb), 0);
	assert_memory_equal(pa, pb, 2048 * 4);
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &t, &n, &pa), 0);
	assert_int_equal(gguf_get_arr(v, "tokenizer.ggml.token_type", &t, &n, &pb), 0);
	assert_memory_equal(pa, pb, 2048 * 4);
	int b;
	assert_int_equal(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
	assert_int_equal(b, 1);
	check_str(g, "tokenizer.ggml.pre", "default");
	/* tokens agree with llama.cpp's mini fixture vocabulary */
	char fix[512];
	snprintf(fix, sizeof(fix), "%s/mini-Q4_0.gguf", d);
	gguf_ctx *f;
	assert_int_equal(gguf_open(&f, fix, err, sizeof(err)), 0);
	assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.scores", &t, &n, &pb), 0);
	assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &t, &n, &pa), 0);
	assert_memory_equal(pa, pb, 2048 * 4);
	gguf_close(f);
	gguf_close(v);
	gguf_close(g);
}

static void test_errors(void **state)
{
	(void)state;
	char path[512], err[1024];
	tpath(path, sizeof(path), "e.gguf");
	mkmodel_opts o = {.shape = "mini", .ftype = "Q4_0", .out_path = path};
	o.shape = "huge";
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "huge"));
	o.shape = "mini";
	o.ftype = "IQ2_XXS";
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, "IQ2_XXS"));
	o.ftype = "Q4_0";
	o.out_path = NULL;
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_INVAL);
	assert_int_equal(mkmodel_write(NULL, err, sizeof(err)), HERD_E_INVAL);
	o.out_path = "/nonexistent_dir_herd/x.gguf";
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent_dir_herd/x.gguf"));
	o.out_path = path;
	o.vocab_path = "/nonexistent_vocab.gguf";
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent_vocab.gguf"));
	/* a vocabulary smaller than the shape */
	char small[512];
	tpath(small, sizeof(small), "small-vocab.gguf");
	gguf_writer *w;
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(mkmodel_synth_vocab(w, 1000, err, sizeof(err)), 0);
	assert_int_equal(gguf_writer_write(w, small, err, sizeof(err)), 0);
	o.vocab_path = small;
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_SHAPE);
	assert_non_null(strstr(err, "1000"));
	/* a special token outside the cut vocabulary */
	assert_int_equal(mkmodel_synth_vocab(w, 4000, err, sizeof(err)), 0);
	assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 3000), 0);
	assert_int_equal(gguf_writer_write(w, small, err, sizeof(err)), 0);
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_SHAPE);
	assert_non_null(strstr(err, "eos_token_id"));
	/* no tokenizer at all */
	gguf_writer_destroy(w);
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_write(w, small, err, sizeof(err)), 0);
	gguf_writer_destroy(w);
	assert_int_equal(mkmodel_write(&o, err, sizeof(err)), HERD_E_MISSING);
	/* none of the failures left a file behind */
	struct stat st;
	assert_int_equal(stat(path, &st), -1);
}

static int run_cli(const char *bin, const char *const *args)
{
	const pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[16];
		int n = 0;
		argv[n++] = (char *)bin;
		argv[n++] = (char *)"mkmodel";
		for (; args[n - 2] && n < 15; n++)
			argv[n] = (char *)args[n - 2];
		argv[n] = NULL;
		if (!freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout))
			_exit(98);
		execv(bin, argv);
		_exit(99);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_cli(void **state)
{
	(void)state;
	const char *bin = getenv("HERD_BIN");
#ifdef HERD_BIN
	if (!bin || !*bin)
		bin = HERD_BIN;
#endif
	if (!bin || access(bin, X_OK) != 0) {
		print_message("herd binary not found (HERD_BIN), skipping\n");
		skip();
	}
	char out[512];
	tpath(out, sizeof(out), "cli.gguf");
	{
		const char *a[] = {"--shape", "mini", "-t", "Q8_0", "-o", out, "--seed", "5",
				   "--threads", "2", NULL};
		assert_int_equal(run_cli(bin, a), 0);
		char ref[512];
		tpath(ref, sizeof(ref), "ref.gguf");
		make("Q8_0", ref, NULL, 5, 1);
		size_t n1, n2;
		uint8_t *b1 = slurp(out, &n1), *b2 = slurp(ref, &n2);
		assert_int_equal(n1, n2);
		assert_memory_equal(b1, b2, n1);
		free(b1);
		free(b2);
	}
	const char *usage[][12] = {
		{NULL},
		{"--shape", "mini", "-t", "Q4_0", NULL},
		{"--shape", "nope", "-t", "Q4_0", "-o", out, NULL},
		{"--shape", "mini", "-t", "Q7_0", "-o", out, NULL},
		{"--shape", "mini", "-t", "Q4_0", "-o", out, "--seed", "-1", NULL},
		{"--shape", "mini", "-t", "Q4_0", "-o", out, "--threads", "zero", NULL},
		{"--shape", "mini", "-t", "Q4_0", "-o", out, "--bogus", NULL},
		{"--shape", "mini", "-t", NULL},
	};
	for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++)
		assert_int_equal(run_cli(bin, usage[i]), 2);
	const char *bad_out[] = {"--shape", "mini", "-t", "Q4_0", "-o", "/nonexistent_dir_herd/x",
				 NULL};
	assert_int_equal(run_cli(bin, bad_out), 1);
	const char *help[] = {"--help", NULL};
	assert_int_equal(run_cli(bin, help), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_tinyllama), cmocka_unit_test(test_types),
		cmocka_unit_test(test_fixture_mix),    cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_synth_vocab),    cmocka_unit_test(test_vocab_copy),
		cmocka_unit_test(test_errors),         cmocka_unit_test(test_cli),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
