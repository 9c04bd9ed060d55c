/* Shared by tests/test_pressure_shed.c and tests/test_pressure_bpf.c: a
 * real herdd on the mini model with a configuration of the test's own,
 * and readers of its `pressure` admin result. */
#ifndef HERD_TESTS_PRESSURE_HARNESS_H
#define HERD_TESTS_PRESSURE_HARNESS_H

#include "broker_harness.h"

#include "model/generate.h"

/* Makes the mini model and starts herdd with config (JSON text). Exits 77
 * when herdd was not built. */
static inline void pw_start(const char *tag, const char *config)
{
	bh_world_setup(tag);
	bh_write_conf(config);
	const char *extra[] = {"--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
}

static inline void pw_stop(void)
{
	bh_world_teardown();
}

/* Sends `admin cmd` and returns the result (valid until the next read). */
static inline const proto_value *pw_admin(client *c, const char *cmd)
{
	proto_buf b;
	proto_buf_init(&b);
	proto_admin ad = {.cmd = proto_s(cmd)};
	assert_int_equal(proto_encode_admin(&b, &ad), 0);
	cl_send_buf(c, &b);
	cl_expect(c, PROTO_ADMIN_OK);
	assert_non_null(c->m.admin_ok.result);
	return c->m.admin_ok.result;
}

/* A number of a result map (int, uint, float or bool); fails when absent. */
static inline double pw_num(const proto_value *m, const char *key)
{
	const proto_value *v = proto_value_get(m, key);
	if (!v)
		fail_msg("key '%s' missing from the admin result", key);
	switch (v->type) {
	case PROTO_V_INT: return (double)v->i;
	case PROTO_V_UINT: return (double)v->u;
	case PROTO_V_FLOAT: return v->f;
	case PROTO_V_BOOL: return v->b;
	default: fail_msg("key '%s' is not a number", key);
	}
	return 0;
}

static inline const char *pw_str(const proto_value *m, const char *key, char *buf, size_t n)
{
	const proto_value *v = proto_value_get(m, key);
	if (!v || v->type != PROTO_V_STR)
		fail_msg("key '%s' missing or not a string", key);
	snprintf(buf, n, "%.*s", (int)v->s.len, v->s.ptr ? v->s.ptr : "");
	return buf;
}

/* Runs `herdctl --socket SOCK ARGS` (next to herdd) and returns its
 * stdout in out (cut at n). */
static inline void pw_herdctl(const char *args, char *out, size_t n)
{
	char cmd[PATH_MAX + 256], dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", W.herdd);
	snprintf(cmd, sizeof(cmd), "%s/herdctl --socket %s %s", dirname(dir), W.sock, args);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t got = fread(out, 1, n - 1, f);
	out[got] = 0;
	assert_int_equal(pclose(f), 0);
}

/* Sends a short gen request. */
static inline void pw_gen(client *c, uint64_t id)
{
	cl_gen(c, id, W.model_name, "Once upon a time", 4, 0);
}

#endif
