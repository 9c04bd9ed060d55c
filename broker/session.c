/* Agent frames: hello, gen, cancel, attach (admin goes to admin.c). Runs on
 * the loop thread; see loop.h for how errors close a connection. */
#include "loop_int.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/text.h"
#include "herd/error.h"

/* Lowest priority a request may ask for: keeps every priority in a range
 * where nothing built on it can overflow. */
#define SESSION_PRIO_MIN (-1000000)

static int rule_matches(const cfg_prio_rule *r, const conn *c)
{
	switch (r->match) {
	case CFG_MATCH_UID: return (uint32_t)c->uid == r->id;
	case CFG_MATCH_GID: return conn_in_group(c, (gid_t)r->id);
	case CFG_MATCH_NAME: return c->hello && r->name && !strcmp(c->name, r->name);
	case CFG_MATCH_GROUP: {
		char buf[4096];
		struct group gr, *res = NULL;
		return r->name && !getgrnam_r(r->name, &gr, buf, sizeof(buf), &res) && res &&
		       conn_in_group(c, res->gr_gid);
	}
	}
	return 0;
}

/* c's prefix-sharing trust domain (cfg.prefix_sharing): the first group
 * one of whose members matches c, else c's uid. The kind (1 uid, 2 group)
 * sits above the 32-bit uid or group index, so no two domains meet. */
static uint64_t prefix_domain(const cfg *cf, const conn *c)
{
	if (cf->prefix_scope == CFG_PREFIX_GROUP)
		for (int i = 0; i < cf->n_prefix_groups; i++)
			for (int j = 0; j < cf->prefix_groups[i].n_members; j++)
				if (rule_matches(&cf->prefix_groups[i].members[j], c))
					return 2ull << 32 | (uint32_t)i;
	return 1ull << 32 | (uint32_t)c->uid;
}

/* c's priority allowance: the first matching rule of cfg.agents.prio, or
 * agents.max_prio, and its prefix-sharing domain. Computed at the first
 * frame and again at hello (the name); never per request. */
static void set_allowance(loop *l, conn *c)
{
	const cfg_agents *a = &l->cfg->agents;
	c->max_prio = a->max_prio;
	for (int i = 0; i < a->n_rules; i++)
		if (rule_matches(&a->rules[i], c)) {
			c->max_prio = a->rules[i].max_prio;
			break;
		}
	c->domain = prefix_domain(l->cfg, c);
}

static void ensure_agent(loop *l, conn *c)
{
	if (!c->agent) {
		c->agent = l->next_agent++;
		set_allowance(l, c);
	}
}

/* prio clamped to c's allowance (and the floor); *clamped set when it was. */
static int clamp_prio(const conn *c, int32_t prio, int *clamped)
{
	*clamped = prio > c->max_prio;
	if (prio > c->max_prio)
		return c->max_prio;
	return prio < SESSION_PRIO_MIN ? SESSION_PRIO_MIN : prio;
}

/* The agent's name for the cache manager's history: its hello name, or
 * "uid:<uid>" when it gave none. */
static const char *agent_key(const conn *c, char *buf, size_t n)
{
	if (c->name[0])
		snprintf(buf, n, "%s", c->name);
	else
		snprintf(buf, n, "uid:%u", (unsigned)c->uid);
	return buf;
}

void session_closed(loop *l, conn *c)
{
	char key[CATALOG_NAME_MAX];
	if (c->hello)
		models_agent_bye(l->models, agent_key(c, key, sizeof(key)));
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
	set_allowance(l, c);
	int clamped;
	c->prio = clamp_prio(c, h->prio, &clamped);
	if (clamped && models_count(l->models) > 0)
		sched_note(models_sched(models_at(l->models, 0)), SCHED_NOTE_PRIO);
	const int nm = models_count(l->models);
	proto_model_info *mi = calloc((size_t)(nm > 0 ? nm : 1), sizeof(*mi));
	if (!mi) {
		conn_close_soon(c);
		return;
	}
	char key[CATALOG_NAME_MAX];
	agent_key(c, key, sizeof(key));
	int k = 0;
	for (int i = 0; i < nm; i++) {
		const models_entry *e = models_at(l->models, i);
		const int res = models_sched(e) != NULL; /* else the loader may be writing info */
		if (!models_may_use(e, key, (uint32_t)c->uid))
			continue; /* shared with others only */
		mi[k++] = (proto_model_info){.name = proto_s(e->name),
					   .digest = proto_s(res ? e->info.digest_hex : ""),
					   .segment = proto_s(res ? e->info.name : ""),
					   .n_vocab = e->n_vocab, /* last known when not resident */
					   .n_ctx = e->n_ctx,
					   .image_bytes = res ? e->info.image_size : 0};
	}
	proto_welcome w = {.v = PROTO_VERSION, .agent = c->agent, .models = mi, .n_models = (size_t)k,
			   .max_frame = l->cfg->max_frame, .max_tokens = (uint32_t)l->cfg->max_tokens};
	proto_buf *b = conn_outbuf(c);
	int rc = b ? proto_encode_welcome(b, &w) : -ENOMEM;
	free(mi);
	if (rc) {
		blog_msg(l->log, BLOG_ERR, "cannot encode welcome: %s", herd_strerror(rc));
		conn_close_soon(c);
		return;
	}
	models_agent_hello(l->models, key);
	blog_msg(l->log, BLOG_DEBUG, "agent %llu (pid %d) hello, prio %d (allowance %d)",
		 (unsigned long long)c->agent, (int)c->pid, c->prio, c->max_prio);
}

/* Bytes of the text a request asks to tokenize (prompt, or the messages'
 * roles and contents); token input counts 0 (no tokenizer work, the
 * scheduler checks the count against the context). Bounded by the frame. */
static size_t prompt_bytes(const gen_request *g)
{
	if (g->input == GEN_INPUT_PROMPT)
		return g->prompt.len;
	size_t n = 0;
	if (g->input == GEN_INPUT_MESSAGES)
		for (size_t i = 0; i < g->n_messages; i++)
			n += g->messages[i].role.len + g->messages[i].content.len;
	return n;
}

/* The per-agent limits, checked at the door before any work: 0, or
 * HERD_E_LIMIT with a message naming the limit in why (counted on s). */
static int check_limits(loop *l, conn *c, sched *s, const gen_request *g, char *why, size_t n)
{
	const cfg_agents *a = &l->cfg->agents;
	const size_t pb = prompt_bytes(g);
	size_t longest = 0;
	for (size_t i = 0; i < g->params.n_stop; i++)
		if (g->params.stop[i].len > longest)
			longest = g->params.stop[i].len;
	if (c->in_flight >= a->max_queued) {
		sched_note(s, SCHED_NOTE_QUEUED);
		snprintf(why, n, "limit agents.max_queued: %d requests of this agent are already queued or running",
			 a->max_queued);
	} else if (pb > a->max_prompt_bytes) {
		sched_note(s, SCHED_NOTE_PROMPT);
		snprintf(why, n, "limit agents.max_prompt_bytes: the prompt has %zu bytes, at most %u are allowed",
			 pb, (unsigned)a->max_prompt_bytes);
	} else if (g->params.n_stop > (size_t)a->max_stop || longest > (size_t)a->max_stop_bytes) {
		sched_note(s, SCHED_NOTE_STOP);
		snprintf(why, n,
			 "limit agents.max_stop / agents.max_stop_bytes: %zu stop strings (at most %d), "
			 "the longest %zu bytes (at most %d)",
			 g->params.n_stop, a->max_stop, longest, a->max_stop_bytes);
	} else {
		return 0;
	}
	return HERD_E_LIMIT;
}

/* The pressure module's "refuse" action (broker/pressure.h): -EAGAIN with
 * the PSI values in why when it is in force, else 0. */
static int refused_for_pressure(loop *l, const char *what, char *why, size_t n)
{
	char psi[256];
	if (!pressure_refusing(l->pressure, psi, sizeof(psi)))
		return 0;
	pressure_note_refused(l->pressure);
	snprintf(why, n, "%s%s", what, psi);
	return -EAGAIN;
}

/* The request as the scheduler gets it: max_tokens, priority and deadline
 * clamped by the broker's policy (counted on s). */
static void clamp_request(loop *l, conn *c, sched *s, const gen_request *g, gen_request *out,
			  sched_origin *from)
{
	*out = *g;
	int clamped = 0;
	from->prio = g->has_prio ? clamp_prio(c, g->prio, &clamped) : c->prio;
	if (clamped)
		sched_note(s, SCHED_NOTE_PRIO);
	if (out->params.max_tokens > l->cfg->max_tokens) {
		out->params.max_tokens = l->cfg->max_tokens;
		sched_note(s, SCHED_NOTE_MAX_TOKENS);
	}
	if (out->params.deadline_ms > l->cfg->agents.max_deadline_ms) {
		out->params.deadline_ms = l->cfg->agents.max_deadline_ms;
		sched_note(s, SCHED_NOTE_DEADLINE);
	}
}

/* The model a frame names, when it exists and c may use it (a model an
 * agent shared is served to its owner and targets only); else an err was
 * queued (has_id / id: about a request) and NULL returned. */
static models_entry *find_usable(loop *l, conn *c, proto_str name, int has_id, uint64_t id,
				 const char *what)
{
	models_entry *e = models_find(l->models, name.ptr ? name.ptr : "", name.len);
	if (!e) {
		conn_queue_err(c, has_id, id, HERD_E_MISSING, "%sunknown model '%.*s'", what,
			       HERD_QUOTE_LEN(name.len), name.ptr ? name.ptr : "");
		return NULL;
	}
	char key[CATALOG_NAME_MAX];
	if (models_may_use(e, agent_key(c, key, sizeof(key)), (uint32_t)c->uid))
		return e;
	conn_queue_err(c, has_id, id, -EACCES,
		       "%smodel %s was shared by agent %s with other agents only (this is agent '%s', "
		       "uid %u)", what, e->name, e->share_owner, key, (unsigned)c->uid);
	return NULL;
}

void session_agent(loop *l, conn *c)
{
	ensure_agent(l, c);
}

/* A generation request from a socket agent or an HTTP client (conn c is the
 * agent; conn_id where its answers go): 0, or an error with why filled. */
int session_submit(loop *l, conn *c, uint64_t conn_id, const gen_request *g, char *why, size_t n)
{
	ensure_agent(l, c);
	if (l->stopping)
		return herd_errf(why, n, HERD_E_CANCELLED, "the broker is shutting down");
	models_entry *e = models_find(l->models, g->model.ptr ? g->model.ptr : "", g->model.len);
	if (!e)
		return herd_errf(why, n, HERD_E_MISSING, "unknown model '%.*s'", HERD_QUOTE_LEN(g->model.len),
				 g->model.ptr ? g->model.ptr : "");
	char key[CATALOG_NAME_MAX];
	agent_key(c, key, sizeof(key));
	if (!models_may_use(e, key, (uint32_t)c->uid))
		return herd_errf(why, n, -EACCES,
				 "model %s was shared by agent %s with other agents only (this is agent '%s', "
				 "uid %u)", e->name, e->share_owner, key, (unsigned)c->uid);
	int rc = models_usable(e, 0, why, n); /* image trust: models.h */
	if (rc)
		return rc;
	sched *s = models_sched(e); /* NULL while not resident: notes are not counted */
	if ((rc = check_limits(l, c, s, g, why, n)) || (rc = refused_for_pressure(l, "", why, n)))
		return rc;
	sched_origin from = {.conn = conn_id, .agent = c->agent, .domain = c->domain};
	gen_request cg;
	clamp_request(l, c, s, g, &cg, &from);
	if ((rc = models_submit(l->models, e, key, &from, &cg, why, n)))
		return rc;
	c->n_requests++;
	c->in_flight++;
	l->total_requests++;
	return 0;
}

/* The decoded request goes to the model's scheduler (it makes its own
 * copy) once the per-agent limits passed, with the policy's clamps. */
static void on_gen(loop *l, conn *c, const gen_request *g)
{
	char why[320];
	int rc = session_submit(l, c, c->id, g, why, sizeof(why));
	if (rc)
		conn_queue_err(c, 1, g->id, rc, "%s", why);
}

static void on_attach(loop *l, conn *c, const proto_attach *a)
{
	models_entry *e = find_usable(l, c, a->model, 0, 0, "attach: ");
	if (!e)
		return;
	char why[320], key[CATALOG_NAME_MAX];
	/* not resident: its load starts and the agent retries (-EAGAIN) */
	int rc = models_attach_check(l->models, e, agent_key(c, key, sizeof(key)), why, sizeof(why));
	if (rc) {
		conn_queue_err(c, 0, 0, rc, "attach: %s", why);
		return;
	}
	if ((rc = refused_for_pressure(l, "attach: ", why, sizeof(why)))) {
		conn_queue_err(c, 0, 0, rc, "%s", why);
		return;
	}
	pressure_register_pid(l->pressure, c->pid); /* eBPF fault counters */
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

/* share: the agent's GGUF descriptor came with the frame (SCM_RIGHTS);
 * the broker checks and keeps it, and answers `shared` or err. */
static void on_share(loop *l, conn *c, const proto_share *sh)
{
	ensure_agent(l, c);
	const int fd = conn_take_fd(c);
	if (fd < 0) {
		conn_queue_err(c, 0, 0, HERD_E_INVAL, "share: no file descriptor came with the frame "
			       "(send the GGUF file's descriptor as SCM_RIGHTS with it)");
		return;
	}
	const char *t[PROTO_MAX_TARGETS];
	size_t tl[PROTO_MAX_TARGETS];
	for (size_t i = 0; i < sh->n_targets; i++) {
		t[i] = sh->targets[i].ptr ? sh->targets[i].ptr : "";
		tl[i] = sh->targets[i].len;
	}
	char key[CATALOG_NAME_MAX], why[320];
	models_share_req r = {.name = sh->name.ptr ? sh->name.ptr : "", .name_len = sh->name.len,
			      .fd = fd, .owner = agent_key(c, key, sizeof(key)),
			      .owner_uid = (uint32_t)c->uid, .targets = t, .target_lens = tl,
			      .n_targets = sh->n_targets};
	uint64_t size = 0;
	int rc = refused_for_pressure(l, "share: ", why, sizeof(why));
	if (!rc)
		rc = models_share(l->models, &r, &size, why, sizeof(why));
	if (rc) {
		close(fd);
		conn_queue_err(c, 0, 0, rc, "%s", why);
		return;
	}
	proto_shared ok = {.model = sh->name, .size = size};
	proto_buf *b = conn_outbuf(c);
	if (!b || proto_encode_shared(b, &ok))
		conn_close_soon(c);
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
	case PROTO_CANCEL: /* O(1) per resident model; pending requests are scanned */
		models_cancel(l->models, c->id, m.cancel.id);
		break;
	case PROTO_ATTACH:
		on_attach(l, c, &m.attach);
		break;
	case PROTO_ADMIN:
		ret = admin_frame(l, c, &m);
		break;
	case PROTO_SHARE:
		on_share(l, c, &m.share);
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
