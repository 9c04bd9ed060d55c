/* Strict readers of a test's JSON results (json-c): a missing key fails
 * the test, naming it. Header-only. */
#ifndef HERD_TESTS_JSON_GET_H
#define HERD_TESTS_JSON_GET_H

#include <stdint.h>

#include <json-c/json.h>

static inline json_object *jget(json_object *o, const char *k)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(o, k, &v))
		fail_msg("key '%s' missing", k);
	return v;
}

static inline int64_t jint(json_object *o, const char *k)
{
	return json_object_get_int64(jget(o, k));
}

static inline double jdbl(json_object *o, const char *k)
{
	return json_object_get_double(jget(o, k));
}

#endif
