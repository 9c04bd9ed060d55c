/* The model cache manager end to end (broker/models.h): a real herdd with
 * three mini models and a byte budget for two, real images in /dev/shm, a
 * real LMDB catalog in the test's state directory, herdctl as the window.
 *
 *   budget: the resident bytes never exceed max_memory_mb; the evicted
 *           model is the idle one of lowest score
 *   running requests: a model with a running request is never evicted (a
 *           third model waits, then the drained one goes)
 *   held images: an evicted image this process maps stays counted, with
 *           our pid, until we unmap it
 *   admin: pin / evict / unpin / load / preload, top --once --json
 *   restart: scores and affinity survive a broker restart
 *   kill -9: 20 times killed while updating, the catalog opens and holds
 *           every update it had committed
 *   preloading: a fixed cycle over the three models reaches a preload hit
 *           rate >= 80%; a random workload makes no eviction for a
 *           prediction below preload_confidence */
#include "broker_harness.h"

#include "json_get.h"

#define N_MODELS 3
#define BUDGET_MB 14 /* a mini model with its KV pool: ~6.6 MiB; two fit, three do not */

static char herdctl[PATH_MAX];
#define PROMPT "Once upon a time, a little robot named Pip"
static char names[N_MODELS][32];
static char paths[N_MODELS][192];
static char state_dir[192];

/* One request, waited for: 0 done, else the err code. */
static int gen_wait(client *c, uint64_t id, const char *model, int max_tokens)
{
	static gen_out out[1];
	memset(out, 0, sizeof(out));
	cl_gen(c, id, model, PROMPT, max_tokens, 0);
	collect(c, out, 1, id, 1);
	return out[0].is_err ? out[0].code : 0;
}

/* ---- herdctl ----------------------------------------------------------------- */

static json_object *ctl(const char *cmd)
{
	return herdctl_json(herdctl, W.sock, cmd);
}

static json_object *model_row(json_object *models, const char *name)
{
	if (!models) {
		dump_log();
		fail_msg("herdctl models failed");
	}
	for (size_t i = 0; i < json_object_array_length(models); i++) {
		json_object *m = json_object_array_get_idx(models, i);
		if (!strcmp(json_object_get_string(json_object_object_get(m, "name")), name))
			return m;
	}
	fail_msg("model %s not in herdctl models", name);
	return NULL;
}

static const char *state_of(json_object *models, int i)
{
	return json_object_get_string(json_object_object_get(model_row(models, names[i]), "state"));
}

static double num(json_object *o, const char *k)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(o, k, &v))
		fail_msg("key %s missing", k);
	return json_object_get_double(v);
}

/* Waits until the catalog has nothing queued (every update committed). */
static void wait_committed(void)
{
	for (int i = 0; i < 200; i++) {
		json_object *c = ctl("cache");
		const int q = c ? (int)num(c, "catalog_queued") : 1;
		json_object_put(c);
		if (q == 0)
			return;
		usleep(10000);
	}
	fail_msg("the catalog never committed its queue");
}

/* Every resident byte within the budget (held images included). */
static void assert_budget(void)
{
	json_object *c = ctl("cache");
	assert_non_null(c);
	const double used = num(c, "used_bytes"), budget = num(c, "budget_bytes");
	json_object_put(c);
	if (used > budget)
		fail_msg("used %.0f bytes > budget %.0f", used, budget);
}

/* ---- broker ------------------------------------------------------------------------ */

static void write_conf(int preload, double confidence)
{
	FILE *f = fopen(W.conf, "w");
	assert_non_null(f);
	fprintf(f,
		"{\"state_dir\": \"%s\", \"max_memory_mb\": %d, \"catalog_flush_ms\": 10, \"kv_cache_mb\": 4,\n"
		" \"preload\": %s, \"preload_confidence\": %.2f, \"models\": [\n",
		state_dir, BUDGET_MB, preload ? "true" : "false", confidence);
	for (int i = 0; i < N_MODELS; i++)
		fprintf(f, "  {\"name\": \"%s\", \"file\": \"%s\"}%s\n", names[i], paths[i],
			i + 1 < N_MODELS ? "," : "");
	fprintf(f, "]}\n");
	fclose(f);
}

static void start(void)
{
	const char *extra[] = {"--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
}

static void stop(int sig)
{
	if (W.pid <= 0)
		return;
	kill(W.pid, sig);
	int st;
	waitpid(W.pid, &st, 0);
	W.pid = 0;
	if (sig != SIGKILL)
		return;
	/* the kernel tears a killed process's io_uring down asynchronously: its
	 * listening socket may accept connections (that nobody serves) for a
	 * moment; the next broker would call it in use. Wait, then unlink. */
	for (int i = 0; i < 100; i++) {
		int fd = sock_connect();
		if (fd < 0)
			return;
		close(fd);
		usleep(20000);
	}
	unlink(W.sock);
}

static int setup(void **state)
{
	(void)state;
	if (find_herdd(W.herdd, sizeof(W.herdd))) {
		fprintf(stderr, "test_models: herdd not found; skipping\n");
		exit(77);
	}
	snprintf(herdctl, sizeof(herdctl), "%s", W.herdd);
	snprintf(strrchr(herdctl, '/') + 1, sizeof(herdctl) - (size_t)(strrchr(herdctl, '/') + 1 - herdctl),
		 "herdctl");
	snprintf(W.dir, sizeof(W.dir), "/tmp/herd-test-models-XXXXXX");
	assert_non_null(mkdtemp(W.dir));
	snprintf(W.sock, sizeof(W.sock), "%s/herd.sock", W.dir);
	snprintf(W.log, sizeof(W.log), "%s/herdd.log", W.dir);
	snprintf(W.conf, sizeof(W.conf), "%s/herd.json", W.dir);
	snprintf(state_dir, sizeof(state_dir), "%s/state", W.dir);
	for (int i = 0; i < N_MODELS; i++) {
		snprintf(names[i], sizeof(names[i]), "tm%d%c", (int)getpid(), 'a' + i);
		snprintf(paths[i], sizeof(paths[i]), "%s/m%d.gguf", W.dir, i);
		char err[512] = "";
		mkmodel_opts mo = {.shape = "mini", .ftype = "Q8_0", .out_path = paths[i],
				   .seed = 21 + i, .n_threads = 2};
		if (mkmodel_write(&mo, err, sizeof(err)))
			fail_msg("mkmodel_write: %s", err);
	}
	/* spawn() always passes --model W.spec: the first model, as in the config */
	snprintf(W.spec, sizeof(W.spec), "%s=%s", names[0], paths[0]);
	write_conf(0, 0.6);
	return 0;
}

static int rm_seg(void *user, const shm_image_info *in)
{
	(void)user;
	for (int i = 0; i < N_MODELS; i++)
		if (!strcmp(in->model, names[i]))
			shm_image_remove(in->name);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	stop(SIGKILL);
	shm_image_list(0, rm_seg, NULL);
	if (getenv("HERD_TEST_VERBOSE"))
		dump_log();
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", W.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", W.dir);
	return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

/* A, B, A, then C: B is the idle model of lowest score (older, used less). */
static void test_budget_evicts_lowest(void **state)
{
	(void)state;
	start();
	json_object *m = ctl("models");
	for (int i = 0; i < N_MODELS; i++)
		assert_string_equal(state_of(m, i), "unloaded"); /* nothing pinned or preloaded */
	json_object_put(m);
	client c;
	cl_open(&c);
	cl_hello(&c, "budget-agent");
	const int order[4] = {0, 1, 0, 0};
	for (int k = 0; k < 4; k++) {
		assert_int_equal(gen_wait(&c, (uint64_t)k + 1, names[order[k]], 4), 0);
		wait_committed();
		assert_budget();
	}
	assert_int_equal(gen_wait(&c, 10, names[2], 4), 0);
	assert_budget();
	m = ctl("models");
	assert_string_equal(state_of(m, 0), "resident");
	assert_string_equal(state_of(m, 2), "resident");
	const char *b = state_of(m, 1);
	assert_true(!strcmp(b, "unloaded") || !strcmp(b, "evicting"));
	assert_true(num(model_row(m, names[0]), "score") > num(model_row(m, names[1]), "score"));
	json_object_put(m);
	json_object *cache = ctl("cache");
	assert_int_equal((int)num(cache, "evictions"), 1);
	assert_int_equal((int)num(cache, "loads"), 3);
	json_object_put(cache);
	cl_close(&c);
}

/* A and B each run a long request; C must wait for one of them to finish:
 * neither long request is cut, and C is served afterwards. */
static void test_running_never_evicted(void **state)
{
	(void)state;
	client a, b, c;
	cl_open(&a);
	cl_open(&b);
	cl_open(&c);
	cl_hello(&a, "long-a");
	cl_hello(&b, "long-b");
	cl_hello(&c, "third");
	static gen_out oa[1], ob[1], oc[1];
	memset(oa, 0, sizeof(oa));
	memset(ob, 0, sizeof(ob));
	memset(oc, 0, sizeof(oc));
	cl_gen(&a, 1, names[0], PROMPT, 300, 0);
	cl_gen(&b, 1, names[1], PROMPT, 300, 0);
	usleep(50000);
	cl_gen(&c, 1, names[2], PROMPT, 4, 0);
	usleep(50000);
	json_object *m = ctl("models");
	const char *st = state_of(m, 2);
	if (strcmp(st, "waiting")) /* the long ones finished already: nothing to show */
		fprintf(stderr, "note: %s is '%s' (the long requests ended early)\n", names[2], st);
	json_object_put(m);
	collect(&a, oa, 1, 1, 1);
	collect(&b, ob, 1, 1, 1);
	collect(&c, oc, 1, 1, 1);
	assert_false(oa[0].is_err);
	assert_false(ob[0].is_err);
	assert_false(oc[0].is_err);
	assert_true(oa[0].reason == HERD_FINISH_LENGTH || oa[0].reason == HERD_FINISH_STOP);
	assert_true(ob[0].reason == HERD_FINISH_LENGTH || ob[0].reason == HERD_FINISH_STOP);
	assert_budget();
	cl_close(&a);
	cl_close(&b);
	cl_close(&c);
}

/* Maps the image of model i (attach; retried while it loads). */
static void attach_map(client *c, int i, shm_image_map_t *map)
{
	for (int tries = 0; tries < 500; tries++) {
		proto_buf b;
		proto_buf_init(&b);
		proto_attach at = {.model = proto_s(names[i])};
		assert_int_equal(proto_encode_attach(&b, &at), 0);
		cl_send_buf(c, &b);
		assert_int_equal(cl_next(c), 0);
		if (c->m.type == PROTO_IMAGE)
			break;
		assert_int_equal(c->m.type, PROTO_ERR);
		assert_int_equal(c->m.err.code, -EAGAIN); /* loading: retry */
		usleep(20000);
	}
	assert_int_equal(c->m.type, PROTO_IMAGE);
	assert_true(c->got_fd >= 0);
	char err[256];
	assert_int_equal(shm_image_map(c->got_fd, map, err, sizeof(err)), 0);
	close(c->got_fd);
	c->got_fd = -1;
}

static int held_has_me(json_object *cache)
{
	json_object *held = json_object_object_get(cache, "held");
	for (size_t i = 0; i < json_object_array_length(held); i++) {
		json_object *pids = json_object_object_get(json_object_array_get_idx(held, i), "pids");
		for (size_t k = 0; k < json_object_array_length(pids); k++)
			if (json_object_get_int(json_object_array_get_idx(pids, k)) == (int)getpid())
				return 1;
	}
	return 0;
}

/* Admin commands, and an evicted image we still map: counted as held
 * with our pid, until we unmap it. */
static void test_admin_and_held(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	cl_hello(&c, "attacher");
	json_object *r = ctl("load nosuchmodel");
	assert_null(r);
	r = ctl("load ");
	assert_null(r);
	shm_image_map_t map;
	attach_map(&c, 0, &map);
	char cmd[96];
	snprintf(cmd, sizeof(cmd), "pin %s", names[0]);
	r = ctl(cmd);
	assert_non_null(r);
	json_object_put(r);
	snprintf(cmd, sizeof(cmd), "evict %s", names[0]);
	assert_null(ctl(cmd)); /* pinned: refused */
	snprintf(cmd, sizeof(cmd), "unpin %s", names[0]);
	json_object_put(ctl(cmd));
	/* our pid shows as a holder of the resident image (rescanned every 2 s) */
	int seen = 0;
	for (int i = 0; i < 60 && !seen; i++) {
		json_object *m = ctl("models");
		json_object *h = json_object_object_get(model_row(m, names[0]), "holders");
		for (size_t k = 0; k < json_object_array_length(h); k++)
			seen |= json_object_get_int(json_object_array_get_idx(h, k)) == (int)getpid();
		json_object_put(m);
		usleep(100000);
	}
	assert_true(seen);
	snprintf(cmd, sizeof(cmd), "evict %s", names[0]);
	r = ctl(cmd);
	assert_non_null(r);
	json_object_put(r);
	json_object *cache = NULL;
	for (int i = 0; i < 60; i++) {
		json_object_put(cache);
		cache = ctl("cache");
		if (held_has_me(cache))
			break;
		usleep(50000);
	}
	assert_true(held_has_me(cache));
	assert_true(num(cache, "held_bytes") > 0);
	json_object_put(cache);
	shm_image_unmap(&map);
	for (int i = 0; i < 60; i++) {
		cache = ctl("cache");
		const int gone = num(cache, "held_bytes") == 0;
		json_object_put(cache);
		if (gone)
			break;
		usleep(100000);
	}
	cache = ctl("cache");
	assert_true(num(cache, "held_bytes") == 0);
	json_object_put(cache);
	snprintf(cmd, sizeof(cmd), "load %s", names[0]);
	json_object_put(ctl(cmd));
	json_object *top = ctl("top --once");
	assert_non_null(top);
	assert_non_null(json_object_object_get(top, "agents"));
	assert_non_null(json_object_object_get(top, "models"));
	assert_non_null(json_object_object_get(top, "pressure"));
	json_object_put(top);
	cl_close(&c);
}

/* Uses and affinity come back after a restart. */
static void test_restart_keeps_scores(void **state)
{
	(void)state;
	wait_committed();
	json_object *m = ctl("models");
	const double uses = num(model_row(m, names[0]), "uses");
	json_object_put(m);
	assert_true(uses >= 4);
	stop(SIGTERM);
	start();
	m = ctl("models");
	assert_true(num(model_row(m, names[0]), "uses") == uses);
	assert_true(num(model_row(m, names[0]), "score_affinity") == 0); /* nobody connected */
	json_object_put(m);
	client c;
	cl_open(&c);
	cl_hello(&c, "budget-agent"); /* used names[0] three times in the first test */
	m = ctl("models");
	assert_true(num(model_row(m, names[0]), "score_affinity") > 0);
	json_object_put(m);
	cl_close(&c);
}

/* kill -9 during updates, 20 times: every committed use is still there. */
static void test_kill9_loop(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		if (!W.pid)
			start();
		client c;
		cl_open(&c);
		cl_hello(&c, "kill-agent");
		assert_int_equal(gen_wait(&c, 1, names[0], 1), 0);
		wait_committed();
		json_object *m = ctl("models");
		const double committed = num(model_row(m, names[0]), "uses");
		json_object_put(m);
		for (int k = 0; k < 8; k++)
			cl_gen(&c, 100 + (uint64_t)k, names[0], PROMPT, 1, 0);
		usleep((useconds_t)(round % 4) * 5000);
		stop(SIGKILL);
		cl_close(&c);
		start();
		m = ctl("models");
		const double after = num(model_row(m, names[0]), "uses");
		json_object_put(m);
		if (after < committed)
			fail_msg("round %d: %.0f uses committed before kill -9, %.0f after", round, committed,
				 after);
		json_object *cache = ctl("cache");
		assert_non_null(cache);
		json_object_put(cache);
	}
	/* the catalog opened every time */
	FILE *f = fopen(W.log, "r");
	assert_non_null(f);
	char line[1024];
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "no model catalog"))
			fail_msg("the catalog did not open: %s", line);
	fclose(f);
}

/* A fixed cycle A -> B -> C -> A ...: after the first round every switch
 * finds its model preloaded. */
static void test_preload_cycle(void **state)
{
	(void)state;
	stop(SIGTERM);
	write_conf(1, 0.6);
	start();
	client c;
	cl_open(&c);
	cl_hello(&c, "cycler");
	json_object *c0 = ctl("cache");
	const double h0 = num(c0, "preload_hits"), m0 = num(c0, "switch_misses");
	json_object_put(c0);
	for (int k = 0; k < 36; k++) {
		assert_int_equal(gen_wait(&c, 1000 + (uint64_t)k, names[k % 3], 2), 0);
		usleep(120000); /* the agent thinks; the predicted model loads */
		assert_budget();
	}
	json_object *cache = ctl("cache");
	const double hits = num(cache, "preload_hits") - h0, misses = num(cache, "switch_misses") - m0;
	fprintf(stderr, "preload cycle: %.0f hits, %.0f misses, %.0f wasted, %.0f predictions\n", hits,
		misses, num(cache, "preload_wasted"), num(cache, "predictions"));
	json_object_put(cache);
	assert_true(hits + misses > 0);
	assert_true(hits / (hits + misses) >= 0.8);
	cl_close(&c);
}

/* Random switches: predictions are made, none below the confidence evicts. */
static void test_random_no_low_confidence_evictions(void **state)
{
	(void)state;
	stop(SIGTERM);
	write_conf(1, 0.9);
	start();
	client c[3];
	for (int a = 0; a < 3; a++) {
		char name[32];
		snprintf(name, sizeof(name), "random-%d", a);
		cl_open(&c[a]);
		cl_hello(&c[a], name);
	}
	unsigned seed = 12345;
	for (int k = 0; k < 45; k++) {
		const int a = k % 3, i = (int)(rand_r(&seed) % 3);
		assert_int_equal(gen_wait(&c[a], 2000 + (uint64_t)k, names[i], 2), 0);
		usleep(30000);
		assert_budget();
	}
	json_object *cache = ctl("cache");
	const double preds = num(cache, "predictions"), pev = num(cache, "preload_evictions");
	const double minc = num(cache, "preload_min_evict_confidence");
	fprintf(stderr, "random: %.0f predictions, %.0f evictions for predictions (min confidence %.2f)\n",
		preds, pev, minc);
	assert_true(preds > 0);
	assert_true(pev == 0 || minc >= 0.9);
	json_object_put(cache);
	for (int a = 0; a < 3; a++)
		cl_close(&c[a]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget_evicts_lowest),
		cmocka_unit_test(test_running_never_evicted),
		cmocka_unit_test(test_admin_and_held),
		cmocka_unit_test(test_restart_keeps_scores),
		cmocka_unit_test(test_kill9_loop),
		cmocka_unit_test(test_preload_cycle),
		cmocka_unit_test(test_random_no_low_confidence_evictions),
	};
	if (getenv("HERD_TEST_FILTER"))
		cmocka_set_test_filter(getenv("HERD_TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
