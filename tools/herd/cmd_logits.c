/* herd logits: the logits at every prompt position, in the fixtures' format:
 * OUT = float32 LE [n_tokens][n_vocab], OUT.tokens = int32 LE ids.
 * --tokens FILE takes the prompt as int32 LE token ids (as OUT.tokens, or
 * llama-perplexity's chunks) instead of -p TEXT; --kv-type picks the KV
 * cache type; --kl-ref FILE (logits of the same
 * shape, e.g. a fixture's .logits or an f16-KV run's OUT) prints one JSON
 * line with the mean and max KL divergence of softmax(FILE) against ours
 * and how often the top token agrees. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "kernels/ops.h"

static int write_all(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "herd logits: cannot create '%s': %s\n", path, strerror(errno));
		return -1;
	}
	int bad = fwrite(data, 1, size, f) != size;
	bad |= fclose(f) != 0;
	if (bad) {
		fprintf(stderr, "herd logits: cannot write '%s': %s\n", path, strerror(errno));
		remove(path);
		return -1;
	}
	return 0;
}

#define LOGITS_USAGE "usage: herd logits -m MODEL (-p TEXT | --tokens FILE) -o OUT [-t THREADS]\n" \
	"                   [--kv-type f16|q8_0|q4_0] [--kl-ref FILE]\n"

static int argmax(const float *x, int n)
{
	int a = 0;
	for (int i = 1; i < n; i++)
		a = x[i] > x[a] ? i : a;
	return a;
}

/* Compares our logits [n][V] with the float32 file ref (same shape). */
static int kl_report(const char *ref, const float *ours, int n, int V, int kv_type)
{
	FILE *f = fopen(ref, "rb");
	if (!f) {
		fprintf(stderr, "herd logits: cannot open '%s': %s\n", ref, strerror(errno));
		return -1;
	}
	float *r = malloc(sizeof(float) * (size_t)V);
	double sum = 0, worst = 0;
	int agree = 0, i = 0;
	for (; r && i < n && fread(r, sizeof(float), (size_t)V, f) == (size_t)V; i++) {
		const float *o = ours + (size_t)i * V;
		const double kl = kern_kl_logits(r, o, V);
		sum += kl;
		worst = kl > worst ? kl : worst;
		agree += argmax(r, V) == argmax(o, V);
	}
	const int extra = r && fgetc(f) != EOF;
	fclose(f);
	free(r);
	if (i != n || extra) {
		fprintf(stderr, "herd logits: '%s' is not %d x %d float32 logits\n", ref, n, V);
		return -1;
	}
	printf("{\"kv_type\":\"%s\",\"positions\":%d,\"mean_kl\":%.6g,\"max_kl\":%.6g,\"top1_agree\":%.4f}\n",
	       kern_type_name(kv_type ? kv_type : KERN_TYPE_F16), n, sum / n, worst, (double)agree / n);
	return 0;
}

int cmd_logits(int argc, char **argv)
{
	const char *model = NULL, *prompt = NULL, *out = NULL, *kl_ref = NULL, *tokens = NULL;
	long threads = 0;
	int kv_type = KERN_TYPE_F16;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-m") && next)
			model = argv[++i];
		else if (!strcmp(a, "--tokens") && next)
			tokens = argv[++i];
		else if (!strcmp(a, "--kl-ref") && next)
			kl_ref = argv[++i];
		else if (!strcmp(a, "--kv-type")) {
			if (cli_kv_type(a, next, &kv_type))
				return 2;
			i++;
		}
		else if (!strcmp(a, "-p") && next)
			prompt = argv[++i];
		else if (!strcmp(a, "-o") && next)
			out = argv[++i];
		else if (!strcmp(a, "-t")) {
			if (cli_int(a, next, 0, 4096, &threads))
				return 2;
			i++;
		} else {
			fprintf(stderr, "herd logits: unknown or incomplete option '%s'\n" LOGITS_USAGE, a);
			return 2;
		}
	}
	if (!model || !prompt == !tokens || !out) {
		fprintf(stderr, LOGITS_USAGE);
		return 2;
	}
	llama_model *m;
	llama_ctx *c;
	if (cli_load(model, (int)threads, 0, kv_type, &m, &c))
		return 1;
	int32_t *ids = NULL;
	float *logits = NULL;
	int n = 0, rc = 1;
	llama_seq seq;
	llama_seq_init(&seq);
	char *tpath = NULL;
	int err = 0;
	if (tokens) {
		if (cli_read_tokens("herd logits", tokens, llama_ctx_n_ctx(c), m->hp.n_vocab, &ids, &n))
			goto out;
	} else if ((err = cli_tokenize(m->vocab, prompt, 1, &ids, &n)) || n > llama_ctx_n_ctx(c)) {
		fprintf(stderr, "herd logits: cannot tokenize the prompt or it exceeds the context: %s\n",
			herd_strerror(err ? err : HERD_E_NOSPACE));
		goto out;
	}
	const size_t V = (size_t)m->hp.n_vocab;
	logits = malloc(sizeof(float) * V * n);
	tpath = malloc(strlen(out) + 8);
	if (!logits || !tpath)
		goto out;
	err = llama_eval(c, &seq, ids, n, 1, logits);
	if (err) {
		fprintf(stderr, "herd logits: evaluation failed: %s\n", herd_strerror(err));
		goto out;
	}
	sprintf(tpath, "%s.tokens", out);
	if (write_all(out, logits, sizeof(float) * V * n) || write_all(tpath, ids, sizeof(int32_t) * n))
		goto out;
	fprintf(stderr, "herd logits: %d tokens x %zu logits written to %s\n", n, V, out);
	rc = kl_ref && kl_report(kl_ref, logits, n, (int)V, kv_type) ? 1 : 0;
out:
	free(tpath);
	free(logits);
	free(ids);
	llama_seq_reset(c, &seq);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
