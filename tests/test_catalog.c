/* The model catalog (broker/catalog.h) on a real LMDB environment in a
 * temporary directory: records and decay, first-order predictions, the
 * score formula, batching (one commit per batch), reopening, and a writer
 * process killed with SIGKILL in the middle of its updates 20 times: the
 * environment opens every time and holds every batch the writer had seen
 * committed. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "herd/error.h"
#include "broker/catalog.h"
#include "broker/config.h"

static char dir[64];

/* flush_ms: the flusher's interval (the writer below flushes itself) */
static catalog *open_cat_ms(int flush_ms)
{
	catalog *c = NULL;
	char err[256] = "";
	catalog_opts o = {.dir = dir, .flush_ms = flush_ms};
	if (catalog_open(&c, &o, err, sizeof(err)))
		fail_msg("catalog_open: %s", err);
	return c;
}

static catalog *open_cat(void)
{
	return open_cat_ms(60000);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/herd-test-catalog-XXXXXX");
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_records_and_reopen(void **state)
{
	(void)state;
	catalog *c = open_cat();
	const double t = catalog_now();
	catalog_note_load(c, "chat", 100 << 20, 500, t);
	for (int i = 0; i < 5; i++)
		catalog_note_use(c, "planner", "chat", t + i);
	catalog_note_use(c, "planner", "coder", t + 6);
	catalog_note_evict(c, "coder", t + 7);
	assert_int_equal(catalog_flush(c), 0);
	catalog_stats st;
	catalog_get_stats(c, &st);
	assert_int_equal(st.commits, 1); /* one transaction for the whole batch */
	assert_int_equal(st.applied, 8);
	catalog_close(c);

	c = open_cat();
	catalog_model m;
	assert_int_equal(catalog_get_model(c, "chat", &m), 0);
	assert_int_equal(m.uses, 5);
	assert_int_equal(m.loads, 1);
	assert_int_equal(m.bytes, 100 << 20);
	assert_true(m.freq > 4.9 && m.freq <= 5.0); /* decayed over 4 s of a 600 s half-life */
	assert_int_equal(catalog_get_model(c, "coder", &m), 0);
	assert_int_equal(m.evictions, 1);
	assert_int_equal(catalog_get_model(c, "nothing", &m), -ENOENT);
	catalog_agent a;
	assert_int_equal(catalog_get_agent(c, "planner", &a), 0);
	assert_string_equal(a.last_model, "coder");
	assert_int_equal(a.uses, 6);
	const double aff = catalog_affinity(c, "planner", "chat", t + 4);
	assert_true(aff > 4.9 && aff <= 5.0);
	assert_true(catalog_affinity(c, "planner", "chat", t + 4 + CATALOG_HALF_LIFE_S) < aff / 1.99);
	assert_true(catalog_affinity(c, "nobody", "chat", t) == 0);
	catalog_close(c);
}

static void test_predict(void **state)
{
	(void)state;
	catalog *c = open_cat();
	const double t = catalog_now();
	/* a -> b three times, a -> c once, a -> a twice */
	const char *seq[] = {"a", "b", "a", "b", "a", "c", "a", "a", "a", "b"};
	for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
		catalog_note_use(c, "agent1", seq[i], t + (double)i);
	catalog_note_use(c, "agent2", "c", t);
	catalog_note_use(c, "agent2", "a", t + 1);
	assert_int_equal(catalog_flush(c), 0);
	char to[CATALOG_NAME_MAX];
	double conf;
	assert_int_equal(catalog_predict(c, "agent1", "a", to, sizeof(to), &conf), 0);
	assert_string_equal(to, "b");
	assert_true(fabs(conf - 3.0 / 6.0) < 1e-9); /* 3 of the 6 moves out of a */
	assert_int_equal(catalog_predict(c, "agent1", "b", to, sizeof(to), &conf), 0);
	assert_string_equal(to, "a");
	assert_true(conf == 1.0);
	assert_int_equal(catalog_predict(c, "agent2", "c", to, sizeof(to), &conf), 0);
	assert_string_equal(to, "a");
	assert_int_equal(catalog_predict(c, "agent2", "a", to, sizeof(to), &conf), -ENOENT);
	assert_int_equal(catalog_predict(c, "agent3", "a", to, sizeof(to), &conf), -ENOENT);
	/* a name that is a prefix of another does not match it */
	catalog_note_use(c, "agent", "z", t);
	catalog_note_use(c, "agent", "y", t + 1);
	assert_int_equal(catalog_flush(c), 0);
	assert_int_equal(catalog_predict(c, "agent", "a", to, sizeof(to), &conf), -ENOENT);
	catalog_close(c);
}

static void test_score(void **state)
{
	(void)state;
	const double now = 1e9;
	catalog_score_parts p;
	catalog_score(NULL, 0, now, &p);
	assert_true(p.score == 0);
	catalog_model m = {.bytes = 1 << 20, .load_ms = 1, .last_use = now, .freq = 1, .freq_t = now};
	catalog_score(&m, 1, now, &p);
	assert_true(fabs(p.recency - 1) < 1e-12);
	assert_true(fabs(p.frequency - 0.5) < 1e-12);
	assert_true(fabs(p.cost - 0.5) < 1e-12);
	assert_true(fabs(p.affinity - 0.5) < 1e-12);
	assert_true(fabs(p.score - (0.35 + 0.25 * 0.5 + 0.15 * 0.5 + 0.25 * 0.5)) < 1e-12);
	catalog_score_parts older;
	m.last_use = now - CATALOG_RECENCY_S;
	catalog_score(&m, 1, now, &older);
	assert_true(fabs(older.recency - exp(-1)) < 1e-12);
	assert_true(older.score < p.score);
	assert_true(catalog_decay(8, 0, 3 * CATALOG_HALF_LIFE_S) == 1);
}

/* The writer: one use per batch, flushed, then the count it saw committed
 * written to the pipe; runs until killed. */
static void writer(int fd)
{
	catalog *c = open_cat();
	for (uint64_t n = 1;; n++) {
		catalog_note_use(c, "writer", "m", catalog_now());
		catalog_note_use(c, "writer2", "m", catalog_now());
		if (catalog_flush(c))
			_exit(3);
		catalog_model m;
		if (catalog_get_model(c, "m", &m))
			_exit(4);
		if (write(fd, &m.uses, sizeof(m.uses)) != sizeof(m.uses))
			_exit(5);
	}
}

static void test_kill9_loop(void **state)
{
	(void)state;
	uint64_t committed = 0;
	for (int round = 0; round < 20; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			writer(p[1]);
		}
		close(p[1]);
		uint64_t v;
		for (int k = 0; k < 5 + round * 3; k++) {
			if (read(p[0], &v, sizeof(v)) != sizeof(v))
				fail_msg("round %d: the writer died", round);
			assert_true(v > committed || k > 0);
			committed = v;
		}
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		while (read(p[0], &v, sizeof(v)) == sizeof(v))
			committed = v; /* reported before the kill: committed */
		close(p[0]);
		catalog *c = open_cat();
		catalog_model m;
		assert_int_equal(catalog_get_model(c, "m", &m), 0);
		if (m.uses < committed)
			fail_msg("round %d: %llu uses committed, %llu after kill -9", round,
				 (unsigned long long)committed, (unsigned long long)m.uses);
		assert_true(m.uses % 2 == 0); /* a batch is all or nothing */
		committed = m.uses;
		catalog_close(c);
	}
}

/* The cache manager's configuration keys: read, defaulted, and refused
 * with a message naming the key. */
static void test_config_keys(void **state)
{
	(void)state;
	cfg c;
	char err[512] = "";
	cfg_init(&c);
	assert_int_equal(c.max_memory_mb, 0);
	assert_true(c.preload_confidence == 0.6);
	assert_int_equal(c.preload_predict, 1);
	assert_int_equal(cfg_parse_json(&c,
					"{\"max_memory_mb\": 2048, \"preload_confidence\": 0.75, "
					"\"preload\": false, \"catalog_flush_ms\": 50, \"models\": ["
					"{\"name\": \"a\", \"file\": \"/a.gguf\", \"pinned\": true},"
					"{\"name\": \"b\", \"file\": \"/b.gguf\", \"preload\": true}]}",
					err, sizeof(err)),
			 0);
	assert_int_equal(c.max_memory_mb, 2048);
	assert_true(c.preload_confidence == 0.75);
	assert_int_equal(c.preload_predict, 0);
	assert_int_equal(c.catalog_flush_ms, 50);
	assert_int_equal(c.n_models, 2);
	assert_true(c.models[0].pinned && !c.models[0].preload);
	assert_true(!c.models[1].pinned && c.models[1].preload);
	cfg_fini(&c);
	static const char *const bad[][2] = {
		{"{\"preload_confidence\": 1.5}", "preload_confidence"},
		{"{\"preload_confidence\": \"high\"}", "preload_confidence"},
		{"{\"max_memory_mb\": -1}", "max_memory_mb"},
		{"{\"preload\": 1}", "preload"},
		{"{\"models\": [{\"name\": \"a\", \"file\": \"/a\", \"pinned\": \"yes\"}]}",
		 "models[0].pinned"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg_init(&c);
		err[0] = 0;
		assert_int_equal(cfg_parse_json(&c, bad[i][0], err, sizeof(err)), HERD_E_FORMAT);
		if (!strstr(err, bad[i][1]))
			fail_msg("'%s': message '%s' does not name %s", bad[i][0], err, bad[i][1]);
		cfg_fini(&c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_records_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_predict, setup, teardown),
		cmocka_unit_test(test_score),
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test_setup_teardown(test_kill9_loop, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
