/* Continuous-batching scheduler: one thread driving one llama_ctx.
 *
 * Requests come in from the event loop (sched_submit, any thread); every
 * step the scheduler thread
 *   1. takes new requests and cancellations from its queue (mutex),
 *      begins their generation (model/generate.h: tokenize, prompt-fit
 *      rule, sampler) and rejects impossible ones (err events); a
 *      deterministic request identical to one in flight follows it (one
 *      sequence, events fanned out to every requester, done.merged), or is
 *      answered from the response cache (sched_opts.respcache, done.cached):
 *      see "request merging and the response cache" in scheduler.c,
 *   2. drops requests past their deadline (done, HERD_FINISH_DEADLINE),
 *   3. admits waiting requests by fair share between agents: highest
 *      priority first (the broker's policy has already clamped it, see
 *      session.c), then the agent with the fewest running sequences, then
 *      the agent that has been served the fewest tokens (prefill + generated,
 *      a virtual time: an agent that comes back after being idle starts at the
 *      smallest virtual time of the active agents, so it banks no credit),
 *      then arrival order (so within one agent: first come, first served).
 *      There is no cross-agent aging: an old backlog never outranks a
 *      newcomer of the same priority. An agent runs at most
 *      max_running_per_agent sequences at once, so one agent's backlog
 *      leaves the other slots to the others: a request of another agent
 *      waits at most until one sequence ends. Admission goes on while the
 *      batch has a free slot (max_batch) and the KV pool can hold the
 *      request's whole worst case (prompt + max_tokens positions, so a
 *      running sequence never runs out of pages). When the batch is full, a
 *      request at or above priority_threshold may pause the lowest-priority
 *      running sequence below it, and any other request may pause a
 *      sequence of no higher priority whose agent runs at least two more
 *      sequences than the request's agent (fair share in a full batch); a
 *      paused sequence keeps its KV pages and resumes before anyone is
 *      admitted.
 *   4. runs ONE llama_decode over all running sequences: one token for each
 *      sequence that is generating, and prompt chunks (chunked prefill) for
 *      the others, bounded by prefill_chunk tokens per step while any
 *      sequence is generating, by the ctx's max_step_tokens otherwise.
 *      Prefill first (max_decode_delay_ms > 0, no target, no request
 *      waiting for a slot of a full batch): while a running sequence is in
 *      its prompt, only the generating sequences whose last token is
 *      max_decode_delay_ms old decode before the prompt chunks; the others
 *      fill the room the chunks leave (so a steady load of short prompts
 *      steps as before, and a burst of prompts gets whole steps).
 *      With target_tpot_ms (broker/batchsize.h) a cost model fitted on the
 *      measured steps sizes the step instead: as many generating sequences
 *      as fit the target's budget (when not all fit: those that waited
 *      BSZ_MAX_WAIT steps, then those that decoded in the previous step,
 *      then the longest waiting, ties to the agent of the smallest virtual
 *      time: each decodes within BSZ_MAX_WAIT + ceil(pending / rows) steps), the rest of the
 *      budget to prompt chunks, and new prompts start only while there is
 *      room for them to decode afterwards; the budget follows the p95 of
 *      the measured gaps between decoding steps,
 *   5. takes one generation step (gen_seq_next: sample, detokenize, stop
 *      strings, hold-back) for each sequence that got logits and posts
 *      `tok`, `done` and `err` events to the outbound queue; then writes 1 to
 *      the wake eventfd,
 *   6. frees the slot, sampler and KV pages of every finished or cancelled
 *      request at once (llama_seq_reset); after publishing the events, writes
 *      the answers that finished this iteration to the response cache in one
 *      LMDB transaction.
 *
 * Prefix sharing (sched_opts.prefix_cache; model/llama.h): at admission a
 * request's prompt blocks are looked up in its trust domain's hash chain;
 * the cached leading pages are mapped and only the rest is prefilled (the
 * last prompt token always is). A request whose next uncached block is
 * being prefilled right now by a running sequence waits for it (others may
 * be admitted meanwhile) rather than computing it twice. Unreferenced cached
 * pages count as free for admission: they are evicted (LRU) before a
 * running sequence could lack a page. done.n_cached = positions mapped.
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
#include "broker/respcache.h"
#include "broker/sched_stats.h"
#include "model/generate.h"
#include "model/llama.h"

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
	int aging_ms;           /* unused (no cross-agent aging any more); kept for callers */
	int max_running_per_agent; /* sequences of one agent at once; <= 0: no cap */
	int prefill_chunk;      /* <= 0: 128 */
	int draft_tokens;       /* prompt-lookup speculation for greedy requests
				 * (model/spec.h): draft tokens per step in all, at
				 * most; 0 off. Not under a latency target. */
	int max_tokens;         /* cap on a request's max_tokens; <= 0: none */
	int target_tpot_ms;     /* > 0: size each step to hold the p95 time per
				 * output token under it (broker/batchsize.h) */
	int max_decode_delay_ms; /* without a target: > 0 prefill first, a generating
				 * sequence waiting at most about this long for its
				 * next token (see 4. above); 0: it decodes in every step */
	int wake_fd;            /* eventfd written when events are posted; < 0: none */
	const blog *log;        /* may be NULL; step lines at BLOG_DEBUG */
	const char *name;       /* model name for log lines; copied */
	int (*hold)(void *arg); /* NULL, or: while it returns nonzero nothing is taken
				 * from the queue (no request begins or runs) except a
				 * shutdown; polled every SCHED_HOLD_POLL_MS (the
				 * broker's image digest check: broker/models.h) */
	void *hold_arg;
	int prefix_cache;       /* share KV pages of common prompt prefixes (see below) */
	const void *model_id;   /* the model's identity in the prefix chains (its
				 * digest), may be NULL; borrowed, outlives the scheduler */
	size_t model_id_len;
	respcache *respcache;   /* NULL, or the broker's response cache (shared by
				 * every scheduler; see "request merging" in
				 * scheduler.c) */
	const uint8_t *digest;  /* NULL, or the model image's digest
				 * [RESPCACHE_HASH]: part of every merge and
				 * cache key */
} sched_opts;

#define SCHED_HOLD_POLL_MS 5

/* Who sent a request: events carry conn and the request's id back. */
typedef struct sched_origin {
	uint64_t conn;  /* connection id */
	uint64_t agent; /* agent id, for fair share and stats */
	int prio;       /* the request's priority (its own, or its agent's
			 * default, clamped by the broker's policy); higher runs
			 * first, 0 = normal. Only compared, never added to. */
	uint64_t domain; /* trust domain: prompt prefixes are shared only between
			  * requests of one domain (mixed into the chain's seed) */
} sched_origin;

typedef enum sched_ev_type { SCHED_EV_TOK = 1, SCHED_EV_DONE = 2, SCHED_EV_ERR = 3 } sched_ev_type;

/* An outbound event. A request ends with exactly one DONE or one ERR. */
typedef struct sched_event {
	struct sched_event *next;
	sched_ev_type type;
	uint64_t conn, id, agent;
	int32_t tok;           /* TOK: the token id */
	char *text;            /* TOK: the piece (may be empty); DONE: full text when not
				* streaming, else NULL. Owned, NUL-terminated. The
				* pieces of a streamed request add up to its text. */
	size_t text_len;
	herd_finish reason;    /* DONE: STOP, LENGTH, CANCEL or DEADLINE */
	int code;              /* ERR: HERD_E_* or -errno */
	char msg[192];         /* ERR */
	int n_prompt, n_gen, n_cached;
	int merged;            /* DONE: the answer of an identical request in flight */
	int cached;            /* DONE: answered from the response cache */
	double t_queue_ms, t_first_ms, t_total_ms; /* DONE; t_first_ms < 0: no token */
} sched_event;

void sched_event_free(sched_event *e); /* frees a whole list; accepts NULL */

#define SCHED_HIST_N 65 /* steps by sequence count 0..64 (64 = 64 or more) */
typedef struct sched_stats {
	uint64_t steps;
	uint64_t step_seqs;        /* sum over steps of sequences in the step */
	uint64_t step_hist[SCHED_HIST_N];
	int max_step_seqs;
	double step_ms;            /* total time in llama_decode */
	uint64_t tokens_gen;       /* sampled tokens delivered */
	uint64_t tokens_prompt;    /* prompt tokens evaluated */
	uint64_t tokens_drafted;   /* prompt-lookup draft tokens verified (model/spec.h) */
	uint64_t tokens_accepted;  /* of those, accepted (part of tokens_gen) */
	uint64_t requests_done, requests_err, requests_cancelled;
	uint64_t preemptions;
	uint64_t agent_cap_waits;  /* requests held back at least once by max_running_per_agent */
	uint64_t cancels_dropped;  /* cancels for no live request (dropped, not queued) */
	uint64_t notes[8];         /* sched_note counters, by sched_note_kind */
	uint64_t merged;           /* requests that followed an identical one in flight */
	uint64_t cache_hits;       /* requests answered from the response cache */
	int waiting, running, paused; /* now; waiting includes the submit queue */
	int kv_pages_total, kv_pages_free, kv_pages_reserved; /* free: free + cached */
	uint64_t prefix_lookups;    /* requests begun with a prefix-cache lookup */
	uint64_t prefix_hit_tokens; /* prompt tokens served from cached pages */
	uint64_t prefix_evictions;  /* cached pages evicted for reuse */
	int prefix_pages_cached;    /* unreferenced cached pages now (evictable) */
	/* memory pressure (sched_kv_shed) */
	int kv_pages_limit;         /* pages new work may hold (kv_pages_total: no limit) */
	int kv_pages_trimmable;     /* unreferenced pages holding memory now (cached + written free) */
	uint64_t kv_pages_trimmed;  /* pages whose memory was given back, in all */
	uint64_t kv_shrinks;        /* times the limit was lowered */
	/* latencies of ended requests (broker/sched_stats.h): queue wait (arrival
	 * to admission), first token (TTFT, arrival to the first token), total;
	 * tpot: every inter-token time of every sequence (time per output token) */
	sched_lat queue, first, total, tpot;
	sched_prio_counts prio;    /* ended requests (done or err) by priority */
	double step_gap_p95_ms;    /* p95 of the last 256 gaps between two decoding
				    * steps (the TPOT of a sequence in every step) */
	double step_budget_ms;     /* target_tpot_ms x the feedback factor; 0: no target */
} sched_stats;

/* Starts the scheduler thread over o->ctx. Returns 0, HERD_E_INVAL (NULL
 * ctx), -ENOMEM or -errno of pthread_create. */
int sched_create(sched **out, const sched_opts *o);
/* Stops the thread (requests still queued are dropped without events) and
 * frees everything; the ctx is not destroyed. Accepts NULL. */
void sched_destroy(sched *s);

/* Queues an owned copy of r (gen_request_dup; r stays the caller's) sent by
 * from. r->params.max_tokens is capped by sched_opts.max_tokens; its
 * has_prio/prio are not read (from->prio is the priority). Errors come as
 * events later (an ERR for a request that cannot run, see
 * gen_seq_begin), except: HERD_E_CANCELLED after sched_shutdown,
 * HERD_E_INVAL (NULL arguments, a NULL string with a length), -ENOMEM. */
int sched_submit(sched *s, const sched_origin *from, const gen_request *r);
/* Cancels request id of connection conn: a DONE with HERD_FINISH_CANCEL
 * follows if it was still queued or running (after a last TOK with any
 * held-back text of a streamed request); nothing when unknown or finished.
 * O(1): the live requests are hashed by (conn, id); a cancel for no live
 * request is dropped at once and a request is queued for cancellation at
 * most once, so a cancel flood holds no memory. */
void sched_cancel(sched *s, uint64_t conn, uint64_t id);
/* Drops every request of conn without events (the connection is gone). */
void sched_cancel_conn(sched *s, uint64_t conn);
/* Refuses new requests and cancels every queued and running one, each with a
 * DONE HERD_FINISH_CANCEL. */
void sched_shutdown(sched *s);

/* Memory pressure, carried out by the scheduler's thread at its next
 * iteration (any thread may ask): SCHED_KV_TRIM drops the unreferenced
 * prefix pages and gives the memory of every unreferenced KV page back;
 * SCHED_KV_SHRINK halves the page limit of new work (never below one full
 * context: every request can still run; admissions wait meanwhile, running
 * sequences keep what they reserved) and trims; SCHED_KV_RESTORE lifts the
 * limit. The stats show the limit and what was given back. */
enum { SCHED_KV_TRIM = 1, SCHED_KV_SHRINK = 2, SCHED_KV_RESTORE = 4 };
void sched_kv_shed(sched *s, int how);

/* Counters of the limits the broker's front door enforces (session.c),
 * kept here so `herdctl status` sums them over the models. */
typedef enum sched_note_kind {
	SCHED_NOTE_QUEUED = 0,  /* request refused: agent's queued-request cap */
	SCHED_NOTE_PROMPT,      /* request refused: prompt bytes / tokens cap */
	SCHED_NOTE_STOP,        /* request refused: stop-string count or length cap */
	SCHED_NOTE_MAX_TOKENS,  /* max_tokens clamped to the cap */
	SCHED_NOTE_PRIO,        /* priority clamped to the agent's allowance */
	SCHED_NOTE_DEADLINE,    /* deadline_ms clamped */
	SCHED_NOTE_COUNT
} sched_note_kind;
/* Counts one event of kind k (any thread). */
void sched_note(sched *s, sched_note_kind k);

/* Takes every posted event, oldest first (NULL when none). The caller frees
 * the list with sched_event_free. */
sched_event *sched_events_take(sched *s);
/* 1 when nothing is queued, waiting or running. */
int sched_idle(sched *s);
void sched_get_stats(sched *s, sched_stats *st);
/* The same figures accumulated over about the last SCHED_WIN_S seconds
 * (sched_window_recent): *span_s is the seconds they cover. */
void sched_get_recent(sched *s, sched_stats *st, double *span_s);

#ifdef __cplusplus
}
#endif
#endif
