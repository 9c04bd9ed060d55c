/* One generation request and one generation step, shared by every caller:
 * the broker's scheduler (many sequences batched into one llama_decode),
 * libherd's herd_local_generate and `herd run` (one sequence each).
 *
 * gen_request is THE description of a request inside herd: libherd fills it
 * from a herd_request (include/herd/herd.h), the wire codec (proto/) decodes
 * a `gen` frame straight into it and encodes one from it, the scheduler
 * keeps an owned copy (gen_request_dup). Its strings are views (gen_str).
 *
 * gen_seq is one sequence being generated. The caller owns the decoding:
 *
 *     gen_seq g;
 *     gen_seq_begin(&g, model, &bounds, &req, err, errlen);  tokenize, sampler
 *     feed g.prompt[0 .. g.n_prompt) to llama_decode (in chunks if it likes)
 *     for (;;) {
 *             gen_step st;
 *             gen_seq_next(&g, logits_of_last_position, clock_mono_ms(), &st);
 *             stream st.piece[0 .. st.len) (may be empty)
 *             if (st.finish != HERD_FINISH_NONE) break;
 *             feed st.token to llama_decode
 *     }
 *     text = g.text[0 .. g.len); gen_seq_end(&g);
 *
 * The rules every caller thereby shares:
 * - Prompt fit: a prompt fits when n_prompt <= n_ctx. The last sampled token
 *   is never fed back, so generation then has room for n_ctx - n_prompt + 1
 *   tokens: max_tokens is clamped to that (and to the caller's cap), and the
 *   sequence finishes with HERD_FINISH_LENGTH when it is reached. A prompt of
 *   n_ctx + 1 tokens or more is HERD_E_NOSPACE; the prompt is tokenized into
 *   a buffer of n_ctx ids, never more.
 * - A token id outside the vocabulary in a token prompt is HERD_E_RANGE; an
 *   empty prompt is HERD_E_INVAL.
 * - n_gen counts the tokens that became text: an end-of-generation token
 *   finishes the sequence (HERD_FINISH_STOP) and is not counted.
 * - Stop strings (empty ones are ignored): the text is cut where the
 *   earliest one begins (HERD_FINISH_STOP); the stop string is not part of
 *   the text.
 * - Streaming: a piece holds the new text minus a tail that might still
 *   become a stop string or that ends inside a UTF-8 character
 *   (model/textstream.h). The step that finishes a sequence, and
 *   gen_seq_stop, release that tail, so the pieces of a sequence always
 *   add up to its text.
 *
 * Threading: a gen_seq is used by one thread at a time; the functions keep
 * no global state.
 */
#ifndef HERD_MODEL_GENERATE_H
#define HERD_MODEL_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "herd/herd.h" /* herd_finish */
#include "model/sampler.h"

/* Only pointers to these cross this header (model/llama.h, model/tokenizer.h
 * define them), so the wire codec that includes it stays light. C11 allows
 * the repeated typedefs. */
typedef struct llama_model llama_model;
typedef struct tok_vocab tok_vocab;

#ifdef __cplusplus
extern "C" {
#endif

/* max_tokens when a request does not say (herd_request_init, the wire). */
#define GEN_DEFAULT_MAX_TOKENS 128

/* A byte string view: ptr may be NULL only when len == 0. Strings decoded
 * from a frame are not NUL-terminated; those of a request given to
 * gen_seq_begin must be (gen_request_dup's copies and C strings are). */
typedef struct gen_str {
	const char *ptr;
	size_t len;
} gen_str;

/* One chat message, rendered by the chat template (model/chat.h). */
typedef struct gen_msg {
	gen_str role;    /* "system", "user", "assistant" */
	gen_str content;
} gen_msg;

typedef enum gen_input {
	GEN_INPUT_NONE = 0,
	GEN_INPUT_PROMPT,   /* text; BOS first when the vocabulary says so */
	GEN_INPUT_TOKENS,   /* token ids used as they are */
	GEN_INPUT_MESSAGES  /* chat messages through the template */
} gen_input;

/* How to generate: shared by every caller. */
typedef struct gen_params {
	int32_t max_tokens;      /* >= 0; GEN_DEFAULT_MAX_TOKENS */
	sampler_params sampling; /* temperature <= 0: greedy (model/sampler.h) */
	const gen_str *stop;     /* stop strings [n_stop]; empty ones are ignored */
	size_t n_stop;
	uint64_t deadline_ms;    /* relative to gen_bounds.t_start; 0: none */
} gen_params;

/* One generation request: what, how, and how it travels. Wire key names
 * (docs/protocol.md) in brackets. */
typedef struct gen_request {
	uint64_t id;                 /* [id] the agent's request id */
	gen_str model;               /* [model] */
	gen_input input;             /* which one of the three below */
	gen_str prompt;              /* [prompt] */
	const int32_t *tokens;       /* [tokens] ids in [0, INT32_MAX] */
	size_t n_tokens;
	const gen_msg *messages;     /* [messages] n >= 1 */
	size_t n_messages;
	gen_params params;           /* [max_tokens temp top_k top_p min_p rep_pen
				      *  seed stop deadline_ms] */
	int has_prio;                /* [prio] given; otherwise the agent's default */
	int32_t prio;
	int stream;                  /* [stream] tok events per token */
	int cache;                   /* [cache] 0: the broker's response cache is
				      * neither read nor written (broker/respcache.h) */
} gen_request;

/* The protocol's defaults: max_tokens GEN_DEFAULT_MAX_TOKENS, every
 * sampling stage off (temperature 0 = greedy, top_k 0, top_p 1, min_p 0,
 * repeat_penalty 1, seed 0; repeat_last_n of sampler_params_default),
 * cache 1, everything else 0 / empty. */
void gen_request_init(gen_request *r);

/* Deep copy of r in one allocation: every string NUL-terminated, every
 * array owned. Free with gen_request_free. Returns 0, HERD_E_INVAL (NULL
 * arguments, a NULL pointer with a non-zero length), -ENOMEM. */
int gen_request_dup(gen_request **out, const gen_request *r);
void gen_request_free(gen_request *r); /* accepts NULL */

/* ---- one sequence ----------------------------------------------------- */

/* Where a sequence runs. */
typedef struct gen_bounds {
	int n_ctx;        /* positions the sequence may use (llama_ctx_n_ctx) */
	int max_tokens;   /* cap on the request's max_tokens; <= 0: none */
	double t_start;   /* ms on clock_mono_ms(): the deadline counts from here */
} gen_bounds;

/* A sequence. Caller-owned struct; fields are read-only for the caller. */
typedef struct gen_seq {
	const tok_vocab *vocab;
	sampler *smp;
	int32_t *prompt;         /* the tokenized prompt [n_prompt], owned */
	int n_prompt;
	int max_gen;             /* max_tokens clamped to the context and the cap */
	int n_gen;               /* tokens that became text */
	int32_t last;            /* the last sampled token; -1 before the first */
	double t_deadline;       /* ms on clock_mono_ms(); 0: none */
	const char **stop;       /* the request's non-empty stop strings [n_stop] */
	size_t n_stop;
	char *text;              /* generated text [len], NUL-terminated, owned */
	size_t len, cap;
	size_t emitted;          /* bytes of text already handed out as pieces */
	char *piece;             /* detokenizer scratch [piece_cap] */
	size_t piece_cap;
	herd_finish finish;      /* HERD_FINISH_NONE until the sequence ends */
} gen_seq;

/* What one gen_seq_next (or gen_seq_stop) produced. */
typedef struct gen_step {
	herd_finish finish;  /* NONE: feed token and call again; else finished */
	int32_t token;       /* the token sampled now; -1 when none was */
	int is_text;         /* token became text (counted in n_gen); 0 for an
			      * end-of-generation token or none */
	const char *piece;   /* text that may be streamed now, [len] bytes, not
			      * NUL-terminated; valid until the next call */
	size_t len;
} gen_step;

/* Prepares s for req on model m: tokenizes the input (bounded by
 * b->n_ctx, see the prompt-fit rule above), checks token ids, clamps
 * max_tokens, creates the sampler and accepts the prompt into it, sets the
 * deadline. The request must outlive s (s points at its stop strings).
 * Decodes nothing. On error s holds nothing to free (gen_seq_end is still
 * allowed) and err (when errlen > 0) says why.
 * Errors: HERD_E_INVAL (NULL arguments, no input, empty prompt, bad
 * sampling parameters), HERD_E_RANGE (token id outside the vocabulary),
 * HERD_E_NOSPACE (prompt longer than the context), the tokenizer's and
 * chat template's errors, -ENOMEM. */
int gen_seq_begin(gen_seq *s, const llama_model *m, const gen_bounds *b, const gen_request *req,
		  char *err, size_t errlen);

/* One step, given the logits (n_vocab floats) of the sequence's last
 * position at time now (ms, clock_mono_ms()). In order: max_gen reached
 * (only possible for max_tokens 0) -> LENGTH without sampling; deadline
 * passed -> DEADLINE without sampling; sample and accept a token;
 * end-of-generation -> STOP; append its text; a stop string -> STOP (text
 * cut); max_gen reached -> LENGTH; else NONE. Fills *out. Calling it after
 * the sequence finished returns the same finish with an empty piece.
 * Returns 0 or -ENOMEM (the sequence is then unusable: end it). */
int gen_seq_next(gen_seq *s, const float *logits, double now, gen_step *out);

/* Ends s for a reason of the caller's (HERD_FINISH_CANCEL, or
 * HERD_FINISH_DEADLINE noticed outside gen_seq_next) and releases the
 * held-back tail as out's piece (token = the last sampled one). No effect
 * on the finish of a sequence that already finished (out then holds that
 * finish and an empty piece). */
void gen_seq_stop(gen_seq *s, herd_finish why, gen_step *out);

/* 1 when s has a deadline and now (ms) is at or past it. */
int gen_seq_expired(const gen_seq *s, double now);

/* Takes the text out of s: a malloc'd NUL-terminated string of *len bytes
 * (an empty one when nothing was generated), or NULL on ENOMEM. */
char *gen_seq_take_text(gen_seq *s, size_t *len);

/* Frees what s holds and zeroes it. Accepts a zeroed or failed s. */
void gen_seq_end(gen_seq *s);

#ifdef __cplusplus
}
#endif
#endif
