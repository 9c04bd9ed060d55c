/* Integration test of the whole system with real processes, sockets and
 * shared memory (no mocks): a real herdd on a "mini" model this test makes,
 * and agent processes (`herd agent`, fork+exec of the herd binary).
 *
 * test_swarm: 69 agents each connect, attach the shared image, run the
 * model locally once and read every page of the mapping, then all send 4
 * greedy requests at once (every second one streamed). Every answer (text,
 * and token ids for streamed requests) must be identical to the same request
 * run alone through the engine in this process, and so must every agent's
 * local run. While all 69 are still attached, the PSS of the broker plus the
 * agents must stay within image size x 1.1 + 69 x 4 MiB: one physical copy
 * of the weights however many processes map them.
 *
 * test_batching: one agent alone, then 16 agents at once. The broker's
 * statistics must show steps carrying many sequences (its largest step at
 * least 12 of the 16, and several on average). The aggregate and
 * single-agent tokens/s are printed, never asserted (wall-clock speed is a
 * benchmark's business).
 *
 * test_herdctl: herdctl against the live broker (status, segments with the
 * attached processes, agents, rm refused for a loaded image), refused with
 * "permission denied" for another uid (when the test runs as root; skipped
 * otherwise), shutdown, then segments and rm without a broker.
 *
 * Under AddressSanitizer (the suite's second build) the PSS bound allows
 * 16 MiB per agent instead of 4: every ASan process carries several MiB of
 * its own shadow memory and allocator state (about 7 MiB measured), which
 * says nothing about herd. The agent count stays 69. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <grp.h>

#include <cmocka.h>

#include "harness.h"

#define SWARM_AGENTS 69
#if H_SANITIZE
/* ASan's shadow memory, allocator and quarantine: ~7 MiB private per process */
#define SWARM_AGENT_ALLOWANCE (16ull << 20)
#else
#define SWARM_AGENT_ALLOWANCE (4ull << 20) /* the bound */
#endif
#define SWARM_REQUESTS "4"
#define SWARM_MAX_TOKENS "16"
#define LOCAL_TOKENS 2

static int setup(void **state)
{
	*state = h_world_create("hi");
	return 0;
}

static int teardown(void **state)
{
	h_world_destroy(*state);
	return 0;
}

static void test_swarm(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "32");
	h_barriers(w);
	h_agent *ag[SWARM_AGENTS];
	const char *extra[] = {"--attach", "--local", "--touch", "--requests", SWARM_REQUESTS,
			       "--max-tokens", SWARM_MAX_TOKENS, "--stream-every", "2", NULL};
	const double t0 = clock_mono_s();
	for (int i = 0; i < SWARM_AGENTS; i++)
		ag[i] = h_agent_start(w, i, 1, NULL, extra);
	h_pump(w, ag, SWARM_AGENTS, H_READY, 300);
	const double t_ready = clock_mono_s();

	/* Every agent attached and ran the model on the shared pages: its local
	 * greedy answer is the engine's. */
	h_ref ref;
	h_reference(w, H_AGENT_LOCAL_PROMPT, LOCAL_TOKENS, &ref);
	uint64_t image_bytes = 0;
	for (int i = 0; i < SWARM_AGENTS; i++) {
		size_t cur = 0;
		json_object *r = h_agent_wait_ev(w, ag[i], "ready", &cur, 1);
		if (!r)
			fail_msg("agent %d did not get ready", i);
		assert_int_equal((int)h_num(r, "local_ok"), 1);
		char got[4096];
		long gl = h_unhex(h_str(r, "local_text_hex"), got, sizeof(got));
		assert_true(gl == (long)ref.text_len && !memcmp(got, ref.text, ref.text_len));
		assert_true(h_num(r, "touched_pages") > 0);
		image_bytes = (uint64_t)h_num(r, "image_bytes");
	}
	assert_true(image_bytes > 0);

	h_release(&w->go_w);
	h_pump(w, ag, SWARM_AGENTS, H_FINISHED, 600);
	const double t_done = clock_mono_s();

	/* All still attached (waiting at the exit barrier): measure PSS. */
	uint64_t pss_broker = h_pss(w->broker), pss_agents = 0;
	for (int i = 0; i < SWARM_AGENTS; i++) {
		uint64_t p = h_pss(ag[i]->pid);
		assert_true(p > 0);
		pss_agents += p;
	}
	const uint64_t total = pss_broker + pss_agents;
	const uint64_t bound = (uint64_t)((double)image_bytes * 1.1) +
			       (uint64_t)SWARM_AGENTS * SWARM_AGENT_ALLOWANCE;
	printf("swarm: %d agents ready in %.1f s, requests done in %.1f s\n", SWARM_AGENTS,
	       t_ready - t0, t_done - t_ready);
	printf("swarm: image %.2f MiB; PSS broker %.2f MiB + agents %.2f MiB (%.2f MiB each) = "
	       "%.2f MiB, bound %.2f MiB\n",
	       image_bytes / 1048576.0, pss_broker / 1048576.0, pss_agents / 1048576.0,
	       pss_agents / 1048576.0 / SWARM_AGENTS, total / 1048576.0, bound / 1048576.0);
	if (total > bound)
		fail_msg("PSS of the broker and %d agents is %llu bytes, over the bound %llu",
			 SWARM_AGENTS, (unsigned long long)total, (unsigned long long)bound);

	/* Every answer equals the engine's answer to the same request alone. */
	int n_req = 0, n_stream = 0;
	long n_tok = 0;
	for (int i = 0; i < SWARM_AGENTS; i++) {
		assert_false(ag[i]->fatal);
		n_req += h_check_agent(w, ag[i], &n_stream, &n_tok);
	}
	assert_int_equal(n_req, SWARM_AGENTS * atoi(SWARM_REQUESTS));
	assert_int_equal(n_stream, n_req / 2);
	printf("swarm: %d requests (%d streamed, %ld tokens) identical to the engine alone\n", n_req,
	       n_stream, n_tok);

	h_release(&w->exit_w);
	for (int i = 0; i < SWARM_AGENTS; i++) {
		int st = h_agent_reap(w, ag[i], 60);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	json_object *s = h_ctl(w, "status");
	assert_non_null(s);
	assert_int_equal((int)h_num(s, "requests_in_flight"), 0);
	assert_true(h_num(s, "requests_total") >= n_req);
	json_object_put(s);
	h_broker_stop(w);
}

/* Sum of generated tokens and the longest client latency of a's requests. */
static void agent_totals(const h_agent *a, double *tokens, double *lat_sum)
{
	for (size_t i = 0; i < json_object_array_length(a->lines); i++) {
		json_object *o = json_object_array_get_idx(a->lines, i);
		if (strcmp(h_str(o, "ev"), "req"))
			continue;
		*tokens += h_num(o, "n_gen");
		*lat_sum += h_num(o, "latency_ms");
	}
}

#define BATCH_AGENTS 16

static void test_batching(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "32");
	const char *extra[] = {"--requests", "3", "--max-tokens", "64", "--stream-every", "2", NULL};

	/* One agent alone. */
	h_barriers(w);
	h_agent *one = h_agent_start(w, 100, 1, NULL, extra);
	h_pump(w, &one, 1, H_READY, 60);
	h_release(&w->go_w);
	h_pump(w, &one, 1, H_FINISHED, 120);
	h_release(&w->exit_w);
	assert_int_equal(h_agent_reap(w, one, 30), 0);
	double tok1 = 0, lat1 = 0;
	agent_totals(one, &tok1, &lat1);
	const double single = lat1 > 0 ? tok1 / (lat1 / 1e3) : 0;
	json_object *m0 = h_ctl_model(w);
	const double steps0 = h_num(m0, "steps"), seqs0 = h_num(m0, "avg_batch") * steps0;
	json_object_put(m0);

	/* Sixteen at once. */
	h_barriers(w);
	h_agent *ag[BATCH_AGENTS];
	for (int i = 0; i < BATCH_AGENTS; i++)
		ag[i] = h_agent_start(w, i, 1, NULL, extra);
	h_pump(w, ag, BATCH_AGENTS, H_READY, 120);
	const double t0 = clock_mono_s();
	h_release(&w->go_w);
	h_pump(w, ag, BATCH_AGENTS, H_FINISHED, 300);
	const double wall = clock_mono_s() - t0;
	h_release(&w->exit_w);
	double tok = 0, lat = 0;
	int n_stream = 0;
	long n_tok = 0;
	for (int i = 0; i < BATCH_AGENTS; i++) {
		assert_int_equal(h_agent_reap(w, ag[i], 30), 0);
		agent_totals(ag[i], &tok, &lat);
		assert_int_equal(h_check_agent(w, ag[i], &n_stream, &n_tok), 3);
	}
	json_object *m1 = h_ctl_model(w);
	const double steps1 = h_num(m1, "steps"), seqs1 = h_num(m1, "avg_batch") * steps1;
	const int max_seen = (int)h_num(m1, "max_batch_seen");
	json_object_put(m1);
	const double avg = steps1 > steps0 ? (seqs1 - seqs0) / (steps1 - steps0) : 0;
	const double agg = wall > 0 ? tok / wall : 0;
	printf("batching: single agent %.1f tokens/s; %d agents %.1f tokens/s aggregate (x%.1f); "
	       "broker: %.0f steps, %.1f sequences per step on average, max %d\n",
	       single, BATCH_AGENTS, agg, single > 0 ? agg / single : 0, steps1 - steps0, avg,
	       max_seen);
	assert_true(max_seen >= 12);
	assert_true(avg >= 4.0);
	h_broker_stop(w);
}

/* Runs herdctl with args (as uid/gid when uid >= 0), stdout+stderr into
 * out. Returns the exit status (-1 when it did not exit). */
static int run_ctl(h_world *w, int uid, const char *const *args, char *out, size_t cap)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		if (uid >= 0 && (setgroups(0, NULL) || setgid((gid_t)uid) || setuid((uid_t)uid)))
			_exit(126);
		char *argv[16];
		int n = 0;
		argv[n++] = w->herdctl;
		argv[n++] = "--socket";
		argv[n++] = w->sock;
		for (int i = 0; args[i] && n < 15; i++)
			argv[n++] = (char *)args[i];
		argv[n] = NULL;
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	size_t len = 0;
	ssize_t r;
	while ((r = read(p[0], out + len, cap - 1 - len)) > 0)
		len += (size_t)r;
	out[len] = 0;
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_object *find_seg(json_object *arr, const char *name)
{
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++)
		if (!strcmp(h_str(json_object_array_get_idx(arr, i), "name"), name))
			return json_object_array_get_idx(arr, i);
	return NULL;
}

static void test_herdctl(void **state)
{
	h_world *w = *state;
	h_broker_start(w, "8");
	h_barriers(w);
	const char *extra[] = {"--attach", "--requests", "1", "--max-tokens", "4", NULL};
	h_agent *a = h_agent_start(w, 0, 1, NULL, extra);
	h_release(&w->go_w);
	h_pump(w, &a, 1, H_FINISHED, 60);

	json_object *st = h_ctl(w, "status");
	assert_non_null(st);
	assert_int_equal((pid_t)h_num(st, "pid"), w->broker);
	assert_int_equal((int)h_num(st, "models"), 1);
	json_object_put(st);
	json_object *m = h_ctl_model(w);
	char seg[SHM_IMAGE_NAME_MAX], digest[80];
	snprintf(seg, sizeof(seg), "%s", h_str(m, "segment"));
	snprintf(digest, sizeof(digest), "%s", h_str(m, "digest"));
	json_object_put(m);

	json_object *segs = h_ctl(w, "segments");
	json_object *s = find_seg(segs, seg);
	assert_non_null(s);
	assert_string_equal(h_str(s, "digest"), digest);
	assert_true(h_num(s, "attached") >= 2); /* the broker and the agent */
	assert_true(json_object_get_boolean(json_object_object_get(s, "loaded")));
	json_object_put(segs);

	json_object *ags = h_ctl(w, "agents");
	int seen = 0;
	for (size_t i = 0; ags && i < json_object_array_length(ags); i++)
		seen |= (pid_t)h_num(json_object_array_get_idx(ags, i), "pid") == a->pid;
	assert_true(seen);
	json_object_put(ags);

	char out[8192];
	const char *rm[] = {"rm", seg, NULL};
	assert_int_equal(run_ctl(w, -1, rm, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "loaded model"));
	const char *tbl[] = {"segments", NULL};
	assert_int_equal(run_ctl(w, -1, tbl, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "NATTCH"));
	assert_non_null(strstr(out, seg));

	if (geteuid() == 0) {
		/* another uid that can reach the socket is still refused */
		assert_int_equal(chmod(w->dir, 0711), 0);
		assert_int_equal(chmod(w->sock, 0666), 0);
		const char *stat_args[] = {"status", NULL};
		const int rc = run_ctl(w, 65534, stat_args, out, sizeof(out));
		printf("herdctl as uid 65534: %s", out);
		assert_int_equal(rc, 1);
		assert_non_null(strstr(out, "permission denied: admin requires the broker's uid or group"));
	} else {
		printf("not root: the other-uid refusal is not checked\n");
	}

	h_release(&w->exit_w);
	assert_int_equal(h_agent_reap(w, a, 30), 0);
	const char *down[] = {"shutdown", NULL};
	assert_int_equal(run_ctl(w, -1, down, out, sizeof(out)), 0);
	int bst;
	assert_int_equal(waitpid(w->broker, &bst, 0), w->broker);
	h_untrack(w, w->broker);
	w->broker = 0;
	assert_true(WIFEXITED(bst) && WEXITSTATUS(bst) == 0);

	/* No broker: status fails clearly, segments and rm work directly. */
	const char *stat_args[] = {"status", NULL};
	assert_int_equal(run_ctl(w, -1, stat_args, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "no broker at"));
	segs = h_ctl(w, "segments");
	s = find_seg(segs, seg);
	assert_non_null(s);
	assert_int_equal((int)h_num(s, "attached"), 0);
	json_object_put(segs);
	assert_int_equal(run_ctl(w, -1, rm, out, sizeof(out)), 0);
	int fd;
	assert_int_equal(shm_image_open(seg, &fd), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_swarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
		cmocka_unit_test_setup_teardown(test_herdctl, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
