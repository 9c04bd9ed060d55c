/* herd run: generate text from a prompt (or a one-turn chat) with the one
 * generation step every path shares (model/generate.h). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "model/generate.h"
#include "model/spec.h"
#include "common/clock.h"

#define RUN_DEFAULT_N_GEN 64       /* -n */
#define RUN_MAX_N_GEN (1L << 20)
#define RUN_MAX_THREADS 4096L
#define RUN_MAX_CTX (1L << 20)
#define RUN_MAX_TOP_K (1L << 24)
#define RUN_MAX_STOP 64            /* --stop, as many as the wire allows */
#define RUN_DEFAULT_DRAFT 8        /* --draft: greedy runs draft from the prompt */

typedef struct run_opts {
	const char *model, *prompt, *system, *tokens; /* tokens: --prompt-tokens FILE */
	long n_gen, threads, n_ctx, top_k;
	int chat;
	int kv_type;
	long draft;
	float temp, top_p, min_p, repeat_penalty;
	uint64_t seed;
	gen_str stop[RUN_MAX_STOP];
	size_t n_stop;
} run_opts;

typedef enum run_opt_kind {
	RUN_OPT_STR,   /* const char * */
	RUN_OPT_LONG,  /* long in [lo, hi] */
	RUN_OPT_FLOAT, /* float */
	RUN_OPT_U64,   /* uint64_t */
	RUN_OPT_FLAG,  /* int set to 1, no value */
	RUN_OPT_STOP,  /* appended to stop[] */
	RUN_OPT_KV,    /* int kern_type of a KV cache type name */
} run_opt_kind;

typedef struct run_opt {
	const char *name, *alias;
	run_opt_kind kind;
	size_t off; /* field of run_opts */
	long lo, hi;
} run_opt;

static const run_opt run_opt_table[] = {
	{.name = "-m", .kind = RUN_OPT_STR, .off = offsetof(run_opts, model)},
	{.name = "-p", .kind = RUN_OPT_STR, .off = offsetof(run_opts, prompt)},
	{.name = "--system", .kind = RUN_OPT_STR, .off = offsetof(run_opts, system)},
	{.name = "--prompt-tokens", .kind = RUN_OPT_STR, .off = offsetof(run_opts, tokens)},
	{.name = "-n", .kind = RUN_OPT_LONG, .off = offsetof(run_opts, n_gen), .hi = RUN_MAX_N_GEN},
	{.name = "-t", .alias = "--threads", .kind = RUN_OPT_LONG,
	 .off = offsetof(run_opts, threads), .hi = RUN_MAX_THREADS},
	{.name = "--ctx", .kind = RUN_OPT_LONG, .off = offsetof(run_opts, n_ctx), .lo = 1,
	 .hi = RUN_MAX_CTX},
	{.name = "--temp", .kind = RUN_OPT_FLOAT, .off = offsetof(run_opts, temp)},
	{.name = "--top-k", .kind = RUN_OPT_LONG, .off = offsetof(run_opts, top_k),
	 .hi = RUN_MAX_TOP_K},
	{.name = "--top-p", .kind = RUN_OPT_FLOAT, .off = offsetof(run_opts, top_p)},
	{.name = "--min-p", .kind = RUN_OPT_FLOAT, .off = offsetof(run_opts, min_p)},
	{.name = "--repeat-penalty", .kind = RUN_OPT_FLOAT, .off = offsetof(run_opts, repeat_penalty)},
	{.name = "--seed", .kind = RUN_OPT_U64, .off = offsetof(run_opts, seed)},
	{.name = "--chat", .kind = RUN_OPT_FLAG, .off = offsetof(run_opts, chat)},
	{.name = "--stop", .kind = RUN_OPT_STOP},
	{.name = "--kv-type", .kind = RUN_OPT_KV, .off = offsetof(run_opts, kv_type)},
	{.name = "--draft", .kind = RUN_OPT_LONG, .off = offsetof(run_opts, draft), .hi = SPEC_MAX_DRAFT},
};

static void run_usage(void)
{
	fprintf(stderr,
		"usage: herd run -m MODEL (-p TEXT | --prompt-tokens FILE) [-n N] [-t THREADS] [--temp T] [--seed S]\n"
		"                [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
		"                [--chat] [--system TEXT] [--ctx N] [--stop TEXT]...\n"
		"                [--kv-type f16|q8_0|q4_0] [--draft N (greedy only; 0 off)]\n");
}

/* Stores the value of option d (next, NULL when absent) into o. Returns 0,
 * or 2 after printing why. */
static int run_opt_set(const run_opt *d, const char *next, run_opts *o)
{
	char *field = (char *)o + d->off;
	double f;
	int ok;
	switch (d->kind) {
	case RUN_OPT_STR: *(const char **)field = next; return 0;
	case RUN_OPT_LONG: return cli_int(d->name, next, d->lo, d->hi, (long *)field) ? 2 : 0;
	case RUN_OPT_FLOAT:
		if (cli_float(d->name, next, &f))
			return 2;
		*(float *)field = (float)f;
		return 0;
	case RUN_OPT_U64:
		*(uint64_t *)field = cli_u64_or(next, &ok);
		if (ok)
			return 0;
		fprintf(stderr, "herd: %s expects a non-negative integer, got '%s'\n", d->name,
			next ? next : "(nothing)");
		return 2;
	case RUN_OPT_FLAG: *(int *)field = 1; return 0;
	case RUN_OPT_KV: return cli_kv_type(d->name, next, (int *)field) ? 2 : 0;
	case RUN_OPT_STOP:
		if (o->n_stop == RUN_MAX_STOP) {
			fprintf(stderr, "herd run: at most %d --stop strings\n", RUN_MAX_STOP);
			return 2;
		}
		o->stop[o->n_stop++] = (gen_str){next, strlen(next)};
		return 0;
	}
	return 2;
}

/* Parses argv into o (llama.cpp's sampling defaults, RUN_DEFAULT_N_GEN).
 * Returns 0, or 2 after printing the problem and the usage. */
static int run_parse(int argc, char **argv, run_opts *o)
{
	const sampler_params sp = sampler_params_default();
	*o = (run_opts){.n_gen = RUN_DEFAULT_N_GEN, .top_k = sp.top_k, .temp = sp.temperature,
			.top_p = sp.top_p, .min_p = sp.min_p, .repeat_penalty = sp.repeat_penalty,
			.seed = sp.seed, .draft = RUN_DEFAULT_DRAFT};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		const run_opt *d = NULL;
		for (size_t k = 0; k < sizeof(run_opt_table) / sizeof(run_opt_table[0]); k++)
			if (!strcmp(a, run_opt_table[k].name) ||
			    (run_opt_table[k].alias && !strcmp(a, run_opt_table[k].alias)))
				d = &run_opt_table[k];
		const int string_arg = d && (d->kind == RUN_OPT_STR || d->kind == RUN_OPT_STOP ||
					     d->kind == RUN_OPT_KV);
		if (!d || (string_arg && !next)) {
			fprintf(stderr, "herd run: unknown or incomplete option '%s'\n", a);
			run_usage();
			return 2;
		}
		if (run_opt_set(d, next, o))
			return 2;
		i += d->kind != RUN_OPT_FLAG;
	}
	if (!o->model || !o->prompt == !o->tokens || (o->tokens && o->chat)) {
		fprintf(stderr, "herd run: %s\n",
			!o->model ? "-m MODEL is required"
				  : o->tokens && o->chat ? "--chat takes -p TEXT, not --prompt-tokens"
							 : "one of -p TEXT and --prompt-tokens FILE is required");
		run_usage();
		return 2;
	}
	return 0;
}

/* The request o describes: the prompt, or a chat of an optional system
 * message and the prompt as the user's (msgs holds those). */
static void run_request(const run_opts *o, gen_msg msgs[2], gen_request *g)
{
	gen_request_init(g);
	if (o->chat) {
		size_t n = 0;
		if (o->system)
			msgs[n++] = (gen_msg){{"system", strlen("system")}, {o->system, strlen(o->system)}};
		msgs[n++] = (gen_msg){{"user", strlen("user")}, {o->prompt, strlen(o->prompt)}};
		g->input = GEN_INPUT_MESSAGES;
		g->messages = msgs;
		g->n_messages = n;
	} else if (o->prompt) {
		g->input = GEN_INPUT_PROMPT;
		g->prompt = (gen_str){o->prompt, strlen(o->prompt)};
	}
	g->params.max_tokens = (int32_t)o->n_gen;
	g->params.sampling = sampler_params_default();
	g->params.sampling.temperature = o->temp;
	g->params.sampling.top_k = (int32_t)o->top_k;
	g->params.sampling.top_p = o->top_p;
	g->params.sampling.min_p = o->min_p;
	g->params.sampling.repeat_penalty = o->repeat_penalty;
	g->params.sampling.seed = o->seed;
	g->params.stop = o->stop;
	g->params.n_stop = o->n_stop;
}

static int run_piece(void *arg, const gen_step *st)
{
	(void)arg;
	fwrite(st->piece, 1, st->len, stdout);
	fflush(stdout);
	return 0;
}

/* Evaluates the prompt, then steps (drafting from the prompt when greedy,
 * model/spec.h) and prints each piece as it may be shown; the summary line
 * goes to stderr. Returns 0 or 1 after printing the error. */
static int run_generate(llama_ctx *c, gen_seq *g, spec_ctl *sc, float *logits)
{
	llama_seq seq;
	llama_seq_init(&seq);
	const double t0 = clock_mono_s();
	int rc = llama_eval(c, &seq, g->prompt, g->n_prompt, 0, logits);
	const double t1 = clock_mono_s();
	if (!rc)
		rc = spec_run(c, &seq, g, sc, logits, run_piece, NULL);
	const double t2 = clock_mono_s();
	llama_seq_reset(c, &seq);
	fputc('\n', stdout);
	if (rc) {
		fprintf(stderr, "herd run: evaluation failed: %s\n", herd_strerror(rc));
		return 1;
	}
	const int n = g->n_prompt, gen = g->n_gen;
	fprintf(stderr, "herd: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s), %d threads, %s kernels, finish %s\n",
		n, t1 - t0, n / (t1 - t0), gen, t2 - t1, gen > 1 ? (gen - 1) / (t2 - t1) : 0.0,
		llama_ctx_n_threads(c), kern_isa_name(llama_ctx_isa(c)), herd_finish_name(g->finish));
	if (sc->drafts)
		fprintf(stderr, "herd: drafts %llu, %llu tokens drafted, %llu accepted (%.0f%%)\n",
			(unsigned long long)sc->drafts, (unsigned long long)sc->drafted,
			(unsigned long long)sc->accepted, 100.0 * (double)sc->accepted / (double)sc->drafted);
	return 0;
}

int cmd_run(int argc, char **argv)
{
	run_opts o;
	gen_msg msgs[2];
	gen_request g;
	gen_seq gs = {0};
	spec_ctl sc = {0};
	llama_model *m = NULL;
	llama_ctx *c = NULL;
	float *logits = NULL;
	char err[256];
	int rc = run_parse(argc, argv, &o);
	if (rc)
		return rc;
	if (cli_load(o.model, (int)o.threads, (int)o.n_ctx, o.kv_type, &m, &c))
		return 1;
	run_request(&o, msgs, &g);
	int32_t *ids = NULL;
	int n_ids = 0;
	rc = 1;
	if (o.tokens) {
		if (cli_read_tokens("herd run", o.tokens, llama_ctx_n_ctx(c), m->hp.n_vocab, &ids, &n_ids))
			goto out;
		g.input = GEN_INPUT_TOKENS;
		g.tokens = ids;
		g.n_tokens = (size_t)n_ids;
	}
	const gen_bounds b = {.n_ctx = llama_ctx_n_ctx(c), .t_start = clock_mono_ms()};
	if (gen_seq_begin(&gs, m, &b, &g, err, sizeof(err))) {
		fprintf(stderr, "herd run: %s\n", err);
		goto out;
	}
	const int draft = o.temp <= 0 ? (int)o.draft : 0; /* exact only for greedy */
	logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab * (size_t)(1 + draft));
	if (!logits || spec_init(&sc, draft, gs.prompt, gs.n_prompt, gs.n_prompt + gs.max_gen + 1)) {
		fprintf(stderr, "herd run: out of memory\n");
		goto out;
	}
	rc = run_generate(c, &gs, &sc, logits);
out:
	free(ids);
	spec_fini(&sc);
	free(logits);
	gen_seq_end(&gs);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
