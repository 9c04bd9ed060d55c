/* Prompt-lookup speculative decoding for greedy sequences.
 *
 * Drafts: the last n tokens of a sequence's history (prompt + generated,
 * the pending token included) are looked up earlier in that history, for n
 * from SPEC_NGRAM_MAX down to SPEC_NGRAM_MIN; the tokens that followed the
 * most recent earlier occurrence are the draft. The caller feeds the pending
 * token and the draft in one llama_decode with logits for every position,
 * then steps the sequence (gen_seq_next) over the rows in order: row i gives
 * the token after draft token i - 1, and as long as that token equals draft
 * token i the next row is valid too. The first mismatch (or the last row)
 * ends the step; the KV positions of the rejected draft tokens are dropped
 * (llama_seq_truncate). Since a prompt chunk evaluated in one step gives
 * exactly the logits of feeding it one token at a time (the engine is batch
 * invariant), the output is byte-identical to plain greedy decoding.
 *
 * Adaptive length: a draft starts at the cap; a fully accepted draft doubles
 * the next one (up to the cap), a partly accepted one sets it to the accepted
 * count + 1; SPEC_MISSES drafts in a row with nothing accepted pause drafting
 * for a back-off of steps that doubles (SPEC_BACKOFF0 .. SPEC_BACKOFF_MAX)
 * while it keeps failing, so a sequence that does not copy its prompt pays
 * almost nothing.
 *
 * Paying: where the caller times its steps (spec_time; spec_run does), the
 * first SPEC_TIME_MIN steps decode plainly to learn the time per token of a
 * plain step; after SPEC_TIME_MIN drafting steps, drafting that gives tokens
 * slower than plain steps (a small model whose steps cost per token, not per
 * weight read) pauses for a back-off of its own (SPEC_BACKOFF0 doubling to
 * SPEC_TIME_BACKOFF_MAX, reset when drafting pays again), then measures
 * again.
 *
 * Not thread-safe: one spec_ctl per sequence, used by one thread. */
#ifndef HERD_MODEL_SPEC_H
#define HERD_MODEL_SPEC_H

#include <stdint.h>

#define SPEC_NGRAM_MAX 4
#define SPEC_NGRAM_MIN 2
#define SPEC_MAX_DRAFT 32   /* largest cap accepted */
#define SPEC_MISSES 3
#define SPEC_BACKOFF0 4
#define SPEC_BACKOFF_MAX 64
#define SPEC_TIME_MIN 4     /* timed steps of each kind before comparing */
#define SPEC_TIME_EWMA 0.25 /* weight of the newest step time */
#define SPEC_TIME_BACKOFF_MAX 256

typedef struct spec_ctl {
	int max;          /* draft cap; 0: never drafts */
	int cur;          /* next draft's length */
	int misses;       /* drafts in a row with nothing accepted */
	int skip;         /* steps left without drafting */
	int backoff;      /* the next pause after misses */
	int tbackoff;     /* the next pause after drafting did not pay */
	int32_t *hist;    /* prompt + generated tokens [n_hist], owned */
	int n_hist, cap;
	uint64_t drafts, drafted, accepted; /* counters */
	/* step times (spec_time): ms per token, moving averages */
	int timed, n_plain, n_spec;
	double ms_plain, ms_spec;
} spec_ctl;

/* max (clamped to SPEC_MAX_DRAFT; <= 0: off) and the prompt; cap bounds the
 * history (prompt + every token that may be generated). 0 or -ENOMEM. */
int spec_init(spec_ctl *s, int max, const int32_t *prompt, int n_prompt, int cap);
void spec_fini(spec_ctl *s); /* accepts a zeroed s */
/* A token the sequence sampled (the pending one). */
void spec_push(spec_ctl *s, int32_t tok);
/* Up to lim (and the adaptive length) draft tokens continuing the history
 * into out; returns how many (0: decode plainly). */
int spec_draft(spec_ctl *s, int lim, int32_t *out);
/* The outcome of a draft of n tokens of which accepted matched. */
void spec_done(spec_ctl *s, int n, int accepted);
/* A step of n draft tokens (0: a plain step), accepted of them, took ms
 * (decode and sampling): from the first call on, drafting must pay. */
void spec_time(spec_ctl *s, int n, int accepted, double ms);

/* ---- a single sequence, start to end ----------------------------------- */

#include "model/generate.h"
#include "model/llama.h"

/* Called with every step's piece; nonzero stops the generation (the caller
 * then ends g itself, e.g. gen_seq_stop). */
typedef int (*spec_piece_fn)(void *arg, const gen_step *st);

/* Steps g (its prompt already evaluated into seq, logits[0 .. n_vocab) the
 * last position's) to its end, drafting with sc (sc->max 0: plain
 * decoding); logits holds (1 + sc->max) * n_vocab floats. Returns 0 (g
 * finished or fn stopped it) or the error of gen_seq_next / llama_decode. */
int spec_run(llama_ctx *c, llama_seq *seq, gen_seq *g, spec_ctl *sc, float *logits,
	     spec_piece_fn fn, void *arg);

#endif
