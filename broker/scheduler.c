/* Continuous-batching scheduler (see scheduler.h for the policy). */
#include "scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herd/error.h"
#include "broker/merge.h"
#include "broker/batchsize.h"
#include "common/clock.h"
#include "model/spec.h"

/* ST_FOLLOW: a merged request waiting for its group leader's answer (in no
 * list: only in its merge group). */
enum { ST_WAITING = 0, ST_RUNNING = 1, ST_PAUSED = 2, ST_FOLLOW = 3 };

/* Defaults of sched_opts fields left <= 0. */
#define SCHED_DEFAULT_MAX_BATCH 32
#define SCHED_DEFAULT_PREFILL_CHUNK 128
/* Prompt tokens a step under a latency target prefills at least while a
 * prompt waits and there is room for it (a prompt is never stuck). */
#define SCHED_MIN_PREFILL 8
#define SCHED_DRAFT_EWMA 0.1  /* weight of a drafting sequence's accepted share */
#define SCHED_DRAFT_LEARN 16  /* steps the cost model sees before it judges drafts */
#define SCHED_DRAFT_PROBE 32  /* a judged-off scheduler drafts one step in this many */
/* Cancellations taken per iteration without a heap copy. */
#define SCHED_CANCEL_BATCH 64
/* Bytes of an err event's message (sched_event.msg). */
#define SCHED_ERR_MSG_MAX sizeof(((sched_event *)0)->msg)

/* Fair-share state of one agent with requests in the scheduler (scheduler
 * thread only). Freed when its last request ends, so an agent that comes
 * back starts again at the smallest virtual time of the active agents. */
typedef struct sagent {
	uint64_t id;
	uint64_t vtime;  /* tokens served (prefill + generated) */
	int running;     /* sequences running or paused */
	int refs;        /* requests taken from the submit queue, not yet freed */
} sagent;

/* Scheduler-side state of one request. Owned by the scheduler thread once
 * taken from the submit queue. */
typedef struct sreq {
	struct sreq *next;  /* submit queue link */
	struct sreq *hnext; /* live-request hash chain (under mu) */
	int cancel_req;     /* under mu: 1 a cancel is queued for it, 2 taken */
	int cancelled;      /* scheduler thread: cancel it at the next sweep */
	int held;           /* was held back by the per-agent running cap */
	sagent *ag;         /* set at intake */
	gen_request *r;     /* owned copy of the request */
	sched_origin from;  /* connection, agent, priority */
	int state;
	uint64_t arrival;   /* submission order */
	double t_arrive, t_admit, t_first; /* ms, monotonic */
	double t_last;      /* when its latest token came (TPOT) */
	gen_seq gen;        /* prompt, sampler, text; begun at intake */
	int n_fed;          /* prompt tokens already in the KV cache */
	int32_t pending;    /* sampled token still to be fed; -1 none */
	int reserve;        /* KV pages it may allocate (worst case, mapped ones not counted) */
	int deferred;       /* admission: waits for a prefix being prefilled */
	int n_match, n_idle; /* admission: cached leading blocks, of those unreferenced */
	int n_cached;       /* prompt positions mapped from the prefix cache */
	int n_blk;          /* full blocks of the prompt */
	uint64_t seed;      /* its domain's chain seed */
	uint64_t *blk_hash; /* [n_blk] chain hashes of the prompt's blocks */
	llama_seq seq;
	float *logits;      /* [n_vocab] */
	merge_group *mg;    /* deterministic: its merge group (merge.h), as leader or follower */
	int32_t *toks;      /* leader: the sampled ids, for the response cache */
	int n_toks, cap_toks;
	int merged;         /* joined a merge group as a follower */
	uint64_t last_dec;  /* step count when it last decoded or became pending */
	spec_ctl spec;      /* prompt-lookup drafting (greedy requests; max 0: off) */
} sreq;

typedef struct cancel_req {
	uint64_t conn, id;
	int whole_conn; /* 1: every request of conn, silently */
	sreq *q;        /* resolved under mu when taken (NULL: ended meanwhile) */
} cancel_req;

/* A growable array of request pointers. */
typedef struct sreq_vec {
	sreq **v;
	int n, cap;
} sreq_vec;

struct sched {
	/* immutable after create */
	llama_ctx *ctx;
	const llama_model *m;
	int n_vocab, n_ctx, max_step;
	int max_batch, max_wait_ms, dynamic, prio_threshold, prefill_chunk, max_tokens;
	int max_running_agent;  /* <= 0: no cap */
	int wake_fd;
	const blog *log;
	int (*hold)(void *arg); /* sched_opts.hold */
	void *hold_arg;
	respcache *rcache;      /* sched_opts.respcache (NULL: no response cache) */
	uint8_t digest[RESPCACHE_HASH];
	char name[72];
	int kv_total;
	int prefix;             /* sched_opts.prefix_cache */
	const void *model_id;
	size_t model_id_len;
	pthread_t thread;
	int thread_started;

	/* shared, under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	sreq *in_head, *in_tail;
	int n_in;
	cancel_req *cancels;
	int n_cancels, cap_cancels;
	int stop, shutdown, shutdown_done;
	int kv_shed_req;        /* SCHED_KV_* asked (mu) */
	uint64_t next_arrival;
	int n_live;             /* submitted and not yet ended (event published) */
	sreq **htab;            /* live requests by (conn, id): chained, [hcap] */
	int hcap, hn;
	uint64_t notes[SCHED_NOTE_COUNT];
	uint64_t cancels_dropped;
	sched_event *ev_head, *ev_tail;
	sched_stats pub;        /* published copy of st */
	sched_window *win;      /* snapshots of pub for the recent view; may be NULL */

	/* scheduler thread only */
	sreq_vec waiting, running, paused;
	sagent **agents;        /* active agents [n_agents] */
	int n_agents, cap_agents;
	int reserved;           /* KV pages reserved by running + paused */
	sched_stats st;
	sched_event *out_head, *out_tail; /* events of this iteration */
	int n_ended;            /* requests ended this iteration */
	merge_table merge;      /* groups of identical in-flight requests */
	struct sched_store *store; /* answers (and hits' uses) to write after the iteration */
	int n_store, cap_store;
	int n_answers;          /* entries of store that are answers, not uses */
	double t_first_use;     /* when the oldest queued use was queued */
	int32_t *step_tok;      /* scratch: step token storage (decode tokens and
				 * drafts), [max_batch][1 + draft] */
	int draft;              /* sched_opts.draft_tokens (0 under a target) */
	float *spec_logits;     /* [2 * draft][n_vocab]: rows of drafting sequences */
	int target_ms;          /* sched_opts.target_tpot_ms; <= 0: no step sizing */
	int decode_delay_ms;    /* sched_opts.max_decode_delay_ms; <= 0: no prefill first */
	bsz_model cost;         /* step time model (broker/batchsize.h), every step */
	double draft_acc;       /* accepted share of draft tokens, moving average
				 * (1 before any draft: drafting starts on) */
	int draft_idle;         /* steps planned without drafting since the last probe */
	bsz_ctl ctl;            /* recent gaps between decoding steps, the budget */
	double t_dec;           /* ms: end of the last step that decoded, while
				 * sequences kept running since; 0 none */
	bsz_cand *cand;         /* scratch: pending sequences [max_batch] */
	llama_batch_seq *batch;
	sreq **batch_req;
};


/* ---- requests and events ---------------------------------------------- */

void sched_event_free(sched_event *e)
{
	while (e) {
		sched_event *n = e->next;
		free(e->text);
		free(e);
		e = n;
	}
}

static int vec_push(sreq_vec *v, sreq *q)
{
	if (v->n == v->cap) {
		int cap = v->cap ? v->cap * 2 : 16;
		sreq **nv = realloc(v->v, sizeof(*nv) * (size_t)cap);
		if (!nv)
			return -ENOMEM;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = q;
	return 0;
}

/* Removes element i keeping the order. */
static void vec_del(sreq_vec *v, int i)
{
	memmove(v->v + i, v->v + i + 1, sizeof(*v->v) * (size_t)(v->n - i - 1));
	v->n--;
}

static void hash_remove(sched *s, sreq *q);
static void agent_release(sched *s, sreq *q);
static void merge_forget(sched *s, sreq *q);
static void fan_piece(sched *s, sreq *q, const gen_step *st);
static void followers_end(sched *s, sreq *q, herd_finish reason, double t);
static void followers_err(sched *s, sreq *q, int code, const char *msg);
static void cache_queue(sched *s, sreq *q, herd_finish reason);
static void cache_note(sched *s, sreq *q, herd_finish reason, int answer);
static void step_out(sched *s, sreq *q, const gen_step *st);

/* ---- live requests by (conn, id): O(1) cancel ------------------------- */

static size_t hash_slot(const sched *s, uint64_t conn, uint64_t id)
{
	uint64_t h = conn * 0x9E3779B97F4A7C15ull ^ (id + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
	h ^= h >> 29;
	return (size_t)(h & (uint64_t)(s->hcap - 1));
}

/* Doubles the table when it is fuller than one entry per bucket (mu held).
 * Out of memory: the chains just get longer. */
static void hash_grow(sched *s)
{
	if (s->hn < s->hcap || s->hcap > (1 << 26))
		return;
	const int ncap = s->hcap * 2;
	sreq **nt = calloc((size_t)ncap, sizeof(*nt));
	if (!nt)
		return;
	sreq **old = s->htab;
	const int ocap = s->hcap;
	s->htab = nt;
	s->hcap = ncap;
	for (int i = 0; i < ocap; i++)
		for (sreq *q = old[i], *n; q; q = n) {
			n = q->hnext;
			const size_t k = hash_slot(s, q->from.conn, q->r->id);
			q->hnext = s->htab[k];
			s->htab[k] = q;
		}
	free(old);
}

static void hash_insert(sched *s, sreq *q)
{
	hash_grow(s);
	const size_t k = hash_slot(s, q->from.conn, q->r->id);
	q->hnext = s->htab[k];
	s->htab[k] = q;
	s->hn++;
}

/* The first live request (conn, id) whose cancel_req is flag (mu held). */
static sreq *hash_find(const sched *s, uint64_t conn, uint64_t id, int flag)
{
	for (sreq *q = s->htab[hash_slot(s, conn, id)]; q; q = q->hnext)
		if (q->from.conn == conn && q->r->id == id && q->cancel_req == flag)
			return q;
	return NULL;
}

static void hash_remove(sched *s, sreq *q)
{
	for (sreq **pp = &s->htab[hash_slot(s, q->from.conn, q->r->id)]; *pp; pp = &(*pp)->hnext)
		if (*pp == q) {
			*pp = q->hnext;
			s->hn--;
			return;
		}
}

/* ---- agents: fair share ------------------------------------------------ */

/* q's agent record, created at the smallest virtual time of the active
 * agents. Returns 0 or -ENOMEM. Linear in the active agents, once per
 * request. */
static int agent_attach(sched *s, sreq *q)
{
	uint64_t vmin = UINT64_MAX;
	for (int i = 0; i < s->n_agents; i++) {
		sagent *a = s->agents[i];
		if (a->id == q->from.agent) {
			a->refs++;
			q->ag = a;
			return 0;
		}
		if (a->vtime < vmin)
			vmin = a->vtime;
	}
	if (s->n_agents == s->cap_agents) {
		int cap = s->cap_agents ? s->cap_agents * 2 : 16;
		sagent **na = realloc(s->agents, sizeof(*na) * (size_t)cap);
		if (!na)
			return -ENOMEM;
		s->agents = na;
		s->cap_agents = cap;
	}
	sagent *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->id = q->from.agent;
	a->vtime = s->n_agents ? vmin : 0;
	a->refs = 1;
	s->agents[s->n_agents++] = a;
	q->ag = a;
	return 0;
}

static void agent_release(sched *s, sreq *q)
{
	sagent *a = q->ag;
	if (!a)
		return;
	q->ag = NULL;
	if (q->state == ST_RUNNING || q->state == ST_PAUSED) /* not ST_FOLLOW */
		a->running--;
	if (--a->refs > 0)
		return;
	for (int i = 0; i < s->n_agents; i++)
		if (s->agents[i] == a) {
			s->agents[i] = s->agents[--s->n_agents];
			break;
		}
	free(a);
}


static void sreq_free(sched *s, sreq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&s->mu);
	hash_remove(s, q);
	pthread_mutex_unlock(&s->mu);
	agent_release(s, q);
	merge_forget(s, q);
	llama_seq_reset(s->ctx, &q->seq);
	gen_seq_end(&q->gen);
	free(q->blk_hash);
	spec_fini(&q->spec);
	free(q->logits);
	free(q->toks);
	gen_request_free(q->r);
	free(q);
}

static sched_event *ev_new(sched_ev_type t, const sreq *q)
{
	sched_event *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->type = t;
	e->conn = q->from.conn;
	e->id = q->r->id;
	e->agent = q->from.agent;
	return e;
}

static void ev_post(sched *s, sched_event *e)
{
	if (!e)
		return; /* out of memory: the event is lost; the connection will time out */
	e->next = NULL;
	if (s->out_tail)
		s->out_tail->next = e;
	else
		s->out_head = e;
	s->out_tail = e;
}

/* Counts an ended request: its priority and, when lat (a done), its
 * latencies (no TTFT without a token). */
static void count_end(sched *s, const sreq *q, double t, int lat)
{
	sched_prio_count(&s->st.prio, q->from.prio);
	if (!lat)
		return;
	sched_lat_add(&s->st.queue, (q->t_admit > 0 ? q->t_admit : t) - q->t_arrive);
	if (q->t_first > 0)
		sched_lat_add(&s->st.first, q->t_first - q->t_arrive);
	sched_lat_add(&s->st.total, t - q->t_arrive);
}

/* Ends q with an err event (q must already be out of every list). */
static void end_err(sched *s, sreq *q, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void end_err(sched *s, sreq *q, int code, const char *fmt, ...)
{
	sched_event *e = ev_new(SCHED_EV_ERR, q);
	if (e) {
		e->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
		followers_err(s, q, code, e->msg);
	} else {
		followers_err(s, q, code, "out of memory");
	}
	ev_post(s, e);
	s->st.requests_err++;
	count_end(s, q, 0, 0);
	s->n_ended++;
	if (q->state != ST_WAITING)
		s->reserved -= q->reserve;
	sreq_free(s, q);
}

/* Posts a tok event with a piece of q's text. */
static void emit_piece(sched *s, sreq *q, const gen_step *st)
{
	sched_event *e = ev_new(SCHED_EV_TOK, q);
	if (e) {
		e->tok = st->token;
		e->text = malloc(st->len + 1);
		if (!e->text) {
			free(e);
			return;
		}
		if (st->len)
			memcpy(e->text, st->piece, st->len);
		e->text[st->len] = 0;
		e->text_len = st->len;
	}
	ev_post(s, e);
}

/* Posts q's done event (after a last tok with the text a streamed request
 * still held back, when it ends for a reason of ours: cancel, deadline). */
static void post_done(sched *s, sreq *q, herd_finish reason, double t)
{
	gen_step st;
	gen_seq_stop(&q->gen, reason, &st); /* nothing when a step finished it */
	if (st.len > 0)
		fan_piece(s, q, &st);
	followers_end(s, q, reason, t);
	cache_queue(s, q, reason);
	sched_event *e = ev_new(SCHED_EV_DONE, q);
	if (e) {
		e->reason = reason;
		e->merged = q->merged; /* a follower that took the sequence over */
		e->n_prompt = q->gen.n_prompt;
		e->n_gen = q->gen.n_gen;
		e->n_cached = q->n_cached;
		e->t_queue_ms = (q->t_admit > 0 ? q->t_admit : t) - q->t_arrive;
		e->t_first_ms = q->t_first > 0 ? q->t_first - q->t_arrive : -1;
		e->t_total_ms = t - q->t_arrive;
		if (!q->r->stream)
			e->text = gen_seq_take_text(&q->gen, &e->text_len);
	}
	ev_post(s, e);
}

/* Ends q with a done event (notify == 0: silently). q must be out of every list. */
static void end_done(sched *s, sreq *q, herd_finish reason, int notify)
{
	const double t = clock_mono_ms();
	if (notify)
		post_done(s, q, reason, t);
	if (reason == HERD_FINISH_CANCEL)
		s->st.requests_cancelled++;
	else
		s->st.requests_done++;
	count_end(s, q, t, 1);
	s->n_ended++;
	if (q->state != ST_WAITING)
		s->reserved -= q->reserve;
	sreq_free(s, q);
}


/* ---- request merging and the response cache ---------------------------
 *
 * A deterministic request (respcache_deterministic) gets its key at intake.
 * When a merge group of that key is in flight the request follows it
 * (ST_FOLLOW, in no list): the leader's pieces and done go to every
 * follower too (merged = 1), and a follower that joins late first gets the
 * text streamed so far as one piece. Each requester keeps its own id,
 * deadline and connection: an expired, cancelled or disconnected follower
 * just leaves; a leader that goes away with followers left hands its
 * sequence (KV pages, sampler, text, reservation) to the first follower,
 * which takes its place in the lists. Otherwise the response cache is
 * asked (a hit answers at once: one tok piece when streaming, then done
 * with cached = 1), and on a miss the request leads a new group. A leader
 * that finishes with stop or length queues its answer; the queue is written
 * in one LMDB transaction per iteration (cache_flush). */

/* The merge group of q, if any, forgets q (q is being freed). */
static void merge_forget(sched *s, sreq *q)
{
	merge_group *g = q->mg;
	if (!g)
		return;
	q->mg = NULL;
	if (g->lead != q) {
		merge_leave(g, q);
		return;
	}
	while (g->n_fol > 0) { /* only when the scheduler is destroyed */
		sreq *f = g->fol[g->n_fol - 1];
		f->mg = NULL;
		g->n_fol--;
		sreq_free(s, f);
	}
	merge_close(&s->merge, g);
}

/* Posts a piece of the sequence q runs to every requester that streams. */
static void fan_piece(sched *s, sreq *q, const gen_step *st)
{
	if (q->r->stream)
		emit_piece(s, q, st);
	if (!q->mg || q->mg->lead != q)
		return;
	const double t = clock_mono_ms();
	for (int i = 0; i < q->mg->n_fol; i++) {
		sreq *f = q->mg->fol[i];
		if (st->token >= 0 && f->t_first <= 0)
			f->t_first = t;
		if (f->r->stream)
			emit_piece(s, f, st);
	}
}

/* One generation step's output: the token for the cache, the piece to the
 * streaming requesters. */
static void step_out(sched *s, sreq *q, const gen_step *st)
{
	if (q->mg && st->token >= 0 && s->rcache && q->r->cache) {
		if (q->n_toks == q->cap_toks) {
			const int cap = q->cap_toks ? q->cap_toks * 2 : 64;
			int32_t *n = realloc(q->toks, sizeof(*n) * (size_t)cap);
			if (n) {
				q->toks = n;
				q->cap_toks = cap;
			}
		}
		if (q->n_toks < q->cap_toks)
			q->toks[q->n_toks++] = st->token;
		else
			q->r->cache = 0; /* out of memory: this answer is not stored */
	}
	if (st->is_text || st->len > 0)
		fan_piece(s, q, st);
}

/* The done of requester f whose answer is lead's sequence (f == lead: the
 * leader leaving early), with merged set for a follower. */
static void post_shared_done(sched *s, sreq *f, const sreq *lead, herd_finish reason, double t)
{
	sched_event *e = ev_new(SCHED_EV_DONE, f);
	if (!e)
		return;
	e->reason = reason;
	e->merged = f->merged;
	e->n_prompt = lead->gen.n_prompt;
	e->n_gen = lead->gen.n_gen;
	const double admit = lead->t_admit > 0 ? lead->t_admit : t; /* the sequence's start */
	e->t_queue_ms = admit > f->t_arrive ? admit - f->t_arrive : 0;
	e->t_first_ms = f->t_first > 0 ? f->t_first - f->t_arrive : -1;
	e->t_total_ms = t - f->t_arrive;
	if (!f->r->stream) {
		e->text_len = lead->gen.len;
		e->text = malloc(e->text_len + 1);
		if (!e->text) {
			free(e);
			return;
		}
		if (e->text_len)
			memcpy(e->text, lead->gen.text, e->text_len);
		e->text[e->text_len] = 0;
	}
	ev_post(s, e);
}

/* Ends every follower of q with q's answer (q ends too). */
static void followers_end(sched *s, sreq *q, herd_finish reason, double t)
{
	merge_group *g = q->mg;
	while (g && g->lead == q && g->n_fol > 0) {
		sreq *f = g->fol[0];
		post_shared_done(s, f, q, reason, t);
		end_done(s, f, reason, 0); /* sreq_free: leaves the group */
	}
}

/* Ends every follower of q with q's err. */
static void followers_err(sched *s, sreq *q, int code, const char *msg)
{
	merge_group *g = q->mg;
	while (g && g->lead == q && g->n_fol > 0) {
		sreq *f = g->fol[0];
		merge_leave(g, f);
		f->mg = NULL;
		f->state = ST_WAITING; /* holds no reservation */
		end_err(s, f, code, "%s", msg);
	}
}

/* Follower f leaves: silently (its connection is gone) or with its own
 * done (cancel, deadline) carrying the text so far. */
static void follower_leave(sched *s, sreq *f, herd_finish reason, int notify)
{
	if (notify)
		post_shared_done(s, f, f->mg->lead, reason, clock_mono_ms());
	end_done(s, f, reason, 0);
}

/* Ends q's followers that are cancelled, expired (t > 0) or of connection
 * gone (silently). */
static void followers_sweep(sched *s, sreq *q, uint64_t gone, double t)
{
	merge_group *g = q->mg;
	if (!g || g->lead != q)
		return;
	for (int i = 0; i < g->n_fol;) {
		sreq *f = g->fol[i];
		if (gone && f->from.conn == gone)
			follower_leave(s, f, HERD_FINISH_CANCEL, 0);
		else if (f->cancelled)
			follower_leave(s, f, HERD_FINISH_CANCEL, 1);
		else if (t > 0 && gen_seq_expired(&f->gen, t))
			follower_leave(s, f, HERD_FINISH_DEADLINE, 1);
		else
			i++;
	}
}

/* Swaps the sequence (everything but the requester) between a and b. */
static void seq_swap(sreq *a, sreq *b)
{
#define SWAP(f)                                                                                   \
	do {                                                                                      \
		__typeof__(a->f) tmp_ = a->f;                                                     \
		a->f = b->f;                                                                      \
		b->f = tmp_;                                                                      \
	} while (0)
	SWAP(gen);
	SWAP(gen.stop); /* back: each points at its own request's strings */
	SWAP(gen.n_stop);
	SWAP(gen.t_deadline); /* back: the deadline is the requester's */
	SWAP(seq);
	SWAP(seed); /* the prefix chain goes with the sequence it describes */
	SWAP(n_blk);
	SWAP(blk_hash);
	SWAP(n_cached);
	SWAP(n_fed);
	SWAP(pending);
	SWAP(reserve);
	SWAP(logits);
	SWAP(state);
	SWAP(t_admit);
	SWAP(toks);
	SWAP(n_toks);
	SWAP(cap_toks);
	SWAP(spec);
#undef SWAP
}

/* q leaves its list for reason (notify == 0: silently). Without followers
 * it just ends; otherwise the first follower takes its sequence and is
 * returned to take q's place in the list. */
static sreq *hand_over(sched *s, sreq *q, herd_finish reason, int notify)
{
	merge_group *g = q->mg;
	if (!g || g->lead != q || g->n_fol == 0) {
		end_done(s, q, reason, notify);
		return NULL;
	}
	if (notify)
		post_shared_done(s, q, q, reason, clock_mono_ms());
	sreq *f = merge_promote(g);
	seq_swap(q, f);
	f->r->cache = f->r->cache && q->r->cache; /* tokens were collected only if q stored */
	if (f->state == ST_RUNNING || f->state == ST_PAUSED) {
		q->ag->running--;
		f->ag->running++;
	}
	end_done(s, q, reason, 0);
	return f;
}

/* Answers q from the response cache. Returns 1 when it did (q has ended). */
static int cache_answer(sched *s, sreq *q)
{
	respcache_entry e;
	if (!s->rcache || !q->r->cache || respcache_get(s->rcache, &q->mg->key, &e))
		return 0;
	const double t = clock_mono_ms();
	if (q->r->stream && e.text_len > 0) {
		const gen_step st = {.token = e.n_tok > 0 ? e.toks[e.n_tok - 1] : -1, .is_text = 1,
				     .piece = e.text, .len = e.text_len};
		emit_piece(s, q, &st);
	}
	sched_event *ev = ev_new(SCHED_EV_DONE, q);
	if (ev) {
		ev->reason = e.finish;
		ev->cached = 1;
		ev->n_prompt = e.n_prompt;
		ev->n_gen = e.n_gen;
		ev->t_first_ms = ev->t_total_ms = t - q->t_arrive;
		if (!q->r->stream) {
			ev->text = e.text;
			ev->text_len = e.text_len;
			e.text = NULL;
		}
	}
	ev_post(s, ev);
	const herd_finish fin = e.finish;
	respcache_entry_free(&e);
	cache_note(s, q, HERD_FINISH_NONE, 0); /* the eviction order: used now */
	q->t_admit = q->t_first = t;
	s->st.cache_hits++;
	end_done(s, q, fin, 0);
	return 1;
}

/* At intake (q begun): a deterministic q follows an in-flight group of its
 * key, is answered from the cache, or leads a new group. Returns 1 when q
 * is no longer the caller's (it follows or has ended). */
static int dedup_intake(sched *s, sreq *q)
{
	if (!respcache_deterministic(q->r))
		return 0;
	respcache_key k;
	if (respcache_key_make(&k, s->digest, q->from.domain, &q->gen, q->r))
		return 0; /* out of memory: runs on its own */
	merge_group *g = merge_find(&s->merge, &k);
	if (g && merge_join(g, q) == 0) {
		respcache_key_free(&k);
		sreq *lead = g->lead;
		if (q->from.prio > lead->from.prio)
			lead->from.prio = q->from.prio; /* runs for the most urgent of its requesters */
		q->mg = g;
		q->merged = 1;
		q->state = ST_FOLLOW;
		q->reserve = 0;
		q->t_admit = clock_mono_ms();
		s->st.merged++;
		if (lead->gen.emitted > 0) { /* what the others have had so far */
			q->t_first = q->t_admit;
			const gen_step st = {.token = lead->gen.last, .is_text = 1,
					     .piece = lead->gen.text, .len = lead->gen.emitted};
			if (q->r->stream)
				emit_piece(s, q, &st);
		}
		return 1;
	}
	if (g) {
		respcache_key_free(&k);
		return 0;
	}
	q->mg = merge_open(&s->merge, &k, q);
	respcache_key_free(&k);
	return q->mg ? cache_answer(s, q) : 0;
}

/* An answer the response cache will store (copied: q is about to end). */
typedef struct sched_store {
	respcache_key key;
	char *text;
	size_t len;
	int32_t *toks;
	int n_tok;
	herd_finish finish;
	int n_prompt, n_gen;
} sched_store;

/* Queues q's answer (answer = 1) or the use of its cached answer (0). */
static void cache_note(sched *s, sreq *q, herd_finish reason, int answer)
{
	if (s->n_store == s->cap_store) {
		const int cap = s->cap_store ? s->cap_store * 2 : 8;
		sched_store *n = realloc(s->store, sizeof(*n) * (size_t)cap);
		if (!n)
			return;
		s->store = n;
		s->cap_store = cap;
	}
	sched_store *it = &s->store[s->n_store];
	memset(it, 0, sizeof(*it));
	it->key = q->mg->key;
	it->key.mat = malloc(it->key.len);
	if (!it->key.mat)
		return;
	memcpy(it->key.mat, q->mg->key.mat, it->key.len);
	if (!answer) {
		if (s->n_store++ == s->n_answers)
			s->t_first_use = clock_mono_ms();
		return;
	}
	it->text = malloc(q->gen.len + 1);
	if (!it->text) {
		free(it->key.mat);
		return;
	}
	memcpy(it->text, q->gen.text ? q->gen.text : "", q->gen.len);
	it->len = q->gen.len;
	it->toks = q->toks; /* taken */
	it->n_tok = q->n_toks;
	q->toks = NULL;
	q->n_toks = q->cap_toks = 0;
	it->finish = reason;
	it->n_prompt = q->gen.n_prompt;
	it->n_gen = q->gen.n_gen;
	s->n_store++;
	s->n_answers++;
}

/* Queues q's answer when it is one to keep: a leader that finished with
 * stop or length. */
static void cache_queue(sched *s, sreq *q, herd_finish reason)
{
	if (s->rcache && q->mg && q->mg->lead == q && q->r->cache &&
	    (reason == HERD_FINISH_STOP || reason == HERD_FINISH_LENGTH))
		cache_note(s, q, reason, 1);
}

/* Writes the queued answers in one transaction (after the iteration's
 * events went out) and frees them. Uses alone wait for an answer, or until
 * there are CACHE_USES_MAX of them or the oldest is a second old. */
#define CACHE_USES_MAX 32
static void cache_flush(sched *s)
{
	if (s->n_store == 0 || (s->n_answers == 0 && s->n_store < CACHE_USES_MAX &&
				clock_mono_ms() - s->t_first_use < 1000))
		return;
	respcache_item items[64];
	for (int i0 = 0; i0 < s->n_store; i0 += 64) {
		const int n = s->n_store - i0 < 64 ? s->n_store - i0 : 64;
		for (int i = 0; i < n; i++) {
			const sched_store *it = &s->store[i0 + i];
			items[i] = (respcache_item){&it->key, it->text, it->len, it->toks, it->n_tok,
						    it->finish, it->n_prompt, it->n_gen};
		}
		respcache_put(s->rcache, items, n);
	}
	for (int i = 0; i < s->n_store; i++) {
		respcache_key_free(&s->store[i].key);
		free(s->store[i].text);
		free(s->store[i].toks);
	}
	s->n_store = s->n_answers = 0;
}

/* ---- public API (any thread) ------------------------------------------ */

static void wake_loop(sched *s)
{
	if (s->wake_fd < 0)
		return;
	uint64_t one = 1;
	ssize_t w = write(s->wake_fd, &one, sizeof(one));
	(void)w; /* EAGAIN: the counter is already non-zero, the loop will wake */
}

int sched_submit(sched *s, const sched_origin *from, const gen_request *r)
{
	if (!s || !from || !r)
		return HERD_E_INVAL;
	sreq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	int rc = gen_request_dup(&q->r, r);
	if (rc) {
		free(q);
		return rc;
	}
	q->from = *from;
	q->pending = -1;
	q->t_arrive = clock_mono_ms();
	llama_seq_init(&q->seq);
	pthread_mutex_lock(&s->mu);
	if (s->shutdown || s->stop) {
		pthread_mutex_unlock(&s->mu);
		gen_request_free(q->r);
		free(q);
		return HERD_E_CANCELLED;
	}
	q->arrival = s->next_arrival++;
	if (s->in_tail)
		s->in_tail->next = q;
	else
		s->in_head = q;
	s->in_tail = q;
	s->n_in++;
	s->n_live++;
	hash_insert(s, q);
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* Queues a cancellation (mu held): a whole connection, or one live request
 * not yet queued for cancellation; anything else is dropped at once, so
 * the queue never holds more than the live requests and closing
 * connections. */
static void push_cancel(sched *s, uint64_t conn, uint64_t id, int whole)
{
	if (!whole) {
		sreq *q = hash_find(s, conn, id, 0);
		if (!q) {
			s->cancels_dropped++;
			return;
		}
		q->cancel_req = 1;
	}
	if (s->n_cancels == s->cap_cancels) {
		int cap = s->cap_cancels ? s->cap_cancels * 2 : 16;
		cancel_req *n = realloc(s->cancels, sizeof(*n) * (size_t)cap);
		if (!n)
			return; /* the request runs to its end; its events go nowhere */
		s->cancels = n;
		s->cap_cancels = cap;
	}
	s->cancels[s->n_cancels++] = (cancel_req){conn, id, whole, NULL};
	pthread_cond_signal(&s->cv);
}

void sched_cancel(sched *s, uint64_t conn, uint64_t id)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	push_cancel(s, conn, id, 0);
	pthread_mutex_unlock(&s->mu);
}

void sched_cancel_conn(sched *s, uint64_t conn)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	push_cancel(s, conn, 0, 1);
	pthread_mutex_unlock(&s->mu);
}

void sched_note(sched *s, sched_note_kind k)
{
	if (!s || (int)k < 0 || k >= SCHED_NOTE_COUNT)
		return;
	pthread_mutex_lock(&s->mu);
	s->notes[k]++;
	pthread_mutex_unlock(&s->mu);
}

void sched_kv_shed(sched *s, int how)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->kv_shed_req |= how;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* The KV actions asked (sched_kv_shed), on the scheduler's thread. */
static void kv_shed(sched *s, int how)
{
	const int before = llama_ctx_kv_limit(s->ctx);
	if (how & SCHED_KV_RESTORE)
		llama_ctx_kv_set_limit(s->ctx, s->kv_total);
	if (how & SCHED_KV_SHRINK) {
		const int floor = (s->n_ctx + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
		const int lim = before / 2 > floor ? before / 2 : floor;
		llama_ctx_kv_set_limit(s->ctx, lim < before ? lim : before);
		s->st.kv_shrinks += lim < before;
	}
	const int n = how & (SCHED_KV_TRIM | SCHED_KV_SHRINK) ? llama_ctx_kv_trim(s->ctx) : 0;
	s->st.kv_pages_trimmed += (uint64_t)n;
	blog_msg(s->log, BLOG_INFO, "%s: KV pages: limit %d -> %d of %d, %d unreferenced pages given back",
		 s->name, before, llama_ctx_kv_limit(s->ctx), s->kv_total, n);
}

void sched_shutdown(sched *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->shutdown = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

sched_event *sched_events_take(sched *s)
{
	pthread_mutex_lock(&s->mu);
	sched_event *e = s->ev_head;
	s->ev_head = s->ev_tail = NULL;
	pthread_mutex_unlock(&s->mu);
	return e;
}

int sched_idle(sched *s)
{
	pthread_mutex_lock(&s->mu);
	int idle = s->n_live == 0;
	pthread_mutex_unlock(&s->mu);
	return idle;
}

void sched_get_recent(sched *s, sched_stats *st, double *span_s)
{
	sched_stats *cur = malloc(sizeof(*cur));
	if (!cur) { /* no memory for the copy: the totals, over the uptime unknown */
		sched_get_stats(s, st);
		*span_s = 0;
		return;
	}
	sched_get_stats(s, cur);
	pthread_mutex_lock(&s->mu);
	const double t = clock_mono_ms();
	sched_window_tick(s->win, cur, t);
	sched_window_recent(s->win, cur, t, st, span_s);
	pthread_mutex_unlock(&s->mu);
	free(cur);
}

void sched_get_stats(sched *s, sched_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->pub;
	st->waiting += s->n_in;
	st->cancels_dropped = s->cancels_dropped;
	for (int k = 0; k < SCHED_NOTE_COUNT; k++)
		st->notes[k] = s->notes[k];
	pthread_mutex_unlock(&s->mu);
}

/* ---- the scheduler thread --------------------------------------------- */

/* ---- prefix sharing (model/llama.h: llama_seq_begin_prefix) ------------ */

/* At intake: q's chain seed and the hashes of its prompt's full blocks. */
static int prefix_intake(sched *s, sreq *q)
{
	if (!s->prefix)
		return 0;
	q->seed = llama_prefix_seed(s->ctx, s->model_id, s->model_id_len, q->from.domain);
	q->n_blk = q->gen.n_prompt / LLAMA_KV_PAGE;
	if (q->n_blk == 0)
		return 0;
	q->blk_hash = malloc(sizeof(uint64_t) * (size_t)q->n_blk);
	if (!q->blk_hash)
		return -ENOMEM;
	llama_prefix_hashes(s->ctx, q->seed, q->gen.prompt, q->gen.n_prompt, q->blk_hash);
	return 0;
}

/* q's block hashes for the lookups: a prompt shorter than a block has none,
 * but may still begin as a published block does (its tail is matched). */
static const uint64_t *blk_hashes(const sreq *q)
{
	static const uint64_t none[1];
	return q->blk_hash ? q->blk_hash : none;
}

/* Looks q's prompt up (n_match, n_idle) and returns 1 when the first block
 * it lacks is being prefilled by a running sequence right now: q then waits
 * for it instead of computing it a second time. */
static int prefix_wait(sched *s, sreq *q)
{
	q->n_match = q->n_idle = 0;
	if (!s->prefix)
		return 0;
	const int m = llama_prefix_probe(s->ctx, q->seed, blk_hashes(q), q->gen.prompt, q->n_blk,
					 &q->n_idle);
	int tail_idle = 0; /* a partly matching block is mapped too (out of the pool) */
	llama_prefix_probe_tail(s->ctx, q->seed, blk_hashes(q), q->gen.prompt, q->gen.n_prompt, m,
				&tail_idle);
	q->n_idle += tail_idle;
	q->n_match = m;
	if (m >= q->n_blk)
		return 0;
	for (int i = 0; i < s->running.n; i++) {
		const sreq *r = s->running.v[i];
		if (r->n_blk > m && r->blk_hash[m] == q->blk_hash[m] &&
		    r->n_fed < (m + 1) * LLAMA_KV_PAGE)
			return 1;
	}
	return 0;
}

/* Pages q may still allocate: its worst case minus the private pages it
 * holds (pages mapped from the cache are not its to allocate). */
static int kv_outstanding(const sreq *q)
{
	const int held = q->seq.n_pages - q->seq.n_mapped;
	return q->reserve > held ? q->reserve - held : 0;
}

/* 1 when q's worst case fits: what every admitted sequence may still
 * allocate plus q's own allocations and the cached pages it maps out of the
 * pool stay within the pages not held (free + cached, evictable). Sets
 * q->reserve to the pages q may allocate. */
static int kv_fits(sched *s, sreq *q)
{
	const int max_gen = q->gen.max_gen;
	const int positions = q->gen.n_prompt + (max_gen > 0 ? max_gen - 1 : 0);
	const int cow = q->n_match > 0 && q->n_match * LLAMA_KV_PAGE == q->gen.n_prompt;
	q->reserve = (positions + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE - q->n_match + cow;
	int room = llama_ctx_free_pages(s->ctx) - q->n_idle;
	for (int i = 0; i < s->running.n; i++)
		room -= kv_outstanding(s->running.v[i]);
	for (int i = 0; i < s->paused.n; i++)
		room -= kv_outstanding(s->paused.v[i]);
	return q->reserve <= room;
}

/* Admitted q maps its cached prefix (exactly the n_match blocks kv_fits
 * counted: nothing ran in between) and prefills only the rest. */
static void prefix_map(sched *s, sreq *q)
{
	if (!s->prefix)
		return;
	const int n = llama_seq_begin_prefix(s->ctx, &q->seq, q->seed, blk_hashes(q), q->gen.prompt,
					     q->gen.n_prompt);
	s->st.prefix_lookups++;
	if (n > 0) {
		q->n_fed = q->n_cached = n;
		s->st.prefix_hit_tokens += (uint64_t)n;
	}
}

/* Begins q's generation (model/generate.h: tokenize within the context,
 * sampler) and reserves its worst case of KV pages. Returns 0 or ends q
 * with an err event and returns nonzero. */
static int intake(sched *s, sreq *q)
{
	char err[SCHED_ERR_MSG_MAX];
	if (q->cancelled) { /* cancelled before it began: no work at all */
		end_done(s, q, HERD_FINISH_CANCEL, 1);
		return -1;
	}
	if (agent_attach(s, q)) {
		end_err(s, q, -ENOMEM, "out of memory");
		return -1;
	}
	const gen_bounds b = {.n_ctx = s->n_ctx, .max_tokens = s->max_tokens,
			      .t_start = q->t_arrive};
	int rc = gen_seq_begin(&q->gen, s->m, &b, q->r, err, sizeof(err));
	if (rc) {
		end_err(s, q, rc, "%s", err);
		return -1;
	}
	const int max_gen = q->gen.max_gen;
	const int positions = q->gen.n_prompt + (max_gen > 0 ? max_gen - 1 : 0);
	q->reserve = (positions + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	if (q->reserve > s->kv_total) {
		end_err(s, q, HERD_E_NOSPACE,
			"request needs %d KV positions but the cache holds %d", positions,
			s->kv_total * LLAMA_KV_PAGE);
		return -1;
	}
	const int greedy = q->r->params.sampling.temperature <= 0;
	if (spec_init(&q->spec, greedy ? s->draft : 0, q->gen.prompt, q->gen.n_prompt,
		      q->gen.n_prompt + max_gen + 1)) {
		end_err(s, q, -ENOMEM, "out of memory");
		return -1;
	}
	const int dd = dedup_intake(s, q); /* merged, or answered from the cache */
	if (dd)
		return dd;
	if (prefix_intake(s, q)) {
		end_err(s, q, -ENOMEM, "out of memory");
		return -1;
	}
	return 0;
}

/* Ends every request of the lists that is cancelled (with a
 * HERD_FINISH_CANCEL done) or belongs to connection gone (silently, when
 * gone != 0): one pass over the lists however many cancels came. */
static void sweep_cancelled(sched *s, uint64_t gone)
{
	sreq_vec *lists[] = {&s->waiting, &s->running, &s->paused};
	for (int l = 0; l < 3; l++) {
		sreq_vec *v = lists[l];
		int k = 0;
		for (int i = 0; i < v->n; i++) {
			sreq *q = v->v[i];
			followers_sweep(s, q, gone, 0);
			const int silent = gone && q->from.conn == gone;
			if (silent || q->cancelled)
				q = hand_over(s, q, HERD_FINISH_CANCEL, !silent);
			if (q)
				v->v[k++] = q;
		}
		v->n = k;
	}
}

static void cancel_everything(sched *s)
{
	sreq_vec *lists[] = {&s->waiting, &s->running, &s->paused};
	for (int l = 0; l < 3; l++) {
		sreq_vec *v = lists[l];
		while (v->n > 0) {
			sreq *q = v->v[0];
			vec_del(v, 0);
			end_done(s, q, HERD_FINISH_CANCEL, 1);
		}
	}
}

static void expire_deadlines(sched *s, double t)
{
	sreq_vec *lists[] = {&s->waiting, &s->running, &s->paused};
	for (int l = 0; l < 3; l++) {
		sreq_vec *v = lists[l];
		for (int i = 0; i < v->n;) {
			sreq *q = v->v[i];
			followers_sweep(s, q, 0, t);
			if (gen_seq_expired(&q->gen, t)) {
				vec_del(v, i);
				sreq *f = hand_over(s, q, HERD_FINISH_DEADLINE, 1);
				if (f && vec_push(v, f)) /* (the order of the list does not matter) */
					end_err(s, f, -ENOMEM, "out of memory");
			} else {
				i++;
			}
		}
	}
}

/* 1 when x goes before y: priority, then the agent with fewer running
 * sequences, then the agent served fewer tokens, then arrival. Only
 * comparisons: nothing here can overflow. */
static int admits_before(const sreq *x, const sreq *y)
{
	if (x->from.prio != y->from.prio)
		return x->from.prio > y->from.prio;
	if (x->ag->running != y->ag->running)
		return x->ag->running < y->ag->running;
	if (x->ag->vtime != y->ag->vtime)
		return x->ag->vtime < y->ag->vtime;
	return x->arrival < y->arrival;
}

/* Index of the waiting request to admit next, or -1 when every waiting
 * agent is at its running cap. Linear in the waiting requests (bounded by
 * the per-agent queue caps of session.c). */
static int pick_next(sched *s)
{
	int best = -1;
	for (int i = 0; i < s->waiting.n; i++) {
		sreq *q = s->waiting.v[i];
		if (q->deferred)
			continue;
		if (s->max_running_agent > 0 && q->ag->running >= s->max_running_agent) {
			if (!q->held) {
				q->held = 1;
				s->st.agent_cap_waits++;
			}
			continue;
		}
		if (best < 0 || admits_before(q, s->waiting.v[best]))
			best = i;
	}
	return best;
}

/* 1 when an idle batch may start now (the batch-forming wait is over). */
static int batch_ready(const sched *s, double t, double *wake)
{
	double oldest = -1;
	for (int i = 0; i < s->waiting.n; i++) {
		const sreq *q = s->waiting.v[i];
		if (q->from.prio >= s->prio_threshold)
			return 1;
		if (oldest < 0 || q->t_arrive < oldest)
			oldest = q->t_arrive;
	}
	if (s->waiting.n >= s->max_batch || s->max_wait_ms <= 0 || oldest < 0)
		return 1;
	if (t >= oldest + s->max_wait_ms)
		return 1;
	if (wake)
		*wake = oldest + s->max_wait_ms;
	return 0;
}

static void admit_one(sched *s, sreq *q, double t)
{
	q->state = ST_RUNNING;
	q->t_admit = t;
	s->reserved += q->reserve;
	if (vec_push(&s->running, q)) {
		s->reserved -= q->reserve;
		q->state = ST_WAITING;
		end_err(s, q, -ENOMEM, "out of memory");
		return;
	}
	q->ag->running++;
	if (!q->logits)
		q->logits = malloc(sizeof(float) * (size_t)s->n_vocab);
	if (!q->logits) {
		s->running.n--;
		end_err(s, q, -ENOMEM, "out of memory");
		return;
	}
	prefix_map(s, q);
}

/* 1 when running sequence v may be paused for q at the threshold rule:
 * v below the threshold and (lowest priority, then latest arrival) before
 * the current choice b (NULL: none yet). */
static int victim_by_prio(const sched *s, const sreq *v, const sreq *b)
{
	if (v->from.prio >= s->prio_threshold)
		return 0;
	return !b || v->from.prio < b->from.prio ||
	       (v->from.prio == b->from.prio && v->arrival > b->arrival);
}

/* Fair share: v (no higher priority than q) may be paused for q when v's
 * agent runs at least two more sequences than q's; among those, the agent
 * running the most, then the latest arrival, before b. */
static int victim_by_share(const sreq *q, const sreq *v, const sreq *b)
{
	if (v->from.prio > q->from.prio || v->ag->running < q->ag->running + 2)
		return 0;
	return !b || v->ag->running > b->ag->running ||
	       (v->ag->running == b->ag->running && v->arrival > b->arrival);
}

/* The running sequence q may pause when the batch is full, or -1: at or
 * above priority_threshold, the lowest-priority sequence below it; below
 * it, one of an agent that holds more than its share (so a busy agent's
 * long sequences cannot keep a newcomer out of a full batch). The paused
 * sequence keeps its pages and resumes first when a slot frees. */
static int pick_victim(const sched *s, const sreq *q)
{
	const int by_prio = q->from.prio >= s->prio_threshold;
	int victim = -1;
	for (int i = 0; i < s->running.n; i++) {
		const sreq *v = s->running.v[i];
		const sreq *b = victim >= 0 ? s->running.v[victim] : NULL;
		if (by_prio ? victim_by_prio(s, v, b) : victim_by_share(q, v, b))
			victim = i;
	}
	return victim;
}

static void admit(sched *s, double t)
{
	/* Paused sequences come back first: their pages are already held. */
	while (s->paused.n > 0 && s->running.n < s->max_batch) {
		int best = 0;
		for (int i = 1; i < s->paused.n; i++)
			if (s->paused.v[i]->from.prio > s->paused.v[best]->from.prio)
				best = i;
		sreq *q = s->paused.v[best];
		vec_del(&s->paused, best);
		q->state = ST_RUNNING;
		if (vec_push(&s->running, q))
			end_err(s, q, -ENOMEM, "out of memory");
	}
	if (s->waiting.n == 0)
		return;
	if (!s->dynamic && s->running.n > 0)
		return; /* static batching: wait for the whole batch to finish */
	if (s->running.n == 0 && s->paused.n == 0 && !batch_ready(s, t, NULL))
		return;
	for (int i = 0; i < s->waiting.n; i++)
		s->waiting.v[i]->deferred = 0;
	while (s->waiting.n > 0) {
		const int qi = pick_next(s);
		if (qi < 0)
			break;
		sreq *q = s->waiting.v[qi];
		if (prefix_wait(s, q)) {
			q->deferred = 1; /* its prefix is being computed: the others go on */
			continue;
		}
		if (!kv_fits(s, q))
			break; /* keep the order: no overtaking by smaller requests */
		if (s->running.n >= s->max_batch) {
			const int victim = pick_victim(s, q);
			if (victim < 0)
				break;
			sreq *v = s->running.v[victim];
			vec_del(&s->running, victim);
			v->state = ST_PAUSED;
			if (vec_push(&s->paused, v))
				end_err(s, v, -ENOMEM, "out of memory");
			s->st.preemptions++;
		}
		vec_del(&s->waiting, qi);
		admit_one(s, q, t);
	}
}

_Static_assert(SCHED_NOTE_COUNT <= sizeof(((sched_stats *)0)->notes) / sizeof(uint64_t),
	       "sched_stats.notes holds every sched_note_kind");
_Static_assert(HERD_FINISH_NONE == 0 && HERD_FINISH_COUNT > HERD_FINISH_NONE,
	       "sample_next returns a finish reason (>= 0) or an error (< 0) in one int");

/* One generation step for q from q->logits (model/generate.h): posts the
 * piece of a streamed request (one tok event per token that became text,
 * and one for a last held-back piece). Returns HERD_FINISH_NONE when q goes
 * on (its token is pending), the finish reason when it has finished, or a
 * negative error. */
static int sample_next(sched *s, sreq *q, const float *logits, double t)
{
	gen_step st;
	int rc = gen_seq_next(&q->gen, logits, t, &st);
	if (rc)
		return rc;
	if (st.token >= 0 && q->t_first <= 0)
		q->t_first = t;
	else if (st.token >= 0)
		sched_lat_add(&s->st.tpot, t - q->t_last);
	if (st.token >= 0)
		q->t_last = t;
	s->st.tokens_gen += (uint64_t)st.is_text;
	step_out(s, q, &st);
	if (st.finish == HERD_FINISH_NONE) {
		q->pending = st.token;
		spec_push(&q->spec, st.token);
	}
	return (int)st.finish;
}

/* A sequence that fed its pending token and n = b->n_tokens - 1 draft
 * tokens (model/spec.h): one generation step per row while the sampled
 * token equals the next draft token; the positions of the rejected drafts
 * leave its KV cache. Returns as sample_next. */
static int sample_spec(sched *s, sreq *q, const llama_batch_seq *b, double t)
{
	const int n = b->n_tokens - 1;
	int i = 0, finish;
	for (;; i++) {
		finish = sample_next(s, q, b->logits + (size_t)i * s->n_vocab, t);
		if (finish != HERD_FINISH_NONE || i == n || q->pending != b->tokens[i + 1])
			break;
	}
	spec_done(&q->spec, n, i);
	s->draft_acc += SCHED_DRAFT_EWMA * ((double)i / n - s->draft_acc);
	s->st.tokens_drafted += (uint64_t)n;
	s->st.tokens_accepted += (uint64_t)i;
	if (finish == HERD_FINISH_NONE)
		llama_seq_truncate(s->ctx, &q->seq, q->seq.n_past - (n - i));
	return finish;
}

/* Takes running q out of the batch and ends it: a done event with its
 * finish reason, or an err event for an error (< 0). */
static void finish_running(sched *s, sreq *q, int finish)
{
	for (int i = 0; i < s->running.n; i++)
		if (s->running.v[i] == q) {
			vec_del(&s->running, i);
			break;
		}
	if (finish < 0)
		end_err(s, q, finish, "generation failed: %s", herd_strerror(finish));
	else
		end_done(s, q, (herd_finish)finish, 1);
}

/* What one step runs: the batch and its counts. */
typedef struct step_plan {
	int n;      /* sequences in the batch */
	int T;      /* tokens in the batch */
	int n_dec;  /* sequences decoding one token */
	int n_pre;  /* sequences with a prompt chunk */
	int pre_tok;/* prompt tokens */
	/* under a latency target (size_step): */
	int sized;  /* 1: the fields below apply */
	int rows;   /* pending sequences that decode: s->cand[0 .. rows) */
	int pre_cap;/* prompt tokens at most */
	int room;   /* sequences that may be prefilling (new ones joining) */
	int busy;   /* some agent runs two sequences or more (see plan_prefill) */
	/* without a target: */
	int pf;     /* prefill first (prefill_first): decode rows only when overdue,
		     * or in the room the prompt chunks leave */
	double t0;  /* when the step is planned */
	int drafted;/* draft tokens in the step (model/spec.h) */
	int n_spec; /* sequences with drafts */
	int draft_room; /* draft tokens the step may still take */
} step_plan;

/* Prefill first: with max_decode_delay_ms set, no target, and a running
 * sequence still in its prompt, except while requests wait for a slot of a
 * full batch (decoding is what frees one). */
static int prefill_first(const sched *s)
{
	if (s->decode_delay_ms <= 0 || s->target_ms > 0)
		return 0;
	if (s->waiting.n > 0 && s->running.n >= s->max_batch)
		return 0;
	for (int i = 0; i < s->running.n; i++) {
		const sreq *q = s->running.v[i];
		if (q->pending < 0 && q->n_fed < q->gen.n_prompt)
			return 1;
	}
	return 0;
}

/* Under a latency target: sizes the step from the cost model and the
 * budget (broker/batchsize.h) and orders the pending sequences in s->cand,
 * the ones to decode first (longest without a token, then fair share). */
static void size_step(sched *s, step_plan *p)
{
	int pending = 0, want = 0;
	for (int i = 0; i < s->running.n; i++) {
		const sreq *q = s->running.v[i];
		p->busy |= q->ag->running > 1;
		if (q->pending >= 0)
			s->cand[pending++] = (bsz_cand){q->last_dec, q->ag->vtime, i};
		else
			want += q->gen.n_prompt - q->n_fed;
	}
	const int max_pre = pending > 0 ? s->prefill_chunk : s->max_step;
	const bsz_plan b = bsz_choose(&s->cost, bsz_ctl_budget(&s->ctl), pending, want, max_pre,
				      s->max_step, SCHED_MIN_PREFILL);
	bsz_pick(s->cand, pending, b.rows, s->st.steps + 1);
	p->sized = 1;
	p->rows = b.rows;
	p->pre_cap = b.prefill;
	p->room = pending > 0 ? b.room : (b.room > 1 ? b.room : 1);
}

static void plan_token(sched *s, step_plan *p, sreq *q)
{
	int32_t *tok = s->step_tok + (size_t)p->n * (size_t)(1 + s->draft);
	tok[0] = q->pending;
	/* drafts never take the sequence past its worst case (prompt and
	 * max_gen tokens, the last never fed: its reserve), nor the step past
	 * its token budget (prefill first: the prompt chunks planned before
	 * may have left only a few; llama_decode would fail the whole step) */
	int lim = q->gen.max_gen - q->gen.n_gen - 1;
	lim = lim < p->draft_room ? lim : p->draft_room;
	lim = lim < s->max_step - p->T - 1 ? lim : s->max_step - p->T - 1;
	const int nd = p->sized ? 0 : spec_draft(&q->spec, lim, tok + 1);
	float *lg = nd ? s->spec_logits + (size_t)(p->drafted + p->n_spec) * s->n_vocab : q->logits;
	p->drafted += nd;
	p->draft_room -= nd;
	p->n_spec += nd > 0;
	s->batch[p->n] = (llama_batch_seq){&q->seq, tok, 1 + nd, nd ? LLAMA_LOGITS_ALL : LLAMA_LOGITS_LAST,
					   lg};
	s->batch_req[p->n++] = q;
	p->T += 1 + nd;
	p->n_dec++;
	q->last_dec = s->st.steps + 1;
}

/* 1 when drafting pays in a step of rows decoding sequences: by the step
 * cost model (ms = a + b*rows + c*tokens), a draft token costs c and an
 * accepted one saves its sequence a row of a later step, a/rows + b; in a
 * big batch the weights' read (a) is shared by many rows, so drafts that
 * are mostly rejected only add work. While the model is young, and one step
 * in SCHED_DRAFT_PROBE after that, drafting is on so the accepted share
 * keeps being measured. */
static int drafts_pay(sched *s, int rows)
{
	if (s->draft <= 0 || rows <= 0)
		return 0;
	if (s->cost.n < SCHED_DRAFT_LEARN || ++s->draft_idle >= SCHED_DRAFT_PROBE) {
		s->draft_idle = 0;
		return 1;
	}
	const double a = s->cost.coef[0], b = s->cost.coef[1], c = s->cost.coef[2];
	if (c <= 0)
		return 1;
	if (s->draft_acc * (a / rows + b) <= c)
		return 0;
	s->draft_idle = 0;
	return 1;
}

/* Generating sequences: one token each (under a target: the chosen rows). */
static void plan_decode(sched *s, step_plan *p)
{
	if (s->target_ms > 0)
		size_step(s, p);
	if (p->sized) {
		for (int k = 0; k < p->rows; k++)
			plan_token(s, p, s->running.v[s->cand[k].idx]);
		return;
	}
	p->pf = prefill_first(s);
	int pending = 0;
	for (int i = 0; i < s->running.n; i++)
		pending += s->running.v[i]->pending >= 0;
	/* drafts take at most s->draft tokens and never a pending token's place */
	p->draft_room = s->max_step - pending < s->draft ? s->max_step - pending : s->draft;
	if (!drafts_pay(s, pending))
		p->draft_room = 0;
	for (int i = 0; i < s->running.n && p->T < s->max_step; i++) {
		sreq *q = s->running.v[i];
		if (q->pending >= 0 && (!p->pf || p->t0 - q->t_last >= s->decode_delay_ms))
			plan_token(s, p, q);
	}
}

/* Prefill first: the room the prompt chunks left goes to the generating
 * sequences that are not overdue yet. */
static void plan_fill(sched *s, step_plan *p)
{
	if (!p->pf)
		return;
	for (int i = 0; i < s->running.n && p->T < s->max_step; i++) {
		sreq *q = s->running.v[i];
		if (q->pending >= 0 && q->last_dec != s->st.steps + 1)
			plan_token(s, p, q);
	}
}

/* Prompt chunks, first admitted first, within the step's token budget
 * (under a target: the sized budget, and only as many prompts as there is
 * room for beside the decoding sequences, except the only sequence of an
 * agent while another agent runs several: it gets at least
 * SCHED_MIN_PREFILL tokens a step, then the decode choice rotates with its
 * bounded wait, so a busy agent cannot hold a newcomer's first token back
 * until its own long sequences end. Many agents with one request each all
 * wait for room: starting them all would make every sequence take turns,
 * far past the target). */
static void plan_prefill(sched *s, step_plan *p)
{
	int budget = s->max_step - p->T;
	if (p->n_dec > 0 && budget > s->prefill_chunk)
		budget = s->prefill_chunk;
	if (p->sized && budget > p->pre_cap)
		budget = p->pre_cap;
	int joins = 0;
	for (int i = 0; i < s->running.n && p->T < s->max_step; i++) {
		sreq *q = s->running.v[i];
		if (q->pending >= 0 || q->n_fed >= q->gen.n_prompt)
			continue;
		/* its agent's only sequence, while another agent holds several:
		 * it starts beyond the room (that agent's sequences then take
		 * turns with it), so a busy agent cannot keep a newcomer out */
		const int only = p->sized && p->busy && q->ag->running <= 1;
		const int in_room = joins++ < p->room;
		if (p->sized && !in_room && !only)
			continue;
		int cap = budget;
		if (only && !in_room && cap < SCHED_MIN_PREFILL)
			cap = s->max_step - p->T < SCHED_MIN_PREFILL ? s->max_step - p->T
								     : SCHED_MIN_PREFILL;
		if (cap <= 0)
			continue;
		int chunk = q->gen.n_prompt - q->n_fed;
		if (chunk > cap)
			chunk = cap;
		const int last = q->n_fed + chunk == q->gen.n_prompt;
		s->batch[p->n] = (llama_batch_seq){&q->seq, q->gen.prompt + q->n_fed, chunk,
						   last ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_NONE,
						   last ? q->logits : NULL};
		s->batch_req[p->n++] = q;
		budget = budget > chunk ? budget - chunk : 0;
		p->T += chunk;
		p->n_pre++;
		p->pre_tok += chunk;
	}
}

/* The step failed: every request in it ends with an err event. */
static void fail_step(sched *s, const step_plan *p, int rc)
{
	blog_msg(s->log, BLOG_ERR, "%s: step failed (%s); failing its %d requests", s->name,
		 herd_strerror(rc), p->n);
	for (int j = 0; j < p->n; j++)
		for (int i = 0; i < s->running.n; i++)
			if (s->running.v[i] == s->batch_req[j]) {
				sreq *q = s->running.v[i];
				vec_del(&s->running, i);
				end_err(s, q, rc, "evaluation failed: %s", herd_strerror(rc));
				break;
			}
}

static void count_step(sched *s, const step_plan *p, double ms)
{
	s->st.steps++;
	s->st.step_seqs += (uint64_t)p->n;
	s->st.step_hist[p->n < SCHED_HIST_N - 1 ? p->n : SCHED_HIST_N - 1]++;
	if (p->n > s->st.max_step_seqs)
		s->st.max_step_seqs = p->n;
	s->st.step_ms += ms;
	s->st.tokens_prompt += (uint64_t)p->pre_tok;
	bsz_model_observe(&s->cost, p->n_dec, p->pre_tok + p->drafted, ms);
	for (int j = 0; j < p->n; j++) /* fair share: what each agent was served */
		s->batch_req[j]->ag->vtime += (uint64_t)s->batch[j].n_tokens;
}

/* Samples every sequence that got logits; requests that finish leave the
 * batch now. */
static void sample_step(sched *s, const step_plan *p, double t)
{
	for (int j = 0; j < p->n; j++) {
		sreq *q = s->batch_req[j];
		if (q->pending < 0) { /* a prompt chunk */
			q->n_fed += s->batch[j].n_tokens;
			if (q->n_fed < q->gen.n_prompt)
				continue;
			q->last_dec = s->st.steps; /* pending from now: its turn counts from here */
		}
		const int finish = s->batch[j].n_tokens > 1 && q->pending >= 0
					   ? sample_spec(s, q, &s->batch[j], t)
					   : sample_next(s, q, q->logits, t);
		if (finish != HERD_FINISH_NONE)
			finish_running(s, q, finish);
	}
}

static void step(sched *s)
{
	const double t0 = clock_mono_ms();
	step_plan p = {.t0 = t0};
	plan_decode(s, &p);
	plan_prefill(s, &p);
	plan_fill(s, &p);
	if (p.n == 0)
		return;
	int rc = llama_decode(s->ctx, s->batch, p.n);
	const double t1 = clock_mono_ms();
	if (rc) {
		fail_step(s, &p, rc);
		return;
	}
	count_step(s, &p, t1 - t0);
	if (p.n_dec > 0 && s->t_dec > 0)
		bsz_ctl_gap(&s->ctl, t1 - s->t_dec);
	if (p.n_dec > 0)
		s->t_dec = t1;
	sample_step(s, &p, t1);
	if (s->running.n == 0)
		s->t_dec = 0; /* the thread may sleep now: the next gap is no TPOT */
	blog_msg(s->log, BLOG_DEBUG,
		 "%s: step %llu: %d seqs (%d decode, %d prefill / %d tokens), %d tokens, %.2f ms, "
		 "waiting %d, paused %d, kv free %d/%d",
		 s->name, (unsigned long long)s->st.steps, p.n, p.n_dec, p.n_pre, p.pre_tok, p.T,
		 t1 - t0, s->waiting.n, s->paused.n, llama_ctx_free_pages(s->ctx), s->kv_total);
}

/* Publishes this iteration's events and stats; wakes the loop. */
static void publish(sched *s)
{
	s->st.waiting = s->waiting.n;
	s->st.running = s->running.n;
	s->st.paused = s->paused.n;
	s->st.kv_pages_total = s->kv_total;
	s->st.kv_pages_free = llama_ctx_free_pages(s->ctx);
	s->st.kv_pages_reserved = s->reserved;
	s->st.step_gap_p95_ms = bsz_ctl_p95(&s->ctl);
	s->st.step_budget_ms = s->target_ms > 0 ? bsz_ctl_budget(&s->ctl) : 0;
	s->st.prefix_pages_cached = llama_ctx_cached_pages(s->ctx);
	s->st.prefix_evictions = llama_ctx_evictions(s->ctx);
	s->st.kv_pages_limit = llama_ctx_kv_limit(s->ctx);
	s->st.kv_pages_trimmable = llama_ctx_kv_trimmable(s->ctx);
	sched_event *e = s->out_head;
	pthread_mutex_lock(&s->mu);
	if (e) {
		if (s->ev_tail)
			s->ev_tail->next = e;
		else
			s->ev_head = e;
		s->ev_tail = s->out_tail;
	}
	s->n_live -= s->n_ended;
	s->pub = s->st;
	sched_window_tick(s->win, &s->pub, clock_mono_ms());
	pthread_mutex_unlock(&s->mu);
	s->out_head = s->out_tail = NULL;
	s->n_ended = 0;
	if (e)
		wake_loop(s);
}

static void abs_time(double ms, struct timespec *ts)
{
	/* ms is on CLOCK_MONOTONIC, as the condition variable's clock. */
	ts->tv_sec = (time_t)(ms / 1e3);
	ts->tv_nsec = (long)((ms - (double)ts->tv_sec * 1e3) * 1e6);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
	if (ts->tv_nsec < 0)
		ts->tv_nsec = 0;
}

/* Earliest time something waiting needs attention (deadline or the end of
 * the batch-forming wait); 0 when nothing. */
static double next_wake(const sched *s, double t)
{
	double w = 0;
	for (int i = 0; i < s->waiting.n; i++) {
		double d = s->waiting.v[i]->gen.t_deadline;
		if (d > 0 && (w == 0 || d < w))
			w = d;
	}
	double b = 0;
	if (s->waiting.n > 0 && !batch_ready(s, t, &b) && (w == 0 || b < w))
		w = b;
	return w;
}

/* Waits on the condition variable (mu held) until there is something to
 * do: new requests or cancellations, shutdown or stop, running sequences,
 * a batch ready to start, or a deadline. */
static void wait_for_work(sched *s)
{
	for (;;) {
		if (!s->stop && s->hold && s->hold(s->hold_arg) && !(s->shutdown && !s->shutdown_done)) {
			struct timespec ts;
			abs_time(clock_mono_ms() + SCHED_HOLD_POLL_MS, &ts);
			pthread_cond_timedwait(&s->cv, &s->mu, &ts);
			continue;
		}
		if (s->stop || s->in_head || s->n_cancels || s->kv_shed_req ||
		    (s->shutdown && !s->shutdown_done))
			return;
		if (s->running.n > 0 || s->paused.n > 0)
			return;
		double t = clock_mono_ms();
		if (s->waiting.n > 0 && batch_ready(s, t, NULL) && (s->dynamic || s->running.n == 0))
			return;
		double w = next_wake(s, t);
		if (w > 0 && w <= t)
			return;
		if (w > 0) {
			struct timespec ts;
			abs_time(w, &ts);
			pthread_cond_timedwait(&s->cv, &s->mu, &ts);
		} else {
			pthread_cond_wait(&s->cv, &s->mu);
		}
	}
}

/* What one iteration takes from the shared queues. */
typedef struct inbox {
	sreq *in;                           /* new requests, in order */
	cancel_req buf[SCHED_CANCEL_BATCH]; /* cancellations without a heap copy */
	cancel_req *cancels;                /* buf, or a malloc'd array */
	int n_cancels;
	int do_shutdown;
	int kv_shed;                        /* SCHED_KV_* */
} inbox;

/* Moves the submit queue, the cancellations (as many as fit when memory is
 * short: the rest wait for the next iteration) and a pending shutdown into
 * box. mu held. */
static void take_inbox(sched *s, inbox *box)
{
	box->in = s->in_head;
	s->in_head = s->in_tail = NULL;
	s->n_in = 0;
	box->n_cancels = s->n_cancels;
	box->cancels = box->buf;
	if (box->n_cancels > SCHED_CANCEL_BATCH) {
		box->cancels = malloc(sizeof(*box->cancels) * (size_t)box->n_cancels);
		if (!box->cancels) {
			box->cancels = box->buf;
			box->n_cancels = SCHED_CANCEL_BATCH;
		}
	}
	if (box->n_cancels > 0) {
		memcpy(box->cancels, s->cancels, sizeof(*box->cancels) * (size_t)box->n_cancels);
		for (int i = 0; i < box->n_cancels; i++) { /* O(1) each, by (conn, id) */
			cancel_req *c = &box->cancels[i];
			if (!c->whole_conn && (c->q = hash_find(s, c->conn, c->id, 1)))
				c->q->cancel_req = 2;
		}
		memmove(s->cancels, s->cancels + box->n_cancels,
			sizeof(*box->cancels) * (size_t)(s->n_cancels - box->n_cancels));
		s->n_cancels -= box->n_cancels;
	}
	box->kv_shed = s->kv_shed_req;
	s->kv_shed_req = 0;
	box->do_shutdown = s->shutdown && !s->shutdown_done;
	if (box->do_shutdown)
		s->shutdown_done = 1;
}

/* Cancellations mark their requests (new ones included, which then end
 * before any work), new requests begin (or fail), then one sweep ends the
 * cancelled ones and those of closed connections; then shutdown. */
static void apply_inbox(sched *s, inbox *box)
{
	int any = 0;
	for (int i = 0; i < box->n_cancels; i++)
		if (box->cancels[i].q) {
			box->cancels[i].q->cancelled = 1;
			any = 1;
		}
	while (box->in) {
		sreq *q = box->in;
		box->in = q->next;
		q->next = NULL;
		if (intake(s, q))
			continue;
		if (vec_push(&s->waiting, q))
			end_err(s, q, -ENOMEM, "out of memory");
	}
	if (any)
		sweep_cancelled(s, 0);
	for (int i = 0; i < box->n_cancels; i++)
		if (box->cancels[i].whole_conn)
			sweep_cancelled(s, box->cancels[i].conn);
	if (box->cancels != box->buf)
		free(box->cancels);
	if (box->do_shutdown)
		cancel_everything(s);
	if (box->kv_shed)
		kv_shed(s, box->kv_shed);
}

static void *sched_main(void *arg)
{
	sched *s = arg;
	inbox box;
	pthread_setname_np(pthread_self(), "herd-sched"); /* for top -H, /proc/PID/task */
	for (;;) {
		pthread_mutex_lock(&s->mu);
		wait_for_work(s);
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		take_inbox(s, &box);
		pthread_mutex_unlock(&s->mu);
		apply_inbox(s, &box);
		double t = clock_mono_ms();
		expire_deadlines(s, t);
		admit(s, t);
		if (s->running.n > 0)
			step(s);
		publish(s);
		cache_flush(s);
	}
	return NULL;
}

/* ---- lifetime ----------------------------------------------------------- */

int sched_create(sched **out, const sched_opts *o)
{
	*out = NULL;
	if (!o || !o->ctx)
		return HERD_E_INVAL;
	sched *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int rc = -ENOMEM;
	s->ctx = o->ctx;
	s->m = llama_ctx_model(o->ctx);
	s->n_vocab = s->m->hp.n_vocab;
	s->n_ctx = llama_ctx_n_ctx(o->ctx);
	s->max_step = llama_ctx_max_step_tokens(o->ctx);
	s->max_batch = o->max_batch > 0 ? o->max_batch : SCHED_DEFAULT_MAX_BATCH;
	if (s->max_batch > s->max_step)
		s->max_batch = s->max_step;
	s->max_wait_ms = o->max_wait_ms > 0 ? o->max_wait_ms : 0;
	s->dynamic = o->dynamic_batching;
	s->prio_threshold = o->priority_threshold;
	s->max_running_agent = o->max_running_per_agent;
	s->prefill_chunk = o->prefill_chunk > 0 ? o->prefill_chunk : SCHED_DEFAULT_PREFILL_CHUNK;
	s->target_ms = o->target_tpot_ms;
	s->decode_delay_ms = o->max_decode_delay_ms > 0 ? o->max_decode_delay_ms : 0;
	bsz_model_init(&s->cost);
	s->draft_acc = 1;
	bsz_ctl_init(&s->ctl, s->target_ms > 0 ? s->target_ms : 0);
	s->max_tokens = o->max_tokens;
	s->wake_fd = o->wake_fd;
	s->log = o->log;
	s->hold = o->hold;
	s->hold_arg = o->hold_arg;
	s->rcache = o->respcache;
	if (o->digest)
		memcpy(s->digest, o->digest, RESPCACHE_HASH);
	snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "model");
	s->kv_total = llama_ctx_free_pages(o->ctx);
	s->prefix = o->prefix_cache;
	s->model_id = o->model_id;
	s->model_id_len = o->model_id_len;
	s->draft = s->target_ms > 0 || o->draft_tokens <= 0 ? 0
		   : o->draft_tokens > SPEC_MAX_DRAFT ? SPEC_MAX_DRAFT : o->draft_tokens;
	s->step_tok = malloc(sizeof(int32_t) * (size_t)s->max_batch * (size_t)(1 + s->draft));
	s->spec_logits = malloc(sizeof(float) * (size_t)s->n_vocab * (size_t)(2 * s->draft + 1));
	s->batch = malloc(sizeof(*s->batch) * (size_t)s->max_batch);
	s->batch_req = malloc(sizeof(*s->batch_req) * (size_t)s->max_batch);
	s->cand = malloc(sizeof(*s->cand) * (size_t)s->max_batch);
	s->hcap = 64;
	s->htab = calloc((size_t)s->hcap, sizeof(*s->htab));
	if (!s->step_tok || !s->spec_logits || !s->batch || !s->batch_req || !s->cand || !s->htab)
		goto fail;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&s->mu, NULL);
	s->pub.kv_pages_total = s->pub.kv_pages_free = s->pub.kv_pages_limit = s->kv_total;
	s->win = sched_window_new(clock_mono_ms()); /* NULL: no recent view, totals only */
	rc = -pthread_create(&s->thread, NULL, sched_main, s);
	if (rc) {
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		goto fail;
	}
	s->thread_started = 1;
	*out = s;
	return 0;
fail:
	sched_window_free(s->win);
	free(s->htab);
	free(s->step_tok);
	free(s->spec_logits);
	free(s->batch);
	free(s->batch_req);
	free(s->cand);
	free(s);
	return rc;
}

void sched_destroy(sched *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (s->thread_started)
		pthread_join(s->thread, NULL);
	while (s->in_head) {
		sreq *q = s->in_head;
		s->in_head = q->next;
		sreq_free(s, q);
	}
	sreq_vec *lists[] = {&s->waiting, &s->running, &s->paused};
	for (int l = 0; l < 3; l++) {
		for (int i = 0; i < lists[l]->n; i++)
			sreq_free(s, lists[l]->v[i]);
		free(lists[l]->v);
	}
	sched_event_free(s->ev_head);
	sched_event_free(s->out_head);
	s->t_first_use = -1e18; /* write queued uses too: everything goes */
	cache_flush(s);
	free(s->store);
	merge_table_fini(&s->merge);
	free(s->cancels);
	free(s->htab);
	sched_window_free(s->win);
	for (int i = 0; i < s->n_agents; i++)
		free(s->agents[i]);
	free(s->agents);
	free(s->step_tok);
	free(s->spec_logits);
	free(s->batch);
	free(s->batch_req);
	free(s->cand);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
