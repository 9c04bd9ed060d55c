/* An admin result tree (proto_value) as json-c: herdctl --json and the
 * HTTP endpoints print the same figures. */
#include "json_value.h"

#include <stdio.h>

#define JSON_KEY_MAX 128 /* bytes of a map key kept, NUL included */

json_object *value_to_json(const proto_value *v)
{
	switch (v->type) {
	case PROTO_V_BOOL:
		return json_object_new_boolean(v->b);
	case PROTO_V_UINT:
		return v->u > INT64_MAX ? json_object_new_uint64(v->u)
					: json_object_new_int64((int64_t)v->u);
	case PROTO_V_INT:
		return json_object_new_int64(v->i);
	case PROTO_V_FLOAT:
		return json_object_new_double(v->f);
	case PROTO_V_STR:
		return json_object_new_string_len(v->s.ptr ? v->s.ptr : "", (int)v->s.len);
	case PROTO_V_ARRAY: {
		json_object *a = json_object_new_array();
		for (size_t i = 0; a && i < v->arr.n; i++)
			json_object_array_add(a, value_to_json(&v->arr.v[i]));
		return a;
	}
	case PROTO_V_MAP: {
		json_object *m = json_object_new_object();
		for (size_t i = 0; m && i < v->map.n; i++) {
			const proto_pair *kv = &v->map.kv[i];
			char key[JSON_KEY_MAX];
			if (kv->key.type == PROTO_V_STR)
				snprintf(key, sizeof(key), "%.*s", (int)kv->key.s.len,
					 kv->key.s.ptr ? kv->key.s.ptr : "");
			else
				snprintf(key, sizeof(key), "key%zu", i);
			json_object_object_add(m, key, value_to_json(&kv->val));
		}
		return m;
	}
	default:
		return NULL; /* nil */
	}
}

