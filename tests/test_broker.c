/* Integration test of herdd: starts the real broker on a temporary socket
 * with a small model the test writes (mkmodel "mini") and speaks the wire
 * protocol over real Unix sockets with the proto codec:
 * hello/welcome, gen blocking and streaming (same greedy text), concurrent
 * requests over several connections, unknown model, attach (image fd over
 * SCM_RIGHTS), admin status, a malformed and an oversized frame (that
 * connection gets err and is closed, another one is still served), start-up
 * errors (socket in use, missing model), and SIGTERM: the in-flight request
 * ends with done "cancel", herdd exits 0 and removes its socket.
 *
 * herdd is found beside the `herd` binary (HERD_BIN), or via HERD_HERDD, or
 * as herdd / ../herdd next to this test binary; exits 77 when absent. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
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

#include "broker/config.h"
#include "broker/log.h"
#include "proto/proto.h"
#include "herd/error.h"
#include "model/mkmodel.h"
#include "shm/fdpass.h"
#include "shm/image.h"

#include "broker_harness.h"

/* ---- setup ------------------------------------------------------------------ */

static int setup(void **state)
{
	(void)state;
	bh_world_setup("tb");
	W.pid = spawn(NULL);
	wait_ready(W.pid);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bh_world_teardown();
	return 0;
}

/* ---- tests ------------------------------------------------------------------- */

static const char *PROMPT = "Once upon a time, a little robot named Pip";

static void test_hello_welcome(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	cl_hello(&c, "tester");
	const proto_welcome *w = &c.m.welcome;
	assert_int_equal(w->v, PROTO_VERSION);
	assert_true(w->agent > 0);
	assert_int_equal(w->n_models, 1);
	assert_true(proto_str_eq(w->models[0].name, W.model_name));
	assert_int_equal(w->models[0].n_vocab, 2048);
	assert_true(w->models[0].n_ctx > 0);
	assert_true(w->models[0].image_bytes > 0);
	assert_true(w->models[0].segment.len > 0 && w->models[0].segment.len < sizeof(W.segment));
	memcpy(W.segment, w->models[0].segment.ptr, w->models[0].segment.len);
	W.segment[w->models[0].segment.len] = 0;
	assert_true(w->max_frame >= 4096);
	/* a wrong version is refused and the connection closed */
	client d;
	cl_open(&d);
	proto_buf b;
	proto_buf_init(&b);
	proto_hello h = {.v = 99};
	assert_int_equal(proto_encode_hello(&b, &h), 0);
	cl_send_buf(&d, &b);
	cl_expect(&d, PROTO_ERR);
	assert_int_equal(d.m.err.code, HERD_E_VERSION);
	assert_int_equal(cl_next(&d), -1);
	cl_close(&d);
	cl_close(&c);
}

static void test_gen_blocking_and_streaming(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	cl_hello(&c, "gen");
	static gen_out outs[2];
	memset(outs, 0, sizeof(outs));
	cl_gen(&c, 1, W.model_name, PROMPT, 24, 0);
	collect(&c, outs, 2, 1, 1);
	cl_gen(&c, 2, W.model_name, PROMPT, 24, 1);
	collect(&c, outs, 2, 1, 1);
	for (int i = 0; i < 2; i++) {
		assert_false(outs[i].is_err);
		assert_true(outs[i].reason == HERD_FINISH_LENGTH || outs[i].reason == HERD_FINISH_STOP);
		assert_true(outs[i].n_gen > 0 && outs[i].n_gen <= 24);
	}
	assert_int_equal(outs[0].n_tok, 0);
	assert_int_equal(outs[1].n_tok, outs[1].n_gen);
	assert_int_equal(outs[0].n_gen, outs[1].n_gen);
	assert_int_equal(outs[0].len, outs[1].len);
	assert_memory_equal(outs[0].text, outs[1].text, outs[0].len);
	/* unknown model: err with the request id, connection stays */
	static gen_out bad[1];
	memset(bad, 0, sizeof(bad));
	cl_gen(&c, 7, "no-such-model", PROMPT, 4, 0);
	collect(&c, bad, 1, 7, 1);
	assert_true(bad[0].is_err);
	assert_int_equal(bad[0].code, HERD_E_MISSING);
	/* a 300 KB prompt: several receive-buffer sizes, longer than the context */
	size_t big_n = 300000;
	char *big = malloc(big_n + 1);
	assert_non_null(big);
	for (size_t i = 0; i < big_n; i++)
		big[i] = i % 2 ? ' ' : 'a';
	big[big_n] = 0;
	memset(bad, 0, sizeof(bad));
	cl_gen(&c, 7, W.model_name, big, 4, 0);
	free(big);
	collect(&c, bad, 1, 7, 1);
	assert_true(bad[0].is_err);
	assert_int_equal(bad[0].code, HERD_E_NOSPACE);
	/* the connection still works */
	memset(outs, 0, sizeof(outs));
	cl_gen(&c, 1, W.model_name, PROMPT, 4, 0);
	collect(&c, outs, 2, 1, 1);
	assert_false(outs[0].is_err);
	cl_close(&c);
}

static void test_concurrent(void **state)
{
	(void)state;
	enum { NC = 4, PER = 3 };
	client cs[NC];
	static gen_out outs[NC][PER];
	memset(outs, 0, sizeof(outs));
	for (int i = 0; i < NC; i++) {
		cl_open(&cs[i]);
		cl_hello(&cs[i], "conc");
	}
	/* identical requests would merge into one sequence (scheduler.c, request
	 * merging): a stop string each that never matches keeps them apart */
	static char stop[NC][PER][16];
	for (int i = 0; i < NC; i++)
		for (int j = 0; j < PER; j++) {
			snprintf(stop[i][j], sizeof(stop[i][j]), "\x01%d.%d", i, j);
			const gen_str st = proto_s(stop[i][j]);
			proto_buf b;
			proto_buf_init(&b);
			gen_request g;
			gen_request_init(&g);
			g.id = 100 + (uint64_t)j;
			g.model = proto_s(W.model_name);
			g.input = GEN_INPUT_PROMPT;
			g.prompt = proto_s(PROMPT);
			g.params.max_tokens = 20;
			g.params.stop = &st;
			g.params.n_stop = 1;
			g.stream = (i + j) % 2;
			assert_int_equal(proto_encode_gen(&b, &g), 0);
			cl_send_buf(&cs[i], &b);
		}
	for (int i = 0; i < NC; i++)
		collect(&cs[i], outs[i], PER, 100, PER);
	for (int i = 0; i < NC; i++)
		for (int j = 0; j < PER; j++) {
			assert_false(outs[i][j].is_err);
			assert_int_equal(outs[i][j].len, outs[0][0].len);
			assert_memory_equal(outs[i][j].text, outs[0][0].text, outs[0][0].len);
		}
	/* the broker batched them */
	client a;
	cl_open(&a);
	proto_buf b;
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s("models")};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(&a, &b);
	cl_expect(&a, PROTO_ADMIN_OK);
	const proto_value *r = a.m.admin_ok.result;
	assert_non_null(r);
	assert_int_equal(r->type, PROTO_V_ARRAY);
	assert_int_equal(r->arr.n, 1);
	const proto_value *mm = &r->arr.v[0];
	assert_int_equal(mm->type, PROTO_V_MAP);
	int64_t max_batch = -1;
	const proto_value *seen = proto_value_get(mm, "max_batch_seen");
	if (seen && seen->type == PROTO_V_UINT)
		max_batch = (int64_t)seen->u;
	printf("max sequences in one step: %lld\n", (long long)max_batch);
	assert_true(max_batch >= 2);
	cl_close(&a);
	for (int i = 0; i < NC; i++)
		cl_close(&cs[i]);
}

/* attach: the broker answers with the image's descriptor, which maps. */
static void check_attach_image(client *c)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_attach at = {.model = proto_s(W.model_name)};
	assert_int_equal(proto_encode_attach(&b, &at), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_IMAGE);
	assert_true(c->got_fd >= 0);
	assert_true(proto_str_eq(c->m.image.model, W.model_name));
	shm_image_map_t map;
	char err[256];
	assert_int_equal(shm_image_map(c->got_fd, &map, err, sizeof(err)), 0);
	assert_int_equal(map.size, c->m.image.size);
	shm_image_unmap(&map);
}

/* status answers a map; rm of the loaded model's segment needs --force. */
static void check_admin_status_and_rm(client *c)
{
	proto_buf b;
	/* status */
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s("status")};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_ADMIN_OK);
	assert_true(proto_str_eq(c->m.admin_ok.cmd, "status"));
	assert_int_equal(c->m.admin_ok.result->type, PROTO_V_MAP);
	/* rm of the loaded model's segment is refused without --force */
	proto_buf_init(&b);
	proto_str args[1] = {proto_s(W.segment)};
	proto_admin rm = {.cmd = proto_s("rm"), .args = args, .n_args = 1};
	assert_int_equal(proto_encode_admin(&b, &rm), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_ERR);
	assert_int_equal(c->m.err.code, -EBUSY);
}

/* The child of check_other_uid (running as nobody): admin status gets err
 * -EPERM and the connection still gets its welcome. No cmocka asserts in
 * the child: plain calls, exit codes. Never returns. */
__attribute__((noreturn)) static void other_uid_child(void)
{
	if (setgid(65534) || setuid(65534))
		_exit(2);
	int fd = sock_connect();
	if (fd < 0)
		_exit(3);
	proto_buf ob;
	proto_buf_init(&ob);
	proto_admin st = {.cmd = proto_s("status")};
	proto_hello hh = {.v = PROTO_VERSION, .name = proto_s("nobody")};
	if (proto_encode_admin(&ob, &st) || proto_encode_hello(&ob, &hh) ||
	    send(fd, ob.data, ob.len, MSG_NOSIGNAL) != (ssize_t)ob.len)
		_exit(4);
	/* expect err -EPERM, then welcome (still served) */
	uint8_t in[65536];
	size_t have = 0;
	int seen = 0;
	while (seen < 2) {
		size_t fl = 0;
		if (proto_frame_next(in, have, sizeof(in), &fl) == PROTO_FRAME_READY) {
			proto_msg pm;
			if (proto_decode(in + 4, fl, &pm, NULL, 0))
				_exit(5);
			if (seen == 0 && (pm.type != PROTO_ERR || pm.err.code != -EPERM))
				_exit(6);
			if (seen == 1 && pm.type != PROTO_WELCOME)
				_exit(7);
			proto_msg_free(&pm);
			memmove(in, in + 4 + fl, have - 4 - fl);
			have -= 4 + fl;
			seen++;
			continue;
		}
		ssize_t r = recv(fd, in + have, sizeof(in) - have, 0);
		if (r <= 0)
			_exit(8);
		have += (size_t)r;
	}
	close(fd);
	_exit(0);
}

/* Another uid is refused (-EPERM) and keeps its connection; needs root to
 * become someone else. */
static void check_other_uid(void)
{
	if (geteuid() != 0)
		return;
	chmod(W.dir, 0755);
	chmod(W.sock, 0666);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0)
		other_uid_child();
	int st;
	assert_int_equal(waitpid(p, &st, 0), p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	chmod(W.sock, 0660);
	chmod(W.dir, 0700);
}

/* segments and agents answer non-empty arrays. */
static void check_admin_lists(client *c)
{
	proto_buf b;
	const char *cmds[] = {"segments", "agents"};
	for (int i = 0; i < 2; i++) {
		proto_buf_init(&b);
		proto_admin x = {.cmd = proto_s(cmds[i])};
		assert_int_equal(proto_encode_admin(&b, &x), 0);
		cl_send_buf(c, &b);
		cl_expect(c, PROTO_ADMIN_OK);
		assert_int_equal(c->m.admin_ok.result->type, PROTO_V_ARRAY);
		assert_true(c->m.admin_ok.result->arr.n >= 1);
	}
}

static void test_attach_and_admin(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	check_attach_image(&c);
	check_admin_status_and_rm(&c);
	check_other_uid();
	check_admin_lists(&c);
	cl_close(&c);
}

static void test_malformed_and_oversized(void **state)
{
	(void)state;
	client good;
	cl_open(&good);
	cl_hello(&good, "bystander");
	/* malformed: a body that is not a msgpack map */
	client bad;
	cl_open(&bad);
	const uint8_t junk[] = {3, 0, 0, 0, 0xc1, 0xc1, 0xc1};
	cl_send_raw(&bad, junk, sizeof(junk));
	cl_expect(&bad, PROTO_ERR);
	assert_int_equal(bad.m.err.code, HERD_E_PROTO);
	assert_false(bad.m.err.has_id);
	assert_true(bad.m.err.msg.len > 0);
	assert_int_equal(cl_next(&bad), -1);
	cl_close(&bad);
	/* a map without 't' */
	cl_open(&bad);
	const uint8_t not_t[] = {4, 0, 0, 0, 0x81, 0xa1, 'x', 0x01}; /* {"x": 1} */
	cl_send_raw(&bad, not_t, sizeof(not_t));
	cl_expect(&bad, PROTO_ERR);
	assert_int_equal(bad.m.err.code, HERD_E_PROTO);
	assert_int_equal(cl_next(&bad), -1);
	cl_close(&bad);
	/* oversized: refused from the header alone */
	cl_open(&bad);
	const uint8_t huge[] = {0, 0, 0, 0x40, 0x80, 0x80}; /* 1 GiB announced */
	cl_send_raw(&bad, huge, sizeof(huge));
	cl_expect(&bad, PROTO_ERR);
	assert_int_equal(bad.m.err.code, HERD_E_PROTO);
	assert_int_equal(cl_next(&bad), -1);
	cl_close(&bad);
	/* the bystander is still served */
	static gen_out outs[1];
	memset(outs, 0, sizeof(outs));
	cl_gen(&good, 5, W.model_name, PROMPT, 8, 1);
	collect(&good, outs, 1, 5, 1);
	assert_false(outs[0].is_err);
	assert_true(outs[0].n_gen > 0);
	cl_close(&good);
}

static void test_start_errors(void **state)
{
	(void)state;
	/* the socket is in use by the live broker */
	pid_t p = spawn(NULL);
	int st;
	assert_int_equal(waitpid(p, &st, 0), p);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 1);
	/* a model file that does not exist */
	char sock2[256], spec[256];
	snprintf(sock2, sizeof(sock2), "%s/other.sock", W.dir);
	snprintf(spec, sizeof(spec), "x=%s/missing.gguf", W.dir);
	pid_t q = fork();
	assert_true(q >= 0);
	if (q == 0) {
		int fd = open(W.log, O_WRONLY | O_APPEND);
		if (fd >= 0)
			dup2(fd, STDERR_FILENO);
		execl(W.herdd, W.herdd, "--socket", sock2, "--model", spec, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(q, &st, 0), q);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 1);
	assert_int_not_equal(access(sock2, F_OK), 0);
	/* a configuration file with an unknown key */
	char conf[256];
	snprintf(conf, sizeof(conf), "%s/bad.json", W.dir);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fputs("{\"batch\": {\"max_batch_size\": 4, \"bogus_key\": 1}}\n", f);
	fclose(f);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	q = fork();
	assert_true(q >= 0);
	if (q == 0) {
		dup2(pfd[1], STDERR_FILENO);
		execl(W.herdd, W.herdd, "--config", conf, "--socket", sock2, "--model", W.spec,
		      (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	char msg[1024] = "";
	ssize_t got = 0, r;
	while ((r = read(pfd[0], msg + got, sizeof(msg) - 1 - (size_t)got)) > 0)
		got += r;
	close(pfd[0]);
	msg[got] = 0;
	assert_int_equal(waitpid(q, &st, 0), q);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 1);
	assert_non_null(strstr(msg, "batch.bogus_key"));
	unlink(conf);
	/* the running broker is unharmed */
	client c;
	cl_open(&c);
	cl_hello(&c, "after");
	cl_close(&c);
}

static void test_sigterm(void **state)
{
	(void)state;
	client c;
	cl_open(&c);
	cl_hello(&c, "long");
	static gen_out outs[1];
	memset(outs, 0, sizeof(outs));
	cl_gen(&c, 9, W.model_name, PROMPT, 1900, 1);
	/* wait for the first token so the request is running */
	while (outs[0].n_tok == 0 && !outs[0].done) {
		assert_int_equal(cl_next(&c), 0);
		apply(&c, outs, 1, 9);
	}
	assert_int_equal(kill(W.pid, SIGTERM), 0);
	while (!outs[0].done) {
		if (cl_next(&c))
			fail_msg("closed before the request ended");
		apply(&c, outs, 1, 9);
	}
	assert_false(outs[0].is_err);
	if (outs[0].n_gen < 1900)
		assert_int_equal(outs[0].reason, HERD_FINISH_CANCEL);
	assert_int_equal(cl_next(&c), -1); /* then the broker closes */
	cl_close(&c);
	int st = 0;
	for (int i = 0; i < 200; i++) {
		if (waitpid(W.pid, &st, WNOHANG) == W.pid)
			break;
		usleep(50000);
	}
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	W.pid = 0;
	assert_int_not_equal(access(W.sock, F_OK), 0);
}

/* The latency target and max_batch_size "auto": parsed at top level and in
 * "batch", the integer form still works (and turns auto off), bad values
 * refused naming the key. */
static void test_config_batch_target(void **state)
{
	(void)state;
	cfg c;
	char err[512] = "";
	cfg_init(&c);
	assert_int_equal(c.target_tpot_ms, 0);
	assert_int_equal(c.max_decode_delay_ms, 1000);
	assert_int_equal(c.batch_auto, 0);
	assert_int_equal(c.max_batch_size, 32);
	assert_int_equal(cfg_parse_json(&c, "{\"batch\": {\"max_batch_size\": \"auto\", "
					"\"target_tpot_ms\": 150}}", err, sizeof(err)), 0);
	assert_int_equal(c.batch_auto, 1);
	assert_int_equal(c.max_batch_size, CFG_BATCH_AUTO_MAX);
	assert_int_equal(c.target_tpot_ms, 150);
	assert_int_equal(cfg_parse_json(&c, "{\"max_batch_size\": 16, \"target_tpot_ms\": 0}", err,
					sizeof(err)), 0);
	assert_int_equal(c.batch_auto, 0);
	assert_int_equal(c.max_batch_size, 16);
	assert_int_equal(c.target_tpot_ms, 0);
	assert_int_equal(cfg_parse_json(&c, "{\"max_batch_size\": \"auto\"}", err, sizeof(err)), 0);
	assert_int_equal(c.batch_auto, 1);
	assert_int_equal(cfg_parse_json(&c, "{\"batch\": {\"max_decode_delay_ms\": 0}}", err,
					sizeof(err)), 0);
	assert_int_equal(c.max_decode_delay_ms, 0);
	static const struct { const char *json, *key; } bad[] = {
		{"{\"max_batch_size\": \"big\"}", "'max_batch_size'"},
		{"{\"batch\": {\"max_batch_size\": \"AUTO\"}}", "'batch.max_batch_size'"},
		{"{\"max_batch_size\": 0}", "'max_batch_size'"},
		{"{\"max_batch_size\": 1.5}", "'max_batch_size'"},
		{"{\"target_tpot_ms\": -1}", "'target_tpot_ms'"},
		{"{\"batch\": {\"target_tpot_ms\": \"fast\"}}", "'batch.target_tpot_ms'"},
		{"{\"target_tpot_ms\": 600001}", "'target_tpot_ms'"},
		{"{\"max_decode_delay_ms\": -1}", "'max_decode_delay_ms'"},
		{"{\"batch\": {\"max_decode_delay_ms\": true}}", "'batch.max_decode_delay_ms'"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(cfg_parse_json(&c, bad[i].json, err, sizeof(err)), HERD_E_FORMAT);
		if (!strstr(err, bad[i].key))
			fail_msg("%s: error '%s' does not name %s", bad[i].json, err, bad[i].key);
	}
	assert_int_equal(c.batch_auto, 1); /* the refused values changed nothing */
	assert_int_equal(c.max_batch_size, CFG_BATCH_AUTO_MAX);
	cfg_fini(&c);
}

/* The "limits" object: defaults, every key, range and unknown-key errors
 * naming the key, the pause mark above the cap refused. */
static void test_config_limits(void **state)
{
	(void)state;
	cfg c;
	char err[512] = "";
	cfg_init(&c);
	assert_int_equal(c.limits.send_queue_bytes, 8u << 20);
	assert_int_equal(c.limits.send_queue_pause_bytes, 2u << 20);
	assert_int_equal(c.limits.frame_timeout_ms, 10000);
	assert_int_equal(c.limits.idle_timeout_ms, 0);
	assert_int_equal(c.limits.max_connections, 1024);
	assert_int_equal(c.limits.max_connections_per_uid, 256);
	assert_int_equal(c.limits.accept_backoff_ms, 100);
	assert_int_equal(cfg_parse_json(&c,
					"{\"limits\": {\"send_queue_bytes\": 1048576, "
					"\"send_queue_pause_bytes\": 65536, \"frame_timeout_ms\": 500, "
					"\"idle_timeout_ms\": 3600000, \"max_connections\": 100, "
					"\"max_connections_per_uid\": 10, \"accept_backoff_ms\": 50}}",
					err, sizeof(err)),
			 0);
	assert_int_equal(c.limits.send_queue_bytes, 1u << 20);
	assert_int_equal(c.limits.send_queue_pause_bytes, 65536);
	assert_int_equal(c.limits.frame_timeout_ms, 500);
	assert_int_equal(c.limits.idle_timeout_ms, 3600000);
	assert_int_equal(c.limits.max_connections, 100);
	assert_int_equal(c.limits.max_connections_per_uid, 10);
	assert_int_equal(c.limits.accept_backoff_ms, 50);
	assert_int_equal(cfg_parse_json(&c, "{\"limits\": {\"bogus\": 1}}", err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "limits.bogus"));
	assert_int_equal(cfg_parse_json(&c, "{\"limits\": {\"max_connections\": 0}}", err,
					sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "limits.max_connections"));
	assert_int_equal(cfg_parse_json(&c, "{\"limits\": {\"send_queue_bytes\": 1e99}}", err,
					sizeof(err)),
			 HERD_E_FORMAT);
	assert_int_equal(cfg_parse_json(&c, "{\"limits\": []}", err, sizeof(err)), HERD_E_FORMAT);
	assert_int_equal(cfg_add_model(&c, "m", "/x.gguf", NULL, err, sizeof(err)), 0);
	c.limits.send_queue_pause_bytes = c.limits.send_queue_bytes + 1;
	assert_int_equal(cfg_finish(&c, NULL, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "send_queue_pause_bytes"));
	cfg_fini(&c);
}

/* The "agents" object: defaults, every key, the priority rules, range and
 * unknown-key errors naming the key. */
static void test_config_agents(void **state)
{
	(void)state;
	cfg c;
	char err[256] = "";
	cfg_init(&c);
	assert_int_equal(c.agents.max_queued, 256);
	assert_int_equal(c.agents.max_running, 0);
	assert_int_equal(c.agents.max_prompt_bytes, 1u << 20);
	assert_int_equal(c.agents.max_stop, 8);
	assert_int_equal(c.agents.max_stop_bytes, 64);
	assert_true(c.agents.max_deadline_ms == 7ull * 24 * 3600 * 1000);
	assert_int_equal(c.agents.max_prio, 0);
	assert_int_equal(cfg_parse_json(&c,
					"{\"agents\": {\"max_queued\": 9, \"max_running\": 2, "
					"\"max_prompt_bytes\": 4096, \"max_stop\": 3, "
					"\"max_stop_bytes\": 16, \"max_deadline_ms\": 60000, "
					"\"max_prio\": -2, \"prio\": [{\"uid\": 0, \"max_prio\": 50}, "
					"{\"group\": \"ops\", \"max_prio\": 20}]}}",
					err, sizeof(err)),
			 0);
	assert_int_equal(c.agents.max_queued, 9);
	assert_int_equal(c.agents.max_running, 2);
	assert_int_equal(c.agents.max_prompt_bytes, 4096);
	assert_int_equal(c.agents.max_stop, 3);
	assert_int_equal(c.agents.max_stop_bytes, 16);
	assert_true(c.agents.max_deadline_ms == 60000);
	assert_int_equal(c.agents.max_prio, -2);
	assert_int_equal(c.agents.n_rules, 2);
	assert_int_equal(c.agents.rules[0].match, CFG_MATCH_UID);
	assert_int_equal(c.agents.rules[0].max_prio, 50);
	assert_int_equal(c.agents.rules[1].match, CFG_MATCH_GROUP);
	assert_string_equal(c.agents.rules[1].name, "ops");
	static const char *const bad[][2] = {
		{"{\"agents\": {\"bogus\": 1}}", "agents.bogus"},
		{"{\"agents\": {\"max_queued\": 0}}", "agents.max_queued"},
		{"{\"agents\": {\"max_deadline_ms\": 0}}", "agents.max_deadline_ms"},
		{"{\"agents\": {\"max_deadline_ms\": 1e30}}", "agents.max_deadline_ms"},
		{"{\"agents\": {\"prio\": [{\"uid\": 1, \"name\": \"x\", \"max_prio\": 1}]}}",
		 "agents.prio[0]"},
		{"{\"agents\": {\"prio\": [{\"uid\": 1}]}}", "agents.prio[0]"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(cfg_parse_json(&c, bad[i][0], err, sizeof(err)), HERD_E_FORMAT);
		assert_non_null(strstr(err, bad[i][1]));
	}
	cfg_fini(&c);
}

/* Objects that must be objects are refused by name when they are not
 * (fuzz_config found "agents": "..." read as a NULL hash table;
 * tests/fuzz/corpus/config/regress_agents_string.json). */
static void test_config_not_objects(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
		{"{\"agents\": \"/tmp/x\"}", "agents"},
		{"{\"agents\": 3}", "agents"},
		{"{\"agents\": {\"prio\": [\"ops\"]}}", "agents.prio[0]"},
		{"{\"agents\": {\"prio\": [7]}}", "agents.prio[0]"},
		{"{\"limits\": \"x\"}", "limits"},
		{"{\"batch\": null}", "batch"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cfg c;
		char err[256] = "";
		cfg_init(&c);
		assert_int_equal(cfg_parse_json(&c, cases[i][0], err, sizeof(err)), HERD_E_FORMAT);
		assert_non_null(strstr(err, cases[i][1]));
		cfg_fini(&c);
	}
}

/* Peer data in a log line cannot start a line of its own or reach the
 * terminal as an escape sequence. */
static void test_log_escape(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(blog_escape(out, sizeof(out), "a\nb\x1b[2J\\c\x7f"), 22);
	assert_string_equal(out, "a\\x0ab\\x1b[2J\\x5cc\\x7f");
	/* cut at a whole escape, always terminated */
	assert_int_equal(blog_escape(out, 6, "ab\ncd"), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(blog_escape(out, 1, "abc"), 0);
	assert_string_equal(out, "");
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_welcome),
		cmocka_unit_test(test_gen_blocking_and_streaming),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_attach_and_admin),
		cmocka_unit_test(test_malformed_and_oversized),
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_sigterm),
		cmocka_unit_test(test_config_limits),
		cmocka_unit_test(test_config_batch_target),
		cmocka_unit_test(test_config_agents),
		cmocka_unit_test(test_config_not_objects),
		cmocka_unit_test(test_log_escape),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
