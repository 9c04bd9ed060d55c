/* Wire protocol codec: bounds-checking pre-scan, strict decoding of every
 * frame type, encoders, stream framing. See proto.h and docs/protocol.md. */
#include "proto/proto.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "herd/error.h"

static const char *const type_names[PROTO_TYPE_COUNT] = {
	[PROTO_NONE] = "?",         [PROTO_HELLO] = "hello",   [PROTO_WELCOME] = "welcome",
	[PROTO_GEN] = "gen",        [PROTO_TOK] = "tok",       [PROTO_DONE] = "done",
	[PROTO_ERR] = "err",        [PROTO_CANCEL] = "cancel", [PROTO_ATTACH] = "attach",
	[PROTO_IMAGE] = "image",    [PROTO_ADMIN] = "admin",   [PROTO_ADMIN_OK] = "admin_ok",
	[PROTO_SHARE] = "share",    [PROTO_SHARED] = "shared",
};

/* herd_finish <-> `done.reason`: the one table. NONE has a name for
 * messages but never travels. */
static const char *const finish_names[] = {
	[HERD_FINISH_NONE] = "none",
	[HERD_FINISH_STOP] = "stop",
	[HERD_FINISH_LENGTH] = "length",
	[HERD_FINISH_CANCEL] = "cancel",
	[HERD_FINISH_DEADLINE] = "deadline",
};
_Static_assert(sizeof(finish_names) / sizeof(finish_names[0]) == HERD_FINISH_COUNT,
	       "one wire name per herd_finish value");

/* 1 for the values a `done` frame may carry. */
static int finish_on_wire(herd_finish f)
{
	return f > HERD_FINISH_NONE && f < HERD_FINISH_COUNT;
}

const char *proto_type_name(proto_type t)
{
	if ((int)t <= PROTO_NONE || t >= PROTO_TYPE_COUNT)
		return "?";
	return type_names[t];
}

const char *proto_finish_name(herd_finish f)
{
	return finish_on_wire(f) ? finish_names[f] : finish_names[HERD_FINISH_NONE];
}

int proto_str_eq(proto_str s, const char *c)
{
	size_t n = strlen(c);
	return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* ---- pre-scan ---------------------------------------------------------- */

static uint64_t be_read(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* What a msgpack header byte announces. */
typedef struct scan_head {
	uint64_t n;   /* container count or payload length */
	int kind;     /* 0 scalar payload, 1 array, 2 map */
	int hdr;      /* big-endian length bytes that follow the header byte */
	size_t extra; /* ext type byte */
} scan_head;

enum { SCAN_SCALAR = 0, SCAN_ARRAY = 1, SCAN_MAP = 2 };

/* Classifies header byte b (not a fixint/nil/bool, which the caller
 * handled). Returns 0 or -1 with a reason in *why. */
static int scan_classify(uint8_t b, scan_head *h, const char **why)
{
	*h = (scan_head){0};
	if (b >= 0x80 && b <= 0x8f) {
		h->kind = SCAN_MAP;
		h->n = b & 0x0f;
		return 0;
	}
	if (b >= 0x90 && b <= 0x9f) {
		h->kind = SCAN_ARRAY;
		h->n = b & 0x0f;
		return 0;
	}
	if (b >= 0xa0 && b <= 0xbf) {
		h->n = b & 0x1f;
		return 0;
	}
	switch (b) {
	case 0xc4: case 0xd9: h->hdr = 1; break;               /* bin8, str8 */
	case 0xc5: case 0xda: h->hdr = 2; break;               /* bin16, str16 */
	case 0xc6: case 0xdb: h->hdr = 4; break;               /* bin32, str32 */
	case 0xc7: h->hdr = 1; h->extra = 1; break;            /* ext8 */
	case 0xc8: h->hdr = 2; h->extra = 1; break;            /* ext16 */
	case 0xc9: h->hdr = 4; h->extra = 1; break;            /* ext32 */
	case 0xca: h->n = 4; break;                            /* float32 */
	case 0xcb: h->n = 8; break;                            /* float64 */
	case 0xcc: case 0xd0: h->n = 1; break;
	case 0xcd: case 0xd1: h->n = 2; break;
	case 0xce: case 0xd2: h->n = 4; break;
	case 0xcf: case 0xd3: h->n = 8; break;
	case 0xd4: h->n = 2; break;                            /* fixext1..16 */
	case 0xd5: h->n = 3; break;
	case 0xd6: h->n = 5; break;
	case 0xd7: h->n = 9; break;
	case 0xd8: h->n = 17; break;
	case 0xdc: h->kind = SCAN_ARRAY; h->hdr = 2; break;
	case 0xdd: h->kind = SCAN_ARRAY; h->hdr = 4; break;
	case 0xde: h->kind = SCAN_MAP; h->hdr = 2; break;
	case 0xdf: h->kind = SCAN_MAP; h->hdr = 4; break;
	default: /* 0xc1 */
		*why = "invalid msgpack byte 0xc1";
		return -1;
	}
	return 0;
}

/* Checks one msgpack value at p[*off..len) without allocating: every length
 * and container count must fit in the bytes left (each element takes at
 * least one byte), depth <= PROTO_MAX_DEPTH. Advances *off past the value.
 * Returns 0 or -1 with a reason in *why. */
static int scan_value(const uint8_t *p, size_t len, size_t *off, int depth, const char **why)
{
	scan_head h;
	if (depth > PROTO_MAX_DEPTH) {
		*why = "nested too deeply";
		return -1;
	}
	if (*off >= len) {
		*why = "truncated msgpack";
		return -1;
	}
	uint8_t b = p[(*off)++];
	size_t left = len - *off;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return 0;
	if (scan_classify(b, &h, why))
		return -1;
	if (h.hdr) {
		if (left < (size_t)h.hdr) {
			*why = "truncated msgpack";
			return -1;
		}
		h.n = be_read(p + *off, h.hdr);
		*off += (size_t)h.hdr;
		left -= (size_t)h.hdr;
	}
	if (h.kind == SCAN_SCALAR) {
		uint64_t need = h.n + h.extra;
		if (need > left) {
			*why = "truncated msgpack";
			return -1;
		}
		*off += (size_t)need;
		return 0;
	}
	uint64_t items = h.kind == SCAN_MAP ? 2 * h.n : h.n;
	if (items > left) {
		*why = "container count exceeds the frame";
		return -1;
	}
	for (uint64_t i = 0; i < items; i++)
		if (scan_value(p, len, off, depth + 1, why))
			return -1;
	return 0;
}

/* ---- decoding helpers --------------------------------------------------- */

/* The frame's top-level map indexed once by key: one pass over its keys,
 * each hashed into a fixed table of the key names the decoder knows, so
 * every later lookup is O(1) and decoding a frame is linear in its size
 * (a map of 100k keys is not scanned once per known key). Keys the table
 * does not know are ignored, as before; a lookup of a name missing from
 * the table falls back to a scan (correct, only slower). */
#define KEY_SLOTS 128 /* > 2x the known names: probes stay short */
typedef struct key_index {
	const msgpack_object_map *map;
	const char *name[KEY_SLOTS]; /* known name in this slot, or NULL */
	int64_t at[KEY_SLOTS];       /* its position in map, -1: absent */
	uint8_t twice[KEY_SLOTS];
} key_index;

static const char *const known_keys[] = {
	"t", "v", "id", "name", "prio", "agent", "models", "max_frame", "max_tokens", "n_vocab",
	"n_ctx", "image_bytes", "digest", "segment", "model", "prompt", "tokens", "messages",
	"role", "content", "temp", "top_k", "top_p", "min_p", "rep_pen", "seed", "stop",
	"deadline_ms", "stream", "cache", "text", "tok", "reason", "n_prompt", "n_gen", "n_cached",
	"t_queue_ms", "t_first_ms", "t_total_ms", "merged", "cached", "code", "msg", "size", "cmd",
	"args", "result", "targets",
};
_Static_assert(sizeof(known_keys) / sizeof(known_keys[0]) * 2 < KEY_SLOTS,
	       "the key table stays at most half full");

typedef struct dec {
	const msgpack_object_map *map;
	const char *type; /* frame type for messages */
	char *err;
	size_t errlen;
	key_index *ix;    /* NULL until built */
	size_t n_cmp;     /* key comparisons made (proto_msg.n_key_cmp) */
} dec;

static uint32_t key_hash(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

/* The slot of name p[0..n) in the table: its own, or the empty one where
 * it would go (ix->name[slot] == NULL). At most KEY_SLOTS probes. */
static int key_slot(dec *d, const key_index *ix, const char *p, size_t n)
{
	uint32_t s = key_hash(p, n) & (KEY_SLOTS - 1);
	for (int i = 0; i < KEY_SLOTS && ix->name[s]; i++, s = (s + 1) & (KEY_SLOTS - 1)) {
		d->n_cmp++;
		if (strlen(ix->name[s]) == n && !memcmp(ix->name[s], p, n))
			break;
	}
	return (int)s;
}

/* Builds d->ix over m (string keys only, checked before). */
static void key_index_build(dec *d, key_index *ix, const msgpack_object_map *m)
{
	memset(ix, 0, sizeof(*ix));
	ix->map = m;
	for (size_t k = 0; k < sizeof(known_keys) / sizeof(known_keys[0]); k++) {
		const int s = key_slot(d, ix, known_keys[k], strlen(known_keys[k]));
		ix->name[s] = known_keys[k];
		ix->at[s] = -1;
	}
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object_str *k = &m->ptr[i].key.via.str;
		const int s = key_slot(d, ix, k->ptr, k->size);
		if (!ix->name[s])
			continue; /* a key nobody asks for */
		if (ix->at[s] >= 0)
			ix->twice[s] = 1;
		else
			ix->at[s] = i;
	}
	d->ix = ix;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(dec *d, const char *fmt, ...)
{
	if (d->err && d->errlen) {
		int k = snprintf(d->err, d->errlen, "%s: ", d->type);
		if (k >= 0 && (size_t)k < d->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(d->err + k, d->errlen - (size_t)k, fmt, ap);
			va_end(ap);
		}
	}
	return HERD_E_PROTO;
}

static int key_is(const msgpack_object *k, const char *s)
{
	size_t n = strlen(s);
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, s, n) == 0;
}

/* Finds key in m, nil included: *out NULL when absent. Returns 0, or 1
 * when the key appears twice. O(1) on the indexed top-level map. */
static int lookup(dec *d, const msgpack_object_map *m, const char *key, const msgpack_object **out)
{
	const msgpack_object *hit = NULL;
	*out = NULL;
	if (d->ix && d->ix->map == m) {
		const int s = key_slot(d, d->ix, key, strlen(key));
		if (d->ix->name[s]) {
			if (d->ix->twice[s])
				return 1;
			*out = d->ix->at[s] >= 0 ? &m->ptr[d->ix->at[s]].val : NULL;
			return 0;
		}
	}
	for (uint32_t i = 0; i < m->size; i++) {
		d->n_cmp++;
		if (!key_is(&m->ptr[i].key, key))
			continue;
		if (hit)
			return 1;
		hit = &m->ptr[i].val;
	}
	*out = hit;
	return 0;
}

/* Finds key in the map: *out is NULL when absent or nil. A key present twice
 * is an error. */
static int find(dec *d, const msgpack_object_map *m, const char *key, const msgpack_object **out)
{
	const msgpack_object *hit;
	*out = NULL;
	if (lookup(d, m, key, &hit))
		return fail(d, "key '%s' appears twice", key);
	*out = hit && hit->type != MSGPACK_OBJECT_NIL ? hit : NULL;
	return 0;
}

static int absent(dec *d, const char *key, int required)
{
	return required ? fail(d, "missing required key '%s'", key) : 0;
}

static const char *obj_kind(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "bool";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "float";
	case MSGPACK_OBJECT_STR: return "str";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	case MSGPACK_OBJECT_BIN: return "bin";
	case MSGPACK_OBJECT_EXT: return "ext";
	}
	return "?";
}

static int get_str(dec *d, const msgpack_object_map *m, const char *key, int required,
		   proto_str *out)
{
	const msgpack_object *o;
	int rc = find(d, m, key, &o);
	if (rc)
		return rc;
	if (!o)
		return absent(d, key, required);
	if (o->type != MSGPACK_OBJECT_STR)
		return fail(d, "key '%s' must be a str, got %s", key, obj_kind(o));
	out->ptr = o->via.str.ptr;
	out->len = o->via.str.size;
	return 0;
}

/* Integer in [lo, hi]. */
static int int_of(dec *d, const msgpack_object *o, const char *what, int64_t lo, uint64_t hi,
		  int64_t *is, uint64_t *us)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > hi)
			return fail(d, "%s out of range (%llu > %llu)", what,
				    (unsigned long long)o->via.u64, (unsigned long long)hi);
		if (lo > 0 && o->via.u64 < (uint64_t)lo)
			return fail(d, "%s out of range (%llu < %lld)", what,
				    (unsigned long long)o->via.u64, (long long)lo);
		*us = o->via.u64;
		*is = (int64_t)o->via.u64; /* only used when hi <= INT64_MAX */
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		if (o->via.i64 < lo)
			return fail(d, "%s must be %s, got %lld", what,
				    lo == 0 ? "non-negative" : "larger", (long long)o->via.i64);
		*is = o->via.i64;
		*us = 0;
		return 0;
	}
	return fail(d, "%s must be an int, got %s", what, obj_kind(o));
}

static int get_uint(dec *d, const msgpack_object_map *m, const char *key, int required,
		    uint64_t hi, uint64_t *out)
{
	const msgpack_object *o;
	int64_t is;
	char what[64];
	int rc = find(d, m, key, &o);
	if (rc)
		return rc;
	if (!o)
		return absent(d, key, required);
	snprintf(what, sizeof(what), "key '%s'", key);
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return fail(d, "key '%s' must be a non-negative int, got %lld", key,
			    (long long)o->via.i64);
	return int_of(d, o, what, 0, hi, &is, out);
}

static int get_u32(dec *d, const msgpack_object_map *m, const char *key, int required,
		   uint32_t *out)
{
	uint64_t v = *out;
	int rc = get_uint(d, m, key, required, UINT32_MAX, &v);
	if (!rc)
		*out = (uint32_t)v;
	return rc;
}

static int get_i32(dec *d, const msgpack_object_map *m, const char *key, int required,
		   int32_t lo, int32_t *out, int *present)
{
	const msgpack_object *o;
	int64_t is;
	uint64_t us;
	char what[64];
	int rc = find(d, m, key, &o);
	if (rc)
		return rc;
	if (present)
		*present = o != NULL;
	if (!o)
		return absent(d, key, required);
	snprintf(what, sizeof(what), "key '%s'", key);
	if ((rc = int_of(d, o, what, lo, INT32_MAX, &is, &us)))
		return rc;
	*out = (int32_t)is;
	return 0;
}

/* A number: float, or an int (converted). */
static int get_num(dec *d, const msgpack_object_map *m, const char *key, double *out)
{
	const msgpack_object *o;
	int rc = find(d, m, key, &o);
	if (rc || !o)
		return rc;
	switch (o->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
	default: return fail(d, "key '%s' must be a number, got %s", key, obj_kind(o));
	}
}

static int get_bool(dec *d, const msgpack_object_map *m, const char *key, int *out)
{
	const msgpack_object *o;
	int rc = find(d, m, key, &o);
	if (rc || !o)
		return rc;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return fail(d, "key '%s' must be a bool, got %s", key, obj_kind(o));
	*out = o->via.boolean ? 1 : 0;
	return 0;
}

static int get_arr(dec *d, const msgpack_object_map *m, const char *key, int required,
		   size_t max, const msgpack_object_array **out)
{
	const msgpack_object *o;
	int rc = find(d, m, key, &o);
	*out = NULL;
	if (rc)
		return rc;
	if (!o)
		return absent(d, key, required);
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return fail(d, "key '%s' must be an array, got %s", key, obj_kind(o));
	if (o->via.array.size > max)
		return fail(d, "key '%s' has %u elements (limit %zu)", key, o->via.array.size, max);
	*out = &o->via.array;
	return 0;
}

/* An array of str, copied into a new proto_str array (*out NULL when n == 0). */
static int str_array(dec *d, const msgpack_object_array *a, const char *key, proto_str **out)
{
	*out = NULL;
	if (!a || !a->size)
		return 0;
	proto_str *s = calloc(a->size, sizeof(*s));
	if (!s)
		return -ENOMEM;
	for (uint32_t i = 0; i < a->size; i++) {
		if (a->ptr[i].type != MSGPACK_OBJECT_STR) {
			free(s);
			return fail(d, "key '%s' element %u must be a str, got %s", key, i,
				    obj_kind(&a->ptr[i]));
		}
		s[i].ptr = a->ptr[i].via.str.ptr;
		s[i].len = a->ptr[i].via.str.size;
	}
	*out = s;
	return 0;
}

/* ---- per-type decoders --------------------------------------------------- */

static int dec_hello(dec *d, const msgpack_object_map *m, proto_hello *h)
{
	int rc;
	if ((rc = get_u32(d, m, "v", 1, &h->v)) || (rc = get_str(d, m, "name", 0, &h->name)) ||
	    (rc = get_i32(d, m, "prio", 0, INT32_MIN, &h->prio, NULL)))
		return rc;
	return 0;
}

static int dec_model(dec *d, const msgpack_object *o, uint32_t i, proto_model_info *mi)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return fail(d, "key 'models' element %u must be a map, got %s", i, obj_kind(o));
	const msgpack_object_map *m = &o->via.map;
	uint64_t v;
	int rc;
	if ((rc = get_str(d, m, "name", 1, &mi->name)) ||
	    (rc = get_str(d, m, "digest", 0, &mi->digest)) ||
	    (rc = get_str(d, m, "segment", 0, &mi->segment)) ||
	    (rc = get_u32(d, m, "n_vocab", 0, &mi->n_vocab)) ||
	    (rc = get_u32(d, m, "n_ctx", 0, &mi->n_ctx)))
		return rc;
	v = 0;
	if ((rc = get_uint(d, m, "image_bytes", 0, UINT64_MAX, &v)))
		return rc;
	mi->image_bytes = v;
	return 0;
}

static int dec_welcome(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	proto_welcome *w = &msg->welcome;
	const msgpack_object_array *a;
	int rc;
	if ((rc = get_u32(d, m, "v", 1, &w->v)) ||
	    (rc = get_uint(d, m, "agent", 1, UINT64_MAX, &w->agent)) ||
	    (rc = get_u32(d, m, "max_frame", 1, &w->max_frame)) ||
	    (rc = get_u32(d, m, "max_tokens", 1, &w->max_tokens)) ||
	    (rc = get_arr(d, m, "models", 1, PROTO_MAX_MODELS, &a)))
		return rc;
	if (a->size) {
		proto_model_info *mi = calloc(a->size, sizeof(*mi));
		if (!mi)
			return -ENOMEM;
		msg->own_a = mi;
		for (uint32_t i = 0; i < a->size; i++) {
			d->type = "welcome: models";
			if ((rc = dec_model(d, &a->ptr[i], i, &mi[i])))
				return rc;
		}
		d->type = "welcome";
		w->models = mi;
		w->n_models = a->size;
	}
	return 0;
}

/* gen `tokens`: ids in [0, INT32_MAX], into an array msg owns. */
static int dec_gen_tokens(dec *d, const msgpack_object_array *toks, proto_msg *msg)
{
	gen_request *g = &msg->gen;
	g->input = GEN_INPUT_TOKENS;
	if (!toks->size)
		return 0;
	int32_t *t = malloc(sizeof(*t) * toks->size);
	if (!t)
		return -ENOMEM;
	msg->own_a = t;
	for (uint32_t i = 0; i < toks->size; i++) {
		const msgpack_object *o = &toks->ptr[i];
		if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT32_MAX)
			t[i] = (int32_t)o->via.u64;
		else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
			 o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			return fail(d, "key 'tokens' element %u is not a token id (out of range)", i);
		else
			return fail(d, "key 'tokens' element %u must be an int, got %s", i, obj_kind(o));
	}
	g->tokens = t;
	g->n_tokens = toks->size;
	return 0;
}

/* gen `messages`: at least one {role, content} map, into an array msg owns. */
static int dec_gen_messages(dec *d, const msgpack_object_array *msgs, proto_msg *msg)
{
	gen_request *g = &msg->gen;
	int rc;
	g->input = GEN_INPUT_MESSAGES;
	if (!msgs->size)
		return fail(d, "key 'messages' must not be empty");
	gen_msg *cm = calloc(msgs->size, sizeof(*cm));
	if (!cm)
		return -ENOMEM;
	msg->own_a = cm;
	for (uint32_t i = 0; i < msgs->size; i++) {
		const msgpack_object *o = &msgs->ptr[i];
		if (o->type != MSGPACK_OBJECT_MAP)
			return fail(d, "key 'messages' element %u must be a map, got %s", i,
				    obj_kind(o));
		d->type = "gen: messages";
		if ((rc = get_str(d, &o->via.map, "role", 1, &cm[i].role)) ||
		    (rc = get_str(d, &o->via.map, "content", 1, &cm[i].content)))
			return rc;
		d->type = "gen";
	}
	g->messages = cm;
	g->n_messages = msgs->size;
	return 0;
}

/* Exactly one of `prompt`, `tokens`, `messages`. */
static int dec_gen_input(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	const msgpack_object_array *toks, *msgs;
	const msgpack_object *prompt;
	int rc;
	if ((rc = find(d, m, "prompt", &prompt)) ||
	    (rc = get_arr(d, m, "tokens", 0, PROTO_MAX_TOKENS, &toks)) ||
	    (rc = get_arr(d, m, "messages", 0, PROTO_MAX_MESSAGES, &msgs)))
		return rc;
	const int n_inputs = (prompt != NULL) + (toks != NULL) + (msgs != NULL);
	if (n_inputs == 0)
		return fail(d, "one of keys 'prompt', 'tokens', 'messages' is required");
	if (n_inputs > 1)
		return fail(d, "only one of keys 'prompt', 'tokens', 'messages' is allowed, got %d",
			    n_inputs);
	if (toks)
		return dec_gen_tokens(d, toks, msg);
	if (msgs)
		return dec_gen_messages(d, msgs, msg);
	msg->gen.input = GEN_INPUT_PROMPT;
	return get_str(d, m, "prompt", 1, &msg->gen.prompt);
}

/* A float field of the request from a number key (absent: unchanged). */
static int get_float(dec *d, const msgpack_object_map *m, const char *key, float *out)
{
	double v = *out;
	int rc = get_num(d, m, key, &v);
	if (!rc)
		*out = (float)v;
	return rc;
}

/* The generation parameters and the transport keys. */
static int dec_gen_params(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	gen_request *g = &msg->gen;
	sampler_params *sp = &g->params.sampling;
	const msgpack_object_array *stop;
	proto_str *s;
	int rc;
	if ((rc = get_i32(d, m, "max_tokens", 0, 0, &g->params.max_tokens, NULL)) ||
	    (rc = get_i32(d, m, "top_k", 0, INT32_MIN, &sp->top_k, NULL)) ||
	    (rc = get_uint(d, m, "seed", 0, UINT64_MAX, &sp->seed)) ||
	    (rc = get_i32(d, m, "prio", 0, INT32_MIN, &g->prio, &g->has_prio)) ||
	    (rc = get_uint(d, m, "deadline_ms", 0, UINT64_MAX, &g->params.deadline_ms)) ||
	    (rc = get_bool(d, m, "stream", &g->stream)) || (rc = get_bool(d, m, "cache", &g->cache)) ||
	    (rc = get_float(d, m, "temp", &sp->temperature)) ||
	    (rc = get_float(d, m, "top_p", &sp->top_p)) ||
	    (rc = get_float(d, m, "min_p", &sp->min_p)) ||
	    (rc = get_float(d, m, "rep_pen", &sp->repeat_penalty)))
		return rc;
	if ((rc = get_arr(d, m, "stop", 0, PROTO_MAX_STOP, &stop)) ||
	    (rc = str_array(d, stop, "stop", &s)))
		return rc;
	msg->own_b = s;
	g->params.stop = s;
	g->params.n_stop = stop ? stop->size : 0;
	return 0;
}

static int dec_gen(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	gen_request *g = &msg->gen;
	int rc;
	gen_request_init(g);
	if ((rc = get_uint(d, m, "id", 1, UINT64_MAX, &g->id)) ||
	    (rc = get_str(d, m, "model", 1, &g->model)) || (rc = dec_gen_input(d, m, msg)))
		return rc;
	return dec_gen_params(d, m, msg);
}

static int dec_tok(dec *d, const msgpack_object_map *m, proto_tok *t)
{
	int rc;
	if ((rc = get_uint(d, m, "id", 1, UINT64_MAX, &t->id)) ||
	    (rc = get_str(d, m, "text", 1, &t->text)) ||
	    (rc = get_i32(d, m, "tok", 1, 0, &t->tok, NULL)))
		return rc;
	return 0;
}

static int dec_done(dec *d, const msgpack_object_map *m, proto_done *o)
{
	proto_str reason = {0};
	const msgpack_object *text;
	int rc;
	if ((rc = get_uint(d, m, "id", 1, UINT64_MAX, &o->id)) ||
	    (rc = get_str(d, m, "reason", 1, &reason)) ||
	    (rc = get_u32(d, m, "n_prompt", 1, &o->n_prompt)) ||
	    (rc = get_u32(d, m, "n_gen", 1, &o->n_gen)) ||
	    (rc = get_u32(d, m, "n_cached", 0, &o->n_cached)) ||
	    (rc = get_num(d, m, "t_queue_ms", &o->t_queue_ms)) ||
	    (rc = get_num(d, m, "t_first_ms", &o->t_first_ms)) ||
	    (rc = get_num(d, m, "t_total_ms", &o->t_total_ms)) ||
	    (rc = get_bool(d, m, "merged", &o->merged)) || (rc = get_bool(d, m, "cached", &o->cached)) ||
	    (rc = find(d, m, "text", &text)))
		return rc;
	o->reason = HERD_FINISH_NONE;
	for (int r = HERD_FINISH_NONE + 1; r < HERD_FINISH_COUNT; r++)
		if (proto_str_eq(reason, finish_names[r]))
			o->reason = (herd_finish)r;
	if (o->reason == HERD_FINISH_NONE)
		return fail(d, "key 'reason' has unknown value '%.*s'", (int)(reason.len > 32 ? 32 : reason.len),
			    reason.ptr ? reason.ptr : "");
	if (text) {
		if ((rc = get_str(d, m, "text", 1, &o->text)))
			return rc;
		o->has_text = 1;
	}
	return 0;
}

static int dec_err(dec *d, const msgpack_object_map *m, proto_err *e)
{
	const msgpack_object *id;
	int rc;
	if ((rc = find(d, m, "id", &id)) ||
	    (rc = get_i32(d, m, "code", 1, INT32_MIN, &e->code, NULL)) ||
	    (rc = get_str(d, m, "msg", 1, &e->msg)))
		return rc;
	if (id) {
		if ((rc = get_uint(d, m, "id", 1, UINT64_MAX, &e->id)))
			return rc;
		e->has_id = 1;
	}
	return 0;
}

/* An optional array of str under key (at most max) into *out / *n; the
 * array is owned by msg. */
static int str_list(dec *d, const msgpack_object_map *m, const char *key, uint32_t max,
		    proto_msg *msg, const proto_str **out, size_t *n)
{
	const msgpack_object_array *a;
	proto_str *s;
	int rc;
	if ((rc = get_arr(d, m, key, 0, max, &a)) || (rc = str_array(d, a, key, &s)))
		return rc;
	msg->own_a = s;
	*out = s;
	*n = a ? a->size : 0;
	return 0;
}

static int dec_admin(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	int rc = get_str(d, m, "cmd", 1, &msg->admin.cmd);
	return rc ? rc : str_list(d, m, "args", PROTO_MAX_ARGS, msg, &msg->admin.args, &msg->admin.n_args);
}

static int dec_share(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	int rc = get_str(d, m, "name", 1, &msg->share.name);
	return rc ? rc : str_list(d, m, "targets", PROTO_MAX_TARGETS, msg, &msg->share.targets,
				  &msg->share.n_targets);
}

/* Adds the value slots (array elements) and map pairs that o's children
 * take; the root's own slot is not counted. */
static void tree_count(const msgpack_object *o, size_t *n_vals, size_t *n_pairs)
{
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		*n_vals += o->via.array.size;
		for (uint32_t i = 0; i < o->via.array.size; i++)
			tree_count(&o->via.array.ptr[i], n_vals, n_pairs);
	} else if (o->type == MSGPACK_OBJECT_MAP) {
		*n_pairs += o->via.map.size; /* a pair holds its key and value */
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			tree_count(&o->via.map.ptr[i].key, n_vals, n_pairs);
			tree_count(&o->via.map.ptr[i].val, n_vals, n_pairs);
		}
	}
}

/* Bump allocators over the one block a result tree lives in. */
typedef struct tree_mem {
	proto_value *vals;
	proto_pair *pairs;
} tree_mem;

/* Converts o into *v; children come from mem. Strings point into the body
 * (msgpack_unpack_next references the buffer it was given). */
static void tree_fill(const msgpack_object *o, proto_value *v, tree_mem *mem)
{
	memset(v, 0, sizeof(*v));
	switch (o->type) {
	case MSGPACK_OBJECT_BOOLEAN: v->type = PROTO_V_BOOL; v->b = o->via.boolean ? 1 : 0; break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: v->type = PROTO_V_UINT; v->u = o->via.u64; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: v->type = PROTO_V_INT; v->i = o->via.i64; break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: v->type = PROTO_V_FLOAT; v->f = o->via.f64; break;
	case MSGPACK_OBJECT_STR:
		v->type = PROTO_V_STR;
		v->s = (proto_str){o->via.str.ptr, o->via.str.size};
		break;
	case MSGPACK_OBJECT_BIN:
		v->type = PROTO_V_STR;
		v->s = (proto_str){o->via.bin.ptr, o->via.bin.size};
		break;
	case MSGPACK_OBJECT_ARRAY: {
		proto_value *items = mem->vals;
		mem->vals += o->via.array.size;
		for (uint32_t i = 0; i < o->via.array.size; i++)
			tree_fill(&o->via.array.ptr[i], &items[i], mem);
		v->type = PROTO_V_ARRAY;
		v->arr.v = items;
		v->arr.n = o->via.array.size;
		break;
	}
	case MSGPACK_OBJECT_MAP: {
		proto_pair *kv = mem->pairs;
		mem->pairs += o->via.map.size;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			tree_fill(&o->via.map.ptr[i].key, &kv[i].key, mem);
			tree_fill(&o->via.map.ptr[i].val, &kv[i].val, mem);
		}
		v->type = PROTO_V_MAP;
		v->map.kv = kv;
		v->map.n = o->via.map.size;
		break;
	}
	default: v->type = PROTO_V_NIL; break; /* nil, ext */
	}
}

/* A proto_value tree of o in one heap block (the root first). The pre-scan
 * bounded every count by the frame's bytes, so the block is too. */
static int tree_of(const msgpack_object *o, proto_value **out)
{
	size_t n_vals = 1, n_pairs = 0; /* the root's slot */
	tree_count(o, &n_vals, &n_pairs);
	char *blk = malloc(sizeof(proto_value) * n_vals + sizeof(proto_pair) * n_pairs);
	if (!blk)
		return -ENOMEM;
	tree_mem mem = {.vals = (proto_value *)blk + 1,
			.pairs = (proto_pair *)(blk + sizeof(proto_value) * n_vals)};
	tree_fill(o, (proto_value *)blk, &mem);
	*out = (proto_value *)blk;
	return 0;
}

static int dec_admin_ok(dec *d, const msgpack_object_map *m, proto_msg *msg)
{
	int rc;
	const msgpack_object *result = NULL;
	if ((rc = get_str(d, m, "cmd", 1, &msg->admin_ok.cmd)))
		return rc;
	/* result: required, any value (nil included, so find() is not used) */
	if (lookup(d, m, "result", &result))
		return fail(d, "key 'result' appears twice");
	if (!result)
		return fail(d, "missing required key 'result'");
	proto_value *tree;
	if ((rc = tree_of(result, &tree)))
		return rc;
	msg->own_b = tree;
	msg->admin_ok.result = tree;
	return 0;
}

void proto_msg_init(proto_msg *m)
{
	memset(m, 0, sizeof(*m));
}

void proto_msg_free(proto_msg *m)
{
	if (!m)
		return;
	free(m->own_a);
	free(m->own_b);
	memset(m, 0, sizeof(*m));
}

/* The bounds-checking pre-scan: exactly one msgpack value, and a map. */
static int decode_precheck(dec *d, const uint8_t *body, size_t len)
{
	size_t off = 0;
	const char *why = NULL;
	if (len == 0)
		return fail(d, "empty body");
	if (scan_value(body, len, &off, 1, &why))
		return fail(d, "malformed msgpack (%s)", why);
	if (off != len)
		return fail(d, "%zu trailing bytes after the map", len - off);
	if (body[0] < 0x80 || (body[0] > 0x8f && body[0] != 0xde && body[0] != 0xdf))
		return fail(d, "body is not a map");
	return 0;
}

/* String keys only, and a known `t`: sets out->type and d->type. */
static int decode_type(dec *d, key_index *ix, const msgpack_object_map *m, proto_msg *out)
{
	proto_str t = {0};
	int rc;
	for (uint32_t i = 0; i < m->size; i++)
		if (m->ptr[i].key.type != MSGPACK_OBJECT_STR)
			return fail(d, "map key %u is a %s, not a str", i, obj_kind(&m->ptr[i].key));
	key_index_build(d, ix, m);
	if ((rc = get_str(d, m, "t", 1, &t)))
		return rc;
	for (int i = PROTO_HELLO; i < PROTO_TYPE_COUNT; i++)
		if (proto_str_eq(t, type_names[i]))
			out->type = (proto_type)i;
	if (out->type == PROTO_NONE)
		return fail(d, "unknown frame type '%.*s'", (int)(t.len > 32 ? 32 : t.len),
			    t.ptr ? t.ptr : "");
	d->type = type_names[out->type];
	return 0;
}

/* The frame type's own keys. */
static int decode_fields(dec *d, const msgpack_object_map *m, proto_msg *out)
{
	int rc;
	switch (out->type) {
	case PROTO_HELLO: return dec_hello(d, m, &out->hello);
	case PROTO_WELCOME: return dec_welcome(d, m, out);
	case PROTO_GEN: return dec_gen(d, m, out);
	case PROTO_TOK: return dec_tok(d, m, &out->tok);
	case PROTO_DONE: return dec_done(d, m, &out->done);
	case PROTO_ERR: return dec_err(d, m, &out->err);
	case PROTO_CANCEL: return get_uint(d, m, "id", 1, UINT64_MAX, &out->cancel.id);
	case PROTO_ATTACH: return get_str(d, m, "model", 1, &out->attach.model);
	case PROTO_IMAGE:
		if (!(rc = get_str(d, m, "model", 1, &out->image.model)) &&
		    !(rc = get_str(d, m, "segment", 1, &out->image.segment)) &&
		    !(rc = get_uint(d, m, "size", 1, UINT64_MAX, &out->image.size)))
			rc = get_str(d, m, "digest", 1, &out->image.digest);
		return rc;
	case PROTO_ADMIN: return dec_admin(d, m, out);
	case PROTO_ADMIN_OK: return dec_admin_ok(d, m, out);
	case PROTO_SHARE: return dec_share(d, m, out);
	case PROTO_SHARED:
		if (!(rc = get_str(d, m, "model", 1, &out->shared.model)))
			rc = get_uint(d, m, "size", 1, UINT64_MAX, &out->shared.size);
		return rc;
	default: return fail(d, "unknown frame type");
	}
}

int proto_decode(const void *body, size_t len, proto_msg *out, char *err, size_t errlen)
{
	msgpack_unpacked u;
	key_index ix;
	dec d = {NULL, "frame", err, errlen, NULL, 0};
	size_t off = 0;
	int rc;

	if (err && errlen)
		err[0] = 0;
	if (!out || (!body && len))
		return HERD_E_INVAL;
	proto_msg_init(out);
	if ((rc = decode_precheck(&d, body, len)))
		return rc;
	msgpack_unpacked_init(&u);
	msgpack_unpack_return ur = msgpack_unpack_next(&u, body, len, &off);
	if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
		rc = -ENOMEM;
		goto fail;
	}
	if (ur != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP) {
		rc = fail(&d, "malformed msgpack");
		goto fail;
	}
	const msgpack_object_map *m = &u.data.via.map;
	if ((rc = decode_type(&d, &ix, m, out)) || (rc = decode_fields(&d, m, out)))
		goto fail;
	msgpack_unpacked_destroy(&u);
	out->n_key_cmp = d.n_cmp;
	return 0;
fail:
	msgpack_unpacked_destroy(&u);
	proto_msg_free(out);
	out->n_key_cmp = d.n_cmp;
	return rc;
}

/* ---- output buffer -------------------------------------------------------- */

void proto_buf_init(proto_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void proto_buf_fini(proto_buf *b)
{
	if (!b)
		return;
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int proto_buf_reserve(proto_buf *b, size_t n)
{
	if (n <= b->cap - b->len)
		return 0;
	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len < n)
		cap *= 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int proto_buf_append(proto_buf *b, const void *p, size_t n)
{
	if (!n)
		return 0;
	int rc = proto_buf_reserve(b, n);
	if (rc)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void proto_buf_consume(proto_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

int proto_buf_write(void *data, const char *p, size_t n)
{
	return proto_buf_append(data, p, n) ? -1 : 0;
}

int proto_frame_begin(proto_buf *b, size_t *mark)
{
	static const uint8_t zero[PROTO_HDR_SIZE];
	*mark = b->len;
	return proto_buf_append(b, zero, sizeof(zero));
}

int proto_frame_end(proto_buf *b, size_t mark)
{
	size_t n = b->len - mark - PROTO_HDR_SIZE;
	if (n > UINT32_MAX) {
		b->len = mark;
		return HERD_E_RANGE;
	}
	uint8_t *p = b->data + mark;
	p[0] = (uint8_t)n;
	p[1] = (uint8_t)(n >> 8);
	p[2] = (uint8_t)(n >> 16);
	p[3] = (uint8_t)(n >> 24);
	return 0;
}

void proto_frame_abort(proto_buf *b, size_t mark)
{
	if (mark <= b->len)
		b->len = mark;
}

int proto_frame_next(const uint8_t *data, size_t avail, size_t max_frame, size_t *frame_len)
{
	if (frame_len)
		*frame_len = 0;
	if (avail < PROTO_HDR_SIZE)
		return PROTO_FRAME_NEED_MORE;
	size_t n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
		   (size_t)data[3] << 24;
	if (frame_len)
		*frame_len = n;
	if (n > max_frame)
		return HERD_E_PROTO;
	return avail - PROTO_HDR_SIZE >= n ? PROTO_FRAME_READY : PROTO_FRAME_NEED_MORE;
}

/* ---- encoders --------------------------------------------------------------- */

/* Encoding context: a frame in progress. Maps use the map16 header so the
 * entry count can be patched at the end (valid, if not minimal, msgpack). */
typedef struct enc {
	proto_buf *b;
	msgpack_packer pk;
	size_t mark;
	size_t map_at;
	unsigned n;
	int bad;   /* HERD_E_INVAL seen */
	int nomem;
} enc;

static int enc_begin(enc *e, proto_buf *b, const char *type)
{
	e->b = b;
	e->n = 0;
	e->bad = e->nomem = 0;
	msgpack_packer_init(&e->pk, b, proto_buf_write);
	if (proto_frame_begin(b, &e->mark))
		return -ENOMEM;
	static const uint8_t map16[3] = {0xde, 0, 0};
	e->map_at = b->len;
	if (proto_buf_append(b, map16, sizeof(map16))) {
		b->len = e->mark;
		return -ENOMEM;
	}
	e->n = 1;
	if (msgpack_pack_str_with_body(&e->pk, "t", 1) ||
	    msgpack_pack_str_with_body(&e->pk, type, strlen(type)))
		e->nomem = 1;
	return 0;
}

static int enc_end(enc *e)
{
	if (e->bad || e->nomem || e->n > 0xffff) {
		e->b->len = e->mark;
		return e->nomem ? -ENOMEM : HERD_E_INVAL;
	}
	e->b->data[e->map_at + 1] = (uint8_t)(e->n >> 8);
	e->b->data[e->map_at + 2] = (uint8_t)e->n;
	return proto_frame_end(e->b, e->mark);
}

static void ck(enc *e, int r)
{
	if (r < 0)
		e->nomem = 1;
}

static void k(enc *e, const char *key)
{
	e->n++;
	ck(e, msgpack_pack_str_with_body(&e->pk, key, strlen(key)));
}

static void v_str(enc *e, proto_str s)
{
	if (!s.ptr && s.len) {
		e->bad = 1;
		return;
	}
	ck(e, msgpack_pack_str_with_body(&e->pk, s.ptr ? s.ptr : "", s.len));
}

static void kv_str(enc *e, const char *key, proto_str s)
{
	k(e, key);
	v_str(e, s);
}

static void kv_u64(enc *e, const char *key, uint64_t v)
{
	k(e, key);
	ck(e, msgpack_pack_uint64(&e->pk, v));
}

static void kv_i64(enc *e, const char *key, int64_t v)
{
	k(e, key);
	ck(e, msgpack_pack_int64(&e->pk, v));
}

static void kv_f64(enc *e, const char *key, double v)
{
	k(e, key);
	ck(e, msgpack_pack_double(&e->pk, v));
}

static void kv_bool(enc *e, const char *key, int v)
{
	k(e, key);
	ck(e, v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk));
}

static void kv_str_array(enc *e, const char *key, const proto_str *s, size_t n)
{
	if (!s && n) {
		e->bad = 1;
		return;
	}
	k(e, key);
	ck(e, msgpack_pack_array(&e->pk, n));
	for (size_t i = 0; i < n; i++)
		v_str(e, s[i]);
}

int proto_encode_hello(proto_buf *b, const proto_hello *m)
{
	enc e;
	if (enc_begin(&e, b, "hello"))
		return -ENOMEM;
	kv_u64(&e, "v", m->v);
	if (m->name.len)
		kv_str(&e, "name", m->name);
	kv_i64(&e, "prio", m->prio);
	return enc_end(&e);
}

int proto_encode_welcome(proto_buf *b, const proto_welcome *m)
{
	enc e;
	if (!m->models && m->n_models)
		return HERD_E_INVAL;
	if (enc_begin(&e, b, "welcome"))
		return -ENOMEM;
	kv_u64(&e, "v", m->v);
	kv_u64(&e, "agent", m->agent);
	kv_u64(&e, "max_frame", m->max_frame);
	kv_u64(&e, "max_tokens", m->max_tokens);
	k(&e, "models");
	ck(&e, msgpack_pack_array(&e.pk, m->n_models));
	for (size_t i = 0; i < m->n_models; i++) {
		const proto_model_info *mi = &m->models[i];
		ck(&e, msgpack_pack_map(&e.pk, 6));
		unsigned saved = e.n; /* inner keys do not count for the outer map */
		kv_str(&e, "name", mi->name);
		kv_str(&e, "digest", mi->digest);
		kv_str(&e, "segment", mi->segment);
		kv_u64(&e, "n_vocab", mi->n_vocab);
		kv_u64(&e, "n_ctx", mi->n_ctx);
		kv_u64(&e, "image_bytes", mi->image_bytes);
		e.n = saved;
	}
	return enc_end(&e);
}

/* gen's input key: exactly one of prompt, tokens, messages. */
static void enc_gen_input(enc *e, const gen_request *m)
{
	switch (m->input) {
	case GEN_INPUT_PROMPT: kv_str(e, "prompt", m->prompt); break;
	case GEN_INPUT_TOKENS:
		if (!m->tokens && m->n_tokens) {
			e->bad = 1;
			break;
		}
		k(e, "tokens");
		ck(e, msgpack_pack_array(&e->pk, m->n_tokens));
		for (size_t i = 0; i < m->n_tokens; i++) {
			if (m->tokens[i] < 0)
				e->bad = 1;
			ck(e, msgpack_pack_int32(&e->pk, m->tokens[i]));
		}
		break;
	case GEN_INPUT_MESSAGES:
		if (!m->messages || !m->n_messages) {
			e->bad = 1;
			break;
		}
		k(e, "messages");
		ck(e, msgpack_pack_array(&e->pk, m->n_messages));
		for (size_t i = 0; i < m->n_messages; i++) {
			unsigned saved = e->n;
			ck(e, msgpack_pack_map(&e->pk, 2));
			kv_str(e, "role", m->messages[i].role);
			kv_str(e, "content", m->messages[i].content);
			e->n = saved;
		}
		break;
	default: e->bad = 1; break;
	}
}

int proto_encode_gen(proto_buf *b, const gen_request *m)
{
	enc e;
	const gen_params *p = &m->params;
	if (p->max_tokens < 0 || (m->n_tokens > PROTO_MAX_TOKENS) ||
	    m->n_messages > PROTO_MAX_MESSAGES || p->n_stop > PROTO_MAX_STOP)
		return HERD_E_INVAL;
	if (enc_begin(&e, b, "gen"))
		return -ENOMEM;
	kv_u64(&e, "id", m->id);
	kv_str(&e, "model", m->model);
	enc_gen_input(&e, m);
	kv_i64(&e, "max_tokens", p->max_tokens);
	kv_f64(&e, "temp", p->sampling.temperature);
	kv_i64(&e, "top_k", p->sampling.top_k);
	kv_f64(&e, "top_p", p->sampling.top_p);
	kv_f64(&e, "min_p", p->sampling.min_p);
	kv_f64(&e, "rep_pen", p->sampling.repeat_penalty);
	kv_u64(&e, "seed", p->sampling.seed);
	if (p->n_stop)
		kv_str_array(&e, "stop", p->stop, p->n_stop);
	if (m->has_prio)
		kv_i64(&e, "prio", m->prio);
	if (p->deadline_ms)
		kv_u64(&e, "deadline_ms", p->deadline_ms);
	kv_bool(&e, "stream", m->stream);
	kv_bool(&e, "cache", m->cache);
	return enc_end(&e);
}

int proto_encode_tok(proto_buf *b, const proto_tok *m)
{
	enc e;
	if (m->tok < 0)
		return HERD_E_INVAL;
	if (enc_begin(&e, b, "tok"))
		return -ENOMEM;
	kv_u64(&e, "id", m->id);
	kv_str(&e, "text", m->text);
	kv_i64(&e, "tok", m->tok);
	return enc_end(&e);
}

int proto_encode_done(proto_buf *b, const proto_done *m)
{
	enc e;
	if (!finish_on_wire(m->reason))
		return HERD_E_INVAL;
	if (enc_begin(&e, b, "done"))
		return -ENOMEM;
	kv_u64(&e, "id", m->id);
	kv_str(&e, "reason", proto_s(finish_names[m->reason]));
	if (m->has_text)
		kv_str(&e, "text", m->text);
	kv_u64(&e, "n_prompt", m->n_prompt);
	kv_u64(&e, "n_gen", m->n_gen);
	kv_u64(&e, "n_cached", m->n_cached);
	kv_f64(&e, "t_queue_ms", m->t_queue_ms);
	kv_f64(&e, "t_first_ms", m->t_first_ms);
	kv_f64(&e, "t_total_ms", m->t_total_ms);
	kv_bool(&e, "merged", m->merged);
	kv_bool(&e, "cached", m->cached);
	return enc_end(&e);
}

int proto_encode_err(proto_buf *b, const proto_err *m)
{
	enc e;
	if (enc_begin(&e, b, "err"))
		return -ENOMEM;
	if (m->has_id)
		kv_u64(&e, "id", m->id);
	kv_i64(&e, "code", m->code);
	kv_str(&e, "msg", m->msg);
	return enc_end(&e);
}

int proto_encode_cancel(proto_buf *b, const proto_cancel *m)
{
	enc e;
	if (enc_begin(&e, b, "cancel"))
		return -ENOMEM;
	kv_u64(&e, "id", m->id);
	return enc_end(&e);
}

int proto_encode_attach(proto_buf *b, const proto_attach *m)
{
	enc e;
	if (enc_begin(&e, b, "attach"))
		return -ENOMEM;
	kv_str(&e, "model", m->model);
	return enc_end(&e);
}

int proto_encode_image(proto_buf *b, const proto_image *m)
{
	enc e;
	if (enc_begin(&e, b, "image"))
		return -ENOMEM;
	kv_str(&e, "model", m->model);
	kv_str(&e, "segment", m->segment);
	kv_u64(&e, "size", m->size);
	kv_str(&e, "digest", m->digest);
	return enc_end(&e);
}

int proto_encode_admin(proto_buf *b, const proto_admin *m)
{
	enc e;
	if (enc_begin(&e, b, "admin"))
		return -ENOMEM;
	kv_str(&e, "cmd", m->cmd);
	if (m->n_args)
		kv_str_array(&e, "args", m->args, m->n_args);
	return enc_end(&e);
}

int proto_encode_admin_ok(proto_buf *b, const proto_admin_ok *m)
{
	enc e;
	if (enc_begin(&e, b, "admin_ok"))
		return -ENOMEM;
	kv_str(&e, "cmd", m->cmd);
	k(&e, "result");
	proto_writer w;
	proto_writer_init(&w, b);
	proto_write_value(&w, m->result);
	if (w.err == HERD_E_INVAL)
		e.bad = 1;
	else if (w.err)
		e.nomem = 1;
	return enc_end(&e);
}

int proto_encode_share(proto_buf *b, const proto_share *m)
{
	enc e;
	if (m->n_targets > PROTO_MAX_TARGETS || (m->n_targets && !m->targets))
		return HERD_E_INVAL;
	if (enc_begin(&e, b, "share"))
		return -ENOMEM;
	kv_str(&e, "name", m->name);
	if (m->n_targets)
		kv_str_array(&e, "targets", m->targets, m->n_targets);
	return enc_end(&e);
}

int proto_encode_shared(proto_buf *b, const proto_shared *m)
{
	enc e;
	if (enc_begin(&e, b, "shared"))
		return -ENOMEM;
	kv_str(&e, "model", m->model);
	kv_u64(&e, "size", m->size);
	return enc_end(&e);
}

int proto_encode(proto_buf *b, const proto_msg *m)
{
	if (!b || !m)
		return HERD_E_INVAL;
	switch (m->type) {
	case PROTO_HELLO: return proto_encode_hello(b, &m->hello);
	case PROTO_WELCOME: return proto_encode_welcome(b, &m->welcome);
	case PROTO_GEN: return proto_encode_gen(b, &m->gen);
	case PROTO_TOK: return proto_encode_tok(b, &m->tok);
	case PROTO_DONE: return proto_encode_done(b, &m->done);
	case PROTO_ERR: return proto_encode_err(b, &m->err);
	case PROTO_CANCEL: return proto_encode_cancel(b, &m->cancel);
	case PROTO_ATTACH: return proto_encode_attach(b, &m->attach);
	case PROTO_IMAGE: return proto_encode_image(b, &m->image);
	case PROTO_ADMIN: return proto_encode_admin(b, &m->admin);
	case PROTO_ADMIN_OK: return proto_encode_admin_ok(b, &m->admin_ok);
	case PROTO_SHARE: return proto_encode_share(b, &m->share);
	case PROTO_SHARED: return proto_encode_shared(b, &m->shared);
	default: return HERD_E_INVAL;
	}
}
