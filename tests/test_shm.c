/* shm module: the HM256 digest, image create/find/map/verify/list/remove over
 * a tiny LLaMA model the test writes itself (and the mini fixtures when
 * HERD_FIXTURES has them), read-only enforcement (a writing child gets
 * SIGSEGV), damaged and foreign-version objects, conversion to Q8_0,
 * adoption, cleanup after failures (a bad source, a file size limit), and
 * fd passing over a socketpair.
 *
 * Every object this test makes is named /herd.shmt<pid>... (or a temporary
 * /herd.tmp.<pid>...) and removed by the teardowns, even when a test fails. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "shm/digest.h"
#include "shm/fdpass.h"
#include "kernels/gemm.h"
#include "shm/image.h"
#include "common/clock.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

/* Tiny model shape: head_dim 16, GQA 4:2. */
enum { T_EMBD = 64, T_HEAD = 4, T_HEAD_KV = 2, T_FF = 128, T_LAYER = 2, T_VOCAB = 64 };

typedef struct test_state {
	char dir[64];        /* private temporary directory */
	char src[128];       /* tiny F32 model */
	char prefix[32];     /* "shmt<pid>": model-name prefix of this run */
} test_state;

/* ---- helpers --------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float rng_float(uint64_t *s) /* [-1, 1) */
{
	return (float)((double)(rng_next(s) >> 11) / 4503599627370496.0 - 1.0);
}

/* Removes /dev/shm entries whose names start with any of the prefixes
 * (files, and the temporaries' private directories with their contents). */
static void rm_shm_prefix(const char *prefix)
{
	DIR *d = opendir(SHM_IMAGE_DIR);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		char path[512];
		snprintf(path, sizeof(path), SHM_IMAGE_DIR "/%s", e->d_name);
		struct stat st;
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			DIR *sub = opendir(path);
			struct dirent *f;
			while (sub && (f = readdir(sub))) {
				if (f->d_name[0] == '.')
					continue;
				char p2[800];
				snprintf(p2, sizeof(p2), "%s/%s", path, f->d_name);
				unlink(p2);
			}
			if (sub)
				closedir(sub);
			rmdir(path);
		} else {
			unlink(path);
		}
	}
	closedir(d);
}

/* Number of /dev/shm entries starting with prefix. */
static int count_shm_prefix(const char *prefix)
{
	int n = 0;
	DIR *d = opendir(SHM_IMAGE_DIR);
	if (!d)
		return -1;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

static void cleanup_run(const test_state *s, pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "herd.%s", s->prefix);
	rm_shm_prefix(p);
	snprintf(p, sizeof(p), "herd.tmp.%ld.", (long)pid);
	rm_shm_prefix(p);
}

static int tmp_leftovers(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "herd.tmp.%ld.", (long)pid);
	return count_shm_prefix(p);
}

static void model_name(const test_state *s, const char *tag, char *out, size_t cap)
{
	snprintf(out, cap, "%s-%s", s->prefix, tag);
}

/* The tiny model's architecture keys. */
static void tiny_set_hparams(gguf_writer *w)
{
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.name", "shm-test-tiny"), 0);
	assert_int_equal(gguf_writer_set_u32(w, "general.file_type", 0), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.context_length", 128), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.embedding_length", T_EMBD), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.block_count", T_LAYER), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.feed_forward_length", T_FF), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.attention.head_count", T_HEAD), 0);
	assert_int_equal(gguf_writer_set_u32(w, "llama.attention.head_count_kv", T_HEAD_KV), 0);
	assert_int_equal(gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f), 0);
}

/* The tiny model's 64-token vocabulary: UNK, BOS, EOS, a..z, "▁w<i>". */
static void tiny_set_vocab(gguf_writer *w)
{
	assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), 0);
	char texts[T_VOCAB][16];
	gguf_str toks[T_VOCAB];
	float scores[T_VOCAB];
	int32_t types[T_VOCAB];
	for (int i = 0; i < T_VOCAB; i++) {
		if (i == 0)
			snprintf(texts[i], sizeof(texts[i]), "<unk>");
		else if (i == 1)
			snprintf(texts[i], sizeof(texts[i]), "<s>");
		else if (i == 2)
			snprintf(texts[i], sizeof(texts[i]), "</s>");
		else if (i < 3 + 26)
			snprintf(texts[i], sizeof(texts[i]), "%c", 'a' + (i - 3));
		else
			snprintf(texts[i], sizeof(texts[i]), "\xe2\x96\x81w%d", i);
		toks[i] = (gguf_str){texts[i], strlen(texts[i])};
		scores[i] = -(float)i;
		types[i] = i == 0 ? 2 : i < 3 ? 3 : 1;
	}
	assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, T_VOCAB), 0);
	assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, scores, T_VOCAB), 0);
	assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types, T_VOCAB), 0);
	assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1), 0);
	assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2), 0);
	assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0), 0);
}

/* Tensor data: kept alive until the write. */
enum { MAXT = 4 + 9 * T_LAYER };

/* Adds every tensor with random F32 values from seed (norms near 1); the
 * malloc'd buffers go into bufs[0..*n_bufs) for the caller to free after
 * the write. */
static void tiny_add_tensors(gguf_writer *w, uint64_t seed, float *bufs[MAXT], int *n_bufs)
{
	int nb = 0;
#define ADD(name, ne0, ne1, norm)                                                          \
	do {                                                                               \
		const int64_t ne[2] = {(ne0), (ne1)};                                      \
		const size_t cnt = (size_t)(ne0) * (size_t)(ne1);                          \
		float *b = malloc(cnt * sizeof(float));                                    \
		assert_non_null(b);                                                        \
		for (size_t k = 0; k < cnt; k++)                                           \
			b[k] = (norm) ? 1.0f + 0.1f * rng_float(&seed)                     \
				      : 0.25f * rng_float(&seed);                          \
		bufs[nb++] = b;                                                            \
		assert_int_equal(gguf_writer_add_tensor(w, name, KERN_TYPE_F32,            \
							(ne1) == 1 ? 1 : 2, ne, b),        \
				 0);                                                       \
	} while (0)
	const int KV = T_EMBD / T_HEAD * T_HEAD_KV;
	ADD("token_embd.weight", T_EMBD, T_VOCAB, 0);
	ADD("output_norm.weight", T_EMBD, 1, 1);
	ADD("output.weight", T_EMBD, T_VOCAB, 0);
	for (int l = 0; l < T_LAYER; l++) {
		char n[64];
#define LN(x) (snprintf(n, sizeof(n), "blk.%d." x ".weight", l), n)
		ADD(LN("attn_norm"), T_EMBD, 1, 1);
		ADD(LN("attn_q"), T_EMBD, T_EMBD, 0);
		ADD(LN("attn_k"), T_EMBD, KV, 0);
		ADD(LN("attn_v"), T_EMBD, KV, 0);
		ADD(LN("attn_output"), T_EMBD, T_EMBD, 0);
		ADD(LN("ffn_norm"), T_EMBD, 1, 1);
		ADD(LN("ffn_gate"), T_EMBD, T_FF, 0);
		ADD(LN("ffn_up"), T_EMBD, T_FF, 0);
		ADD(LN("ffn_down"), T_FF, T_EMBD, 0);
#undef LN
	}
#undef ADD
	*n_bufs = nb;
}

/* Writes the tiny LLaMA model (F32 weights, F32 norms, a 64-token vocab). */
static void write_tiny_model(const char *path, uint64_t seed)
{
	gguf_writer *w;
	char err[256];
	assert_int_equal(gguf_writer_create(&w), 0);
	tiny_set_hparams(w);
	tiny_set_vocab(w);

	/* tensor data: kept alive until the write */
	float *bufs[MAXT];
	int nb = 0;
	tiny_add_tensors(w, seed, bufs, &nb);
	const int rc = gguf_writer_write(w, path, err, sizeof(err));
	if (rc)
		fail_msg("writing %s: %s", path, err);
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	gguf_writer_destroy(w);
}

/* Last-token logits of a fixed prompt (n_vocab floats, caller frees). */
static float *run_logits(const llama_model *m)
{
	llama_ctx *c;
	llama_ctx_opts o = {.n_threads = 1, .n_ctx = 32};
	assert_int_equal(llama_ctx_create(&c, m, &o), 0);
	llama_seq seq;
	llama_seq_init(&seq);
	const int32_t toks[] = {1, 5, 9, 13, 40, 7};
	float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
	assert_non_null(logits);
	assert_int_equal(llama_eval(c, &seq, toks, 6, 0, logits), 0);
	llama_seq_reset(c, &seq);
	llama_ctx_destroy(c);
	return logits;
}

/* The logits of the file at path, its matrices interleaved under the
 * repack policy (KERN_REPACK_*, 0 = as stored) as an image's would be. */
static float *source_logits(const char *path, int repack)
{
	llama_model *m;
	char err[256];
	const int rc = llama_model_load(&m, path, err, sizeof(err));
	if (rc)
		fail_msg("load %s: %s", path, err);
	assert_int_equal(llama_model_repack(m, repack), 0);
	float *l = run_logits(m);
	llama_model_destroy(m);
	return l;
}

static float *image_logits(const shm_image_map_t *map)
{
	gguf_ctx *g;
	llama_model *m;
	char err[256];
	int rc = shm_image_gguf(map, &g, err, sizeof(err));
	if (rc)
		fail_msg("image gguf: %s", err);
	rc = llama_model_from_gguf(&m, g, err, sizeof(err));
	if (rc)
		fail_msg("image model: %s", err);
	float *l = run_logits(m);
	llama_model_destroy(m);
	gguf_close(g);
	return l;
}

static double cosine(const float *a, const float *b, int n)
{
	double ab = 0, aa = 0, bb = 0;
	for (int i = 0; i < n; i++) {
		ab += (double)a[i] * b[i];
		aa += (double)a[i] * a[i];
		bb += (double)b[i] * b[i];
	}
	return ab / sqrt(aa * bb + 1e-30);
}

static void create_ok(const test_state *s, const char *tag, const char *src, const char *wtype,
		      shm_image_info *info)
{
	char name[64], err[512];
	model_name(s, tag, name, sizeof(name));
	shm_create_opts o = {.source_path = src, .model_name = name, .weight_type = wtype,
			     .gid = (gid_t)-1};
	const int rc = shm_image_create(&o, info, err, sizeof(err));
	if (rc)
		fail_msg("shm_image_create(%s): %s (%s)", name, err, herd_strerror(rc));
}

/* Copies object src into a new object dst (name "/herd...."), keeping the
 * first keep bytes (SIZE_MAX = all), then lets mutate change the bytes. */
static void copy_object(const char *src, const char *dst, size_t keep,
			void (*mutate)(uint8_t *p, size_t n))
{
	int fd;
	assert_int_equal(shm_image_open(src, &fd), 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	size_t n = (size_t)st.st_size < keep ? (size_t)st.st_size : keep;
	uint8_t *buf = malloc(n ? n : 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, n, 0), (ssize_t)n);
	close(fd);
	if (mutate)
		mutate(buf, n);
	const int out = shm_open(dst, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(out >= 0);
	assert_int_equal(write(out, buf, n), (ssize_t)n);
	close(out);
	free(buf);
}

static int map_object(const char *name, shm_image_map_t *m, char *err, size_t errlen)
{
	int fd;
	int rc = shm_image_open(name, &fd);
	if (rc)
		return rc;
	rc = shm_image_map(fd, m, err, errlen);
	close(fd);
	return rc;
}

/* ---- fixtures ------------------------------------------------------------ */

static int group_setup(void **state)
{
	test_state *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	snprintf(s->prefix, sizeof(s->prefix), "shmt%ld", (long)getpid());
	snprintf(s->dir, sizeof(s->dir), "/tmp/herd_test_shm.XXXXXX");
	if (!mkdtemp(s->dir)) {
		free(s);
		return -1;
	}
	snprintf(s->src, sizeof(s->src), "%s/tiny.gguf", s->dir);
	write_tiny_model(s->src, 42);
	*state = s;
	return 0;
}

static int group_teardown(void **state)
{
	test_state *s = *state;
	if (!s)
		return 0;
	cleanup_run(s, getpid());
	DIR *d = opendir(s->dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", s->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(s->dir);
	free(s);
	return 0;
}

static int test_teardown(void **state)
{
	cleanup_run(*state, getpid());
	return 0;
}

/* ---- digest ------------------------------------------------------------- */

static void test_digest(void **state)
{
	(void)state;
	const size_t n = 100003;
	uint8_t *buf = malloc(n);
	assert_non_null(buf);
	uint64_t seed = 7;
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)rng_next(&seed);
	uint8_t one[32], part[32], other[32];
	shm_digest(buf, n, one);
	/* any split of the input gives the same digest */
	const size_t cuts[] = {0, 1, 3, 31, 32, 33, 64, 1000, 4097};
	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		shm_digest_state ds;
		shm_digest_init(&ds);
		size_t off = 0;
		while (off < n) {
			size_t k = cuts[c] + (off % 7);
			if (k > n - off)
				k = n - off;
			shm_digest_update(&ds, buf + off, k);
			off += k;
			if (k == 0)
				shm_digest_update(&ds, buf + off, k = 1), off += 1;
		}
		shm_digest_final(&ds, part);
		assert_memory_equal(one, part, 32);
	}
	/* one flipped bit changes every output word */
	buf[n / 2] ^= 0x10;
	shm_digest(buf, n, other);
	buf[n / 2] ^= 0x10;
	for (int w = 0; w < 4; w++)
		assert_memory_not_equal(one + 8 * w, other + 8 * w, 8);
	/* trailing zeros count: length is part of the hash */
	uint8_t z[40] = {0}, a[32], b[32];
	shm_digest(z, 33, a);
	shm_digest(z, 32, b);
	assert_memory_not_equal(a, b, 32);
	/* update_zeros == hashing a zero buffer */
	shm_digest_state ds;
	shm_digest_init(&ds);
	shm_digest_update(&ds, buf, 5);
	shm_digest_update_zeros(&ds, 9000);
	shm_digest_final(&ds, a);
	uint8_t *zb = calloc(1, 9005);
	assert_non_null(zb);
	memcpy(zb, buf, 5);
	shm_digest(zb, 9005, b);
	assert_memory_equal(a, b, 32);
	free(zb);
	char hex[65];
	shm_digest_hex(one, 32, hex);
	assert_int_equal(strlen(hex), 64);
	shm_digest_hex(one, 8, hex);
	assert_int_equal(strlen(hex), 16);
	free(buf);

	/* throughput, for information only (tests never assert on speed) */
	const size_t big = (size_t)64 << 20;
	uint8_t *m = malloc(big);
	assert_non_null(m);
	memset(m, 0x5a, big);
	const double t0 = clock_mono_s();
	shm_digest(m, big, a);
	const double dt = clock_mono_s() - t0;
	printf("# HM256: %.2f GB/s over %zu MB\n", (double)big / dt / 1e9, big >> 20);
	free(m);
}

/* ---- create / map / verify --------------------------------------------- */

/* The created image's description, name and file mode. */
static void check_created(const shm_image_info *info, const char *model)
{
	assert_false(info->adopted);
	assert_true(info->valid);
	assert_string_equal(info->model, model);
	assert_string_equal(info->target_type, "");
	assert_string_equal(info->weight_type, "F32");
	assert_int_equal(info->mode, 0440);
	char want[128];
	char hex16[17];
	memcpy(hex16, info->digest_hex, 16);
	hex16[16] = '\0';
	snprintf(want, sizeof(want), "/herd.%s.%s", model, hex16);
	assert_string_equal(info->name, want);
	assert_int_equal(tmp_leftovers(getpid()), 0);

	char path[160];
	snprintf(path, sizeof(path), SHM_IMAGE_DIR "%s", info->name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0440);
	assert_int_equal((uint64_t)st.st_size, info->image_size);
}

/* Maps the image read-only (timed: the attach cost an agent pays). */
static void map_timed(const shm_image_info *info, shm_image_map_t *m)
{
	char err[512];
	int fd;
	assert_int_equal(shm_image_open(info->name, &fd), 0);
	const double t0 = clock_mono_s();
	int rc = shm_image_map(fd, m, err, sizeof(err));
	const double dt = clock_mono_s() - t0;
	close(fd);
	if (rc)
		fail_msg("map: %s", err);
	printf("# attach (map + header check) of %zu bytes: %.1f us\n", m->size, dt * 1e6);
}

/* The header: magic, version, sizes, offsets, source identity, digest,
 * zero reserved bytes and padding; the digest verifies. */
static void check_header(const test_state *s, const shm_image_map_t *m, const shm_image_info *info,
			 const char *model)
{
	char err[512];
	const shm_image_header *h = m->hdr;
	assert_memory_equal(h->magic, "HERDIMG\0", 8);
	assert_int_equal(h->version, SHM_IMAGE_VERSION);
	assert_int_equal(h->header_size, 512);
	assert_int_equal(h->digest_algo, SHM_DIGEST_HM256);
	assert_int_equal(h->payload_offset % 4096, 0);
	assert_int_equal(h->image_size, m->size);
	assert_int_equal(h->payload_offset + h->payload_size, h->image_size);
	assert_int_equal(h->tensor_dir_offset, h->payload_offset);
	assert_int_equal(h->tensor_align, 64);
	assert_int_equal(h->n_tensors, 3 + 9 * T_LAYER);
	assert_int_equal(h->flags & SHM_IMAGE_F_CONVERTED, 0);
	assert_int_equal(h->creator_pid, (uint32_t)getpid());
	struct stat sst;
	assert_int_equal(stat(s->src, &sst), 0);
	assert_int_equal(h->source_size, (uint64_t)sst.st_size);
	assert_true(h->source_mtime_ns == (int64_t)sst.st_mtim.tv_sec * 1000000000 + sst.st_mtim.tv_nsec);
	assert_string_equal(h->model, model);
	assert_memory_equal(h->digest, info->digest, 32);
	for (size_t i = 0; i < sizeof(h->reserved); i++)
		assert_int_equal(h->reserved[i], 0);
	/* the padding between header and payload is zero */
	for (size_t i = h->header_size; i < h->payload_offset; i++)
		assert_int_equal(m->base[i], 0);
	assert_int_equal(shm_image_verify(m, err, sizeof(err)), 0);

	shm_image_info d;
	shm_image_describe(m, &d);
	assert_string_equal(d.digest_hex, info->digest_hex);
}

/* The payload is a GGUF with every tensor 64-byte aligned, equal to the
 * source. */
static void check_payload(const test_state *s, const shm_image_map_t *m)
{
	char err[512];
	gguf_ctx *g, *sg;
	assert_int_equal(shm_image_gguf(m, &g, err, sizeof(err)), 0);
	assert_int_equal(gguf_open(&sg, s->src, err, sizeof(err)), 0);
	assert_int_equal(gguf_alignment(g), 64);
	int64_t align_v;
	assert_int_equal(gguf_get_int(g, "general.alignment", &align_v), 0);
	assert_int_equal(align_v, 64);
	assert_int_equal(gguf_n_tensors(g), gguf_n_tensors(sg));
	assert_int_equal(gguf_n_kv(g), gguf_n_kv(sg) + 1);
	assert_ptr_equal(gguf_base(g), m->payload);
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		const gguf_tensor *u = gguf_tensor_at(sg, i);
		assert_int_equal((uintptr_t)t->data % 64, 0);
		assert_true((const uint8_t *)t->data >= m->payload &&
			    (const uint8_t *)t->data + t->size <= m->base + m->size);
		assert_int_equal(t->type, u->type);
		assert_int_equal(t->size, u->size);
		assert_memory_equal(t->data, u->data, t->size);
	}
	gguf_close(sg);
	gguf_close(g);
}

static void test_create_map_verify(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	char model[64];
	model_name(s, "a", model, sizeof(model));
	create_ok(s, "a", s->src, NULL, &info);
	check_created(&info, model);
	shm_image_map_t m;
	map_timed(&info, &m);
	check_header(s, &m, &info, model);
	check_payload(s, &m);

	/* the model runs from the shared pages, bit-identical to the file */
	float *a = source_logits(s->src, 0), *b = image_logits(&m);
	assert_memory_equal(a, b, sizeof(float) * T_VOCAB);
	free(a);
	free(b);
	shm_image_unmap(&m);
	shm_image_unmap(&m); /* twice is fine */
	shm_image_unmap(NULL);
}

/* ---- read-only ---------------------------------------------------------- */

static void test_readonly(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	char err[256];
	create_ok(s, "ro", s->src, NULL, &info);

	/* a child that maps the image and writes to it dies of SIGSEGV */
	const pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* cmocka catches SIGSEGV to report a failing test: not here */
		signal(SIGSEGV, SIG_DFL);
		shm_image_map_t m;
		if (shm_image_attach(info.name, &m, NULL, 0) != 0)
			_exit(3);
		volatile uint8_t *p = (volatile uint8_t *)m.payload;
		p[100] = 0xff; /* must fault */
		_exit(4);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);

	/* nor can a read-only descriptor be mapped or re-protected writable */
	int fd;
	assert_int_equal(shm_image_open(info.name, &fd), 0);
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p == MAP_FAILED);
	assert_int_equal(errno, EACCES);
	shm_image_map_t m;
	assert_int_equal(shm_image_map(fd, &m, err, sizeof(err)), 0);
	close(fd);
	assert_int_equal(mprotect((void *)m.base, 4096, PROT_READ | PROT_WRITE), -1);
	assert_int_equal(errno, EACCES);
	/* the content is unchanged */
	assert_int_equal(shm_image_verify(&m, err, sizeof(err)), 0);
	assert_memory_equal(m.hdr->digest, info.digest, 32);
	shm_image_unmap(&m);
}

/* ---- list with attach counts ------------------------------------------- */

typedef struct list_find {
	const char *name;
	shm_image_info found;
	int seen;
	int n_total;
} list_find;

static int list_cb(void *user, const shm_image_info *i)
{
	list_find *f = user;
	f->n_total++;
	if (strcmp(i->name, f->name) == 0) {
		f->found = *i;
		f->seen++;
	}
	return 0;
}

static list_find list_one(const char *name, int flags)
{
	list_find f = {.name = name};
	assert_int_equal(shm_image_list(flags, list_cb, &f), 0);
	return f;
}

static int stop_cb(void *user, const shm_image_info *i)
{
	(void)i;
	(*(int *)user)++;
	return 42;
}

static void test_list_attach(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	create_ok(s, "list", s->src, NULL, &info);

	list_find f = list_one(info.name, SHM_LIST_ATTACH);
	assert_int_equal(f.seen, 1);
	assert_true(f.found.valid);
	assert_string_equal(f.found.model, info.model);
	assert_string_equal(f.found.digest_hex, info.digest_hex);
	assert_int_equal(f.found.image_size, info.image_size);
	assert_int_equal(f.found.mode, 0440);
	assert_int_equal(f.found.n_attached, 0);

	f = list_one(info.name, 0);
	assert_int_equal(f.found.n_attached, -1);

	shm_image_map_t m;
	assert_int_equal(shm_image_attach(info.name, &m, NULL, 0), 0);
	f = list_one(info.name, SHM_LIST_ATTACH | SHM_LIST_VERIFY);
	assert_true(f.found.valid);
	assert_int_equal(f.found.n_attached, 1);

	/* two children attach too (each counted once, even when mapping twice) */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	int rdy[2];
	assert_int_equal(pipe(rdy), 0);
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			close(pfd[1]);
			shm_image_map_t a, b;
			if (shm_image_attach(info.name, &a, NULL, 0) ||
			    shm_image_attach(info.name, &b, NULL, 0))
				_exit(3);
			char c = 'r';
			if (write(rdy[1], &c, 1) != 1)
				_exit(4);
			(void)!read(pfd[0], &c, 1); /* until the parent closes */
			_exit(0);
		}
	}
	close(pfd[0]);
	close(rdy[1]);
	for (int k = 0; k < 2; k++) {
		char c;
		assert_int_equal(read(rdy[0], &c, 1), 1);
	}
	f = list_one(info.name, SHM_LIST_ATTACH);
	assert_int_equal(f.found.n_attached, 3);
	close(pfd[1]);
	close(rdy[0]);
	for (int k = 0; k < 2; k++) {
		int st;
		assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	shm_image_unmap(&m);
	f = list_one(info.name, SHM_LIST_ATTACH);
	assert_int_equal(f.found.n_attached, 0);

	/* a nonzero callback value stops the listing */
	int calls = 0;
	assert_int_equal(shm_image_list(0, stop_cb, &calls), 42);
	assert_int_equal(calls, 1);
	assert_int_equal(shm_image_list(0, NULL, NULL), HERD_E_INVAL);
}

/* ---- damaged objects ------------------------------------------------------ */

/* an image of the previous format version (1: no source device and inode) */
static void set_version_old(uint8_t *p, size_t n)
{
	(void)n;
	const uint32_t v = SHM_IMAGE_VERSION - 1;
	memcpy(p + offsetof(shm_image_header, version), &v, 4);
}

static void zero_header(uint8_t *p, size_t n)
{
	(void)n;
	memset(p, 0, sizeof(shm_image_header));
}

static void bad_magic(uint8_t *p, size_t n)
{
	(void)n;
	p[0] = 'X';
}

static void flip_payload(uint8_t *p, size_t n)
{
	p[n - 7] ^= 0x01;
}

static void misalign_payload(uint8_t *p, size_t n)
{
	(void)n;
	uint64_t off;
	memcpy(&off, p + offsetof(shm_image_header, payload_offset), 8);
	off -= 64;
	memcpy(p + offsetof(shm_image_header, payload_offset), &off, 8);
}

static void bad_algo(uint8_t *p, size_t n)
{
	(void)n;
	const uint32_t a = 99;
	memcpy(p + offsetof(shm_image_header, digest_algo), &a, 4);
}

/* The name of a damaged copy of the image: "/herd.<prefix>-bad.<tag>" in
 * the caller's name buffer. */
#define BAD(tag) (snprintf(name, sizeof(name), "/herd.%s-bad.%s", s->prefix, tag), name)

/* Damaged headers and sizes are refused at attach, each with its code. */
static void damaged_headers(const test_state *s, const shm_image_info *info)
{
	char err[512], name[128];
	shm_image_map_t m;
	/* another format version: refused with both versions named */
	copy_object(info->name, BAD("version"), SIZE_MAX, set_version_old);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_VERSION);
	assert_non_null(strstr(err, "version 2"));
	assert_non_null(strstr(err, "version 1"));
	assert_null(m.base);

	copy_object(info->name, BAD("trunc"), info->image_size - 100, NULL);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_TRUNCATED);
	assert_non_null(strstr(err, "bytes"));

	copy_object(info->name, BAD("tiny"), 10, NULL);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_TRUNCATED);

	copy_object(info->name, BAD("empty"), 0, NULL);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_FORMAT);

	copy_object(info->name, BAD("noheader"), SIZE_MAX, zero_header);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "incomplete"));

	copy_object(info->name, BAD("magic"), SIZE_MAX, bad_magic);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_FORMAT);

	copy_object(info->name, BAD("align"), SIZE_MAX, misalign_payload);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_RANGE);

	copy_object(info->name, BAD("algo"), SIZE_MAX, bad_algo);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), HERD_E_UNSUPPORTED);
}

/* One flipped payload bit: the header is fine (attach works) but the digest
 * check fails, through a mapping and through a descriptor. */
static void damaged_payload(const test_state *s, const shm_image_info *info)
{
	char err[512], name[128];
	shm_image_map_t m;
	copy_object(info->name, BAD("flip"), SIZE_MAX, flip_payload);
	assert_int_equal(map_object(name, &m, err, sizeof(err)), 0);
	assert_int_equal(shm_image_verify(&m, err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "digest mismatch"));
	shm_image_unmap(&m);
	{
		int vfd;
		assert_int_equal(shm_image_open(name, &vfd), 0);
		assert_int_equal(shm_image_verify_fd(vfd, err, sizeof(err)), HERD_E_FORMAT);
		assert_non_null(strstr(err, "digest mismatch"));
		close(vfd);
		assert_int_equal(shm_image_open(BAD("version"), &vfd), 0);
		assert_int_equal(shm_image_verify_fd(vfd, err, sizeof(err)), HERD_E_VERSION);
		close(vfd);
		assert_int_equal(shm_image_open(info->name, &vfd), 0);
		assert_int_equal(shm_image_verify_fd(vfd, err, sizeof(err)), 0);
		close(vfd);
	}
}

/* list reports each as it is. */
static void damaged_list(const test_state *s, const shm_image_info *info)
{
	char name[128];
	list_find f = list_one(BAD("version"), SHM_LIST_VERIFY);
	assert_int_equal(f.seen, 1);
	assert_false(f.found.valid);
	assert_int_equal(f.found.status, HERD_E_VERSION);
	assert_non_null(strstr(f.found.problem, "version 2"));
	f = list_one(BAD("flip"), 0);
	assert_true(f.found.valid); /* header only */
	f = list_one(BAD("flip"), SHM_LIST_VERIFY);
	assert_false(f.found.valid);
	assert_int_equal(f.found.status, HERD_E_FORMAT);
	f = list_one(BAD("trunc"), 0);
	assert_false(f.found.valid);
	assert_int_equal(f.found.status, HERD_E_TRUNCATED);
	assert_int_equal(f.found.image_size, info->image_size - 100);
}
#undef BAD

/* Bad names and arguments. */
static void damaged_names(const test_state *s)
{
	char err[512];
	shm_image_map_t m;
	int fd;
	assert_int_equal(shm_image_open("/other.x", &fd), HERD_E_INVAL);
	assert_int_equal(fd, -1);
	assert_int_equal(shm_image_open("/herd.a/b", &fd), HERD_E_INVAL);
	assert_int_equal(shm_image_open("/herd.", &fd), HERD_E_INVAL);
	assert_int_equal(shm_image_open("/herd.does-not-exist.0", &fd), -ENOENT);
	assert_int_equal(shm_image_map(-1, &m, err, sizeof(err)), -EBADF);
	/* a regular non-shm file works as a descriptor but is not an image */
	fd = open(s->src, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(shm_image_map(fd, &m, err, sizeof(err)), HERD_E_FORMAT);
	close(fd);
}

static void test_damaged(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	create_ok(s, "dmg", s->src, NULL, &info);
	damaged_headers(s, &info);
	damaged_payload(s, &info);
	damaged_list(s, &info);
	damaged_names(s);
}

/* ---- conversion ----------------------------------------------------------- */

static void test_convert_q8_0(void **state)
{
	test_state *s = *state;
	shm_image_info f32, q8;
	char err[256];
	create_ok(s, "cv", s->src, NULL, &f32);
	create_ok(s, "cv", s->src, "q8_0", &q8);
	assert_false(q8.adopted);
	assert_string_not_equal(q8.name, f32.name);
	assert_string_equal(q8.target_type, "Q8_0");
	assert_string_equal(q8.weight_type, "Q8_0");
	assert_true(q8.flags & SHM_IMAGE_F_CONVERTED);
	assert_int_equal(!!(q8.flags & SHM_IMAGE_F_REPACKED), !!kern_repack_worthwhile());
	assert_true(q8.image_size < f32.image_size);

	shm_image_map_t m;
	assert_int_equal(shm_image_attach(q8.name, &m, err, sizeof(err)), 0);
	assert_int_equal(shm_image_verify(&m, err, sizeof(err)), 0);
	gguf_ctx *g;
	assert_int_equal(shm_image_gguf(&m, &g, err, sizeof(err)), 0);
	int n2 = 0;
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor *t = gguf_tensor_at(g, i);
		assert_int_equal((uintptr_t)t->data % 64, 0);
		if (t->n_dims == 2) {
			/* matmul weights are interleaved for the GEMM kernels where this
			 * CPU has them (for Q8_0: AVX-512, not AVX2's Q4_0-only
			 * policy); token_embd (looked up by row) never is */
			const int is_embd = t->name.len == 17 && !memcmp(t->name.ptr, "token_embd.weight", 17);
			const int r16 = (q8.flags & SHM_IMAGE_F_REPACKED) &&
					!(q8.flags & SHM_IMAGE_F_REPACK_Q4_0) && !is_embd;
			assert_int_equal(t->type, r16 ? KERN_TYPE_Q8_0_R16 : KERN_TYPE_Q8_0);
			n2++;
		} else {
			assert_int_equal(t->type, KERN_TYPE_F32); /* norms stay F32 */
		}
	}
	assert_int_equal(n2, 2 + 7 * T_LAYER);
	int64_t ft;
	assert_int_equal(gguf_get_int(g, "general.file_type", &ft), 0);
	assert_int_equal(ft, 7); /* LLAMA_FTYPE_MOSTLY_Q8_0 */
	gguf_close(g);

	/* the converted model runs and stays close to the F32 one */
	float *a = source_logits(s->src, 0), *b = image_logits(&m);
	const double c = cosine(a, b, T_VOCAB);
	printf("# Q8_0 image vs F32 source: cosine %.6f\n", c);
	assert_true(c > 0.999);
	free(a);
	free(b);
	shm_image_unmap(&m);

	/* find tells the two apart by target type */
	shm_image_info x;
	assert_int_equal(shm_image_find(q8.model, s->src, "Q8_0", 0, &x, err, sizeof(err)), 0);
	assert_string_equal(x.name, q8.name);
	assert_int_equal(shm_image_find(q8.model, s->src, NULL, 0, &x, err, sizeof(err)), 0);
	assert_string_equal(x.name, f32.name);
	assert_int_equal(shm_image_find(q8.model, s->src, "Q4_0", 0, &x, err, sizeof(err)),
			 HERD_E_MISSING);

	/* Q4_0 as well (block 32 fits every row) */
	shm_image_info q4;
	create_ok(s, "cv", s->src, "Q4_0", &q4);
	assert_string_equal(q4.weight_type, "Q4_0");
	assert_true(q4.image_size < q8.image_size);
	/* K-quants need rows of 256: our 64-wide rows stay as they were */
	shm_image_info qk;
	create_ok(s, "cv", s->src, "Q4_K", &qk);
	assert_string_equal(qk.target_type, "Q4_K");
	assert_string_equal(qk.weight_type, "F32");
}

/* Every fixture model converts to Q8_0 and its image gives logits close to
 * the file's (skipped when the fixtures are absent). */
static void test_fixture_images(void **state)
{
	test_state *s = *state;
	const char *dir = getenv("HERD_FIXTURES");
	if (!dir || !dir[0])
		dir = HERD_FIXTURES;
	char path[512];
	snprintf(path, sizeof(path), "%s/mini-Q4_K_M.gguf", dir);
	if (access(path, R_OK) != 0) {
		printf("# fixtures not found in %s: skipped\n", dir);
		skip();
	}
	shm_image_info kept, q8;
	create_ok(s, "fx", path, NULL, &kept);
	create_ok(s, "fx", path, "Q8_0", &q8);
	assert_string_equal(q8.weight_type, "Q8_0");
	shm_image_map_t a, b;
	assert_int_equal(shm_image_attach(kept.name, &a, NULL, 0), 0);
	assert_int_equal(shm_image_attach(q8.name, &b, NULL, 0), 0);
	/* the kept image runs exactly as the file does with the same matrices
	 * interleaved (the GEMMs' sums are not the plain dots' order) */
	float *ref = source_logits(path, kern_repack_worthwhile());
	float *la = image_logits(&a), *lb = image_logits(&b);
	llama_model *mm;
	char err[256];
	assert_int_equal(llama_model_load(&mm, path, err, sizeof(err)), 0);
	const int nv = mm->hp.n_vocab;
	llama_model_destroy(mm);
	assert_memory_equal(ref, la, sizeof(float) * (size_t)nv);
	const double c = cosine(ref, lb, nv);
	printf("# mini-Q4_K_M -> Q8_0 image: cosine %.6f\n", c);
	assert_true(c > 0.99);
	free(ref);
	free(la);
	free(lb);
	shm_image_unmap(&a);
	shm_image_unmap(&b);
}

/* ---- adopt / find ----------------------------------------------------------- */

static void test_adopt_find(void **state)
{
	test_state *s = *state;
	shm_image_info a, b, x;
	char err[256], src2[160];
	create_ok(s, "adopt", s->src, NULL, &a);
	assert_false(a.adopted);
	/* found by model + source, headers only */
	const double t0 = clock_mono_s();
	assert_int_equal(shm_image_find(a.model, s->src, NULL, 0, &x, err, sizeof(err)), 0);
	printf("# find: %.1f us\n", (clock_mono_s() - t0) * 1e6);
	assert_string_equal(x.name, a.name);
	assert_true(x.valid);
	/* created again: adopted, same object */
	create_ok(s, "adopt", s->src, NULL, &b);
	assert_true(b.adopted);
	assert_string_equal(b.name, a.name);
	assert_int_equal(b.created_ns, a.created_ns);
	/* without the find shortcut the rebuilt copy has the same name: adopted */
	char model[64];
	model_name(s, "adopt", model, sizeof(model));
	shm_create_opts o = {.source_path = s->src, .model_name = model, .gid = (gid_t)-1,
			     .no_adopt = 1};
	assert_int_equal(shm_image_create(&o, &b, err, sizeof(err)), 0);
	assert_true(b.adopted);
	assert_string_equal(b.name, a.name);
	assert_int_equal(tmp_leftovers(getpid()), 0);

	/* another model name or another source: not found */
	assert_int_equal(shm_image_find("nosuchmodel", s->src, NULL, 0, &x, err, sizeof(err)),
			 HERD_E_MISSING);
	snprintf(src2, sizeof(src2), "%s/tiny2.gguf", s->dir);
	write_tiny_model(src2, 43);
	assert_int_equal(shm_image_find(a.model, src2, NULL, 0, &x, err, sizeof(err)), HERD_E_MISSING);
	assert_int_equal(shm_image_find(a.model, "/nonexistent/x.gguf", NULL, 0, &x, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(shm_image_find("bad/name", s->src, NULL, 0, &x, err, sizeof(err)),
			 HERD_E_INVAL);

	/* a source whose mtime changed (same bytes) is rebuilt; the digest (and
	 * so the name) is the same, and the new header records the new mtime */
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000, .tv_nsec = 5}};
	assert_int_equal(utimensat(AT_FDCWD, s->src, ts, 0), 0);
	assert_int_equal(shm_image_find(a.model, s->src, NULL, 0, &x, err, sizeof(err)), HERD_E_MISSING);
	create_ok(s, "adopt", s->src, NULL, &b);
	assert_false(b.adopted);
	assert_string_equal(b.name, a.name);
	assert_int_equal(b.source_mtime_ns, 1000000000000000005ll);
	assert_int_equal(shm_image_find(a.model, s->src, NULL, 0, &x, err, sizeof(err)), 0);
	assert_string_equal(x.name, a.name);

	/* a damaged image under the final name is not adopted but replaced */
	{
		/* as the owner: make it writable again, then damage one byte */
		int fd = shm_open(a.name, O_RDONLY, 0);
		assert_true(fd >= 0);
		assert_int_equal(fchmod(fd, 0640), 0);
		close(fd);
		fd = shm_open(a.name, O_RDWR, 0);
		assert_true(fd >= 0);
		uint8_t byte = 0x77;
		assert_int_equal(pwrite(fd, &byte, 1, (off_t)a.image_size - 3), 1);
		close(fd);
	}
	shm_image_map_t m;
	assert_int_equal(shm_image_attach(a.name, &m, NULL, 0), 0);
	assert_int_equal(shm_image_verify(&m, NULL, 0), HERD_E_FORMAT);
	shm_image_unmap(&m);
	create_ok(s, "adopt", s->src, NULL, &b);
	assert_false(b.adopted);
	assert_string_equal(b.name, a.name);
	assert_int_equal(b.mode, 0440);
	assert_int_equal(shm_image_attach(a.name, &m, NULL, 0), 0);
	assert_int_equal(shm_image_verify(&m, NULL, 0), 0);
	shm_image_unmap(&m);
	unlink(src2);
}

/* ---- trust rule ---------------------------------------------------------------- */

/* find: *fd, n_untrusted and notice of the model of tag from src. */
static int find_tag(const test_state *s, const char *tag, const char *src, shm_image_info *x,
		    int *fd)
{
	char name[64], err[256];
	model_name(s, tag, name, sizeof(name));
	return shm_image_find_fd(name, src, NULL, 0, 0, fd, x, err, sizeof(err));
}

static void set_mode(const char *name, mode_t mode)
{
	int fd = shm_open(name, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* Only objects of our uid with mode 0440 and the source's identity are
 * found; the descriptor is the object that was checked. */
static void test_trust_find(void **state)
{
	test_state *s = *state;
	shm_image_info a, x;
	struct stat st1, st2;
	int fd;
	create_ok(s, "trust", s->src, NULL, &a);
	assert_int_equal(find_tag(s, "trust", s->src, &x, &fd), 0);
	assert_true(fd >= 0);
	assert_string_equal(x.name, a.name);
	assert_int_equal(x.n_untrusted, 0);
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm%s", a.name);
	assert_int_equal(fstat(fd, &st1), 0);
	assert_int_equal(stat(path, &st2), 0);
	assert_true(st1.st_ino == st2.st_ino);
	close(fd);
	struct stat sst0;
	assert_int_equal(stat(s->src, &sst0), 0);
	assert_true(x.source_ino == (uint64_t)sst0.st_ino && x.source_dev == (uint64_t)sst0.st_dev);
	/* another mode: skipped, said why */
	set_mode(a.name, 0444);
	assert_int_equal(find_tag(s, "trust", s->src, &x, &fd), HERD_E_MISSING);
	assert_int_equal(fd, -1);
	assert_int_equal(x.n_untrusted, 1);
	assert_non_null(strstr(x.notice, "mode 0444"));
	/* with the mode it was asked for, found */
	char name[64], err[256];
	model_name(s, "trust", name, sizeof(name));
	assert_int_equal(shm_image_find_fd(name, s->src, NULL, 0, 0444, NULL, &x, err, sizeof(err)), 0);
	set_mode(a.name, 0440);
	/* another owner (root only: chown) */
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, (gid_t)-1), 0);
		assert_int_equal(find_tag(s, "trust", s->src, &x, &fd), HERD_E_MISSING);
		assert_non_null(strstr(x.notice, "owned by uid 65534"));
		assert_int_equal(chown(path, 0, (gid_t)-1), 0);
	}
	/* the source replaced by a copy (same bytes, size and mtime, another
	 * inode): not the file the image was made from */
	struct stat sst;
	char copy[160];
	assert_int_equal(stat(s->src, &sst), 0);
	snprintf(copy, sizeof(copy), "%s/copy.gguf", s->dir);
	write_tiny_model(copy, 42);
	const struct timespec ts[2] = {sst.st_atim, sst.st_mtim};
	assert_int_equal(utimensat(AT_FDCWD, copy, ts, 0), 0);
	char saved[160];
	snprintf(saved, sizeof(saved), "%s/saved.gguf", s->dir);
	assert_int_equal(rename(s->src, saved), 0);
	assert_int_equal(rename(copy, s->src), 0);
	assert_int_equal(find_tag(s, "trust", s->src, &x, &fd), HERD_E_MISSING);
	assert_int_equal(rename(saved, s->src), 0);
	assert_int_equal(find_tag(s, "trust", s->src, &x, &fd), 0);
	close(fd);
}

/* A name taken by an object that is not ours is never replaced nor fatal:
 * the image gets another name, which find accepts. */
static void test_trust_squat(void **state)
{
	test_state *s = *state;
	shm_image_info a, b, x;
	int fd;
	create_ok(s, "squat", s->src, NULL, &a);
	assert_int_equal(shm_image_remove(a.name), 0);
	char path[128];
	snprintf(path, sizeof(path), "/dev/shm%s", a.name);
	assert_int_equal(mkdir(path, 0755), 0); /* not a regular file: not ours */
	create_ok(s, "squat", s->src, NULL, &b);
	printf("# squatted %s: published as %s (%s)\n", a.name, b.name, b.notice);
	assert_false(b.adopted);
	assert_int_equal(strncmp(b.name, a.name, strlen(a.name)), 0);
	assert_int_equal(strlen(b.name), strlen(a.name) + 9);
	assert_int_equal(b.n_untrusted, 1);
	assert_non_null(strstr(b.notice, "not ours"));
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(find_tag(s, "squat", s->src, &x, &fd), 0);
	assert_string_equal(x.name, b.name);
	close(fd);
	/* created again: the image under the other name is adopted */
	create_ok(s, "squat", s->src, NULL, &x);
	assert_true(x.adopted);
	assert_string_equal(x.name, b.name);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(tmp_leftovers(getpid()), 0);
}

/* ---- failures leave nothing behind ------------------------------------ */

static void test_bad_inputs(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	char err[512], model[64], bad[160];
	model_name(s, "bad", model, sizeof(model));
	shm_create_opts o = {.source_path = s->src, .model_name = model, .gid = (gid_t)-1};

	snprintf(bad, sizeof(bad), "%s/garbage.gguf", s->dir);
	FILE *f = fopen(bad, "wb");
	assert_non_null(f);
	fputs("GGUF this is not really a gguf file at all", f);
	fclose(f);
	o.source_path = bad;
	int rc = shm_image_create(&o, &info, err, sizeof(err));
	assert_true(rc == HERD_E_FORMAT || rc == HERD_E_TRUNCATED || rc == HERD_E_UNSUPPORTED);
	assert_non_null(strstr(err, bad));
	assert_non_null(strstr(err, "bad source"));
	assert_false(info.valid);
	unlink(bad);

	o.source_path = "/nonexistent/model.gguf";
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/model.gguf"));

	o.source_path = s->src;
	o.weight_type = "Q9_9";
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "Q9_9"));
	o.weight_type = "Q8_K";
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), HERD_E_INVAL);
	o.weight_type = NULL;

	o.mode = 0640;
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), HERD_E_INVAL);
	o.mode = 0;

	const char *bad_names[] = {"", "a/b", ".hidden", "tmp", "tmp.1.2", "sp ace",
				   "0123456789012345678901234567890123456789012345678901234567890123"};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		o.model_name = bad_names[i];
		assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), HERD_E_INVAL);
	}
	o.model_name = NULL;
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), HERD_E_INVAL);
	assert_int_equal(shm_image_create(NULL, &info, err, sizeof(err)), HERD_E_INVAL);

	/* a custom read-only mode is applied */
	o.model_name = model;
	o.mode = 0400;
	assert_int_equal(shm_image_create(&o, &info, err, sizeof(err)), 0);
	assert_int_equal(info.mode, 0400);
	assert_int_equal(tmp_leftovers(getpid()), 0);
	kern_type t;
	assert_int_equal(shm_image_parse_type("bf16", &t), 0);
	assert_int_equal(t, KERN_TYPE_BF16);
	assert_int_equal(shm_image_parse_type("Q8_1", &t), HERD_E_INVAL);
}

/* Creates an image in a child under a file size limit; returns the child's
 * status. The child exits 0 when create failed with -EFBIG and left no
 * temporary object, 1 when it succeeded, 2 otherwise. */
static int create_limited(const test_state *s, rlim_t limit, pid_t *child)
{
	const pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {limit, limit};
		if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
			_exit(3);
		char model[64], err[512];
		model_name(s, "limit", model, sizeof(model));
		shm_create_opts o = {.source_path = s->src, .model_name = model, .gid = (gid_t)-1,
				     .no_adopt = 1};
		shm_image_info info;
		const int rc = shm_image_create(&o, &info, err, sizeof(err));
		if (rc == 0)
			_exit(1);
		printf("# limit %llu: %s\n", (unsigned long long)limit, err);
		fflush(stdout);
		_exit(rc == -EFBIG && strstr(err, SHM_IMAGE_DIR) && tmp_leftovers(getpid()) == 0 ? 0 : 2);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	*child = pid;
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static void test_space_cleanup(void **state)
{
	test_state *s = *state;
	shm_image_info ref;
	create_ok(s, "ref", s->src, NULL, &ref);
	pid_t child;
	/* fails while the payload GGUF is written */
	int r = create_limited(s, 64 << 10, &child);
	const int left1 = tmp_leftovers(child);
	cleanup_run(s, child);
	assert_int_equal(r, 0);
	assert_int_equal(left1, 0);
	/* fails when sizing the object: payload fits, header + payload does not */
	r = create_limited(s, (rlim_t)ref.payload_size + 100, &child);
	const int left2 = tmp_leftovers(child);
	cleanup_run(s, child);
	assert_int_equal(r, 0);
	assert_int_equal(left2, 0);
	char p[64];
	snprintf(p, sizeof(p), "herd.%s-limit", s->prefix);
	assert_int_equal(count_shm_prefix(p), 0);
}

/* ---- remove ---------------------------------------------------------------- */

static void test_remove(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	create_ok(s, "rm", s->src, NULL, &info);
	shm_image_map_t m;
	assert_int_equal(shm_image_attach(info.name, &m, NULL, 0), 0);
	assert_int_equal(shm_image_remove(info.name), 0);
	int fd;
	assert_int_equal(shm_image_open(info.name, &fd), -ENOENT);
	assert_int_equal(shm_image_remove(info.name), -ENOENT);
	assert_int_equal(list_one(info.name, 0).seen, 0);
	/* an existing mapping stays valid */
	assert_int_equal(shm_image_verify(&m, NULL, 0), 0);
	shm_image_unmap(&m);
	assert_int_equal(shm_image_remove("foo"), HERD_E_INVAL);
	assert_int_equal(shm_image_remove("/herd.a/b"), HERD_E_INVAL);
	assert_int_equal(shm_image_remove(NULL), HERD_E_INVAL);
	/* "herd.x" without the slash works too */
	create_ok(s, "rm", s->src, NULL, &info);
	assert_int_equal(shm_image_remove(info.name + 1), 0);
}

/* ---- fd passing -------------------------------------------------------------- */

static int count_open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	if (d)
		closedir(d);
	return n;
}

static void send_fds(int sock, const int *fds, int n)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} ctl;
	char byte = 'x';
	struct iovec iov = {&byte, 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
	assert_int_equal(sendmsg(sock, &msg, 0), 1);
}

/* The frame fdpass_with_image sends with the image descriptor. */
static const char fdpass_frame[] = "\x10\x00\x00\x00image-frame-body";

/* A frame with the image fd: the receiver gets a new close-on-exec,
 * read-only descriptor of the same image. */
static void fdpass_with_image(const int sv[2], int img, const shm_image_info *info)
{
	char err[256];
	const char *frame = fdpass_frame;
	assert_int_equal(shm_fd_send(sv[0], frame, sizeof(fdpass_frame), img), 0);
	char buf[256];
	size_t len;
	int fd;
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), 0);
	assert_int_equal(len, sizeof(fdpass_frame));
	assert_memory_equal(buf, frame, sizeof(fdpass_frame));
	assert_true(fd >= 0 && fd != img);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	shm_image_map_t m;
	assert_int_equal(shm_image_map(fd, &m, err, sizeof(err)), 0);
	close(fd);
	assert_int_equal(shm_image_verify(&m, err, sizeof(err)), 0);
	assert_memory_equal(m.hdr->digest, info->digest, 32);
	shm_image_unmap(&m);
}

/* Data only; an empty send is refused. */
static void fdpass_data_only(const int sv[2])
{
	char buf[256];
	size_t len;
	int fd;
	assert_int_equal(shm_fd_send(sv[0], "plain", 5, -1), 0);
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), 0);
	assert_int_equal(len, 5);
	assert_int_equal(fd, -1);
	assert_int_equal(shm_fd_send(sv[0], "", 0, -1), HERD_E_INVAL);
}

/* Two fds: protocol error, both closed; more than the control buffer
 * holds: MSG_CTRUNC, nothing leaks. */
static void fdpass_too_many(const int sv[2], int img)
{
	char buf[256];
	size_t len;
	int fd;
	const int before = count_open_fds();
	int two[2] = {img, img};
	send_fds(sv[0], two, 2);
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), HERD_E_PROTO);
	assert_int_equal(len, 1);
	assert_int_equal(fd, -1);
	assert_int_equal(count_open_fds(), before);
	/* more than the control buffer holds: MSG_CTRUNC, nothing leaks */
	int many[12];
	for (int i = 0; i < 12; i++)
		many[i] = img;
	send_fds(sv[0], many, 12);
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), HERD_E_PROTO);
	assert_int_equal(fd, -1);
	assert_int_equal(count_open_fds(), before);
}

/* The io_uring message helpers, driven here by plain sendmsg/recvmsg with a
 * short first send. */
static void fdpass_uring_helpers(const int sv[2], int img)
{
	const char *frame = fdpass_frame;
	char buf[256];
	size_t len;
	int fd;
	shm_fdmsg sm;
	shm_fdmsg_init(&sm, frame, sizeof(fdpass_frame), img);
	sm.iov.iov_len = 4; /* pretend the kernel took only 4 bytes */
	ssize_t r = sendmsg(sv[0], &sm.msg, MSG_NOSIGNAL);
	assert_int_equal(r, 4);
	sm.iov.iov_len = sizeof(fdpass_frame);
	shm_fdmsg_advance(&sm, (size_t)r);
	assert_int_equal(shm_fdmsg_remaining(&sm), sizeof(fdpass_frame) - 4);
	assert_null(sm.msg.msg_control);
	r = sendmsg(sv[0], &sm.msg, MSG_NOSIGNAL);
	assert_int_equal(r, (ssize_t)(sizeof(fdpass_frame) - 4));
	shm_fdmsg_advance(&sm, (size_t)r);
	assert_int_equal(shm_fdmsg_remaining(&sm), 0);

	shm_fdrecv rv;
	shm_fdrecv_init(&rv, buf, sizeof(buf));
	r = recvmsg(sv[1], &rv.msg, MSG_CMSG_CLOEXEC);
	assert_int_equal(r, 4); /* stops where the fd-carrying bytes end */
	assert_int_equal(shm_fdrecv_finish(&rv, &fd), 0);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), 0);
	assert_int_equal(len, sizeof(fdpass_frame) - 4);
	assert_int_equal(fd, -1);
	assert_memory_equal(buf, frame + 4, len);
}

static void test_fdpass(void **state)
{
	test_state *s = *state;
	shm_image_info info;
	create_ok(s, "fd", s->src, NULL, &info);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	int img;
	assert_int_equal(shm_image_open(info.name, &img), 0);

	fdpass_with_image(sv, img, &info);
	fdpass_data_only(sv);
	fdpass_too_many(sv, img);
	fdpass_uring_helpers(sv, img);

	char buf[256];
	size_t len;
	int fd;
	/* peer closed: 0 bytes; send to a closed peer: -EPIPE, no signal */
	close(sv[0]);
	assert_int_equal(shm_fd_recv(sv[1], buf, sizeof(buf), &len, &fd), 0);
	assert_int_equal(len, 0);
	assert_int_equal(shm_fd_send(sv[1], "x", 1, img), -EPIPE);
	close(sv[1]);
	close(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest),
		cmocka_unit_test_teardown(test_create_map_verify, test_teardown),
		cmocka_unit_test_teardown(test_readonly, test_teardown),
		cmocka_unit_test_teardown(test_list_attach, test_teardown),
		cmocka_unit_test_teardown(test_damaged, test_teardown),
		cmocka_unit_test_teardown(test_convert_q8_0, test_teardown),
		cmocka_unit_test_teardown(test_fixture_images, test_teardown),
		cmocka_unit_test_teardown(test_adopt_find, test_teardown),
		cmocka_unit_test_teardown(test_trust_find, test_teardown),
		cmocka_unit_test_teardown(test_trust_squat, test_teardown),
		cmocka_unit_test_teardown(test_bad_inputs, test_teardown),
		cmocka_unit_test_teardown(test_space_cleanup, test_teardown),
		cmocka_unit_test_teardown(test_remove, test_teardown),
		cmocka_unit_test_teardown(test_fdpass, test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
