/* Wire protocol codec: round trip of every frame type, one test per
 * validation rule (the message must name the key), a random-bytes and
 * mutation fuzz loop over proto_decode (run under ASan/UBSan: every input
 * must decode or fail cleanly), frame assembly from partial reads, and the
 * too-large frame. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <msgpack.h>

#include "proto/proto.h"
#include "herd/error.h"

/* ---- helpers --------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Encodes m, checks the frame header, decodes the body into *out. */
static void round_trip(const proto_msg *m, proto_buf *b, proto_msg *out)
{
	char err[256];
	size_t n;
	proto_buf_init(b);
	assert_int_equal(proto_encode(b, m), 0);
	assert_true(b->len > PROTO_HDR_SIZE);
	assert_int_equal(proto_frame_next(b->data, b->len, PROTO_MAX_FRAME_DEFAULT, &n),
			 PROTO_FRAME_READY);
	assert_int_equal(n + PROTO_HDR_SIZE, b->len);
	int rc = proto_decode(b->data + PROTO_HDR_SIZE, n, out, err, sizeof(err));
	if (rc)
		fail_msg("decode failed: %s", err);
	assert_int_equal(out->type, m->type);
}

static void assert_str(proto_str s, const char *c)
{
	if (!proto_str_eq(s, c))
		fail_msg("expected '%s', got '%.*s'", c, (int)s.len, s.ptr ? s.ptr : "");
}

/* A msgpack body built with the packer (for hand-made invalid frames). */
typedef struct mp {
	msgpack_sbuffer sb;
	msgpack_packer pk;
} mp;

static void mp_init(mp *m)
{
	msgpack_sbuffer_init(&m->sb);
	msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mp *m, const char *s)
{
	msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

/* Decodes m's body expecting HERD_E_PROTO with a message containing want. */
static void expect_proto_err(const void *body, size_t len, const char *want)
{
	proto_msg out;
	char err[256] = "";
	int rc = proto_decode(body, len, &out, err, sizeof(err));
	if (rc != HERD_E_PROTO)
		fail_msg("expected HERD_E_PROTO containing '%s', got %d", want, rc);
	if (!strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	proto_msg_free(&out);
}

static void mp_expect(mp *m, const char *want)
{
	expect_proto_err(m->sb.data, m->sb.size, want);
	msgpack_sbuffer_destroy(&m->sb);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_rt_hello(void **state)
{
	(void)state;
	proto_msg m = {.type = PROTO_HELLO}, o;
	proto_buf b;
	m.hello = (proto_hello){.v = 1, .name = proto_s("agent-7"), .prio = -3};
	round_trip(&m, &b, &o);
	assert_int_equal(o.hello.v, 1);
	assert_str(o.hello.name, "agent-7");
	assert_int_equal(o.hello.prio, -3);
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

static void test_rt_welcome(void **state)
{
	(void)state;
	proto_model_info mi[2] = {
		{proto_s("tiny"), proto_s("abcdef"), proto_s("/herd.tiny.0123"), 32000, 2048, 1ull << 33},
		{proto_s("other"), {0}, {0}, 0, 0, 0},
	};
	proto_msg m = {.type = PROTO_WELCOME}, o;
	proto_buf b;
	m.welcome = (proto_welcome){1, 42, mi, 2, 1u << 20, 4096};
	round_trip(&m, &b, &o);
	assert_int_equal(o.welcome.v, 1);
	assert_int_equal(o.welcome.agent, 42);
	assert_int_equal(o.welcome.n_models, 2);
	assert_str(o.welcome.models[0].name, "tiny");
	assert_str(o.welcome.models[0].digest, "abcdef");
	assert_str(o.welcome.models[0].segment, "/herd.tiny.0123");
	assert_int_equal(o.welcome.models[0].n_vocab, 32000);
	assert_int_equal(o.welcome.models[0].n_ctx, 2048);
	assert_true(o.welcome.models[0].image_bytes == 1ull << 33);
	assert_str(o.welcome.models[1].name, "other");
	assert_int_equal(o.welcome.models[1].segment.len, 0);
	assert_int_equal(o.welcome.max_frame, 1u << 20);
	assert_int_equal(o.welcome.max_tokens, 4096);
	proto_msg_free(&o);
	proto_buf_fini(&b);

	/* no models */
	m.welcome.models = NULL;
	m.welcome.n_models = 0;
	round_trip(&m, &b, &o);
	assert_int_equal(o.welcome.n_models, 0);
	assert_null(o.welcome.models);
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

/* A gen with every field set round-trips field for field. */
static void rt_gen_all_fields(void)
{
	proto_msg m = {.type = PROTO_GEN}, o;
	proto_buf b;
	proto_str stop[2] = {proto_s("\n\n"), proto_s("User:")};

	gen_request_init(&m.gen);
	m.gen.id = UINT64_MAX;
	m.gen.model = proto_s("tiny");
	m.gen.input = GEN_INPUT_PROMPT;
	m.gen.prompt = proto_s("Once upon a time");
	m.gen.params.max_tokens = 0;
	m.gen.params.sampling.temperature = 0.7f;
	m.gen.params.sampling.top_k = 40;
	m.gen.params.sampling.top_p = 0.95f;
	m.gen.params.sampling.min_p = 0.05f;
	m.gen.params.sampling.repeat_penalty = 1.1f;
	m.gen.params.sampling.seed = 0xdeadbeefcafeull;
	m.gen.params.stop = stop;
	m.gen.params.n_stop = 2;
	m.gen.has_prio = 1;
	m.gen.prio = 5;
	m.gen.params.deadline_ms = 1500;
	m.gen.stream = 1;
	m.gen.cache = 0;
	round_trip(&m, &b, &o);
	const gen_request *g = &o.gen;
	assert_true(g->id == UINT64_MAX);
	assert_str(g->model, "tiny");
	assert_int_equal(g->input, GEN_INPUT_PROMPT);
	assert_str(g->prompt, "Once upon a time");
	assert_int_equal(g->params.max_tokens, 0);
	const sampler_params *sp = &g->params.sampling;
	assert_true(sp->temperature == 0.7f && sp->top_k == 40 && sp->top_p == 0.95f &&
		    sp->min_p == 0.05f && sp->repeat_penalty == 1.1f && sp->seed == 0xdeadbeefcafeull);
	assert_int_equal(g->params.n_stop, 2);
	assert_str(g->params.stop[0], "\n\n");
	assert_str(g->params.stop[1], "User:");
	assert_true(g->has_prio && g->prio == 5);
	assert_int_equal(g->params.deadline_ms, 1500);
	assert_true(g->stream && !g->cache);
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

/* Token input with the defaults, an empty token list, chat messages. */
static void rt_gen_inputs(void)
{
	proto_msg m = {.type = PROTO_GEN}, o;
	proto_buf b;
	int32_t toks[4] = {1, 15043, 0, INT32_MAX};
	gen_msg cm[2] = {{proto_s("system"), proto_s("be brief")},
			 {proto_s("user"), proto_s("hi</s>")}};

	/* tokens, defaults */
	gen_request_init(&m.gen);
	m.gen.id = 7;
	m.gen.model = proto_s("tiny");
	m.gen.input = GEN_INPUT_TOKENS;
	m.gen.tokens = toks;
	m.gen.n_tokens = 4;
	round_trip(&m, &b, &o);
	assert_int_equal(o.gen.input, GEN_INPUT_TOKENS);
	assert_int_equal(o.gen.n_tokens, 4);
	assert_memory_equal(o.gen.tokens, toks, sizeof(toks));
	assert_int_equal(o.gen.params.max_tokens, GEN_DEFAULT_MAX_TOKENS);
	assert_true(o.gen.cache && !o.gen.stream && !o.gen.has_prio && o.gen.params.n_stop == 0);
	proto_msg_free(&o);
	proto_buf_fini(&b);

	/* empty token list is valid (the broker decides what that means) */
	m.gen.n_tokens = 0;
	m.gen.tokens = NULL;
	round_trip(&m, &b, &o);
	assert_int_equal(o.gen.n_tokens, 0);
	proto_msg_free(&o);
	proto_buf_fini(&b);

	/* messages */
	m.gen.input = GEN_INPUT_MESSAGES;
	m.gen.messages = cm;
	m.gen.n_messages = 2;
	round_trip(&m, &b, &o);
	assert_int_equal(o.gen.input, GEN_INPUT_MESSAGES);
	assert_int_equal(o.gen.n_messages, 2);
	assert_str(o.gen.messages[0].role, "system");
	assert_str(o.gen.messages[1].content, "hi</s>");
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

static void test_rt_gen(void **state)
{
	(void)state;
	rt_gen_all_fields();
	rt_gen_inputs();
}

static void test_rt_small(void **state)
{
	(void)state;
	proto_msg m, o;
	proto_buf b;

	m = (proto_msg){.type = PROTO_TOK};
	m.tok = (proto_tok){9, {"\xe2\x96", 2}, 123};
	round_trip(&m, &b, &o);
	assert_int_equal(o.tok.id, 9);
	assert_int_equal(o.tok.text.len, 2);
	assert_memory_equal(o.tok.text.ptr, "\xe2\x96", 2);
	assert_int_equal(o.tok.tok, 123);
	proto_buf_fini(&b);
	m.tok.text = proto_s(""); /* empty piece */
	round_trip(&m, &b, &o);
	assert_int_equal(o.tok.text.len, 0);
	proto_buf_fini(&b);

	for (int r = HERD_FINISH_STOP; r <= HERD_FINISH_DEADLINE; r++) {
		m = (proto_msg){.type = PROTO_DONE};
		m.done = (proto_done){.id = 3, .reason = (herd_finish)r, .has_text = r & 1,
				      .text = proto_s("full text"), .n_prompt = 10, .n_gen = 20,
				      .n_cached = 8, .t_queue_ms = 1.5, .t_first_ms = 20.25,
				      .t_total_ms = 300.125, .merged = 1, .cached = r == 2};
		round_trip(&m, &b, &o);
		assert_int_equal(o.done.reason, r);
		assert_int_equal(o.done.has_text, r & 1);
		if (r & 1)
			assert_str(o.done.text, "full text");
		assert_true(o.done.n_prompt == 10 && o.done.n_gen == 20 && o.done.n_cached == 8);
		assert_true(o.done.t_queue_ms == 1.5 && o.done.t_first_ms == 20.25 &&
			    o.done.t_total_ms == 300.125);
		assert_true(o.done.merged == 1 && o.done.cached == (r == 2));
		proto_buf_fini(&b);
	}
	assert_string_equal(proto_finish_name(HERD_FINISH_DEADLINE), "deadline");

	m = (proto_msg){.type = PROTO_ERR};
	m.err = (proto_err){1, 77, HERD_E_MISSING, proto_s("unknown model 'x'")};
	round_trip(&m, &b, &o);
	assert_true(o.err.has_id && o.err.id == 77 && o.err.code == HERD_E_MISSING);
	assert_str(o.err.msg, "unknown model 'x'");
	proto_buf_fini(&b);
	m.err.has_id = 0;
	round_trip(&m, &b, &o);
	assert_false(o.err.has_id);
	proto_buf_fini(&b);

	m = (proto_msg){.type = PROTO_CANCEL};
	m.cancel.id = 12345678901ull;
	round_trip(&m, &b, &o);
	assert_true(o.cancel.id == 12345678901ull);
	proto_buf_fini(&b);

	m = (proto_msg){.type = PROTO_ATTACH};
	m.attach.model = proto_s("tiny");
	round_trip(&m, &b, &o);
	assert_str(o.attach.model, "tiny");
	proto_buf_fini(&b);

	m = (proto_msg){.type = PROTO_IMAGE};
	m.image = (proto_image){proto_s("tiny"), proto_s("/herd.tiny.0123456789abcdef"),
				1ull << 32, proto_s("0123456789abcdef")};
	round_trip(&m, &b, &o);
	assert_str(o.image.model, "tiny");
	assert_str(o.image.segment, "/herd.tiny.0123456789abcdef");
	assert_true(o.image.size == 1ull << 32);
	assert_str(o.image.digest, "0123456789abcdef");
	proto_buf_fini(&b);
}

/* admin with arguments. */
static void rt_admin_args(void)
{
	proto_msg m = {.type = PROTO_ADMIN}, o;
	proto_buf b;
	proto_str args[2] = {proto_s("/herd.tiny.01"), proto_s("--force")};
	m.admin = (proto_admin){proto_s("rm"), args, 2};
	round_trip(&m, &b, &o);
	assert_str(o.admin.cmd, "rm");
	assert_int_equal(o.admin.n_args, 2);
	assert_str(o.admin.args[1], "--force");
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

/* admin_ok with a nested result, and with a nil one. */
static void rt_admin_ok_tree(void)
{
	proto_msg m, o;
	proto_buf b;
	const proto_value items[2] = {{.type = PROTO_V_STR, .s = proto_s("a")},
				      {.type = PROTO_V_FLOAT, .f = 2.5}};
	const proto_pair kv[2] = {
		{.key = {.type = PROTO_V_STR, .s = proto_s("agents")},
		 .val = {.type = PROTO_V_UINT, .u = 69}},
		{.key = {.type = PROTO_V_STR, .s = proto_s("models")},
		 .val = {.type = PROTO_V_ARRAY, .arr = {items, 2}}},
	};
	const proto_value tree = {.type = PROTO_V_MAP, .map = {kv, 2}};
	m = (proto_msg){.type = PROTO_ADMIN_OK};
	m.admin_ok = (proto_admin_ok){proto_s("status"), &tree};
	round_trip(&m, &b, &o);
	assert_str(o.admin_ok.cmd, "status");
	const proto_value *r = o.admin_ok.result;
	assert_int_equal(r->type, PROTO_V_MAP);
	assert_int_equal(r->map.n, 2);
	assert_int_equal(r->map.kv[0].val.u, 69);
	assert_int_equal(proto_value_get(r, "agents")->u, 69);
	assert_null(proto_value_get(r, "nope"));
	assert_int_equal(r->map.kv[1].val.arr.n, 2);
	assert_true(r->map.kv[1].val.arr.v[1].f == 2.5);
	proto_msg_free(&o);
	proto_buf_fini(&b);

	/* nil result */
	m.admin_ok.result = NULL;
	round_trip(&m, &b, &o);
	assert_int_equal(o.admin_ok.result->type, PROTO_V_NIL);
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

/* Hand-built frames: begin/end, and every writer call read back as values. */
static void rt_admin_ok_writer(void)
{
	proto_msg o;
	proto_buf b;
	const proto_value *r;
	size_t mark, n;
	proto_writer w;
	proto_buf_init(&b);
	assert_int_equal(proto_admin_ok_begin(&w, &b, "segments", &mark), 0);
	proto_write_array(&w, 0);
	assert_int_equal(proto_writer_error(&w), 0);
	assert_int_equal(proto_frame_end(&b, mark), 0);
	assert_int_equal(proto_frame_next(b.data, b.len, 1 << 20, &n), PROTO_FRAME_READY);
	assert_int_equal(proto_decode(b.data + 4, n, &o, NULL, 0), 0);
	assert_str(o.admin_ok.cmd, "segments");
	assert_int_equal(o.admin_ok.result->type, PROTO_V_ARRAY);
	proto_msg_free(&o);
	proto_buf_fini(&b);

	/* every writer call, read back as values */
	proto_buf_init(&b);
	assert_int_equal(proto_admin_ok_begin(&w, &b, "status", &mark), 0);
	proto_write_map(&w, 6);
	proto_write_kv_str(&w, "s", NULL);
	proto_write_kv_int(&w, "i", -7);
	proto_write_kv_uint(&w, "u", UINT64_MAX);
	proto_write_kv_double(&w, "d", 0.25);
	proto_write_kv_bool(&w, "b", 1);
	proto_write_cstr(&w, "n");
	proto_write_nil(&w);
	assert_int_equal(proto_writer_error(&w), 0);
	assert_int_equal(proto_frame_end(&b, mark), 0);
	assert_int_equal(proto_frame_next(b.data, b.len, 1 << 20, &n), PROTO_FRAME_READY);
	assert_int_equal(proto_decode(b.data + 4, n, &o, NULL, 0), 0);
	r = o.admin_ok.result;
	assert_int_equal(proto_value_get(r, "s")->type, PROTO_V_STR);
	assert_int_equal(proto_value_get(r, "s")->s.len, 0);
	assert_int_equal(proto_value_get(r, "i")->i, -7);
	assert_true(proto_value_get(r, "u")->u == UINT64_MAX);
	assert_true(proto_value_get(r, "d")->f == 0.25);
	assert_int_equal(proto_value_get(r, "b")->b, 1);
	assert_int_equal(proto_value_get(r, "n")->type, PROTO_V_NIL);
	proto_msg_free(&o);
	proto_buf_fini(&b);
}

/* share (targets) and shared. */
static void test_rt_share(void **state)
{
	(void)state;
	proto_msg m, o;
	proto_buf b;
	const proto_str targets[2] = {proto_s("alice"), proto_s("uid:1000")};
	m = (proto_msg){.type = PROTO_SHARE};
	m.share = (proto_share){proto_s("mine"), targets, 2};
	round_trip(&m, &b, &o);
	assert_str(o.share.name, "mine");
	assert_int_equal(o.share.n_targets, 2);
	assert_str(o.share.targets[1], "uid:1000");
	proto_msg_free(&o);
	proto_buf_fini(&b);

	m = (proto_msg){.type = PROTO_SHARED};
	m.shared = (proto_shared){proto_s("mine"), 1ull << 33};
	round_trip(&m, &b, &o);
	assert_str(o.shared.model, "mine");
	assert_true(o.shared.size == 1ull << 33);
	proto_buf_fini(&b);

}

static void test_rt_admin(void **state)
{
	(void)state;
	rt_admin_args();
	rt_admin_ok_tree();
	rt_admin_ok_writer();
}

/* Several frames back to back in one buffer, as a sender would batch them. */
static void test_rt_stream_of_frames(void **state)
{
	(void)state;
	proto_buf b;
	proto_buf_init(&b);
	for (int i = 0; i < 100; i++) {
		proto_tok t = {(uint64_t)i, proto_s("x"), i};
		assert_int_equal(proto_encode_tok(&b, &t), 0);
	}
	size_t pos = 0, n;
	int count = 0;
	while (proto_frame_next(b.data + pos, b.len - pos, 64, &n) == PROTO_FRAME_READY) {
		proto_msg o;
		assert_int_equal(proto_decode(b.data + pos + 4, n, &o, NULL, 0), 0);
		assert_int_equal(o.tok.tok, count);
		count++;
		pos += 4 + n;
	}
	assert_int_equal(count, 100);
	assert_int_equal(pos, b.len);
	proto_buf_fini(&b);
}

/* ---- encoder argument errors ----------------------------------------------- */

static void test_encode_errors(void **state)
{
	(void)state;
	proto_buf b;
	proto_buf_init(&b);
	gen_request g;
	gen_request_init(&g);
	g.model = proto_s("m");
	assert_int_equal(proto_encode_gen(&b, &g), HERD_E_INVAL); /* no input */
	g.input = GEN_INPUT_PROMPT;
	g.params.max_tokens = -1;
	assert_int_equal(proto_encode_gen(&b, &g), HERD_E_INVAL);
	g.params.max_tokens = 5;
	g.prompt = (proto_str){NULL, 3};
	assert_int_equal(proto_encode_gen(&b, &g), HERD_E_INVAL);
	int32_t bad[2] = {1, -5};
	g.input = GEN_INPUT_TOKENS;
	g.tokens = bad;
	g.n_tokens = 2;
	assert_int_equal(proto_encode_gen(&b, &g), HERD_E_INVAL);
	g.input = GEN_INPUT_MESSAGES;
	assert_int_equal(proto_encode_gen(&b, &g), HERD_E_INVAL); /* no messages */
	assert_int_equal(b.len, 0); /* failed encodes leave nothing behind */
	proto_done d = {0};
	assert_int_equal(proto_encode_done(&b, &d), HERD_E_INVAL);
	proto_msg m = {.type = PROTO_NONE};
	assert_int_equal(proto_encode(&b, &m), HERD_E_INVAL);
	assert_int_equal(b.len, 0);
	proto_buf_fini(&b);
	proto_buf_fini(NULL);
	proto_msg_free(NULL);
}

/* ---- validation errors ---------------------------------------------------- */

static void test_malformed(void **state)
{
	(void)state;
	proto_msg o;
	char err[128];
	assert_int_equal(proto_decode(NULL, 0, &o, err, sizeof(err)), HERD_E_PROTO);
	assert_non_null(strstr(err, "empty"));
	assert_int_equal(proto_decode(NULL, 3, &o, err, sizeof(err)), HERD_E_INVAL);
	expect_proto_err("\x81\xa1t", 3, "truncated");                 /* cut string */
	expect_proto_err("\xc1", 1, "0xc1");                           /* never-used byte */
	expect_proto_err("\x2a", 1, "not a map");                      /* int */
	expect_proto_err("\x91\x01", 2, "not a map");                  /* array */
	expect_proto_err("\x80\x80", 2, "trailing");                   /* two maps */
	expect_proto_err("\xdf\xff\xff\xff\xff\x00", 6, "count exceeds"); /* 4G-entry map */
	expect_proto_err("\x81\xa1t\xdd\xff\xff\xff\xff", 8, "count exceeds");
	expect_proto_err("\x81\xa1t\xdb\xff\xff\xff\xf0", 8, "truncated"); /* huge str */
	/* nesting: 40 levels of single-element arrays */
	uint8_t deep[64];
	deep[0] = 0x81;
	deep[1] = 0xa1;
	deep[2] = 'x';
	for (int i = 3; i < 43; i++)
		deep[i] = 0x91;
	deep[43] = 0x01;
	expect_proto_err(deep, 44, "deeply");
}

/* A gen frame with n unknown keys (and, when dup, "prompt" twice). */
static void mp_huge_map(mp *m, uint32_t n, int dup)
{
	mp_init(m);
	msgpack_pack_map(&m->pk, n + 4 + (dup ? 1 : 0));
	mp_str(m, "t");
	mp_str(m, "gen");
	mp_str(m, "id");
	msgpack_pack_uint8(&m->pk, 7);
	mp_str(m, "model");
	mp_str(m, "tiny");
	for (uint32_t i = 0; i < n; i++) {
		char k[16];
		snprintf(k, sizeof(k), "k%u", i);
		mp_str(m, k);
		msgpack_pack_nil(&m->pk);
	}
	mp_str(m, "prompt");
	mp_str(m, "hello");
	if (dup) {
		mp_str(m, "prompt");
		mp_str(m, "again");
	}
}

/* Map decoding is linear in the frame: a gen frame with 100k unknown keys
 * costs a few key comparisons per key, not one scan of the map per key the
 * decoder asks for (~30 of them for gen). Duplicates are still found. */
static void test_huge_map_linear(void **state)
{
	(void)state;
	enum { N = 100000 };
	mp m;
	mp_huge_map(&m, N, 0);
	proto_msg o;
	char err[256];
	assert_int_equal(proto_decode(m.sb.data, m.sb.size, &o, err, sizeof(err)), 0);
	assert_int_equal(o.type, PROTO_GEN);
	assert_int_equal(o.gen.id, 7);
	assert_int_equal(o.gen.prompt.len, 5);
	printf("key comparisons for %d keys: %zu\n", N + 4, o.n_key_cmp);
	assert_true(o.n_key_cmp <= (size_t)4 * N + 1000);
	proto_msg_free(&o);
	msgpack_sbuffer_destroy(&m.sb);
	mp_huge_map(&m, N, 1);
	mp_expect(&m, "key 'prompt' appears twice");
}

static void test_type_key(void **state)
{
	(void)state;
	mp m;
	mp_init(&m);
	msgpack_pack_map(&m.pk, 1);
	mp_str(&m, "id");
	msgpack_pack_uint8(&m.pk, 1);
	mp_expect(&m, "missing required key 't'");

	mp_init(&m);
	msgpack_pack_map(&m.pk, 1);
	mp_str(&m, "t");
	msgpack_pack_uint8(&m.pk, 1);
	mp_expect(&m, "key 't' must be a str");

	mp_init(&m);
	msgpack_pack_map(&m.pk, 1);
	mp_str(&m, "t");
	mp_str(&m, "bogus");
	mp_expect(&m, "unknown frame type 'bogus'");

	mp_init(&m);
	msgpack_pack_map(&m.pk, 2);
	mp_str(&m, "t");
	mp_str(&m, "cancel");
	msgpack_pack_uint8(&m.pk, 5); /* non-string key */
	msgpack_pack_uint8(&m.pk, 5);
	mp_expect(&m, "not a str");

	mp_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mp_str(&m, "t");
	mp_str(&m, "cancel");
	mp_str(&m, "id");
	msgpack_pack_uint8(&m.pk, 1);
	mp_str(&m, "id");
	msgpack_pack_uint8(&m.pk, 2);
	mp_expect(&m, "cancel: key 'id' appears twice");

	/* unknown keys are ignored */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mp_str(&m, "t");
	mp_str(&m, "cancel");
	mp_str(&m, "future_key");
	msgpack_pack_array(&m.pk, 1);
	msgpack_pack_nil(&m.pk);
	mp_str(&m, "id");
	msgpack_pack_uint8(&m.pk, 2);
	proto_msg o;
	assert_int_equal(proto_decode(m.sb.data, m.sb.size, &o, NULL, 0), 0);
	assert_int_equal(o.type, PROTO_CANCEL);
	assert_int_equal(o.cancel.id, 2);
	msgpack_sbuffer_destroy(&m.sb);
}

/* A gen frame with the given extra entries (as k, v pairs) after t/id/model. */
typedef void (*pack_fn)(mp *m);

static void gen_with(int n_extra, pack_fn extra, const char *want)
{
	mp m;
	mp_init(&m);
	msgpack_pack_map(&m.pk, 3 + (size_t)n_extra);
	mp_str(&m, "t");
	mp_str(&m, "gen");
	mp_str(&m, "id");
	msgpack_pack_uint8(&m.pk, 1);
	mp_str(&m, "model");
	mp_str(&m, "tiny");
	extra(&m);
	mp_expect(&m, want);
}

static void x_none(mp *m) { (void)m; }
static void x_two_inputs(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "tokens");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_uint8(&m->pk, 1);
}
static void x_neg_max(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "max_tokens");
	msgpack_pack_int(&m->pk, -3);
}
static void x_str_max(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "max_tokens");
	mp_str(m, "10");
}
static void x_tok_float(mp *m)
{
	mp_str(m, "tokens");
	msgpack_pack_array(&m->pk, 2);
	msgpack_pack_uint8(&m->pk, 1);
	msgpack_pack_double(&m->pk, 2.0);
}
static void x_tok_neg(mp *m)
{
	mp_str(m, "tokens");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_int(&m->pk, -1);
}
static void x_tok_big(mp *m)
{
	mp_str(m, "tokens");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_uint64(&m->pk, 1ull << 40);
}
static void x_tok_many(mp *m)
{
	mp_str(m, "tokens");
	msgpack_pack_array(&m->pk, PROTO_MAX_TOKENS + 1);
	for (int i = 0; i < PROTO_MAX_TOKENS + 1; i++)
		msgpack_pack_uint8(&m->pk, 1);
}
static void x_prompt_int(mp *m)
{
	mp_str(m, "prompt");
	msgpack_pack_int(&m->pk, 5);
}
static void x_msg_norole(mp *m)
{
	mp_str(m, "messages");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_map(&m->pk, 1);
	mp_str(m, "content");
	mp_str(m, "hello");
}
static void x_msg_notmap(mp *m)
{
	mp_str(m, "messages");
	msgpack_pack_array(&m->pk, 1);
	mp_str(m, "hello");
}
static void x_msg_empty(mp *m)
{
	mp_str(m, "messages");
	msgpack_pack_array(&m->pk, 0);
}
static void x_temp_str(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "temp");
	mp_str(m, "hot");
}
static void x_stream_int(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "stream");
	msgpack_pack_int(&m->pk, 1);
}
static void x_stop_int(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "stop");
	msgpack_pack_array(&m->pk, 2);
	mp_str(m, "a");
	msgpack_pack_int(&m->pk, 1);
}
static void x_stop_many(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "stop");
	msgpack_pack_array(&m->pk, PROTO_MAX_STOP + 1);
	for (int i = 0; i <= PROTO_MAX_STOP; i++)
		mp_str(m, "s");
}
static void x_seed_neg(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "seed");
	msgpack_pack_int(&m->pk, -1);
}
static void x_prio_big(mp *m)
{
	mp_str(m, "prompt");
	mp_str(m, "hi");
	mp_str(m, "prio");
	msgpack_pack_int64(&m->pk, 1ll << 40);
}

static void test_gen_validation(void **state)
{
	(void)state;
	gen_with(0, x_none, "gen: one of keys 'prompt', 'tokens', 'messages' is required");
	gen_with(2, x_two_inputs, "only one of keys 'prompt', 'tokens', 'messages'");
	gen_with(2, x_neg_max, "key 'max_tokens' must be non-negative, got -3");
	gen_with(2, x_str_max, "key 'max_tokens' must be an int, got str");
	gen_with(1, x_tok_float, "key 'tokens' element 1 must be an int, got float");
	gen_with(1, x_tok_neg, "key 'tokens' element 0 is not a token id");
	gen_with(1, x_tok_big, "key 'tokens' element 0 is not a token id");
	gen_with(1, x_tok_many, "key 'tokens' has 262145 elements (limit 262144)");
	gen_with(1, x_prompt_int, "key 'prompt' must be a str, got int");
	gen_with(1, x_msg_norole, "gen: messages: missing required key 'role'");
	gen_with(1, x_msg_notmap, "key 'messages' element 0 must be a map");
	gen_with(1, x_msg_empty, "key 'messages' must not be empty");
	gen_with(2, x_temp_str, "key 'temp' must be a number, got str");
	gen_with(2, x_stream_int, "key 'stream' must be a bool, got int");
	gen_with(2, x_stop_int, "key 'stop' element 1 must be a str");
	gen_with(2, x_stop_many, "key 'stop' has 65 elements");
	gen_with(2, x_seed_neg, "key 'seed' must be a non-negative int");
	gen_with(2, x_prio_big, "key 'prio' out of range");

	/* missing id / model */
	mp m;
	mp_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mp_str(&m, "t");
	mp_str(&m, "gen");
	mp_str(&m, "model");
	mp_str(&m, "tiny");
	mp_str(&m, "prompt");
	mp_str(&m, "x");
	mp_expect(&m, "gen: missing required key 'id'");
	mp_init(&m);
	msgpack_pack_map(&m.pk, 3);
	mp_str(&m, "t");
	mp_str(&m, "gen");
	mp_str(&m, "id");
	msgpack_pack_int(&m.pk, 1);
	mp_str(&m, "prompt");
	mp_str(&m, "x");
	mp_expect(&m, "gen: missing required key 'model'");

	/* nil for an optional key counts as absent; ints are accepted as numbers */
	mp_init(&m);
	msgpack_pack_map(&m.pk, 6);
	mp_str(&m, "t");
	mp_str(&m, "gen");
	mp_str(&m, "id");
	msgpack_pack_int(&m.pk, 1);
	mp_str(&m, "model");
	mp_str(&m, "tiny");
	mp_str(&m, "prompt");
	mp_str(&m, "x");
	mp_str(&m, "max_tokens");
	msgpack_pack_nil(&m.pk);
	mp_str(&m, "temp");
	msgpack_pack_int(&m.pk, 1);
	proto_msg o;
	assert_int_equal(proto_decode(m.sb.data, m.sb.size, &o, NULL, 0), 0);
	assert_int_equal(o.gen.params.max_tokens, GEN_DEFAULT_MAX_TOKENS);
	assert_true(o.gen.params.sampling.temperature == 1.0f);
	proto_msg_free(&o);
	msgpack_sbuffer_destroy(&m.sb);
}

/* One required key missing or mistyped per frame type. */
static void frame(mp *m, const char *t, int n)
{
	mp_init(m);
	msgpack_pack_map(&m->pk, (size_t)n + 1);
	mp_str(m, "t");
	mp_str(m, t);
}

/* hello and welcome: required keys, types, ranges. */
static void validate_hello_welcome(mp *m)
{
	frame(m, "hello", 0);
	mp_expect(m, "hello: missing required key 'v'");
	frame(m, "hello", 2);
	mp_str(m, "v");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "name");
	msgpack_pack_true(&m->pk);
	mp_expect(m, "hello: key 'name' must be a str, got bool");

	frame(m, "welcome", 4);
	mp_str(m, "v");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "agent");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "max_frame");
	msgpack_pack_int(&m->pk, 1024);
	mp_str(m, "max_tokens");
	msgpack_pack_int(&m->pk, 1024);
	mp_expect(m, "welcome: missing required key 'models'");
	frame(m, "welcome", 5);
	mp_str(m, "v");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "agent");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "max_frame");
	msgpack_pack_int(&m->pk, 1024);
	mp_str(m, "max_tokens");
	msgpack_pack_int(&m->pk, 1024);
	mp_str(m, "models");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_map(&m->pk, 1);
	mp_str(m, "n_ctx");
	msgpack_pack_int(&m->pk, 1);
	mp_expect(m, "welcome: models: missing required key 'name'");
	frame(m, "welcome", 1);
	mp_str(m, "v");
	msgpack_pack_uint64(&m->pk, 1ull << 33);
	mp_expect(m, "key 'v' out of range");
}

/* tok and done: required keys, known finish reasons. */
static void validate_tok_done(mp *m)
{
	frame(m, "tok", 2);
	mp_str(m, "id");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "text");
	mp_str(m, "a");
	mp_expect(m, "tok: missing required key 'tok'");

	frame(m, "done", 4);
	mp_str(m, "id");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "reason");
	mp_str(m, "bored");
	mp_str(m, "n_prompt");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "n_gen");
	msgpack_pack_int(&m->pk, 1);
	mp_expect(m, "done: key 'reason' has unknown value 'bored'");
	frame(m, "done", 3);
	mp_str(m, "id");
	msgpack_pack_int(&m->pk, 1);
	mp_str(m, "reason");
	mp_str(m, "stop");
	mp_str(m, "n_prompt");
	msgpack_pack_int(&m->pk, 1);
	mp_expect(m, "done: missing required key 'n_gen'");
}

/* err: required keys, a nil id, an int code. */
static void validate_err(mp *m)
{
	frame(m, "err", 1);
	mp_str(m, "code");
	msgpack_pack_int(&m->pk, -5);
	mp_expect(m, "err: missing required key 'msg'");
	frame(m, "err", 3); /* nil id is allowed */
	mp_str(m, "id");
	msgpack_pack_nil(&m->pk);
	mp_str(m, "code");
	msgpack_pack_int(&m->pk, -5);
	mp_str(m, "msg");
	mp_str(m, "x");
	proto_msg o;
	assert_int_equal(proto_decode(m->sb.data, m->sb.size, &o, NULL, 0), 0);
	assert_false(o.err.has_id);
	msgpack_sbuffer_destroy(&m->sb);
	frame(m, "err", 2);
	mp_str(m, "code");
	mp_str(m, "bad");
	mp_str(m, "msg");
	mp_str(m, "x");
	mp_expect(m, "err: key 'code' must be an int");
}

/* cancel, attach, image, admin, admin_ok. */
static void validate_control(mp *m)
{
	frame(m, "cancel", 1);
	mp_str(m, "id");
	msgpack_pack_int(&m->pk, -1);
	mp_expect(m, "cancel: key 'id' must be a non-negative int, got -1");
	frame(m, "attach", 0);
	mp_expect(m, "attach: missing required key 'model'");
	frame(m, "image", 3);
	mp_str(m, "model");
	mp_str(m, "m");
	mp_str(m, "segment");
	mp_str(m, "/herd.m");
	mp_str(m, "size");
	msgpack_pack_int(&m->pk, 100);
	mp_expect(m, "image: missing required key 'digest'");
	frame(m, "admin", 2);
	mp_str(m, "cmd");
	mp_str(m, "rm");
	mp_str(m, "args");
	mp_str(m, "x");
	mp_expect(m, "admin: key 'args' must be an array, got str");
	frame(m, "admin_ok", 1);
	mp_str(m, "cmd");
	mp_str(m, "status");
	mp_expect(m, "admin_ok: missing required key 'result'");
	frame(m, "share", 0);
	mp_expect(m, "share: missing required key 'name'");
	frame(m, "share", 2);
	mp_str(m, "name");
	mp_str(m, "m");
	mp_str(m, "targets");
	msgpack_pack_array(&m->pk, PROTO_MAX_TARGETS + 1);
	for (int i = 0; i <= PROTO_MAX_TARGETS; i++)
		mp_str(m, "a");
	mp_expect(m, "share: key 'targets' has 17 elements (limit 16)");
	frame(m, "share", 2);
	mp_str(m, "name");
	mp_str(m, "m");
	mp_str(m, "targets");
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_int(&m->pk, 5);
	mp_expect(m, "share: key 'targets' element 0 must be a str, got int");
	frame(m, "shared", 1);
	mp_str(m, "model");
	mp_str(m, "m");
	mp_expect(m, "shared: missing required key 'size'");
}

static void test_other_validation(void **state)
{
	(void)state;
	mp m;
	validate_hello_welcome(&m);
	validate_tok_done(&m);
	validate_err(&m);
	validate_control(&m);
}

/* ---- fuzz ------------------------------------------------------------------ */

/* Random bytes, then byte mutations and truncations of valid frames: every
 * decode either succeeds or returns HERD_E_PROTO with a message. */
static void test_fuzz(void **state)
{
	(void)state;
	uint64_t seed = 0x12345;
	uint8_t buf[512];
	char err[256];
	int ok = 0;
	for (int iter = 0; iter < 200000; iter++) {
		size_t n = rng_next(&seed) % sizeof(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rng_next(&seed);
		if (n && (iter & 1))
			buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f)); /* make it a fixmap */
		proto_msg o;
		int rc = proto_decode(buf, n, &o, err, sizeof(err));
		assert_true(rc == 0 || rc == HERD_E_PROTO);
		if (rc)
			assert_true(err[0] != 0);
		else
			ok++;
		proto_msg_free(&o);
	}

	/* mutations of valid frames of every type */
	proto_buf b;
	proto_buf_init(&b);
	proto_str stop[1] = {proto_s("END")};
	int32_t toks[3] = {1, 2, 3};
	gen_msg cm[1] = {{proto_s("user"), proto_s("hi")}};
	proto_model_info mi[1] = {{proto_s("tiny"), proto_s("ab"), proto_s("/herd.t"), 5, 6, 7}};
	gen_request g;
	gen_request_init(&g);
	g.model = proto_s("tiny");
	g.input = GEN_INPUT_TOKENS;
	g.tokens = toks;
	g.n_tokens = 3;
	g.params.stop = stop;
	g.params.n_stop = 1;
	proto_encode_gen(&b, &g);
	g.input = GEN_INPUT_MESSAGES;
	g.messages = cm;
	g.n_messages = 1;
	proto_encode_gen(&b, &g);
	proto_welcome w = {1, 2, mi, 1, 1024, 64};
	proto_encode_welcome(&b, &w);
	proto_done d = {.id = 1, .reason = HERD_FINISH_LENGTH, .has_text = 1, .text = proto_s("t")};
	proto_encode_done(&b, &d);
	proto_err e = {1, 4, -2, proto_s("boom")};
	proto_encode_err(&b, &e);
	proto_admin a = {proto_s("rm"), stop, 1};
	proto_encode_admin(&b, &a);
	size_t pos = 0, n;
	int frames = 0;
	while (proto_frame_next(b.data + pos, b.len - pos, 1 << 20, &n) == PROTO_FRAME_READY) {
		const uint8_t *body = b.data + pos + 4;
		uint8_t *copy = malloc(n);
		assert_non_null(copy);
		for (int iter = 0; iter < 20000; iter++) {
			memcpy(copy, body, n);
			int flips = 1 + (int)(rng_next(&seed) % 4);
			for (int f = 0; f < flips; f++)
				copy[rng_next(&seed) % n] = (uint8_t)rng_next(&seed);
			size_t len = (iter % 3 == 0) ? rng_next(&seed) % (n + 1) : n;
			/* a private heap copy of exactly len bytes so ASan sees overreads */
			uint8_t *exact = malloc(len ? len : 1);
			assert_non_null(exact);
			memcpy(exact, copy, len);
			proto_msg o;
			int rc = proto_decode(exact, len, &o, err, sizeof(err));
			assert_true(rc == 0 || rc == HERD_E_PROTO);
			proto_msg_free(&o);
			free(exact);
		}
		free(copy);
		frames++;
		pos += 4 + n;
	}
	assert_int_equal(frames, 6);
	proto_buf_fini(&b);
	print_message("fuzz: %d random inputs decoded as valid frames\n", ok);
}

/* ---- framing ----------------------------------------------------------------- */

static void test_frame_assembly(void **state)
{
	(void)state;
	proto_buf src, rx;
	proto_buf_init(&src);
	proto_buf_init(&rx);
	for (int i = 0; i < 50; i++) {
		char text[96];
		snprintf(text, sizeof(text), "piece %d %.*s", i, i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		proto_tok t = {(uint64_t)i, proto_s(text), i};
		assert_int_equal(proto_encode_tok(&src, &t), 0);
	}
	/* feed in random chunk sizes (1..7 bytes), as short reads would */
	uint64_t seed = 99;
	size_t fed = 0, n;
	int got = 0;
	while (fed < src.len) {
		size_t chunk = 1 + rng_next(&seed) % 7;
		if (chunk > src.len - fed)
			chunk = src.len - fed;
		assert_int_equal(proto_buf_append(&rx, src.data + fed, chunk), 0);
		fed += chunk;
		int rc;
		while ((rc = proto_frame_next(rx.data, rx.len, 1024, &n)) == PROTO_FRAME_READY) {
			proto_msg o;
			assert_int_equal(proto_decode(rx.data + 4, n, &o, NULL, 0), 0);
			assert_int_equal(o.type, PROTO_TOK);
			assert_int_equal(o.tok.tok, got);
			got++;
			proto_buf_consume(&rx, 4 + n);
		}
		assert_int_equal(rc, PROTO_FRAME_NEED_MORE);
		if (rx.len >= 4)
			assert_true(n > 0); /* length known once the header is in */
		else
			assert_int_equal(n, 0);
	}
	assert_int_equal(got, 50);
	assert_int_equal(rx.len, 0);
	proto_buf_fini(&src);
	proto_buf_fini(&rx);
}

static void test_frame_too_large(void **state)
{
	(void)state;
	uint8_t hdr[4] = {0x01, 0x00, 0x10, 0x00}; /* 1 MiB + 1 */
	size_t n;
	assert_int_equal(proto_frame_next(hdr, 4, PROTO_MAX_FRAME_DEFAULT, &n), HERD_E_PROTO);
	assert_int_equal(n, (1u << 20) + 1);
	uint8_t max[4] = {0xff, 0xff, 0xff, 0xff};
	assert_int_equal(proto_frame_next(max, 4, PROTO_MAX_FRAME_DEFAULT, &n), HERD_E_PROTO);
	assert_int_equal(n, 0xffffffffu);
	/* exactly max_frame is fine (needs more: the body is not there) */
	uint8_t eq[4] = {0x00, 0x00, 0x10, 0x00};
	assert_int_equal(proto_frame_next(eq, 4, PROTO_MAX_FRAME_DEFAULT, &n), PROTO_FRAME_NEED_MORE);
	assert_int_equal(n, 1u << 20);
	assert_int_equal(proto_frame_next(eq, 3, PROTO_MAX_FRAME_DEFAULT, &n), PROTO_FRAME_NEED_MORE);
	assert_int_equal(n, 0);
	/* a frame too large for the receiver built by a sender without limits */
	proto_buf b;
	proto_buf_init(&b);
	char *big = malloc(2000);
	assert_non_null(big);
	memset(big, 'a', 2000);
	proto_tok t = {1, {big, 2000}, 1};
	assert_int_equal(proto_encode_tok(&b, &t), 0);
	assert_int_equal(proto_frame_next(b.data, b.len, 1024, &n), HERD_E_PROTO);
	assert_true(n > 2000);
	assert_int_equal(proto_frame_next(b.data, b.len, 4096, &n), PROTO_FRAME_READY);
	free(big);
	proto_buf_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rt_hello),        cmocka_unit_test(test_rt_welcome),
		cmocka_unit_test(test_rt_gen),          cmocka_unit_test(test_rt_small),
		cmocka_unit_test(test_rt_admin),        cmocka_unit_test(test_rt_stream_of_frames),
		cmocka_unit_test(test_rt_share),
		cmocka_unit_test(test_encode_errors),   cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_type_key),        cmocka_unit_test(test_gen_validation),
		cmocka_unit_test(test_other_validation), cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_frame_assembly),  cmocka_unit_test(test_frame_too_large),
		cmocka_unit_test(test_huge_map_linear),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
