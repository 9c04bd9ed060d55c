/* Continuous-batching scheduler: one thread driving one llama_ctx.
 *
 * Requests come in from the event loop (sched_submit, any thread); every
 * step the scheduler thread
 *   1. takes new requests and cancellations from its queue (mutex),
 *      tokenizes new prompts and rejects impossible ones (err events),
 *   2. drops requests past their deadline (done, reason "deadline"),
 *   3. admits waiting requests, highest effective priority first (priority
 *      plus one per aging period waited), then the agent with the fewest
 *      running sequences, then arrival order, while the batch has a free slot
 *      (max_batch) and the KV pool can hold the request's whole worst case
 *      (prompt + max_tokens positions, so a running sequence never runs out
 *      of pages). A request at or above priority_threshold may pause the
 *      lowest-priority running sequence when the batch is full; a paused
 *      sequence keeps its KV pages and resumes before anyone is admitted.
 *   4. runs ONE llama_decode over all running sequences: one token for each
 *      sequence that is generating, and prompt chunks (chunked prefill) for
 *      the others, bounded by prefill_chunk tokens per step while any
 *      sequence is generating, by the ctx's max_step_tokens otherwise,
 *   5. samples each sequence that got logits with its own sampler,
 *      detokenizes (tok_piece), applies stop strings (text from the stop
 *      string on is dropped; in streaming mode text that might begin a stop
 *      string or ends inside a UTF-8 character is held back) and posts
 *      `tok`, `done` and `err` events to the outbound queue; then writes 1 to
 *      the wake eventfd,
 *   6. frees the slot, sampler and KV pages of every finished or cancelled
 *      request at once (llama_seq_reset).
 *
 * dynamic_batching on: new requests join between steps (continuous
 * batching). Off: a new batch is admitted only when the previous one has
 * finished (static batching). With an idle batch the scheduler waits up to
 * max_wait_ms after the oldest arrival for the batch to fill, unless a
 * request at or above priority_threshold is waiting.
 *
 * Threading: sched_create starts the thread; every other function may be
 * called from any thread. sched_destroy stops and joins it.
 */
#ifndef HERD_BROKER_SCHEDULER_H
#define HERD_BROKER_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "broker/log.h"
#include "model/llama.h"
#include "model/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sched sched;

typedef struct sched_opts {
	llama_ctx *ctx;         /* borrowed; used only by the scheduler thread */
	int max_batch;          /* running sequences per step; <= 0: 32 */
	int max_wait_ms;        /* batch-forming wait, see above */
	int dynamic_batching;
	int priority_threshold;
	int aging_ms;           /* <= 0: 1000; one priority level per period waited */
	int prefill_chunk;      /* <= 0: 128 */
	int max_tokens;         /* cap on a request's max_tokens; <= 0: none */
	int wake_fd;            /* eventfd written when events are posted; < 0: none */
	const blog *log;        /* may be NULL; step lines at BLOG_DEBUG */
	const char *name;       /* model name for log lines; copied */
} sched_opts;

enum { SCHED_IN_PROMPT = 0, SCHED_IN_TOKENS = 1, SCHED_IN_CHAT = 2 };

/* A generation request. Everything it points to is owned by it and freed by
 * sched_req_free (allocate strings and arrays with malloc). */
typedef struct sched_req {
	uint64_t conn;         /* connection id: events carry it back */
	uint64_t id;           /* the agent's request id */
	uint64_t agent;        /* agent id, for fair share and stats */
	int input;             /* SCHED_IN_* */
	char *prompt;          /* PROMPT: text[prompt_len], need not be NUL-terminated */
	size_t prompt_len;
	int32_t *tokens;       /* TOKENS */
	int n_tokens;
	char **roles, **contents; /* CHAT: n_msgs NUL-terminated strings each */
	int n_msgs;
	int max_tokens;        /* tokens to generate (the protocol's default is 128) */
	sampler_params sp;     /* temperature <= 0: greedy */
	char **stop;           /* n_stop non-empty NUL-terminated strings */
	int n_stop;
	int prio;              /* higher runs first; 0 = normal */
	uint32_t deadline_ms;  /* relative to submission; 0 = none */
	int stream;            /* tok events per token; done carries no text */
	int cache;             /* response cache allowed (not used yet) */
} sched_req;

/* A zeroed request with the protocol's defaults (max_tokens 128, greedy
 * sampling with llama.cpp's other defaults, cache on). NULL on ENOMEM. */
sched_req *sched_req_new(void);
void sched_req_free(sched_req *r); /* accepts NULL */

typedef enum sched_ev_type { SCHED_EV_TOK = 1, SCHED_EV_DONE = 2, SCHED_EV_ERR = 3 } sched_ev_type;

/* An outbound event. A request ends with exactly one DONE or one ERR. */
typedef struct sched_event {
	struct sched_event *next;
	sched_ev_type type;
	uint64_t conn, id, agent;
	int32_t tok;           /* TOK: the token id */
	char *text;            /* TOK: the piece (may be empty); DONE: full text when not
				* streaming, else NULL. Owned, NUL-terminated. */
	size_t text_len;
	const char *reason;    /* DONE: "stop", "length", "cancel", "deadline" (static) */
	int code;              /* ERR: HERD_E_* or -errno */
	char msg[192];         /* ERR */
	int n_prompt, n_gen, n_cached;
	double t_queue_ms, t_first_ms, t_total_ms; /* DONE; t_first_ms < 0: no token */
} sched_event;

void sched_event_free(sched_event *e); /* frees a whole list; accepts NULL */

#define SCHED_HIST_N 65 /* steps by sequence count 0..64 (64 = 64 or more) */
#define SCHED_LAT_N 20  /* latency buckets: [0,1) ms, [1,2), [2,4), ... [2^17, inf) */

typedef struct sched_lat {
	uint64_t n;
	double sum_ms, max_ms;
	uint64_t hist[SCHED_LAT_N];
} sched_lat;

typedef struct sched_stats {
	uint64_t steps;
	uint64_t step_seqs;        /* sum over steps of sequences in the step */
	uint64_t step_hist[SCHED_HIST_N];
	int max_step_seqs;
	double step_ms;            /* total time in llama_decode */
	uint64_t tokens_gen;       /* sampled tokens delivered */
	uint64_t tokens_prompt;    /* prompt tokens evaluated */
	uint64_t requests_done, requests_err, requests_cancelled;
	uint64_t preemptions;
	int waiting, running, paused; /* now; waiting includes the submit queue */
	int kv_pages_total, kv_pages_free, kv_pages_reserved;
	sched_lat queue, first, total;
} sched_stats;

/* Starts the scheduler thread over o->ctx. Returns 0, HERD_E_INVAL (NULL
 * ctx), -ENOMEM or -errno of pthread_create. */
int sched_create(sched **out, const sched_opts *o);
/* Stops the thread (requests still queued are dropped without events) and
 * frees everything; the ctx is not destroyed. Accepts NULL. */
void sched_destroy(sched *s);

/* Queues r. On 0 the scheduler owns r; on error the caller keeps it:
 * HERD_E_CANCELLED after sched_shutdown. */
int sched_submit(sched *s, sched_req *r);
/* Cancels request id of connection conn: a DONE with reason "cancel" follows
 * if it was still queued or running; nothing when unknown or finished. */
void sched_cancel(sched *s, uint64_t conn, uint64_t id);
/* Drops every request of conn without events (the connection is gone). */
void sched_cancel_conn(sched *s, uint64_t conn);
/* Refuses new requests and cancels every queued and running one, each with a
 * DONE reason "cancel". */
void sched_shutdown(sched *s);

/* Takes every posted event, oldest first (NULL when none). The caller frees
 * the list with sched_event_free. */
sched_event *sched_events_take(sched *s);
/* 1 when nothing is queued, waiting or running. */
int sched_idle(sched *s);
void sched_get_stats(sched *s, sched_stats *st);

#ifdef __cplusplus
}
#endif
#endif
