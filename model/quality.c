/* Model-vs-reference statistics on token streams. See quality.h. */
#include "model/quality.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"

int quality_read_streams(const char *path, int len, int n_vocab, int32_t **tokens, int *n_streams,
			 char *err, size_t errlen)
{
	*tokens = NULL;
	*n_streams = 0;
	if (len < 2 || len > QUALITY_MAX_LEN)
		return herd_errf(err, errlen, HERD_E_INVAL, "stream length %d out of range [2, %d]", len,
				 QUALITY_MAX_LEN);
	FILE *f = fopen(path, "rb");
	if (!f)
		return herd_errf(err, errlen, -errno, "cannot open token streams '%s': %s", path,
				 strerror(errno));
	long size = -1;
	if (!fseek(f, 0, SEEK_END))
		size = ftell(f);
	const size_t row = sizeof(int32_t) * (size_t)len;
	if (size <= 0 || (unsigned long)size > QUALITY_MAX_FILE || (size_t)size % row) {
		fclose(f);
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "token streams '%s': %ld bytes is not a positive multiple of %zu "
				 "(int32 streams of %d tokens, at most %u bytes)",
				 path, size, row, len, QUALITY_MAX_FILE);
	}
	int32_t *t = malloc((size_t)size);
	if (!t) {
		fclose(f);
		return herd_errf(err, errlen, -ENOMEM, "%s", herd_strerror(-ENOMEM));
	}
	rewind(f);
	const int bad = fread(t, 1, (size_t)size, f) != (size_t)size;
	fclose(f);
	if (bad) {
		free(t);
		return herd_errf(err, errlen, -EIO, "cannot read token streams '%s'", path);
	}
	const int64_t n = size / (long)sizeof(int32_t);
	for (int64_t i = 0; n_vocab > 0 && i < n; i++) {
		if (t[i] < 0 || t[i] >= n_vocab) {
			const int id = t[i];
			free(t);
			return herd_errf(err, errlen, HERD_E_RANGE,
					 "token streams '%s': stream %lld position %lld holds id %d, "
					 "outside the model's vocabulary of %d",
					 path, (long long)(i / len), (long long)(i % len), id, n_vocab);
		}
	}
	*tokens = t;
	*n_streams = (int)(n / len);
	return 0;
}

int quality_init(quality_acc *a, int n_vocab)
{
	memset(a, 0, sizeof(*a));
	if (n_vocab < 1)
		return HERD_E_INVAL;
	a->n_vocab = n_vocab;
	a->lr = malloc(sizeof(double) * (size_t)n_vocab);
	a->lm = malloc(sizeof(double) * (size_t)n_vocab);
	if (!a->lr || !a->lm) {
		quality_free(a);
		return -ENOMEM;
	}
	return 0;
}

void quality_free(quality_acc *a)
{
	free(a->kls);
	free(a->lr);
	free(a->lm);
	memset(a, 0, sizeof(*a));
}

int quality_log_softmax(const float *z, int n, double *out)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (z[i] > z[best])
			best = i;
	const double mx = z[best];
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += exp((double)z[i] - mx);
	const double lse = mx + log(sum);
	for (int i = 0; i < n; i++)
		out[i] = (double)z[i] - lse;
	return best;
}

int quality_add(quality_acc *a, const float *ref, const float *model, int32_t next)
{
	if (a->n_pos == a->kls_cap) {
		const int64_t cap = a->kls_cap ? 2 * a->kls_cap : 1024;
		double *k = realloc(a->kls, sizeof(double) * (size_t)cap);
		if (!k)
			return -ENOMEM;
		a->kls = k;
		a->kls_cap = cap;
	}
	const int V = a->n_vocab;
	const int tr = quality_log_softmax(ref, V, a->lr);
	const int tm = quality_log_softmax(model, V, a->lm);
	double kl = 0;
	for (int v = 0; v < V; v++)
		kl += exp(a->lr[v]) * (a->lr[v] - a->lm[v]);
	if (kl < 0) /* rounding: KL is never negative */
		kl = 0;
	a->kls[a->n_pos++] = kl;
	a->kl_sum += kl;
	if (kl > a->kl_max)
		a->kl_max = kl;
	a->n_top1 += tr == tm;
	if (next >= 0 && next < V) {
		a->nll_ref -= a->lr[next];
		a->nll_model -= a->lm[next];
		a->n_next++;
	}
	return 0;
}

static int cmp_double(const void *x, const void *y)
{
	const double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

quality_result quality_result_of(quality_acc *a)
{
	quality_result r = {0};
	if (!a->n_pos)
		return r;
	qsort(a->kls, (size_t)a->n_pos, sizeof(double), cmp_double);
	int64_t rank = (int64_t)ceil(0.99 * (double)a->n_pos); /* nearest rank, 1-based */
	if (rank < 1)
		rank = 1;
	r.n_pos = a->n_pos;
	r.kl_mean = a->kl_sum / (double)a->n_pos;
	r.kl_p99 = a->kls[rank - 1];
	r.kl_max = a->kl_max;
	r.top1_pct = 100.0 * (double)a->n_top1 / (double)a->n_pos;
	if (a->n_next) {
		r.ppl_ref = exp(a->nll_ref / (double)a->n_next);
		r.ppl_model = exp(a->nll_model / (double)a->n_next);
		r.quality_pct = 100.0 * r.ppl_ref / r.ppl_model;
	}
	return r;
}
