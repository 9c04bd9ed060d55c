/* The GET endpoints: the seed's JSON (the admin results herdctl prints,
 * through admin_query, never gathered twice), Prometheus text exposition,
 * health, the model lists of the OpenAI and Ollama APIs, and the
 * dashboard's snapshots. */
#include "http_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/json_value.h"
#include "common/clock.h"
#include "common/procfs.h"
#include "herd/error.h"

json_object *stats_admin_json(http *h, const char *cmd, char *err, size_t errlen)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_msg m;
	json_object *o = NULL;
	if (!admin_query(h->l, cmd, &b, &m, err, errlen))
		o = value_to_json(m.admin_ok.result);
	proto_msg_free(&m);
	proto_buf_fini(&b);
	return o;
}

static json_object *jget(json_object *o, const char *k)
{
	json_object *v = NULL;
	return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* Replies with the admin result of cmd, or a 500 naming why not. */
static int reply_admin(http_req *r, const char *cmd)
{
	char err[256] = "";
	json_object *o = stats_admin_json(r->h, cmd, err, sizeof(err));
	if (!o)
		return http_reply_error(r, 500, NULL, "%s: %s", cmd, err[0] ? err : "out of memory");
	return http_reply_json(r, 200, o);
}

int stats_batch(http_req *r)
{
	return reply_admin(r, "batch");
}

/* The cache manager's fields of each model (herdctl models), beside
 * herdctl cache's result. */
static const char *const model_cache_keys[] = {
	"name", "state", "resident", "bytes", "image_bytes", "kv_bytes", "pinned", "score",
	"score_recency", "score_frequency", "score_cost", "score_affinity", "uses", "loads",
	"evictions", "last_use_s_ago", "holders"};

int stats_cache(http_req *r)
{
	char err[256] = "";
	json_object *c = stats_admin_json(r->h, "cache", err, sizeof(err));
	json_object *ms = c ? stats_admin_json(r->h, "models", err, sizeof(err)) : NULL;
	if (!c || !ms) {
		json_object_put(c);
		return http_reply_error(r, 500, NULL, "cache: %s", err[0] ? err : "out of memory");
	}
	json_object *arr = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(ms); i++) {
		json_object *m = json_object_array_get_idx(ms, i), *o = json_object_new_object();
		for (size_t k = 0; k < sizeof(model_cache_keys) / sizeof(model_cache_keys[0]); k++) {
			json_object *v = jget(m, model_cache_keys[k]);
			json_object_object_add(o, model_cache_keys[k], json_object_get(v));
		}
		json_object_array_add(arr, o);
	}
	json_object_put(ms);
	json_object_object_add(c, "models", arr);
	return http_reply_json(r, 200, c);
}

int stats_healthz(http_req *r)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "status", json_object_new_string("ok"));
	json_object_object_add(o, "version", json_object_new_string(HERD_VERSION_STRING));
	return http_reply_json(r, 200, o);
}

/* Ready: not stopping, not refusing for memory pressure, and some model
 * able to take requests (resident, or loadable on demand). */
int stats_readyz(http_req *r)
{
	loop *l = r->h->l;
	char why[320] = "no model can take requests";
	int ready = 0;
	for (int i = 0; !ready && i < models_count(l->models); i++)
		ready = models_usable(models_at(l->models, i), 0, why, sizeof(why)) == 0;
	char psi[256];
	if (l->stopping) {
		ready = 0;
		snprintf(why, sizeof(why), "shutting down");
	} else if (ready && pressure_refusing(l->pressure, psi, sizeof(psi))) {
		ready = 0;
		snprintf(why, sizeof(why), "refusing requests under memory pressure%s", psi);
	}
	json_object *o = json_object_new_object();
	json_object_object_add(o, "ready", json_object_new_boolean(ready));
	if (!ready)
		json_object_object_add(o, "reason", json_object_new_string(why));
	return http_reply_json(r, ready ? 200 : 503, o);
}

/* ---- model lists --------------------------------------------------------- */

static json_object *models_tree(http_req *r)
{
	char err[256];
	return stats_admin_json(r->h, "models", err, sizeof(err));
}

int stats_oai_models(http_req *r)
{
	json_object *ms = models_tree(r), *data = json_object_new_array(), *o = json_object_new_object();
	for (size_t i = 0; ms && i < json_object_array_length(ms); i++) {
		json_object *m = json_object_new_object();
		json_object_object_add(m, "id", json_object_get(jget(json_object_array_get_idx(ms, i), "name")));
		json_object_object_add(m, "object", json_object_new_string("model"));
		json_object_object_add(m, "created", json_object_new_int64(0));
		json_object_object_add(m, "owned_by", json_object_new_string("herd"));
		json_object_array_add(data, m);
	}
	json_object_put(ms);
	json_object_object_add(o, "object", json_object_new_string("list"));
	json_object_object_add(o, "data", data);
	return http_reply_json(r, 200, o);
}

/* Ollama's description of a model from herdctl models' fields. */
static json_object *oll_model(json_object *m)
{
	json_object *o = json_object_new_object(), *d = json_object_new_object();
	const char *name = json_object_get_string(jget(m, "name"));
	char full[HTTP_MODEL_MAX + 8];
	snprintf(full, sizeof(full), "%s:latest", name ? name : "");
	json_object_object_add(o, "name", json_object_new_string(full));
	json_object_object_add(o, "model", json_object_new_string(full));
	json_object_object_add(o, "modified_at", json_object_new_string("1970-01-01T00:00:00Z"));
	json_object *ib = jget(m, "image_bytes");
	json_object_object_add(o, "size", json_object_get(json_object_get_int64(ib) ? ib : jget(m, "bytes")));
	json_object_object_add(o, "digest", json_object_get(jget(m, "digest")));
	json_object_object_add(d, "format", json_object_new_string("gguf"));
	json_object_object_add(d, "family", json_object_new_string("llama"));
	json_object_object_add(d, "parameter_size", json_object_new_string(""));
	json_object_object_add(d, "quantization_level", json_object_get(jget(m, "weight_type")));
	json_object_object_add(o, "details", d);
	return o;
}

static int oll_list(http_req *r, int resident_only)
{
	json_object *ms = models_tree(r), *arr = json_object_new_array(), *o = json_object_new_object();
	for (size_t i = 0; ms && i < json_object_array_length(ms); i++) {
		json_object *m = json_object_array_get_idx(ms, i);
		if (resident_only && !json_object_get_boolean(jget(m, "resident")))
			continue;
		json_object *e = oll_model(m);
		if (resident_only) {
			json_object_object_add(e, "size_vram", json_object_new_int(0));
			json_object_object_add(e, "expires_at", json_object_new_string("9999-12-31T23:59:59Z"));
		}
		json_object_array_add(arr, e);
	}
	json_object_put(ms);
	json_object_object_add(o, "models", arr);
	return http_reply_json(r, 200, o);
}

int stats_tags(http_req *r)
{
	return oll_list(r, 0);
}

int stats_ps(http_req *r)
{
	return oll_list(r, 1);
}

/* POST /api/show {"model": NAME} (or "name"). */
int stats_show(http_req *r)
{
	json_object *in = r->body_len ? json_tokener_parse(r->body) : NULL, *v = NULL;
	if (!in || json_object_get_type(in) != json_type_object ||
	    (!json_object_object_get_ex(in, "model", &v) && !json_object_object_get_ex(in, "name", &v)) ||
	    json_object_get_type(v) != json_type_string) {
		json_object_put(in);
		return http_reply_error(r, 400, "model", "field 'model' is required (a JSON object body)");
	}
	char want[HTTP_MODEL_MAX];
	snprintf(want, sizeof(want), "%s", json_object_get_string(v));
	json_object_put(in);
	char *colon = strstr(want, ":latest");
	if (colon && !colon[7])
		*colon = 0;
	json_object *ms = models_tree(r), *m = NULL;
	for (size_t i = 0; ms && i < json_object_array_length(ms); i++)
		if (!strcmp(json_object_get_string(jget(json_object_array_get_idx(ms, i), "name")), want))
			m = json_object_array_get_idx(ms, i);
	if (!m) {
		json_object_put(ms);
		return http_reply_error(r, 404, "model", "model '%s' not found", want);
	}
	json_object *o = oll_model(m), *info = json_object_new_object();
	json_object_object_add(info, "general.architecture", json_object_new_string("llama"));
	json_object_object_add(info, "llama.context_length", json_object_get(jget(m, "n_ctx")));
	json_object_object_add(info, "llama.embedding_length", json_object_get(jget(m, "n_embd")));
	json_object_object_add(info, "llama.block_count", json_object_get(jget(m, "n_layer")));
	json_object_object_add(info, "llama.vocab_size", json_object_get(jget(m, "n_vocab")));
	json_object_object_add(o, "model_info", info);
	json_object_object_add(o, "modelfile", json_object_new_string(""));
	json_object_object_add(o, "parameters", json_object_new_string(""));
	json_object_object_add(o, "template", json_object_new_string(""));
	json_object_put(ms);
	return http_reply_json(r, 200, o);
}

/* ---- the dashboard's snapshot ------------------------------------------- */

static json_object *http_agents_json(http *h)
{
	json_object *arr = json_object_new_array();
	const double now = clock_mono_ms();
	for (http_agent *a = h->agents; a; a = a->next) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_int64((int64_t)a->c.agent));
		json_object_object_add(o, "name", json_object_new_string(a->c.name));
		json_object_object_add(o, "requests", json_object_new_int64((int64_t)a->c.n_requests));
		json_object_object_add(o, "tokens", json_object_new_int64((int64_t)a->c.n_tokens));
		json_object_object_add(o, "in_flight", json_object_new_int(a->c.in_flight));
		json_object_object_add(o, "idle_s", json_object_new_double((now - a->t_last) / 1e3));
		json_object_array_add(arr, o);
	}
	return arr;
}

void stats_ui_event(http_req *r)
{
	static const char *const cmds[] = {"batch", "cache", "models", "pressure", "agents"};
	json_object *o = json_object_new_object();
	char err[256];
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		json_object_object_add(o, cmds[i], stats_admin_json(r->h, cmds[i], err, sizeof(err)));
	json_object_object_add(o, "http_agents", http_agents_json(r->h));
	json_object_object_add(o, "pss_bytes",
			       json_object_new_int64((int64_t)proc_mem_bytes(getpid(), "smaps_rollup", "Pss:")));
	json_object_object_add(o, "seq", json_object_new_int(r->n_ui));
	http_out_json(r, "event: snapshot\ndata: ", o, "\n\n");
}
