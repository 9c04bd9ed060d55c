/* Prefix sharing of KV pages at the model level (model/kv_cache.h,
 * model/llama.h): the page pool's reference counts, LRU pool and eviction;
 * sequences that map a cached prefix give the same logits as sequences that
 * evaluated everything; copy-on-write at a shared partial page; a block
 * that matches only in its first tokens is mapped too; a sequence
 * never fails for lack of pages while cached pages can be evicted. On the
 * mini model the suite makes itself. */
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
#include "kernels/gemm.h"
#include "model/kv_cache.h"
#include "model/llama.h"
#include "model/mkmodel.h"

#define P LLAMA_KV_PAGE

static char dir[256];
static char path[512];
static llama_model *M;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/herd-test-prefix-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/mini-Q8_0.gguf", dir);
	char err[256];
	mkmodel_opts o = {.shape = "mini", .ftype = "Q8_0", .out_path = path, .seed = 5};
	if (mkmodel_write(&o, err, sizeof(err))) {
		fprintf(stderr, "mkmodel: %s\n", err);
		return -1;
	}
	if (llama_model_load(&M, path, err, sizeof(err))) {
		fprintf(stderr, "load: %s\n", err);
		return -1;
	}
	return llama_model_repack(M, KERN_REPACK_ALL) ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	llama_model_destroy(M);
	unlink(path);
	rmdir(dir);
	return 0;
}

static llama_ctx *ctx_new(int n_pages)
{
	llama_ctx *c = NULL;
	llama_ctx_opts o = {.n_threads = 2, .n_ctx = 512, .max_step_tokens = 256, .n_kv_pages = n_pages};
	assert_int_equal(llama_ctx_create(&c, M, &o), 0);
	return c;
}

static void fill_tokens(int32_t *t, int n, unsigned seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		t[i] = (int32_t)(3 + (seed >> 8) % (unsigned)(M->hp.n_vocab - 3));
	}
}

/* Feeds tokens[from..to) to s in chunks of the given sizes (0-terminated;
 * the rest in one chunk); logits of the last token into out. */
static void feed(llama_ctx *c, llama_seq *s, const int32_t *tokens, int to, const int *chunks,
		 float *out)
{
	for (int k = 0; s->n_past < to; k++) {
		int n = chunks && chunks[k] ? chunks[k] : to - s->n_past;
		if (n > to - s->n_past)
			n = to - s->n_past;
		llama_batch_seq b = {s, tokens + s->n_past, n, LLAMA_LOGITS_LAST, out};
		assert_int_equal(llama_decode(c, &b, 1), 0);
	}
}

/* ---- the pool alone ------------------------------------------------------ */

static void test_pool_refcount_lru(void **state)
{
	(void)state;
	kv_pool p;
	assert_int_equal(kv_pool_init(&p, KERN_TYPE_F16, 1, 8, P, 4), 0);
	int32_t tok[4][P];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < P; j++)
			tok[i][j] = i * 100 + j;
	uint64_t h[4], parent = kv_hash_seed(&p, "m", 1, 1);
	int32_t pg[4];
	for (int i = 0; i < 4; i++) {
		pg[i] = kv_pool_alloc(&p);
		assert_true(pg[i] >= 0);
		h[i] = kv_hash_block(&p, i ? h[i - 1] : parent, tok[i]);
		assert_int_equal(kv_pool_publish(&p, pg[i], i ? h[i - 1] : parent, h[i], tok[i]), 1);
	}
	assert_int_equal(kv_pool_alloc(&p), -1); /* all referenced */
	/* a second holder: the page survives the first release */
	kv_pool_retain(&p, pg[0]);
	assert_int_equal(p.ref[pg[0]], 2);
	kv_pool_release(&p, pg[0]);
	assert_int_equal(p.n_cached, 0);
	/* released in order 0, 2, 1: the LRU pool holds them, free list empty */
	kv_pool_release(&p, pg[0]);
	kv_pool_release(&p, pg[2]);
	kv_pool_release(&p, pg[1]);
	assert_int_equal(p.n_cached, 3);
	assert_int_equal(p.n_free, 0);
	assert_int_equal(kv_pool_avail(&p), 3);
	/* found again; mapping page 2 takes it out of the pool */
	assert_int_equal(kv_pool_find(&p, h[1], h[2], tok[2]), pg[2]);
	assert_int_equal(kv_pool_find(&p, h[0], h[2], tok[2]), -1); /* wrong parent */
	int32_t bad[P];
	memcpy(bad, tok[2], sizeof(bad));
	bad[5]++;
	assert_int_equal(kv_pool_find(&p, h[1], h[2], bad), -1); /* other tokens */
	kv_pool_retain(&p, pg[2]);
	assert_int_equal(p.n_cached, 2);
	/* a duplicate is not published twice */
	assert_int_equal(kv_pool_publish(&p, pg[3], h[1], h[2], tok[2]), 0);
	/* pressure: the least recently used goes first (0, then 1) */
	int32_t a = kv_pool_alloc(&p);
	assert_int_equal(a, pg[0]);
	assert_int_equal(p.evictions, 1);
	assert_int_equal(kv_pool_find(&p, parent, h[0], tok[0]), -1);
	int32_t b = kv_pool_alloc(&p);
	assert_int_equal(b, pg[1]);
	assert_int_equal(kv_pool_alloc(&p), -1);
	/* copy-on-write of a page with a second holder */
	kv_pool_retain(&p, pg[2]);
	((kern_fp16_t *)kv_row_k(&p, pg[2], 0, 0))[3] = 0x3c00;
	kv_pool_release(&p, a);
	int32_t cp = kv_pool_cow(&p, pg[2]);
	assert_int_equal(cp, a);
	assert_int_equal(((kern_fp16_t *)kv_row_k(&p, cp, 0, 0))[3], 0x3c00);
	assert_int_equal(p.ref[pg[2]], 1);
	/* a different domain seeds a different chain */
	assert_true(kv_hash_seed(&p, "m", 1, 2) != parent);
	kv_pool_fini(&p);
}

/* ---- sequences ------------------------------------------------------------ */

#define NA 40

/* B shares A's first two blocks: after A, B maps them (the same page ids,
 * two holders) and evaluates only its own tail; its logits equal those of B
 * evaluated from scratch in the same chunks. */
static void test_shared_prefix_logits(void **state)
{
	(void)state;
	const int V = M->hp.n_vocab;
	llama_ctx *c = ctx_new(64);
	int32_t ta[NA], tb[NA];
	fill_tokens(ta, NA, 1);
	memcpy(tb, ta, sizeof(ta));
	fill_tokens(tb + 37, NA - 37, 2); /* diverges inside block 2 */
	float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
	float *ra = malloc(sizeof(float) * V), *rb = malloc(sizeof(float) * V);
	const int chunks[] = {2 * P, 0};
	/* references: plain sequences, no sharing */
	llama_seq s;
	llama_seq_init(&s);
	feed(c, &s, ta, NA, chunks, ra);
	llama_seq_reset(c, &s);
	feed(c, &s, tb, NA, chunks, rb);
	llama_seq_reset(c, &s);
	assert_int_equal(llama_ctx_cached_pages(c), 0); /* plain sequences publish nothing */
	const uint64_t seed = llama_prefix_seed(c, "digest", 6, 42);
	uint64_t ha[NA / P], hb[NA / P];
	llama_prefix_hashes(c, seed, ta, NA, ha);
	llama_prefix_hashes(c, seed, tb, NA, hb);
	assert_true(ha[0] == hb[0] && ha[1] == hb[1] && ha[1] != 0);
	llama_seq a, b;
	llama_seq_init(&a);
	llama_seq_init(&b);
	assert_int_equal(llama_seq_begin_prefix(c, &a, seed, ha, ta, NA), 0);
	feed(c, &a, ta, NA, chunks, la);
	assert_memory_equal(la, ra, sizeof(float) * V);
	assert_int_equal(llama_prefix_probe(c, seed, hb, tb, NA / P, NULL), 2);
	assert_int_equal(llama_prefix_probe(c, seed ^ 1, hb, tb, NA / P, NULL), 0);
	const int free0 = llama_ctx_free_pages(c);
	assert_int_equal(llama_seq_begin_prefix(c, &b, seed, hb, tb, NA), 2 * P);
	assert_int_equal(b.pages[0], a.pages[0]);
	assert_int_equal(b.pages[1], a.pages[1]);
	assert_int_equal(llama_ctx_free_pages(c), free0); /* mapped, nothing allocated */
	feed(c, &b, tb, NA, NULL, lb);
	assert_memory_equal(lb, rb, sizeof(float) * V);
	assert_int_equal(llama_ctx_free_pages(c), free0 - 1);
	/* A ends: its shared pages stay held by B, its own go to the pool */
	llama_seq_reset(c, &a);
	assert_int_equal(llama_ctx_cached_pages(c), 0); /* A's tail page is partial: freed */
	llama_seq_reset(c, &b);
	assert_int_equal(llama_ctx_cached_pages(c), 2);
	assert_int_equal(llama_ctx_free_pages(c), 64);
	free(la), free(lb), free(ra), free(rb);
	llama_ctx_destroy(c);
}

/* A prompt that is wholly cached still evaluates its last token: into a
 * copy of the last shared page, which the other holder keeps unchanged. */
static void test_fully_cached_prompt(void **state)
{
	(void)state;
	const int V = M->hp.n_vocab, N = 2 * P;
	llama_ctx *c = ctx_new(64);
	int32_t t[2 * P + 4];
	fill_tokens(t, N + 4, 3);
	float *l1 = malloc(sizeof(float) * V), *r1 = malloc(sizeof(float) * V);
	float *l2 = malloc(sizeof(float) * V), *r2 = malloc(sizeof(float) * V);
	const int chunks[] = {N - 1, 1, 0};
	llama_seq s;
	llama_seq_init(&s);
	feed(c, &s, t, N, chunks, r1);
	feed(c, &s, t, N + 4, NULL, r2);
	llama_seq_reset(c, &s);
	const uint64_t seed = llama_prefix_seed(c, NULL, 0, 7);
	uint64_t h[2];
	llama_prefix_hashes(c, seed, t, N, h);
	llama_seq a, b;
	llama_seq_init(&a);
	llama_seq_init(&b);
	assert_int_equal(llama_seq_begin_prefix(c, &a, seed, h, t, N), 0);
	feed(c, &a, t, N, chunks, l1);
	assert_memory_equal(l1, r1, sizeof(float) * V);
	assert_int_equal(llama_seq_begin_prefix(c, &b, seed, h, t, N), N - 1);
	assert_int_equal(b.pages[1], a.pages[1]);
	feed(c, &b, t, N, NULL, l1);
	assert_memory_equal(l1, r1, sizeof(float) * V);
	assert_true(b.pages[1] != a.pages[1]); /* copied before the write */
	assert_int_equal(b.pages[0], a.pages[0]);
	/* both go on from there and agree with the reference */
	feed(c, &a, t, N + 4, NULL, l2);
	assert_memory_equal(l2, r2, sizeof(float) * V);
	feed(c, &b, t, N + 4, NULL, l2);
	assert_memory_equal(l2, r2, sizeof(float) * V);
	llama_seq_reset(c, &a);
	llama_seq_reset(c, &b);
	assert_int_equal(llama_ctx_free_pages(c), 64);
	free(l1), free(r1), free(l2), free(r2);
	llama_ctx_destroy(c);
}

/* Fork at a position inside a page: the child and the parent share that
 * partial page; whichever writes first copies it, and neither sees the
 * other's tokens. */
static void test_cow_divergent_partial_page(void **state)
{
	(void)state;
	const int V = M->hp.n_vocab, F = 36;
	llama_ctx *c = ctx_new(64);
	int32_t ta[NA + 4], tb[NA];
	fill_tokens(ta, NA + 4, 4);
	memcpy(tb, ta, sizeof(int32_t) * F);
	fill_tokens(tb + F, NA - F, 9);
	float *l = malloc(sizeof(float) * V), *ra = malloc(sizeof(float) * V);
	float *rb = malloc(sizeof(float) * V);
	const int chunks[] = {2 * P, 0}, chunks3[] = {2 * P, NA - 2 * P, 0};
	llama_seq s;
	llama_seq_init(&s);
	feed(c, &s, ta, NA + 4, chunks3, ra);
	llama_seq_reset(c, &s);
	feed(c, &s, ta, NA, chunks, rb);
	llama_seq_truncate(c, &s, F);
	feed(c, &s, tb, NA, NULL, rb);
	llama_seq_reset(c, &s);
	llama_seq a, b;
	llama_seq_init(&a);
	llama_seq_init(&b);
	feed(c, &a, ta, NA, chunks, l);
	assert_int_equal(llama_seq_fork(c, &b, &a, F), 0);
	assert_int_equal(b.n_pages, 3);
	assert_int_equal(b.pages[2], a.pages[2]);
	const int32_t shared = a.pages[2];
	feed(c, &b, tb, NA, NULL, l);
	assert_memory_equal(l, rb, sizeof(float) * V);
	assert_true(b.pages[2] != shared);
	assert_int_equal(a.pages[2], shared); /* a held it alone again: no copy */
	feed(c, &a, ta, NA + 4, NULL, l);
	assert_memory_equal(l, ra, sizeof(float) * V);
	assert_int_equal(a.pages[2], shared);
	assert_int_equal(llama_seq_fork(c, &b, &a, F), HERD_E_INVAL); /* b not empty */
	llama_seq_reset(c, &a);
	llama_seq_reset(c, &b);
	assert_int_equal(llama_ctx_free_pages(c), 64);
	free(l), free(ra), free(rb);
	llama_ctx_destroy(c);
}

/* B's prompt shares A's first block and the first 5 tokens of A's second
 * (published) block: B maps both, goes on from position P + 5 in a copy of
 * the second page, and its logits equal those of a sequence forked from A
 * at P + 5 (the same K and V for the shared positions); A's page and A's
 * logits stay unchanged, and no other trust domain gets the match. */
static void test_partial_block_match(void **state)
{
	(void)state;
	const int V = M->hp.n_vocab, F = P + 5, NB = 2 * P + 3;
	llama_ctx *c = ctx_new(64);
	int32_t ta[2 * P + 3], tb[2 * P + 3];
	fill_tokens(ta, 2 * P + 3, 21);
	memcpy(tb, ta, sizeof(int32_t) * F);
	fill_tokens(tb + F, NB - F, 22);
	float *l = malloc(sizeof(float) * V), *ra = malloc(sizeof(float) * V);
	float *rb = malloc(sizeof(float) * V);
	const int chunks[] = {2 * P, 0};
	llama_seq s, f;
	llama_seq_init(&s);
	llama_seq_init(&f);
	feed(c, &s, ta, 2 * P, chunks, l); /* references: A plain, B forked from it */
	assert_int_equal(llama_seq_fork(c, &f, &s, F), 0);
	feed(c, &f, tb, NB, NULL, rb);
	feed(c, &s, ta, 2 * P + 3, NULL, ra);
	llama_seq_reset(c, &s);
	llama_seq_reset(c, &f);
	const uint64_t seed = llama_prefix_seed(c, "digest", 6, 3);
	uint64_t ha[2], hb[2];
	llama_prefix_hashes(c, seed, ta, 2 * P, ha);
	llama_prefix_hashes(c, seed, tb, NB, hb);
	llama_seq a, b;
	llama_seq_init(&a);
	llama_seq_init(&b);
	assert_int_equal(llama_seq_begin_prefix(c, &a, seed, ha, ta, 2 * P), 0);
	feed(c, &a, ta, 2 * P, chunks, l);
	int idle = -1;
	assert_int_equal(llama_prefix_probe(c, seed, hb, tb, 2, NULL), 1);
	assert_int_equal(llama_prefix_probe_tail(c, seed, hb, tb, NB, 1, &idle), 5);
	assert_int_equal(idle, 0); /* A holds it */
	assert_int_equal(llama_prefix_probe_tail(c, seed ^ 1, hb, tb, NB, 0, NULL), 0);
	assert_int_equal(llama_seq_begin_prefix(c, &b, seed, hb, tb, NB), F);
	const int32_t shared = a.pages[1];
	assert_int_equal(b.pages[1], shared);
	feed(c, &b, tb, NB, NULL, l);
	assert_memory_equal(l, rb, sizeof(float) * V);
	assert_true(b.pages[1] != shared); /* copied before the write */
	feed(c, &a, ta, 2 * P + 3, NULL, l);
	assert_memory_equal(l, ra, sizeof(float) * V);
	assert_int_equal(a.pages[1], shared);
	/* a prompt shorter than a block matches the start of a first block */
	int32_t tc[8];
	memcpy(tc, ta, sizeof(int32_t) * 5);
	fill_tokens(tc + 5, 3, 23);
	assert_int_equal(llama_prefix_probe_tail(c, seed, hb, tc, 8, 0, NULL), 5);
	llama_seq u;
	llama_seq_init(&u);
	assert_int_equal(llama_seq_begin_prefix(c, &u, seed, hb, tc, 8), 5);
	assert_int_equal(u.pages[0], a.pages[0]);
	feed(c, &u, tc, 8, NULL, l);
	assert_true(u.pages[0] != a.pages[0]);
	llama_seq_reset(c, &u);
	llama_seq_reset(c, &a);
	llama_seq_reset(c, &b);
	/* B published its own second block: now the longest match, held by nobody */
	assert_int_equal(llama_prefix_probe_tail(c, seed, hb, tb, NB, 1, &idle), P - 1);
	assert_int_equal(idle, 1);
	assert_int_equal(llama_ctx_free_pages(c), 64);
	free(l), free(ra), free(rb);
	llama_ctx_destroy(c);
}

/* A pool full of cached pages: a new sequence takes the least recently used
 * ones and never fails; the prefix still cached is still found. */
static void test_eviction_under_pressure(void **state)
{
	(void)state;
	const int V = M->hp.n_vocab, NP = 8;
	llama_ctx *c = ctx_new(NP);
	float *l = malloc(sizeof(float) * V);
	const uint64_t seed = llama_prefix_seed(c, NULL, 0, 1);
	int32_t t1[4 * P], t2[4 * P], t3[NP * P];
	fill_tokens(t1, 4 * P, 11);
	fill_tokens(t2, 4 * P, 12);
	fill_tokens(t3, NP * P, 13);
	uint64_t h1[4], h2[4], h3[NP];
	llama_prefix_hashes(c, seed, t1, 4 * P, h1);
	llama_prefix_hashes(c, seed, t2, 4 * P, h2);
	llama_prefix_hashes(c, seed, t3, NP * P, h3);
	llama_seq s;
	llama_seq_init(&s);
	assert_int_equal(llama_seq_begin_prefix(c, &s, seed, h1, t1, 4 * P), 0);
	feed(c, &s, t1, 4 * P, NULL, l);
	llama_seq_reset(c, &s);
	assert_int_equal(llama_seq_begin_prefix(c, &s, seed, h2, t2, 4 * P), 0);
	feed(c, &s, t2, 4 * P, NULL, l);
	llama_seq_reset(c, &s);
	assert_int_equal(llama_ctx_cached_pages(c), NP);
	assert_int_equal(llama_ctx_free_pages(c), NP);
	assert_int_equal(llama_prefix_probe(c, seed, h1, t1, 4, NULL), 4);
	/* 2 more pages for t1's prefix user: evicts t1's and t2's oldest tails, not
	 * what it maps */
	llama_seq u;
	llama_seq_init(&u);
	int idle = -1;
	assert_int_equal(llama_prefix_probe(c, seed, h2, t2, 2, &idle), 2);
	assert_int_equal(idle, 2);
	assert_int_equal(llama_seq_begin_prefix(c, &u, seed, h2, t2, 2 * P + 1), 2 * P);
	assert_int_equal(llama_ctx_free_pages(c), NP - 2);
	/* a plain sequence as long as all but one page of the rest: never out of
	 * pages, t1's blocks and t2's last go (least recently used first) */
	llama_seq_init(&s);
	feed(c, &s, t3, (NP - 3) * P, NULL, l);
	assert_int_equal(llama_ctx_evictions(c), NP - 3);
	assert_int_equal(llama_ctx_cached_pages(c), 1);
	assert_int_equal(llama_prefix_probe(c, seed, h1, t1, 4, NULL), 0);
	assert_int_equal(llama_prefix_probe(c, seed, h2, t2, 4, NULL), 3);
	/* the mapped prefix survived: u goes on, taking the last cached page */
	feed(c, &u, t2, 2 * P + 1, NULL, l);
	assert_int_equal(llama_ctx_evictions(c), NP - 2);
	assert_int_equal(llama_ctx_cached_pages(c), 0);
	/* and the pool is now truly full: one more page is refused cleanly */
	const int32_t more[P] = {5};
	llama_batch_seq b = {&s, more, P, LLAMA_LOGITS_NONE, NULL};
	assert_int_equal(llama_decode(c, &b, 1), HERD_E_NOSPACE);
	llama_seq_reset(c, &s);
	llama_seq_reset(c, &u);
	assert_int_equal(llama_ctx_free_pages(c), NP);
	assert_int_equal(llama_prefix_probe(c, seed, h2, t2, 2, NULL), 2);
	free(l);
	llama_ctx_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_refcount_lru),
		cmocka_unit_test(test_shared_prefix_logits),
		cmocka_unit_test(test_fully_cached_prompt),
		cmocka_unit_test(test_cow_divergent_partial_page),
		cmocka_unit_test(test_partial_block_match),
		cmocka_unit_test(test_eviction_under_pressure),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
