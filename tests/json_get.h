/* Strict readers of a test's JSON results (json-c): a missing key fails
 * the test, naming it. Header-only. */
#ifndef HERD_TESTS_JSON_GET_H
#define HERD_TESTS_JSON_GET_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

/* `herdctl --socket sock --json cmd` parsed; NULL when herdctl exits
 * non-zero (the status told under HERD_TEST_VERBOSE). Fails on output that
 * is not JSON. */
static inline json_object *herdctl_json(const char *herdctl, const char *sock, const char *cmd)
{
	char line[8192];
	snprintf(line, sizeof(line), "%s --socket %s --json %s 2>/dev/null", herdctl, sock, cmd);
	FILE *f = popen(line, "r");
	assert_non_null(f);
	static char buf[1 << 17];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	const int st = pclose(f);
	if (st != 0) {
		if (getenv("HERD_TEST_VERBOSE"))
			fprintf(stderr, "herdctl %s: exit %d\n", cmd, st);
		return NULL;
	}
	json_object *o = json_tokener_parse(buf);
	if (!o)
		fail_msg("herdctl %s: output is not JSON", cmd);
	return o;
}

#endif
