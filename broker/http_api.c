/* OpenAI- and Ollama-compatible generation: request bodies (strict JSON,
 * every field checked, a 400 naming the field otherwise) into one
 * gen_request, and the scheduler's events into their replies (SSE chunks,
 * NDJSON lines, or one JSON object). Fields these APIs define that herd
 * does not implement are ignored, except those that would change the
 * answer's shape (n > 1), which are refused. */
#include "http_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/text.h"
#include "model/textstream.h"
#include "herd/error.h"

#define API_MAX_MESSAGES 1024
#define API_MAX_STOP 16
#define API_MAX_PARTS 64
#define API_MAX_TOKENS 65536 /* ids of a token prompt (the context is the real bound) */

/* A request body being turned into a gen_request; the strings point into
 * root (or into joined content parts). */
typedef struct api_in {
	json_object *root;
	gen_request g;
	gen_msg *msgs;
	gen_str stops[API_MAX_STOP];
	int32_t *tokens; /* a prompt of token ids (/v1/completions) */
	char **joined; /* content built from parts [n_joined] */
	size_t n_joined;
	char field[64]; /* the field at fault */
	char msg[320];
	int status;     /* 400, or 404 for an unknown model */
} api_in;

__attribute__((format(printf, 3, 4))) static int bad(api_in *in, const char *field, const char *fmt, ...)
{
	snprintf(in->field, sizeof(in->field), "%s", field);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(in->msg, sizeof(in->msg), fmt, ap);
	va_end(ap);
	in->status = 400;
	return -1;
}

static const char *type_name(json_object *v)
{
	return v ? json_type_to_name(json_object_get_type(v)) : "null";
}

/* o[key] when present and not null, else NULL. */
static json_object *field(json_object *o, const char *key)
{
	json_object *v = NULL;
	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int get_num(api_in *in, json_object *o, const char *key, double lo, double hi, float *out)
{
	json_object *v = field(o, key);
	if (!v)
		return 0;
	json_type t = json_object_get_type(v);
	if (t != json_type_double && t != json_type_int)
		return bad(in, key, "field '%s': expected a number, got %s", key, type_name(v));
	const double x = json_object_get_double(v);
	if (!isfinite(x) || x < lo || x > hi)
		return bad(in, key, "field '%s': %g is out of range [%g, %g]", key, x, lo, hi);
	*out = (float)x;
	return 0;
}

static int get_int(api_in *in, json_object *o, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
	json_object *v = field(o, key);
	if (!v)
		return 0;
	if (json_object_get_type(v) != json_type_int)
		return bad(in, key, "field '%s': expected an integer, got %s", key, type_name(v));
	errno = 0;
	const int64_t x = json_object_get_int64(v);
	if (errno || x < lo || x > hi)
		return bad(in, key, "field '%s': out of range [%lld, %lld]", key, (long long)lo, (long long)hi);
	*out = x;
	return 0;
}

static int get_bool(api_in *in, json_object *o, const char *key, int *out)
{
	json_object *v = field(o, key);
	if (!v)
		return 0;
	if (json_object_get_type(v) != json_type_boolean)
		return bad(in, key, "field '%s': expected true or false, got %s", key, type_name(v));
	*out = json_object_get_boolean(v);
	return 0;
}

static int get_str(api_in *in, json_object *o, const char *key, int required, gen_str *out)
{
	json_object *v = field(o, key);
	if (!v)
		return required ? bad(in, key, "field '%s' is required", key) : 0;
	if (json_object_get_type(v) != json_type_string)
		return bad(in, key, "field '%s': expected a string, got %s", key, type_name(v));
	out->ptr = json_object_get_string(v);
	out->len = (size_t)json_object_get_string_len(v);
	return 0;
}

/* "stop": a string or an array of strings. */
static int get_stop(api_in *in, json_object *o, const char *key)
{
	json_object *v = field(o, key);
	if (!v)
		return 0;
	gen_params *p = &in->g.params;
	if (json_object_get_type(v) == json_type_string) {
		in->stops[0] = (gen_str){json_object_get_string(v), (size_t)json_object_get_string_len(v)};
		p->stop = in->stops;
		p->n_stop = 1;
		return 0;
	}
	if (json_object_get_type(v) != json_type_array)
		return bad(in, key, "field '%s': expected a string or an array of strings, got %s", key,
			   type_name(v));
	const size_t n = json_object_array_length(v);
	if (n > API_MAX_STOP)
		return bad(in, key, "field '%s': %zu strings, at most %d", key, n, API_MAX_STOP);
	for (size_t i = 0; i < n; i++) {
		json_object *s = json_object_array_get_idx(v, i);
		if (json_object_get_type(s) != json_type_string)
			return bad(in, key, "field '%s[%zu]': expected a string, got %s", key, i, type_name(s));
		in->stops[i] = (gen_str){json_object_get_string(s), (size_t)json_object_get_string_len(s)};
	}
	p->stop = in->stops;
	p->n_stop = n;
	return 0;
}

/* A message's content: a string, null, or an array of {"type": "text",
 * "text": ...} parts (joined). */
static int get_content(api_in *in, json_object *m, size_t i, gen_str *out)
{
	char key[48];
	snprintf(key, sizeof(key), "messages[%zu].content", i);
	json_object *v = field(m, "content");
	if (!v) {
		*out = (gen_str){"", 0};
		return 0;
	}
	if (json_object_get_type(v) == json_type_string) {
		*out = (gen_str){json_object_get_string(v), (size_t)json_object_get_string_len(v)};
		return 0;
	}
	if (json_object_get_type(v) != json_type_array || json_object_array_length(v) > API_MAX_PARTS)
		return bad(in, key, "field '%s': expected a string or an array of at most %d text parts",
			   key, API_MAX_PARTS);
	size_t total = 0;
	for (size_t k = 0; k < json_object_array_length(v); k++) {
		json_object *part = json_object_array_get_idx(v, k), *t = field(part, "text");
		json_object *ty = field(part, "type");
		if (!t || json_object_get_type(t) != json_type_string || !ty ||
		    strcmp(json_object_get_string(ty), "text"))
			return bad(in, key, "field '%s[%zu]': only {\"type\": \"text\", \"text\": ...} parts "
				   "are supported", key, k);
		total += (size_t)json_object_get_string_len(t);
	}
	char *s = malloc(total + 1), **nj = realloc(in->joined, (in->n_joined + 1) * sizeof(char *));
	if (!s || !nj) {
		free(s);
		if (nj)
			in->joined = nj;
		return bad(in, key, "out of memory");
	}
	in->joined = nj;
	in->joined[in->n_joined++] = s;
	size_t off = 0;
	for (size_t k = 0; k < json_object_array_length(v); k++) {
		json_object *t = field(json_object_array_get_idx(v, k), "text");
		memcpy(s + off, json_object_get_string(t), (size_t)json_object_get_string_len(t));
		off += (size_t)json_object_get_string_len(t);
	}
	s[off] = 0;
	*out = (gen_str){s, off};
	return 0;
}

static int get_messages(api_in *in, json_object *o)
{
	json_object *v = field(o, "messages");
	if (!v)
		return bad(in, "messages", "field 'messages' is required");
	if (json_object_get_type(v) != json_type_array || json_object_array_length(v) < 1 ||
	    json_object_array_length(v) > API_MAX_MESSAGES)
		return bad(in, "messages", "field 'messages': expected an array of 1..%d messages",
			   API_MAX_MESSAGES);
	const size_t n = json_object_array_length(v);
	if (!(in->msgs = calloc(n, sizeof(*in->msgs))))
		return bad(in, "messages", "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_object *m = json_object_array_get_idx(v, i);
		char key[48];
		snprintf(key, sizeof(key), "messages[%zu].role", i);
		if (json_object_get_type(m) != json_type_object)
			return bad(in, "messages", "field 'messages[%zu]': expected an object", i);
		json_object *role = field(m, "role");
		if (!role || json_object_get_type(role) != json_type_string)
			return bad(in, key, "field '%s': expected a string", key);
		const char *rs = json_object_get_string(role);
		if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
		    strcmp(rs, "developer") && strcmp(rs, "tool"))
			return bad(in, key, "field '%s': '%.32s' is not system, user, assistant, developer or tool",
				   key, rs);
		/* the chat template knows system, user, assistant */
		const char *as = !strcmp(rs, "developer") ? "system" : !strcmp(rs, "tool") ? "user" : rs;
		in->msgs[i].role = (gen_str){as, strlen(as)};
		if (get_content(in, m, i, &in->msgs[i].content))
			return -1;
	}
	in->g.input = GEN_INPUT_MESSAGES;
	in->g.messages = in->msgs;
	in->g.n_messages = n;
	return 0;
}

/* model: required, and configured ("NAME:latest" is NAME for Ollama). */
static int get_model(api_in *in, http_req *r, json_object *o)
{
	gen_str m = {0};
	if (get_str(in, o, "model", 1, &m))
		return -1;
	size_t n = m.len;
	if (n > 7 && !memcmp(m.ptr + n - 7, ":latest", 7))
		n -= 7;
	if (!models_find(r->h->l->models, m.ptr, n)) {
		bad(in, "model", "model '%.*s' not found", HERD_QUOTE_LEN(m.len), m.ptr);
		in->status = 404;
		return -1;
	}
	snprintf(r->model, sizeof(r->model), "%.*s", (int)(n < HTTP_MODEL_MAX ? n : HTTP_MODEL_MAX - 1), m.ptr);
	in->g.model = (gen_str){r->model, strlen(r->model)};
	return 0;
}

static int get_seed(api_in *in, json_object *o, const char *key)
{
	int64_t seed = 0;
	if (get_int(in, o, key, INT64_MIN, INT64_MAX, &seed))
		return -1;
	if (field(o, key))
		in->g.params.sampling.seed = (uint64_t)seed;
	return 0;
}

/* A prompt of token ids (OpenAI allows [int, ...]): each in [0, INT32_MAX];
 * the scheduler checks them against the vocabulary and the context. */
static int get_token_prompt(api_in *in, json_object *p)
{
	const size_t n = json_object_array_length(p);
	if (n < 1 || n > API_MAX_TOKENS)
		return bad(in, "prompt", "field 'prompt': 1..%d token ids", API_MAX_TOKENS);
	if (!(in->tokens = malloc(n * sizeof(int32_t))))
		return bad(in, "prompt", "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_object *t = json_object_array_get_idx(p, i);
		errno = 0;
		const int64_t v = json_object_get_int64(t);
		if (json_object_get_type(t) != json_type_int || errno || v < 0 || v > INT32_MAX)
			return bad(in, "prompt", "field 'prompt[%zu]': expected a token id in [0, %d]", i, INT32_MAX);
		in->tokens[i] = (int32_t)v;
	}
	in->g.input = GEN_INPUT_TOKENS;
	in->g.tokens = in->tokens;
	in->g.n_tokens = n;
	return 0;
}

/* OpenAI: /v1/chat/completions and /v1/completions. */
static int parse_openai(api_in *in, http_req *r)
{
	json_object *o = in->root, *so;
	sampler_params *sp = &in->g.params.sampling;
	sp->temperature = 1.0f; /* the API's defaults */
	sp->top_p = 1.0f;
	int64_t n = 1, mt = -1;
	if (get_model(in, r, o) || get_int(in, o, "n", 1, 1, &n) || get_num(in, o, "temperature", 0, 2, &sp->temperature) ||
	    get_num(in, o, "top_p", 0, 1, &sp->top_p) || get_seed(in, o, "seed") || get_stop(in, o, "stop") ||
	    get_bool(in, o, "stream", &r->stream) || get_int(in, o, "max_tokens", 0, INT32_MAX, &mt) ||
	    get_int(in, o, "max_completion_tokens", 0, INT32_MAX, &mt))
		return -1;
	if (mt >= 0)
		in->g.params.max_tokens = (int32_t)mt;
	else
		in->g.params.max_tokens = r->h->l->cfg->max_tokens; /* until it stops, within the context */
	if ((so = field(o, "stream_options"))) {
		if (json_object_get_type(so) != json_type_object)
			return bad(in, "stream_options", "field 'stream_options': expected an object");
		if (get_bool(in, so, "include_usage", &r->include_usage))
			return -1;
	}
	if (r->kind == HK_OAI_CHAT)
		return get_messages(in, o);
	json_object *p = field(o, "prompt");
	if (p && json_object_get_type(p) == json_type_array && json_object_array_length(p) == 1 &&
	    json_object_get_type(json_object_array_get_idx(p, 0)) == json_type_string)
		p = json_object_array_get_idx(p, 0);
	if (p && json_object_get_type(p) == json_type_array)
		return get_token_prompt(in, p);
	if (!p || json_object_get_type(p) != json_type_string)
		return bad(in, "prompt", "field 'prompt': expected a string, an array of one string or an "
			   "array of token ids");
	in->g.input = GEN_INPUT_PROMPT;
	in->g.prompt = (gen_str){json_object_get_string(p), (size_t)json_object_get_string_len(p)};
	return 0;
}

/* Ollama's "options" object. */
static int parse_options(api_in *in, json_object *o)
{
	if (json_object_get_type(o) != json_type_object)
		return bad(in, "options", "field 'options': expected an object");
	sampler_params *sp = &in->g.params.sampling;
	int64_t k = sp->top_k, np = -2, last = sp->repeat_last_n;
	if (get_num(in, o, "temperature", 0, 100, &sp->temperature) || get_num(in, o, "top_p", 0, 1, &sp->top_p) ||
	    get_num(in, o, "min_p", 0, 1, &sp->min_p) || get_num(in, o, "repeat_penalty", 0.01, 100, &sp->repeat_penalty) ||
	    get_int(in, o, "top_k", 0, 1 << 20, &k) || get_int(in, o, "repeat_last_n", 0, 1 << 20, &last) ||
	    get_int(in, o, "num_predict", -2, INT32_MAX, &np) || get_seed(in, o, "seed") || get_stop(in, o, "stop"))
		return -1;
	sp->top_k = (int32_t)k;
	sp->repeat_last_n = (int32_t)last;
	if (np >= 0)
		in->g.params.max_tokens = (int32_t)np;
	return 0;
}

/* Ollama: /api/generate (the prompt as it is: raw mode) and /api/chat. */
static int parse_ollama(api_in *in, http_req *r)
{
	json_object *o = in->root, *opt;
	in->g.params.sampling = sampler_params_default(); /* llama.cpp's, as Ollama's */
	in->g.params.max_tokens = r->h->l->cfg->max_tokens;
	r->stream = 1; /* Ollama streams unless told not to */
	if (get_model(in, r, o) || get_bool(in, o, "stream", &r->stream))
		return -1;
	if ((opt = field(o, "options")) && parse_options(in, opt))
		return -1;
	if (r->kind == HK_OLL_CHAT)
		return get_messages(in, o);
	if (get_str(in, o, "prompt", 1, &in->g.prompt))
		return -1;
	in->g.input = GEN_INPUT_PROMPT;
	return 0;
}

static void in_free(api_in *in)
{
	for (size_t i = 0; i < in->n_joined; i++)
		free(in->joined[i]);
	free(in->joined);
	free(in->tokens);
	free(in->msgs);
	json_object_put(in->root);
}

/* The body as one JSON object (strict: no trailing text). */
static int parse_body(api_in *in, const http_req *r)
{
	if (!r->body_len)
		return bad(in, "", "the request needs a JSON object body");
	json_tokener *tk = json_tokener_new();
	if (!tk)
		return bad(in, "", "out of memory");
	json_tokener_set_flags(tk, JSON_TOKENER_STRICT);
	in->root = json_tokener_parse_ex(tk, r->body, (int)r->body_len);
	enum json_tokener_error je = json_tokener_get_error(tk);
	size_t end = json_tokener_get_parse_end(tk);
	json_tokener_free(tk);
	if (!in->root || je != json_tokener_success)
		return bad(in, "", "the body is not valid JSON (at byte %zu: %s)", end,
			   je == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(je));
	while (end < r->body_len && strchr(" \t\r\n", r->body[end]))
		end++;
	if (end < r->body_len)
		return bad(in, "", "the body has extra text after the JSON value (at byte %zu)", end);
	if (json_object_get_type(in->root) != json_type_object)
		return bad(in, "", "the body must be a JSON object, got %s", type_name(in->root));
	return 0;
}

int api_begin(http_req *r)
{
	api_in in = {.status = 400};
	gen_request_init(&in.g);
	in.g.id = 1;
	int rc = parse_body(&in, r);
	if (!rc)
		rc = r->kind == HK_OAI_CHAT || r->kind == HK_OAI_COMPLETE ? parse_openai(&in, r) : parse_ollama(&in, r);
	if (rc) {
		in_free(&in);
		return http_reply_error(r, in.status, in.field[0] ? in.field : NULL, "%s", in.msg);
	}
	in.g.stream = r->stream;
	char why[320];
	rc = http_submit(r, &in.g, why, sizeof(why));
	in_free(&in); /* the scheduler made its own copy */
	if (rc)
		return http_reply_error(r, http_status_for(rc), NULL, "%s", why);
	r->created = (long long)time(NULL);
	snprintf(r->id, sizeof(r->id), "%s-%llu", r->kind == HK_OAI_CHAT ? "chatcmpl" : "cmpl",
		 (unsigned long long)(r->conn_id & ~HTTP_CONN_BIT));
	if (r->stream)
		return http_stream_start(r, r->kind == HK_OAI_CHAT || r->kind == HK_OAI_COMPLETE
						    ? "text/event-stream" : "application/x-ndjson");
	MHD_suspend_connection(r->mc); /* until its done (http_deliver resumes it) */
	r->suspended = 1;
	return MHD_YES;
}

/* ---- replies ------------------------------------------------------------ */

static int is_openai(const http_req *r)
{
	return r->kind == HK_OAI_CHAT || r->kind == HK_OAI_COMPLETE;
}

static const char *finish_name(herd_finish f)
{
	return f == HERD_FINISH_LENGTH ? "length" : "stop";
}

/* Generated text as a JSON string: valid UTF-8 (JSON text must be), so a
 * byte token that does not decode becomes U+FFFD. */
static void add_str(json_object *o, const char *k, const char *s, size_t n)
{
	char small[768], *buf = 3 * n <= sizeof(small) ? small : malloc(3 * n + 1);
	if (!buf) {
		json_object_object_add(o, k, json_object_new_string(""));
		return;
	}
	const size_t len = text_utf8_sanitize(s, n, buf);
	json_object_object_add(o, k, json_object_new_string_len(buf, (int)len));
	if (buf != small)
		free(buf);
}

/* The frame every OpenAI object shares: id, object, created, model. */
static json_object *oai_head(const http_req *r, const char *object)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(r->id));
	json_object_object_add(o, "object", json_object_new_string(object));
	json_object_object_add(o, "created", json_object_new_int64(r->created));
	json_object_object_add(o, "model", json_object_new_string(r->model));
	return o;
}

/* One choice: a message / delta (chat) or text (completions). */
static json_object *oai_choice(const http_req *r, const char *text, size_t n, const char *finish,
			       int delta)
{
	json_object *c = json_object_new_object();
	json_object_object_add(c, "index", json_object_new_int(0));
	if (r->kind == HK_OAI_CHAT) {
		json_object *m = json_object_new_object();
		if (!delta || !r->sent_role)
			json_object_object_add(m, "role", json_object_new_string("assistant"));
		if (text)
			add_str(m, "content", text, n);
		json_object_object_add(c, delta ? "delta" : "message", m);
	} else {
		add_str(c, "text", text ? text : "", text ? n : 0);
	}
	json_object_object_add(c, "logprobs", NULL);
	json_object_object_add(c, "finish_reason", finish ? json_object_new_string(finish) : NULL);
	return c;
}

static json_object *oai_usage(const sched_event *e)
{
	json_object *u = json_object_new_object();
	json_object_object_add(u, "prompt_tokens", json_object_new_int(e->n_prompt));
	json_object_object_add(u, "completion_tokens", json_object_new_int(e->n_gen));
	json_object_object_add(u, "total_tokens", json_object_new_int(e->n_prompt + e->n_gen));
	return u;
}

static json_object *oai_chunk(http_req *r, const char *text, size_t n, const char *finish)
{
	json_object *o = oai_head(r, r->kind == HK_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
	json_object *arr = json_object_new_array();
	json_object_array_add(arr, oai_choice(r, text, n, finish, 1));
	json_object_object_add(o, "choices", arr);
	r->sent_role = 1;
	return o;
}

/* Ollama's object head: model, created_at (RFC 3339, UTC). */
static json_object *oll_head(const http_req *r)
{
	char ts[48];
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct tm tm;
	gmtime_r(&now.tv_sec, &tm);
	size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%06ldZ", now.tv_nsec / 1000);
	json_object *o = json_object_new_object();
	json_object_object_add(o, "model", json_object_new_string(r->model));
	json_object_object_add(o, "created_at", json_object_new_string(ts));
	return o;
}

static void oll_text(const http_req *r, json_object *o, const char *text, size_t n)
{
	if (r->kind == HK_OLL_CHAT) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "role", json_object_new_string("assistant"));
		add_str(m, "content", text, n);
		json_object_object_add(o, "message", m);
	} else {
		add_str(o, "response", text, n);
	}
}

void api_tok(http_req *r, const sched_event *e)
{
	if (!r->stream || !e->text_len)
		return;
	if (is_openai(r)) {
		http_out_json(r, "data: ", oai_chunk(r, e->text, e->text_len, NULL), "\n\n");
		return;
	}
	json_object *o = oll_head(r);
	oll_text(r, o, e->text, e->text_len);
	json_object_object_add(o, "done", json_object_new_boolean(0));
	http_out_json(r, "", o, "\n");
}

static void oll_done(http_req *r, const sched_event *e)
{
	json_object *o = oll_head(r);
	oll_text(r, o, r->stream ? "" : (e->text ? e->text : ""), r->stream ? 0 : e->text_len);
	json_object_object_add(o, "done", json_object_new_boolean(1));
	json_object_object_add(o, "done_reason", json_object_new_string(finish_name(e->reason)));
	const double first = e->t_first_ms > 0 ? e->t_first_ms : e->t_total_ms;
	json_object_object_add(o, "total_duration", json_object_new_int64((int64_t)(e->t_total_ms * 1e6)));
	json_object_object_add(o, "load_duration", json_object_new_int64((int64_t)(e->t_queue_ms * 1e6)));
	json_object_object_add(o, "prompt_eval_count", json_object_new_int(e->n_prompt));
	json_object_object_add(o, "prompt_eval_duration",
			       json_object_new_int64((int64_t)((first - e->t_queue_ms) * 1e6)));
	json_object_object_add(o, "eval_count", json_object_new_int(e->n_gen));
	json_object_object_add(o, "eval_duration",
			       json_object_new_int64((int64_t)((e->t_total_ms - first) * 1e6)));
	http_out_json(r, "", o, r->stream ? "\n" : "");
}

void api_done(http_req *r, const sched_event *e)
{
	r->status = 200;
	r->ctype = "application/json";
	if (!is_openai(r)) {
		oll_done(r, e);
		return;
	}
	const char *fin = finish_name(e->reason);
	if (r->stream) {
		http_out_json(r, "data: ", oai_chunk(r, NULL, 0, fin), "\n\n");
		if (r->include_usage) {
			json_object *u = oai_head(r, r->kind == HK_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
			json_object_object_add(u, "choices", json_object_new_array());
			json_object_object_add(u, "usage", oai_usage(e));
			http_out_json(r, "data: ", u, "\n\n");
		}
		http_out(r, "data: [DONE]\n\n", 14);
		return;
	}
	json_object *o = oai_head(r, r->kind == HK_OAI_CHAT ? "chat.completion" : "text_completion");
	json_object *arr = json_object_new_array();
	json_object_array_add(arr, oai_choice(r, e->text ? e->text : "", e->text_len, fin, 0));
	json_object_object_add(o, "choices", arr);
	json_object_object_add(o, "usage", oai_usage(e));
	http_out_json(r, "", o, "");
}

void api_err(http_req *r, const sched_event *e)
{
	const int status = http_status_for(e->code);
	json_object *o = http_error_object(r, status, NULL, e->msg);
	if (!r->stream) {
		r->status = status;
		r->ctype = "application/json";
		http_out_json(r, "", o, "");
	} else {
		http_out_json(r, is_openai(r) ? "data: " : "", o, is_openai(r) ? "\n\n" : "\n");
	}
}
