/* `admin` frames (herdctl): status, models, segments, agents, rm, shutdown.
 *
 * Allowed for the broker's own uid, root, and members (primary or
 * supplementary group of the peer process, from SO_PEERCRED and
 * /proc/<pid>/status) of the configured admin_group; anyone else gets
 * `err` -EPERM and keeps the connection. Results are packed straight from
 * broker state into an admin_ok frame. */
#include "loop_int.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herd/error.h"
#include "common/clock.h"

/* ---- permission ------------------------------------------------------------- */

static int group_gid(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	char buf[4096];
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &res) || !res)
		return -1;
	*gid = gr.gr_gid;
	return 0;
}

/* 1 when process pid has gid among its supplementary groups. */
static int proc_in_group(pid_t pid, gid_t gid)
{
	char path[64], line[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int found = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Groups:", 7))
			continue;
		char *p = line + 7, *end;
		for (;;) {
			unsigned long g = strtoul(p, &end, 10);
			if (end == p)
				break;
			if ((gid_t)g == gid)
				found = 1;
			p = end;
		}
		break;
	}
	fclose(f);
	return found;
}

int admin_allowed(const loop *l, const conn *c)
{
	if (c->uid == geteuid() || c->uid == 0)
		return 1;
	gid_t g;
	if (!l->cfg->admin_group || group_gid(l->cfg->admin_group, &g))
		return 0;
	return c->gid == g || (c->pid > 0 && proc_in_group(c->pid, g));
}

/* ---- packing helpers ----------------------------------------------------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	msgpack_pack_str_with_body(pk, s ? s : "", n);
}

static void kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	pk_str(pk, k);
	pk_str(pk, v);
}

static void kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	pk_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

static void kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
	pk_str(pk, k);
	msgpack_pack_int64(pk, v);
}

static void kv_dbl(msgpack_packer *pk, const char *k, double v)
{
	pk_str(pk, k);
	msgpack_pack_double(pk, v);
}

static void kv_bool(msgpack_packer *pk, const char *k, int v)
{
	pk_str(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

static double avg(double sum, uint64_t n)
{
	return n ? sum / (double)n : 0;
}

/* ---- commands -------------------------------------------------------------- */

static void res_status(loop *l, msgpack_packer *pk)
{
	uint64_t steps = 0, tokens = 0, seqs = 0;
	double step_ms = 0;
	for (int i = 0; i < models_count(l->models); i++) {
		sched_stats st;
		sched_get_stats(models_at(l->models, i)->sched, &st);
		steps += st.steps;
		tokens += st.tokens_gen;
		seqs += st.step_seqs;
		step_ms += st.step_ms;
	}
	int agents = 0, in_flight = 0;
	for (int i = 0; i < l->n_slots; i++) {
		const conn *c = l->slots[i];
		if (c) {
			agents += c->hello;
			in_flight += c->in_flight;
		}
	}
	const double up = (clock_mono_ms() - l->t_start) / 1e3;
	msgpack_pack_map(pk, 15);
	kv_i64(pk, "pid", (int64_t)getpid());
	kv_dbl(pk, "uptime_s", up);
	kv_str(pk, "socket", l->cfg->socket_path);
	kv_i64(pk, "models", models_count(l->models));
	kv_i64(pk, "agents", agents);
	kv_i64(pk, "connections", l->n_conns);
	kv_i64(pk, "requests_in_flight", in_flight);
	kv_u64(pk, "requests_total", l->total_requests);
	kv_u64(pk, "connections_total", l->total_conns);
	kv_u64(pk, "protocol_errors", l->proto_errors);
	kv_u64(pk, "steps", steps);
	kv_u64(pk, "tokens", tokens);
	kv_dbl(pk, "avg_batch", avg((double)seqs, steps));
	/* generation rate while stepping, and averaged over the uptime */
	kv_dbl(pk, "tokens_per_s", step_ms > 0 ? (double)tokens / (step_ms / 1e3) : 0);
	kv_dbl(pk, "tokens_per_s_uptime", up > 0 ? (double)tokens / up : 0);
}

static void res_models(loop *l, msgpack_packer *pk)
{
	const int n = models_count(l->models);
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < n; i++) {
		const models_entry *e = models_at(l->models, i);
		sched_stats st;
		sched_get_stats(e->sched, &st);
		const llama_hparams *hp = &e->model->hp;
		msgpack_pack_map(pk, 33);
		kv_str(pk, "name", e->name);
		kv_str(pk, "file", e->file);
		kv_str(pk, "type", e->type ? e->type : "");
		kv_str(pk, "segment", e->info.name);
		kv_str(pk, "digest", e->info.digest_hex);
		kv_u64(pk, "image_bytes", e->info.image_size);
		kv_str(pk, "weight_type", e->info.weight_type);
		kv_bool(pk, "adopted", e->adopted);
		kv_dbl(pk, "load_ms", e->load_ms);
		kv_i64(pk, "n_vocab", hp->n_vocab);
		kv_i64(pk, "n_ctx", llama_ctx_n_ctx(e->ctx));
		kv_i64(pk, "n_layer", hp->n_layer);
		kv_i64(pk, "n_embd", hp->n_embd);
		kv_i64(pk, "threads", llama_ctx_n_threads(e->ctx));
		kv_str(pk, "isa", kern_isa_name(llama_ctx_isa(e->ctx)));
		kv_i64(pk, "running", st.running);
		kv_i64(pk, "waiting", st.waiting);
		kv_i64(pk, "paused", st.paused);
		kv_u64(pk, "steps", st.steps);
		kv_dbl(pk, "avg_batch", avg((double)st.step_seqs, st.steps));
		kv_i64(pk, "max_batch_seen", st.max_step_seqs);
		kv_dbl(pk, "step_ms_avg", avg(st.step_ms, st.steps));
		kv_u64(pk, "tokens_gen", st.tokens_gen);
		kv_u64(pk, "tokens_prompt", st.tokens_prompt);
		kv_u64(pk, "requests_done", st.requests_done);
		kv_u64(pk, "requests_err", st.requests_err);
		kv_u64(pk, "requests_cancelled", st.requests_cancelled);
		kv_u64(pk, "preemptions", st.preemptions);
		kv_i64(pk, "kv_pages_total", st.kv_pages_total);
		kv_i64(pk, "kv_pages_free", st.kv_pages_free);
		kv_dbl(pk, "queue_ms_avg", avg(st.queue.sum_ms, st.queue.n));
		kv_dbl(pk, "first_token_ms_avg", avg(st.first.sum_ms, st.first.n));
		kv_dbl(pk, "total_ms_avg", avg(st.total.sum_ms, st.total.n));
	}
}

typedef struct seg_list {
	shm_image_info *v;
	int n, cap;
} seg_list;

static int seg_collect(void *user, const shm_image_info *info)
{
	seg_list *s = user;
	if (s->n == s->cap) {
		int cap = s->cap ? s->cap * 2 : 16;
		shm_image_info *nv = realloc(s->v, sizeof(*nv) * (size_t)cap);
		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = *info;
	return 0;
}

static int res_segments(loop *l, msgpack_packer *pk, char *err, size_t errlen)
{
	seg_list s = {0};
	int rc = shm_image_list(SHM_LIST_ATTACH, seg_collect, &s);
	if (rc) {
		snprintf(err, errlen, "cannot list segments: %s", herd_strerror(rc));
		free(s.v);
		return rc;
	}
	msgpack_pack_array(pk, (size_t)s.n);
	for (int i = 0; i < s.n; i++) {
		const shm_image_info *in = &s.v[i];
		msgpack_pack_map(pk, 11);
		kv_str(pk, "name", in->name);
		kv_str(pk, "model", in->model);
		kv_u64(pk, "size", in->image_size);
		kv_str(pk, "digest", in->digest_hex);
		kv_i64(pk, "attached", in->n_attached);
		kv_bool(pk, "valid", in->valid);
		kv_bool(pk, "loaded", models_owns_segment(l->models, in->name));
		kv_str(pk, "weight_type", in->weight_type);
		kv_u64(pk, "mode", in->mode);
		kv_u64(pk, "uid", in->uid);
		kv_str(pk, "problem", in->valid ? "" : in->problem);
	}
	free(s.v);
	return 0;
}

static void res_agents(loop *l, msgpack_packer *pk)
{
	int n = 0;
	for (int i = 0; i < l->n_slots; i++)
		n += l->slots[i] != NULL;
	msgpack_pack_array(pk, (size_t)n);
	const double now = clock_mono_ms();
	for (int i = 0; i < l->n_slots; i++) {
		const conn *c = l->slots[i];
		if (!c)
			continue;
		msgpack_pack_map(pk, 9);
		kv_u64(pk, "id", c->agent);
		kv_str(pk, "name", c->name);
		kv_i64(pk, "pid", c->pid);
		kv_i64(pk, "uid", (int64_t)c->uid);
		kv_u64(pk, "requests", c->n_requests);
		kv_u64(pk, "tokens", c->n_tokens);
		kv_i64(pk, "in_flight", c->in_flight);
		kv_i64(pk, "prio", c->prio);
		kv_dbl(pk, "connected_s", (now - c->t_connect) / 1e3);
	}
}

static int res_rm(loop *l, msgpack_packer *pk, const proto_admin *a, char *err, size_t errlen)
{
	const char *seg = NULL;
	char name[SHM_IMAGE_NAME_MAX + 1];
	int force = 0;
	for (size_t i = 0; i < a->n_args; i++) {
		if (proto_str_eq(a->args[i], "--force") || proto_str_eq(a->args[i], "-f")) {
			force = 1;
		} else if (!seg && a->args[i].len > 0 && a->args[i].len < sizeof(name)) {
			memcpy(name, a->args[i].ptr, a->args[i].len);
			name[a->args[i].len] = 0;
			seg = name;
		} else {
			snprintf(err, errlen, "rm: unexpected argument '%.*s'",
				 (int)(a->args[i].len > 96 ? 96 : a->args[i].len), a->args[i].ptr);
			return HERD_E_INVAL;
		}
	}
	if (!seg) {
		snprintf(err, errlen, "rm: which segment? (rm SEGMENT [--force])");
		return HERD_E_INVAL;
	}
	if (models_owns_segment(l->models, seg) && !force) {
		snprintf(err, errlen,
			 "rm: %s is the image of a loaded model; agents may be using it (--force removes "
			 "the name anyway; mappings stay valid)",
			 seg);
		return -EBUSY;
	}
	int rc = shm_image_remove(seg);
	if (rc) {
		snprintf(err, errlen, "rm %s: %s", seg, herd_strerror(rc));
		return rc;
	}
	blog_msg(l->log, BLOG_INFO, "admin: removed segment %s", seg);
	msgpack_pack_map(pk, 1);
	kv_str(pk, "removed", seg);
	return 0;
}

void admin_frame(loop *l, conn *c, const proto_msg *m)
{
	const proto_admin *a = &m->admin;
	if (!admin_allowed(l, c)) {
		blog_msg(l->log, BLOG_WARN, "admin '%.*s' refused for uid %d pid %d",
			 (int)(a->cmd.len > 32 ? 32 : a->cmd.len), a->cmd.ptr, (int)c->uid, (int)c->pid);
		loop_send_err(l, c, 0, 0, -EPERM, "admin commands need the broker's uid or group '%s'",
			      l->cfg->admin_group ? l->cfg->admin_group : "(none configured)");
		return;
	}
	char cmd[32];
	size_t n = a->cmd.len < sizeof(cmd) - 1 ? a->cmd.len : sizeof(cmd) - 1;
	memcpy(cmd, a->cmd.ptr ? a->cmd.ptr : "", n);
	cmd[n] = 0;
	proto_buf *b = loop_outbuf(l, c);
	if (!b) {
		loop_close_conn(l, c);
		return;
	}
	size_t mark;
	if (proto_frame_begin(b, &mark)) {
		loop_close_conn(l, c);
		return;
	}
	msgpack_packer pk;
	msgpack_packer_init(&pk, b, proto_buf_write);
	msgpack_pack_map(&pk, 3);
	kv_str(&pk, "t", "admin_ok");
	kv_str(&pk, "cmd", cmd);
	pk_str(&pk, "result");
	char err[512] = "";
	int rc = 0, stop = 0;
	if (!strcmp(cmd, "status"))
		res_status(l, &pk);
	else if (!strcmp(cmd, "models"))
		res_models(l, &pk);
	else if (!strcmp(cmd, "segments"))
		rc = res_segments(l, &pk, err, sizeof(err));
	else if (!strcmp(cmd, "agents"))
		res_agents(l, &pk);
	else if (!strcmp(cmd, "rm"))
		rc = res_rm(l, &pk, a, err, sizeof(err));
	else if (!strcmp(cmd, "shutdown")) {
		msgpack_pack_map(&pk, 1);
		kv_bool(&pk, "shutting_down", 1);
		stop = 1;
	} else {
		rc = HERD_E_INVAL;
		snprintf(err, sizeof(err),
			 "unknown admin command '%s' (status, models, segments, agents, rm, shutdown)", cmd);
	}
	if (!rc)
		rc = proto_frame_end(b, mark);
	if (rc) {
		proto_frame_abort(b, mark);
		loop_send_err(l, c, 0, 0, rc, "%s", err[0] ? err : herd_strerror(rc));
		return;
	}
	loop_kick(l, c);
	if (stop) {
		blog_msg(l->log, BLOG_INFO, "admin: shutdown requested by uid %d pid %d", (int)c->uid,
			 (int)c->pid);
		loop_stop(l);
	}
}
