/* Token sampler: greedy, or repetition penalty -> top-k -> top-p -> min-p ->
 * temperature -> a draw from a seeded PRNG, with llama.cpp's semantics for
 * each stage (its common_sampler chain with the default sampler order,
 * minus DRY/typical/XTC).
 *
 * Determinism: the PRNG is herd's own (xoshiro256** seeded through
 * splitmix64), so the same seed, logits and accepted tokens give the same
 * sequence on every machine and run. There is no "random seed" value: the
 * caller chooses the seed. Ties between equal logits always go to the lowest
 * token id.
 *
 * A sampler is one sequence's state (PRNG, penalty window); it is not
 * thread-safe: use one per sequence or serialise calls.
 */
#ifndef HERD_MODEL_SAMPLER_H
#define HERD_MODEL_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sampler_params {
	float temperature;    /* <= 0: greedy (argmax after the repetition penalty) */
	int32_t top_k;        /* <= 0: disabled */
	float top_p;          /* >= 1: disabled */
	float min_p;          /* <= 0: disabled; keeps p >= min_p * p_max */
	float repeat_penalty; /* 1: disabled; logit > 0 ? logit / rp : logit * rp */
	int32_t repeat_last_n;/* window of accepted tokens for the penalty; 0: disabled */
	uint64_t seed;
} sampler_params;

/* llama.cpp's defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0, repeat_last_n 64; seed 0x5eed. */
sampler_params sampler_params_default(void);

typedef struct sampler sampler;

/* Creates a sampler over a vocabulary of n_vocab tokens; allocates all
 * working memory (O(n_vocab)) here, none per call. Returns 0, HERD_E_INVAL
 * (NULL out/p, n_vocab < 1, negative repeat_last_n, non-positive or NaN
 * repeat_penalty, NaN parameters) or -ENOMEM. *out is NULL on failure. */
int sampler_create(sampler **out, const sampler_params *p, int n_vocab);
void sampler_destroy(sampler *s); /* accepts NULL */

/* Picks the next token from logits[0..n_vocab) (not modified). The
 * repetition penalty applies in greedy mode too, as in llama.cpp. NaN
 * logits count as -inf. Returns a token id in [0, n_vocab). Does not accept
 * the token: call sampler_accept() with whatever token the caller keeps. */
int32_t sampler_sample(sampler *s, const float *logits);

/* Records tok (prompt or generated) into the repetition-penalty window.
 * Out-of-range ids are ignored. */
void sampler_accept(sampler *s, int32_t tok);

/* Forgets the accepted tokens and restarts the PRNG from the seed. */
void sampler_reset(sampler *s);

#ifdef __cplusplus
}
#endif
#endif
