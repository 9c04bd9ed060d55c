/* herd bench: prompt-processing and generation speed, as llama-bench
 * measures them (pp: one prompt of -p tokens; tg: -n tokens generated one at a
 * time from an empty context), median of -r repetitions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int cmd_bench(int argc, char **argv)
{
	const char *model = NULL;
	long threads = 0, p = 128, n = 64, reps = 3;
	int json = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		long *dst = NULL, lo = 0, hi = 0;
		if (!strcmp(a, "-m") && next) {
			model = argv[++i];
			continue;
		} else if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		} else if (!strcmp(a, "-t"))
			dst = &threads, lo = 0, hi = 4096;
		else if (!strcmp(a, "-p"))
			dst = &p, lo = 0, hi = 1 << 16;
		else if (!strcmp(a, "-n"))
			dst = &n, lo = 0, hi = 1 << 16;
		else if (!strcmp(a, "-r"))
			dst = &reps, lo = 1, hi = 1000;
		if (!dst) {
			fprintf(stderr, "herd bench: unknown option '%s'\n"
					"usage: herd bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [--json]\n", a);
			return 2;
		}
		if (cli_int(a, next, lo, hi, dst))
			return 2;
		i++;
	}
	if (!model) {
		fprintf(stderr, "usage: herd bench -m MODEL [-t THREADS] [-p 128] [-n 64] [-r 3] [--json]\n");
		return 2;
	}
	llama_model *m;
	llama_ctx *c;
	if (cli_load(model, (int)threads, (int)(p > n ? p : n) + 1, &m, &c))
		return 1;
	const int V = m->hp.n_vocab;
	int32_t *toks = malloc(sizeof(int32_t) * (size_t)(p + 1));
	float *logits = malloc(sizeof(float) * V);
	double *pp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
	int rc = 1;
	llama_seq seq;
	llama_seq_init(&seq);
	if (!toks || !logits || !pp || !tg)
		goto out;
	/* A fixed pseudo-random prompt (BOS first), the same on every run. */
	uint32_t x = 12345;
	toks[0] = tok_bos(m->vocab);
	for (long i = 1; i <= p; i++) {
		x = x * 1664525u + 1013904223u;
		toks[i] = (int32_t)(3 + (x >> 8) % (uint32_t)(V - 3));
	}
	int err = 0;
	for (long r = 0; r < reps && !err; r++) {
		if (p > 0) {
			llama_seq_reset(c, &seq);
			double t0 = cli_now();
			err = llama_eval(c, &seq, toks, (int)p, 0, logits);
			pp[r] = p / (cli_now() - t0);
		}
		if (n > 0 && !err) {
			llama_seq_reset(c, &seq);
			int32_t tok = toks[0];
			double t0 = cli_now();
			for (long i = 0; i < n && !err; i++) {
				llama_batch_seq b = {&seq, &tok, 1, LLAMA_LOGITS_LAST, logits};
				err = llama_decode(c, &b, 1);
				int32_t best = 0;
				for (int k = 1; k < V; k++)
					best = logits[k] > logits[best] ? k : best;
				tok = best;
			}
			tg[r] = n / (cli_now() - t0);
		}
	}
	if (err) {
		fprintf(stderr, "herd bench: evaluation failed: %s\n", herd_strerror(err));
		goto out;
	}
	const double pps = p > 0 ? median(pp, (int)reps) : 0, tgs = n > 0 ? median(tg, (int)reps) : 0;
	const double bytes = (double)m->weight_bytes;
	if (json)
		printf("{\"model\":\"%s\",\"model_bytes\":%llu,\"n_vocab\":%d,\"n_layer\":%d,\"threads\":%d,"
		       "\"isa\":\"%s\",\"p\":%ld,\"n\":%ld,\"reps\":%ld,\"prefill_tok_s\":%.2f,"
		       "\"decode_tok_s\":%.2f,\"decode_weight_gb_s\":%.2f}\n",
		       model, (unsigned long long)m->weight_bytes, V, m->hp.n_layer, llama_ctx_n_threads(c),
		       kern_isa_name(llama_ctx_isa(c)), p, n, reps, pps, tgs, tgs * bytes / 1e9);
	else
		printf("model %s (%.1f MiB of weights), %d threads, %s kernels\n"
		       "pp%ld: %.2f tok/s\ntg%ld: %.2f tok/s (%.2f GB/s of weights)\n",
		       model, bytes / 1048576.0, llama_ctx_n_threads(c), kern_isa_name(llama_ctx_isa(c)), p,
		       pps, n, tgs, tgs * bytes / 1e9);
	rc = 0;
out:
	free(toks);
	free(logits);
	free(pp);
	free(tg);
	llama_seq_reset(c, &seq);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
