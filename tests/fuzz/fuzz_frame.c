/* libFuzzer target: the wire codec (proto/proto.h) on an arbitrary byte
 * stream, as a receiver sees it.
 *
 * The input is cut into frames with proto_frame_next (max_frame 64 KiB, so
 * the too-large refusal is reached too); every complete body goes through
 * proto_decode / proto_msg_free. Bytes after the last complete frame are
 * also decoded as one body (after skipping their 4-byte header when there is
 * one), so mutations that change a body's length still reach the decoder.
 *
 * Every body that decodes is re-encoded with proto_encode, which must
 * succeed (a decoded message is always encodable); the new frame must be
 * one complete frame, decode again, compare equal on the typed fields, and
 * re-encode to the very same bytes (the codec is a fixed point after one
 * round). Deterministic, no global state. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_FRAME (64u << 10)

static void check(int ok)
{
	if (!ok)
		abort();
}

static int str_same(proto_str a, proto_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Doubles compared bit for bit: NaN payloads must survive too. */
static int dbl_same(double a, double b)
{
	return memcmp(&a, &b, sizeof(a)) == 0;
}

/* Floats compared bit for bit: NaN payloads must survive too. */
static int flt_same(float a, float b)
{
	return memcmp(&a, &b, sizeof(a)) == 0;
}

static void same_input(const gen_request *a, const gen_request *b)
{
	check(a->input == b->input);
	switch (a->input) {
	case GEN_INPUT_PROMPT:
		check(str_same(a->prompt, b->prompt));
		break;
	case GEN_INPUT_TOKENS:
		check(a->n_tokens == b->n_tokens);
		check(a->n_tokens == 0 ||
		      memcmp(a->tokens, b->tokens, a->n_tokens * sizeof(*a->tokens)) == 0);
		for (size_t i = 0; i < a->n_tokens; i++)
			check(a->tokens[i] >= 0);
		break;
	case GEN_INPUT_MESSAGES:
		check(a->n_messages >= 1 && a->n_messages == b->n_messages);
		for (size_t i = 0; i < a->n_messages; i++)
			check(str_same(a->messages[i].role, b->messages[i].role) &&
			      str_same(a->messages[i].content, b->messages[i].content));
		break;
	default:
		check(0);
	}
}

static void same_gen(const gen_request *a, const gen_request *b)
{
	const gen_params *p = &a->params, *q = &b->params;
	const sampler_params *x = &p->sampling, *y = &q->sampling;
	check(a->id == b->id && str_same(a->model, b->model));
	same_input(a, b);
	check(p->max_tokens >= 0 && p->max_tokens == q->max_tokens);
	check(flt_same(x->temperature, y->temperature) && x->top_k == y->top_k &&
	      flt_same(x->top_p, y->top_p) && flt_same(x->min_p, y->min_p) &&
	      flt_same(x->repeat_penalty, y->repeat_penalty));
	check(x->seed == y->seed && p->n_stop == q->n_stop && p->n_stop <= PROTO_MAX_STOP);
	for (size_t i = 0; i < p->n_stop; i++)
		check(str_same(p->stop[i], q->stop[i]));
	check(a->has_prio == b->has_prio && (!a->has_prio || a->prio == b->prio));
	check(p->deadline_ms == q->deadline_ms && a->stream == b->stream && a->cache == b->cache);
}

static void same_msg(const proto_msg *a, const proto_msg *b)
{
	check(a->type == b->type);
	switch (a->type) {
	case PROTO_HELLO:
		check(a->hello.v == b->hello.v && str_same(a->hello.name, b->hello.name) &&
		      a->hello.prio == b->hello.prio);
		break;
	case PROTO_WELCOME: {
		const proto_welcome *x = &a->welcome, *y = &b->welcome;
		check(x->v == y->v && x->agent == y->agent && x->n_models == y->n_models &&
		      x->max_frame == y->max_frame && x->max_tokens == y->max_tokens);
		check(x->n_models <= PROTO_MAX_MODELS);
		for (size_t i = 0; i < x->n_models; i++) {
			const proto_model_info *p = &x->models[i], *q = &y->models[i];
			check(str_same(p->name, q->name) && str_same(p->digest, q->digest) &&
			      str_same(p->segment, q->segment) && p->n_vocab == q->n_vocab &&
			      p->n_ctx == q->n_ctx && p->image_bytes == q->image_bytes);
		}
		break;
	}
	case PROTO_GEN:
		same_gen(&a->gen, &b->gen);
		break;
	case PROTO_TOK:
		check(a->tok.id == b->tok.id && str_same(a->tok.text, b->tok.text) &&
		      a->tok.tok == b->tok.tok && a->tok.tok >= 0);
		break;
	case PROTO_DONE: {
		const proto_done *x = &a->done, *y = &b->done;
		check(x->id == y->id && x->reason == y->reason && x->has_text == y->has_text &&
		      (!x->has_text || str_same(x->text, y->text)) && x->n_prompt == y->n_prompt &&
		      x->n_gen == y->n_gen && x->n_cached == y->n_cached &&
		      dbl_same(x->t_queue_ms, y->t_queue_ms) && dbl_same(x->t_first_ms, y->t_first_ms) &&
		      dbl_same(x->t_total_ms, y->t_total_ms) && x->merged == y->merged &&
		      x->cached == y->cached);
		check(x->reason >= HERD_FINISH_STOP && x->reason <= HERD_FINISH_DEADLINE);
		break;
	}
	case PROTO_ERR:
		check(a->err.has_id == b->err.has_id && (!a->err.has_id || a->err.id == b->err.id) &&
		      a->err.code == b->err.code && str_same(a->err.msg, b->err.msg));
		break;
	case PROTO_CANCEL:
		check(a->cancel.id == b->cancel.id);
		break;
	case PROTO_ATTACH:
		check(str_same(a->attach.model, b->attach.model));
		break;
	case PROTO_IMAGE:
		check(str_same(a->image.model, b->image.model) &&
		      str_same(a->image.segment, b->image.segment) && a->image.size == b->image.size &&
		      str_same(a->image.digest, b->image.digest));
		break;
	case PROTO_ADMIN:
		check(str_same(a->admin.cmd, b->admin.cmd) && a->admin.n_args == b->admin.n_args &&
		      a->admin.n_args <= PROTO_MAX_ARGS);
		for (size_t i = 0; i < a->admin.n_args; i++)
			check(str_same(a->admin.args[i], b->admin.args[i]));
		break;
	case PROTO_SHARE:
		check(str_same(a->share.name, b->share.name) &&
		      a->share.n_targets == b->share.n_targets &&
		      a->share.n_targets <= PROTO_MAX_TARGETS);
		for (size_t i = 0; i < a->share.n_targets; i++)
			check(str_same(a->share.targets[i], b->share.targets[i]));
		break;
	case PROTO_SHARED:
		check(str_same(a->shared.model, b->shared.model) &&
		      a->shared.size == b->shared.size);
		break;
	case PROTO_ADMIN_OK:
		/* the result tree is compared through the re-encoded bytes */
		check(str_same(a->admin_ok.cmd, b->admin_ok.cmd));
		check(a->admin_ok.result && b->admin_ok.result &&
		      a->admin_ok.result->type == b->admin_ok.result->type);
		break;
	default:
		check(0);
	}
}

/* Decodes one body; when it is valid, checks the encode/decode round trip. */
static void one_body(const uint8_t *body, size_t len)
{
	proto_msg m, m2;
	char err[256];
	err[0] = 0;
	const int rc = proto_decode(body, len, &m, err, sizeof(err));
	if (rc) {
		check(rc == HERD_E_PROTO || rc == -ENOMEM);
		check(rc != HERD_E_PROTO || err[0] != 0); /* a failure is always explained */
		proto_msg_free(&m);
		return;
	}
	check(m.type > PROTO_NONE && m.type < PROTO_TYPE_COUNT);
	proto_buf b1, b2;
	proto_buf_init(&b1);
	proto_buf_init(&b2);
	size_t n1 = 0;
	check(proto_encode(&b1, &m) == 0);
	check(proto_frame_next(b1.data, b1.len, SIZE_MAX, &n1) == PROTO_FRAME_READY);
	check(n1 + PROTO_HDR_SIZE == b1.len);
	if (proto_decode(b1.data + PROTO_HDR_SIZE, n1, &m2, err, sizeof(err)) != 0)
		abort(); /* err names what the encoder wrote that the decoder refuses */
	same_msg(&m, &m2);
	check(proto_encode(&b2, &m2) == 0);
	check(b2.len == b1.len && memcmp(b1.data, b2.data, b1.len) == 0);
	proto_msg_free(&m2);
	proto_msg_free(&m);
	proto_buf_fini(&b2);
	proto_buf_fini(&b1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;
	for (;;) {
		size_t n = 12345;
		const int rc = proto_frame_next(data + pos, size - pos, FUZZ_MAX_FRAME, &n);
		if (size - pos < PROTO_HDR_SIZE)
			check(rc == PROTO_FRAME_NEED_MORE && n == 0);
		if (rc == HERD_E_PROTO) {
			check(n > FUZZ_MAX_FRAME);
			return 0; /* a receiver closes the connection here */
		}
		if (rc != PROTO_FRAME_READY) {
			check(rc == PROTO_FRAME_NEED_MORE);
			break;
		}
		check(n <= FUZZ_MAX_FRAME && n <= size - pos - PROTO_HDR_SIZE);
		/* a private copy of exactly the body, so ASan sees any over-read */
		uint8_t *body = malloc(n ? n : 1);
		check(body != NULL);
		memcpy(body, data + pos + PROTO_HDR_SIZE, n);
		one_body(body, n);
		free(body);
		pos += PROTO_HDR_SIZE + n;
	}
	if (pos < size) {
		const size_t skip = size - pos >= PROTO_HDR_SIZE ? PROTO_HDR_SIZE : 0;
		const size_t n = size - pos - skip;
		uint8_t *body = malloc(n ? n : 1);
		check(body != NULL);
		memcpy(body, data + pos + skip, n);
		one_body(body, n);
		free(body);
	}
	return 0;
}
