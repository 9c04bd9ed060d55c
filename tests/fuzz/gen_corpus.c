/* Writes the seed corpora of the gguf and frame fuzz targets from the
 * project's own writers, so the seeds are exactly what herd produces:
 *   corpus/frame/  one frame per frame type and variant (the round-trip
 *                  cases of tests/test_proto.c), a stream of several frames,
 *                  a frame with unknown keys, an oversized length header;
 *   corpus/gguf/   tiny LLaMA models (1 layer, n_embd 32, a 16-piece
 *                  vocabulary) in F32, Q8_0 and Q4_0/F16 with tied output,
 *                  a vocabulary-only file, a file holding every value type
 *                  and several tensor types, a v2 copy, an empty file.
 * The tokenizer and config seeds are plain text files, committed as they
 * are. Usage: herd_fuzz_gen_corpus CORPUS_DIR (the dirs must exist).
 * Deterministic: the same bytes every run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "proto/proto.h"

static const char *dir;

static void die(const char *what, int rc)
{
	fprintf(stderr, "gen_corpus: %s failed (%d)\n", what, rc);
	exit(1);
}

static void put(const char *sub, const char *name, const void *p, size_t n)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		die(path, -1);
}

/* ---- frames ------------------------------------------------------------ */

static void frame(const char *name, const proto_msg *m)
{
	proto_buf b;
	proto_buf_init(&b);
	int rc = proto_encode(&b, m);
	if (rc)
		die(name, rc);
	put("frame", name, b.data, b.len);
	proto_buf_fini(&b);
}

/* hello, welcome (with models and without). */
static void frames_session(void)
{
	proto_msg m = {.type = PROTO_HELLO};
	m.hello = (proto_hello){1, proto_s("agent-7"), -3};
	frame("hello", &m);

	proto_model_info mi[2] = {
		{proto_s("tiny"), proto_s("abcdef"), proto_s("/herd.tiny.0123"), 32000, 2048, 1ull << 33},
		{proto_s("other"), {0}, {0}, 0, 0, 0},
	};
	m = (proto_msg){.type = PROTO_WELCOME};
	m.welcome = (proto_welcome){1, 42, mi, 2, 1u << 20, 4096};
	frame("welcome", &m);
	m.welcome.models = NULL;
	m.welcome.n_models = 0;
	frame("welcome_empty", &m);
}

/* gen with every key, with tokens (and none), with chat messages. */
static void frames_gen(void)
{
	proto_str stop[2] = {proto_s("\n\n"), proto_s("User:")};
	int32_t toks[4] = {1, 15043, 0, INT32_MAX};
	gen_msg cm[2] = {{proto_s("system"), proto_s("be brief")},
			 {proto_s("user"), proto_s("hi</s>")}};
	proto_msg m = {.type = PROTO_GEN};
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
	frame("gen_prompt", &m);
	gen_request_init(&m.gen);
	m.gen.id = 7;
	m.gen.model = proto_s("tiny");
	m.gen.input = GEN_INPUT_TOKENS;
	m.gen.tokens = toks;
	m.gen.n_tokens = 4;
	frame("gen_tokens", &m);
	m.gen.tokens = NULL;
	m.gen.n_tokens = 0;
	frame("gen_tokens_empty", &m);
	m.gen.input = GEN_INPUT_MESSAGES;
	m.gen.messages = cm;
	m.gen.n_messages = 2;
	frame("gen_messages", &m);
}

/* tok, done (every finish reason), err, cancel, attach, image, admin, share, shared. */
static void frames_events(void)
{
	char name[64];
	proto_msg m = {.type = PROTO_TOK};
	m.tok = (proto_tok){9, {"\xe2\x96", 2}, 123};
	frame("tok", &m);
	m.tok.text = proto_s("");
	frame("tok_empty", &m);

	for (int r = HERD_FINISH_STOP; r <= HERD_FINISH_DEADLINE; r++) {
		m = (proto_msg){.type = PROTO_DONE};
		m.done = (proto_done){.id = 3, .reason = (herd_finish)r, .has_text = r & 1,
				      .text = proto_s("full text"), .n_prompt = 10, .n_gen = 20,
				      .n_cached = 8, .t_queue_ms = 1.5, .t_first_ms = 20.25,
				      .t_total_ms = 300.125, .merged = 1, .cached = r == 2};
		snprintf(name, sizeof(name), "done_%s", proto_finish_name((herd_finish)r));
		frame(name, &m);
	}

	m = (proto_msg){.type = PROTO_ERR};
	m.err = (proto_err){1, 77, HERD_E_MISSING, proto_s("unknown model 'x'")};
	frame("err_id", &m);
	m.err.has_id = 0;
	frame("err", &m);

	m = (proto_msg){.type = PROTO_CANCEL};
	m.cancel.id = 12345678901ull;
	frame("cancel", &m);
	m = (proto_msg){.type = PROTO_ATTACH};
	m.attach.model = proto_s("tiny");
	frame("attach", &m);
	m = (proto_msg){.type = PROTO_IMAGE};
	m.image = (proto_image){proto_s("tiny"), proto_s("/herd.tiny.0123456789abcdef"), 1ull << 32,
				proto_s("0123456789abcdef")};
	frame("image", &m);
	proto_str args[2] = {proto_s("/herd.tiny.01"), proto_s("--force")};
	m = (proto_msg){.type = PROTO_ADMIN};
	m.admin = (proto_admin){proto_s("rm"), args, 2};
	frame("admin", &m);
	proto_str targets[2] = {proto_s("worker-3"), proto_s("uid:1000")};
	m = (proto_msg){.type = PROTO_SHARE};
	m.share = (proto_share){proto_s("mine"), targets, 2};
	frame("share", &m);
	m = (proto_msg){.type = PROTO_SHARED};
	m.shared = (proto_shared){proto_s("mine"), 123456789};
	frame("shared", &m);
}

/* admin_ok with a nested result of every value type, and with nil. */
static void frames_admin_ok(void)
{
	const proto_value items[6] = {
		{.type = PROTO_V_STR, .s = proto_s("a")},
		{.type = PROTO_V_FLOAT, .f = 2.5},
		{.type = PROTO_V_FLOAT, .f = -1.25},
		{.type = PROTO_V_INT, .i = INT64_MIN},
		{.type = PROTO_V_BOOL, .b = 1},
		{.type = PROTO_V_NIL},
	};
	const proto_pair kv[4] = {
		{.key = {.type = PROTO_V_STR, .s = proto_s("agents")},
		 .val = {.type = PROTO_V_UINT, .u = 69}},
		{.key = {.type = PROTO_V_STR, .s = proto_s("models")},
		 .val = {.type = PROTO_V_ARRAY, .arr = {items, 6}}},
		{.key = {.type = PROTO_V_STR, .s = proto_s("bin")},
		 .val = {.type = PROTO_V_STR, .s = {"\x00\x01", 2}}},
		{.key = {.type = PROTO_V_INT, .i = 7},
		 .val = {.type = PROTO_V_MAP, .map = {NULL, 0}}},
	};
	const proto_value tree = {.type = PROTO_V_MAP, .map = {kv, 4}};
	proto_msg m = {.type = PROTO_ADMIN_OK};
	m.admin_ok = (proto_admin_ok){proto_s("status"), &tree};
	frame("admin_ok", &m);
	m.admin_ok.result = NULL;
	frame("admin_ok_nil", &m);
}

/* Hand-built bytes the encoder would not write: frames back to back, a
 * hello with unknown keys (one holding an ext value) and a nil optional
 * key, a length header above any max_frame. */
static void frames_raw(void)
{
	proto_buf b;
	proto_buf_init(&b);
	for (int i = 0; i < 3; i++) {
		proto_tok t = {(uint64_t)i, proto_s("x"), i};
		if (proto_encode_tok(&b, &t))
			die("stream", -1);
	}
	put("frame", "stream3", b.data, b.len);
	proto_buf_fini(&b);

	static const uint8_t hello_unknown[] = {
		0x85,                                     /* map of 5 */
		0xa1, 't', 0xa5, 'h', 'e', 'l', 'l', 'o', /* t: "hello" */
		0xa1, 'v', 0x01,                          /* v: 1 */
		0xa4, 'n', 'a', 'm', 'e', 0xc0,           /* name: nil */
		0xa6, 'f', 'u', 't', 'u', 'r', 'e',       /* future: [{k: ext 5}] */
		0x91, 0x81, 0xa1, 'k', 0xd6, 0x05, 0x01, 0x02, 0x03, 0x04,
		0xa4, 'p', 'r', 'i', 'o', 0xff,           /* prio: -1 */
	};
	uint8_t framed[4 + sizeof(hello_unknown)];
	const uint32_t n = sizeof(hello_unknown);
	framed[0] = (uint8_t)n;
	framed[1] = (uint8_t)(n >> 8);
	framed[2] = (uint8_t)(n >> 16);
	framed[3] = (uint8_t)(n >> 24);
	memcpy(framed + 4, hello_unknown, n);
	put("frame", "hello_unknown_keys", framed, sizeof(framed));

	put("frame", "too_large", "\xff\xff\xff\x7f\x81\xa1t", 7);
}

static void frames(void)
{
	frames_session();
	frames_gen();
	frames_events();
	frames_admin_ok();
	frames_raw();
}

/* ---- GGUF -------------------------------------------------------------- */

#define E 32  /* n_embd */
#define F 32  /* n_ff */
#define NH 2  /* heads */
#define NKV 1 /* KV heads: head_dim 16, KV width 16 */
#define NV 16 /* vocabulary */

/* Tensor bytes: F32 / F16 as the given value, anything else a byte pattern. */
static int fill(void *user, void *buf, size_t size)
{
	const kern_type t = (kern_type)(intptr_t)user;
	uint8_t *p = buf;
	if (t == KERN_TYPE_F32) {
		for (size_t i = 0; i + 4 <= size; i += 4) {
			const float v = (float)((i / 4) % 7) * 0.125f - 0.25f;
			memcpy(p + i, &v, 4);
		}
	} else if (t == KERN_TYPE_F16) {
		for (size_t i = 0; i + 2 <= size; i += 2) {
			p[i] = 0;
			p[i + 1] = (uint8_t)(0x34 + (i / 2) % 5); /* 0.25 .. 1.0 and so on */
		}
	} else {
		for (size_t i = 0; i < size; i++)
			p[i] = (uint8_t)(i * 37 + 11);
	}
	return 0;
}

static void tensor(gguf_writer *w, const char *name, kern_type t, int64_t ne0, int64_t ne1)
{
	const int64_t ne[2] = {ne0, ne1};
	int rc = gguf_writer_add_tensor_fill(w, name, t, ne1 == 1 ? 1 : 2, ne, fill,
					     (void *)(intptr_t)t);
	if (rc)
		die(name, rc);
}

static void tiny_vocab(gguf_writer *w)
{
	static const char *const pieces[NV] = {
		"<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "<0xE2>", "<0x96>", "<0x81>",
		"\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab", "<user>", "\xc3\xbc"};
	static const int32_t types[NV] = {2, 3, 3, 6, 6, 6, 6, 6, 1, 1, 1, 1, 1, 1, 4, 1};
	gguf_str s[NV];
	float scores[NV];
	for (int i = 0; i < NV; i++) {
		s[i] = (gguf_str){pieces[i], strlen(pieces[i])};
		scores[i] = -(float)i;
	}
	int rc;
	if ((rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
	    (rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", s, NV)) ||
	    (rc = gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, scores, NV)) ||
	    (rc = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types, NV)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
	    (rc = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) ||
	    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1)) ||
	    (rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 1)))
		die("vocab", rc);
}

static void write_gguf(gguf_writer *w, const char *name)
{
	char path[4096], err[256];
	snprintf(path, sizeof(path), "%s/gguf/%s", dir, name);
	int rc = gguf_writer_write(w, path, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "gen_corpus: %s\n", err);
		exit(1);
	}
}

/* A one-layer LLaMA: matrices of type mt, norms of type nt. */
static void tiny_llama(const char *name, kern_type mt, kern_type nt, int tied, uint32_t align)
{
	gguf_writer *w;
	int rc;
	if ((rc = gguf_writer_create(&w)))
		die("writer", rc);
	if (align && (rc = gguf_writer_set_u32(w, "general.alignment", align)))
		die(name, rc);
	if ((rc = gguf_writer_set_str(w, "general.architecture", "llama")) ||
	    (rc = gguf_writer_set_str(w, "general.name", "fuzz seed")) ||
	    (rc = gguf_writer_set_u32(w, "llama.context_length", 64)) ||
	    (rc = gguf_writer_set_u32(w, "llama.embedding_length", E)) ||
	    (rc = gguf_writer_set_u32(w, "llama.block_count", 1)) ||
	    (rc = gguf_writer_set_u32(w, "llama.feed_forward_length", F)) ||
	    (rc = gguf_writer_set_u32(w, "llama.rope.dimension_count", E / NH)) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count", NH)) ||
	    (rc = gguf_writer_set_u32(w, "llama.attention.head_count_kv", NKV)) ||
	    (rc = gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) ||
	    (rc = gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f)) ||
	    (rc = gguf_writer_set_u32(w, "general.file_type", 0)))
		die(name, rc);
	tiny_vocab(w);
	const int kv = E / NH * NKV;
	tensor(w, "token_embd.weight", mt, E, NV);
	tensor(w, "blk.0.attn_norm.weight", nt, E, 1);
	tensor(w, "blk.0.attn_q.weight", mt, E, E);
	tensor(w, "blk.0.attn_k.weight", mt, E, kv);
	tensor(w, "blk.0.attn_v.weight", mt, E, kv);
	tensor(w, "blk.0.attn_output.weight", mt, E, E);
	tensor(w, "blk.0.ffn_norm.weight", nt, E, 1);
	tensor(w, "blk.0.ffn_gate.weight", mt, E, F);
	tensor(w, "blk.0.ffn_up.weight", mt, E, F);
	tensor(w, "blk.0.ffn_down.weight", mt, F, E);
	tensor(w, "output_norm.weight", nt, E, 1);
	if (!tied)
		tensor(w, "output.weight", mt, E, NV);
	write_gguf(w, name);
	gguf_writer_destroy(w);
}

static void misc_gguf(void)
{
	gguf_writer *w;
	int rc;

	/* vocabulary only, as ggml-vocab-*.gguf */
	if ((rc = gguf_writer_create(&w)))
		die("writer", rc);
	if ((rc = gguf_writer_set_str(w, "general.architecture", "llama")))
		die("vocab", rc);
	tiny_vocab(w);
	write_gguf(w, "vocab_only.gguf");
	gguf_writer_destroy(w);

	/* every value type, nested arrays, several tensor types, alignment 64 */
	if ((rc = gguf_writer_create(&w)))
		die("writer", rc);
	const uint8_t u8 = 200;
	const int8_t i8 = -100;
	const uint16_t u16 = 60000;
	const int16_t i16 = -30000;
	const int64_t i64 = INT64_MIN;
	const double f64 = 3.25;
	const uint64_t u64 = UINT64_MAX;
	const int32_t ai[3] = {1, -2, 3};
	const gguf_str as[2] = {{"x", 1}, {"\xe2\x96\x81y", 4}};
	if ((rc = gguf_writer_set_u32(w, "general.alignment", 64)) ||
	    (rc = gguf_writer_set_scalar(w, "t.u8", GGUF_VT_UINT8, &u8)) ||
	    (rc = gguf_writer_set_scalar(w, "t.i8", GGUF_VT_INT8, &i8)) ||
	    (rc = gguf_writer_set_scalar(w, "t.u16", GGUF_VT_UINT16, &u16)) ||
	    (rc = gguf_writer_set_scalar(w, "t.i16", GGUF_VT_INT16, &i16)) ||
	    (rc = gguf_writer_set_i32(w, "t.i32", -7)) ||
	    (rc = gguf_writer_set_f32(w, "t.f32", 0.5f)) ||
	    (rc = gguf_writer_set_bool(w, "t.bool", 1)) ||
	    (rc = gguf_writer_set_str(w, "t.str", "hello")) ||
	    (rc = gguf_writer_set_u64(w, "t.u64", u64)) ||
	    (rc = gguf_writer_set_scalar(w, "t.i64", GGUF_VT_INT64, &i64)) ||
	    (rc = gguf_writer_set_scalar(w, "t.f64", GGUF_VT_FLOAT64, &f64)) ||
	    (rc = gguf_writer_set_arr(w, "t.arr_i32", GGUF_VT_INT32, ai, 3)) ||
	    (rc = gguf_writer_set_arr_str(w, "t.arr_str", as, 2)) ||
	    (rc = gguf_writer_set_arr(w, "t.arr_empty", GGUF_VT_UINT8, NULL, 0)))
		die("values", rc);
	static const kern_type types[] = {KERN_TYPE_F32,  KERN_TYPE_F16,  KERN_TYPE_BF16,
					  KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1,
					  KERN_TYPE_Q5_0, KERN_TYPE_Q5_1};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		char name[64];
		snprintf(name, sizeof(name), "t%zu.%s", i, kern_type_name(types[i]));
		const int64_t ne[3] = {32, 2, 1 + (int64_t)i % 2};
		if ((rc = gguf_writer_add_tensor_fill(w, name, types[i], 3, ne, fill,
						      (void *)(intptr_t)types[i])))
			die(name, rc);
	}
	const int64_t ne_k[1] = {256};
	if ((rc = gguf_writer_add_tensor_fill(w, "k.q4_k", KERN_TYPE_Q4_K, 1, ne_k, fill, NULL)))
		die("q4_k", rc);
	write_gguf(w, "values.gguf");
	gguf_writer_destroy(w);

	/* nothing at all */
	if ((rc = gguf_writer_create(&w)))
		die("writer", rc);
	write_gguf(w, "empty.gguf");
	gguf_writer_destroy(w);

	/* the vocabulary file again as version 2 (same layout, other number) */
	char path[4096];
	snprintf(path, sizeof(path), "%s/gguf/vocab_only.gguf", dir);
	FILE *f = fopen(path, "rb");
	static uint8_t buf[1 << 16];
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (!f || n < 8 || fclose(f))
		die("read vocab_only.gguf", -1);
	buf[4] = 2;
	put("gguf", "vocab_only_v2.gguf", buf, n);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	frames();
	tiny_llama("llama_f32.gguf", KERN_TYPE_F32, KERN_TYPE_F32, 0, 0);
	tiny_llama("llama_q8_0.gguf", KERN_TYPE_Q8_0, KERN_TYPE_F32, 0, 0);
	tiny_llama("llama_q4_0_f16_tied.gguf", KERN_TYPE_Q4_0, KERN_TYPE_F16, 1, 0);
	/* corpus/gguf/regress_align1.gguf, the same model with general.alignment 1
	 * (fp16 norms at odd addresses), was written by this generator before
	 * model/gguf.c refused alignments below 8; the writer refuses it now. */
	tiny_llama("llama_q8_0_align8.gguf", KERN_TYPE_Q8_0, KERN_TYPE_F16, 1, 8);
	misc_gguf();
	return 0;
}
