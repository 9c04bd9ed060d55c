/* Rounding of weight rows into a block type: round to nearest, the
 * importance-weighted clip search, and GPTQ error feedback. See
 * quantize.h. Every path quantizes through the type's own from_float, so
 * any weight type works. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/quantize.h"

#define CLIP_STEPS 16       /* candidates 1.00, 0.98, ... 0.70 of the block's max */
#define GPTQ_DAMP 0.01      /* of the mean Hessian diagonal */

/* Scratch of one row. */
typedef struct round_ctx {
	const kern_ops *ops;
	kern_type t;
	int64_t K, B;       /* row length, block size */
	size_t bsz;         /* bytes per block */
	const double *w;    /* [K] importance per column, or NULL */
	float *y, *q;       /* [B] candidate input, its dequantized value */
	uint8_t *blk;       /* [bsz] candidate bytes */
} round_ctx;

/* Quantizes x[0..B) into dst choosing, among clipped copies of x, the one
 * with the least w-weighted squared error (w NULL: plain RTN). Writes the
 * dequantized result into deq. */
static void round_block(round_ctx *r, const float *x, const double *w, uint8_t *dst, float *deq)
{
	const int64_t B = r->B;
	r->ops->from_float[r->t](x, dst, B);
	r->ops->to_float[r->t](dst, deq, B);
	if (!w)
		return;
	double lo = 0, hi = 0, best = 0;
	for (int64_t i = 0; i < B; i++) {
		lo = fmin(lo, x[i]);
		hi = fmax(hi, x[i]);
		best += w[i] * ((double)x[i] - deq[i]) * ((double)x[i] - deq[i]);
	}
	for (int s = 1; s < CLIP_STEPS && hi > lo; s++) {
		/* both ends pulled in: the range of min/max types, the amax of symmetric ones */
		const float ch = (float)(hi * (1.0 - 0.02 * s)), cl = (float)(lo * (1.0 - 0.02 * s));
		for (int64_t i = 0; i < B; i++)
			r->y[i] = x[i] > ch ? ch : x[i] < cl ? cl : x[i];
		r->ops->from_float[r->t](r->y, r->blk, B);
		r->ops->to_float[r->t](r->blk, r->q, B);
		double e = 0;
		for (int64_t i = 0; i < B && e < best; i++)
			e += w[i] * ((double)x[i] - r->q[i]) * ((double)x[i] - r->q[i]);
		if (e < best) {
			best = e;
			memcpy(dst, r->blk, r->bsz);
			memcpy(deq, r->q, sizeof(float) * (size_t)B);
		}
	}
}

/* In-place Cholesky A = L L^T (lower, row-major n x n). Returns 0, or -1
 * when A is not positive definite. */
static int cholesky(double *A, int64_t n)
{
	for (int64_t j = 0; j < n; j++) {
		double d = A[j * n + j];
		for (int64_t k = 0; k < j; k++)
			d -= A[j * n + k] * A[j * n + k];
		if (!(d > 0))
			return -1;
		d = sqrt(d);
		A[j * n + j] = d;
		for (int64_t i = j + 1; i < n; i++) {
			double s = A[i * n + j];
			for (int64_t k = 0; k < j; k++)
				s -= A[i * n + k] * A[j * n + k];
			A[i * n + j] = s / d;
		}
		for (int64_t k = j + 1; k < n; k++)
			A[j * n + k] = 0;
	}
	return 0;
}

/* U (upper, row-major) with U^T U = H^-1 for the dampened Hessian: GPTQ's
 * form of the inverse. dead[k] marks columns never active (zeroed). */
static int gptq_factor(const quant_stat *st, double *U, uint8_t *dead)
{
	const int64_t K = st->K;
	double mean = 0;
	for (int64_t k = 0; k < K; k++)
		mean += st->H[k * K + k] / (double)K;
	memcpy(U, st->H, sizeof(double) * (size_t)(K * K));
	for (int64_t k = 0; k < K; k++) {
		dead[k] = !(st->H[k * K + k] > 0);
		if (dead[k]) {
			for (int64_t i = 0; i < K; i++)
				U[k * K + i] = U[i * K + k] = 0;
			U[k * K + k] = 1;
		}
		U[k * K + k] += GPTQ_DAMP * (mean > 0 ? mean : 1);
	}
	if (cholesky(U, K)) /* H = L L^T */
		return -1;
	/* L^-1 in place (lower), then H^-1 = L^-T L^-1 */
	double *inv = calloc((size_t)(K * K), sizeof(double));
	if (!inv)
		return -ENOMEM;
	for (int64_t j = 0; j < K; j++) {
		inv[j * K + j] = 1.0 / U[j * K + j];
		for (int64_t i = j + 1; i < K; i++) {
			double s = 0;
			for (int64_t k = j; k < i; k++)
				s += U[i * K + k] * inv[k * K + j];
			inv[i * K + j] = -s / U[i * K + i];
		}
	}
	for (int64_t i = 0; i < K; i++)
		for (int64_t j = 0; j <= i; j++) {
			double s = 0;
			for (int64_t k = i; k < K; k++)
				s += inv[k * K + i] * inv[k * K + j];
			U[i * K + j] = U[j * K + i] = s;
		}
	free(inv);
	if (cholesky(U, K)) /* H^-1 = Lh Lh^T; U = Lh^T */
		return -1;
	for (int64_t i = 0; i < K; i++)
		for (int64_t j = i + 1; j < K; j++) {
			U[i * K + j] = U[j * K + i];
			U[j * K + i] = 0;
		}
	return 0;
}

/* One row in GPTQ order: a block at a time, its error fed forward. */
static void gptq_row(round_ctx *r, const double *U, const uint8_t *dead, float *w, uint8_t *out,
		     double *wt)
{
	const int64_t K = r->K, B = r->B;
	float *deq = r->q + B;
	for (int64_t k = 0; k < K; k++)
		if (dead[k])
			w[k] = 0;
	for (int64_t b0 = 0; b0 < K; b0 += B) {
		for (int64_t j = 0; j < B; j++)
			wt[j] = 1.0 / (U[(b0 + j) * K + b0 + j] * U[(b0 + j) * K + b0 + j]);
		round_block(r, w + b0, wt, out + (size_t)(b0 / B) * r->bsz, deq);
		for (int64_t j = b0; j < b0 + B; j++) {
			const double e = ((double)w[j] - deq[j - b0]) / U[j * K + j];
			for (int64_t k = j + 1; k < K; k++)
				w[k] -= (float)(e * U[j * K + k]);
		}
	}
}

int quant_rows(const kern_ops *ops, kern_type t, float *W, int64_t rows, int64_t K,
	       const quant_stat *st, void *out)
{
	const kern_type_traits *tt = kern_type_info(t);
	if (!tt || !ops->from_float[t] || !ops->to_float[t] || K % tt->blck_size ||
	    (st && st->K != K))
		return HERD_E_INVAL;
	const size_t row = kern_row_size(t, K);
	if (!st || !tt->is_quantized) {
		for (int64_t r = 0; r < rows; r++)
			ops->from_float[t](W + r * K, (uint8_t *)out + (size_t)r * row, K);
		return 0;
	}
	round_ctx r = {.ops = ops, .t = t, .K = K, .B = tt->blck_size, .bsz = tt->type_size};
	const int gptq = st->H != NULL;
	double *imp = malloc(sizeof(double) * (size_t)K);
	double *U = gptq ? malloc(sizeof(double) * (size_t)(K * K)) : NULL;
	uint8_t *dead = calloc((size_t)K, 1);
	r.y = malloc(sizeof(float) * (size_t)r.B * 3);
	r.blk = malloc(r.bsz);
	int rc = imp && dead && r.y && r.blk && (!gptq || U) ? 0 : -ENOMEM;
	if (!rc && gptq && gptq_factor(st, U, dead))
		rc = HERD_E_INVAL; /* not positive definite even dampened */
	r.q = r.y + r.B;
	for (int64_t k = 0; k < K && !rc; k++)
		imp[k] = st->n_rows ? st->sumsq[k] / (double)st->n_rows : 1.0;
	r.w = imp;
	for (int64_t i = 0; i < rows && !rc; i++) {
		uint8_t *o = (uint8_t *)out + (size_t)i * row;
		if (gptq) {
			gptq_row(&r, U, dead, W + i * K, o, imp);
			continue;
		}
		for (int64_t b0 = 0; b0 < K; b0 += r.B)
			round_block(&r, W + i * K + b0, imp + b0, o + (size_t)(b0 / r.B) * r.bsz, r.q + r.B);
	}
	free(imp);
	free(U);
	free(dead);
	free(r.y);
	free(r.blk);
	return rc;
}
