/* herdd configuration: JSON file and flags. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/text.h"
#include "herd/error.h"
#include "kernels/threadpool.h"
#include "model/llama.h"
#include "config_http.h"

void cfg_init(cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->max_frame = 1u << 20;
	c->max_batch_size = 32;
	c->max_wait_time_ms = 2;
	c->dynamic_batching = 1;
	c->priority_threshold = 10;
	c->prefill_chunk = 128;
	c->max_decode_delay_ms = 1000;
	c->max_tokens = 4096;
	c->prefix_cache = 1;
	c->kv_type = KERN_TYPE_F16;
	c->draft_tokens = 8;
	c->preload_confidence = 0.6;
	c->catalog_flush_ms = 100;
	c->max_share_mb = 16384;
	c->max_shared_models = 8;
	c->preload_predict = 1;
	c->limits = (cfg_limits){.send_queue_bytes = 8u << 20,
				 .send_queue_pause_bytes = 2u << 20,
				 .frame_timeout_ms = 10000,
				 .idle_timeout_ms = 0,
				 .max_connections = 1024,
				 .max_connections_per_uid = 256,
				 .accept_backoff_ms = 100,
				 .frame_budget_per_s = 50000};
	c->agents.max_queued = 256;
	c->agents.max_prompt_bytes = 1u << 20;
	c->agents.max_stop = 8;
	c->agents.max_stop_bytes = 64;
	c->agents.max_deadline_ms = 7ull * 24 * 3600 * 1000; /* a week */
	c->response_cache = (cfg_respcache){.enabled = 0, .max_mb = 256, .ttl_s = 86400};
	c->pressure = (cfg_pressure){.enable = 1, .bpf = 1, .trigger_us = 150000,
				     .window_us = 1000000, .escalate_ms = 1000,
				     .recover_ms = 10000, .stall_ms_per_s = 100};
	c->http.ui = 1;
}

static void model_free(cfg_model *m)
{
	free(m->name);
	free(m->file);
	free(m->type);
}

static void prefix_groups_free(cfg *c)
{
	for (int i = 0; i < c->n_prefix_groups; i++) {
		cfg_prefix_group *g = &c->prefix_groups[i];
		for (int j = 0; j < g->n_members; j++)
			free(g->members[j].name);
		free(g->members);
		free(g->name);
	}
	free(c->prefix_groups);
	c->prefix_groups = NULL;
	c->n_prefix_groups = 0;
}

void cfg_fini(cfg *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n_models; i++)
		model_free(&c->models[i]);
	free(c->models);
	free(c->socket_path);
	free(c->state_dir);
	free(c->admin_group);
	free(c->cpus);
	free(c->cpu_affinity);
	for (int i = 0; i < c->agents.n_rules; i++)
		free(c->agents.rules[i].name);
	free(c->agents.rules);
	prefix_groups_free(c);
	cfg_http_fini(&c->http);
	memset(c, 0, sizeof(*c));
}

int cfg_set_str(char **field, const char *v)
{
	char *d = NULL;
	if (v && !(d = strdup(v)))
		return -ENOMEM;
	free(*field);
	*field = d;
	return 0;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || s[0] == '.' || !strcmp(s, "tmp"))
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-' || ch == '+'))
			return 0;
	}
	return 1;
}

int cfg_add_model(cfg *c, const char *name, const char *file, const char *type, char *err,
		  size_t errlen)
{
	if (!name || !name_ok(name))
		return herd_errf(err, errlen, HERD_E_INVAL,
				"model name '%s' is invalid (1-63 of A-Z a-z 0-9 . _ + -, not starting with '.', not 'tmp')", name ? name : "");
	if (!file || !*file)
		return herd_errf(err, errlen, HERD_E_INVAL, "model '%s' has no file", name);
	cfg_model m = {.name = strdup(name), .file = strdup(file),
		       .type = type && *type ? strdup(type) : NULL};
	if (!m.name || !m.file || (type && *type && !m.type)) {
		model_free(&m);
		return -ENOMEM;
	}
	for (int i = 0; i < c->n_models; i++)
		if (!strcmp(c->models[i].name, name)) {
			model_free(&c->models[i]);
			c->models[i] = m;
			return 0;
		}
	cfg_model *nm = realloc(c->models, sizeof(*nm) * (size_t)(c->n_models + 1));
	if (!nm) {
		model_free(&m);
		return -ENOMEM;
	}
	c->models = nm;
	c->models[c->n_models++] = m;
	return 0;
}

int cfg_add_model_spec(cfg *c, const char *spec, char *err, size_t errlen)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || !eq[1])
		return herd_errf(err, errlen, HERD_E_INVAL, "--model expects NAME=FILE[:TYPE], got '%s'",
				spec);
	char name[80];
	size_t nl = (size_t)(eq - spec);
	if (nl >= sizeof(name))
		return herd_errf(err, errlen, HERD_E_INVAL, "--model: name too long in '%s'", spec);
	memcpy(name, spec, nl);
	name[nl] = 0;
	char *file = strdup(eq + 1);
	if (!file)
		return -ENOMEM;
	const char *type = NULL;
	char *colon = strrchr(file, ':');
	if (colon && !strchr(colon, '/') && colon != file) {
		*colon = 0;
		type = colon + 1;
		if (!*type) {
			free(file);
			return herd_errf(err, errlen, HERD_E_INVAL, "--model: empty TYPE in '%s'", spec);
		}
	}
	int rc = cfg_add_model(c, name, file, type, err, errlen);
	free(file);
	return rc;
}

/* ---- JSON -------------------------------------------------------------- */

static int want_type(json_object *v, json_type t, const char *key, const char *what, char *err,
		     size_t errlen)
{
	if (json_object_get_type(v) != t)
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': expected %s, got %s", key, what,
				json_type_to_name(json_object_get_type(v)));
	return 0;
}

static int get_int(json_object *v, const char *key, long lo, long hi, long *out, char *err,
		   size_t errlen)
{
	int rc = want_type(v, json_type_int, key, "an integer", err, errlen);
	if (rc)
		return rc;
	errno = 0;
	int64_t x = json_object_get_int64(v);
	if (errno || x < lo || x > hi)
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': %lld is out of range [%ld, %ld]",
				key, (long long)x, lo, hi);
	*out = (long)x;
	return 0;
}

static int get_str(json_object *v, const char *key, char **field, char *err, size_t errlen)
{
	int rc = want_type(v, json_type_string, key, "a string", err, errlen);
	if (rc)
		return rc;
	return cfg_set_str(field, json_object_get_string(v));
}

/* An integer key of a JSON object: its name, the field it fills (offset in
 * the struct the object describes, and the field's type) and the range it
 * accepts. One table per object, read by get_int_key. */
typedef enum cfg_int_type { CFG_T_INT, CFG_T_U32, CFG_T_U64 } cfg_int_type;
typedef struct cfg_int_key {
	const char *name;
	size_t off;
	cfg_int_type type;
	long lo, hi;
} cfg_int_key;

#define CFG_N(tab) (sizeof(tab) / sizeof((tab)[0]))

/* When k names an entry of tab[0..n), reads v (range-checked, messages
 * naming key) into that field of base and sets *handled; otherwise leaves
 * base alone and clears *handled. */
static int get_int_key(const cfg_int_key *tab, size_t n, void *base, const char *k,
		       json_object *v, const char *key, int *handled, char *err, size_t errlen)
{
	*handled = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(k, tab[i].name))
			continue;
		long x;
		*handled = 1;
		int rc = get_int(v, key, tab[i].lo, tab[i].hi, &x, err, errlen);
		if (rc)
			return rc;
		char *p = (char *)base + tab[i].off;
		switch (tab[i].type) {
		case CFG_T_INT: *(int *)p = (int)x; break;
		case CFG_T_U32: *(uint32_t *)p = (uint32_t)x; break;
		case CFG_T_U64: *(uint64_t *)p = (uint64_t)x; break;
		}
		return 0;
	}
	return 0;
}

static int parse_models(cfg *c, json_object *arr, char *err, size_t errlen)
{
	int rc = want_type(arr, json_type_array, "models", "an array", err, errlen);
	if (rc)
		return rc;
	size_t n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++) {
		json_object *m = json_object_array_get_idx(arr, i);
		char key[64];
		snprintf(key, sizeof(key), "models[%zu]", i);
		if ((rc = want_type(m, json_type_object, key, "an object", err, errlen)))
			return rc;
		const char *name = NULL, *file = NULL, *type = NULL;
		int flags[2] = {0, 0}; /* pinned, preload */
		json_object_object_foreach(m, k, v)
		{
			snprintf(key, sizeof(key), "models[%zu].%s", i, k);
			const int fl = !strcmp(k, "pinned") ? 0 : !strcmp(k, "preload") ? 1 : -1;
			if (fl >= 0) {
				if ((rc = want_type(v, json_type_boolean, key, "true or false", err, errlen)))
					return rc;
				flags[fl] = json_object_get_boolean(v);
				continue;
			}
			const char **dst = !strcmp(k, "name")   ? &name
					   : !strcmp(k, "file") ? &file
					   : !strcmp(k, "type") ? &type
								: NULL;
			if (!dst)
				return herd_errf(err, errlen, HERD_E_FORMAT,
						"unknown key '%s' (known: name, file, type, pinned, preload)", key);
			if ((rc = want_type(v, json_type_string, key, "a string", err, errlen)))
				return rc;
			*dst = json_object_get_string(v);
		}
		if (!name || !file)
			return herd_errf(err, errlen, HERD_E_FORMAT, "models[%zu]: missing key '%s'", i,
					!name ? "name" : "file");
		if ((rc = cfg_add_model(c, name, file, type, err, errlen)))
			return rc == HERD_E_INVAL ? HERD_E_FORMAT : rc;
		for (int j = 0; j < c->n_models; j++)
			if (!strcmp(c->models[j].name, name)) {
				c->models[j].pinned = flags[0];
				c->models[j].preload = flags[1];
			}
	}
	return 0;
}

static const cfg_int_key batch_ints[] = {
	{.name = "max_batch_size", .off = offsetof(cfg, max_batch_size), .type = CFG_T_INT,
	 .lo = 1, .hi = 256},
	{.name = "max_wait_time_ms", .off = offsetof(cfg, max_wait_time_ms), .type = CFG_T_INT,
	 .lo = 0, .hi = 60000},
	{.name = "priority_threshold", .off = offsetof(cfg, priority_threshold), .type = CFG_T_INT,
	 .lo = -1000000, .hi = 1000000},
	{.name = "target_tpot_ms", .off = offsetof(cfg, target_tpot_ms), .type = CFG_T_INT,
	 .lo = 0, .hi = 600000},
	{.name = "max_decode_delay_ms", .off = offsetof(cfg, max_decode_delay_ms), .type = CFG_T_INT,
	 .lo = 0, .hi = 600000},
};

/* max_batch_size: an integer in [1, 256] or the string "auto". */
static int parse_max_batch(cfg *c, json_object *v, const char *key, char *err, size_t errlen)
{
	if (json_object_get_type(v) != json_type_string) {
		int handled;
		int rc = get_int_key(batch_ints, CFG_N(batch_ints), c, "max_batch_size", v, key,
				     &handled, err, errlen);
		if (!rc)
			c->batch_auto = 0;
		return rc;
	}
	if (strcmp(json_object_get_string(v), "auto"))
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "key '%s': expected an integer or \"auto\", got \"%.32s\"", key,
				 json_object_get_string(v));
	c->batch_auto = 1;
	c->max_batch_size = CFG_BATCH_AUTO_MAX;
	return 0;
}

/* A batch key (in "batch" or at the top level): *handled says whether k is one. */
static int parse_batch_key(cfg *c, const char *k, json_object *v, const char *key, int *handled,
			   char *err, size_t errlen)
{
	if (!strcmp(k, "max_batch_size")) {
		*handled = 1;
		return parse_max_batch(c, v, key, err, errlen);
	}
	if (strcmp(k, "dynamic_batching"))
		return get_int_key(batch_ints, CFG_N(batch_ints), c, k, v, key, handled, err, errlen);
	*handled = 1;
	int rc = want_type(v, json_type_boolean, key, "a boolean", err, errlen);
	if (!rc)
		c->dynamic_batching = json_object_get_boolean(v);
	return rc;
}

#define LIMITS_KNOWN                                                                              \
	"send_queue_bytes, send_queue_pause_bytes, frame_timeout_ms, idle_timeout_ms, "           \
	"max_connections, max_connections_per_uid, accept_backoff_ms, frame_budget_per_s"

static const cfg_int_key limits_ints[] = {
	{.name = "send_queue_bytes", .off = offsetof(cfg_limits, send_queue_bytes),
	 .type = CFG_T_U32, .lo = 65536, .hi = 1L << 30},
	{.name = "send_queue_pause_bytes", .off = offsetof(cfg_limits, send_queue_pause_bytes),
	 .type = CFG_T_U32, .lo = 4096, .hi = 1L << 30},
	{.name = "frame_timeout_ms", .off = offsetof(cfg_limits, frame_timeout_ms),
	 .type = CFG_T_INT, .lo = 100, .hi = 3600000},
	{.name = "idle_timeout_ms", .off = offsetof(cfg_limits, idle_timeout_ms),
	 .type = CFG_T_INT, .lo = 0, .hi = 1L << 30},
	{.name = "max_connections", .off = offsetof(cfg_limits, max_connections),
	 .type = CFG_T_INT, .lo = 1, .hi = 1 << 20},
	{.name = "max_connections_per_uid", .off = offsetof(cfg_limits, max_connections_per_uid),
	 .type = CFG_T_INT, .lo = 1, .hi = 1 << 20},
	{.name = "accept_backoff_ms", .off = offsetof(cfg_limits, accept_backoff_ms),
	 .type = CFG_T_INT, .lo = 1, .hi = 60000},
	{.name = "frame_budget_per_s", .off = offsetof(cfg_limits, frame_budget_per_s),
	 .type = CFG_T_INT, .lo = 0, .hi = 1 << 30},
};

/* One key of the "limits" object. */
static int parse_limit_key(cfg_limits *L, const char *k, json_object *v, const char *key, char *err,
			   size_t errlen)
{
	int handled;
	int rc = get_int_key(limits_ints, CFG_N(limits_ints), L, k, v, key, &handled, err, errlen);
	if (!handled)
		rc = herd_errf(err, errlen, HERD_E_FORMAT, "unknown key '%s' (known: " LIMITS_KNOWN ")",
			       key);
	return rc;
}

/* One agent-matching rule at where ("agents.prio[3]"): one of uid, gid,
 * group, name, and max_prio when want_prio (a prefix group member has none). */
static int parse_match_rule(cfg_prio_rule *r, json_object *o, const char *where, int want_prio,
			    char *err, size_t errlen)
{
	char key[160];
	int rc = want_type(o, json_type_object, where, "an object", err, errlen), have_prio = !want_prio;
	long x;
	if (rc)
		return rc; /* not an object: json_object_object_foreach would read NULL */
	json_object_object_foreach(o, k, v)
	{
		if (rc)
			return rc;
		snprintf(key, sizeof(key), "%s.%.60s", where, k);
		const int m = !strcmp(k, "uid") ? CFG_MATCH_UID : !strcmp(k, "gid") ? CFG_MATCH_GID
			      : !strcmp(k, "group") ? CFG_MATCH_GROUP : !strcmp(k, "name") ? CFG_MATCH_NAME : 0;
		if (want_prio && !strcmp(k, "max_prio")) {
			if (!(rc = get_int(v, key, -1000000, 1000000, &x, err, errlen)))
				r->max_prio = (int)x, have_prio = 1;
		} else if (!m) {
			return herd_errf(err, errlen, HERD_E_FORMAT, "unknown key '%s' (known: uid, gid, group, name%s)",
					key, want_prio ? ", max_prio" : "");
		} else if (r->match) {
			return herd_errf(err, errlen, HERD_E_FORMAT, "%s: only one of uid, gid, group, name", key);
		} else if ((r->match = (cfg_match)m) <= CFG_MATCH_GID) {
			if (!(rc = get_int(v, key, 0, UINT32_MAX - 1, &x, err, errlen)))
				r->id = (uint32_t)x;
		} else {
			rc = get_str(v, key, &r->name, err, errlen);
		}
	}
	if (!rc && (!r->match || !have_prio))
		rc = herd_errf(err, errlen, HERD_E_FORMAT, "%s: needs %s", where,
			       r->match ? "max_prio" : "one of uid, gid, group, name");
	return rc;
}

static int parse_prio_rule(cfg_prio_rule *r, json_object *o, size_t i, char *err, size_t errlen)
{
	char where[64];
	snprintf(where, sizeof(where), "agents.prio[%zu]", i);
	return parse_match_rule(r, o, where, 1, err, errlen);
}

/* One group of "prefix_sharing.groups": name -> array of member rules. */
static int parse_prefix_group(cfg_prefix_group *g, const char *name, json_object *arr, char *err,
			      size_t errlen)
{
	char where[128];
	snprintf(where, sizeof(where), "prefix_sharing.groups.%.64s", name);
	int rc = want_type(arr, json_type_array, where, "an array", err, errlen);
	if (rc)
		return rc;
	const size_t n = json_object_array_length(arr);
	if (n == 0 || n > 1024)
		return herd_errf(err, errlen, HERD_E_FORMAT, "%s: %zu members (1 to 1024)", where, n);
	if (!(g->name = strdup(name)) || !(g->members = calloc(n, sizeof(*g->members))))
		return -ENOMEM;
	for (size_t i = 0; i < n && !rc; i++, g->n_members++) {
		char w[160];
		snprintf(w, sizeof(w), "%s[%zu]", where, i);
		rc = parse_match_rule(&g->members[i], json_object_array_get_idx(arr, i), w, 0, err, errlen);
	}
	return rc;
}

static int parse_prefix_groups(cfg *c, json_object *o, char *err, size_t errlen)
{
	int rc = want_type(o, json_type_object, "prefix_sharing.groups", "an object", err, errlen);
	if (rc)
		return rc;
	const int n = json_object_object_length(o);
	if (n > 1024)
		return herd_errf(err, errlen, HERD_E_FORMAT, "prefix_sharing.groups: %d groups (at most 1024)", n);
	prefix_groups_free(c);
	if (!(c->prefix_groups = calloc(n ? (size_t)n : 1, sizeof(*c->prefix_groups))))
		return -ENOMEM;
	json_object_object_foreach(o, k, v)
	{
		rc = parse_prefix_group(&c->prefix_groups[c->n_prefix_groups++], k, v, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

/* "prefix_sharing": {"scope": "uid"|"group", "groups": {...}}. */
static int parse_prefix_sharing(cfg *c, json_object *o, char *err, size_t errlen)
{
	int rc = want_type(o, json_type_object, "prefix_sharing", "an object", err, errlen);
	if (rc)
		return rc;
	json_object_object_foreach(o, k, v)
	{
		if (!strcmp(k, "scope")) {
			const char *sc = json_object_get_string(v);
			if ((rc = want_type(v, json_type_string, "prefix_sharing.scope", "a string", err, errlen)))
				return rc;
			if (strcmp(sc, "uid") && strcmp(sc, "group"))
				return herd_errf(err, errlen, HERD_E_FORMAT,
						"key 'prefix_sharing.scope': '%.*s' is not uid or group",
						HERD_QUOTE_LEN(strlen(sc)), sc);
			c->prefix_scope = !strcmp(sc, "group") ? CFG_PREFIX_GROUP : CFG_PREFIX_UID;
		} else if (!strcmp(k, "groups")) {
			if ((rc = parse_prefix_groups(c, v, err, errlen)))
				return rc;
		} else {
			return herd_errf(err, errlen, HERD_E_FORMAT,
					"unknown key 'prefix_sharing.%.60s' (known: scope, groups)", k);
		}
	}
	if (c->n_prefix_groups && c->prefix_scope != CFG_PREFIX_GROUP)
		return herd_errf(err, errlen, HERD_E_FORMAT,
				"prefix_sharing.groups needs \"scope\": \"group\"");
	return 0;
}

static int parse_prio_rules(cfg_agents *a, json_object *arr, char *err, size_t errlen)
{
	int rc = want_type(arr, json_type_array, "agents.prio", "an array", err, errlen);
	if (rc)
		return rc;
	const size_t n = json_object_array_length(arr);
	if (n > 1024)
		return herd_errf(err, errlen, HERD_E_FORMAT, "agents.prio: %zu rules (at most 1024)", n);
	for (int i = 0; i < a->n_rules; i++)
		free(a->rules[i].name);
	free(a->rules);
	a->n_rules = 0;
	a->rules = calloc(n ? n : 1, sizeof(*a->rules));
	if (!a->rules)
		return -ENOMEM;
	for (size_t i = 0; i < n && !rc; i++, a->n_rules++)
		rc = parse_prio_rule(&a->rules[i], json_object_array_get_idx(arr, i), i, err, errlen);
	return rc;
}

/* The "agents" object: per-agent limits and the priority policy. */
static const cfg_int_key agents_ints[] = {
	{.name = "max_queued", .off = offsetof(cfg_agents, max_queued), .type = CFG_T_INT,
	 .lo = 1, .hi = 1000000},
	{.name = "max_running", .off = offsetof(cfg_agents, max_running), .type = CFG_T_INT,
	 .lo = 0, .hi = 1000000},
	{.name = "max_prompt_bytes", .off = offsetof(cfg_agents, max_prompt_bytes),
	 .type = CFG_T_U32, .lo = 1, .hi = 1L << 30},
	{.name = "max_stop", .off = offsetof(cfg_agents, max_stop), .type = CFG_T_INT,
	 .lo = 1, .hi = 1000000},
	{.name = "max_stop_bytes", .off = offsetof(cfg_agents, max_stop_bytes), .type = CFG_T_INT,
	 .lo = 1, .hi = 1000000},
	/* up to a year: far below any overflow of t_arrive + deadline */
	{.name = "max_deadline_ms", .off = offsetof(cfg_agents, max_deadline_ms),
	 .type = CFG_T_U64, .lo = 1, .hi = 366L * 24 * 3600 * 1000},
	{.name = "max_prio", .off = offsetof(cfg_agents, max_prio), .type = CFG_T_INT,
	 .lo = -1000000, .hi = 1000000},
};

static int parse_agents(cfg *c, json_object *o, char *err, size_t errlen)
{
	cfg_agents *a = &c->agents;
	int rc = want_type(o, json_type_object, "agents", "an object", err, errlen);
	if (rc)
		return rc; /* not an object: json_object_object_foreach would read NULL */
	json_object_object_foreach(o, k, v)
	{
		if (rc)
			return rc;
		char key[96];
		snprintf(key, sizeof(key), "agents.%s", k);
		int handled;
		rc = get_int_key(agents_ints, CFG_N(agents_ints), a, k, v, key, &handled, err, errlen);
		if (handled)
			continue;
		if (strcmp(k, "prio"))
			return herd_errf(err, errlen, HERD_E_FORMAT,
					"unknown key '%s' (known: max_queued, max_running, max_prompt_bytes, "
					"max_stop, max_stop_bytes, max_deadline_ms, max_prio, prio)", key);
		rc = parse_prio_rules(a, v, err, errlen);
	}
	return rc;
}

static int parse_limits(cfg *c, json_object *obj, char *err, size_t errlen)
{
	int rc = want_type(obj, json_type_object, "limits", "an object", err, errlen);
	if (rc)
		return rc;
	json_object_object_foreach(obj, k, v)
	{
		char key[96];
		snprintf(key, sizeof(key), "limits.%.80s", k);
		if ((rc = parse_limit_key(&c->limits, k, v, key, err, errlen)))
			return rc;
	}
	return 0;
}

static const cfg_int_key respcache_ints[] = {
	{.name = "max_mb", .off = offsetof(cfg_respcache, max_mb), .type = CFG_T_INT,
	 .lo = 1, .hi = 1 << 20},
	{.name = "ttl_s", .off = offsetof(cfg_respcache, ttl_s), .type = CFG_T_U64,
	 .lo = 0, .hi = 100L * 366 * 24 * 3600},
};

/* The "response_cache" object. */
static int parse_respcache(cfg *c, json_object *o, char *err, size_t errlen)
{
	int rc = want_type(o, json_type_object, "response_cache", "an object", err, errlen);
	if (rc)
		return rc;
	json_object_object_foreach(o, k, v)
	{
		char key[96];
		snprintf(key, sizeof(key), "response_cache.%.60s", k);
		int handled;
		rc = get_int_key(respcache_ints, CFG_N(respcache_ints), &c->response_cache, k, v, key,
				 &handled, err, errlen);
		if (rc)
			return rc;
		if (handled)
			continue;
		if (strcmp(k, "enabled"))
			return herd_errf(err, errlen, HERD_E_FORMAT,
					 "unknown key '%s' (known: enabled, max_mb, ttl_s)", key);
		if ((rc = want_type(v, json_type_boolean, key, "a boolean", err, errlen)))
			return rc;
		c->response_cache.enabled = json_object_get_boolean(v);
	}
	return 0;
}

static const cfg_int_key pressure_ints[] = {
	{.name = "trigger_us", .off = offsetof(cfg_pressure, trigger_us), .type = CFG_T_U32,
	 .lo = 1, .hi = 10000000},
	{.name = "window_us", .off = offsetof(cfg_pressure, window_us), .type = CFG_T_U32,
	 .lo = 500000, .hi = 10000000},
	{.name = "escalate_ms", .off = offsetof(cfg_pressure, escalate_ms), .type = CFG_T_INT,
	 .lo = 0, .hi = 3600000},
	{.name = "recover_ms", .off = offsetof(cfg_pressure, recover_ms), .type = CFG_T_INT,
	 .lo = 0, .hi = 3600000},
	{.name = "stall_ms_per_s", .off = offsetof(cfg_pressure, stall_ms_per_s), .type = CFG_T_U32,
	 .lo = 0, .hi = 1000},
};

/* The "pressure" object. */
static int parse_pressure(cfg *c, json_object *obj, char *err, size_t errlen)
{
	int rc = want_type(obj, json_type_object, "pressure", "an object", err, errlen), handled;
	if (rc)
		return rc;
	json_object_object_foreach(obj, k, v)
	{
		char key[96];
		snprintf(key, sizeof(key), "pressure.%.80s", k);
		if ((rc = get_int_key(pressure_ints, CFG_N(pressure_ints), &c->pressure, k, v, key,
				      &handled, err, errlen)))
			return rc;
		if (handled)
			continue;
		int *flag = !strcmp(k, "enable") ? &c->pressure.enable
			    : !strcmp(k, "bpf")  ? &c->pressure.bpf
						 : NULL;
		if (!flag)
			return herd_errf(err, errlen, HERD_E_FORMAT,
					 "unknown key '%s' (known: enable, bpf, trigger_us, window_us, "
					 "escalate_ms, recover_ms, stall_ms_per_s)",
					 key);
		if ((rc = want_type(v, json_type_boolean, key, "true or false", err, errlen)))
			return rc;
		*flag = json_object_get_boolean(v);
	}
	if (c->pressure.trigger_us > c->pressure.window_us)
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "pressure.trigger_us %u is above pressure.window_us %u",
				 c->pressure.trigger_us, c->pressure.window_us);
	return 0;
}

/* cpus[0..n) (ascending, each once) become c's cpu_affinity once each is
 * known online. */
static int set_cpus(cfg *c, const int *cpus, int n, const char *key, char *err, size_t errlen)
{
	char msg[256], list[512];
	if (kern_cpus_check_online(cpus, n, msg, sizeof(msg)))
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': %s", key, msg);
	int *v = malloc(sizeof(int) * (size_t)n);
	if (!v)
		return -ENOMEM;
	memcpy(v, cpus, sizeof(int) * (size_t)n);
	kern_cpulist_format(cpus, n, list, sizeof(list));
	int rc = cfg_set_str(&c->cpu_affinity, list);
	if (rc) {
		free(v);
		return rc;
	}
	free(c->cpus);
	c->cpus = v;
	c->n_cpus = n;
	return 0;
}

int cfg_set_cpu_affinity(cfg *c, const char *list, char *err, size_t errlen)
{
	int cpus[KERN_CPU_MAX], n = 0;
	char msg[256];
	if (kern_cpulist_parse(list, cpus, KERN_CPU_MAX, &n, msg, sizeof(msg)))
		return herd_errf(err, errlen, HERD_E_FORMAT, "key 'cpu_affinity': %s", msg);
	return set_cpus(c, cpus, n, "cpu_affinity", err, errlen);
}

/* "cpu_affinity": a cpulist string or an array of CPU numbers. */
static int parse_cpu_affinity(cfg *c, json_object *v, char *err, size_t errlen)
{
	if (json_object_get_type(v) == json_type_string)
		return cfg_set_cpu_affinity(c, json_object_get_string(v), err, errlen);
	int rc = want_type(v, json_type_array, "cpu_affinity", "a CPU list string or an array of ints",
			   err, errlen);
	if (rc)
		return rc;
	unsigned char seen[KERN_CPU_MAX] = {0};
	const size_t n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++) {
		char key[48];
		long x;
		snprintf(key, sizeof(key), "cpu_affinity[%zu]", i);
		if ((rc = get_int(json_object_array_get_idx(v, i), key, 0, KERN_CPU_MAX - 1, &x, err,
				  errlen)))
			return rc;
		seen[x] = 1;
	}
	int cpus[KERN_CPU_MAX], k = 0;
	for (int x = 0; x < KERN_CPU_MAX; x++)
		if (seen[x])
			cpus[k++] = x;
	if (k == 0)
		return herd_errf(err, errlen, HERD_E_FORMAT, "key 'cpu_affinity': the CPU list is empty");
	return set_cpus(c, cpus, k, "cpu_affinity", err, errlen);
}

static const cfg_int_key top_ints[] = {
	{.name = "threads", .off = offsetof(cfg, threads), .type = CFG_T_INT, .lo = 0, .hi = 4096},
	{.name = "max_frame", .off = offsetof(cfg, max_frame), .type = CFG_T_U32,
	 .lo = 4096, .hi = 1L << 30},
	{.name = "ctx_size", .off = offsetof(cfg, ctx_size), .type = CFG_T_INT, .lo = 0, .hi = 1 << 20},
	{.name = "kv_cache_mb", .off = offsetof(cfg, kv_cache_mb), .type = CFG_T_INT,
	 .lo = 0, .hi = 1 << 20},
	{.name = "draft_tokens", .off = offsetof(cfg, draft_tokens), .type = CFG_T_INT,
	 .lo = 0, .hi = 32},
	{.name = "prefill_chunk", .off = offsetof(cfg, prefill_chunk), .type = CFG_T_INT,
	 .lo = 1, .hi = 1 << 16},
	{.name = "max_tokens", .off = offsetof(cfg, max_tokens), .type = CFG_T_INT,
	 .lo = 1, .hi = 1 << 20},
	{.name = "max_memory_mb", .off = offsetof(cfg, max_memory_mb), .type = CFG_T_U64,
	 .lo = 0, .hi = 1L << 30},
	{.name = "catalog_flush_ms", .off = offsetof(cfg, catalog_flush_ms), .type = CFG_T_INT,
	 .lo = 1, .hi = 60000},
	{.name = "max_share_mb", .off = offsetof(cfg, max_share_mb), .type = CFG_T_U64,
	 .lo = 1, .hi = 1L << 30},
	{.name = "max_shared_models", .off = offsetof(cfg, max_shared_models), .type = CFG_T_INT,
	 .lo = 0, .hi = 256},
};

/* The cache manager's non-integer keys: preload_confidence (a number in
 * [0, 1]) and preload (a boolean). Sets *handled when k is one of them. */
static int parse_models_key(cfg *c, const char *k, json_object *v, int *handled, char *err,
			    size_t errlen)
{
	*handled = 1;
	if (!strcmp(k, "preload")) {
		int rc = want_type(v, json_type_boolean, k, "true or false", err, errlen);
		if (!rc)
			c->preload_predict = json_object_get_boolean(v);
		return rc;
	}
	if (strcmp(k, "preload_confidence")) {
		*handled = 0;
		return 0;
	}
	const json_type t = json_object_get_type(v);
	if (t != json_type_double && t != json_type_int)
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': expected a number, got %s", k,
				 json_type_to_name(t));
	const double x = json_object_get_double(v);
	if (!(x >= 0 && x <= 1))
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': %g is out of range [0, 1]", k, x);
	c->preload_confidence = x;
	return 0;
}

/* "kv_type": "f16", "q8_0" or "q4_0". */
static int parse_kv_type(cfg *c, json_object *v, char *err, size_t errlen)
{
	int rc = want_type(v, json_type_string, "kv_type", "a string", err, errlen);
	if (rc)
		return rc;
	const int t = llama_kv_type_parse(json_object_get_string(v));
	if (t < 0)
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "key 'kv_type': '%.40s' is not a KV cache type (f16, q8_0, q4_0)",
				 json_object_get_string(v));
	c->kv_type = t;
	return 0;
}

static int apply_json(cfg *c, json_object *root, char *err, size_t errlen)
{
	if (json_object_get_type(root) != json_type_object)
		return herd_errf(err, errlen, HERD_E_FORMAT, "the configuration must be a JSON object, got %s",
				json_type_to_name(json_object_get_type(root)));
	int rc = 0, handled;
	json_object_object_foreach(root, k, v)
	{
		if ((rc = parse_batch_key(c, k, v, k, &handled, err, errlen)))
			return rc;
		if (!handled && (rc = get_int_key(top_ints, CFG_N(top_ints), c, k, v, k, &handled, err,
						  errlen)))
			return rc;
		if (!handled && (rc = parse_models_key(c, k, v, &handled, err, errlen)))
			return rc;
		if (handled)
			continue;
		if (!strcmp(k, "socket"))
			rc = get_str(v, k, &c->socket_path, err, errlen);
		else if (!strcmp(k, "models"))
			rc = parse_models(c, v, err, errlen);
		else if (!strcmp(k, "state_dir"))
			rc = get_str(v, k, &c->state_dir, err, errlen);
		else if (!strcmp(k, "admin_group"))
			rc = get_str(v, k, &c->admin_group, err, errlen);
		else if (!strcmp(k, "cpu_affinity"))
			rc = parse_cpu_affinity(c, v, err, errlen);
		else if (!strcmp(k, "limits")) {
			rc = parse_limits(c, v, err, errlen);
		} else if (!strcmp(k, "agents")) {
			rc = parse_agents(c, v, err, errlen);
		} else if (!strcmp(k, "prefix_sharing")) {
			rc = parse_prefix_sharing(c, v, err, errlen);
		} else if (!strcmp(k, "prefix_cache")) {
			if (!(rc = want_type(v, json_type_boolean, k, "a boolean", err, errlen)))
				c->prefix_cache = json_object_get_boolean(v);
		} else if (!strcmp(k, "kv_type")) {
			rc = parse_kv_type(c, v, err, errlen);
		} else if (!strcmp(k, "response_cache")) {
			rc = parse_respcache(c, v, err, errlen);
		} else if (!strcmp(k, "pressure")) {
			rc = parse_pressure(c, v, err, errlen);
		} else if (!strcmp(k, "http")) {
			rc = cfg_parse_http(&c->http, v, err, errlen);
		} else if (!strcmp(k, "batch")) {
			if ((rc = want_type(v, json_type_object, k, "an object", err, errlen)))
				return rc;
			json_object_object_foreach(v, bk, bv)
			{
				char key[96];
				snprintf(key, sizeof(key), "batch.%s", bk);
				if ((rc = parse_batch_key(c, bk, bv, key, &handled, err, errlen)))
					return rc;
				if (!handled)
					return herd_errf(err, errlen, HERD_E_FORMAT,
							"unknown key '%s' (known: max_batch_size, max_wait_time_ms, "
							"dynamic_batching, priority_threshold, target_tpot_ms, "
							"max_decode_delay_ms)",
							key);
			}
		} else
			return herd_errf(err, errlen, HERD_E_FORMAT,
					"unknown key '%s' (known: socket, models, threads, cpu_affinity, state_dir, max_frame, "
					"admin_group, batch, max_batch_size, max_wait_time_ms, dynamic_batching, "
					"priority_threshold, target_tpot_ms, max_decode_delay_ms, ctx_size, kv_cache_mb, prefill_chunk, max_tokens, "
					"max_memory_mb, preload_confidence, preload, catalog_flush_ms, max_share_mb, max_shared_models, limits, agents, "
					"prefix_cache, prefix_sharing, response_cache, pressure, kv_type, draft_tokens, http)",
					k);
		if (rc)
			return rc;
	}
	return 0;
}

int cfg_parse_json(cfg *c, const char *text, char *err, size_t errlen)
{
	json_tokener *tk = json_tokener_new();
	if (!tk)
		return -ENOMEM;
	const size_t len = strlen(text);
	json_object *root = json_tokener_parse_ex(tk, text, (int)len);
	enum json_tokener_error je = json_tokener_get_error(tk);
	size_t end = json_tokener_get_parse_end(tk);
	json_tokener_free(tk);
	int rc;
	if (!root || je != json_tokener_success) {
		json_object_put(root);
		if (je == json_tokener_continue)
			return herd_errf(err, errlen, HERD_E_FORMAT, "not valid JSON: unexpected end of file");
		return herd_errf(err, errlen, HERD_E_FORMAT, "not valid JSON at offset %zu: %s", end,
				json_tokener_error_desc(je));
	}
	while (end < len && (text[end] == ' ' || text[end] == '\n' || text[end] == '\r' ||
			     text[end] == '\t'))
		end++;
	if (end < len) {
		json_object_put(root);
		return herd_errf(err, errlen, HERD_E_FORMAT, "not valid JSON: extra text at offset %zu",
				end);
	}
	rc = apply_json(c, root, err, errlen);
	json_object_put(root);
	return rc;
}

int cfg_load_file(cfg *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return herd_errf(err, errlen, -errno, "%s: %s", path, strerror(errno));
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		size_t got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
		if (len > (16u << 20)) {
			rc = herd_errf(err, errlen, HERD_E_FORMAT, "%s: larger than 16 MiB", path);
			goto out;
		}
	}
	if (ferror(f)) {
		rc = herd_errf(err, errlen, -EIO, "%s: read error", path);
		goto out;
	}
	buf[len] = 0;
	char sub[512] = "";
	rc = cfg_parse_json(c, buf, sub, sizeof(sub));
	if (rc)
		herd_errf(err, errlen, rc, "%s: %s", path, sub);
out:
	free(buf);
	fclose(f);
	return rc;
}

int cfg_default_socket(char *buf, size_t n, const cfg_env *env)
{
	const char *xdg = env ? env->runtime_dir : NULL;
	int w = xdg && *xdg ? snprintf(buf, n, "%s/herd/herd.sock", xdg)
			    : snprintf(buf, n, "/run/herd/herd.sock");
	return w < 0 || (size_t)w >= n ? HERD_E_RANGE : 0;
}

int cfg_default_state_dir(char *buf, size_t n, const cfg_env *env)
{
	const char *xdg = env ? env->state_home : NULL, *home = env ? env->home : NULL;
	int w;
	if (xdg && *xdg)
		w = snprintf(buf, n, "%s/herd", xdg);
	else if (geteuid() != 0 && home && *home)
		w = snprintf(buf, n, "%s/.local/state/herd", home);
	else
		w = snprintf(buf, n, "/var/lib/herd");
	return w < 0 || (size_t)w >= n ? HERD_E_RANGE : 0;
}

int cfg_finish(cfg *c, const cfg_env *env, char *err, size_t errlen)
{
	char buf[CFG_PATH_MAX];
	int rc;
	if (!c->socket_path) {
		if ((rc = cfg_default_socket(buf, sizeof(buf), env)))
			return herd_errf(err, errlen, HERD_E_INVAL, "default socket path too long");
		if ((rc = cfg_set_str(&c->socket_path, buf)))
			return rc;
	}
	if (!c->state_dir) {
		if ((rc = cfg_default_state_dir(buf, sizeof(buf), env)))
			return herd_errf(err, errlen, HERD_E_INVAL, "default state directory too long");
		if ((rc = cfg_set_str(&c->state_dir, buf)))
			return rc;
	}
	if (c->n_models == 0)
		return herd_errf(err, errlen, HERD_E_INVAL,
				"no model configured (use --model NAME=FILE or \"models\" in the config file)");
	if (c->max_batch_size < 1 || c->max_batch_size > 256)
		return herd_errf(err, errlen, HERD_E_INVAL, "max_batch_size %d out of range [1, 256]",
				c->max_batch_size);
	if (c->max_frame < 4096)
		return herd_errf(err, errlen, HERD_E_INVAL, "max_frame %u is below 4096", c->max_frame);
	if (c->limits.send_queue_pause_bytes > c->limits.send_queue_bytes)
		return herd_errf(err, errlen, HERD_E_INVAL,
				 "limits.send_queue_pause_bytes %u is above limits.send_queue_bytes %u",
				 c->limits.send_queue_pause_bytes, c->limits.send_queue_bytes);
	return cfg_http_check(&c->http, err, errlen);
}
