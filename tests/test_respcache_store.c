/* The response cache's store (broker/respcache.c) on a real LMDB
 * environment in a temporary state directory, without a broker: the byte
 * cap evicts the least recently used entries, a batch larger than the map fails cleanly
 * (MDB_MAP_FULL after evicting) and leaves the environment usable, two keys
 * with one hash never answer for each other, the state directory's owner
 * and mode rules, entries that survive closing and reopening, and the
 * "response_cache" config keys. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/config.h"
#include "broker/respcache.h"
#include "herd/error.h"

static char DIR_[64];
static char STATE[128];

/* A key whose material is "key <i>" and whose hash is that of i (or of
 * hash_of when >= 0: a forced collision). */
static void key_of(respcache_key *k, int i, int hash_of)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "key %d", i);
	k->len = strlen(buf);
	k->mat = (uint8_t *)strdup(buf);
	assert_non_null(k->mat);
	memset(k->hash, 0, sizeof(k->hash));
	const int h = hash_of >= 0 ? hash_of : i;
	memcpy(k->hash, &h, sizeof(h));
	k->hash[31] = 0x5a;
}

static int put_n(respcache *rc, int first, int n, size_t text_len)
{
	respcache_key *keys = calloc((size_t)n, sizeof(*keys));
	respcache_item *items = calloc((size_t)n, sizeof(*items));
	char *text = malloc(text_len * (size_t)n);
	static const int32_t toks[3] = {5, 6, 2};
	assert_true(keys && items && text);
	for (int i = 0; i < n; i++) {
		key_of(&keys[i], first + i, -1);
		char *t = text + text_len * (size_t)i;
		memset(t, 'a' + (first + i) % 26, text_len);
		items[i] = (respcache_item){&keys[i], t, text_len, toks, 3, HERD_FINISH_LENGTH, 4, 3};
	}
	const int rc2 = respcache_put(rc, items, n);
	for (int i = 0; i < n; i++)
		respcache_key_free(&keys[i]);
	free(keys);
	free(items);
	free(text);
	return rc2;
}

/* 0: hit with the expected text; 1: miss. */
static int get_i(respcache *rc, int i, int hash_of, size_t text_len)
{
	respcache_key k;
	key_of(&k, i, hash_of);
	respcache_entry e;
	const int r = respcache_get(rc, &k, &e);
	respcache_key_free(&k);
	if (r)
		return 1;
	assert_int_equal(e.text_len, text_len);
	assert_int_equal(e.text[0], 'a' + i % 26);
	assert_int_equal(e.n_tok, 3);
	assert_int_equal(e.toks[2], 2);
	assert_int_equal(e.finish, HERD_FINISH_LENGTH);
	assert_int_equal(e.n_prompt, 4);
	assert_int_equal(e.n_gen, 3);
	respcache_entry_free(&e);
	return 0;
}

static respcache *open_mb(int mb)
{
	respcache *rc = NULL;
	char err[512] = "";
	const respcache_opts o = {.dir = STATE, .max_bytes = (uint64_t)mb << 20, .ttl_s = 0};
	if (respcache_open(&rc, &o, err, sizeof(err)))
		fail_msg("respcache_open: %s", err);
	return rc;
}

static void rm_env(void)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", STATE, RESPCACHE_FILE);
	unlink(p);
	snprintf(p, sizeof(p), "%s/%s-lock", STATE, RESPCACHE_FILE);
	unlink(p);
}

static int setup(void **state)
{
	(void)state;
	snprintf(DIR_, sizeof(DIR_), "/tmp/herd-test-rcstore-XXXXXX");
	assert_non_null(mkdtemp(DIR_));
	snprintf(STATE, sizeof(STATE), "%s/a/state", DIR_);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rm_env();
	rmdir(STATE);
	char p[128];
	snprintf(p, sizeof(p), "%s/a", DIR_);
	rmdir(p);
	rmdir(DIR_);
	return 0;
}

static void test_cap_evicts_oldest(void **state)
{
	(void)state;
	respcache *rc = open_mb(1);
	struct stat st;
	assert_int_equal(stat(STATE, &st), 0); /* created, 0700 */
	assert_int_equal(st.st_mode & 0777, 0700);
	for (int b = 0; b < 40; b++) /* 40 batches of 10 x 4 KiB: 1.6 MiB */
		assert_int_equal(put_n(rc, b * 10, 10, 4096), 0);
	respcache_stats s;
	respcache_get_stats(rc, &s);
	printf("entries %llu, bytes %llu, evictions %llu\n", (unsigned long long)s.entries,
	       (unsigned long long)s.bytes, (unsigned long long)s.evictions);
	assert_true(s.bytes <= (1u << 20));
	assert_true(s.evictions > 0);
	assert_int_equal(s.stores, 400);
	assert_int_equal(s.entries + s.evictions, 400);
	assert_int_equal(get_i(rc, 399, -1, 4096), 0); /* the newest stays */
	assert_int_equal(get_i(rc, 0, -1, 4096), 1);   /* the oldest went first */
	respcache_close(rc);
	rc = open_mb(1); /* reopened: the same entries */
	respcache_stats s2;
	respcache_get_stats(rc, &s2);
	assert_int_equal(s2.entries, s.entries);
	assert_int_equal(get_i(rc, 399, -1, 4096), 0);
	respcache_close(rc);
	rm_env();
}

/* Memory pressure: shrink evicts the oldest down to half the bytes (at
 * least 1 MiB kept) and holds the cap there until unshrink. */
static void test_shrink(void **state)
{
	(void)state;
	respcache *rc = open_mb(16);
	for (int b = 0; b < 100; b++) /* 100 batches of 10 x 4 KiB: ~4 MiB */
		assert_int_equal(put_n(rc, b * 10, 10, 4096), 0);
	respcache_stats s0, s1, s2;
	respcache_get_stats(rc, &s0);
	assert_int_equal(s0.entries, 1000);
	const int n = respcache_shrink(rc);
	respcache_get_stats(rc, &s1);
	printf("shrink: %d evicted, %llu -> %llu bytes\n", n, (unsigned long long)s0.bytes,
	       (unsigned long long)s1.bytes);
	assert_true(n > 0);
	assert_int_equal(s1.entries, 1000 - (uint64_t)n);
	assert_true(s1.bytes <= s0.bytes / 2 + 4096 * 4);
	assert_int_equal(get_i(rc, 999, -1, 4096), 0); /* the newest stays */
	assert_int_equal(get_i(rc, 0, -1, 4096), 1);   /* the oldest went */
	/* while shrunk, new answers still evict down to the lower cap */
	for (int b = 100; b < 150; b++)
		assert_int_equal(put_n(rc, b * 10, 10, 4096), 0);
	respcache_get_stats(rc, &s2);
	assert_true(s2.bytes <= s0.bytes / 2 + 4096 * 4);
	/* recovered: the configured cap again */
	respcache_unshrink(rc);
	for (int b = 150; b < 250; b++)
		assert_int_equal(put_n(rc, b * 10, 10, 4096), 0);
	respcache_get_stats(rc, &s2);
	assert_true(s2.bytes > s0.bytes / 2 + 4096 * 4);
	respcache_close(rc);
	rm_env();
}

/* A use (an item without text) moves an entry to the young end. */
static void test_use_keeps_entry(void **state)
{
	(void)state;
	respcache *rc = open_mb(1);
	assert_int_equal(put_n(rc, 0, 100, 4096), 0);
	usleep(2000); /* the use is later than every store (ms clock) */
	respcache_key k;
	key_of(&k, 0, -1);
	const respcache_item use = {.key = &k};
	assert_int_equal(respcache_put(rc, &use, 1), 0);
	respcache_key_free(&k);
	for (int b = 0; b < 5; b++) /* ~124 fit: some of the first 100 go */
		assert_int_equal(put_n(rc, 100 + b * 10, 10, 4096), 0);
	respcache_stats s;
	respcache_get_stats(rc, &s);
	assert_true(s.evictions > 1);
	assert_int_equal(s.stores, 150);
	assert_int_equal(get_i(rc, 0, -1, 4096), 0); /* used: kept */
	assert_int_equal(get_i(rc, 1, -1, 4096), 1); /* the oldest unused: gone */
	respcache_close(rc);
	rm_env();
}

static void test_map_full(void **state)
{
	(void)state;
	respcache *rc = open_mb(4); /* an 8 MiB map */
	assert_int_equal(put_n(rc, 0, 20, 4096), 0);
	/* one transaction of 10 MiB cannot fit whatever is evicted */
	assert_int_equal(put_n(rc, 1000, 20, 512 * 1024), HERD_E_NOSPACE);
	respcache_stats s;
	respcache_get_stats(rc, &s);
	assert_int_equal(s.write_errors, 1);
	assert_int_equal(get_i(rc, 1000, -1, 512 * 1024), 1); /* nothing of it stored */
	assert_int_equal(get_i(rc, 19, -1, 4096), 0);         /* nor anything lost */
	assert_int_equal(put_n(rc, 2000, 2, 4096), 0);        /* still usable */
	assert_int_equal(get_i(rc, 2001, -1, 4096), 0);
	respcache_close(rc);
	rm_env();
}

static void test_collision_is_a_miss(void **state)
{
	(void)state;
	respcache *rc = open_mb(4);
	assert_int_equal(put_n(rc, 7, 1, 100), 0);
	assert_int_equal(get_i(rc, 8, 7, 100), 1); /* key 8 with key 7's hash */
	assert_int_equal(get_i(rc, 7, -1, 100), 0); /* key 7 untouched */
	respcache_stats s;
	respcache_get_stats(rc, &s);
	assert_int_equal(s.corrupt, 0);
	respcache_close(rc);
	rm_env();
}

static void test_dir_rules(void **state)
{
	(void)state;
	respcache *rc = open_mb(1);
	respcache_close(rc);
	assert_int_equal(chmod(STATE, 0777), 0);
	char err[512] = "";
	const respcache_opts o = {.dir = STATE, .max_bytes = 1u << 20};
	assert_int_equal(respcache_open(&rc, &o, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "writable by others"));
	assert_int_equal(chmod(STATE, 0700), 0);
	if (geteuid() == 0) { /* another owner */
		assert_int_equal(chown(STATE, 12345, 12345), 0);
		assert_int_equal(respcache_open(&rc, &o, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "owned by uid 12345"));
		assert_int_equal(chown(STATE, 0, 0), 0);
	}
	assert_int_equal(respcache_open(&rc, &o, err, sizeof(err)), 0);
	respcache_close(rc);
	rm_env();
}

/* The "response_cache" config object: defaults, values, and errors that
 * name the key. */
static void test_config_keys(void **state)
{
	(void)state;
	cfg c;
	char err[512];
	cfg_init(&c);
	assert_false(c.response_cache.enabled);
	assert_int_equal(c.response_cache.max_mb, 256);
	assert_int_equal(c.response_cache.ttl_s, 86400);
	assert_int_equal(cfg_parse_json(&c, "{\"response_cache\": {\"enabled\": true, "
					    "\"max_mb\": 8, \"ttl_s\": 0}}", err, sizeof(err)), 0);
	assert_true(c.response_cache.enabled);
	assert_int_equal(c.response_cache.max_mb, 8);
	assert_int_equal(c.response_cache.ttl_s, 0);
	static const struct {
		const char *json, *needle;
	} bad[] = {
		{"{\"response_cache\": {\"max_mb\": 0}}", "response_cache.max_mb"},
		{"{\"response_cache\": {\"ttl_s\": -1}}", "response_cache.ttl_s"},
		{"{\"response_cache\": {\"enabled\": 1}}", "response_cache.enabled"},
		{"{\"response_cache\": {\"size\": 1}}", "unknown key 'response_cache.size'"},
		{"{\"response_cache\": true}", "response_cache"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(cfg_parse_json(&c, bad[i].json, err, sizeof(err)), HERD_E_FORMAT);
		if (!strstr(err, bad[i].needle))
			fail_msg("%s: message '%s' does not name %s", bad[i].json, err, bad[i].needle);
	}
	cfg_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap_evicts_oldest),
		cmocka_unit_test(test_shrink),
		cmocka_unit_test(test_use_keeps_entry),
		cmocka_unit_test(test_map_full),
		cmocka_unit_test(test_collision_is_a_miss),
		cmocka_unit_test(test_dir_rules),
		cmocka_unit_test(test_config_keys),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
