/* Quality of a model against a reference on token streams: the KL
 * divergence of the model's next-token distribution from the reference's
 * at every position, agreement of their top tokens, and the perplexity of
 * each on the streams' own next tokens. `herd eval`, `herd quantize
 * --calib` and the tests share it.
 *
 * Token streams: a file of int32 little-endian ids, n streams of len ids
 * each, row-major [n][len] (the fixtures' calib.tokens format). The file
 * has no header: len is the caller's.
 *
 * Definitions (per position p of a stream, logits zr (reference) and zm):
 *   KL_p    = sum_v softmax(zr)_v * (log softmax(zr)_v - log softmax(zm)_v)
 *   top-1   = argmax zr == argmax zm (lowest id on ties)
 *   PPL     = exp(mean over positions p < len-1 of -log softmax(z)_{tok[p+1]})
 *   quality = 100 * PPL(reference) / PPL(model), in percent (100: as good as
 *             the reference; above 100 when the model predicts the stream
 *             better). This is the figure quality floors are stated in.
 * KL is computed in double precision; p99 is the 99th percentile (nearest
 * rank) of KL_p over all positions.
 *
 * Not thread-safe on one accumulator; no global state. */
#ifndef HERD_MODEL_QUALITY_H
#define HERD_MODEL_QUALITY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest stream file read (bytes) and stream length accepted. */
#define QUALITY_MAX_FILE (1u << 28)
#define QUALITY_MAX_LEN 65536

/* Reads path as int32 [n][len] streams: the size must be a positive
 * multiple of 4 * len, every id in [0, n_vocab) (n_vocab <= 0: not
 * checked). Returns 0 with *tokens (malloc'd, caller frees) and *n_streams,
 * or HERD_E_INVAL (len out of range), HERD_E_FORMAT (size not a multiple,
 * empty), HERD_E_RANGE (an id outside the vocabulary: the message names
 * stream, position and id), -errno; message in err. */
int quality_read_streams(const char *path, int len, int n_vocab, int32_t **tokens, int *n_streams,
			 char *err, size_t errlen);

typedef struct quality_acc {
	int n_vocab;
	int64_t n_pos;      /* positions compared */
	int64_t n_top1;     /* of them, same top token */
	int64_t n_next;     /* positions with a next token (for perplexity) */
	double kl_sum, kl_max;
	double nll_ref, nll_model; /* summed negative log-likelihoods */
	double *kls;        /* every KL_p, for the percentile */
	int64_t kls_cap;
	double *lr, *lm;    /* [n_vocab] scratch: the two log-softmaxes */
} quality_acc;

typedef struct quality_result {
	int64_t n_pos;
	double kl_mean, kl_p99, kl_max;
	double top1_pct;      /* 0..100 */
	double ppl_ref, ppl_model;
	double quality_pct;   /* 100 * ppl_ref / ppl_model */
} quality_result;

/* n_vocab >= 1. Returns 0 or HERD_E_INVAL. */
int quality_init(quality_acc *a, int n_vocab);
void quality_free(quality_acc *a);
/* Adds one position: ref and model logits (n_vocab each), and the id of
 * the stream's next token (or -1 when the position is the stream's last).
 * Returns 0 or -ENOMEM. */
int quality_add(quality_acc *a, const float *ref, const float *model, int32_t next);
/* Summary so far (zeros when nothing was added). Sorts a->kls. */
quality_result quality_result_of(quality_acc *a);

/* log softmax of z[0..n) into out (double), returning the index of the
 * largest z (lowest on ties). */
int quality_log_softmax(const float *z, int n, double *out);

#ifdef __cplusplus
}
#endif
#endif
