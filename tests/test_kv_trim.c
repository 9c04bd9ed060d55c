/* The KV pool under memory pressure (model/kv_cache.h): the pages are an
 * anonymous mapping whose unreferenced pages kv_pool_trim gives back to the
 * kernel, measured as this process's RssAnon (/proc/self/status); cached
 * prefix pages leave the prefix cache when trimmed; a page handed out again
 * works (re-touched, zero until written); the page limit bounds what new
 * work may take without touching what sequences hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/procfs.h"
#include "model/kv_cache.h"

#define N_PAGES 512
#define KV_DIM 1024 /* 2 layers x 2 x 16 positions x 1024 x 2 bytes = 128 KiB per page */

/* RssAnon of this process in KiB. */
static long rss_anon_kb(void)
{
	const uint64_t b = proc_mem_bytes(getpid(), "status", "RssAnon:");
	assert_true(b > 0);
	return (long)(b / 1024);
}

static size_t page_bytes(const kv_pool *p)
{
	return p->page_bytes;
}

static void fill(kv_pool *p, int32_t id, int v)
{
	memset(kv_row_k(p, id, 0, 0), v, page_bytes(p));
}

static void test_trim_returns_memory(void **state)
{
	(void)state;
	kv_pool p;
	assert_int_equal(kv_pool_init(&p, KERN_TYPE_F16, 2, KV_DIM, 16, N_PAGES), 0);
	const long base = rss_anon_kb();
	int32_t ids[N_PAGES];
	for (int i = 0; i < N_PAGES; i++) {
		ids[i] = kv_pool_alloc(&p);
		assert_true(ids[i] >= 0);
		fill(&p, ids[i], 0x5a);
	}
	const long used = rss_anon_kb();
	const long pool_kb = (long)(page_bytes(&p) * N_PAGES / 1024);
	fprintf(stderr, "RssAnon: %ld kB before, %ld kB with %ld kB of KV written\n", base, used, pool_kb);
	assert_true(used - base >= pool_kb * 9 / 10);
	/* half the pages referenced, half free: only the free ones go back */
	for (int i = 0; i < N_PAGES / 2; i++)
		kv_pool_release(&p, ids[i]);
	assert_int_equal(kv_pool_trimmable(&p), N_PAGES / 2);
	assert_int_equal(kv_pool_trim(&p), N_PAGES / 2);
	const long half = rss_anon_kb();
	fprintf(stderr, "RssAnon after trimming half: %ld kB\n", half);
	assert_true(used - half >= pool_kb / 2 * 9 / 10);
	/* the referenced pages kept their contents */
	for (int i = N_PAGES / 2; i < N_PAGES; i++)
		assert_int_equal(((unsigned char *)kv_row_k(&p, ids[i], 0, 0))[100], 0x5a);
	assert_int_equal(kv_pool_trimmable(&p), 0);
	assert_int_equal(kv_pool_trim(&p), 0); /* nothing written since */
	/* a trimmed page handed out again: zero, then holds what is written */
	const int32_t again = kv_pool_alloc(&p);
	assert_true(again >= 0);
	assert_int_equal(((unsigned char *)kv_row_k(&p, again, 0, 0))[7], 0);
	fill(&p, again, 0x33);
	assert_int_equal(((unsigned char *)kv_row_v(&p, again, 1, 0))[5], 0x33);
	for (int i = N_PAGES / 2; i < N_PAGES; i++)
		kv_pool_release(&p, ids[i]);
	kv_pool_release(&p, again);
	assert_int_equal(kv_pool_trim(&p), N_PAGES / 2 + 1);
	const long end = rss_anon_kb();
	fprintf(stderr, "RssAnon after trimming all: %ld kB\n", end);
	assert_true(end - base <= pool_kb / 10);
	assert_int_equal(p.trimmed, (uint64_t)N_PAGES + 1);
	kv_pool_fini(&p);
}

/* A cached prefix page is dropped from the prefix cache by a trim. */
static void test_trim_drops_cached_pages(void **state)
{
	(void)state;
	kv_pool p;
	assert_int_equal(kv_pool_init(&p, KERN_TYPE_F16, 1, 8, 16, 8), 0);
	int32_t toks[16];
	for (int i = 0; i < 16; i++)
		toks[i] = i + 1;
	const uint64_t seed = kv_hash_seed(&p, "m", 1, 1), h = kv_hash_block(&p, seed, toks);
	const int32_t id = kv_pool_alloc(&p);
	assert_int_equal(kv_pool_publish(&p, id, seed, h, toks), 1);
	kv_pool_release(&p, id);
	assert_int_equal(p.n_cached, 1);
	assert_int_equal(kv_pool_find(&p, seed, h, toks), id);
	assert_int_equal(kv_pool_trimmable(&p), 1);
	assert_int_equal(kv_pool_trim(&p), 1);
	assert_int_equal(p.n_cached, 0);
	assert_int_equal(kv_pool_find(&p, seed, h, toks), -1);
	assert_int_equal(kv_pool_avail(&p), 8);
	kv_pool_fini(&p);
}

/* The limit bounds what new work may take; held pages are not touched. */
static void test_limit(void **state)
{
	(void)state;
	kv_pool p;
	assert_int_equal(kv_pool_init(&p, KERN_TYPE_F16, 1, 8, 16, 100), 0);
	assert_int_equal(kv_pool_avail(&p), 100);
	kv_pool_set_limit(&p, 40);
	assert_int_equal(kv_pool_avail(&p), 40);
	int32_t held[30];
	for (int i = 0; i < 30; i++)
		held[i] = kv_pool_alloc(&p);
	assert_int_equal(kv_pool_avail(&p), 10);
	kv_pool_set_limit(&p, 20); /* below what is held: nothing more for new work */
	assert_int_equal(kv_pool_avail(&p), 0);
	assert_true(kv_pool_alloc(&p) >= 0); /* what was reserved can still be had */
	for (int i = 0; i < 30; i++)
		kv_pool_release(&p, held[i]);
	assert_int_equal(kv_pool_avail(&p), 19);
	kv_pool_set_limit(&p, 1000); /* clamped to the pool */
	assert_int_equal(p.limit, 100);
	kv_pool_set_limit(&p, 0);
	assert_int_equal(p.limit, 1);
	kv_pool_fini(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trim_returns_memory),
		cmocka_unit_test(test_trim_drops_cached_pages),
		cmocka_unit_test(test_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
