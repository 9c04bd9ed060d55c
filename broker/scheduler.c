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
#include "model/chat.h"
#include "model/textstream.h"
#include "model/tokenizer.h"
#include "common/clock.h"

enum { ST_WAITING = 0, ST_RUNNING = 1, ST_PAUSED = 2 };

/* Scheduler-side state of one request. Owned by the scheduler thread once
 * taken from the submit queue. */
typedef struct sreq {
	struct sreq *next;  /* submit queue link */
	sched_req *r;
	int state;
	uint64_t arrival;   /* submission order */
	double t_arrive, t_admit, t_first, t_deadline; /* ms, monotonic; deadline 0 = none */
	int32_t *prompt;    /* tokenized prompt [n_prompt] */
	int n_prompt;
	int n_fed;          /* prompt tokens already in the KV cache */
	int max_gen;        /* max_tokens clamped to what the context can hold */
	int n_gen;
	int32_t pending;    /* sampled token still to be fed; -1 none */
	int reserve;        /* KV pages reserved for the worst case */
	llama_seq seq;
	sampler *smp;
	float *logits;      /* [n_vocab] */
	char *text;         /* generated text [text_len], NUL-terminated */
	size_t text_len, text_cap, emitted;
	int eff_prio;       /* admission sort keys, refreshed before sorting */
	int agent_running;
} sreq;

typedef struct cancel_req {
	uint64_t conn, id;
	int whole_conn; /* 1: every request of conn, silently */
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
	const tok_vocab *vocab;
	int n_vocab, n_ctx, max_step;
	int max_batch, max_wait_ms, dynamic, prio_threshold, aging_ms, prefill_chunk, max_tokens;
	int wake_fd;
	const blog *log;
	char name[72];
	int kv_total;
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
	uint64_t next_arrival;
	int n_live;             /* submitted and not yet ended (event published) */
	sched_event *ev_head, *ev_tail;
	sched_stats pub;        /* published copy of st */

	/* scheduler thread only */
	sreq_vec waiting, running, paused;
	int reserved;           /* KV pages reserved by running + paused */
	sched_stats st;
	sched_event *out_head, *out_tail; /* events of this iteration */
	int n_ended;            /* requests ended this iteration */
	int32_t *step_tok;      /* scratch: step token storage (decode tokens) */
	llama_batch_seq *batch;
	sreq **batch_req;
	char *piece;
	int piece_cap;
};


/* ---- requests and events ---------------------------------------------- */

sched_req *sched_req_new(void)
{
	sched_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->max_tokens = 128;
	r->sp = sampler_params_default();
	r->sp.temperature = 0;
	r->cache = 1;
	return r;
}

static void free_strv(char **v, int n)
{
	if (!v)
		return;
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void sched_req_free(sched_req *r)
{
	if (!r)
		return;
	free(r->prompt);
	free(r->tokens);
	free_strv(r->roles, r->n_msgs);
	free_strv(r->contents, r->n_msgs);
	free_strv(r->stop, r->n_stop);
	free(r);
}

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

static void sreq_free(sched *s, sreq *q)
{
	if (!q)
		return;
	llama_seq_reset(s->ctx, &q->seq);
	sampler_destroy(q->smp);
	free(q->prompt);
	free(q->logits);
	free(q->text);
	sched_req_free(q->r);
	free(q);
}

static sched_event *ev_new(sched_ev_type t, const sreq *q)
{
	sched_event *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->type = t;
	e->conn = q->r->conn;
	e->id = q->r->id;
	e->agent = q->r->agent;
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

static void lat_add(sched_lat *l, double ms)
{
	if (ms < 0)
		ms = 0;
	l->n++;
	l->sum_ms += ms;
	if (ms > l->max_ms)
		l->max_ms = ms;
	int b = 0;
	for (double lim = 1; b < SCHED_LAT_N - 1 && ms >= lim; lim *= 2)
		b++;
	l->hist[b]++;
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
	}
	ev_post(s, e);
	s->st.requests_err++;
	s->n_ended++;
	if (q->state != ST_WAITING)
		s->reserved -= q->reserve;
	sreq_free(s, q);
}

/* Ends q with a done event (notify == 0: silently). q must be out of every list. */
static void end_done(sched *s, sreq *q, const char *reason, int notify)
{
	const double t = clock_mono_ms();
	if (notify) {
		sched_event *e = ev_new(SCHED_EV_DONE, q);
		if (e) {
			e->reason = reason;
			e->n_prompt = q->n_prompt;
			e->n_gen = q->n_gen;
			e->t_queue_ms = (q->t_admit > 0 ? q->t_admit : t) - q->t_arrive;
			e->t_first_ms = q->t_first > 0 ? q->t_first - q->t_arrive : -1;
			e->t_total_ms = t - q->t_arrive;
			if (!q->r->stream) {
				e->text = q->text;
				e->text_len = q->text_len;
				q->text = NULL;
				if (!e->text)
					e->text = strdup("");
			}
		}
		ev_post(s, e);
	}
	if (!strcmp(reason, "cancel"))
		s->st.requests_cancelled++;
	else
		s->st.requests_done++;
	lat_add(&s->st.queue, (q->t_admit > 0 ? q->t_admit : t) - q->t_arrive);
	if (q->t_first > 0)
		lat_add(&s->st.first, q->t_first - q->t_arrive);
	lat_add(&s->st.total, t - q->t_arrive);
	s->n_ended++;
	if (q->state != ST_WAITING)
		s->reserved -= q->reserve;
	sreq_free(s, q);
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

int sched_submit(sched *s, sched_req *r)
{
	if (!s || !r)
		return HERD_E_INVAL;
	sreq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->r = r;
	q->pending = -1;
	q->t_arrive = clock_mono_ms();
	q->t_deadline = r->deadline_ms ? q->t_arrive + r->deadline_ms : 0;
	llama_seq_init(&q->seq);
	pthread_mutex_lock(&s->mu);
	if (s->shutdown || s->stop) {
		pthread_mutex_unlock(&s->mu);
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
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void push_cancel(sched *s, uint64_t conn, uint64_t id, int whole)
{
	pthread_mutex_lock(&s->mu);
	if (s->n_cancels == s->cap_cancels) {
		int cap = s->cap_cancels ? s->cap_cancels * 2 : 16;
		cancel_req *n = realloc(s->cancels, sizeof(*n) * (size_t)cap);
		if (!n) {
			pthread_mutex_unlock(&s->mu);
			return; /* the request runs to its end; its events go nowhere */
		}
		s->cancels = n;
		s->cap_cancels = cap;
	}
	s->cancels[s->n_cancels++] = (cancel_req){conn, id, whole};
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void sched_cancel(sched *s, uint64_t conn, uint64_t id)
{
	if (s)
		push_cancel(s, conn, id, 0);
}

void sched_cancel_conn(sched *s, uint64_t conn)
{
	if (s)
		push_cancel(s, conn, 0, 1);
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

void sched_get_stats(sched *s, sched_stats *st)
{
	pthread_mutex_lock(&s->mu);
	*st = s->pub;
	st->waiting += s->n_in;
	pthread_mutex_unlock(&s->mu);
}

/* ---- the scheduler thread --------------------------------------------- */

/* Tokenizes q's input. Returns 0 or ends q with an err event and returns
 * nonzero. */
static int intake(sched *s, sreq *q)
{
	sched_req *r = q->r;
	int n = 0, rc = 0;
	if (r->input == SCHED_IN_TOKENS) {
		if (r->n_tokens > 0) {
			q->prompt = malloc(sizeof(int32_t) * (size_t)r->n_tokens);
			if (!q->prompt) {
				rc = -ENOMEM;
				goto fail;
			}
			for (int i = 0; i < r->n_tokens; i++)
				if (r->tokens[i] < 0 || r->tokens[i] >= s->n_vocab) {
					end_err(s, q, HERD_E_INVAL, "token %d at index %d is outside the vocabulary (%d)",
						(int)r->tokens[i], i, s->n_vocab);
					return -1;
				}
			memcpy(q->prompt, r->tokens, sizeof(int32_t) * (size_t)r->n_tokens);
		}
		n = r->n_tokens;
	} else {
		chat_msg *msgs = NULL;
		if (r->input == SCHED_IN_CHAT) {
			msgs = calloc((size_t)(r->n_msgs > 0 ? r->n_msgs : 1), sizeof(*msgs));
			if (!msgs) {
				rc = -ENOMEM;
				goto fail;
			}
			for (int i = 0; i < r->n_msgs; i++)
				msgs[i] = (chat_msg){r->roles[i], r->contents[i]};
		}
		int cap = 64;
		if (r->input == SCHED_IN_PROMPT)
			cap = (int)(r->prompt_len < (1u << 28) ? r->prompt_len : (1u << 28)) + 8;
		for (int tries = 0; tries < 2; tries++) {
			free(q->prompt);
			q->prompt = malloc(sizeof(int32_t) * (size_t)cap);
			if (!q->prompt) {
				rc = -ENOMEM;
				break;
			}
			if (r->input == SCHED_IN_PROMPT)
				n = tok_encode(s->vocab, r->prompt ? r->prompt : "", r->prompt_len,
					       tok_add_bos(s->vocab) ? TOK_ADD_BOS : 0, q->prompt, cap);
			else
				n = chat_tokenize(s->vocab, msgs, r->n_msgs, 1, q->prompt, cap);
			if (n < 0) {
				rc = n;
				break;
			}
			if (n <= cap)
				break;
			cap = n;
		}
		free(msgs);
		if (rc)
			goto fail;
	}
	q->n_prompt = n;
	if (n == 0) {
		end_err(s, q, HERD_E_INVAL, "empty prompt");
		return -1;
	}
	if (n > s->n_ctx) {
		end_err(s, q, HERD_E_NOSPACE, "prompt of %d tokens is longer than the context (%d)", n,
			s->n_ctx);
		return -1;
	}
	int max_gen = r->max_tokens;
	if (s->max_tokens > 0 && max_gen > s->max_tokens)
		max_gen = s->max_tokens;
	if (max_gen > s->n_ctx - n + 1)
		max_gen = s->n_ctx - n + 1;
	if (max_gen < 0)
		max_gen = 0;
	q->max_gen = max_gen;
	int positions = n + (max_gen > 0 ? max_gen - 1 : 0);
	q->reserve = (positions + LLAMA_KV_PAGE - 1) / LLAMA_KV_PAGE;
	if (q->reserve > s->kv_total) {
		end_err(s, q, HERD_E_NOSPACE,
			"request needs %d KV positions but the cache holds %d", positions,
			s->kv_total * LLAMA_KV_PAGE);
		return -1;
	}
	rc = sampler_create(&q->smp, &r->sp, s->n_vocab);
	if (rc) {
		end_err(s, q, rc == HERD_E_INVAL ? HERD_E_INVAL : rc, "bad sampling parameters: %s",
			herd_strerror(rc));
		return -1;
	}
	for (int i = 0; i < n; i++)
		sampler_accept(q->smp, q->prompt[i]);
	return 0;
fail:
	end_err(s, q, rc, "cannot prepare the prompt: %s", herd_strerror(rc));
	return -1;
}

/* Removes and ends (silently or with a "cancel" done) the requests that
 * match c from every list. */
static void apply_cancel(sched *s, const cancel_req *c)
{
	sreq_vec *lists[] = {&s->waiting, &s->running, &s->paused};
	for (int l = 0; l < 3; l++) {
		sreq_vec *v = lists[l];
		for (int i = 0; i < v->n;) {
			sreq *q = v->v[i];
			if (q->r->conn == c->conn && (c->whole_conn || q->r->id == c->id)) {
				vec_del(v, i);
				end_done(s, q, "cancel", !c->whole_conn);
				if (!c->whole_conn)
					return;
			} else {
				i++;
			}
		}
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
			end_done(s, q, "cancel", 1);
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
			if (q->t_deadline > 0 && t >= q->t_deadline) {
				vec_del(v, i);
				end_done(s, q, "deadline", 1);
			} else {
				i++;
			}
		}
	}
}

static int cmp_admission(const void *a, const void *b)
{
	const sreq *x = *(sreq *const *)a, *y = *(sreq *const *)b;
	if (x->eff_prio != y->eff_prio)
		return x->eff_prio > y->eff_prio ? -1 : 1;
	if (x->agent_running != y->agent_running)
		return x->agent_running < y->agent_running ? -1 : 1;
	return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

static int agent_running(const sched *s, uint64_t agent)
{
	int n = 0;
	for (int i = 0; i < s->running.n; i++)
		n += s->running.v[i]->r->agent == agent;
	return n;
}

/* 1 when an idle batch may start now (the batch-forming wait is over). */
static int batch_ready(const sched *s, double t, double *wake)
{
	double oldest = -1;
	for (int i = 0; i < s->waiting.n; i++) {
		const sreq *q = s->waiting.v[i];
		if (q->r->prio >= s->prio_threshold)
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
	if (!q->logits)
		q->logits = malloc(sizeof(float) * (size_t)s->n_vocab);
	if (!q->logits) {
		s->running.n--;
		end_err(s, q, -ENOMEM, "out of memory");
	}
}

static void admit(sched *s, double t)
{
	/* Paused sequences come back first: their pages are already held. */
	while (s->paused.n > 0 && s->running.n < s->max_batch) {
		int best = 0;
		for (int i = 1; i < s->paused.n; i++)
			if (s->paused.v[i]->r->prio > s->paused.v[best]->r->prio)
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
	for (int i = 0; i < s->waiting.n; i++) {
		sreq *q = s->waiting.v[i];
		double waited = t - q->t_arrive;
		q->eff_prio = q->r->prio + (int)(waited / s->aging_ms);
		q->agent_running = agent_running(s, q->r->agent);
	}
	qsort(s->waiting.v, (size_t)s->waiting.n, sizeof(*s->waiting.v), cmp_admission);
	while (s->waiting.n > 0) {
		sreq *q = s->waiting.v[0];
		if (s->reserved + q->reserve > s->kv_total)
			break; /* keep the order: no overtaking by smaller requests */
		if (s->running.n >= s->max_batch) {
			if (q->r->prio < s->prio_threshold)
				break;
			/* Preempt the lowest-priority running sequence below the threshold
			 * (the latest arrival among equals). It keeps its pages. */
			int victim = -1;
			for (int i = 0; i < s->running.n; i++) {
				const sreq *v = s->running.v[i];
				if (v->r->prio >= s->prio_threshold)
					continue;
				if (victim < 0 || v->r->prio < s->running.v[victim]->r->prio ||
				    (v->r->prio == s->running.v[victim]->r->prio &&
				     v->arrival > s->running.v[victim]->arrival))
					victim = i;
			}
			if (victim < 0)
				break;
			sreq *v = s->running.v[victim];
			vec_del(&s->running, victim);
			v->state = ST_PAUSED;
			if (vec_push(&s->paused, v))
				end_err(s, v, -ENOMEM, "out of memory");
			s->st.preemptions++;
		}
		vec_del(&s->waiting, 0);
		admit_one(s, q, t);
	}
}

static int text_append(sreq *q, const char *p, size_t n)
{
	if (q->text_len + n + 1 > q->text_cap) {
		size_t cap = q->text_cap ? q->text_cap * 2 : 256;
		while (cap < q->text_len + n + 1)
			cap *= 2;
		char *t = realloc(q->text, cap);
		if (!t)
			return -ENOMEM;
		q->text = t;
		q->text_cap = cap;
	}
	memcpy(q->text + q->text_len, p, n);
	q->text_len += n;
	q->text[q->text_len] = 0;
	return 0;
}

/* Streams text[emitted..upto) as a tok event for token tok. */
static void emit_tok(sched *s, sreq *q, int32_t tok, size_t upto)
{
	sched_event *e = ev_new(SCHED_EV_TOK, q);
	if (e) {
		size_t n = upto > q->emitted ? upto - q->emitted : 0;
		e->tok = tok;
		e->text = malloc(n + 1);
		if (!e->text) {
			free(e);
			return;
		}
		if (n)
			memcpy(e->text, q->text + q->emitted, n);
		e->text[n] = 0;
		e->text_len = n;
		if (upto > q->emitted)
			q->emitted = upto;
	}
	ev_post(s, e);
}

/* Samples q's next token from q->logits. Returns 1 when q has finished (and
 * has been ended: the caller must already have removed it from running). */
static int sample_next(sched *s, sreq *q, double t, const char **reason)
{
	int32_t tok = sampler_sample(q->smp, q->logits);
	sampler_accept(q->smp, tok);
	if (q->t_first <= 0)
		q->t_first = t;
	if (tok_is_eog(s->vocab, tok)) {
		if (q->r->stream && q->emitted < q->text_len)
			emit_tok(s, q, tok, q->text_len);
		*reason = "stop";
		return 1;
	}
	q->n_gen++;
	s->st.tokens_gen++;
	int len = tok_piece(s->vocab, tok, s->piece, (size_t)s->piece_cap);
	size_t old = q->text_len;
	if (len > 0 && len <= s->piece_cap && text_append(q, s->piece, (size_t)len)) {
		*reason = "error";
		return 1;
	}
	const char *why = NULL;
	if (q->r->n_stop > 0) {
		long at = text_find_stop(q->text, q->text_len, old, (const char *const *)q->r->stop,
					 (size_t)q->r->n_stop);
		if (at >= 0) {
			q->text_len = (size_t)at;
			q->text[at] = 0;
			why = "stop";
		}
	}
	if (!why && q->n_gen >= q->max_gen)
		why = "length";
	if (q->r->stream) {
		size_t upto = why ? q->text_len
				  : q->text_len - text_holdback(q->text, q->text_len,
								(const char *const *)q->r->stop,
								(size_t)q->r->n_stop);
		emit_tok(s, q, tok, upto);
	}
	if (why) {
		*reason = why;
		return 1;
	}
	q->pending = tok;
	return 0;
}

static void finish_running(sched *s, int idx, const char *reason)
{
	sreq *q = s->running.v[idx];
	vec_del(&s->running, idx);
	if (!strcmp(reason, "error"))
		end_err(s, q, -ENOMEM, "out of memory");
	else
		end_done(s, q, reason, 1);
}

static void step(sched *s)
{
	const double t0 = clock_mono_ms();
	int n = 0, T = 0, n_dec = 0, n_pre = 0, pre_tok = 0;
	/* Generating sequences: one token each. */
	for (int i = 0; i < s->running.n && T < s->max_step; i++) {
		sreq *q = s->running.v[i];
		if (q->pending < 0)
			continue;
		s->step_tok[n] = q->pending;
		s->batch[n] = (llama_batch_seq){&q->seq, &s->step_tok[n], 1, LLAMA_LOGITS_LAST, q->logits};
		s->batch_req[n++] = q;
		T++;
		n_dec++;
	}
	/* Prompt chunks, first admitted first. */
	int budget = s->max_step - T;
	if (n_dec > 0 && budget > s->prefill_chunk)
		budget = s->prefill_chunk;
	for (int i = 0; i < s->running.n && budget > 0; i++) {
		sreq *q = s->running.v[i];
		if (q->pending >= 0 || q->n_fed >= q->n_prompt)
			continue;
		int chunk = q->n_prompt - q->n_fed;
		if (chunk > budget)
			chunk = budget;
		const int last = q->n_fed + chunk == q->n_prompt;
		s->batch[n] = (llama_batch_seq){&q->seq, q->prompt + q->n_fed, chunk,
						last ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_NONE,
						last ? q->logits : NULL};
		s->batch_req[n++] = q;
		budget -= chunk;
		T += chunk;
		n_pre++;
		pre_tok += chunk;
	}
	if (n == 0)
		return;
	int rc = llama_decode(s->ctx, s->batch, n);
	const double t1 = clock_mono_ms();
	if (rc) {
		blog_msg(s->log, BLOG_ERR, "%s: step failed (%s); failing its %d requests", s->name,
			 herd_strerror(rc), n);
		for (int j = 0; j < n; j++)
			for (int i = 0; i < s->running.n; i++)
				if (s->running.v[i] == s->batch_req[j]) {
					sreq *q = s->running.v[i];
					vec_del(&s->running, i);
					end_err(s, q, rc, "evaluation failed: %s", herd_strerror(rc));
					break;
				}
		return;
	}
	s->st.steps++;
	s->st.step_seqs += (uint64_t)n;
	s->st.step_hist[n < SCHED_HIST_N - 1 ? n : SCHED_HIST_N - 1]++;
	if (n > s->st.max_step_seqs)
		s->st.max_step_seqs = n;
	s->st.step_ms += t1 - t0;
	s->st.tokens_prompt += (uint64_t)pre_tok;
	/* Sample; requests that finish leave the batch now. */
	for (int j = 0; j < n; j++) {
		sreq *q = s->batch_req[j];
		const int was_prefill = q->pending < 0;
		if (was_prefill) {
			q->n_fed += s->batch[j].n_tokens;
			if (q->n_fed < q->n_prompt)
				continue;
		}
		const char *reason = NULL;
		if (q->max_gen == 0) {
			reason = "length";
		} else if (!sample_next(s, q, t1, &reason)) {
			continue;
		}
		for (int i = 0; i < s->running.n; i++)
			if (s->running.v[i] == q) {
				finish_running(s, i, reason);
				break;
			}
	}
	blog_msg(s->log, BLOG_DEBUG,
		 "%s: step %llu: %d seqs (%d decode, %d prefill / %d tokens), %d tokens, %.2f ms, "
		 "waiting %d, paused %d, kv free %d/%d",
		 s->name, (unsigned long long)s->st.steps, n, n_dec, n_pre, pre_tok, T, t1 - t0,
		 s->waiting.n, s->paused.n, llama_ctx_free_pages(s->ctx), s->kv_total);
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
		double d = s->waiting.v[i]->t_deadline;
		if (d > 0 && (w == 0 || d < w))
			w = d;
	}
	double b = 0;
	if (s->waiting.n > 0 && !batch_ready(s, t, &b) && (w == 0 || b < w))
		w = b;
	return w;
}

static void *sched_main(void *arg)
{
	sched *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		for (;;) {
			if (s->stop || s->in_head || s->n_cancels || (s->shutdown && !s->shutdown_done))
				break;
			if (s->running.n > 0 || s->paused.n > 0)
				break;
			double t = clock_mono_ms();
			if (s->waiting.n > 0 && batch_ready(s, t, NULL) &&
			    (s->dynamic || s->running.n == 0))
				break;
			double w = next_wake(s, t);
			if (w > 0 && w <= t)
				break;
			if (w > 0) {
				struct timespec ts;
				abs_time(w, &ts);
				pthread_cond_timedwait(&s->cv, &s->mu, &ts);
			} else {
				pthread_cond_wait(&s->cv, &s->mu);
			}
		}
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		sreq *in = s->in_head;
		s->in_head = s->in_tail = NULL;
		s->n_in = 0;
		int n_cancels = s->n_cancels;
		cancel_req cbuf[64];
		cancel_req *cancels = cbuf;
		if (n_cancels > 64) {
			cancels = malloc(sizeof(*cancels) * (size_t)n_cancels);
			if (!cancels) {
				cancels = cbuf;
				n_cancels = 64;
			}
		}
		if (n_cancels > 0) {
			memcpy(cancels, s->cancels, sizeof(*cancels) * (size_t)n_cancels);
			memmove(s->cancels, s->cancels + n_cancels,
				sizeof(*cancels) * (size_t)(s->n_cancels - n_cancels));
			s->n_cancels -= n_cancels;
		}
		const int do_shutdown = s->shutdown && !s->shutdown_done;
		if (do_shutdown)
			s->shutdown_done = 1;
		pthread_mutex_unlock(&s->mu);

		while (in) {
			sreq *q = in;
			in = in->next;
			q->next = NULL;
			if (intake(s, q))
				continue;
			if (vec_push(&s->waiting, q))
				end_err(s, q, -ENOMEM, "out of memory");
		}
		for (int i = 0; i < n_cancels; i++)
			apply_cancel(s, &cancels[i]);
		if (cancels != cbuf)
			free(cancels);
		if (do_shutdown)
			cancel_everything(s);
		double t = clock_mono_ms();
		expire_deadlines(s, t);
		admit(s, t);
		if (s->running.n > 0)
			step(s);
		publish(s);
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
	s->vocab = s->m->vocab;
	s->n_vocab = s->m->hp.n_vocab;
	s->n_ctx = llama_ctx_n_ctx(o->ctx);
	s->max_step = llama_ctx_max_step_tokens(o->ctx);
	s->max_batch = o->max_batch > 0 ? o->max_batch : 32;
	if (s->max_batch > s->max_step)
		s->max_batch = s->max_step;
	s->max_wait_ms = o->max_wait_ms > 0 ? o->max_wait_ms : 0;
	s->dynamic = o->dynamic_batching;
	s->prio_threshold = o->priority_threshold;
	s->aging_ms = o->aging_ms > 0 ? o->aging_ms : 1000;
	s->prefill_chunk = o->prefill_chunk > 0 ? o->prefill_chunk : 128;
	s->max_tokens = o->max_tokens;
	s->wake_fd = o->wake_fd;
	s->log = o->log;
	snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "model");
	s->kv_total = llama_ctx_free_pages(o->ctx);
	s->piece_cap = tok_max_piece_len(s->vocab) + 8;
	s->piece = malloc((size_t)s->piece_cap);
	s->step_tok = malloc(sizeof(int32_t) * (size_t)s->max_batch);
	s->batch = malloc(sizeof(*s->batch) * (size_t)s->max_batch);
	s->batch_req = malloc(sizeof(*s->batch_req) * (size_t)s->max_batch);
	if (!s->piece || !s->step_tok || !s->batch || !s->batch_req)
		goto fail;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&s->mu, NULL);
	s->pub.kv_pages_total = s->pub.kv_pages_free = s->kv_total;
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
	free(s->piece);
	free(s->step_tok);
	free(s->batch);
	free(s->batch_req);
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
	free(s->cancels);
	free(s->piece);
	free(s->step_tok);
	free(s->batch);
	free(s->batch_req);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
