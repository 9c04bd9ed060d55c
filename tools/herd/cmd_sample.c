/* herd sample: token streams drawn from a model at temperature 1 from its
 * full distribution (no top-k/top-p/min-p), BOS first; an end-of-sequence
 * token is written as BOS (a new story starts, in the same context), as in
 * the fixtures' calib.tokens. Output: int32 LE [n][len]. Deterministic for
 * a seed (model/sampler.h's PRNG). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "model/quality.h"
#include "model/sampler.h"

typedef struct sample_opts {
	const char *model, *out;
	long n, len, threads;
	uint64_t seed;
	double temp;
} sample_opts;

static int sample_args(int argc, char **argv, sample_opts *o)
{
	*o = (sample_opts){.n = 16, .len = 128, .seed = 1, .temp = 1.0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (a[0] != '-' && !o->model) {
			o->model = a;
			continue;
		}
		if (!next) {
			fprintf(stderr, "herd sample: unknown or incomplete option '%s'\n", a);
			return 2;
		}
		i++;
		int ok = 1;
		if (!strcmp(a, "-o"))
			o->out = next;
		else if (!strcmp(a, "-n"))
			ok = !cli_int(a, next, 1, 1 << 20, &o->n);
		else if (!strcmp(a, "--len"))
			ok = !cli_int(a, next, 2, QUALITY_MAX_LEN, &o->len);
		else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
			ok = !cli_int(a, next, 0, 4096, &o->threads);
		else if (!strcmp(a, "--temp"))
			ok = !cli_float(a, next, &o->temp) && o->temp > 0;
		else if (!strcmp(a, "--seed"))
			o->seed = cli_u64_or(next, &ok);
		else {
			fprintf(stderr, "herd sample: unknown option '%s'\n", a);
			return 2;
		}
		if (!ok) {
			fprintf(stderr, "herd sample: bad value '%s' for %s\n", next, a);
			return 2;
		}
	}
	if (!o->model || !o->out) {
		fprintf(stderr, "herd sample: missing %s\n", !o->model ? "MODEL" : "-o FILE");
		return 2;
	}
	return 0;
}

/* One stream of len tokens into t. */
static int sample_stream(llama_ctx *c, sampler *sm, int32_t bos, int32_t eos, int32_t *t, int len,
			 float *logits)
{
	llama_seq seq;
	llama_seq_init(&seq);
	t[0] = bos;
	int rc = 0;
	for (int p = 0; p + 1 < len && !rc; p++) {
		if ((rc = llama_eval(c, &seq, t + p, 1, 0, logits)))
			break;
		int32_t next = sampler_sample(sm, logits);
		sampler_accept(sm, next);
		t[p + 1] = next == eos ? bos : next;
	}
	llama_seq_reset(c, &seq);
	return rc;
}

int cmd_sample(int argc, char **argv)
{
	sample_opts o;
	if (sample_args(argc, argv, &o)) {
		fprintf(stderr, "usage: herd sample MODEL -o FILE [-n STREAMS] [--len L] [--seed S] "
				"[--temp T] [-t THREADS]\n");
		return 2;
	}
	llama_model *m;
	llama_ctx *c;
	if (cli_load(o.model, (int)o.threads, 0, KERN_TYPE_F16, &m, &c))
		return 1;
	int rc = 1;
	sampler *sm = NULL;
	const int V = m->hp.n_vocab;
	int32_t *t = malloc(sizeof(int32_t) * (size_t)o.n * (size_t)o.len);
	float *logits = malloc(sizeof(float) * (size_t)V);
	sampler_params sp = {.temperature = (float)o.temp, .top_p = 1.0f, .repeat_penalty = 1.0f,
			     .seed = o.seed};
	const int32_t bos = tok_bos(m->vocab) >= 0 ? tok_bos(m->vocab) : 1;
	if (o.len > llama_ctx_n_ctx(c))
		fprintf(stderr, "herd sample: --len %ld exceeds the model's context of %d\n", o.len,
			llama_ctx_n_ctx(c));
	else if (!t || !logits || sampler_create(&sm, &sp, V))
		fprintf(stderr, "herd sample: out of memory\n");
	else {
		int err = 0;
		for (long s = 0; s < o.n && !err; s++)
			err = sample_stream(c, sm, bos, tok_eos(m->vocab), t + s * o.len, (int)o.len, logits);
		if (err)
			fprintf(stderr, "herd sample: evaluation failed: %s\n", herd_strerror(err));
		else if (!cli_write_file(o.out, t, sizeof(int32_t) * (size_t)o.n * (size_t)o.len)) {
			fprintf(stderr, "herd sample: %ld streams x %ld tokens written to %s\n", o.n, o.len,
				o.out);
			rc = 0;
		}
	}
	sampler_destroy(sm);
	free(t);
	free(logits);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
