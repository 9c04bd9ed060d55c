/* Calibration statistics of every matrix's input, from real activations
 * of the model on token streams, and llama.cpp's importance-matrix file.
 * See quantize.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/llama.h"
#include "model/quality.h"
#include "model/quantize.h"

#define IMATRIX_MAX_ENTRIES 65536
#define IMATRIX_MAX_NVAL (1 << 24)
#define CALIB_MAX_ENTRIES 1024 /* matrices of one model followed */
#define CALIB_MAX_VALUES (1 << 26) /* importance values of one file, all entries */
#define CALIB_MAX_HESSIAN (1ull << 30) /* bytes of Hessians kept; later matrices get none */

const quant_stat *quant_calib_find(const quant_calib *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->s[i].name, name))
			return &c->s[i];
	return NULL;
}

void quant_calib_free(quant_calib *c)
{
	for (int i = 0; i < c->n; i++) {
		free(c->s[i].sumsq);
		free(c->s[i].H);
	}
	free(c->s);
	memset(c, 0, sizeof(*c));
}

/* The entry called name with K columns, added when absent; NULL on a
 * column-count clash or -ENOMEM. */
static quant_stat *calib_get(quant_calib *c, const char *name, int64_t K, int with_h)
{
	quant_stat *s = (quant_stat *)quant_calib_find(c, name);
	if (s)
		return s->K == K ? s : NULL;
	if (c->n == c->cap) {
		const int cap = c->cap ? 2 * c->cap : 64;
		quant_stat *ns = realloc(c->s, sizeof(*ns) * (size_t)cap);
		if (!ns)
			return NULL;
		c->s = ns;
		c->cap = cap;
	}
	s = &c->s[c->n];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->K = K;
	s->sumsq = calloc((size_t)K, sizeof(double));
	if (with_h)
		s->H = calloc((size_t)(K * K), sizeof(double));
	if (!s->sumsq || (with_h && !s->H)) {
		free(s->sumsq);
		free(s->H);
		return NULL;
	}
	c->n++;
	return s;
}

typedef struct observe_ctx {
	quant_calib *c;
	const gguf_ctx *g;
	int hessian_max_k;
	int stream;       /* index of the stream being run */
	int *last_stream; /* per entry: the last stream counted in ncall */
	int failed;
	uint64_t hessian_bytes; /* allocated so far */
} observe_ctx;

static void observe(void *user, const llama_weight *w, const float *x, int64_t K, int T)
{
	observe_ctx *o = user;
	char name[QUANT_NAME_MAX] = "";
	for (int64_t i = 0; i < gguf_n_tensors(o->g); i++) {
		const gguf_tensor *t = gguf_tensor_at(o->g, i);
		if (t->data == w->data && t->name.len < sizeof(name)) {
			memcpy(name, t->name.ptr, t->name.len);
			name[t->name.len] = '\0';
			break;
		}
	}
	const uint64_t hb = (uint64_t)K * (uint64_t)K * sizeof(double);
	const int with_h = K <= o->hessian_max_k && !quant_calib_find(o->c, name) &&
			   o->hessian_bytes + hb <= CALIB_MAX_HESSIAN;
	quant_stat *s = name[0] ? calib_get(o->c, name, K, with_h) : NULL;
	if (s && s->H && with_h && s->n_rows == 0)
		o->hessian_bytes += hb;
	if (!s) {
		o->failed = 1;
		return;
	}
	const int idx = (int)(s - o->c->s);
	if (idx >= CALIB_MAX_ENTRIES) {
		o->failed = 1;
		return;
	}
	if (o->last_stream[idx] != o->stream) {
		o->last_stream[idx] = o->stream;
		s->ncall++;
	}
	for (int t = 0; t < T; t++) {
		const float *r = x + (size_t)t * K;
		for (int64_t i = 0; i < K; i++) {
			s->sumsq[i] += (double)r[i] * r[i];
			if (!s->H)
				continue;
			double *h = s->H + i * K;
			for (int64_t j = 0; j <= i; j++)
				h[j] += (double)r[i] * r[j];
		}
	}
	s->n_rows += T;
}

/* H was summed on its lower triangle: mirror it. */
static void calib_symmetrize(quant_calib *c)
{
	for (int n = 0; n < c->n; n++) {
		quant_stat *s = &c->s[n];
		for (int64_t i = 0; s->H && i < s->K; i++)
			for (int64_t j = 0; j < i; j++)
				s->H[j * s->K + i] = s->H[i * s->K + j];
	}
}

static int calib_run(quant_calib *c, llama_model *m, llama_ctx *ctx, const int32_t *toks, int n,
		     int len, observe_ctx *oc, quant_progress_fn progress, void *user)
{
	float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab * (size_t)len);
	oc->last_stream = malloc(sizeof(int) * CALIB_MAX_ENTRIES);
	if (!logits || !oc->last_stream) {
		free(logits);
		return -ENOMEM;
	}
	for (int i = 0; i < CALIB_MAX_ENTRIES; i++)
		oc->last_stream[i] = -1;
	llama_ctx_set_observer(ctx, observe, oc);
	int rc = 0;
	for (int s = 0; s < n && !rc && !oc->failed; s++) {
		oc->stream = s;
		llama_seq seq;
		llama_seq_init(&seq);
		rc = llama_eval(ctx, &seq, toks + (size_t)s * len, len, 1, logits);
		llama_seq_reset(ctx, &seq);
		if (progress)
			progress(user, s + 1, n, "calibration");
	}
	c->last_call = n;
	free(logits);
	free(oc->last_stream);
	return rc ? rc : oc->failed || c->n > CALIB_MAX_ENTRIES ? -ENOMEM : 0;
}

int quant_calib_collect(quant_calib *c, const char *model_path, const char *tokens, int len,
			int hessian_max_k, quant_progress_fn progress, void *user, char *err,
			size_t errlen)
{
	llama_model *m = NULL;
	llama_ctx *ctx = NULL;
	int32_t *toks = NULL;
	int n = 0;
	int rc = llama_model_load(&m, model_path, err, errlen);
	if (rc)
		return rc;
	llama_ctx_opts co = {.n_ctx = len};
	if (len > m->hp.n_ctx_train && m->hp.n_ctx_train > 0)
		rc = herd_errf(err, errlen, HERD_E_INVAL, "calibration streams of %d tokens exceed the "
			       "model's context of %d", len, m->hp.n_ctx_train);
	else if (!(rc = quality_read_streams(tokens, len, m->hp.n_vocab, &toks, &n, err, errlen)) &&
		 (rc = llama_ctx_create(&ctx, m, &co)))
		herd_errf(err, errlen, rc, "cannot create a context: %s", herd_strerror(rc));
	if (!rc) {
		observe_ctx oc = {.c = c, .g = m->gguf, .hessian_max_k = hessian_max_k};
		if ((rc = calib_run(c, m, ctx, toks, n, len, &oc, progress, user)))
			herd_errf(err, errlen, rc, "calibration run failed: %s", herd_strerror(rc));
		calib_symmetrize(c);
		snprintf(c->dataset, sizeof(c->dataset), "%s", tokens);
	}
	free(toks);
	llama_ctx_destroy(ctx);
	llama_model_destroy(m);
	return rc;
}

static int put_i32(FILE *f, int32_t v)
{
	return fwrite(&v, sizeof(v), 1, f) == 1 ? 0 : -1;
}

int quant_imatrix_write(const quant_calib *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return herd_errf(err, errlen, -errno, "cannot create '%s': %s", path, strerror(errno));
	int bad = put_i32(f, c->n);
	for (int i = 0; i < c->n && !bad; i++) {
		const quant_stat *s = &c->s[i];
		const int32_t len = (int32_t)strlen(s->name), ncall = s->ncall > 0 ? s->ncall : 1;
		bad |= put_i32(f, len) || fwrite(s->name, 1, (size_t)len, f) != (size_t)len ||
		       put_i32(f, ncall) || put_i32(f, (int32_t)s->K);
		for (int64_t k = 0; k < s->K && !bad; k++) {
			const float v = (float)(s->n_rows ? s->sumsq[k] / (double)s->n_rows * ncall : 0);
			bad |= fwrite(&v, sizeof(v), 1, f) != 1;
		}
	}
	const int32_t dl = (int32_t)strlen(c->dataset);
	bad |= put_i32(f, c->last_call) || put_i32(f, dl) ||
	       fwrite(c->dataset, 1, (size_t)dl, f) != (size_t)dl;
	bad |= fclose(f) != 0;
	if (bad) {
		remove(path);
		return herd_errf(err, errlen, -EIO, "cannot write '%s'", path);
	}
	return 0;
}

static int get_i32(FILE *f, int32_t *v)
{
	return fread(v, sizeof(*v), 1, f) == 1 ? 0 : -1;
}

/* One entry of the file into c (averaged with an entry of the same name
 * by call counts). */
static int imatrix_entry(quant_calib *c, FILE *f, int i, const char *path, char *err, size_t errlen)
{
	int32_t len, ncall, nval;
	char name[QUANT_NAME_MAX];
	if (get_i32(f, &len) || len < 1 || len >= QUANT_NAME_MAX || fread(name, 1, (size_t)len, f) !=
	    (size_t)len || get_i32(f, &ncall) || get_i32(f, &nval) || nval < 1 || nval > IMATRIX_MAX_NVAL)
		return herd_errf(err, errlen, HERD_E_FORMAT, "imatrix '%s': entry %d: bad name, call "
				 "or value count", path, i);
	name[len] = '\0';
	quant_stat *s = calib_get(c, name, nval, 0);
	if (!s)
		return herd_errf(err, errlen, HERD_E_FORMAT, "imatrix '%s': entry '%s' has %d values, "
				 "an earlier one %lld", path, name, nval,
				 (long long)(quant_calib_find(c, name) ? quant_calib_find(c, name)->K : 0));
	const double old_w = s->ncall, new_w = ncall > 0 ? ncall : 1;
	for (int32_t k = 0; k < nval; k++) {
		float v;
		if (fread(&v, sizeof(v), 1, f) != 1 || !(v >= 0) || v > 3.4e38f)
			return herd_errf(err, errlen, HERD_E_FORMAT, "imatrix '%s': entry '%s': value %d "
					 "missing or not a finite non-negative number", path, name, k);
		const double mean_old = s->n_rows ? s->sumsq[k] / (double)s->n_rows : 0;
		s->sumsq[k] = (mean_old * old_w + (double)v) / (old_w + new_w); /* v = mean * ncall */
	}
	s->n_rows = 1;
	s->ncall += (int)new_w;
	return 0;
}

int quant_imatrix_read(quant_calib *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return herd_errf(err, errlen, -errno, "cannot open imatrix '%s': %s", path,
				 strerror(errno));
	int32_t n;
	int rc = 0;
	int64_t values = 0;
	if (get_i32(f, &n) || n < 1 || n > IMATRIX_MAX_ENTRIES)
		rc = herd_errf(err, errlen, HERD_E_FORMAT, "imatrix '%s': bad entry count (not a "
			       "llama.cpp importance matrix?)", path);
	for (int32_t i = 0; i < n && !rc; i++) {
		rc = imatrix_entry(c, f, i, path, err, errlen);
		values += c->n ? c->s[c->n - 1].K : 0;
		if (!rc && values > CALIB_MAX_VALUES)
			rc = herd_errf(err, errlen, HERD_E_RANGE, "imatrix '%s': more than %d values in all",
				       path, CALIB_MAX_VALUES);
	}
	int32_t last, dl;
	if (!rc && !get_i32(f, &last) && !get_i32(f, &dl) && dl >= 0 &&
	    (size_t)dl < sizeof(c->dataset) && fread(c->dataset, 1, (size_t)dl, f) == (size_t)dl) {
		c->dataset[dl] = '\0';
		c->last_call = last;
	}
	fclose(f);
	return rc;
}
