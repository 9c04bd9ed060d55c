/* One generation request and one generation step (see generate.h). */
#include "model/generate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/chat.h"
#include "model/llama.h"
#include "model/textstream.h"
#include "model/tokenizer.h"

/* First allocation of a sequence's text; it doubles from there. */
#define GEN_TEXT_CAP0 256
/* Room beyond tok_max_piece_len() in the detokenizer scratch. */
#define GEN_PIECE_SLACK 8

/* ---- requests ------------------------------------------------------------ */

void gen_request_init(gen_request *r)
{
	memset(r, 0, sizeof(*r));
	r->params.max_tokens = GEN_DEFAULT_MAX_TOKENS;
	r->params.sampling = sampler_params_default();
	r->params.sampling.temperature = 0;
	r->params.sampling.top_k = 0;
	r->params.sampling.top_p = 1;
	r->params.sampling.min_p = 0;
	r->params.sampling.repeat_penalty = 1;
	r->params.sampling.seed = 0;
	r->cache = 1;
}

/* n rounded up for the most aligned type: every piece of a request copy
 * starts at such an offset. */
static size_t align_up(size_t n)
{
	const size_t al = _Alignof(max_align_t);
	return (n + al - 1) / al * al;
}

/* Bytes a deep copy of r needs after the struct itself. */
static int dup_size(const gen_request *r, size_t *out)
{
	size_t n = align_up(r->model.len + 1) + align_up(r->prompt.len + 1);
	if ((!r->model.ptr && r->model.len) || (!r->prompt.ptr && r->prompt.len) ||
	    (!r->tokens && r->n_tokens) || (!r->messages && r->n_messages) ||
	    (!r->params.stop && r->params.n_stop))
		return HERD_E_INVAL;
	n += align_up(sizeof(int32_t) * r->n_tokens);
	n += align_up(sizeof(gen_msg) * r->n_messages) + align_up(sizeof(gen_str) * r->params.n_stop);
	for (size_t i = 0; i < r->n_messages; i++) {
		const gen_msg *m = &r->messages[i];
		if ((!m->role.ptr && m->role.len) || (!m->content.ptr && m->content.len))
			return HERD_E_INVAL;
		n += align_up(m->role.len + 1) + align_up(m->content.len + 1);
	}
	for (size_t i = 0; i < r->params.n_stop; i++) {
		if (!r->params.stop[i].ptr && r->params.stop[i].len)
			return HERD_E_INVAL;
		n += align_up(r->params.stop[i].len + 1);
	}
	*out = n;
	return 0;
}

/* A bump allocator over the copy's block. */
typedef struct bump {
	char *p;
} bump;

static void *bump_take(bump *b, size_t n)
{
	void *r = b->p;
	b->p += align_up(n);
	return r;
}

static gen_str bump_str(bump *b, gen_str s)
{
	char *d = bump_take(b, s.len + 1);
	if (s.len)
		memcpy(d, s.ptr, s.len);
	d[s.len] = 0;
	return (gen_str){d, s.len};
}

int gen_request_dup(gen_request **out, const gen_request *r)
{
	size_t extra = 0;
	if (!out || !r)
		return HERD_E_INVAL;
	*out = NULL;
	int rc = dup_size(r, &extra);
	if (rc)
		return rc;
	const size_t head = align_up(sizeof(gen_request));
	gen_request *c = malloc(head + extra);
	if (!c)
		return -ENOMEM;
	*c = *r;
	bump b = {(char *)c + head};
	c->model = bump_str(&b, r->model);
	c->prompt = bump_str(&b, r->prompt);
	int32_t *toks = bump_take(&b, sizeof(int32_t) * r->n_tokens);
	if (r->n_tokens)
		memcpy(toks, r->tokens, sizeof(int32_t) * r->n_tokens);
	c->tokens = r->tokens ? toks : NULL;
	gen_msg *msgs = bump_take(&b, sizeof(gen_msg) * r->n_messages);
	for (size_t i = 0; i < r->n_messages; i++)
		msgs[i] = (gen_msg){bump_str(&b, r->messages[i].role),
				    bump_str(&b, r->messages[i].content)};
	c->messages = r->messages ? msgs : NULL;
	gen_str *stop = bump_take(&b, sizeof(gen_str) * r->params.n_stop);
	for (size_t i = 0; i < r->params.n_stop; i++)
		stop[i] = bump_str(&b, r->params.stop[i]);
	c->params.stop = r->params.stop ? stop : NULL;
	*out = c;
	return 0;
}

void gen_request_free(gen_request *r)
{
	free(r);
}

/* ---- beginning a sequence --------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int gen_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Token prompt: copied after the length and range checks. */
static int take_tokens(gen_seq *s, const gen_request *r, int n_ctx, int n_vocab, char *err,
		       size_t errlen)
{
	if (r->n_tokens > (size_t)n_ctx)
		return gen_fail(err, errlen, HERD_E_NOSPACE,
				"prompt of %zu tokens is longer than the context (%d)", r->n_tokens,
				n_ctx);
	for (size_t i = 0; i < r->n_tokens; i++)
		if (r->tokens[i] < 0 || r->tokens[i] >= n_vocab)
			return gen_fail(err, errlen, HERD_E_RANGE,
					"token %d at index %zu is outside the vocabulary (%d)",
					(int)r->tokens[i], i, n_vocab);
	s->n_prompt = (int)r->n_tokens;
	if (r->n_tokens)
		memcpy(s->prompt, r->tokens, sizeof(int32_t) * r->n_tokens);
	return 0;
}

/* Bytes of text a prompt or the messages' contents give the tokenizer. */
static size_t text_bytes(const gen_request *r)
{
	if (r->input == GEN_INPUT_PROMPT)
		return r->prompt.len;
	size_t n = 0;
	for (size_t i = 0; i < r->n_messages; i++)
		n += r->messages[i].content.len;
	return n;
}

/* Text or chat prompt, tokenized into s->prompt[n_ctx]: a longer prompt
 * is refused with its full length in the message. Cheap rejection first:
 * a token covers at most tok_max_piece_len() bytes of the text, so a text
 * of more than n_ctx times that many bytes cannot fit and is refused
 * without tokenizing it (tokenizing costs memory and time linear in the
 * text; after this check both are bounded by the context). */
static int take_text(gen_seq *s, const gen_request *r, int n_ctx, char *err, size_t errlen)
{
	int n;
	const char *what = r->input == GEN_INPUT_PROMPT ? "prompt" : "messages";
	const size_t bytes = text_bytes(r);
	const int maxp = tok_max_piece_len(s->vocab) > 0 ? tok_max_piece_len(s->vocab) : 1;
	if (bytes / (size_t)maxp > (size_t)n_ctx)
		return gen_fail(err, errlen, HERD_E_NOSPACE,
				"%s of %zu bytes is longer than the context (%d): a token holds at most %d bytes",
				what, bytes, n_ctx, maxp);
	if (r->input == GEN_INPUT_PROMPT) {
		n = tok_encode(s->vocab, r->prompt.ptr ? r->prompt.ptr : "", r->prompt.len,
			       tok_add_bos(s->vocab) ? TOK_ADD_BOS : 0, s->prompt, n_ctx);
	} else {
		if (r->n_messages > INT32_MAX)
			return gen_fail(err, errlen, HERD_E_INVAL, "too many messages");
		chat_msg *cm = calloc(r->n_messages ? r->n_messages : 1, sizeof(*cm));
		if (!cm)
			return gen_fail(err, errlen, -ENOMEM, "out of memory");
		for (size_t i = 0; i < r->n_messages; i++)
			cm[i] = (chat_msg){r->messages[i].role.ptr, r->messages[i].content.ptr};
		n = chat_tokenize(s->vocab, cm, (int)r->n_messages, 1, s->prompt, n_ctx);
		free(cm);
	}
	if (n < 0)
		return gen_fail(err, errlen, n, "cannot tokenize the %s: %s", what, herd_strerror(n));
	if (n > n_ctx)
		return gen_fail(err, errlen, HERD_E_NOSPACE,
				"prompt of %d tokens is longer than the context (%d)", n, n_ctx);
	s->n_prompt = n;
	return 0;
}

static int take_prompt(gen_seq *s, const llama_model *m, int n_ctx, const gen_request *r,
		       char *err, size_t errlen)
{
	s->prompt = malloc(sizeof(int32_t) * (size_t)n_ctx);
	if (!s->prompt)
		return gen_fail(err, errlen, -ENOMEM, "out of memory");
	int rc;
	switch (r->input) {
	case GEN_INPUT_TOKENS: rc = take_tokens(s, r, n_ctx, m->hp.n_vocab, err, errlen); break;
	case GEN_INPUT_PROMPT:
	case GEN_INPUT_MESSAGES: rc = take_text(s, r, n_ctx, err, errlen); break;
	default: rc = gen_fail(err, errlen, HERD_E_INVAL, "no prompt, tokens or messages"); break;
	}
	if (!rc && s->n_prompt == 0)
		rc = gen_fail(err, errlen, HERD_E_INVAL, "empty prompt: nothing to continue from");
	return rc;
}

/* max_tokens clamped to the caller's cap and to the room the context
 * leaves (see the prompt-fit rule in generate.h). */
static int max_gen_of(const gen_request *r, const gen_bounds *b, int n_prompt)
{
	int max_gen = r->params.max_tokens;
	if (b->max_tokens > 0 && max_gen > b->max_tokens)
		max_gen = b->max_tokens;
	if (max_gen > b->n_ctx - n_prompt + 1)
		max_gen = b->n_ctx - n_prompt + 1;
	return max_gen < 0 ? 0 : max_gen;
}

static int take_stops(gen_seq *s, const gen_params *p)
{
	if (!p->n_stop)
		return 0;
	s->stop = calloc(p->n_stop, sizeof(*s->stop));
	if (!s->stop)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_stop; i++)
		if (p->stop[i].len)
			s->stop[s->n_stop++] = p->stop[i].ptr;
	return 0;
}

int gen_seq_begin(gen_seq *s, const llama_model *m, const gen_bounds *b, const gen_request *req,
		  char *err, size_t errlen)
{
	int rc;
	if (err && errlen)
		err[0] = 0;
	if (!s)
		return HERD_E_INVAL;
	memset(s, 0, sizeof(*s));
	s->last = -1;
	if (!m || !b || !req || b->n_ctx < 1)
		return gen_fail(err, errlen, HERD_E_INVAL, "NULL model, bounds or request");
	s->vocab = m->vocab;
	if ((rc = take_prompt(s, m, b->n_ctx, req, err, errlen)))
		goto fail;
	s->max_gen = max_gen_of(req, b, s->n_prompt);
	s->piece_cap = (size_t)tok_max_piece_len(s->vocab) + GEN_PIECE_SLACK;
	s->piece = malloc(s->piece_cap);
	if (!s->piece || take_stops(s, &req->params)) {
		rc = gen_fail(err, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = sampler_create(&s->smp, &req->params.sampling, m->hp.n_vocab);
	if (rc) {
		gen_fail(err, errlen, rc, "bad sampling parameters: %s", herd_strerror(rc));
		goto fail;
	}
	for (int i = 0; i < s->n_prompt; i++)
		sampler_accept(s->smp, s->prompt[i]);
	s->t_deadline = req->params.deadline_ms ? b->t_start + (double)req->params.deadline_ms : 0;
	return 0;
fail:
	gen_seq_end(s);
	return rc;
}

/* ---- steps ------------------------------------------------------------------ */

static int text_append(gen_seq *s, const char *p, size_t n)
{
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : GEN_TEXT_CAP0;
		while (cap < s->len + n + 1)
			cap *= 2;
		char *t = realloc(s->text, cap);
		if (!t)
			return -ENOMEM;
		s->text = t;
		s->cap = cap;
	}
	memcpy(s->text + s->len, p, n);
	s->len += n;
	s->text[s->len] = 0;
	return 0;
}

/* Hands out text[emitted .. upto) as out's piece. */
static void hand_out(gen_seq *s, size_t upto, gen_step *out)
{
	out->piece = s->text ? s->text + s->emitted : "";
	out->len = upto > s->emitted ? upto - s->emitted : 0;
	if (upto > s->emitted)
		s->emitted = upto;
}

/* Ends s with why and hands out everything not yet handed out. */
static void finish(gen_seq *s, herd_finish why, gen_step *out)
{
	s->finish = why;
	out->finish = why;
	hand_out(s, s->len, out);
}

/* Appends tok's text; cuts at a stop string. Returns 1 when one was found. */
static int append_token(gen_seq *s, int32_t tok, int *rc)
{
	const int n = tok_piece(s->vocab, tok, s->piece, s->piece_cap);
	const size_t old = s->len;
	*rc = 0;
	if (n > 0 && (size_t)n <= s->piece_cap && (*rc = text_append(s, s->piece, (size_t)n)))
		return 0;
	if (!s->text && (*rc = text_append(s, "", 0)))
		return 0;
	const long at = s->n_stop ? text_find_stop(s->text, s->len, old, s->stop, s->n_stop) : -1;
	if (at < 0)
		return 0;
	s->len = (size_t)at;
	s->text[at] = 0;
	return 1;
}

int gen_seq_next(gen_seq *s, const float *logits, double now, gen_step *out)
{
	*out = (gen_step){.finish = s->finish, .token = -1, .piece = "", .len = 0};
	if (s->finish != HERD_FINISH_NONE)
		return 0;
	if (s->n_gen >= s->max_gen) {
		finish(s, HERD_FINISH_LENGTH, out);
		return 0;
	}
	if (gen_seq_expired(s, now)) {
		finish(s, HERD_FINISH_DEADLINE, out);
		return 0;
	}
	const int32_t tok = sampler_sample(s->smp, logits);
	sampler_accept(s->smp, tok);
	s->last = tok;
	out->token = tok;
	if (tok_is_eog(s->vocab, tok)) {
		finish(s, HERD_FINISH_STOP, out);
		return 0;
	}
	s->n_gen++;
	out->is_text = 1;
	int rc;
	if (append_token(s, tok, &rc)) {
		finish(s, HERD_FINISH_STOP, out);
		return 0;
	}
	if (rc)
		return rc;
	if (s->n_gen >= s->max_gen) {
		finish(s, HERD_FINISH_LENGTH, out);
		return 0;
	}
	hand_out(s, s->len - text_holdback(s->text, s->len, s->stop, s->n_stop), out);
	return 0;
}

void gen_seq_stop(gen_seq *s, herd_finish why, gen_step *out)
{
	*out = (gen_step){.finish = s->finish, .token = s->last, .piece = "", .len = 0};
	if (s->finish != HERD_FINISH_NONE)
		return;
	finish(s, why, out);
}

int gen_seq_expired(const gen_seq *s, double now)
{
	return s->t_deadline > 0 && now >= s->t_deadline;
}

char *gen_seq_take_text(gen_seq *s, size_t *len)
{
	char *t = s->text ? s->text : strdup("");
	*len = t ? s->len : 0;
	s->text = NULL;
	s->len = s->cap = s->emitted = 0;
	return t;
}

void gen_seq_end(gen_seq *s)
{
	if (!s)
		return;
	sampler_destroy(s->smp);
	free(s->prompt);
	free(s->stop);
	free(s->text);
	free(s->piece);
	memset(s, 0, sizeof(*s));
	s->last = -1;
}
