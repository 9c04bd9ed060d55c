/* Agent frames: hello, gen, cancel, attach (admin goes to admin.c). Runs on
 * the loop thread; see loop.h for how errors close a connection. */
#include "loop_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/text.h"
#include "herd/error.h"

static void ensure_agent(loop *l, conn *c)
{
	if (!c->agent)
		c->agent = l->next_agent++;
}

static void on_hello(loop *l, conn *c, const proto_hello *h)
{
	if (h->v != PROTO_VERSION) {
		conn_queue_err(c, 0, 0, HERD_E_VERSION,
			      "protocol version %u is not supported (this broker speaks %d)", (unsigned)h->v,
			      PROTO_VERSION);
		conn_close_after_send(c);
		return;
	}
	ensure_agent(l, c);
	c->hello = 1;
	size_t n = h->name.len < sizeof(c->name) - 1 ? h->name.len : sizeof(c->name) - 1;
	memcpy(c->name, h->name.ptr ? h->name.ptr : "", n);
	c->name[n] = 0;
	c->prio = h->prio;
	const int nm = models_count(l->models);
	proto_model_info *mi = calloc((size_t)(nm > 0 ? nm : 1), sizeof(*mi));
	if (!mi) {
		conn_close_soon(c);
		return;
	}
	for (int i = 0; i < nm; i++) {
		const models_entry *e = models_at(l->models, i);
		mi[i] = (proto_model_info){.name = proto_s(e->name),
					   .digest = proto_s(e->info.digest_hex),
					   .segment = proto_s(e->info.name),
					   .n_vocab = (uint32_t)e->model->hp.n_vocab,
					   .n_ctx = (uint32_t)llama_ctx_n_ctx(e->ctx),
					   .image_bytes = e->info.image_size};
	}
	proto_welcome w = {.v = PROTO_VERSION, .agent = c->agent, .models = mi, .n_models = (size_t)nm,
			   .max_frame = l->cfg->max_frame, .max_tokens = (uint32_t)l->cfg->max_tokens};
	proto_buf *b = conn_outbuf(c);
	int rc = b ? proto_encode_welcome(b, &w) : -ENOMEM;
	free(mi);
	if (rc) {
		blog_msg(l->log, BLOG_ERR, "cannot encode welcome: %s", herd_strerror(rc));
		conn_close_soon(c);
		return;
	}
	blog_msg(l->log, BLOG_DEBUG, "agent %llu '%s' (pid %d) hello, prio %d",
		 (unsigned long long)c->agent, c->name, (int)c->pid, c->prio);
}

/* The decoded request goes to the model's scheduler as it is (it makes
 * its own copy): no field is copied here. */
static void on_gen(loop *l, conn *c, const gen_request *g)
{
	ensure_agent(l, c);
	if (l->stopping) {
		conn_queue_err(c, 1, g->id, HERD_E_CANCELLED, "the broker is shutting down");
		return;
	}
	models_entry *e = models_find(l->models, g->model.ptr ? g->model.ptr : "", g->model.len);
	if (!e) {
		conn_queue_err(c, 1, g->id, HERD_E_MISSING, "unknown model '%.*s'",
			       HERD_QUOTE_LEN(g->model.len), g->model.ptr ? g->model.ptr : "");
		return;
	}
	char why[320];
	int rc = models_usable(e, 0, why, sizeof(why)); /* image trust: models.h */
	if (rc) {
		conn_queue_err(c, 1, g->id, rc, "%s", why);
		return;
	}
	const sched_origin from = {.conn = c->id, .agent = c->agent,
				   .prio = g->has_prio ? g->prio : c->prio};
	rc = sched_submit(e->sched, &from, g);
	if (rc) {
		conn_queue_err(c, 1, g->id, rc, "cannot queue the request: %s", herd_strerror(rc));
		return;
	}
	c->n_requests++;
	c->in_flight++;
	l->total_requests++;
}

static void on_attach(loop *l, conn *c, const proto_attach *a)
{
	models_entry *e = models_find(l->models, a->model.ptr ? a->model.ptr : "", a->model.len);
	if (!e) {
		conn_queue_err(c, 0, 0, HERD_E_MISSING, "attach: unknown model '%.*s'",
			       HERD_QUOTE_LEN(a->model.len), a->model.ptr ? a->model.ptr : "");
		return;
	}
	char why[320];
	int rc = models_usable(e, 1, why, sizeof(why)); /* image trust: models.h */
	if (rc) {
		conn_queue_err(c, 0, 0, rc, "attach: %s", why);
		return;
	}
	proto_image im = {.model = proto_s(e->name), .segment = proto_s(e->info.name),
			  .size = e->info.image_size, .digest = proto_s(e->info.digest_hex)};
	proto_buf b;
	proto_buf_init(&b);
	rc = proto_encode_image(&b, &im);
	if (!rc)
		rc = conn_queue_fd(c, b.data, b.len, e->image_fd);
	proto_buf_fini(&b);
	if (rc)
		conn_queue_err(c, 0, 0, rc, "attach: %s", herd_strerror(rc));
}

int session_frame(loop *l, conn *c, const uint8_t *body, size_t len)
{
	int ret = 0;
	proto_msg m;
	char err[256] = "";
	int rc = proto_decode(body, len, &m, err, sizeof(err));
	if (rc) {
		l->proto_errors++;
		blog_msg(l->log, BLOG_DEBUG, "pid %d: bad frame: %s", (int)c->pid, err);
		conn_queue_err(c, 0, 0, rc == -ENOMEM ? -ENOMEM : HERD_E_PROTO, "%s",
			      err[0] ? err : herd_strerror(rc));
		conn_close_after_send(c);
		return 0;
	}
	switch (m.type) {
	case PROTO_HELLO:
		on_hello(l, c, &m.hello);
		break;
	case PROTO_GEN:
		on_gen(l, c, &m.gen);
		break;
	case PROTO_CANCEL:
		for (int i = 0; i < models_count(l->models); i++)
			sched_cancel(models_at(l->models, i)->sched, c->id, m.cancel.id);
		break;
	case PROTO_ATTACH:
		on_attach(l, c, &m.attach);
		break;
	case PROTO_ADMIN:
		ret = admin_frame(l, c, &m);
		break;
	default:
		l->proto_errors++;
		conn_queue_err(c, 0, 0, HERD_E_PROTO, "unexpected frame type '%s' from a client",
			      proto_type_name(m.type));
		conn_close_after_send(c);
		break;
	}
	proto_msg_free(&m);
	return ret;
}
