/* Prompt-lookup speculative decoding (model/spec.h).
 *
 * Unit: what spec_draft proposes for a known history (the longest n-gram,
 * its most recent earlier occurrence, the limits) and the adaptive length
 * (doubling, cut to the accepted count + 1, the back-off after misses).
 *
 * Engine: on the mini model, greedy generation with drafts (spec_run) gives
 * byte-identical text and the same tokens as plain greedy decoding, for
 * several prompts, with a repetition penalty, and with F16 and Q8_0 KV
 * pages; some drafts must have been accepted (or the test would prove
 * nothing).
 *
 * Broker: a real herdd (draft_tokens at its default) answers greedy
 * requests with the text the engine gives plainly in the test process
 * (h_reference), and its model status counts accepted drafts. Exits 77 when
 * herdd or herdctl is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "herd/herd.h"
#include "model/generate.h"
#include "model/spec.h"

#define GEN_TOKENS 160

static void test_draft_lookup(void **state)
{
	(void)state;
	const int32_t h[] = {1, 10, 11, 12, 13, 14, 15, 20, 11, 12, 13};
	const int n = (int)(sizeof(h) / sizeof(h[0]));
	spec_ctl s;
	assert_int_equal(spec_init(&s, 4, h, n, 64), 0);
	int32_t d[SPEC_MAX_DRAFT];
	/* "11 12 13" (3-gram) was followed by 14 15 20 11 */
	assert_int_equal(spec_draft(&s, 8, d), 4);
	assert_int_equal(d[0], 14);
	assert_int_equal(d[3], 11);
	assert_int_equal(spec_draft(&s, 2, d), 2); /* the caller's limit */
	/* the most recent occurrence wins: after "... 13 14" comes 15 */
	spec_push(&s, 14);
	assert_int_equal(spec_draft(&s, 1, d), 1);
	assert_int_equal(d[0], 15);
	/* nothing to copy: a bigram never seen */
	spec_push(&s, 99);
	assert_int_equal(spec_draft(&s, 4, d), 0);
	spec_fini(&s);
	/* off: no history kept, no drafts */
	assert_int_equal(spec_init(&s, 0, h, n, 64), 0);
	assert_int_equal(spec_draft(&s, 8, d), 0);
	spec_fini(&s);
}

static void test_adaptive_length(void **state)
{
	(void)state;
	const int32_t h[] = {5, 6, 7, 8, 5, 6, 7, 8, 5, 6};
	spec_ctl s;
	assert_int_equal(spec_init(&s, 8, h, 10, 64), 0);
	spec_done(&s, 8, 2);
	assert_int_equal(s.cur, 3);  /* accepted + 1 */
	spec_done(&s, 3, 3);
	assert_int_equal(s.cur, 6);  /* doubled */
	spec_done(&s, 6, 6);
	assert_int_equal(s.cur, 8);  /* capped */
	for (int i = 0; i < SPEC_MISSES; i++)
		spec_done(&s, 1, 0);
	assert_int_equal(s.skip, SPEC_BACKOFF0);
	int32_t d[8];
	for (int i = 0; i < SPEC_BACKOFF0; i++)
		assert_int_equal(spec_draft(&s, 8, d), 0); /* paused */
	assert_true(spec_draft(&s, 8, d) > 0);
	for (int i = 0; i < SPEC_MISSES; i++)
		spec_done(&s, 1, 0);
	assert_int_equal(s.skip, 2 * SPEC_BACKOFF0); /* the back-off doubles */
	spec_done(&s, 1, 1);
	assert_int_equal(s.backoff, SPEC_BACKOFF0); /* and resets on success */
	assert_int_equal(s.drafts, 2 * SPEC_MISSES + 4);
	spec_fini(&s);
}

/* Timed steps: nothing is drafted before plain steps were timed; drafting
 * that gives tokens slower than plain steps pauses, faster goes on. */
static void test_paying(void **state)
{
	(void)state;
	const int32_t h[] = {5, 6, 7, 8, 5, 6, 7, 8, 5, 6};
	spec_ctl s;
	assert_int_equal(spec_init(&s, 8, h, 10, 64), 0);
	int32_t d[8];
	spec_time(&s, 0, 0, 10.0);
	assert_int_equal(spec_draft(&s, 8, d), 0); /* one plain step timed: not yet */
	for (int i = 1; i < SPEC_TIME_MIN; i++)
		spec_time(&s, 0, 0, 10.0);
	assert_true(spec_draft(&s, 8, d) > 0);
	for (int i = 0; i < SPEC_TIME_MIN; i++)
		spec_time(&s, 4, 3, 12.0); /* 3 ms a token: pays */
	assert_int_equal(s.skip, 0);
	for (int i = 0; i < SPEC_TIME_MIN; i++)
		spec_time(&s, 4, 0, 30.0); /* 30 ms a token: does not */
	assert_int_equal(s.skip, SPEC_BACKOFF0);
	spec_done(&s, 4, 2); /* accepted drafts do not shorten the timing back-off */
	for (int i = 0; i < SPEC_TIME_MIN; i++)
		spec_time(&s, 4, 0, 30.0);
	assert_int_equal(s.skip, 2 * SPEC_BACKOFF0);
	spec_fini(&s);
}

/* ---- the engine --------------------------------------------------------- */

typedef struct run_out {
	char *text;
	size_t len;
	int n_gen;
	herd_finish finish;
	int32_t toks[GEN_TOKENS + 1];
	int n_toks;
	uint64_t accepted, drafted;
} run_out;

static int keep_token(void *arg, const gen_step *st)
{
	run_out *o = arg;
	if (st->token >= 0 && o->n_toks <= GEN_TOKENS)
		o->toks[o->n_toks++] = st->token;
	return 0;
}

static void gen_one(llama_model *m, kern_type kv, const char *prompt, float rep, int draft,
		    run_out *o)
{
	llama_ctx *c;
	llama_ctx_opts co = {.n_threads = 1, .n_ctx = 512, .kv_type = kv};
	assert_int_equal(llama_ctx_create(&c, m, &co), 0);
	gen_request r;
	gen_request_init(&r);
	r.input = GEN_INPUT_PROMPT;
	r.prompt = (gen_str){prompt, strlen(prompt)};
	r.params.max_tokens = GEN_TOKENS;
	r.params.sampling.repeat_penalty = rep;
	const gen_bounds b = {.n_ctx = llama_ctx_n_ctx(c), .t_start = clock_mono_ms()};
	gen_seq g;
	char err[256];
	if (gen_seq_begin(&g, m, &b, &r, err, sizeof(err)))
		fail_msg("gen_seq_begin: %s", err);
	float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab * (size_t)(1 + draft));
	assert_non_null(logits);
	spec_ctl sc;
	assert_int_equal(spec_init(&sc, draft, g.prompt, g.n_prompt, g.n_prompt + g.max_gen + 1), 0);
	llama_seq seq;
	llama_seq_init(&seq);
	memset(o, 0, sizeof(*o));
	assert_int_equal(llama_eval(c, &seq, g.prompt, g.n_prompt, 0, logits), 0);
	assert_int_equal(spec_run(c, &seq, &g, &sc, logits, keep_token, o), 0);
	/* every position kept is one fed: the prompt and all but the last token */
	assert_int_equal(seq.n_past, g.n_prompt + g.n_gen - (g.finish == HERD_FINISH_STOP ? 0 : 1));
	o->n_gen = g.n_gen;
	o->finish = g.finish;
	o->accepted = sc.accepted;
	o->drafted = sc.drafted;
	o->text = gen_seq_take_text(&g, &o->len);
	llama_seq_reset(c, &seq);
	spec_fini(&sc);
	gen_seq_end(&g);
	free(logits);
	llama_ctx_destroy(c);
}

static void test_identical_to_greedy(void **state)
{
	(void)state;
	char dir[] = "/tmp/herd-spec-XXXXXX", path[64], err[256];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mini.gguf", dir);
	mkmodel_opts mo = {.shape = "mini", .ftype = "Q4_0", .out_path = path, .seed = 7, .n_threads = 2};
	if (mkmodel_write(&mo, err, sizeof(err)))
		fail_msg("mkmodel_write: %s", err);
	llama_model *m;
	if (llama_model_load(&m, path, err, sizeof(err)))
		fail_msg("load: %s", err);
	if (kern_repack_worthwhile())
		assert_int_equal(llama_model_repack(m, kern_repack_worthwhile()), 0);
	const char *prompts[] = {"Once upon a time", "The quick brown fox", "hello hello hello hello",
				 "a b c a b c a b"};
	const kern_type kvs[] = {KERN_TYPE_F16, KERN_TYPE_Q8_0};
	uint64_t accepted = 0, drafted = 0;
	static run_out plain, spec;
	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++)
			for (int rp = 0; rp < 2; rp++) {
				const float rep = rp ? 1.3f : 1.0f;
				gen_one(m, kvs[k], prompts[i], rep, 0, &plain);
				gen_one(m, kvs[k], prompts[i], rep, 8, &spec);
				if (spec.len != plain.len || memcmp(spec.text, plain.text, plain.len) ||
				    spec.n_gen != plain.n_gen || spec.finish != plain.finish ||
				    spec.n_toks != plain.n_toks ||
				    memcmp(spec.toks, plain.toks, sizeof(int32_t) * (size_t)plain.n_toks))
					fail_msg("'%s' (KV %s, repeat penalty %.1f): drafting changed the output",
						 prompts[i], kern_type_name(kvs[k]), rep);
				assert_int_equal(plain.drafted, 0);
				accepted += spec.accepted;
				drafted += spec.drafted;
				free(plain.text);
				free(spec.text);
			}
	print_message("drafted %llu tokens, accepted %llu\n", (unsigned long long)drafted,
		      (unsigned long long)accepted);
	assert_true(accepted > 0);
	llama_model_destroy(m);
	unlink(path);
	rmdir(dir);
}

/* ---- through herdd ---------------------------------------------------------- */

/* One greedy request through herdd against the plain reference. */
static void broker_case(h_world *w, herd_client *c, const char *prompt, kern_type kv)
{
	static h_ref ref;
	static run_out plain;
	herd_request r;
	herd_request_init(&r);
	r.model = w->model_name;
	r.prompt = prompt;
	r.max_tokens = GEN_TOKENS;
	r.temperature = 0;
	herd_result res;
	if (herd_generate(c, &r, &res))
		fail_msg("generate: %s", herd_client_errmsg(c));
	const char *text = ref.text;
	size_t len;
	if (kv == KERN_TYPE_F16) {
		h_reference(w, prompt, GEN_TOKENS, &ref);
		len = ref.text_len;
	} else {
		gen_one(w->ref_model, kv, prompt, 1.0f, 0, &plain);
		text = plain.text;
		len = plain.len;
	}
	if (res.text_len != len || memcmp(res.text, text, len))
		fail_msg("'%s' (KV %s): herdd gave \"%.*s\", plain greedy \"%.*s\"", prompt,
			 kern_type_name(kv), (int)res.text_len, res.text, (int)len, text);
	if (kv != KERN_TYPE_F16)
		free(plain.text);
	herd_result_free(&res);
}

/* herdd (draft_tokens at its default) with KV type kv: greedy requests
 * answered byte for byte as plain greedy decoding gives them, drafts
 * accepted on the way. */
static void broker_identical(kern_type kv)
{
	h_world *w = h_world_create("spec");
	char cfg[200];
	snprintf(cfg, sizeof(cfg), "%s/herd.json", w->dir);
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f, "{\"kv_type\": \"%s\"}\n", kv == KERN_TYPE_Q8_0 ? "q8_0" : "f16");
	fclose(f);
	h_broker_start_cfg(w, "4", cfg);
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = w->sock;
	herd_client *c;
	if (herd_connect(&c, &o))
		fail_msg("connect: %s", herd_client_errmsg(c));
	const char *prompts[] = {"The quick brown fox", "hello hello hello hello", "Once upon a time"};
	for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]); i++)
		broker_case(w, c, prompts[i], kv);
	json_object *m = h_ctl_model(w);
	const double drafted = h_num(m, "tokens_drafted"), accepted = h_num(m, "tokens_accepted");
	print_message("herdd (KV %s): drafted %.0f, accepted %.0f\n", kern_type_name(kv), drafted, accepted);
	assert_true(accepted > 0 && accepted <= drafted);
	assert_string_equal(h_str(m, "kv_type"), kern_type_name(kv));
	json_object_put(m);
	herd_close(c);
	h_broker_stop(w);
	h_world_destroy(w);
}

static void test_broker_identical(void **state)
{
	(void)state;
	broker_identical(KERN_TYPE_F16);
	broker_identical(KERN_TYPE_Q8_0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_draft_lookup),
		cmocka_unit_test(test_adaptive_length),
		cmocka_unit_test(test_paying),
		cmocka_unit_test(test_identical_to_greedy),
		cmocka_unit_test(test_broker_identical),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
