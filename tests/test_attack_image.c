/* Attack tests on the shared-memory image (issue 8, item 1: image trust),
 * with a real herdd on a "mini" model this test makes, real /dev/shm
 * objects planted as a hostile local user would, and real clients (libherd).
 *
 * Every test first runs a clean broker once: its answer to a greedy 8-token
 * request is the reference, and its image /herd.<model>.<d16> is what the
 * attacker copies. Then:
 *
 * - test_forged_owner_mode: a forged image (a copy whose weights are
 *   changed, with a recomputed digest and a matching name, a header naming
 *   the real model file: path, device, inode, size, mtime) is planted with
 *   another owner (`nobody`, as root) or another mode (0644). A restarted
 *   broker must not adopt it: it builds its own image, logs the skipped
 *   object, and answers exactly as the clean broker did.
 * - test_forged_digest: a copy with changed weights but the header (and so
 *   the digest) of the real image, owned by the broker's uid with mode 0440:
 *   it passes the cheap checks and is adopted, but the background digest
 *   check drops it: the log says so, the object is unlinked, a request gets
 *   HERD_E_UNTRUSTED and attach is refused (never served); the next broker
 *   builds a fresh image and answers as the clean one.
 * - test_squatted_name: the image's name is taken by an object of another
 *   uid (as root: a file of `nobody`; else: a directory, which no rename can
 *   replace). The broker starts anyway, publishes its image under another
 *   name (log line), leaves the squatter's object alone, answers as the
 *   clean broker, and a restarted broker adopts that image.
 * - test_truncate_sigbus: an exact copy of the real image (valid digest),
 *   owned by `nobody` with mode 0644 (as root; else ours with mode 0644), is
 *   planted; then, after the broker answered once, the object is truncated.
 *   The broker must still be alive and answer (before: it had adopted the
 *   object and died of SIGBUS).
 *
 * Tests that need another uid run their root-only part only as root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <pwd.h>
#include <sys/mman.h>

#include "herd/herd.h"
#include "harness.h"
#include "shm/digest.h"

#define PROMPT "The quick brown fox"
#define N_TOKENS 8

typedef struct att {
	h_world *w;
	char clean_text[512];
	char segment[SHM_IMAGE_NAME_MAX]; /* the clean broker's image */
	uint8_t *image;                   /* its bytes */
	size_t image_size;
	char planted[4][SHM_IMAGE_NAME_MAX + 16]; /* paths to remove at teardown */
	int n_planted;
} att;

static int setup(void **state)
{
	att *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	a->w = h_world_create("ai");
	*state = a;
	return 0;
}

static int teardown(void **state)
{
	att *a = *state;
	for (int i = 0; i < a->n_planted; i++)
		if (unlink(a->planted[i]) != 0 && errno == EISDIR)
			rmdir(a->planted[i]);
	h_world_destroy(a->w);
	free(a->image);
	free(a);
	return 0;
}

static int log_count(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

/* Waits until the log has more than `before` lines with needle. */
static int log_wait(const char *path, const char *needle, int before, double timeout_s)
{
	const double t0 = clock_mono_s();
	while (clock_mono_s() - t0 < timeout_s) {
		if (log_count(path, needle) > before)
			return 1;
		usleep(20000);
	}
	return 0;
}

/* One greedy request through libherd: 0 and the text, or the error code
 * (the broker's message in msg). */
static int generate(const h_world *w, char *text, size_t cap, char *msg, size_t msgcap)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = w->sock;
	co.timeout_ms = 30000;
	herd_client *c = NULL;
	int rc = herd_connect(&c, &co);
	if (rc) {
		snprintf(msg, msgcap, "connect: %s", herd_strerror(rc));
		return rc;
	}
	herd_request r;
	herd_request_init(&r);
	r.model = w->model_name;
	r.prompt = PROMPT;
	r.max_tokens = N_TOKENS;
	r.deadline_ms = 120000;
	herd_result res;
	rc = herd_generate(c, &r, &res);
	text[0] = msg[0] = 0;
	if (rc == 0)
		snprintf(text, cap, "%.*s", (int)res.text_len, res.text);
	else
		snprintf(msg, msgcap, "%s", herd_client_errmsg(c));
	herd_result_free(&res);
	herd_close(c);
	return rc;
}

/* herd_model_attach: 0 (detached again) or its error. */
static int try_attach(const h_world *w, char *msg, size_t msgcap)
{
	herd_connect_opts co;
	herd_connect_opts_init(&co);
	co.socket_path = w->sock;
	herd_client *c = NULL;
	int rc = herd_connect(&c, &co);
	if (rc)
		return rc;
	herd_local_model *lm = NULL;
	rc = herd_model_attach(c, w->model_name, &lm);
	snprintf(msg, msgcap, "%s", rc ? herd_client_errmsg(c) : "");
	herd_local_detach(lm);
	herd_close(c);
	return rc;
}

/* The clean run: the reference text, the image's name and bytes; the
 * broker is stopped and the image removed (the broker must choose again). */
static void clean_run(att *a)
{
	h_world *w = a->w;
	char msg[512];
	h_broker_start(w, "8");
	json_object *m = h_ctl_model(w);
	snprintf(a->segment, sizeof(a->segment), "%s", h_str(m, "segment"));
	json_object_put(m);
	assert_true(a->segment[0] == '/');
	assert_int_equal(generate(w, a->clean_text, sizeof(a->clean_text), msg, sizeof(msg)), 0);
	assert_true(a->clean_text[0]);
	h_broker_stop(w);
	int fd = shm_open(a->segment, O_RDONLY, 0);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	a->image_size = (size_t)st.st_size;
	a->image = malloc(a->image_size);
	assert_non_null(a->image);
	assert_int_equal(pread(fd, a->image, a->image_size, 0), (ssize_t)a->image_size);
	close(fd);
	assert_int_equal(shm_unlink(a->segment), 0);
	printf("clean broker: %s (%zu bytes): \"%s\"\n", a->segment, a->image_size, a->clean_text);
}

/* Changes every weight byte of an image copy (the GGUF data section). */
static void scramble_weights(uint8_t *p, size_t n)
{
	const shm_image_header *h = (const shm_image_header *)p;
	for (size_t i = (size_t)h->tensor_data_offset; i < n; i++)
		p[i] = (uint8_t)(p[i] * 13u + 7u);
}

/* Recomputes the digest of an image copy; writes its name. */
static void reseal(att *a, uint8_t *p, char *name, size_t cap)
{
	shm_image_header *h = (shm_image_header *)p;
	shm_digest(p + h->header_size, a->image_size - h->header_size, h->digest);
	char hex[17];
	shm_digest_hex(h->digest, 8, hex);
	snprintf(name, cap, "/herd.%s.%s", a->w->model_name, hex);
}

/* Plants bytes as /dev/shm<name> with owner uid (-1: ours) and mode. */
static void plant(att *a, const char *name, const uint8_t *p, size_t n, uid_t uid, mode_t mode)
{
	char path[SHM_IMAGE_NAME_MAX + 16];
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	snprintf(a->planted[a->n_planted++], sizeof(a->planted[0]), "%s", path);
	for (size_t off = 0; off < n;) {
		const ssize_t r = pwrite(fd, p + off, n - off, (off_t)off);
		assert_true(r > 0);
		off += (size_t)r;
	}
	if (uid != (uid_t)-1)
		assert_int_equal(fchown(fd, uid, (gid_t)-1), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static uid_t nobody_uid(void)
{
	const struct passwd *pw = getpwnam("nobody");
	return pw ? pw->pw_uid : 65534;
}

static int is_root(void)
{
	return geteuid() == 0;
}

/* The broker's answer must be the clean one. */
static void expect_clean_answer(att *a)
{
	char text[512], msg[512];
	const int rc = generate(a->w, text, sizeof(text), msg, sizeof(msg));
	if (rc)
		fail_msg("request failed: %s: %s", herd_strerror(rc), msg);
	assert_string_equal(text, a->clean_text);
}

/* ---- (a) another owner or mode -------------------------------------------- */

static void forged_run(att *a, uid_t uid, mode_t mode, const char *what)
{
	h_world *w = a->w;
	char name[SHM_IMAGE_NAME_MAX];
	uint8_t *p = malloc(a->image_size);
	assert_non_null(p);
	memcpy(p, a->image, a->image_size);
	scramble_weights(p, a->image_size);
	reseal(a, p, name, sizeof(name));
	plant(a, name, p, a->image_size, uid, mode);
	free(p);
	/* the forgery passes every header check of the old code */
	shm_image_info fi;
	char err[256];
	const int before = log_count(w->log, "not trusted");
	h_broker_start(w, "8");
	json_object *m = h_ctl_model(w);
	printf("%s: forged %s, broker serves %s (adopted %d)\n", what, name, h_str(m, "segment"),
	       json_object_get_boolean(json_object_object_get(m, "adopted")));
	assert_string_not_equal(h_str(m, "segment"), name);
	json_object_put(m);
	expect_clean_answer(a);
	assert_true(log_count(w->log, "not trusted") > before);
	h_broker_stop(w);
	/* the forgery is untouched, and a plain find (trust rule) skips it */
	assert_int_equal(shm_image_find(w->model_name, w->model_path, NULL, 0, &fi, err, sizeof(err)), 0);
	assert_string_not_equal(fi.name, name);
	assert_true(fi.n_untrusted >= 1);
	shm_image_remove(fi.name);
	shm_image_remove(name); /* the next case plants the same forgery */
}

static void test_forged_owner_mode(void **state)
{
	att *a = *state;
	clean_run(a);
	forged_run(a, (uid_t)-1, 0644, "mode 0644");
	if (is_root())
		forged_run(a, nobody_uid(), 0440, "owner nobody");
	else
		printf("not root: the other-owner case is skipped\n");
}

/* ---- (b) right owner and mode, wrong digest ------------------------------------ */

static void test_forged_digest(void **state)
{
	att *a = *state;
	h_world *w = a->w;
	char text[512], msg[512];
	clean_run(a);
	uint8_t *p = malloc(a->image_size);
	assert_non_null(p);
	memcpy(p, a->image, a->image_size);
	scramble_weights(p, a->image_size); /* header (digest, name) kept */
	plant(a, a->segment, p, a->image_size, (uid_t)-1, 0440);
	free(p);
	h_broker_start(w, "8");
	/* adopted on the cheap checks, then dropped by the digest check */
	if (!log_wait(w->log, "failed its digest check", 0, 30)) {
		h_dump(w->log, "herdd log");
		fail_msg("the broker did not drop the forged image (no digest-check failure logged)");
	}
	const int rc = generate(w, text, sizeof(text), msg, sizeof(msg));
	printf("request on the dropped image: %s: %s\n", herd_strerror(rc), rc ? msg : text);
	assert_int_equal(rc, HERD_E_UNTRUSTED);
	assert_non_null(strstr(msg, "digest"));
	assert_int_equal(try_attach(w, msg, sizeof(msg)), HERD_E_UNTRUSTED);
	char path[SHM_IMAGE_NAME_MAX + 16];
	snprintf(path, sizeof(path), "/dev/shm%s", a->segment);
	assert_int_not_equal(access(path, F_OK), 0); /* unlinked */
	json_object *s = h_ctl(w, "status");
	assert_non_null(s);
	json_object_put(s);
	h_broker_stop(w);
	/* the next broker builds a fresh image from the model file */
	h_broker_start(w, "8");
	json_object *m = h_ctl_model(w);
	assert_false(json_object_get_boolean(json_object_object_get(m, "adopted")));
	json_object_put(m);
	expect_clean_answer(a);
	h_broker_stop(w);
}

/* ---- (c) a squatted name --------------------------------------------------------- */

static void test_squatted_name(void **state)
{
	att *a = *state;
	h_world *w = a->w;
	char path[SHM_IMAGE_NAME_MAX + 16];
	clean_run(a);
	snprintf(path, sizeof(path), "/dev/shm%s", a->segment);
	struct stat before, after;
	if (is_root()) {
		static const uint8_t junk[] = "squatter's bytes";
		plant(a, a->segment, junk, sizeof(junk), nobody_uid(), 0644);
	} else {
		assert_int_equal(mkdir(path, 0755), 0);
		snprintf(a->planted[a->n_planted++], sizeof(a->planted[0]), "%s", path);
	}
	assert_int_equal(lstat(path, &before), 0);
	const int n0 = log_count(w->log, "not ours");
	h_broker_start(w, "8");
	json_object *m = h_ctl_model(w);
	char seg[SHM_IMAGE_NAME_MAX];
	snprintf(seg, sizeof(seg), "%s", h_str(m, "segment"));
	json_object_put(m);
	printf("squatted %s; broker published %s\n", a->segment, seg);
	assert_string_not_equal(seg, a->segment);
	assert_true(strncmp(seg, a->segment, strlen(a->segment)) == 0); /* same digest, a suffix */
	assert_true(log_count(w->log, "not ours") > n0);
	expect_clean_answer(a);
	/* the squatter's object is left as it was */
	assert_int_equal(lstat(path, &after), 0);
	assert_true(after.st_ino == before.st_ino && after.st_uid == before.st_uid);
	h_broker_stop(w);
	/* a restarted broker finds its image under the other name */
	h_broker_start(w, "8");
	m = h_ctl_model(w);
	assert_true(json_object_get_boolean(json_object_object_get(m, "adopted")));
	assert_string_equal(h_str(m, "segment"), seg);
	json_object_put(m);
	expect_clean_answer(a);
	h_broker_stop(w);
}

/* ---- (d) truncation under the broker ---------------------------------------------- */

static void test_truncate_sigbus(void **state)
{
	att *a = *state;
	h_world *w = a->w;
	clean_run(a);
	/* an exact copy: right digest, right header; but writable by its owner */
	plant(a, a->segment, a->image, a->image_size, is_root() ? nobody_uid() : (uid_t)-1, 0644);
	h_broker_start(w, "8");
	expect_clean_answer(a);
	/* the attacker (the object's owner) truncates it */
	char path[SHM_IMAGE_NAME_MAX + 16];
	snprintf(path, sizeof(path), "/dev/shm%s", a->segment);
	assert_int_equal(truncate(path, 4096), 0);
	char text[512], msg[512];
	const int rc = generate(w, text, sizeof(text), msg, sizeof(msg));
	int st;
	if (waitpid(w->broker, &st, WNOHANG) == w->broker) {
		h_untrack(w, w->broker);
		w->broker = 0;
		fail_msg("the broker died after the truncation (wait status %d: %s)", st,
			 WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit");
	}
	if (rc)
		fail_msg("request after the truncation failed: %s: %s", herd_strerror(rc), msg);
	assert_string_equal(text, a->clean_text);
	h_broker_stop(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_forged_owner_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_digest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_squatted_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncate_sigbus, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
