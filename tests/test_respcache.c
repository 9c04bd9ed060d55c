/* Request merging and the response cache, against the real herdd (started
 * here on the mini model) with raw protocol clients over real sockets and
 * the real LMDB environment in the broker's state directory:
 * - a cached answer (streamed and not) is byte-identical to a run with
 *   cache:false, says cached, and survives a broker restart; cache:false
 *   bypasses it; a non-deterministic request (temp > 0, seed 0) is never
 *   cached, one with a fixed seed is;
 * - identical requests in flight run once: every requester gets the text of
 *   a separate run, the followers say merged; a non-deterministic one is
 *   never merged;
 * - cancelling (or disconnecting) the first of two merged requesters leaves
 *   the other to complete with the whole identical text; a cancelled or
 *   expired follower ends alone; an expired leader hands over;
 * - libherd reports cached/merged and sends no_cache;
 * - ttl_s: an expired entry is a miss (and counted);
 * - a value whose lengths do not add up is logged, a miss, and deleted;
 * - kill -9 of the broker at random moments, 20 times: the environment
 *   opens every time, every committed entry is sound and answers its
 *   request with the text first generated.
 * Bounds are loose (a 2-core machine under ASan); nothing here measures
 * speed (scripts/bench-respcache.sh does). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <lmdb.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "herd/error.h"
#include "herd/herd.h"
#include "model/mkmodel.h"
#include "proto/proto.h"
#include "shm/fdpass.h"
#include "shm/image.h"

#include "broker_harness.h"

static char STATE[128]; /* the broker's state directory */

/* ---- requests ----------------------------------------------------------- */

typedef struct req {
	const char *prompt;
	int max_tokens, stream, cache;
	float temp;
	uint64_t seed;
} req;

/* One request's outcome. */
typedef struct answer {
	char text[16384];
	size_t len;
	int n_tok, n_gen, done, merged, cached, is_err;
	herd_finish reason;
} answer;

static void send_gen(client *c, uint64_t id, const req *r)
{
	proto_buf b;
	proto_buf_init(&b);
	gen_request g;
	gen_request_init(&g);
	g.id = id;
	g.model = proto_s(W.model_name);
	g.input = GEN_INPUT_PROMPT;
	g.prompt = proto_s(r->prompt);
	g.params.max_tokens = r->max_tokens;
	g.params.sampling.temperature = r->temp;
	g.params.sampling.seed = r->seed;
	g.stream = r->stream;
	g.cache = r->cache;
	assert_int_equal(proto_encode_gen(&b, &g), 0);
	cl_send_buf(c, &b);
}

static void send_cancel(client *c, uint64_t id)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_cancel x = {.id = id};
	assert_int_equal(proto_encode_cancel(&b, &x), 0);
	cl_send_buf(c, &b);
}

static void hello(client *c)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_hello h = {.v = PROTO_VERSION, .name = proto_s("respcache-test")};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_WELCOME);
}

static void conn_open(client *c)
{
	cl_open(c);
	hello(c);
}

/* Reads one frame for requests [base, base + n) into outs; returns 1 when
 * it ended one. */
static int read_one(client *c, answer *outs, int n, uint64_t base)
{
	if (cl_next(c))
		fail_msg("connection closed with requests open");
	const proto_msg *m = &c->m;
	if (m->type == PROTO_ERR && !m->err.has_id)
		fail_msg("connection error %d: %.*s", m->err.code, (int)m->err.msg.len, m->err.msg.ptr);
	assert_true(m->type == PROTO_TOK || m->type == PROTO_DONE || m->type == PROTO_ERR);
	const uint64_t id = m->type == PROTO_TOK ? m->tok.id : m->type == PROTO_DONE ? m->done.id
										       : m->err.id;
	assert_true(id >= base && id < base + (uint64_t)n);
	answer *a = &outs[id - base];
	assert_false(a->done);
	if (m->type == PROTO_TOK) {
		assert_true(a->len + m->tok.text.len < sizeof(a->text));
		memcpy(a->text + a->len, m->tok.text.ptr, m->tok.text.len);
		a->len += m->tok.text.len;
		a->n_tok++;
		return 0;
	}
	a->done = 1;
	if (m->type == PROTO_ERR) {
		a->is_err = 1;
		fail_msg("request %llu failed: %d %.*s", (unsigned long long)id, m->err.code,
			 (int)m->err.msg.len, m->err.msg.ptr);
	}
	a->reason = m->done.reason;
	a->n_gen = (int)m->done.n_gen;
	a->merged = m->done.merged;
	a->cached = m->done.cached;
	if (m->done.has_text) {
		assert_true(m->done.text.len < sizeof(a->text));
		memcpy(a->text, m->done.text.ptr, m->done.text.len);
		a->len = m->done.text.len;
	}
	a->text[a->len] = 0;
	return 1;
}

static void read_all(client *c, answer *outs, int n, uint64_t base, int n_end)
{
	for (int ended = 0; ended < n_end;)
		ended += read_one(c, outs, n, base);
}

/* One request on a fresh connection, answered in full. */
static void ask(const req *r, answer *a)
{
	client c;
	conn_open(&c);
	memset(a, 0, sizeof(*a));
	send_gen(&c, 1, r);
	read_all(&c, a, 1, 1, 1);
	cl_close(&c);
}

static void same_text(const answer *a, const answer *b)
{
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->text, b->text, a->len);
	assert_int_equal(a->n_gen, b->n_gen);
	assert_int_equal(a->reason, b->reason);
}

/* ---- the broker ------------------------------------------------------------ */

static void write_conf(const char *json)
{
	FILE *f = fopen(W.conf, "w");
	assert_non_null(f);
	fputs(json, f);
	fclose(f);
}

/* Starts herdd with the config written by write_conf (max batch 8). */
static void broker_start(void)
{
	const char *extra[] = {"--state-dir", STATE, "--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
}

static void broker_kill(int sig)
{
	if (W.pid > 0) {
		kill(W.pid, sig);
		waitpid(W.pid, NULL, 0);
		W.pid = 0;
	}
}

#define CONF_CACHE(extra)                                                                         \
	"{\"response_cache\": {\"enabled\": true, \"max_mb\": 8" extra "}}"

static const char *PROMPT = "Once upon a time, a little robot named Pip";

/* ---- setup ------------------------------------------------------------------ */

static void rm_state(void)
{
	char p[256];
	const char *files[] = {"respcache.mdb", "respcache.mdb-lock", "respcache.mdb.bad"};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", STATE, files[i]);
		unlink(p);
	}
}

static int group_setup(void **state)
{
	(void)state;
	bh_world_setup("rc");
	snprintf(STATE, sizeof(STATE), "%s/state", W.dir);
	return 0;
}

/* Each test has its own broker and an empty cache. */
static int test_teardown(void **state)
{
	(void)state;
	broker_kill(SIGKILL);
	if (getenv("HERD_TEST_VERBOSE"))
		dump_log();
	unlink(W.sock);
	unlink(W.log);
	rm_state();
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	bh_world_teardown();
	return 0;
}

/* ---- the response cache --------------------------------------------------- */

static void test_cache_identical(void **state)
{
	(void)state;
	write_conf(CONF_CACHE(""));
	broker_start();
	const req off = {PROMPT, 24, 0, 0, 0, 0};
	static answer ref, a, b, s1, s2;
	ask(&off, &ref); /* cache:false: generated, not stored */
	assert_false(ref.cached);
	assert_int_equal(status_u64("cache_stores"), 0);
	const req on = {PROMPT, 24, 0, 1, 0, 0};
	ask(&on, &a);
	assert_false(a.cached);
	same_text(&a, &ref);
	ask(&on, &b);
	assert_true(b.cached);
	same_text(&b, &ref);
	const req on_s = {PROMPT, 24, 1, 1, 0, 0};
	ask(&on_s, &s1);
	assert_true(s1.cached);
	assert_true(s1.n_tok >= 1);
	same_text(&s1, &ref);
	ask(&off, &s2); /* cache:false bypasses a present entry */
	assert_false(s2.cached);
	same_text(&s2, &ref);
	assert_int_equal(status_u64("cache_entries"), 1);
	assert_int_equal(status_u64("cache_hits"), 2);
	/* another max_tokens is another key */
	const req on8 = {PROMPT, 8, 0, 1, 0, 0};
	ask(&on8, &a);
	assert_false(a.cached);
	/* survives a restart */
	broker_kill(SIGTERM);
	broker_start();
	ask(&on, &b);
	assert_true(b.cached);
	same_text(&b, &ref);
	ask(&on_s, &s1);
	assert_true(s1.cached);
	same_text(&s1, &ref);
	assert_int_equal(status_u64("cache_entries"), 2);
}

static void test_cache_sampling(void **state)
{
	(void)state;
	write_conf(CONF_CACHE(""));
	broker_start();
	static answer a, b, c, d;
	const req rnd = {PROMPT, 16, 0, 1, 0.8f, 0}; /* seed 0: a new draw each time */
	ask(&rnd, &a);
	ask(&rnd, &b);
	assert_false(a.cached);
	assert_false(b.cached);
	assert_int_equal(status_u64("cache_stores"), 0);
	const req seeded = {PROMPT, 16, 0, 1, 0.8f, 1234};
	ask(&seeded, &c);
	ask(&seeded, &d);
	assert_false(c.cached);
	assert_true(d.cached);
	same_text(&c, &d);
	assert_int_equal(status_u64("cache_stores"), 1);
}

static void test_cache_ttl(void **state)
{
	(void)state;
	write_conf(CONF_CACHE(", \"ttl_s\": 1"));
	broker_start();
	static answer a, b, c;
	const req on = {PROMPT, 12, 0, 1, 0, 0};
	ask(&on, &a);
	ask(&on, &b);
	assert_true(b.cached);
	usleep(2100 * 1000);
	ask(&on, &c);
	assert_false(c.cached);
	same_text(&c, &a);
	assert_int_equal(status_u64("cache_expired"), 1);
}

/* Rewrites every value of the "resp" database with one byte fewer. */
static int corrupt_values(void)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/respcache.mdb", STATE);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "resp", 0, &dbi), 0);
	assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
	MDB_val k, v;
	int n = 0;
	for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op) == 0; op = MDB_NEXT) {
		uint8_t *copy = malloc(v.mv_size);
		assert_non_null(copy);
		memcpy(copy, v.mv_data, v.mv_size);
		MDB_val nv = {v.mv_size - 1, copy};
		assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
		free(copy);
		n++;
	}
	mdb_cursor_close(cur);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	return n;
}

static int log_has(const char *needle)
{
	FILE *f = fopen(W.log, "r");
	if (!f)
		return 0;
	char line[2048];
	int found = 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

static void test_cache_corrupt(void **state)
{
	(void)state;
	write_conf(CONF_CACHE(""));
	broker_start();
	static answer a, b, c;
	const req on = {PROMPT, 12, 0, 1, 0, 0};
	ask(&on, &a);
	broker_kill(SIGTERM);
	assert_int_equal(corrupt_values(), 1);
	broker_start();
	ask(&on, &b); /* the bad value is not trusted: generated again */
	assert_false(b.cached);
	same_text(&b, &a);
	assert_int_equal(status_u64("cache_corrupt"), 1);
	assert_true(log_has("is corrupt (lengths add up to"));
	ask(&on, &c); /* deleted, stored again, sound */
	assert_true(c.cached);
	same_text(&c, &a);
}

/* libherd: herd_result.cached / merged and herd_request.no_cache. */
static void test_libherd_flags(void **state)
{
	(void)state;
	write_conf(CONF_CACHE(""));
	broker_start();
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = W.sock;
	herd_client *c = NULL;
	assert_int_equal(herd_connect(&c, &co), 0);
	herd_request r;
	herd_request_init(&r);
	r.model = W.model_name;
	r.prompt = PROMPT;
	r.max_tokens = 10;
	herd_result a, b, n;
	assert_int_equal(herd_generate(c, &r, &a), 0);
	assert_int_equal(herd_generate(c, &r, &b), 0);
	r.no_cache = 1;
	assert_int_equal(herd_generate(c, &r, &n), 0);
	assert_false(a.cached);
	assert_true(b.cached);
	assert_false(n.cached);
	assert_false(a.merged || b.merged || n.merged);
	assert_int_equal(a.text_len, b.text_len);
	assert_memory_equal(a.text, b.text, a.text_len);
	assert_int_equal(n.text_len, a.text_len);
	assert_memory_equal(n.text, a.text, a.text_len);
	herd_result_free(&a);
	herd_result_free(&b);
	herd_result_free(&n);
	herd_close(c);
}

/* ---- request merging --------------------------------------------------------- */

/* A blocker (another prompt, long) then n identical requests, all in one
 * write on one connection: with max_batch_size 1 they are taken together
 * and the n queue behind the blocker, so they merge whatever the speed. */
static void send_burst_dl(client *c, const req *r, int n, const int *stream, const int *deadline)
{
	const req blocker = {"The quick brown fox jumps over the lazy dog again and again", 64, 0, 0,
			     0, 0};
	proto_buf b;
	proto_buf_init(&b);
	gen_request g;
	for (int i = 0; i <= n; i++) {
		const req *x = i == 0 ? &blocker : r;
		gen_request_init(&g);
		g.id = 100 + (uint64_t)i;
		g.model = proto_s(W.model_name);
		g.input = GEN_INPUT_PROMPT;
		g.prompt = proto_s(x->prompt);
		g.params.max_tokens = x->max_tokens;
		g.params.sampling.temperature = x->temp;
		g.params.sampling.seed = x->seed;
		g.stream = i == 0 ? 0 : stream[i - 1];
		g.params.deadline_ms = i == 0 || !deadline ? 0 : (uint64_t)deadline[i - 1];
		g.cache = x->cache;
		assert_int_equal(proto_encode_gen(&b, &g), 0);
	}
	cl_send_buf(c, &b);
}

static void send_burst(client *c, const req *r, int n, const int *stream)
{
	send_burst_dl(c, r, n, stream, NULL);
}

static void test_merge_identical(void **state)
{
	(void)state;
	write_conf("{\"max_batch_size\": 1}");
	broker_start();
	static answer ref, ref_s, out[4];
	const req r = {PROMPT, 32, 0, 1, 0, 0}, rs = {PROMPT, 32, 1, 1, 0, 0};
	ask(&r, &ref);
	ask(&rs, &ref_s);
	same_text(&ref_s, &ref);
	client c;
	conn_open(&c);
	const int stream[3] = {0, 1, 1};
	memset(out, 0, sizeof(out));
	send_burst(&c, &r, 3, stream);
	read_all(&c, out, 4, 100, 4);
	for (int i = 1; i <= 3; i++) {
		same_text(&out[i], &ref);
		assert_false(out[i].cached);
	}
	assert_false(out[1].merged); /* the leader */
	assert_true(out[2].merged && out[3].merged);
	assert_int_equal(status_u64("requests_merged"), 2);
	/* not deterministic: never merged */
	const req rnd = {PROMPT, 16, 0, 1, 0.9f, 0};
	memset(out, 0, sizeof(out));
	send_burst(&c, &rnd, 2, stream);
	read_all(&c, out, 3, 100, 3);
	assert_false(out[1].merged || out[2].merged);
	assert_int_equal(status_u64("requests_merged"), 2);
	cl_close(&c);
}

/* Cancels (or disconnects) the leader of two merged requesters: the other
 * completes with the whole text of a separate run. The follower comes on
 * its own connection while the leader waits behind the blocker (or, on a
 * fast machine, runs): merged once the broker says so. */
static void merge_lose_leader(int disconnect)
{
	write_conf("{\"max_batch_size\": 1}");
	broker_start();
	static answer ref, out[3], f;
	const req r = {PROMPT, 40, 1, 1, 0, 0};
	ask(&r, &ref);
	client lead, fol;
	conn_open(&lead);
	conn_open(&fol);
	const int stream[1] = {1};
	memset(out, 0, sizeof(out));
	memset(&f, 0, sizeof(f));
	send_burst(&lead, &r, 1, stream); /* blocker 100, leader 101 */
	send_gen(&fol, 7, &r);
	int merged = 0;
	for (int i = 0; i < 400 && !merged; i++) {
		merged = status_u64("requests_merged") == 1;
		if (!merged)
			usleep(5000);
	}
	if (disconnect) {
		cl_close(&lead);
	} else {
		send_cancel(&lead, 101);
		read_all(&lead, out, 3, 100, 2);
		cl_close(&lead);
	}
	read_all(&fol, &f, 1, 7, 1);
	same_text(&f, &ref);
	printf("follower merged: %d, leader %s\n", merged,
	       disconnect ? "disconnected" : out[1].reason == HERD_FINISH_CANCEL ? "cancelled"
										: "had ended");
	if (merged)
		assert_true(f.merged);
	cl_close(&fol);
}

static void test_merge_cancel_leader(void **state)
{
	(void)state;
	merge_lose_leader(0);
}

static void test_merge_disconnect_leader(void **state)
{
	(void)state;
	merge_lose_leader(1);
}

/* Cancelling a follower leaves the leader (and the other follower) whole. */
static void test_merge_cancel_follower(void **state)
{
	(void)state;
	write_conf("{\"max_batch_size\": 1}");
	broker_start();
	static answer ref, out[4];
	const req r = {PROMPT, 40, 0, 1, 0, 0};
	ask(&r, &ref);
	client c;
	conn_open(&c);
	const int stream[3] = {0, 0, 1};
	memset(out, 0, sizeof(out));
	send_burst(&c, &r, 3, stream);
	send_cancel(&c, 102);
	read_all(&c, out, 4, 100, 4);
	same_text(&out[1], &ref);
	same_text(&out[3], &ref);
	assert_true(out[3].merged);
	assert_int_equal(out[2].reason, HERD_FINISH_CANCEL);
	cl_close(&c);
}

/* Deadlines are each requester's own: a follower's passes and only it
 * ends; the leader's passes and a follower takes the sequence over. */
static void test_merge_deadlines(void **state)
{
	(void)state;
	write_conf("{\"max_batch_size\": 1}");
	broker_start();
	static answer ref, out[4];
	const req r = {PROMPT, 40, 0, 1, 0, 0};
	ask(&r, &ref);
	client c;
	conn_open(&c);
	const int stream[3] = {0, 1, 0}, deadline[3] = {0, 1, 0};
	memset(out, 0, sizeof(out));
	send_burst_dl(&c, &r, 3, stream, deadline); /* 102 expires behind the blocker */
	read_all(&c, out, 4, 100, 4);
	same_text(&out[1], &ref);
	same_text(&out[3], &ref);
	assert_int_equal(out[2].reason, HERD_FINISH_DEADLINE);
	const int dl_lead[3] = {1, 0, 0};
	memset(out, 0, sizeof(out));
	send_burst_dl(&c, &r, 3, stream, dl_lead); /* the leader 101 expires */
	read_all(&c, out, 4, 100, 4);
	assert_int_equal(out[1].reason, HERD_FINISH_DEADLINE);
	same_text(&out[2], &ref);
	same_text(&out[3], &ref);
	assert_true(out[2].merged && out[3].merged);
	cl_close(&c);
}

/* ---- kill -9 ------------------------------------------------------------------ */

/* Opens the environment as LMDB and checks every value's layout
 * (respcache.h): returns the number of sound entries; fails on an unsound
 * one. texts[] receives their texts. */
static int check_env(char texts[][512], int max)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/respcache.mdb", STATE);
	if (access(path, F_OK))
		return 0;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
	assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	int n = 0;
	if (mdb_dbi_open(txn, "resp", 0, &dbi) == 0) {
		assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
		MDB_val k, v;
		for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op) == 0;
		     op = MDB_NEXT) {
			uint32_t h[8];
			assert_true(v.mv_size >= 48);
			memcpy(h, v.mv_data, sizeof(h));
			assert_int_equal(h[0], 0x31435248u);
			assert_int_equal(v.mv_size, 48 + (size_t)h[1] + h[2] + 4 * (size_t)h[3]);
			assert_true(n < max && h[2] < 512);
			memcpy(texts[n], (const char *)v.mv_data + 48 + h[1], h[2]);
			texts[n][h[2]] = 0;
			n++;
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

/* A pool of prompts; each round asks K_ASK of them from a moving start, so
 * most rounds write new entries while the broker is killed. */
enum { K_PROMPTS = 24, K_ASK = 12, K_ROUNDS = 20 };

static void test_kill9_loop(void **state)
{
	(void)state;
	static char prompts[K_PROMPTS][64], texts[K_PROMPTS * 2][512];
	static answer ref[K_PROMPTS], out[K_ASK];
	for (int i = 0; i < K_PROMPTS; i++)
		snprintf(prompts[i], sizeof(prompts[i]), "Robot number %d walked into the garden", i);
	write_conf("{}");
	broker_start();
	for (int i = 0; i < K_PROMPTS; i++) { /* the references, without the cache */
		const req r = {prompts[i], 6, 0, 1, 0, 0};
		ask(&r, &ref[i]);
	}
	broker_kill(SIGTERM);
	write_conf(CONF_CACHE(""));
	srand(12345);
	uint64_t hits = 0;
	for (int round = 0; round < K_ROUNDS; round++) {
		const int n_sound = check_env(texts, K_PROMPTS * 2);
		for (int j = 0; j < n_sound; j++) { /* every committed entry is an answer */
			int match = 0;
			for (int i = 0; i < K_PROMPTS && !match; i++)
				match = !strcmp(texts[j], ref[i].text);
			assert_true(match);
		}
		broker_start(); /* the environment opens */
		assert_int_equal(status_u64("cache_entries"), (uint64_t)n_sound);
		client c;
		conn_open(&c);
		memset(out, 0, sizeof(out));
		const int first = (round * 5) % K_PROMPTS;
		for (int i = 0; i < K_ASK; i++) {
			const req r = {prompts[(first + i) % K_PROMPTS], 6, i % 2, 1, 0, 0};
			send_gen(&c, 1 + (uint64_t)i, &r);
		}
		/* a random moment of the work, whatever the machine's speed: after a
		 * random number of answers, then up to 20 ms more */
		const int target = rand() % (K_ASK + 1);
		for (int ended = 0; ended < target;)
			ended += read_one(&c, out, K_ASK, 1);
		usleep((useconds_t)(rand() % 20000));
		for (int i = 0; i < K_ASK; i++)
			if (out[i].done) { /* from the cache or not: the same answer */
				hits += out[i].cached;
				same_text(&out[i], &ref[(first + i) % K_PROMPTS]);
			}
		broker_kill(SIGKILL);
		cl_close(&c);
		unlink(W.sock);
	}
	printf("kill -9 x %d: %llu answers came from the cache\n", K_ROUNDS, (unsigned long long)hits);
	assert_true(hits > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_cache_identical, test_teardown),
		cmocka_unit_test_teardown(test_cache_sampling, test_teardown),
		cmocka_unit_test_teardown(test_cache_ttl, test_teardown),
		cmocka_unit_test_teardown(test_cache_corrupt, test_teardown),
		cmocka_unit_test_teardown(test_libherd_flags, test_teardown),
		cmocka_unit_test_teardown(test_merge_identical, test_teardown),
		cmocka_unit_test_teardown(test_merge_cancel_leader, test_teardown),
		cmocka_unit_test_teardown(test_merge_disconnect_leader, test_teardown),
		cmocka_unit_test_teardown(test_merge_cancel_follower, test_teardown),
		cmocka_unit_test_teardown(test_merge_deadlines, test_teardown),
		cmocka_unit_test_teardown(test_kill9_loop, test_teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
