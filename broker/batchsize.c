/* Step sizing for a latency target (see batchsize.h). */
#include "batchsize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Weight of a step observed k steps ago: BSZ_DECAY^k (half-life ~23 steps). */
#define BSZ_DECAY 0.97
/* Ridge strength relative to each diagonal term of x x^T. */
#define BSZ_RIDGE 0.001
/* The per-token slopes never fall below this fraction of the ratio estimate
 * (a noisy fit must not make a bigger step look free). */
#define BSZ_MIN_SLOPE 0.05
/* Controller: adjust every BSZ_ADJUST_EVERY gaps by these factors, within
 * [BSZ_FACTOR_MIN, BSZ_FACTOR_MAX]; below BSZ_LOW x target counts as well
 * below. */
#define BSZ_ADJUST_EVERY 8
/* The decision looks at the p95 of the last BSZ_CTL_WINDOW gaps only: a
 * longer memory would keep shrinking the budget after it already worked. */
#define BSZ_CTL_WINDOW 48
#define BSZ_SHRINK 0.95
#define BSZ_GROW 1.02
#define BSZ_LOW 0.9
#define BSZ_FACTOR_MIN 0.3
#define BSZ_FACTOR_MAX 1.1
/* The factor a controller starts from: the model predicts a mean step, the
 * target is a p95 (the closed loop of tests/test_batchsize.c settles near
 * 0.86 for +-15% noise), so a short burst of requests starts close to it. */
#define BSZ_FACTOR_START 0.85

void bsz_model_init(bsz_model *m)
{
	memset(m, 0, sizeof(*m));
}

/* Solves the 3x3 system A x = y by Gaussian elimination with partial
 * pivoting; returns 0, or -1 when A is singular. A and y are overwritten. */
static int solve3(double A[3][3], double y[3], double x[3])
{
	for (int k = 0; k < 3; k++) {
		int p = k;
		for (int i = k + 1; i < 3; i++)
			if (fabs(A[i][k]) > fabs(A[p][k]))
				p = i;
		if (fabs(A[p][k]) < 1e-12)
			return -1;
		if (p != k) {
			for (int j = 0; j < 3; j++) {
				double t = A[k][j];
				A[k][j] = A[p][j];
				A[p][j] = t;
			}
			double t = y[k];
			y[k] = y[p];
			y[p] = t;
		}
		for (int i = k + 1; i < 3; i++) {
			const double f = A[i][k] / A[k][k];
			for (int j = k; j < 3; j++)
				A[i][j] -= f * A[k][j];
			y[i] -= f * y[k];
		}
	}
	for (int k = 2; k >= 0; k--) {
		double s = y[k];
		for (int j = k + 1; j < 3; j++)
			s -= A[k][j] * x[j];
		x[k] = s / A[k][k];
	}
	return 0;
}

/* Refits coef from the sums: ridge towards (0, r, r), r = ms per token. */
static void refit(bsz_model *m)
{
	const double r = m->w_tok > 0 ? m->w_ms / m->w_tok : 0;
	const double prior[3] = {0, r, r};
	double A[3][3], y[3], x[3];
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++)
			A[i][j] = m->xx[i][j];
		const double mu = BSZ_RIDGE * m->xx[i][i] + 1e-9;
		A[i][i] += mu;
		y[i] = m->xy[i] + mu * prior[i];
	}
	if (solve3(A, y, x)) {
		x[0] = 0;
		x[1] = x[2] = r;
	}
	if (x[0] < 0)
		x[0] = 0;
	for (int i = 1; i < 3; i++)
		if (x[i] < BSZ_MIN_SLOPE * r)
			x[i] = BSZ_MIN_SLOPE * r;
	memcpy(m->coef, x, sizeof(x));
}

void bsz_model_observe(bsz_model *m, int rows, int prefill, double ms)
{
	if (rows < 0 || prefill < 0 || rows + prefill <= 0 || !(ms > 0) || !isfinite(ms))
		return;
	const double x[3] = {1, rows, prefill};
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++)
			m->xx[i][j] = m->xx[i][j] * BSZ_DECAY + x[i] * x[j];
		m->xy[i] = m->xy[i] * BSZ_DECAY + x[i] * ms;
	}
	m->w_tok = m->w_tok * BSZ_DECAY + (double)(rows + prefill);
	m->w_ms = m->w_ms * BSZ_DECAY + ms;
	m->n++;
	refit(m);
}

double bsz_model_predict(const bsz_model *m, int rows, int prefill)
{
	if (!m->n)
		return 0;
	return m->coef[0] + m->coef[1] * rows + m->coef[2] * prefill;
}

/* ---- feedback on the measured gaps ---------------------------------------- */

void bsz_ctl_init(bsz_ctl *c, double target_ms)
{
	memset(c, 0, sizeof(*c));
	c->target_ms = target_ms;
	c->factor = BSZ_FACTOR_START;
}

static int cmp_dbl(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* p95 of the last n gaps (n <= n_gaps). */
static double p95_last(const bsz_ctl *c, int n)
{
	if (n <= 0)
		return 0;
	double v[BSZ_GAPS];
	for (int i = 0; i < n; i++)
		v[i] = c->gaps[(c->next_gap - 1 - i + BSZ_GAPS) % BSZ_GAPS];
	qsort(v, (size_t)n, sizeof(double), cmp_dbl);
	int k = (int)ceil(0.95 * n);
	return v[k > 0 ? k - 1 : 0];
}

double bsz_ctl_p95(const bsz_ctl *c)
{
	return p95_last(c, c->n_gaps);
}

void bsz_ctl_gap(bsz_ctl *c, double ms)
{
	if (!(ms >= 0) || !isfinite(ms))
		return;
	c->gaps[c->next_gap] = ms;
	c->next_gap = (c->next_gap + 1) % BSZ_GAPS;
	if (c->n_gaps < BSZ_GAPS)
		c->n_gaps++;
	if (!(c->target_ms > 0) || ++c->since_adjust < BSZ_ADJUST_EVERY)
		return;
	c->since_adjust = 0;
	const double p95 = p95_last(c, c->n_gaps < BSZ_CTL_WINDOW ? c->n_gaps : BSZ_CTL_WINDOW);
	if (p95 > c->target_ms)
		c->factor *= BSZ_SHRINK;
	else if (p95 < BSZ_LOW * c->target_ms)
		c->factor *= BSZ_GROW;
	if (c->factor < BSZ_FACTOR_MIN)
		c->factor = BSZ_FACTOR_MIN;
	if (c->factor > BSZ_FACTOR_MAX)
		c->factor = BSZ_FACTOR_MAX;
}

double bsz_ctl_budget(const bsz_ctl *c)
{
	return c->target_ms * c->factor;
}

/* ---- choosing a step ---------------------------------------------------- */

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

bsz_plan bsz_choose(const bsz_model *m, double budget_ms, int pending, int want_prefill,
		    int max_prefill, int max_tokens, int min_prefill)
{
	bsz_plan p = {0, 0, 0};
	if (pending < 0)
		pending = 0;
	if (want_prefill < 0)
		want_prefill = 0;
	p.rows = pending < max_tokens ? pending : max_tokens;
	int pre_cap = want_prefill < max_prefill ? want_prefill : max_prefill;
	if (pre_cap > max_tokens - p.rows)
		pre_cap = max_tokens - p.rows;
	if (pre_cap < 0)
		pre_cap = 0;
	if (!m->n || !(budget_ms > 0)) {
		p.prefill = pre_cap;
		p.room = max_tokens - p.rows;
		return p;
	}
	const double a = m->coef[0], b = m->coef[1], c = m->coef[2];
	const double all = floor((budget_ms - a) / b); /* rows that fit */
	const int fit_rows = all < 1 ? 1 : all > max_tokens ? max_tokens : (int)all;
	p.room = fit_rows > pending ? fit_rows - pending : 0;
	if (p.rows > fit_rows) { /* not all fit: no new prompt joins */
		p.rows = fit_rows;
		return p;
	}
	const double left = budget_ms - a - b * p.rows;
	const double fit = left > 0 ? floor(left / c) : 0;
	const int lo = min_prefill < pre_cap ? min_prefill : pre_cap;
	p.prefill = clampi(fit > pre_cap ? pre_cap : (int)fit, lo, pre_cap);
	return p;
}

/* 0: waited BSZ_MAX_WAIT steps or more, 1: decoded in the previous step,
 * 2: the others. */
static int cand_class(const bsz_cand *x, uint64_t now)
{
	if (x->last + BSZ_MAX_WAIT <= now)
		return 0;
	return x->last + 1 == now ? 1 : 2;
}

static int cand_before(const bsz_cand *x, const bsz_cand *y, uint64_t now)
{
	const int cx = cand_class(x, now), cy = cand_class(y, now);
	if (cx != cy)
		return cx < cy;
	if (x->last != y->last)
		return x->last < y->last;
	if (x->vtime != y->vtime)
		return x->vtime < y->vtime;
	return x->idx < y->idx;
}

void bsz_pick(bsz_cand *c, int n, int rows, uint64_t now)
{
	/* Selection of the first rows (rows is small next to n only when the
	 * target is tight; n is at most the batch). */
	for (int i = 0; i < rows && i < n; i++) {
		int best = i;
		for (int j = i + 1; j < n; j++)
			if (cand_before(&c[j], &c[best], now))
				best = j;
		if (best != i) {
			bsz_cand t = c[i];
			c[i] = c[best];
			c[best] = t;
		}
	}
}
