/* Step sizing for a latency target (config target_tpot_ms): how many
 * running sequences take a decode token in a step and how many prompt
 * tokens the step prefills, so that the p95 time per output token stays
 * under the target while the steps stay as big as the target allows (the
 * weights are read once per step, so bigger steps mean more tokens/s).
 *
 * Three parts, all pure (no clock, no I/O; the scheduler feeds them):
 * - bsz_model: a per-step cost model fitted online, step time as a function
 *   of the decode rows and the prefill tokens, ms = a + b*rows + c*prefill,
 *   by exponentially weighted least squares (old steps fade, so it follows
 *   a machine whose speed drifts) with a small ridge towards the single-
 *   ratio estimate, so it predicts from the first step on even when rows and
 *   prefill never varied;
 * - bsz_ctl: feedback on the measured gaps between two steps that decode
 *   (what a sequence decoding in every step sees as its time per output
 *   token): the budget a step is sized to is the target times a factor that
 *   shrinks while the p95 of the recent gaps is above the target and grows
 *   back while it is well below (the model predicts a mean; the target is a
 *   p95, and the gaps include the work between steps);
 * - bsz_choose / bsz_pick: the step's sizes from the model and the budget,
 *   and which pending sequences decode when not all fit. Turn by turn in
 *   every step would give every sequence gaps of several steps, so the
 *   choice is sticky: first the sequences that waited BSZ_MAX_WAIT steps or
 *   more (the longest first), then those that decoded in the previous step,
 *   then the others (the longest waiting first); ties go to the agent served
 *   the fewest tokens (the scheduler's fair-share virtual time). A pending
 *   sequence thus decodes within BSZ_MAX_WAIT + ceil(pending / rows) steps,
 *   and the scheduler keeps pending near what fits by starting new prompts
 *   only when there is room (bsz_plan.room). */
#ifndef HERD_BROKER_BATCHSIZE_H
#define HERD_BROKER_BATCHSIZE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bsz_model {
	double xx[3][3]; /* weighted sums of x x^T, x = (1, rows, prefill) */
	double xy[3];    /* weighted sums of x * ms */
	double w_tok;    /* weighted sums for the ratio estimate: ms and tokens */
	double w_ms;
	double coef[3];  /* a, b, c after the last fit */
	uint64_t n;      /* steps observed */
} bsz_model;

void bsz_model_init(bsz_model *m);
/* One measured step: rows decode tokens, prefill prompt tokens, ms long.
 * Steps with no token or a time <= 0 (or not finite) are ignored. */
void bsz_model_observe(bsz_model *m, int rows, int prefill, double ms);
/* Predicted ms of a step; 0 before any step was observed. */
double bsz_model_predict(const bsz_model *m, int rows, int prefill);

#define BSZ_GAPS 256 /* recent inter-token gaps the controller looks at */

typedef struct bsz_ctl {
	double target_ms;
	double factor;          /* budget = target_ms * factor */
	double gaps[BSZ_GAPS];  /* ring of recent gaps, ms */
	int n_gaps, next_gap;
	int since_adjust;       /* gaps added since the last adjustment */
} bsz_ctl;

void bsz_ctl_init(bsz_ctl *c, double target_ms);
/* One measured gap between two decoding steps. */
void bsz_ctl_gap(bsz_ctl *c, double ms);
/* p95 of the recent gaps (0 when none). */
double bsz_ctl_p95(const bsz_ctl *c);
/* The ms a step may take now. */
double bsz_ctl_budget(const bsz_ctl *c);

/* What a step runs. */
typedef struct bsz_plan {
	int rows;    /* pending sequences that decode */
	int prefill; /* prompt tokens (0..max_prefill) */
	int room;    /* more sequences that could decode within the budget:
		      * how many new ones may join (begin their prefill) */
} bsz_plan;

/* Sizes a step for budget_ms: pending sequences have a token to decode,
 * want_prefill prompt tokens are waiting (0 when none), at most max_prefill
 * of them fit in a step and the step holds at most max_tokens tokens.
 * rows is the largest count <= pending whose predicted time fits (at least
 * 1 when pending > 0: a step always makes progress). When every pending
 * sequence fits, the rest of the budget goes to prefill (at least
 * min_prefill tokens while something waits, so a prompt is never stuck);
 * when not all fit no prompt is prefilled (a new sequence would only take
 * turns with the running ones). An empty model (nothing observed yet) fits
 * everything. */
bsz_plan bsz_choose(const bsz_model *m, double budget_ms, int pending, int want_prefill,
		    int max_prefill, int max_tokens, int min_prefill);

/* A pending sequence as bsz_pick sees it. */
typedef struct bsz_cand {
	uint64_t last;  /* step count when it last decoded (or became pending) */
	uint64_t vtime; /* its agent's fair-share virtual time */
	int idx;        /* the caller's index */
} bsz_cand;

#define BSZ_MAX_WAIT 16 /* steps a pending sequence waits before it goes first */

/* Orders c[0..n) so that the first rows are the ones to decode in step now
 * (see above; last < now for every candidate). */
void bsz_pick(bsz_cand *c, int n, int rows, uint64_t now);

#ifdef __cplusplus
}
#endif
#endif
