/* proto_writer: msgpack values appended to a proto_buf, and the value tree
 * helpers. msgpack-c stays behind this file and proto.c. See proto.h. */
#include "proto/proto.h"

#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "herd/error.h"

void proto_writer_init(proto_writer *w, proto_buf *b)
{
	w->b = b;
	w->err = 0;
}

int proto_writer_error(const proto_writer *w)
{
	return w->err;
}

/* A packer over w's buffer: two pointers, set up per call so that the
 * writer's public struct carries no msgpack type. */
static msgpack_packer packer(proto_writer *w)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, w->b, proto_buf_write);
	return pk;
}

/* Records a packer result (< 0: the buffer could not grow). */
static void note(proto_writer *w, int r)
{
	if (r < 0 && !w->err)
		w->err = -ENOMEM;
}

void proto_write_map(proto_writer *w, uint32_t n_pairs)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_map(&pk, n_pairs));
}

void proto_write_array(proto_writer *w, uint32_t n)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_array(&pk, n));
}

void proto_write_str(proto_writer *w, proto_str s)
{
	if (w->err)
		return;
	if (!s.ptr && s.len) {
		w->err = HERD_E_INVAL;
		return;
	}
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_str_with_body(&pk, s.ptr ? s.ptr : "", s.len));
}

void proto_write_cstr(proto_writer *w, const char *s)
{
	proto_write_str(w, proto_s(s));
}

void proto_write_int(proto_writer *w, int64_t v)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_int64(&pk, v));
}

void proto_write_uint(proto_writer *w, uint64_t v)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_uint64(&pk, v));
}

void proto_write_double(proto_writer *w, double v)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_double(&pk, v));
}

void proto_write_bool(proto_writer *w, int v)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, v ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk));
}

void proto_write_nil(proto_writer *w)
{
	if (w->err)
		return;
	msgpack_packer pk = packer(w);
	note(w, msgpack_pack_nil(&pk));
}

void proto_write_value(proto_writer *w, const proto_value *v)
{
	if (!v) {
		proto_write_nil(w);
		return;
	}
	switch (v->type) {
	case PROTO_V_NIL: proto_write_nil(w); return;
	case PROTO_V_BOOL: proto_write_bool(w, v->b); return;
	case PROTO_V_INT: proto_write_int(w, v->i); return;
	case PROTO_V_UINT: proto_write_uint(w, v->u); return;
	case PROTO_V_FLOAT: proto_write_double(w, v->f); return;
	case PROTO_V_STR: proto_write_str(w, v->s); return;
	case PROTO_V_ARRAY:
		if ((!v->arr.v && v->arr.n) || v->arr.n > UINT32_MAX)
			break;
		proto_write_array(w, (uint32_t)v->arr.n);
		for (size_t i = 0; i < v->arr.n; i++)
			proto_write_value(w, &v->arr.v[i]);
		return;
	case PROTO_V_MAP:
		if ((!v->map.kv && v->map.n) || v->map.n > UINT32_MAX)
			break;
		proto_write_map(w, (uint32_t)v->map.n);
		for (size_t i = 0; i < v->map.n; i++) {
			proto_write_value(w, &v->map.kv[i].key);
			proto_write_value(w, &v->map.kv[i].val);
		}
		return;
	}
	if (!w->err)
		w->err = HERD_E_INVAL;
}

void proto_write_kv_str(proto_writer *w, const char *key, const char *v)
{
	proto_write_cstr(w, key);
	proto_write_cstr(w, v);
}

void proto_write_kv_int(proto_writer *w, const char *key, int64_t v)
{
	proto_write_cstr(w, key);
	proto_write_int(w, v);
}

void proto_write_kv_uint(proto_writer *w, const char *key, uint64_t v)
{
	proto_write_cstr(w, key);
	proto_write_uint(w, v);
}

void proto_write_kv_double(proto_writer *w, const char *key, double v)
{
	proto_write_cstr(w, key);
	proto_write_double(w, v);
}

void proto_write_kv_bool(proto_writer *w, const char *key, int v)
{
	proto_write_cstr(w, key);
	proto_write_bool(w, v);
}

/* The admin_ok frame's fixed keys: "t", "cmd", then the "result" key whose
 * value the caller writes. */
enum { ADMIN_OK_KEYS = 3 };

int proto_admin_ok_begin(proto_writer *w, proto_buf *b, const char *cmd, size_t *mark)
{
	if (proto_frame_begin(b, mark))
		return -ENOMEM;
	proto_writer_init(w, b);
	proto_write_map(w, ADMIN_OK_KEYS);
	proto_write_kv_str(w, "t", proto_type_name(PROTO_ADMIN_OK));
	proto_write_kv_str(w, "cmd", cmd);
	proto_write_cstr(w, "result");
	if (w->err) {
		proto_frame_abort(b, *mark);
		return w->err;
	}
	return 0;
}

const proto_value *proto_value_get(const proto_value *v, const char *key)
{
	if (!v || v->type != PROTO_V_MAP)
		return NULL;
	for (size_t i = 0; i < v->map.n; i++) {
		const proto_pair *p = &v->map.kv[i];
		if (p->key.type == PROTO_V_STR && proto_str_eq(p->key.s, key))
			return &p->val;
	}
	return NULL;
}
