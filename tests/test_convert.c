/* model/convert: the one repack policy. The interleaved weights a model
 * gets from llama_model_repack (herd run) and from a converted payload (a
 * shared image) must be the same types and the same bytes, whatever the
 * CPU: the policy is forced on here, since kern_repack_worthwhile() is 0 on
 * machines without AVX-512 and the suite must cover it there too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "herd/error.h"
#include "kernels/gemm.h"
#include "model/convert.h"
#include "model/llama.h"
#include "model/mkmodel.h"

static char dir[64];
static char src_path[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/herd-convert-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(src_path, sizeof(src_path), "%s/mini.gguf", dir);
	mkmodel_opts o = {.shape = "mini", .ftype = "Q4_0", .out_path = src_path, .n_threads = 1};
	char err[256];
	if (mkmodel_write(&o, err, sizeof(err))) {
		fprintf(stderr, "mkmodel: %s\n", err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char p[160];
	snprintf(p, sizeof(p), "%s/payload.gguf", dir);
	unlink(p);
	unlink(src_path);
	return rmdir(dir);
}

static void test_layout_type(void **state)
{
	(void)state;
	assert_int_equal(convert_layout_type(1, KERN_TYPE_Q4_0, 64, 1), KERN_TYPE_Q4_0_R16);
	assert_int_equal(convert_layout_type(1, KERN_TYPE_Q8_0, 32, 1), KERN_TYPE_Q8_0_R16);
	assert_int_equal(convert_layout_type(0, KERN_TYPE_Q4_0, 64, 1), KERN_TYPE_Q4_0);  /* off */
	assert_int_equal(convert_layout_type(1, KERN_TYPE_Q4_0, 64, 0), KERN_TYPE_Q4_0);  /* looked up */
	assert_int_equal(convert_layout_type(1, KERN_TYPE_Q4_0, 24, 1), KERN_TYPE_Q4_0);  /* rows % 16 */
	assert_int_equal(convert_layout_type(1, KERN_TYPE_F32, 64, 1), KERN_TYPE_F32);    /* no layout */
	/* the AVX2 policy interleaves Q4_0 and Q6_K only */
	assert_int_equal(convert_layout_type(KERN_REPACK_AVX2, KERN_TYPE_Q4_0, 64, 1), KERN_TYPE_Q4_0_R16);
	assert_int_equal(convert_layout_type(KERN_REPACK_AVX2, KERN_TYPE_Q8_0, 64, 1), KERN_TYPE_Q8_0);
	assert_int_equal(convert_layout_type(KERN_REPACK_AVX2, KERN_TYPE_Q4_K, 64, 1), KERN_TYPE_Q4_K);
	assert_int_equal(convert_layout_type(KERN_REPACK_AVX2, KERN_TYPE_Q6_K, 64, 1), KERN_TYPE_Q6_K_R16);
	assert_int_equal(convert_layout_type(KERN_REPACK_AVX2, KERN_TYPE_Q6_K, 40, 1), KERN_TYPE_Q6_K);
	assert_true(convert_is_matmul_weight("blk.0.attn_q.weight"));
	assert_true(convert_is_matmul_weight("blk.21.ffn_down.weight"));
	assert_true(convert_is_matmul_weight("output.weight"));
	assert_false(convert_is_matmul_weight("token_embd.weight"));
	assert_false(convert_is_matmul_weight("blk.0.attn_norm.weight"));
	assert_false(convert_is_matmul_weight("attn_q.weight"));
	assert_int_equal(convert_repack_enabled(1), 0);
	assert_int_equal(convert_repack_enabled(0), kern_repack_worthwhile());
}

/* Writes src's payload under o to dir/payload.gguf and loads it. */
static llama_model *payload_model(const convert_opts *o, gguf_ctx **pg)
{
	char err[512] = "", path[160];
	gguf_ctx *src;
	gguf_writer *w;
	convert_plan *plan;
	snprintf(path, sizeof(path), "%s/payload.gguf", dir);
	assert_int_equal(gguf_open(&src, src_path, err, sizeof(err)), 0);
	assert_int_equal(gguf_writer_create(&w), 0);
	if (convert_payload(w, src, o, &plan, err, sizeof(err)))
		fail_msg("convert_payload: %s", err);
	if (gguf_writer_write(w, path, err, sizeof(err)))
		fail_msg("write: %s", err);
	convert_plan_free(plan);
	gguf_writer_destroy(w);
	gguf_close(src);
	/* a payload holds image-only types, which gguf_open refuses in files:
	 * read it from memory as an image is (the mapping lives to exit) */
	llama_model *m;
	int fd = open(path, O_RDONLY);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	assert_true(map != MAP_FAILED);
	close(fd);
	assert_int_equal(gguf_open_mem(pg, map, (size_t)st.st_size, err, sizeof(err)), 0);
	if (llama_model_from_gguf(&m, *pg, err, sizeof(err)))
		fail_msg("load payload: %s", err);
	return m;
}

static void same_weight(const llama_weight *a, const llama_weight *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->ne0, b->ne0);
	assert_int_equal(a->ne1, b->ne1);
	assert_memory_equal(a->data, b->data, kern_row_size(a->type, a->ne0) * (size_t)a->ne1);
}

/* herd run's path and the image's path give the same matrices. */
static void test_repack_paths_agree(void **state)
{
	(void)state;
	char err[256] = "";
	llama_model *run;
	assert_int_equal(llama_model_load(&run, src_path, err, sizeof(err)), 0);
	assert_int_equal(llama_model_repack(run, KERN_REPACK_ALL), 0);
	const convert_opts o = {.repack = KERN_REPACK_ALL, .alignment = 64};
	gguf_ctx *pg;
	llama_model *img = payload_model(&o, &pg);
	assert_int_equal(run->hp.n_layer, img->hp.n_layer);
	assert_int_equal(run->layers[0].wq.type, KERN_TYPE_Q4_0_R16);
	for (int i = 0; i < run->hp.n_layer; i++) {
		const llama_layer *a = &run->layers[i], *b = &img->layers[i];
		same_weight(&a->wq, &b->wq);
		same_weight(&a->wk, &b->wk);
		same_weight(&a->wv, &b->wv);
		same_weight(&a->wo, &b->wo);
		same_weight(&a->w_gate, &b->w_gate);
		same_weight(&a->w_up, &b->w_up);
		same_weight(&a->w_down, &b->w_down);
	}
	same_weight(&run->output, &img->output);
	same_weight(&run->tok_embd, &img->tok_embd); /* looked up by row: never interleaved */
	assert_int_equal(img->tok_embd.type, KERN_TYPE_Q4_0);
	llama_model_destroy(img);
	gguf_close(pg);
	llama_model_destroy(run);
}

/* Requantized and interleaved: matmul weights in the target's R16 layout,
 * token_embd in the plain target, norms kept, the file type updated. */
static void test_requantize(void **state)
{
	(void)state;
	const convert_opts o = {.requantize = 1, .target = KERN_TYPE_Q8_0, .repack = KERN_REPACK_ALL, .alignment = 64};
	gguf_ctx *pg;
	llama_model *img = payload_model(&o, &pg);
	assert_int_equal(img->layers[0].w_down.type, KERN_TYPE_Q8_0_R16);
	assert_int_equal(img->output.type, KERN_TYPE_Q8_0_R16);
	assert_int_equal(img->tok_embd.type, KERN_TYPE_Q8_0);
	assert_int_equal(gguf_find_tensor(pg, "blk.0.attn_norm.weight")->type, KERN_TYPE_F32);
	int64_t ft = -1, align = -1;
	assert_int_equal(gguf_get_int(pg, "general.file_type", &ft), 0);
	assert_int_equal(ft, 7);
	assert_int_equal(gguf_get_int(pg, "general.alignment", &align), 0);
	assert_int_equal(align, 64);
	llama_model_destroy(img);
	gguf_close(pg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_type),
		cmocka_unit_test(test_repack_paths_agree),
		cmocka_unit_test(test_requantize),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
