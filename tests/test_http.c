/* herdd's HTTP face against a real herdd on the mini model, spoken to over
 * real TCP with a plain HTTP/1.1 client: health, the seed's endpoints (the
 * same numbers as the admin results herdctl prints), /metrics through a
 * strict Prometheus text-format parser, OpenAI and Ollama generation
 * (streamed and not), bearer tokens, the Host/Origin checks, bounded bodies,
 * JSON errors naming the field, the per-agent limit and the cancelling of a
 * request whose client went away. The npm clients and the dashboard are
 * tested by tests/http_clients.sh and tests/http_dashboard.sh. */
#include "broker_harness.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>

#include <json-c/json.h>

#include "broker/config.h"
#include "json_get.h"

#define TOKEN "test-token-0123456789abcdef"
#define AUTH "Authorization: Bearer " TOKEN "\r\n"

static int port;

/* ---- a plain HTTP/1.1 client ------------------------------------------ */

static int tcp_open(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = {60, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_req(int fd, const char *method, const char *path, const char *headers,
		     const char *body, size_t blen)
{
	char head[2048];
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			 method, path, port, headers ? headers : "", body ? blen : 0);
	assert_true(n > 0 && n < (int)sizeof(head));
	assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
	size_t off = 0;
	while (body && off < blen) {
		ssize_t w = send(fd, body + off, blen - off, MSG_NOSIGNAL);
		if (w <= 0)
			break; /* refused early (413): the reply is read anyway */
		off += (size_t)w;
	}
}

/* Decodes a chunked body in place; returns its length. */
static size_t unchunk(char *b)
{
	char *in = b, *out = b;
	for (;;) {
		char *end;
		unsigned long n = strtoul(in, &end, 16);
		char *crlf = strstr(in, "\r\n");
		if (!crlf || end == in || n == 0)
			break;
		in = crlf + 2;
		memmove(out, in, n);
		out += n;
		in += n + 2;
	}
	*out = 0;
	return (size_t)(out - b);
}

typedef struct reply {
	int status;
	char *head, *body; /* body NUL-terminated; owned (free body's block with reply_free) */
	char *raw;
} reply;

static void reply_free(reply *r)
{
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

/* Everything fd brings until the server closes (NUL-terminated, malloc'd);
 * closes fd. */
static char *read_all(int fd)
{
	size_t cap = 1 << 16, len = 0;
	char *raw = malloc(cap);
	assert_non_null(raw);
	for (;;) {
		if (len + 4096 > cap)
			assert_non_null(raw = realloc(raw, cap *= 2));
		ssize_t n = recv(fd, raw + len, cap - len - 1, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	raw[len] = 0;
	return raw;
}

/* Reads a whole reply until the server closes. */
static reply read_reply(int fd)
{
	char *raw = read_all(fd);
	reply r = {.raw = raw, .head = raw};
	char *sep = strstr(raw, "\r\n\r\n");
	assert_non_null(sep);
	*sep = 0;
	r.body = sep + 4;
	assert_int_equal(sscanf(raw, "HTTP/1.%*d %d", &r.status), 1);
	if (strcasestr(r.head, "Transfer-Encoding: chunked"))
		unchunk(r.body);
	return r;
}

/* The rest of a chunked stream whose head open_stream read, until the
 * server closes (the body decoded). */
static reply read_reply_body(int fd)
{
	char *raw = read_all(fd);
	unchunk(raw);
	reply r = {.status = 200, .raw = raw, .head = raw, .body = raw};
	return r;
}

static reply req(const char *method, const char *path, const char *headers, const char *body)
{
	int fd = tcp_open();
	send_req(fd, method, path, headers, body, body ? strlen(body) : 0);
	return read_reply(fd);
}

static json_object *parse(const char *s)
{
	json_object *o = json_tokener_parse(s);
	if (!o)
		fail_msg("not JSON: %.300s", s);
	return o;
}

/* ---- the broker --------------------------------------------------------- */

/* Its HTTP port, from the log line "http: listening on http://127.0.0.1:P". */
static int find_port(void)
{
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(W.log, "r");
		char line[1024];
		while (f && fgets(line, sizeof(line), f)) {
			const char *p = strstr(line, "http: listening on http://127.0.0.1:");
			if (p) {
				fclose(f);
				return atoi(p + strlen("http: listening on http://127.0.0.1:"));
			}
		}
		if (f)
			fclose(f);
		usleep(50000);
	}
	dump_log();
	fail_msg("no 'http: listening' line in the log");
	return -1;
}

static int setup(void **state)
{
	(void)state;
	bh_world_setup("thttp");
	/* a long context, so that the requests left open never end on their own */
	bh_write_conf("{\"max_frame\": 65536, \"agents\": {\"max_queued\": 2}, \"ctx_size\": 32768, \"max_tokens\": 30000,"
		      " \"http\": {\"listen\": \"127.0.0.1:0\","
		      " \"tokens\": [{\"name\": \"tester\", \"token\": \"" TOKEN "\"}]}}");
	const char *extra[] = {"--state-dir", W.dir, "--config", W.conf, NULL};
	W.pid = spawn(extra);
	wait_ready(W.pid);
	port = find_port();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bh_world_teardown();
	return 0;
}

/* ---- a strict parser of the Prometheus text format (0.0.4) -------------- */

#define PROM_MAX 2048

typedef struct prom_series {
	char key[384];     /* name{labels} as written, le included */
	char hkey[384];    /* histogram series: family + labels without le */
	double value;
} prom_series;

typedef struct prom {
	prom_series s[PROM_MAX];
	int n;
	char fam[128], type[16];
	int fam_help, fam_type;
	char done_fams[256][128]; /* families closed (each appears in one block) */
	int n_done;
	int n_families;
} prom;

static int name_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

/* Reads a metric name at *p into out; fails on none. */
static void prom_name(const char **p, char *out, size_t n, const char *line)
{
	size_t i = 0;
	while (name_char(**p, i == 0) && i + 1 < n)
		out[i++] = *(*p)++;
	out[i] = 0;
	if (!i)
		fail_msg("prometheus: no metric name in '%s'", line);
}

/* Labels {k="v",...}: escapes \\ \" \n only, no duplicate names. Writes the
 * labels without le into nole, le's value into le. */
static void prom_labels(const char **p, char *nole, size_t n, char *le, const char *line)
{
	nole[0] = le[0] = 0;
	if (**p != '{')
		return;
	(*p)++;
	char names[16][64];
	int nn = 0;
	while (**p != '}') {
		char k[64], v[256];
		size_t i = 0, j = 0;
		while (name_char(**p, i == 0) && **p != ':' && i + 1 < sizeof(k))
			k[i++] = *(*p)++;
		k[i] = 0;
		if (!i || *(*p)++ != '=' || *(*p)++ != '"')
			fail_msg("prometheus: bad label in '%s'", line);
		while (**p && **p != '"' && j + 1 < sizeof(v)) {
			if (**p == '\\') {
				(*p)++;
				if (!strchr("\\\"n", **p))
					fail_msg("prometheus: bad escape in '%s'", line);
			}
			v[j++] = *(*p)++;
		}
		v[j] = 0;
		if (*(*p)++ != '"')
			fail_msg("prometheus: unterminated label value in '%s'", line);
		for (int q = 0; q < nn; q++)
			if (!strcmp(names[q], k))
				fail_msg("prometheus: label '%s' twice in '%s'", k, line);
		if (nn < 16)
			snprintf(names[nn++], sizeof(names[0]), "%s", k);
		const size_t used = strlen(nole);
		if (!strcmp(k, "le"))
			snprintf(le, 64, "%.63s", v);
		else if (used + strlen(k) + strlen(v) + 4 < n)
			snprintf(nole + used, n - used, "%s%.63s=\"%.180s\"", used ? "," : "", k, v);
		else
			fail_msg("prometheus: labels too long in '%s'", line);
		if (**p == ',')
			(*p)++;
		else if (**p != '}')
			fail_msg("prometheus: expected , or } in '%s'", line);
	}
	(*p)++;
}

static double prom_number(const char *s, const char *line)
{
	if (!strcmp(s, "+Inf"))
		return INFINITY;
	if (!strcmp(s, "-Inf"))
		return -INFINITY;
	if (!strcmp(s, "NaN"))
		return NAN;
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || !strncasecmp(s, "inf", 3) || !strncasecmp(s, "nan", 3))
		fail_msg("prometheus: bad value '%s' in '%s'", s, line);
	return v;
}

/* # HELP and # TYPE lines: once each per family, TYPE before its samples,
 * a family's lines in one block. */
static void prom_comment(prom *pr, const char *line)
{
	char kw[8], name[128], rest[512] = "";
	if (sscanf(line, "# %7s %127s %511[^\n]", kw, name, rest) < 2)
		fail_msg("prometheus: bad comment '%s'", line);
	const char *q = name;
	char chk[128];
	prom_name(&q, chk, sizeof(chk), line);
	if (*q)
		fail_msg("prometheus: bad family name in '%s'", line);
	if (strcmp(name, pr->fam)) {
		for (int i = 0; i < pr->n_done; i++)
			if (!strcmp(pr->done_fams[i], name))
				fail_msg("prometheus: family %s appears in two blocks", name);
		if (pr->fam[0] && pr->n_done < 256)
			snprintf(pr->done_fams[pr->n_done++], 128, "%s", pr->fam);
		snprintf(pr->fam, sizeof(pr->fam), "%s", name);
		pr->fam_help = pr->fam_type = 0;
		pr->type[0] = 0;
		pr->n_families++;
	}
	if (!strcmp(kw, "HELP")) {
		if (pr->fam_help++ || !rest[0])
			fail_msg("prometheus: a second or empty HELP for %s", name);
	} else if (!strcmp(kw, "TYPE")) {
		if (pr->fam_type++)
			fail_msg("prometheus: a second TYPE for %s", name);
		if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
		    strcmp(rest, "summary") && strcmp(rest, "untyped"))
			fail_msg("prometheus: unknown type '%s' for %s", rest, name);
		snprintf(pr->type, sizeof(pr->type), "%s", rest);
		if (!strcmp(rest, "counter") && (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
			fail_msg("prometheus: counter %s does not end in _total", name);
	} else {
		fail_msg("prometheus: unexpected comment '%s'", line);
	}
}

/* A sample: of the current family (its _bucket/_sum/_count for a
 * histogram), after its HELP and TYPE, a series seen once. */
static void prom_sample(prom *pr, const char *line)
{
	const char *p = line;
	char name[128], nole[256], le[64], val[64];
	prom_name(&p, name, sizeof(name), line);
	prom_labels(&p, nole, sizeof(nole), le, line);
	if (*p++ != ' ' || sscanf(p, "%63s", val) != 1 || strchr(p, ' '))
		fail_msg("prometheus: expected 'name{labels} value' (no timestamp): '%s'", line);
	if (!pr->fam_help || !pr->fam_type)
		fail_msg("prometheus: sample before HELP and TYPE: '%s'", line);
	const size_t fl = strlen(pr->fam);
	const int hist = !strcmp(pr->type, "histogram");
	const char *suffix = !strncmp(name, pr->fam, fl) ? name + fl : NULL;
	if (!suffix || (hist ? strcmp(suffix, "_bucket") && strcmp(suffix, "_sum") && strcmp(suffix, "_count")
			     : *suffix != 0))
		fail_msg("prometheus: sample '%s' outside its family %s", name, pr->fam);
	if (!!le[0] != (hist && !strcmp(suffix, "_bucket")))
		fail_msg("prometheus: le belongs on histogram buckets only: '%s'", line);
	assert_true(pr->n < PROM_MAX);
	prom_series *s = &pr->s[pr->n];
	snprintf(s->key, sizeof(s->key), "%s{%s%s%s%s}", name, nole, le[0] && nole[0] ? "," : "",
		 le[0] ? "le=" : "", le);
	snprintf(s->hkey, sizeof(s->hkey), "%s{%s}", pr->fam, nole);
	s->value = prom_number(val, line);
	for (int i = 0; i < pr->n; i++)
		if (!strcmp(pr->s[i].key, s->key))
			fail_msg("prometheus: series %s twice", s->key);
	if (hist && le[0]) { /* buckets ascend and accumulate */
		const double bound = prom_number(le, line);
		for (int i = pr->n - 1; i >= 0 && !strcmp(pr->s[i].hkey, s->hkey); i--) {
			const char *ple = strstr(pr->s[i].key, "le=");
			if (!ple)
				continue; /* _sum, _count */
			char pb[64];
			snprintf(pb, sizeof(pb), "%.*s", (int)strcspn(ple + 3, "}"), ple + 3);
			if (prom_number(pb, line) >= bound || pr->s[i].value > s->value)
				fail_msg("prometheus: buckets of %s not ascending and cumulative", s->hkey);
			break;
		}
	}
	pr->n++;
}

/* Every histogram series has +Inf, _sum and _count, and _count = +Inf. */
static void prom_check_hists(const prom *pr)
{
	for (int i = 0; i < pr->n; i++) {
		const char *b = strstr(pr->s[i].key, "_bucket{");
		if (!b || !strstr(pr->s[i].key, "le=+Inf"))
			continue;
		char fam[128], cnt[400], sum[400];
		snprintf(fam, sizeof(fam), "%.*s", (int)(b - pr->s[i].key), pr->s[i].key);
		const char *labels = strchr(pr->s[i].hkey, '{');
		snprintf(cnt, sizeof(cnt), "%s_count%s", fam, labels);
		snprintf(sum, sizeof(sum), "%s_sum%s", fam, labels);
		int have_sum = 0, have_cnt = 0;
		for (int j = 0; j < pr->n; j++) {
			have_sum |= !strcmp(pr->s[j].key, sum);
			if (!strcmp(pr->s[j].key, cnt)) {
				have_cnt = 1;
				assert_true(pr->s[j].value == pr->s[i].value);
			}
		}
		if (!have_sum || !have_cnt)
			fail_msg("prometheus: %s lacks _sum or _count", pr->s[i].hkey);
	}
	for (int i = 0; i < pr->n; i++) /* and every bucket series ends in +Inf */
		if (strstr(pr->s[i].key, "_bucket{")) {
			char inf[400];
			const char *labels = strchr(pr->s[i].hkey, '{');
			snprintf(inf, sizeof(inf), "%.*s_bucket{%.*s%sle=+Inf}",
				 (int)(strchr(pr->s[i].hkey, '{') - pr->s[i].hkey), pr->s[i].hkey,
				 (int)strlen(labels + 1) - 1, labels + 1, strlen(labels) > 2 ? "," : "");
			int found = 0;
			for (int j = 0; j < pr->n; j++)
				found |= !strcmp(pr->s[j].key, inf);
			if (!found)
				fail_msg("prometheus: no %s", inf);
		}
}

static void prom_parse(prom *pr, char *text)
{
	memset(pr, 0, sizeof(*pr));
	const size_t len = strlen(text);
	if (!len || text[len - 1] != '\n')
		fail_msg("prometheus: the exposition must end with a newline");
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == '#')
			prom_comment(pr, line);
		else
			prom_sample(pr, line);
	}
	prom_check_hists(pr);
}

static double prom_get(const prom *pr, const char *key)
{
	for (int i = 0; i < pr->n; i++)
		if (!strcmp(pr->s[i].key, key))
			return pr->s[i].value;
	fail_msg("prometheus: no series %s", key);
	return 0;
}

/* The parser refuses what the format forbids. */
static void test_prom_parser_strict(void **state)
{
	(void)state;
	static prom pr;
	char ok[] = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
		    "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
		    "h_sum 3.5\nh_count 2\n";
	prom_parse(&pr, ok);
	assert_int_equal(pr.n_families, 2);
	assert_true(prom_get(&pr, "a_total{x=\"1\"}") == 3);
}

/* ---- endpoints ------------------------------------------------------------ */

static void test_health_and_auth(void **state)
{
	(void)state;
	reply r = req("GET", "/healthz", NULL, NULL); /* open without a token */
	assert_int_equal(r.status, 200);
	reply_free(&r);
	r = req("GET", "/readyz", NULL, NULL);
	assert_int_equal(r.status, 200);
	reply_free(&r);
	r = req("GET", "/metrics", NULL, NULL);
	assert_int_equal(r.status, 401);
	assert_non_null(strcasestr(r.head, "WWW-Authenticate: Bearer"));
	reply_free(&r);
	r = req("GET", "/metrics", "Authorization: Bearer wrong-token-0123456789\r\n", NULL);
	assert_int_equal(r.status, 401);
	reply_free(&r);
	r = req("GET", "/nowhere", AUTH, NULL);
	assert_int_equal(r.status, 404);
	reply_free(&r);
	r = req("DELETE", "/metrics", AUTH, NULL);
	assert_int_equal(r.status, 405);
	reply_free(&r);
	/* a loopback listener: Host must name the loopback; no cross-origin pages */
	int fd = tcp_open();
	const char *h = "GET /healthz HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n";
	assert_int_equal(send(fd, h, strlen(h), MSG_NOSIGNAL), (ssize_t)strlen(h));
	r = read_reply(fd);
	assert_int_equal(r.status, 403);
	reply_free(&r);
	r = req("POST", "/v1/completions", AUTH "Origin: http://attacker.example\r\n", "{}");
	assert_int_equal(r.status, 403);
	reply_free(&r);
}

/* 400s name the field; 404 for a model not configured; 413 past max_frame. */
static void test_bad_requests(void **state)
{
	(void)state;
	char body[512];
	static const struct {
		const char *path, *body, *field, *words;
	} cases[] = {
		{"/v1/completions", "{\"model\": \"M\", \"prompt\": \"x\", \"temperature\": \"hot\"}",
		 "temperature", "expected a number"},
		{"/v1/completions", "{\"model\": \"M\", \"prompt\": \"x\", \"top_p\": 3}", "top_p", "out of range"},
		{"/v1/completions", "{\"model\": \"M\"}", "prompt", "'prompt'"},
		{"/v1/chat/completions", "{\"model\": \"M\"}", "messages", "'messages' is required"},
		{"/v1/chat/completions", "{\"model\": \"M\", \"messages\": [{\"role\": \"cat\", \"content\": \"x\"}]}",
		 "messages[0].role", "not system"},
		{"/v1/chat/completions", "{\"model\": \"M\", \"messages\": [{\"role\": \"user\"}], \"n\": 2}", "n",
		 "out of range"},
		{"/v1/completions", "{\"prompt\": \"x\"}", "model", "'model' is required"},
		{"/v1/completions", "{\"model\": \"M\", \"prompt\": \"x\"", NULL, "not valid JSON"},
		{"/v1/completions", "[1, 2]", NULL, "must be a JSON object"},
		{"/api/generate", "{\"model\": \"M\", \"prompt\": \"x\", \"options\": {\"num_predict\": \"3\"}}",
		 NULL, "'num_predict': expected an integer"},
		{"/api/chat", "{\"model\": \"M\", \"messages\": 5}", NULL, "'messages'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *m = strstr(cases[i].body, "\"M\"");
		if (m)
			snprintf(body, sizeof(body), "%.*s\"%s\"%s", (int)(m - cases[i].body), cases[i].body,
				 W.model_name, m + 3);
		else
			snprintf(body, sizeof(body), "%s", cases[i].body);
		reply r = req("POST", cases[i].path, AUTH, body);
		if (r.status != 400 || !strstr(r.body, cases[i].words))
			fail_msg("case %zu (%s): %d %s", i, body, r.status, r.body);
		if (cases[i].field) {
			json_object *o = parse(r.body);
			assert_string_equal(json_object_get_string(jget(jget(o, "error"), "param")), cases[i].field);
			json_object_put(o);
		}
		reply_free(&r);
	}
	reply r = req("POST", "/v1/completions", AUTH, "{\"model\": \"nope\", \"prompt\": \"x\"}");
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "model_not_found"));
	reply_free(&r);
	char *big = malloc(70000);
	assert_non_null(big);
	memset(big, ' ', 69999);
	big[0] = '{';
	big[69998] = '}';
	big[69999] = 0;
	r = req("POST", "/v1/completions", AUTH, big);
	free(big);
	assert_int_equal(r.status, 413);
	reply_free(&r);
}

/* ---- generation ------------------------------------------------------------ */

static char *gen_body(const char *fmt)
{
	static char b[1024]; /* "M..." becomes the world's model name */
	const char *m = strstr(fmt, "\"M");
	assert_non_null(m);
	snprintf(b, sizeof(b), "%.*s\"%s%s", (int)(m - fmt), fmt, W.model_name, m + 2);
	return b;
}

static void test_openai(void **state)
{
	(void)state;
	reply r = req("POST", "/v1/completions", AUTH,
		      gen_body("{\"model\": \"M\", \"prompt\": \"Once upon a time\", \"max_tokens\": 6, \"temperature\": 0}"));
	assert_int_equal(r.status, 200);
	json_object *o = parse(r.body), *c = json_object_array_get_idx(jget(o, "choices"), 0);
	assert_string_equal(json_object_get_string(jget(o, "object")), "text_completion");
	assert_string_equal(json_object_get_string(jget(c, "finish_reason")), "length");
	assert_int_equal(jint(jget(o, "usage"), "completion_tokens"), 6);
	char text[512];
	snprintf(text, sizeof(text), "%s", json_object_get_string(jget(c, "text")));
	json_object_put(o);
	reply_free(&r);
	/* the same request streamed: the chunks add up to the same text, then usage, then [DONE] */
	r = req("POST", "/v1/completions", AUTH,
		gen_body("{\"model\": \"M\", \"prompt\": \"Once upon a time\", \"max_tokens\": 6, \"temperature\": 0, "
			 "\"stream\": true, \"stream_options\": {\"include_usage\": true}}"));
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "Content-Type: text/event-stream"));
	char joined[512] = "";
	int usage = 0, done = 0;
	for (char *ev = strtok(r.body, "\n"); ev; ev = strtok(NULL, "\n")) {
		assert_int_equal(strncmp(ev, "data: ", 6), 0);
		if (!strcmp(ev + 6, "[DONE]")) {
			done = 1;
			continue;
		}
		json_object *ch = parse(ev + 6), *u = NULL;
		if (json_object_object_get_ex(ch, "usage", &u) && u) {
			usage = (int)jint(u, "completion_tokens");
		} else {
			json_object *c0 = json_object_array_get_idx(jget(ch, "choices"), 0);
			strncat(joined, json_object_get_string(jget(c0, "text")), sizeof(joined) - strlen(joined) - 1);
		}
		json_object_put(ch);
	}
	assert_true(done);
	assert_int_equal(usage, 6);
	assert_string_equal(joined, text);
	reply_free(&r);
	r = req("POST", "/v1/chat/completions", AUTH,
		gen_body("{\"model\": \"M\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
			 " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi\"}]}],"
			 " \"max_tokens\": 4, \"seed\": 7, \"stop\": [\"zzzz\"]}"));
	assert_int_equal(r.status, 200);
	o = parse(r.body);
	c = json_object_array_get_idx(jget(o, "choices"), 0);
	assert_string_equal(json_object_get_string(jget(jget(c, "message"), "role")), "assistant");
	assert_true(jint(jget(o, "usage"), "prompt_tokens") > 4); /* the template's tokens too */
	json_object_put(o);
	reply_free(&r);
}

static void test_ollama(void **state)
{
	(void)state;
	/* streams by default: NDJSON lines, the last one done with the counts */
	reply r = req("POST", "/api/generate", AUTH,
		      gen_body("{\"model\": \"M:latest\", \"prompt\": \"The weather\", \"options\": {\"num_predict\": 5, "
			       "\"temperature\": 0}}"));
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "application/x-ndjson"));
	int lines = 0, last_done = 0;
	for (char *l = strtok(r.body, "\n"); l; l = strtok(NULL, "\n")) {
		json_object *o = parse(l);
		last_done = json_object_get_boolean(jget(o, "done"));
		if (last_done) {
			assert_int_equal(jint(o, "eval_count"), 5);
			assert_string_equal(json_object_get_string(jget(o, "done_reason")), "length");
		}
		lines++;
		json_object_put(o);
	}
	assert_true(last_done && lines >= 2);
	reply_free(&r);
	r = req("POST", "/api/chat", AUTH,
		gen_body("{\"model\": \"M\", \"stream\": false, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}],"
			 " \"options\": {\"num_predict\": 3, \"seed\": 5}}"));
	assert_int_equal(r.status, 200);
	json_object *o = parse(r.body);
	assert_true(json_object_get_boolean(jget(o, "done")));
	assert_string_equal(json_object_get_string(jget(jget(o, "message"), "role")), "assistant");
	json_object_put(o);
	reply_free(&r);
	/* the model lists */
	char want[96];
	snprintf(want, sizeof(want), "\"%s:latest\"", W.model_name);
	const char *paths[] = {"/api/tags", "/api/ps", "/v1/models"};
	for (int i = 0; i < 3; i++) {
		r = req("GET", paths[i], AUTH, NULL);
		assert_int_equal(r.status, 200);
		assert_non_null(strstr(r.body, i < 2 ? want : W.model_name));
		reply_free(&r);
	}
	r = req("POST", "/api/show", AUTH, gen_body("{\"model\": \"M\"}"));
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "llama.context_length"));
	reply_free(&r);
}

/* ---- the seed's endpoints and /metrics: herdctl's numbers ---------------- */

static void test_seed_endpoints_and_metrics(void **state)
{
	(void)state;
	reply r = req("POST", "/v1/completions", AUTH,
		      gen_body("{\"model\": \"M\", \"prompt\": \"Metrics\", \"max_tokens\": 3}"));
	assert_int_equal(r.status, 200);
	reply_free(&r);
	/* idle now: the counters stand still between the HTTP and the admin reads */
	r = req("GET", "/api/v1/batch/metrics", AUTH, NULL);
	assert_int_equal(r.status, 200);
	json_object *b = parse(r.body), *m0 = json_object_array_get_idx(jget(b, "models"), 0);
	json_object *tot = jget(m0, "total");
	const int64_t tokens = jint(tot, "tokens_gen"), steps = jint(tot, "steps");
	const int64_t ttft_n = jint(jget(tot, "ttft_ms"), "n");
	assert_int_equal((uint64_t)tokens, status_u64("tokens"));
	assert_int_equal((uint64_t)steps, status_u64("steps"));
	int64_t hist = 0;
	for (size_t k = 0; k < json_object_array_length(jget(tot, "step_hist")); k++)
		hist += json_object_get_int64(json_object_array_get_idx(jget(tot, "step_hist"), k));
	assert_int_equal(hist, steps);
	jget(jget(m0, "recent"), "tpot_ms");
	json_object_put(b);
	reply_free(&r);
	r = req("GET", "/api/v1/cache/stats", AUTH, NULL);
	assert_int_equal(r.status, 200);
	json_object *c = parse(r.body);
	assert_int_equal((uint64_t)jint(jget(c, "prefix"), "lookups"), bh_admin_u("cache", "prefix", "lookups"));
	assert_int_equal((uint64_t)jint(c, "used_bytes"), bh_admin_u("cache", NULL, "used_bytes"));
	json_object *cm = json_object_array_get_idx(jget(c, "models"), 0);
	assert_true(json_object_get_boolean(jget(cm, "resident")));
	assert_true(jint(cm, "image_bytes") > 0);
	jget(cm, "score");
	jget(jget(c, "response_cache"), "hit_rate");
	jget(jget(c, "prefix"), "bytes_cached");
	json_object_put(c);
	reply_free(&r);
	r = req("GET", "/metrics", AUTH, NULL);
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "Content-Type: text/plain; version=0.0.4"));
	static prom pr;
	prom_parse(&pr, r.body);
	assert_true(pr.n_families >= 30);
	char key[256];
	snprintf(key, sizeof(key), "herd_generated_tokens_total{model=\"%s\"}", W.model_name);
	assert_true(prom_get(&pr, key) == (double)tokens);
	snprintf(key, sizeof(key), "herd_ttft_seconds_count{model=\"%s\"}", W.model_name);
	assert_true(prom_get(&pr, key) == (double)ttft_n);
	snprintf(key, sizeof(key), "herd_batch_size_count{model=\"%s\"}", W.model_name);
	assert_true(prom_get(&pr, key) == (double)steps);
	snprintf(key, sizeof(key), "herd_model_resident{model=\"%s\"}", W.model_name);
	assert_true(prom_get(&pr, key) == 1);
	assert_true(prom_get(&pr, "herd_http_requests_total{code=\"2xx\"}") > 0);
	assert_true(prom_get(&pr, "herd_process_pss_bytes{}") > 0);
	reply_free(&r);
	/* herdctl status counts the HTTP side too */
	assert_true(bh_admin_u("status", NULL, "http_requests") > 0);
	assert_true(bh_admin_u("status", NULL, "http_agents") >= 1);
}

/* ---- per-agent limits and clients that go away --------------------------- */

/* A streamed request left open: its reply's head is read, the rest waits. */
static int open_stream(const char *agent)
{
	char hdr[256];
	snprintf(hdr, sizeof(hdr), AUTH "X-Herd-Agent: %s\r\n", agent);
	int fd = tcp_open();
	const char *body = gen_body("{\"model\": \"M\", \"prompt\": \"Long story\", \"max_tokens\": 100000, "
				    "\"temperature\": 0.5, \"stream\": true}");
	send_req(fd, "POST", "/v1/completions", hdr, body, strlen(body));
	char head[4096];
	size_t n = 0;
	while (n < sizeof(head) - 1) {
		ssize_t k = recv(fd, head + n, 1, 0);
		assert_true(k == 1);
		n++;
		head[n] = 0;
		if (n >= 4 && !memcmp(head + n - 4, "\r\n\r\n", 4))
			break;
	}
	assert_non_null(strstr(head, " 200 "));
	return fd;
}

/* Sequences running or waiting now; *cancelled: requests cancelled so far. */
static int64_t running_now_c(int64_t *cancelled)
{
	reply r = req("GET", "/api/v1/batch/metrics", AUTH, NULL);
	json_object *b = parse(r.body), *m = json_object_array_get_idx(jget(b, "models"), 0);
	int64_t n = jint(m, "running") + jint(m, "waiting");
	if (cancelled)
		*cancelled = jint(jget(m, "total"), "requests_cancelled");
	if (getenv("HTTP_TEST_DEBUG"))
		fprintf(stderr, "running %lld waiting %lld done %lld cancelled %lld\n", (long long)jint(m, "running"),
			(long long)jint(m, "waiting"), (long long)jint(jget(m, "total"), "requests_done"),
			(long long)jint(jget(m, "total"), "requests_cancelled"));
	json_object_put(b);
	reply_free(&r);
	return n;
}

static int64_t running_now(void)
{
	return running_now_c(NULL);
}

static void test_agent_limit_and_disconnect(void **state)
{
	(void)state;
	int64_t cancelled0, cancelled1;
	running_now_c(&cancelled0);
	int a = open_stream("lim"), b2 = open_stream("lim");
	/* agents.max_queued is 2: a third request of the same agent is refused... */
	reply r = req("POST", "/v1/completions", AUTH "X-Herd-Agent: lim\r\n",
		      gen_body("{\"model\": \"M\", \"prompt\": \"x\", \"max_tokens\": 2}"));
	assert_int_equal(r.status, 429);
	assert_non_null(strstr(r.body, "agents.max_queued"));
	reply_free(&r);
	/* ...while another agent is served */
	r = req("POST", "/v1/completions", AUTH "X-Herd-Agent: other\r\n",
		gen_body("{\"model\": \"M\", \"prompt\": \"x\", \"max_tokens\": 2}"));
	assert_int_equal(r.status, 200);
	reply_free(&r);
	/* a long request whose whole answer is awaited, from a client that leaves */
	int c = tcp_open();
	/* the streams' request, which ran for seconds without an end-of-sequence token */
	const char *body = gen_body("{\"model\": \"M\", \"prompt\": \"Long story\", \"max_tokens\": 100000, "
				    "\"temperature\": 0.5, \"stream\": false}");
	send_req(c, "POST", "/v1/completions", AUTH "X-Herd-Agent: waiter\r\n", body, strlen(body));
	for (int i = 0; i < 200 && running_now() < 3; i++)
		usleep(20000);
	/* the clients go away: their requests are cancelled, the agent may ask again */
	close(a);
	close(b2);
	close(c);
	int64_t left = -1;
	for (int i = 0; i < 400 && (left = running_now_c(&cancelled1)) > 0; i++)
		usleep(50000);
	assert_int_equal(left, 0);
	for (int i = 0; i < 100 && cancelled1 - cancelled0 < 3; i++) { /* the counters settle */
		usleep(50000);
		running_now_c(&cancelled1);
	}
	if (cancelled1 - cancelled0 != 3) {
		dump_log();
		fail_msg("%lld requests cancelled, expected 3 (none ran to its end)",
			 (long long)(cancelled1 - cancelled0));
	}
	r = req("POST", "/v1/completions", AUTH "X-Herd-Agent: lim\r\n",
		gen_body("{\"model\": \"M\", \"prompt\": \"x\", \"max_tokens\": 2}"));
	assert_int_equal(r.status, 200);
	reply_free(&r);
	assert_true(bh_admin_u("batch", NULL, "window_s") > 0);
}

/* SIGTERM with a stream open: the stream ends properly (its last chunk,
 * [DONE]) and herdd exits 0. The last test: the broker is gone after it. */
static void test_shutdown_ends_streams(void **state)
{
	(void)state;
	int fd = open_stream("bye");
	assert_int_equal(kill(W.pid, SIGTERM), 0);
	reply r = read_reply_body(fd);
	assert_non_null(strstr(r.body, "\"finish_reason\":\"stop\""));
	assert_non_null(strstr(r.body, "data: [DONE]"));
	reply_free(&r);
	int st = 0;
	assert_int_equal(waitpid(W.pid, &st, 0), W.pid);
	W.pid = 0;
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- configuration ------------------------------------------------------- */

static void test_config(void **state)
{
	(void)state;
	static const struct {
		const char *json, *words;
	} bad[] = {
		{"{\"http\": {\"listen\": \"0.0.0.0:8077\"}}", "not a loopback address"},
		{"{\"http\": {\"listen\": \"example.com:80\"}}", "IPv4 literal"},
		{"{\"http\": {\"listen\": \"127.0.0.1:99999\"}}", "0..65535"},
		{"{\"http\": {\"listen\": \"127.0.0.1\"}}", "HOST:PORT"},
		{"{\"http\": {\"port\": 1}}", "unknown key 'http.port'"},
		{"{\"http\": {\"tokens\": [{\"name\": \"a\", \"token\": \"short\"}]}}", "http.tokens[0].token"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg c;
		cfg_init(&c);
		char err[512] = "";
		int rc = cfg_parse_json(&c, bad[i].json, err, sizeof(err));
		if (!rc) {
			cfg_add_model_spec(&c, "m=/x.gguf", err, sizeof(err));
			cfg_env env = {0};
			rc = cfg_finish(&c, &env, err, sizeof(err));
		}
		if (!rc || !strstr(err, bad[i].words))
			fail_msg("config %s: rc %d, '%s'", bad[i].json, rc, err);
		cfg_fini(&c);
	}
	cfg c;
	cfg_init(&c);
	char err[512] = "";
	assert_int_equal(cfg_parse_json(&c, "{\"http\": {\"listen\": \"[::]:8077\", \"tokens\": [{\"name\": \"ci\","
					     " \"token\": \"0123456789abcdef\"}], \"ui\": false}}", err, sizeof(err)), 0);
	assert_int_equal(c.http.n_tokens, 1);
	assert_int_equal(c.http.ui, 0);
	cfg_fini(&c);
}

int main(void)
{
	const struct CMUnitTest unit[] = {
		cmocka_unit_test(test_prom_parser_strict),
		cmocka_unit_test(test_config),
	};
	const struct CMUnitTest live[] = {
		cmocka_unit_test(test_health_and_auth),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_openai),
		cmocka_unit_test(test_ollama),
		cmocka_unit_test(test_seed_endpoints_and_metrics),
		cmocka_unit_test(test_agent_limit_and_disconnect),
		cmocka_unit_test(test_shutdown_ends_streams),
	};
	int rc = cmocka_run_group_tests_name("http_unit", unit, NULL, NULL);
	return rc | cmocka_run_group_tests_name("http_live", live, setup, teardown);
}
