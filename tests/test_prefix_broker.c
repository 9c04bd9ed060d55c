/* Prefix sharing through a real herdd on the mini model: 69 agents sharing
 * a 200-token system prompt each with its own 32-token question evaluate at
 * most 200 + 69 x 32 + one block per agent prompt tokens (the broker's own
 * counters, admin status), and answer the same text as with prefix_cache
 * off; an agent of another uid gets no prefix hit on a prompt another trust
 * domain cached, unless a prefix_sharing group puts both in one domain
 * (needs root to become nobody: that test is skipped otherwise). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <grp.h>
#include <string.h>

#include <cmocka.h>

#include "broker/config.h"
#include "model/llama.h"
#include "model/mkmodel.h"
#include "shm/fdpass.h"
#include "shm/image.h"

#include "broker_harness.h"

#define N_AGENTS 69
#define N_SYS 200
#define N_Q 32
#define N_GEN 8

/* ---- setup --------------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	bh_world_setup("tp");
	return 0;
}

static void stop_broker(void)
{
	if (W.pid > 0) {
		kill(W.pid, SIGKILL);
		waitpid(W.pid, NULL, 0);
		W.pid = 0;
	}
}

static int group_teardown(void **state)
{
	(void)state;
	stop_broker();
	bh_world_teardown();
	return 0;
}

/* A fresh broker with the given configuration file text. */
static void start_broker(const char *conf)
{
	stop_broker();
	/* a new socket path each time: a killed broker's io_uring may hold the
	 * old listening socket open for a moment after it is reaped */
	static int gen;
	unlink(W.sock);
	snprintf(W.sock, sizeof(W.sock), "%s/herd%d.sock", W.dir, gen++);
	FILE *f = fopen(W.conf, "w");
	assert_non_null(f);
	fputs(conf, f);
	fclose(f);
	const char *extra[] = {"--config", W.conf, "--state-dir", W.dir, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
}

static void fill_tokens(int32_t *t, int n, unsigned seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		t[i] = (int32_t)(3 + (seed >> 8) % 2000u);
	}
}

/* ---- a plain client, usable in a child without cmocka ---------------------- */

/* Sends hello(name) and a greedy, non-streamed gen of tokens[n] on fd and
 * reads up to its done: text into out (NUL-terminated, cap bytes) and
 * n_cached. Returns 0 or a small positive failure code. */
static int raw_gen(int fd, const char *model, const char *name, const int32_t *tokens, int n,
		   char *out, size_t cap, uint32_t *n_cached)
{
	proto_buf ob;
	proto_buf_init(&ob);
	proto_hello hh = {.v = PROTO_VERSION, .name = proto_s(name)};
	gen_request g;
	gen_request_init(&g);
	g.id = 1;
	g.model = proto_s(model);
	g.input = GEN_INPUT_TOKENS;
	g.tokens = tokens;
	g.n_tokens = (size_t)n;
	g.params.max_tokens = N_GEN;
	int rc = proto_encode_hello(&ob, &hh) || proto_encode_gen(&ob, &g) ||
		 send(fd, ob.data, ob.len, MSG_NOSIGNAL) != (ssize_t)ob.len;
	proto_buf_fini(&ob);
	if (rc)
		return 2;
	static uint8_t in[1 << 16];
	size_t have = 0;
	int waits = 0;
	for (;;) {
		size_t fl = 0;
		if (proto_frame_next(in, have, sizeof(in), &fl) == PROTO_FRAME_READY) {
			proto_msg pm;
			if (proto_decode(in + PROTO_HDR_SIZE, fl, &pm, NULL, 0))
				return 3;
			const int t = pm.type;
			if (t == PROTO_DONE) {
				size_t k = pm.done.text.len < cap - 1 ? pm.done.text.len : cap - 1;
				memcpy(out, pm.done.text.ptr, k);
				out[k] = 0;
				*n_cached = pm.done.n_cached;
			}
			proto_msg_free(&pm);
			if (t == PROTO_ERR)
				return 4;
			if (t == PROTO_DONE)
				return 0;
			memmove(in, in + PROTO_HDR_SIZE + fl, have - PROTO_HDR_SIZE - fl);
			have -= PROTO_HDR_SIZE + fl;
			continue;
		}
		ssize_t r = recv(fd, in + have, sizeof(in) - have, 0);
		/* the harness's 30 s receive timeout: a loaded machine (sanitizers)
		 * may take longer for 69 agents; give it up to 8 of them */
		if (r < 0 && (errno == EINTR || (errno == EAGAIN && ++waits < 8)))
			continue;
		if (r <= 0)
			return 5;
		have += (size_t)r;
	}
}

/* ---- 69 agents, one system prompt ------------------------------------------ */

typedef struct answers {
	char text[N_AGENTS][256];
	uint32_t cached[N_AGENTS];
} answers;

/* Every agent connects and sends its prompt (system + its question) at
 * once; then the answers are read. */
static void run_agents(answers *ans)
{
	static int32_t prompt[N_AGENTS][N_SYS + N_Q];
	int fds[N_AGENTS];
	for (int i = 0; i < N_AGENTS; i++) {
		fill_tokens(prompt[i], N_SYS, 1234);
		fill_tokens(prompt[i] + N_SYS, N_Q, 100 + (unsigned)i);
	}
	/* the requests go out together: hello + gen in one send each */
	for (int i = 0; i < N_AGENTS; i++) {
		fds[i] = sock_connect();
		assert_true(fds[i] >= 0);
	}
	int rcs[N_AGENTS];
	pid_t kids[N_AGENTS];
	int pipes[N_AGENTS][2];
	/* one reader process per agent, so that every request is in flight at
	 * the same time and each answer is read as it comes */
	for (int i = 0; i < N_AGENTS; i++) {
		assert_int_equal(pipe(pipes[i]), 0);
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			char name[32];
			snprintf(name, sizeof(name), "agent-%d", i);
			struct {
				int rc;
				uint32_t cached;
				char text[256];
			} r = {0};
			r.rc = raw_gen(fds[i], W.model_name, name, prompt[i], N_SYS + N_Q, r.text,
				       sizeof(r.text), &r.cached);
			ssize_t w = write(pipes[i][1], &r, sizeof(r));
			_exit(w == (ssize_t)sizeof(r) ? 0 : 9);
		}
		close(pipes[i][1]);
	}
	for (int i = 0; i < N_AGENTS; i++) {
		struct {
			int rc;
			uint32_t cached;
			char text[256];
		} r;
		assert_int_equal(read(pipes[i][0], &r, sizeof(r)), (ssize_t)sizeof(r));
		close(pipes[i][0]);
		int st;
		assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
		rcs[i] = r.rc;
		assert_int_equal(rcs[i], 0);
		memcpy(ans->text[i], r.text, sizeof(r.text));
		ans->cached[i] = r.cached;
		close(fds[i]);
	}
}

static void test_shared_system_prompt(void **state)
{
	(void)state;
	static answers on, off;
	start_broker("{\"prefix_cache\": true}");
	run_agents(&on);
	const uint64_t evaluated = status_u64("tokens_prompt");
	const uint64_t hits = status_u64("prefix_hit_tokens");
	const uint64_t bound = N_SYS + (uint64_t)N_AGENTS * N_Q + (uint64_t)N_AGENTS * LLAMA_KV_PAGE;
	uint64_t sum_cached = 0;
	int hit_agents = 0;
	for (int i = 0; i < N_AGENTS; i++) {
		sum_cached += on.cached[i];
		hit_agents += on.cached[i] >= N_SYS / LLAMA_KV_PAGE * LLAMA_KV_PAGE;
	}
	printf("prefix on: %llu prompt tokens evaluated (bound %llu, without sharing %d), "
	       "%llu from cache, %d agents hit\n",
	       (unsigned long long)evaluated, (unsigned long long)bound, N_AGENTS * (N_SYS + N_Q),
	       (unsigned long long)hits, hit_agents);
	assert_true(evaluated <= bound);
	assert_int_equal(evaluated + hits, (uint64_t)N_AGENTS * (N_SYS + N_Q));
	assert_int_equal(sum_cached, hits); /* done.n_cached adds up to the counter */
	assert_true(hit_agents >= N_AGENTS - 1);
	assert_int_equal(status_u64("prefix_lookups"), N_AGENTS);
	assert_true(status_u64("prefix_pages_cached") >= N_SYS / LLAMA_KV_PAGE);

	start_broker("{\"prefix_cache\": false}");
	run_agents(&off);
	assert_int_equal(status_u64("tokens_prompt"), (uint64_t)N_AGENTS * (N_SYS + N_Q));
	assert_int_equal(status_u64("prefix_hit_tokens"), 0);
	assert_int_equal(status_u64("prefix_pages_cached"), 0);
	int distinct = 0;
	for (int i = 0; i < N_AGENTS; i++) {
		assert_int_equal(off.cached[i], 0);
		assert_string_equal(on.text[i], off.text[i]);
		distinct += i > 0 && strcmp(on.text[i], on.text[0]) != 0;
	}
	printf("answers: \"%.40s\" ... %d differ from the first\n", on.text[0], distinct);
	assert_true(strlen(on.text[0]) > 0 && distinct > 0); /* real, different answers */
	stop_broker();
}

/* ---- trust domains ----------------------------------------------------------- */

/* One request as nobody in a child; returns its n_cached (or fails). */
static uint32_t gen_as_nobody(const int32_t *tokens, int n)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		close(pfd[0]);
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(2);
		int fd = sock_connect();
		if (fd < 0)
			_exit(3);
		char text[256];
		uint32_t cached = UINT32_MAX;
		int rc = raw_gen(fd, W.model_name, "nobody", tokens, n, text, sizeof(text), &cached);
		if (rc)
			_exit(10 + rc);
		_exit(write(pfd[1], &cached, sizeof(cached)) == (ssize_t)sizeof(cached) ? 0 : 4);
	}
	close(pfd[1]);
	int st;
	assert_int_equal(waitpid(p, &st, 0), p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	uint32_t cached = UINT32_MAX;
	assert_int_equal(read(pfd[0], &cached, sizeof(cached)), (ssize_t)sizeof(cached));
	close(pfd[0]);
	return cached;
}

static uint32_t gen_as_me(const char *name, const int32_t *tokens, int n)
{
	int fd = sock_connect();
	assert_true(fd >= 0);
	char text[256];
	uint32_t cached = UINT32_MAX;
	assert_int_equal(raw_gen(fd, W.model_name, name, tokens, n, text, sizeof(text), &cached), 0);
	close(fd);
	return cached;
}

static void open_socket_to_all(void)
{
	chmod(W.dir, 0755);
	chmod(W.sock, 0666);
}

static void test_trust_domains(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_trust_domains: needs root to become another uid; skipped\n");
		skip();
	}
	int32_t x[5 * LLAMA_KV_PAGE + 3], y[5 * LLAMA_KV_PAGE + 3];
	const int n = 5 * LLAMA_KV_PAGE + 3;
	fill_tokens(x, n, 77);
	fill_tokens(y, n, 78);
	/* the default: one domain per uid */
	start_broker("{}");
	open_socket_to_all();
	assert_int_equal(gen_as_me("root-a", x, n), 0);
	assert_int_equal(gen_as_me("root-b", x, n), 5 * LLAMA_KV_PAGE); /* same uid: a hit */
	assert_int_equal(gen_as_nobody(x, n), 0);                     /* other uid: none */
	assert_int_equal(gen_as_nobody(x, n), 5 * LLAMA_KV_PAGE);     /* its own domain hits */
	/* a named group puts root's "planner" agent and nobody in one domain */
	start_broker("{\"prefix_sharing\": {\"scope\": \"group\", \"groups\": "
		     "{\"team\": [{\"name\": \"planner\"}, {\"uid\": 65534}]}}}");
	open_socket_to_all();
	assert_int_equal(gen_as_me("root-c", y, n), 0);
	assert_int_equal(gen_as_nobody(y, n), 0); /* root-c is not in the group */
	assert_int_equal(gen_as_me("planner", y, n), 5 * LLAMA_KV_PAGE);
	assert_int_equal(gen_as_me("root-d", y, n), 5 * LLAMA_KV_PAGE); /* root-c's own */
	stop_broker();
}

/* The response cache (and request merging, keyed alike) is scoped by the
 * same domains: another uid's identical request is not answered from it. */
static void test_trust_domains_respcache(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_trust_domains_respcache: needs root to become another uid; skipped\n");
		skip();
	}
	int32_t x[2 * LLAMA_KV_PAGE + 1];
	const int n = 2 * LLAMA_KV_PAGE + 1;
	fill_tokens(x, n, 79);
	start_broker("{\"response_cache\": {\"enabled\": true}}");
	open_socket_to_all();
	gen_as_me("root-a", x, n);
	assert_int_equal(status_u64("cache_hits"), 0);
	gen_as_me("root-b", x, n);
	assert_int_equal(status_u64("cache_hits"), 1); /* same uid: answered from the cache */
	gen_as_nobody(x, n);
	assert_int_equal(status_u64("cache_hits"), 1); /* other uid: generated */
	gen_as_nobody(x, n);
	assert_int_equal(status_u64("cache_hits"), 2); /* its own domain's answer */
	/* herdctl cache: the same numbers, with the prefix pool's */
	assert_int_equal(bh_admin_u("cache", "response_cache", "hits"), 2);
	assert_int_equal(bh_admin_u("cache", "response_cache", "misses"), 2);
	assert_int_equal(bh_admin_u("cache", "response_cache", "entries"), 2);
	assert_true(bh_admin_u("cache", "prefix", "lookups") >= 2);
	stop_broker();
	char p[600];
	snprintf(p, sizeof(p), "%s/respcache.mdb", W.dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/respcache.mdb-lock", W.dir);
	unlink(p);
}

/* ---- the configuration keys ------------------------------------------------ */

static int parse(cfg *c, const char *json, char *err, size_t n)
{
	cfg_fini(c);
	cfg_init(c);
	err[0] = 0;
	return cfg_parse_json(c, json, err, n);
}

static void test_config_keys(void **state)
{
	(void)state;
	cfg c;
	char err[512];
	cfg_init(&c);
	assert_int_equal(c.prefix_cache, 1);
	assert_int_equal(c.prefix_scope, CFG_PREFIX_UID);
	assert_int_equal(parse(&c, "{\"prefix_cache\": false}", err, sizeof(err)), 0);
	assert_int_equal(c.prefix_cache, 0);
	assert_int_equal(parse(&c, "{\"prefix_cache\": 1}", err, sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "prefix_cache"));
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"scope\": \"team\"}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "prefix_sharing.scope"));
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"groups\": {\"a\": [{\"uid\": 1}]}}}", err,
			       sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "scope"));
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"scope\": \"group\", \"groups\": "
				   "{\"a\": [{\"uid\": 1, \"max_prio\": 3}]}}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "prefix_sharing.groups.a[0].max_prio"));
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"scope\": \"group\", \"groups\": {\"a\": []}}}",
			       err, sizeof(err)), HERD_E_FORMAT);
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"scope\": \"uid\", \"size\": 1}}", err,
			       sizeof(err)), HERD_E_FORMAT);
	assert_non_null(strstr(err, "prefix_sharing.size"));
	assert_int_equal(parse(&c, "{\"prefix_sharing\": {\"scope\": \"group\", \"groups\": {"
				   "\"a\": [{\"uid\": 1}, {\"name\": \"x\"}], \"b\": [{\"group\": \"g\"}]}}}",
			       err, sizeof(err)), 0);
	assert_int_equal(c.prefix_scope, CFG_PREFIX_GROUP);
	assert_int_equal(c.n_prefix_groups, 2);
	assert_string_equal(c.prefix_groups[0].name, "a");
	assert_int_equal(c.prefix_groups[0].n_members, 2);
	assert_int_equal(c.prefix_groups[0].members[0].match, CFG_MATCH_UID);
	assert_int_equal(c.prefix_groups[0].members[0].id, 1);
	assert_string_equal(c.prefix_groups[0].members[1].name, "x");
	assert_int_equal(c.prefix_groups[1].members[0].match, CFG_MATCH_GROUP);
	cfg_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test(test_shared_system_prompt),
		cmocka_unit_test(test_trust_domains),
		cmocka_unit_test(test_trust_domains_respcache),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
