/* Prompt-lookup drafting and its adaptive length (see spec.h). */
#include "model/spec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

int spec_init(spec_ctl *s, int max, const int32_t *prompt, int n_prompt, int cap)
{
	memset(s, 0, sizeof(*s));
	if (max <= 0)
		return 0;
	s->max = s->cur = max > SPEC_MAX_DRAFT ? SPEC_MAX_DRAFT : max;
	s->backoff = s->tbackoff = SPEC_BACKOFF0;
	s->cap = cap > n_prompt ? cap : n_prompt;
	s->hist = malloc(sizeof(int32_t) * (size_t)(s->cap ? s->cap : 1));
	if (!s->hist) {
		s->max = 0;
		return -ENOMEM;
	}
	memcpy(s->hist, prompt, sizeof(int32_t) * (size_t)n_prompt);
	s->n_hist = n_prompt;
	return 0;
}

void spec_fini(spec_ctl *s)
{
	free(s->hist);
	memset(s, 0, sizeof(*s));
}

void spec_push(spec_ctl *s, int32_t tok)
{
	if (s->max > 0 && s->n_hist < s->cap)
		s->hist[s->n_hist++] = tok;
}

/* Start of the tokens after the most recent earlier occurrence of the
 * history's last n tokens, or -1. */
static int lookup(const spec_ctl *s, int n)
{
	const int32_t *h = s->hist, *suf = s->hist + s->n_hist - n;
	for (int j = s->n_hist - n - 1; j >= 0; j--)
		if (h[j] == suf[0] && !memcmp(h + j, suf, sizeof(int32_t) * (size_t)n))
			return j + n;
	return -1;
}

int spec_draft(spec_ctl *s, int lim, int32_t *out)
{
	if (s->max <= 0 || lim <= 0)
		return 0;
	if (s->skip > 0) {
		s->skip--;
		return 0;
	}
	if (s->timed && s->n_plain < SPEC_TIME_MIN)
		return 0; /* learn what a plain step costs first */
	if (lim > s->cur)
		lim = s->cur;
	for (int n = SPEC_NGRAM_MAX; n >= SPEC_NGRAM_MIN; n--) {
		if (s->n_hist <= n)
			continue;
		const int at = lookup(s, n);
		if (at < 0)
			continue;
		int k = s->n_hist - at < lim ? s->n_hist - at : lim;
		memcpy(out, s->hist + at, sizeof(int32_t) * (size_t)k);
		return k;
	}
	return 0;
}

/* Pauses drafting for *backoff steps and doubles *backoff up to max. */
static void pause_drafts(spec_ctl *s, int *backoff, int max)
{
	s->misses = 0;
	s->skip = *backoff > s->skip ? *backoff : s->skip;
	*backoff = 2 * *backoff < max ? 2 * *backoff : max;
}

void spec_time(spec_ctl *s, int n, int accepted, double ms)
{
	if (s->max <= 0 || ms <= 0)
		return;
	s->timed = 1;
	const double per = ms / (accepted + 1);
	int *k = n ? &s->n_spec : &s->n_plain;
	double *avg = n ? &s->ms_spec : &s->ms_plain;
	*avg = *k ? (1 - SPEC_TIME_EWMA) * *avg + SPEC_TIME_EWMA * per : per;
	++*k;
	if (!n || s->n_spec < SPEC_TIME_MIN || s->n_plain < SPEC_TIME_MIN)
		return;
	if (s->ms_spec <= s->ms_plain) {
		s->tbackoff = SPEC_BACKOFF0;
		return;
	}
	pause_drafts(s, &s->tbackoff, SPEC_TIME_BACKOFF_MAX);
	s->n_spec = 0; /* measured afresh after the pause */
}

void spec_done(spec_ctl *s, int n, int accepted)
{
	if (n <= 0)
		return;
	s->drafts++;
	s->drafted += (uint64_t)n;
	s->accepted += (uint64_t)accepted;
	if (accepted == n)
		s->cur = 2 * s->cur < s->max ? 2 * s->cur : s->max;
	else
		s->cur = accepted + 1;
	if (accepted > 0) {
		s->misses = 0;
		s->backoff = SPEC_BACKOFF0;
		return;
	}
	if (++s->misses >= SPEC_MISSES)
		pause_drafts(s, &s->backoff, SPEC_BACKOFF_MAX);
}

/* Steps g over the rows of a step that fed the pending token and n draft
 * tokens; *accepted gets how many draft tokens matched. Returns the last
 * gen_seq_next's code; *stop is set when g finished or fn said so. */
static int verify(gen_seq *g, spec_ctl *sc, const float *logits, int V, const int32_t *draft,
		  int n, spec_piece_fn fn, void *arg, int *accepted, int *stop)
{
	*accepted = 0;
	for (int i = 0;; i++) {
		gen_step st;
		int rc = gen_seq_next(g, logits + (size_t)i * V, clock_mono_ms(), &st);
		if (rc)
			return rc;
		if ((fn && fn(arg, &st)) || st.finish != HERD_FINISH_NONE) {
			*stop = 1;
			return 0;
		}
		spec_push(sc, st.token);
		if (i == n || st.token != draft[i])
			return 0;
		++*accepted;
	}
}

int spec_run(llama_ctx *c, llama_seq *seq, gen_seq *g, spec_ctl *sc, float *logits,
	     spec_piece_fn fn, void *arg)
{
	const int V = llama_ctx_model(c)->hp.n_vocab;
	int32_t tok[1 + SPEC_MAX_DRAFT];
	int n = 0;
	double t0 = 0; /* when the step began; 0: the prompt's logits */
	for (;;) {
		int accepted, stop = 0;
		int rc = verify(g, sc, logits, V, tok + 1, n, fn, arg, &accepted, &stop);
		if (rc || stop)
			return rc;
		if (n > 0) {
			spec_done(sc, n, accepted);
			llama_seq_truncate(c, seq, seq->n_past - (n - accepted));
		}
		if (t0 > 0)
			spec_time(sc, n, accepted, clock_mono_ms() - t0);
		tok[0] = g->last;
		/* drafts never take the sequence past its worst case: the
		 * prompt and max_gen tokens, the last of them never fed */
		n = spec_draft(sc, g->max_gen - g->n_gen - 1, tok + 1);
		llama_batch_seq b = {seq, tok, 1 + n, n ? LLAMA_LOGITS_ALL : LLAMA_LOGITS_LAST, logits};
		t0 = clock_mono_ms();
		if ((rc = llama_decode(c, &b, 1)))
			return rc;
	}
}
