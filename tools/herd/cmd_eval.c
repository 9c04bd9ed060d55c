/* herd eval: a model's quality against a reference on token streams
 * (model/quality.h), its size and decode speed; herd sample: token streams
 * sampled from a model, for held-out evaluation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "common/clock.h"
#include "herd/error.h"
#include "model/quality.h"
#include "model/sampler.h"

#define EVAL_DEFAULT_LEN 128

/* logits [len][n_vocab] of one stream, evaluated from an empty sequence. */
int cli_stream_logits(llama_ctx *c, const int32_t *toks, int len, float *logits)
{
	llama_seq seq;
	llama_seq_init(&seq);
	const int rc = llama_eval(c, &seq, toks, len, 1, logits);
	llama_seq_reset(c, &seq);
	return rc;
}

/* Decode speed: the stream fed one token per step (tokens per second). */
static double decode_tok_s(llama_ctx *c, const int32_t *toks, int len, float *logits)
{
	llama_seq seq;
	llama_seq_init(&seq);
	const double t0 = clock_mono_s();
	int n = 0;
	for (; n < len; n++)
		if (llama_eval(c, &seq, toks + n, 1, 0, logits))
			break;
	const double dt = clock_mono_s() - t0;
	llama_seq_reset(c, &seq);
	return n && dt > 0 ? n / dt : 0;
}

typedef struct eval_opts {
	const char *model, *ref, *tokens;
	long len, threads;
	int json;
} eval_opts;

static void eval_usage(void)
{
	fprintf(stderr, "usage: herd eval MODEL --ref ORIGINAL --tokens FILE [--len L] [-t THREADS] "
			"[--json]\n"
			"  FILE holds int32 token streams [n][L] (L = --len, default %d)\n",
		EVAL_DEFAULT_LEN);
}

static int eval_args(int argc, char **argv, eval_opts *o)
{
	*o = (eval_opts){.len = EVAL_DEFAULT_LEN};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--json")) {
			o->json = 1;
			continue;
		}
		if (a[0] != '-' && !o->model) {
			o->model = a;
			continue;
		}
		if (!next || a[0] != '-') {
			fprintf(stderr, "herd eval: unknown or incomplete option '%s'\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--ref"))
			o->ref = next;
		else if (!strcmp(a, "--tokens"))
			o->tokens = next;
		else if (!strcmp(a, "--len")) {
			if (cli_int(a, next, 2, QUALITY_MAX_LEN, &o->len))
				return 2;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
			if (cli_int(a, next, 0, 4096, &o->threads))
				return 2;
		} else {
			fprintf(stderr, "herd eval: unknown option '%s'\n", a);
			return 2;
		}
	}
	if (!o->model || !o->ref || !o->tokens) {
		fprintf(stderr, "herd eval: missing %s\n",
			!o->model ? "MODEL" : !o->ref ? "--ref ORIGINAL" : "--tokens FILE");
		return 2;
	}
	return 0;
}

static long long file_bytes(const char *path)
{
	struct stat st;
	return stat(path, &st) ? -1 : (long long)st.st_size;
}

static void eval_print(const eval_opts *o, const quality_result *r, int n, double tok_s)
{
	const long long size = file_bytes(o->model), ref_size = file_bytes(o->ref);
	if (o->json) {
		printf("{\"model\":\"%s\",\"ref\":\"%s\",\"streams\":%d,\"len\":%ld,\"positions\":%lld,"
		       "\"kl_mean\":%.6f,\"kl_p99\":%.6f,\"kl_max\":%.6f,\"top1_pct\":%.3f,"
		       "\"ppl_model\":%.4f,\"ppl_ref\":%.4f,\"quality_pct\":%.3f,\"bytes\":%lld,"
		       "\"ref_bytes\":%lld,\"decode_tok_s\":%.1f}\n",
		       o->model, o->ref, n, o->len, (long long)r->n_pos, r->kl_mean, r->kl_p99, r->kl_max,
		       r->top1_pct, r->ppl_model, r->ppl_ref, r->quality_pct, size, ref_size, tok_s);
		return;
	}
	printf("model        %s (%lld bytes)\nreference    %s (%lld bytes)\n", o->model, size, o->ref,
	       ref_size);
	printf("streams      %d x %ld tokens (%lld positions)\n", n, o->len, (long long)r->n_pos);
	printf("KL mean      %.6f\nKL p99       %.6f\nKL max       %.6f\n", r->kl_mean, r->kl_p99,
	       r->kl_max);
	printf("same top-1   %.2f %%\nperplexity   %.4f (reference %.4f)\n", r->top1_pct, r->ppl_model,
	       r->ppl_ref);
	printf("quality      %.2f %% (reference perplexity / model perplexity)\n", r->quality_pct);
	printf("decode       %.1f tok/s\n", tok_s);
}

/* Compares every stream; returns 0 or an error already printed. */
static int eval_streams(llama_ctx *cm, llama_ctx *cr, const int32_t *toks, int n, int len,
			int V, quality_result *res, double *tok_s)
{
	float *lm = malloc(sizeof(float) * (size_t)V * len), *lr = malloc(sizeof(float) * (size_t)V * len);
	quality_acc acc = {0};
	int rc = !lm || !lr ? -ENOMEM : quality_init(&acc, V);
	for (int s = 0; s < n && !rc; s++) {
		const int32_t *t = toks + (size_t)s * len;
		if ((rc = cli_stream_logits(cm, t, len, lm)) || (rc = cli_stream_logits(cr, t, len, lr)))
			break;
		for (int p = 0; p < len && !rc; p++)
			rc = quality_add(&acc, lr + (size_t)p * V, lm + (size_t)p * V,
					 p + 1 < len ? t[p + 1] : -1);
	}
	if (!rc) {
		*res = quality_result_of(&acc);
		*tok_s = decode_tok_s(cm, toks, len, lm);
	}
	if (rc != -ENOMEM || (lm && lr))
		quality_free(&acc);
	free(lm);
	free(lr);
	if (rc)
		fprintf(stderr, "herd eval: evaluation failed: %s\n", herd_strerror(rc));
	return rc;
}

int cmd_eval(int argc, char **argv)
{
	eval_opts o;
	if (eval_args(argc, argv, &o)) {
		eval_usage();
		return 2;
	}
	llama_model *mm = NULL, *mr = NULL;
	llama_ctx *cm = NULL, *cr = NULL;
	int32_t *toks = NULL;
	int n = 0, rc = 1;
	char err[512];
	if (cli_load(o.model, (int)o.threads, 0, KERN_TYPE_F16, &mm, &cm) ||
	    cli_load(o.ref, (int)o.threads, 0, KERN_TYPE_F16, &mr, &cr))
		goto out;
	const int V = mm->hp.n_vocab;
	if (mr->hp.n_vocab != V) {
		fprintf(stderr, "herd eval: '%s' has a vocabulary of %d, the reference '%s' of %d\n",
			o.model, V, o.ref, mr->hp.n_vocab);
		goto out;
	}
	if (o.len > llama_ctx_n_ctx(cm) || o.len > llama_ctx_n_ctx(cr)) {
		fprintf(stderr, "herd eval: --len %ld exceeds the model's context of %d\n", o.len,
			llama_ctx_n_ctx(cm));
		goto out;
	}
	if (quality_read_streams(o.tokens, (int)o.len, V, &toks, &n, err, sizeof(err))) {
		fprintf(stderr, "herd eval: %s\n", err);
		goto out;
	}
	quality_result r;
	double tok_s = 0;
	if (eval_streams(cm, cr, toks, n, (int)o.len, V, &r, &tok_s))
		goto out;
	eval_print(&o, &r, n, tok_s);
	rc = 0;
out:
	free(toks);
	llama_ctx_destroy(cm);
	llama_ctx_destroy(cr);
	llama_model_destroy(mm);
	llama_model_destroy(mr);
	return rc;
}
