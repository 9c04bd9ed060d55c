/* herd logits: the logits at every position, in the fixtures' format.
 *   -p TEXT:               OUT = float32 LE [n_tokens][n_vocab], OUT.tokens = int32 LE ids;
 *   --tokens FILE --len L: FILE = int32 [n][L] streams, OUT = float32 LE [n][L][n_vocab]
 *                          (each stream evaluated from an empty context).
 * --kv-type picks the KV cache type; --kl-ref FILE (float32 logits of OUT's
 * shape, e.g. a fixture's .logits or an f16-KV run's OUT) prints one JSON
 * line with the mean and max KL divergence of softmax(FILE) against OUT and
 * how often the top token agrees. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "kernels/ops.h"
#include "model/quality.h"

#define LOGITS_USAGE \
	"usage: herd logits -m MODEL (-p TEXT | --tokens FILE [--len L]) -o OUT [-t THREADS]\n" \
	"                   [--kv-type f16|q8_0|q4_0] [--kl-ref FILE]\n"

typedef struct logits_opts {
	const char *model, *prompt, *tokens, *out, *kl_ref;
	long threads, len;
	int kv_type;
} logits_opts;

static int logits_args(int argc, char **argv, logits_opts *o)
{
	*o = (logits_opts){.len = 128, .kv_type = KERN_TYPE_F16};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!next) {
			fprintf(stderr, "herd logits: unknown or incomplete option '%s'\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "-m"))
			o->model = next;
		else if (!strcmp(a, "-p"))
			o->prompt = next;
		else if (!strcmp(a, "--tokens"))
			o->tokens = next;
		else if (!strcmp(a, "-o"))
			o->out = next;
		else if (!strcmp(a, "--kl-ref"))
			o->kl_ref = next;
		else if (!strcmp(a, "--kv-type")) {
			if (cli_kv_type(a, next, &o->kv_type))
				return 2;
		}
		else if (!strcmp(a, "--len")) {
			if (cli_int(a, next, 2, QUALITY_MAX_LEN, &o->len))
				return 2;
		} else if (!strcmp(a, "-t")) {
			if (cli_int(a, next, 0, 4096, &o->threads))
				return 2;
		} else {
			fprintf(stderr, "herd logits: unknown option '%s'\n", a);
			return 2;
		}
	}
	if (!o->model || !o->out || !o->prompt == !o->tokens) {
		fprintf(stderr, "herd logits: need -m, -o and exactly one of -p, --tokens\n");
		return 2;
	}
	return 0;
}

/* --tokens: every stream's logits, written as they are computed. */
static int logits_streams(const logits_opts *o, llama_model *m, llama_ctx *c)
{
	char err[512];
	int32_t *t = NULL;
	int n = 0;
	if (o->len > llama_ctx_n_ctx(c)) {
		fprintf(stderr, "herd logits: --len %ld exceeds the model's context of %d\n", o->len,
			llama_ctx_n_ctx(c));
		return 1;
	}
	if (quality_read_streams(o->tokens, (int)o->len, m->hp.n_vocab, &t, &n, err, sizeof(err))) {
		fprintf(stderr, "herd logits: %s\n", err);
		return 1;
	}
	const size_t per = (size_t)m->hp.n_vocab * (size_t)o->len;
	float *lg = malloc(sizeof(float) * per);
	FILE *f = lg ? fopen(o->out, "wb") : NULL;
	int rc = !f;
	for (int s = 0; s < n && !rc; s++) {
		int e = cli_stream_logits(c, t + (size_t)s * o->len, (int)o->len, lg);
		if (e)
			fprintf(stderr, "herd logits: evaluation failed: %s\n", herd_strerror(e));
		rc = e || fwrite(lg, sizeof(float), per, f) != per;
	}
	if (f && fclose(f))
		rc = 1;
	if (rc) {
		fprintf(stderr, "herd logits: cannot write '%s': %s\n", o->out, strerror(errno));
		if (f)
			remove(o->out);
	} else
		fprintf(stderr, "herd logits: %d streams x %ld tokens x %d logits written to %s\n", n,
			o->len, m->hp.n_vocab, o->out);
	free(lg);
	free(t);
	return rc;
}

/* -p: the prompt's logits and its token ids. */
static int logits_prompt(const logits_opts *o, llama_model *m, llama_ctx *c)
{
	int32_t *ids = NULL;
	float *logits = NULL;
	int n = 0, rc = 1;
	char *tpath = NULL;
	int err = cli_tokenize(m->vocab, o->prompt, 1, &ids, &n);
	if (err || n > llama_ctx_n_ctx(c)) {
		fprintf(stderr, "herd logits: cannot tokenize the prompt or it exceeds the context: %s\n",
			herd_strerror(err ? err : HERD_E_NOSPACE));
		goto out;
	}
	const size_t V = (size_t)m->hp.n_vocab;
	logits = malloc(sizeof(float) * V * n);
	tpath = malloc(strlen(o->out) + 8);
	if (!logits || !tpath)
		goto out;
	if ((err = cli_stream_logits(c, ids, n, logits))) {
		fprintf(stderr, "herd logits: evaluation failed: %s\n", herd_strerror(err));
		goto out;
	}
	sprintf(tpath, "%s.tokens", o->out);
	if (cli_write_file(o->out, logits, sizeof(float) * V * n) ||
	    cli_write_file(tpath, ids, sizeof(int32_t) * n))
		goto out;
	fprintf(stderr, "herd logits: %d tokens x %zu logits written to %s\n", n, V, o->out);
	rc = 0;
out:
	free(tpath);
	free(logits);
	free(ids);
	return rc;
}

static int argmax(const float *x, int n)
{
	int a = 0;
	for (int i = 1; i < n; i++)
		a = x[i] > x[a] ? i : a;
	return a;
}

/* Compares the logits rows of out with those of ref (same shape). */
static int kl_report(const char *ref, const char *out, int V, int kv_type)
{
	FILE *f = fopen(ref, "rb"), *g = fopen(out, "rb");
	float *r = malloc(sizeof(float) * (size_t)V), *o = malloc(sizeof(float) * (size_t)V);
	double sum = 0, worst = 0;
	int agree = 0, n = 0, bad = !f || !g || !r || !o;
	while (!bad && fread(o, sizeof(float), (size_t)V, g) == (size_t)V) {
		if (fread(r, sizeof(float), (size_t)V, f) != (size_t)V) {
			bad = 1;
			break;
		}
		const double kl = kern_kl_logits(r, o, V);
		sum += kl;
		worst = kl > worst ? kl : worst;
		agree += argmax(r, V) == argmax(o, V);
		n++;
	}
	bad = bad || n == 0 || fgetc(f) != EOF;
	if (bad)
		fprintf(stderr, "herd logits: '%s' is not float32 logits of %s's shape (%d per row)\n", ref,
			out, V);
	else
		printf("{\"kv_type\":\"%s\",\"positions\":%d,\"mean_kl\":%.6g,\"max_kl\":%.6g,"
		       "\"top1_agree\":%.4f}\n",
		       kern_type_name(kv_type), n, sum / n, worst, (double)agree / n);
	if (f)
		fclose(f);
	if (g)
		fclose(g);
	free(r);
	free(o);
	return bad ? 1 : 0;
}

int cmd_logits(int argc, char **argv)
{
	logits_opts o;
	if (logits_args(argc, argv, &o)) {
		fprintf(stderr, LOGITS_USAGE);
		return 2;
	}
	llama_model *m;
	llama_ctx *c;
	if (cli_load(o.model, (int)o.threads, 0, o.kv_type, &m, &c))
		return 1;
	int rc = o.tokens ? logits_streams(&o, m, c) : logits_prompt(&o, m, c);
	if (!rc && o.kl_ref)
		rc = kl_report(o.kl_ref, o.out, m->hp.n_vocab, o.kv_type);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
