/* The one generation step (model/generate.h) and the three paths that use
 * it.
 *
 * Unit tests drive gen_seq with forced logits (one token at +0, the rest far
 * below: greedy picks it), so every rule is checked on chosen tokens: the
 * prompt-fit rule, the out-of-vocabulary and empty-prompt errors, max_tokens
 * 0 and the caller's cap, stop strings that span tokens, UTF-8 characters
 * split over byte tokens, every finish reason, gen_request_dup.
 *
 * The acceptance test runs the same requests through the three generation
 * paths on the mini model: the broker (a real herdd; herd_generate and
 * herd_generate_stream), libherd's local generation on the attached image
 * (herd_local_generate) and `herd run` (the binary). Text (bytes), finish
 * reason and n_gen must be identical, and streamed pieces must add up to
 * the text. The requests cover greedy and seeded sampling, a chat, stop
 * strings, a UTF-8 character spread over byte-fallback tokens (searched for
 * among seeds, and asserted found), an end-of-sequence stop (searched for
 * likewise) and length; deadline and cancel (the two libherd paths; `herd
 * run` has neither) must end with that reason and a prefix of the full
 * text. Exits 77 when herdd or herdctl is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "herd/herd.h"
#include "model/generate.h"

#define TEXT_MAX 16384
#define SEARCH_SEEDS 400     /* seeds tried for the UTF-8 and EOS cases */
#define SEARCH_TOKENS 300    /* tokens per searched request (fits every context) */
#define LONG_TOKENS 300      /* a greedy request that deadline/cancel interrupt */
#define CANCEL_AFTER 3       /* pieces before a callback cancels */
#define LONG_MIN_TOKENS 50   /* the long request's greedy run is at least this long */
#define FAR_BELOW (-1e30f)   /* the logit of every token but the forced one */

/* ---- unit tests on forced logits ------------------------------------------ */

typedef struct unit_fx {
	char dir[64], path[128];
	llama_model *m;
	float *logits;
	int n_vocab;
} unit_fx;

static int unit_setup(void **state)
{
	unit_fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/herd-gen-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/mini.gguf", f->dir);
	char err[512] = "";
	mkmodel_opts mo = {.shape = "mini", .ftype = "F32", .out_path = f->path, .seed = 7,
			   .n_threads = 2};
	if (mkmodel_write(&mo, err, sizeof(err)))
		fail_msg("mkmodel_write: %s", err);
	if (llama_model_load(&f->m, f->path, err, sizeof(err)))
		fail_msg("llama_model_load: %s", err);
	f->n_vocab = f->m->hp.n_vocab;
	f->logits = malloc(sizeof(float) * (size_t)f->n_vocab);
	assert_non_null(f->logits);
	*state = f;
	return 0;
}

static int unit_teardown(void **state)
{
	unit_fx *f = *state;
	free(f->logits);
	llama_model_destroy(f->m);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* A greedy token-prompt request over ids[n]. */
static gen_request tok_request(const int32_t *ids, size_t n, int max_tokens)
{
	gen_request g;
	gen_request_init(&g);
	g.input = GEN_INPUT_TOKENS;
	g.tokens = ids;
	g.n_tokens = n;
	g.params.max_tokens = max_tokens;
	return g;
}

/* One step with tok forced; accumulates the pieces into acc[*acc_len]. */
static gen_step force_step(unit_fx *f, gen_seq *s, int32_t tok, double now, char *acc,
			   size_t *acc_len)
{
	for (int i = 0; i < f->n_vocab; i++)
		f->logits[i] = FAR_BELOW;
	f->logits[tok] = 0;
	gen_step st;
	assert_int_equal(gen_seq_next(s, f->logits, now, &st), 0);
	if (acc) {
		memcpy(acc + *acc_len, st.piece, st.len);
		*acc_len += st.len;
	}
	return st;
}

/* The byte-fallback token of byte b ("<0xC3>"). */
static int32_t byte_token(const unit_fx *f, unsigned b)
{
	char name[8];
	snprintf(name, sizeof(name), "<0x%02X>", b);
	int32_t id = tok_find(f->m->vocab, name, strlen(name));
	assert_true(id >= 0);
	return id;
}

/* The n-th token (n >= 0) whose piece is two or more lower-case letters. */
static int32_t word_token(const unit_fx *f, int n, char *piece, size_t cap)
{
	for (int32_t id = 0; id < f->n_vocab; id++) {
		int k = tok_piece(f->m->vocab, id, piece, cap - 1);
		int ok = k >= 2;
		for (int i = 0; ok && i < k; i++)
			ok = piece[i] >= 'a' && piece[i] <= 'z';
		if (ok && n-- == 0) {
			piece[k] = 0;
			return id;
		}
	}
	fail_msg("no word tokens in the vocabulary");
	return -1;
}

static void test_prompt_fit(void **state)
{
	unit_fx *f = *state;
	int32_t ids[20];
	char err[256];
	gen_seq s;
	for (int i = 0; i < 20; i++)
		ids[i] = 300 + i;
	gen_bounds b = {.n_ctx = 16};
	gen_request g = tok_request(ids, 16, 128);
	/* a prompt as long as the context fits, with room for one token */
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), 0);
	assert_int_equal(s.n_prompt, 16);
	assert_int_equal(s.max_gen, 1);
	gen_seq_end(&s);
	g.n_tokens = 15;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), 0);
	assert_int_equal(s.max_gen, 2);
	gen_seq_end(&s);
	g.n_tokens = 17;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_NOSPACE);
	assert_non_null(strstr(err, "17"));
	gen_seq_end(&s); /* harmless after a failure */
	/* text: tokenized into n_ctx ids, refused with its real length */
	char text[400] = "";
	for (int i = 0; i < 40; i++)
		strcat(text, "the cat "); /* 320 bytes, far more than 16 tokens */
	g.input = GEN_INPUT_PROMPT;
	g.prompt = (gen_str){text, strlen(text)};
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_NOSPACE);
	assert_non_null(strstr(err, "longer than the context (16)"));
	/* the caller's cap and max_tokens 0 */
	g = tok_request(ids, 4, 128);
	b.max_tokens = 3;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), 0);
	assert_int_equal(s.max_gen, 3);
	gen_seq_end(&s);
	g.params.max_tokens = 0;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), 0);
	gen_step st = force_step(f, &s, 400, 0, NULL, NULL);
	assert_int_equal(st.finish, HERD_FINISH_LENGTH);
	assert_int_equal(st.token, -1);
	assert_int_equal(st.len, 0);
	assert_int_equal(s.n_gen, 0);
	gen_seq_end(&s);
}

static void test_request_errors(void **state)
{
	unit_fx *f = *state;
	char err[256];
	gen_seq s;
	const gen_bounds b = {.n_ctx = 64};
	int32_t bad[2] = {1, (int32_t)f->n_vocab};
	gen_request g = tok_request(bad, 2, 8);
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_RANGE);
	char want[32];
	snprintf(want, sizeof(want), "token %d", f->n_vocab);
	assert_non_null(strstr(err, want));
	bad[1] = -1;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_RANGE);
	g.n_tokens = 0;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "empty prompt"));
	g.input = GEN_INPUT_NONE;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_INVAL);
	g = tok_request(bad, 1, 8);
	g.params.sampling.repeat_penalty = 0;
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, err, sizeof(err)), HERD_E_INVAL);
	assert_non_null(strstr(err, "sampling"));
	gen_seq_end(&s);
}

/* A stop string made of the last letter of one token and the first of the
 * next: the first token's last letter is held back, the second ends the
 * sequence with the text cut before the stop string. */
static void test_stop_across_tokens(void **state)
{
	unit_fx *f = *state;
	char pa[64], pb[64], stop[3], acc[256], full[160];
	size_t acc_len = 0;
	const int32_t a = word_token(f, 10, pa, sizeof(pa)), bt = word_token(f, 11, pb, sizeof(pb));
	stop[0] = pa[strlen(pa) - 1];
	stop[1] = pb[0];
	stop[2] = 0;
	snprintf(full, sizeof(full), "%s%s", pa, pb);
	const size_t cut = (size_t)((char *)memmem(full, strlen(full), stop, 2) - full);
	int32_t ids[1] = {1};
	gen_request g = tok_request(ids, 1, 8);
	const gen_str stops[2] = {{"zzzzqq", 6}, {stop, 2}};
	g.params.stop = stops;
	g.params.n_stop = 2;
	gen_seq s;
	const gen_bounds b = {.n_ctx = 64};
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, NULL, 0), 0);
	gen_step st = force_step(f, &s, a, 0, acc, &acc_len);
	assert_int_equal(st.finish, HERD_FINISH_NONE);
	assert_true(st.is_text);
	assert_true(acc_len <= strlen(pa) - 1); /* its last letter may begin the stop string */
	st = force_step(f, &s, bt, 0, acc, &acc_len);
	assert_int_equal(st.finish, HERD_FINISH_STOP);
	assert_int_equal(s.len, cut);
	assert_memory_equal(s.text, full, cut);
	assert_int_equal(acc_len, cut); /* the pieces add up to the text */
	assert_memory_equal(acc, full, cut);
	assert_int_equal(s.n_gen, 2);
	gen_seq_end(&s);
}

/* "é" (C3 A9) and "€" (E2 82 AC) over byte tokens: nothing is streamed
 * until the character is complete; a sequence that ends inside one
 * releases the partial bytes. */
static void test_utf8_holdback(void **state)
{
	unit_fx *f = *state;
	char acc[64];
	size_t acc_len = 0;
	int32_t ids[1] = {1};
	gen_request g = tok_request(ids, 1, 6);
	gen_seq s;
	const gen_bounds b = {.n_ctx = 64};
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, NULL, 0), 0);
	const unsigned bytes[6] = {0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xC3};
	const size_t after[6] = {0, 2, 2, 2, 5, 6};
	for (int i = 0; i < 6; i++) {
		gen_step st = force_step(f, &s, byte_token(f, bytes[i]), 0, acc, &acc_len);
		assert_true(st.is_text);
		assert_int_equal(st.finish, i < 5 ? HERD_FINISH_NONE : HERD_FINISH_LENGTH);
		assert_int_equal(acc_len, after[i]);
	}
	assert_memory_equal(acc, "\xC3\xA9\xE2\x82\xAC\xC3", 6);
	assert_int_equal(s.len, 6);
	assert_int_equal(s.n_gen, 6);
	gen_seq_end(&s);
}

/* STOP by end-of-sequence (releasing held text), DEADLINE, CANCEL. */
static void test_finish_reasons(void **state)
{
	unit_fx *f = *state;
	char acc[64];
	size_t acc_len = 0;
	int32_t ids[1] = {1};
	gen_request g = tok_request(ids, 1, 8);
	g.params.deadline_ms = 5;
	gen_seq s;
	const gen_bounds b = {.n_ctx = 64, .t_start = 1000};
	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, NULL, 0), 0);
	assert_false(gen_seq_expired(&s, 1004.9));
	assert_true(gen_seq_expired(&s, 1005));
	gen_step st = force_step(f, &s, byte_token(f, 0xC3), 1001, acc, &acc_len);
	assert_int_equal(acc_len, 0);
	st = force_step(f, &s, tok_eos(f->m->vocab), 1002, acc, &acc_len);
	assert_int_equal(st.finish, HERD_FINISH_STOP);
	assert_false(st.is_text);
	assert_int_equal(st.token, tok_eos(f->m->vocab));
	assert_int_equal(acc_len, 1); /* the held byte is released */
	assert_int_equal(s.n_gen, 1); /* the end-of-sequence token is not counted */
	st = force_step(f, &s, 400, 1003, NULL, NULL); /* after the end: same finish */
	assert_int_equal(st.finish, HERD_FINISH_STOP);
	assert_int_equal(st.len, 0);
	gen_seq_end(&s);

	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, NULL, 0), 0);
	acc_len = 0;
	force_step(f, &s, byte_token(f, 0xE2), 1001, acc, &acc_len);
	st = force_step(f, &s, 400, 1005, acc, &acc_len);
	assert_int_equal(st.finish, HERD_FINISH_DEADLINE);
	assert_int_equal(st.token, -1); /* nothing sampled past the deadline */
	assert_int_equal(acc_len, 1);
	gen_seq_end(&s);

	assert_int_equal(gen_seq_begin(&s, f->m, &b, &g, NULL, 0), 0);
	force_step(f, &s, byte_token(f, 0xE2), 1001, NULL, NULL);
	gen_seq_stop(&s, HERD_FINISH_CANCEL, &st);
	assert_int_equal(st.finish, HERD_FINISH_CANCEL);
	assert_int_equal(st.len, 1);
	assert_int_equal(st.token, byte_token(f, 0xE2));
	gen_seq_stop(&s, HERD_FINISH_DEADLINE, &st); /* already ended: no effect */
	assert_int_equal(st.finish, HERD_FINISH_CANCEL);
	assert_int_equal(st.len, 0);
	size_t n;
	char *t = gen_seq_take_text(&s, &n);
	assert_int_equal(n, 1);
	free(t);
	gen_seq_end(&s);
}

static void test_request_dup(void **state)
{
	(void)state;
	char prompt[] = "hello", stop0[] = "END";
	const int32_t toks[3] = {1, 2, 3};
	gen_msg msgs[1] = {{{"user", 4}, {"hi there", 5}}}; /* a view without its NUL */
	gen_str stops[1] = {{stop0, 3}};
	gen_request g, *c = NULL;
	gen_request_init(&g);
	assert_int_equal(g.params.max_tokens, GEN_DEFAULT_MAX_TOKENS);
	assert_true(g.cache && g.params.sampling.temperature == 0 && g.params.sampling.top_p == 1);
	g.model = (gen_str){"tiny", 4};
	g.prompt = (gen_str){prompt, 5};
	g.tokens = toks;
	g.n_tokens = 3;
	g.messages = msgs;
	g.n_messages = 1;
	g.params.stop = stops;
	g.params.n_stop = 1;
	assert_int_equal(gen_request_dup(&c, &g), 0);
	prompt[0] = stop0[0] = 'X'; /* the copy does not share the caller's bytes */
	assert_string_equal(c->prompt.ptr, "hello");
	assert_string_equal(c->params.stop[0].ptr, "END");
	assert_string_equal(c->messages[0].content.ptr, "hi th");
	assert_string_equal(c->model.ptr, "tiny");
	assert_memory_equal(c->tokens, toks, sizeof(toks));
	assert_true(c->tokens != toks);
	gen_request_free(c);
	g.prompt = (gen_str){NULL, 3};
	assert_int_equal(gen_request_dup(&c, &g), HERD_E_INVAL);
	assert_null(c);
	gen_request_free(NULL);
}

/* ---- the three paths ----------------------------------------------------------- */

typedef struct gcase {
	const char *what;
	const char *prompt;
	int chat;
	int max_tokens;
	float temp, top_p, min_p, rep;
	int top_k;
	uint64_t seed;
	const char *stop[2];
	size_t n_stop;
	uint32_t deadline_ms;
} gcase;

typedef struct path_out {
	char text[TEXT_MAX];
	size_t len;
	char streamed[TEXT_MAX]; /* the callback's pieces, concatenated */
	size_t slen;
	int n_cb, cancel_after;
	int32_t toks[TEXT_MAX / 4]; /* the callback's token per call */
	size_t plen[TEXT_MAX / 4];  /* and its piece's length */
	herd_finish reason;
	uint32_t n_gen;
} path_out;

typedef struct paths_fx {
	h_world *w;
	herd_client *c;
	herd_local_model *lm;
} paths_fx;

static int paths_setup(void **state)
{
	paths_fx *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->w = h_world_create("gen");
	h_broker_start(p->w, "4");
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = p->w->sock;
	if (herd_connect(&p->c, &o))
		fail_msg("connect: %s", herd_client_errmsg(p->c));
	if (herd_model_attach(p->c, p->w->model_name, &p->lm))
		fail_msg("attach: %s", herd_client_errmsg(p->c));
	*state = p;
	return 0;
}

static int paths_teardown(void **state)
{
	paths_fx *p = *state;
	herd_local_detach(p->lm);
	herd_close(p->c);
	h_broker_stop(p->w);
	h_world_destroy(p->w);
	free(p);
	return 0;
}

static void case_request(const paths_fx *p, const gcase *k, herd_request *r, herd_message *msg)
{
	herd_request_init(r);
	r->model = p->w->model_name;
	if (k->chat) {
		*msg = (herd_message){"user", k->prompt};
		r->messages = msg;
		r->n_messages = 1;
	} else {
		r->prompt = k->prompt;
	}
	r->max_tokens = k->max_tokens;
	r->temperature = k->temp;
	r->top_k = k->top_k;
	r->top_p = k->top_p;
	r->min_p = k->min_p;
	r->repeat_penalty = k->rep;
	r->seed = k->seed;
	r->stop = k->stop;
	r->n_stop = k->n_stop;
	r->deadline_ms = k->deadline_ms;
}

static int on_piece(void *user, const char *text, size_t len, int32_t token)
{
	path_out *o = user;
	assert_true(o->slen + len < TEXT_MAX);
	memcpy(o->streamed + o->slen, text, len);
	o->slen += len;
	if ((size_t)o->n_cb < TEXT_MAX / 4) {
		o->toks[o->n_cb] = token;
		o->plen[o->n_cb] = len;
	}
	o->n_cb++;
	return o->cancel_after && o->n_cb >= o->cancel_after;
}

static void keep_result(path_out *o, const herd_result *res)
{
	assert_true(res->text_len < TEXT_MAX);
	memcpy(o->text, res->text, res->text_len);
	o->len = res->text_len;
	o->reason = res->reason;
	o->n_gen = res->n_gen;
}

/* path: 0 herd_generate, 1 herd_generate_stream, 2 herd_local_generate. */
static void run_lib(paths_fx *p, const gcase *k, int path, int cancel_after, path_out *o)
{
	herd_request r;
	herd_message msg;
	herd_result res;
	memset(o, 0, sizeof(*o));
	o->cancel_after = cancel_after;
	case_request(p, k, &r, &msg);
	int rc = path == 0   ? herd_generate(p->c, &r, &res)
		 : path == 1 ? herd_generate_stream(p->c, &r, on_piece, o, &res)
			     : herd_local_generate(p->lm, &r, on_piece, o, &res);
	if (rc)
		fail_msg("%s, path %d: %s", k->what, path,
			 path == 2 ? herd_local_errmsg(p->lm) : herd_client_errmsg(p->c));
	keep_result(o, &res);
	herd_result_free(&res);
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = 0;
	return n;
}

/* `herd run` with the case's request: stdout is the text and a newline,
 * the stderr summary gives n_gen and the finish reason. */
static void run_cli(paths_fx *p, const gcase *k, path_out *o)
{
	char n[16], temp[32], top_k[16], top_p[32], min_p[32], rep[32], seed[32];
	char out_path[200], err_path[200], err[4096];
	snprintf(n, sizeof(n), "%d", k->max_tokens);
	snprintf(temp, sizeof(temp), "%.9g", k->temp);
	snprintf(top_k, sizeof(top_k), "%d", k->top_k);
	snprintf(top_p, sizeof(top_p), "%.9g", k->top_p);
	snprintf(min_p, sizeof(min_p), "%.9g", k->min_p);
	snprintf(rep, sizeof(rep), "%.9g", k->rep);
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)k->seed);
	char *argv[40] = {p->w->herd, "run", "-m", p->w->model_path, "-p", (char *)k->prompt,
			  "-n", n, "-t", "1", "--temp", temp, "--top-k", top_k, "--top-p", top_p,
			  "--min-p", min_p, "--repeat-penalty", rep, "--seed", seed};
	int a = 22;
	for (size_t i = 0; i < k->n_stop; i++) {
		argv[a++] = "--stop";
		argv[a++] = (char *)k->stop[i];
	}
	if (k->chat)
		argv[a++] = "--chat";
	snprintf(out_path, sizeof(out_path), "%s/run.out", p->w->dir);
	snprintf(err_path, sizeof(err_path), "%s/run.err", p->w->dir);
	unlink(err_path);
	int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	pid_t pid = h_spawn(p->w, argv, fd, err_path, NULL, 0, NULL);
	close(fd);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	h_untrack(p->w, pid);
	memset(o, 0, sizeof(*o));
	o->len = slurp(out_path, o->text, sizeof(o->text));
	slurp(err_path, err, sizeof(err));
	unlink(out_path);
	unlink(err_path);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || o->len == 0)
		fail_msg("%s: herd run failed (status %d): %s", k->what, st, err);
	o->text[--o->len] = 0; /* the newline herd run ends with */
	const char *g = strstr(err, "generated "), *fin = strstr(err, "finish ");
	assert_true(g && fin);
	o->n_gen = (uint32_t)atoi(g + strlen("generated "));
	char name[16] = "";
	sscanf(fin + strlen("finish "), "%15s", name);
	for (int r = 0; r < HERD_FINISH_COUNT; r++)
		if (!strcmp(name, herd_finish_name((herd_finish)r)))
			o->reason = (herd_finish)r;
}

static void same(const gcase *k, const char *path, const path_out *ref, const path_out *o)
{
	if (o->len != ref->len || memcmp(o->text, ref->text, o->len) || o->reason != ref->reason ||
	    o->n_gen != ref->n_gen)
		fail_msg("%s: %s differs: \"%.*s\" (%s, %u) vs herd_generate's \"%.*s\" (%s, %u)",
			 k->what, path, (int)o->len, o->text, herd_finish_name(o->reason), o->n_gen,
			 (int)ref->len, ref->text, herd_finish_name(ref->reason), ref->n_gen);
}

/* Runs k on all three paths (four calls) and asserts they agree. Returns
 * the reference (herd_generate's) result in *ref and the local one in
 * *local (its callback record). */
static void all_paths(paths_fx *p, const gcase *k, path_out *ref, path_out *local)
{
	static path_out o;
	run_lib(p, k, 0, 0, ref);
	run_lib(p, k, 1, 0, &o);
	same(k, "herd_generate_stream", ref, &o);
	assert_int_equal(o.slen, o.len); /* the streamed pieces are the text */
	assert_memory_equal(o.streamed, o.text, o.len);
	run_lib(p, k, 2, 0, local);
	same(k, "herd_local_generate", ref, local);
	assert_int_equal(local->slen, local->len);
	assert_memory_equal(local->streamed, local->text, local->len);
	run_cli(p, k, &o);
	same(k, "herd run", ref, &o);
	print_message("%-28s %-8s n_gen %3u  \"%.60s\"\n", k->what, herd_finish_name(ref->reason),
		      ref->n_gen, ref->text);
}

/* 1 when the callback record shows a multi-byte character spread over
 * byte-fallback tokens: a lead byte's token streamed nothing, and the
 * bytes of the whole character follow in single-byte tokens. */
static int utf8_split(const paths_fx *p, const path_out *o)
{
	const tok_vocab *v = p->w->ref_model->vocab;
	const int n = o->n_cb < TEXT_MAX / 4 ? o->n_cb : TEXT_MAX / 4;
	for (int i = 0; i < n; i++) {
		unsigned char b[8];
		if (o->plen[i] != 0 || tok_piece(v, o->toks[i], (char *)b, sizeof(b)) != 1 ||
		    b[0] < 0xC2 || b[0] > 0xF4)
			continue;
		const int need = b[0] >= 0xF0 ? 3 : b[0] >= 0xE0 ? 2 : 1;
		int k = 0;
		for (; k < need && i + 1 + k < n; k++)
			if (tok_piece(v, o->toks[i + 1 + k], (char *)b, sizeof(b)) != 1 ||
			    (b[0] & 0xC0) != 0x80)
				break;
		if (k == need)
			return 1;
	}
	return 0;
}

/* Seeds, sampled with every stage off but temperature, until local
 * generation shows a UTF-8 split (*utf8) and an end-of-sequence stop
 * (*eos). */
static void search_cases(paths_fx *p, gcase *utf8, gcase *eos)
{
	static path_out o;
	const gcase base = {.what = "search", .prompt = "Once upon a time", .max_tokens = SEARCH_TOKENS,
			    .temp = 1.5f, .top_p = 1, .rep = 1};
	int got_utf8 = 0, got_eos = 0;
	for (uint64_t seed = 1; seed <= SEARCH_SEEDS && !(got_utf8 && got_eos); seed++) {
		gcase k = base;
		k.seed = seed;
		run_lib(p, &k, 2, 0, &o);
		if (!got_utf8 && utf8_split(p, &o)) {
			*utf8 = k;
			utf8->what = "UTF-8 over byte tokens";
			got_utf8 = 1;
		}
		if (!got_eos && o.reason == HERD_FINISH_STOP) {
			*eos = k;
			eos->what = "end of sequence";
			got_eos = 1;
		}
	}
	if (!got_utf8 || !got_eos)
		fail_msg("no seed up to %d gave %s", SEARCH_SEEDS,
			 got_utf8 ? "an end-of-sequence stop" : "a UTF-8 character over byte tokens");
}

static void test_three_paths_agree(void **state)
{
	paths_fx *p = *state;
	static path_out ref, local;
	gcase greedy = {.what = "greedy", .prompt = "Once upon a time", .max_tokens = 40,
			.top_p = 1, .rep = 1};
	all_paths(p, &greedy, &ref, &local);
	/* a stop string from the middle of the greedy text, across pieces */
	static char stop[8];
	assert_true(ref.len >= 12);
	memcpy(stop, ref.text + ref.len / 2, 3);
	gcase cut = greedy;
	cut.what = "stop string";
	cut.stop[0] = "never appears \x01";
	cut.stop[1] = stop;
	cut.n_stop = 2;
	all_paths(p, &cut, &ref, &local);
	assert_int_equal(ref.reason, HERD_FINISH_STOP);
	const gcase seeded = {.what = "seeded top-k/top-p/min-p", .prompt = "The quick brown fox",
			      .max_tokens = 48, .temp = 0.9f, .top_k = 40, .top_p = 0.95f,
			      .min_p = 0.05f, .rep = 1.1f, .seed = 1234};
	all_paths(p, &seeded, &ref, &local);
	const gcase chat = {.what = "chat", .prompt = "hello", .chat = 1, .max_tokens = 24,
			    .temp = 0.7f, .top_p = 1, .rep = 1, .seed = 5};
	all_paths(p, &chat, &ref, &local);
	const gcase none = {.what = "max_tokens 0", .prompt = "hi", .max_tokens = 0, .top_p = 1,
			    .rep = 1};
	all_paths(p, &none, &ref, &local);
	assert_int_equal(ref.reason, HERD_FINISH_LENGTH);
	assert_int_equal(ref.n_gen, 0);
	gcase utf8, eos;
	search_cases(p, &utf8, &eos);
	all_paths(p, &utf8, &ref, &local);
	assert_true(utf8_split(p, &local));
	all_paths(p, &eos, &ref, &local);
	assert_int_equal(ref.reason, HERD_FINISH_STOP);
}

/* Deadline and cancel on the libherd paths: that reason, and a prefix of
 * the uninterrupted text. A local cancel after k pieces is exactly the
 * request with max_tokens k. */
static void test_interrupted(void **state)
{
	paths_fx *p = *state;
	static path_out full, o, k3;
	gcase k = {.what = "long", .prompt = "Once upon a time", .max_tokens = LONG_TOKENS,
		   .top_p = 1, .rep = 1};
	run_lib(p, &k, 0, 0, &full);
	print_message("uninterrupted: %s after %u tokens\n", herd_finish_name(full.reason),
		      full.n_gen);
	assert_true(full.n_gen >= LONG_MIN_TOKENS); /* time for a deadline, room to cancel */
	k.deadline_ms = 1;
	for (int path = 0; path < 3; path++) {
		run_lib(p, &k, path, 0, &o);
		assert_int_equal(o.reason, HERD_FINISH_DEADLINE);
		assert_true(o.len <= full.len && !memcmp(o.text, full.text, o.len));
	}
	k.deadline_ms = 0;
	for (int path = 1; path < 3; path++) {
		run_lib(p, &k, path, CANCEL_AFTER, &o);
		assert_int_equal(o.reason, HERD_FINISH_CANCEL);
		assert_true(o.len <= full.len && !memcmp(o.text, full.text, o.len));
		if (path == 2) {
			gcase k3req = k;
			k3req.max_tokens = CANCEL_AFTER;
			run_lib(p, &k3req, 0, 0, &k3);
			assert_int_equal(o.n_gen, CANCEL_AFTER);
			assert_int_equal(o.len, k3.len);
			assert_memory_equal(o.text, k3.text, o.len);
		}
	}
}

int main(void)
{
	const struct CMUnitTest unit[] = {
		cmocka_unit_test(test_prompt_fit),
		cmocka_unit_test(test_request_errors),
		cmocka_unit_test(test_stop_across_tokens),
		cmocka_unit_test(test_utf8_holdback),
		cmocka_unit_test(test_finish_reasons),
		cmocka_unit_test(test_request_dup),
	};
	const struct CMUnitTest paths[] = {
		cmocka_unit_test(test_three_paths_agree),
		cmocka_unit_test(test_interrupted),
	};
	int rc = cmocka_run_group_tests(unit, unit_setup, unit_teardown);
	return rc | cmocka_run_group_tests(paths, paths_setup, paths_teardown);
}
