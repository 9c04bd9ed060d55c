/* share_model end to end (herd_model_share, broker/models.h): a real herdd,
 * agents as real processes speaking through libherd.
 *
 *   an owner opens its GGUF file, unlinks the path and shares the open
 *   descriptor (SCM_RIGHTS) with two named agents: the broker reads the file
 *   through the descriptor (the path is gone), builds the image, serves the
 *   owner and both targets (one of them also attaches the image); a third
 *   agent is refused with -EACCES for gen and attach and does not see the
 *   model in welcome; herdctl models shows the owner and the targets;
 *   the broker's private copy of the file is gone after the load;
 *   bad shares get a clear err: not a GGUF file, not a regular file, a name
 *   taken, a share frame without a descriptor; a uid target. */
#include "broker_harness.h"

#include "json_get.h"

#include "herd/herd.h"

static char herdctl[PATH_MAX];
static char state_dir[192];
static char shared_name[48];
static char own_path[192];

static json_object *ctl_json(const char *cmd)
{
	json_object *o = herdctl_json(herdctl, W.sock, cmd);
	assert_non_null(o);
	return o;
}

static herd_client *agent(const char *name)
{
	herd_connect_opts o;
	herd_connect_opts_init(&o);
	o.socket_path = W.sock;
	o.name = name;
	o.timeout_ms = 60000;
	herd_client *c = NULL;
	int rc = herd_connect(&c, &o);
	if (rc) {
		fprintf(stderr, "%s: connect: %s\n", name, herd_client_errmsg(c));
		_exit(10);
	}
	return c;
}

/* One greedy request for model: 0 or the error. */
static int gen(herd_client *c, const char *model)
{
	herd_request r;
	herd_request_init(&r);
	r.model = model;
	r.prompt = "Once upon a time";
	r.max_tokens = 4;
	herd_result res;
	int rc = herd_generate(c, &r, &res);
	if (!rc) {
		if (res.n_gen == 0 && res.reason != HERD_FINISH_STOP)
			rc = -EIO;
		herd_result_free(&res);
	}
	return rc;
}

static int has_model(herd_client *c, const char *model)
{
	const herd_model_info *mi;
	size_t n = 0;
	herd_models(c, &mi, &n);
	for (size_t i = 0; i < n; i++)
		if (!strcmp(mi[i].name, model))
			return 1;
	return 0;
}

/* The owner: opens its file, removes the path, shares the descriptor with
 * two agents, uses the model itself. Exit status 0 or a step number. */
static void owner_main(void)
{
	herd_client *c = agent("sh-owner");
	const int fd = open(own_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || unlink(own_path) != 0)
		_exit(11); /* from here on the broker can only read the descriptor */
	const char *targets[] = {"sh-alice", "sh-bob", NULL};
	uint64_t size = 0;
	struct stat st;
	if (fstat(fd, &st) != 0)
		_exit(12);
	int rc = herd_model_share_fd(c, shared_name, fd, targets, &size);
	close(fd);
	if (rc) {
		fprintf(stderr, "owner: share: %s\n", herd_client_errmsg(c));
		_exit(13);
	}
	if (size != (uint64_t)st.st_size)
		_exit(14);
	if ((rc = gen(c, shared_name))) {
		fprintf(stderr, "owner: gen: %s\n", herd_client_errmsg(c));
		_exit(15);
	}
	herd_close(c);
	_exit(0);
}

/* A target: served, and (attach = 1) maps the image in process. */
static void target_main(const char *name, int attach)
{
	herd_client *c = agent(name);
	if (!has_model(c, shared_name))
		_exit(20);
	if (gen(c, shared_name)) {
		fprintf(stderr, "%s: gen: %s\n", name, herd_client_errmsg(c));
		_exit(21);
	}
	herd_local_model *m = NULL;
	int rc = -EAGAIN;
	for (int i = 0; attach && rc == -EAGAIN && i < 600; i++)
		if ((rc = herd_model_attach(c, shared_name, &m)) == -EAGAIN)
			usleep(50000);
	if (attach && rc) {
		fprintf(stderr, "%s: attach: %s\n", name, herd_client_errmsg(c));
		_exit(22);
	}
	herd_local_detach(m);
	herd_close(c);
	_exit(0);
}

/* Not a target: refused for gen and attach, the model not in welcome. */
static void other_main(void)
{
	herd_client *c = agent("sh-eve");
	if (has_model(c, shared_name))
		_exit(30);
	int rc = gen(c, shared_name);
	if (rc != -EACCES || !strstr(herd_client_errmsg(c), "shared by agent sh-owner"))
		_exit(31);
	herd_local_model *m = NULL;
	if (herd_model_attach(c, shared_name, &m) != -EACCES)
		_exit(32);
	herd_close(c);
	_exit(0);
}

static pid_t fork_agent(void (*fn)(void))
{
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0)
		fn();
	return p;
}

static void alice(void) { target_main("sh-alice", 0); }
static void bob(void) { target_main("sh-bob", 1); }

static int wait_exit(pid_t p)
{
	int st = 0;
	assert_int_equal(waitpid(p, &st, 0), p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int setup(void **state)
{
	(void)state;
	bh_world_setup("share");
	snprintf(herdctl, sizeof(herdctl), "%s", W.herdd);
	snprintf(strrchr(herdctl, '/') + 1, 16, "herdctl");
	snprintf(state_dir, sizeof(state_dir), "%s/state", W.dir);
	snprintf(shared_name, sizeof(shared_name), "shared%d", (int)getpid());
	snprintf(own_path, sizeof(own_path), "%s/own.gguf", W.dir);
	char err[512] = "", conf[1024];
	mkmodel_opts mo = {.shape = "mini", .ftype = "Q8_0", .out_path = own_path, .seed = 12,
			   .n_threads = 2};
	if (mkmodel_write(&mo, err, sizeof(err)))
		fail_msg("mkmodel_write: %s", err);
	assert_int_equal(chmod(own_path, 0600), 0);
	snprintf(conf, sizeof(conf),
		 "{\"state_dir\": \"%s\", \"max_memory_mb\": 64, \"kv_cache_mb\": 4,\n"
		 " \"models\": [{\"name\": \"%s\", \"file\": \"%s\"}]}\n",
		 state_dir, W.model_name, W.model_path);
	bh_write_conf(conf);
	const char *extra[] = {"--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
	return 0;
}

static int rm_shared(void *user, const shm_image_info *in)
{
	(void)user;
	if (!strcmp(in->model, shared_name))
		shm_image_remove(in->name);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	shm_image_list(0, rm_shared, NULL);
	bh_world_teardown();
	return 0;
}

static json_object *row(json_object *models, const char *name)
{
	for (size_t i = 0; i < json_object_array_length(models); i++) {
		json_object *m = json_object_array_get_idx(models, i);
		if (!strcmp(json_object_get_string(json_object_object_get(m, "name")), name))
			return m;
	}
	fail_msg("model %s not in herdctl models", name);
	return NULL;
}

static void test_share_to_two(void **state)
{
	(void)state;
	assert_int_equal(wait_exit(fork_agent(owner_main)), 0);
	assert_int_equal(access(own_path, F_OK), -1); /* read through the descriptor only */
	const pid_t a = fork_agent(alice), b = fork_agent(bob), e = fork_agent(other_main);
	assert_int_equal(wait_exit(a), 0);
	assert_int_equal(wait_exit(b), 0);
	assert_int_equal(wait_exit(e), 0);
	json_object *m = ctl_json("models");
	json_object *r = row(m, shared_name);
	assert_true(json_object_get_boolean(json_object_object_get(r, "shared")));
	assert_string_equal(json_object_get_string(json_object_object_get(r, "owner")), "sh-owner");
	json_object *t = json_object_object_get(r, "targets");
	assert_int_equal(json_object_array_length(t), 2);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(t, 0)), "sh-alice");
	assert_string_equal(json_object_get_string(json_object_array_get_idx(t, 1)), "sh-bob");
	assert_string_equal(json_object_get_string(json_object_object_get(r, "state")), "resident");
	assert_false(json_object_get_boolean(json_object_object_get(row(m, W.model_name), "shared")));
	json_object_put(m);
	/* the private copy the image was built from is gone */
	char copy[512];
	snprintf(copy, sizeof(copy), "%s/shared.%s.%d.gguf", state_dir, shared_name, (int)W.pid);
	assert_int_equal(access(copy, F_OK), -1);
}

/* Bad shares from this process (an agent too): each a clear err. */
static void test_bad_shares(void **state)
{
	(void)state;
	herd_client *c = agent("sh-bad");
	uint64_t size;
	const char *none[] = {NULL};
	char name[64];
	snprintf(name, sizeof(name), "bad%d", (int)getpid());
	assert_int_equal(herd_model_share(c, name, W.conf, none, &size), HERD_E_FORMAT);
	assert_non_null(strstr(herd_client_errmsg(c), "not a GGUF file"));
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(herd_model_share_fd(c, name, p[0], none, &size), HERD_E_INVAL);
	assert_non_null(strstr(herd_client_errmsg(c), "not a regular file"));
	close(p[0]);
	close(p[1]);
	assert_int_equal(herd_model_share(c, shared_name, W.model_path, none, &size), -EEXIST);
	assert_int_equal(herd_model_share(c, "../x", W.model_path, none, &size), HERD_E_INVAL);
	/* a uid target: every agent of that uid, whatever its name */
	char uid_target[32], uname[64];
	snprintf(uid_target, sizeof(uid_target), "uid:%u", (unsigned)getuid());
	snprintf(uname, sizeof(uname), "byuid%d", (int)getpid());
	const char *by_uid[] = {uid_target, NULL};
	assert_int_equal(herd_model_share(c, uname, W.model_path, by_uid, &size), 0);
	herd_client *any = agent("sh-anyone");
	assert_int_equal(gen(any, uname), 0);
	herd_close(any);
	herd_close(c);
	/* a share frame that came without a descriptor */
	client raw;
	cl_open(&raw);
	proto_buf b;
	proto_buf_init(&b);
	proto_share sh = {.name = proto_s("nofd")};
	assert_int_equal(proto_encode_share(&b, &sh), 0);
	cl_send_buf(&raw, &b);
	cl_expect(&raw, PROTO_ERR);
	assert_int_equal(raw.m.err.code, HERD_E_INVAL);
	cl_close(&raw);
	char ctl_cmd[128];
	snprintf(ctl_cmd, sizeof(ctl_cmd), "models");
	json_object *m = ctl_json(ctl_cmd);
	assert_string_equal(json_object_get_string(json_object_object_get(row(m, uname), "owner")), "sh-bad");
	json_object_put(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_share_to_two),
		cmocka_unit_test(test_bad_shares),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
