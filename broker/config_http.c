/* The "http" object: listen address, bearer tokens, the dashboard switch. */
#include "config_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "herd/error.h"

void cfg_http_fini(cfg_http *h)
{
	free(h->listen);
	for (int i = 0; i < h->n_tokens; i++) {
		free(h->tokens[i].name);
		if (h->tokens[i].token) /* a secret: not left in freed memory */
			memset(h->tokens[i].token, 0, strlen(h->tokens[i].token));
		free(h->tokens[i].token);
	}
	free(h->tokens);
	memset(h, 0, sizeof(*h));
}

static int want(json_object *v, json_type t, const char *key, const char *what, char *err,
		size_t errlen)
{
	if (json_object_get_type(v) != t)
		return herd_errf(err, errlen, HERD_E_FORMAT, "key '%s': expected %s, got %s", key, what,
				 json_type_to_name(json_object_get_type(v)));
	return 0;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
		    !(s[i] >= '0' && s[i] <= '9') && !strchr("._+-", s[i]))
			return 0;
	return 1;
}

static int token_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < CFG_HTTP_TOKEN_MIN || n > CFG_HTTP_TOKEN_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return 0;
	return 1;
}

/* One entry of http.tokens: {"name": ..., "token": ...}. */
static int parse_token(cfg_http_token *t, json_object *o, size_t i, char *err, size_t errlen)
{
	char key[64];
	snprintf(key, sizeof(key), "http.tokens[%zu]", i);
	int rc = want(o, json_type_object, key, "an object {\"name\", \"token\"}", err, errlen);
	if (rc)
		return rc;
	json_object_object_foreach(o, k, v)
	{
		char **dst = !strcmp(k, "name") ? &t->name : !strcmp(k, "token") ? &t->token : NULL;
		if (!dst)
			return herd_errf(err, errlen, HERD_E_FORMAT, "%s: unknown key '%.60s' (known: name, token)",
					 key, k);
		if ((rc = want(v, json_type_string, key, "string values", err, errlen)))
			return rc;
		free(*dst);
		if (!(*dst = strdup(json_object_get_string(v))))
			return -ENOMEM;
	}
	if (!t->name || !name_ok(t->name))
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "%s.name: missing or not 1..63 of [A-Za-z0-9._+-]", key);
	if (!t->token || !token_ok(t->token))
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "%s.token: missing or not %d..%d printable bytes without spaces", key,
				 CFG_HTTP_TOKEN_MIN, CFG_HTTP_TOKEN_MAX);
	return 0;
}

static int parse_tokens(cfg_http *h, json_object *arr, char *err, size_t errlen)
{
	int rc = want(arr, json_type_array, "http.tokens", "an array", err, errlen);
	if (rc)
		return rc;
	const size_t n = json_object_array_length(arr);
	if (n > 1024)
		return herd_errf(err, errlen, HERD_E_FORMAT, "http.tokens: %zu entries, at most 1024", n);
	cfg_http_token *t = calloc(n ? n : 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (int i = 0; i < h->n_tokens; i++) { /* a second "tokens" key replaces the first */
		free(h->tokens[i].name);
		free(h->tokens[i].token);
	}
	free(h->tokens);
	h->tokens = t;
	h->n_tokens = (int)n;
	for (size_t i = 0; i < n; i++)
		if ((rc = parse_token(&t[i], json_object_array_get_idx(arr, i), i, err, errlen)))
			return rc;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (!strcmp(t[i].name, t[j].name) || !strcmp(t[i].token, t[j].token))
				return herd_errf(err, errlen, HERD_E_FORMAT,
						 "http.tokens[%zu]: the same name or token as http.tokens[%zu]", i, j);
	return 0;
}

int cfg_parse_http(cfg_http *h, json_object *o, char *err, size_t errlen)
{
	int rc = want(o, json_type_object, "http", "an object", err, errlen);
	if (rc)
		return rc;
	json_object_object_foreach(o, k, v)
	{
		if (!strcmp(k, "listen")) {
			if ((rc = want(v, json_type_string, "http.listen", "a string \"HOST:PORT\"", err, errlen)))
				return rc;
			free(h->listen);
			if (!(h->listen = strdup(json_object_get_string(v))))
				return -ENOMEM;
		} else if (!strcmp(k, "tokens")) {
			if ((rc = parse_tokens(h, v, err, errlen)))
				return rc;
		} else if (!strcmp(k, "ui")) {
			if ((rc = want(v, json_type_boolean, "http.ui", "a boolean", err, errlen)))
				return rc;
			h->ui = json_object_get_boolean(v);
		} else {
			return herd_errf(err, errlen, HERD_E_FORMAT,
					 "unknown key 'http.%.60s' (known: listen, tokens, ui)", k);
		}
	}
	return 0;
}

/* PORT of "...:PORT" (0..65535). */
static int parse_port(const char *s, const char *listen, int *port, char *err, size_t errlen)
{
	char *end;
	errno = 0;
	long p = strtol(s, &end, 10);
	if (!*s || *end || errno || p < 0 || p > 65535)
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "http.listen '%.80s': the port must be 0..65535", listen);
	*port = (int)p;
	return 0;
}

int cfg_http_addr(const char *listen, struct sockaddr_storage *sa, unsigned *salen, int *loopback,
		  char *err, size_t errlen)
{
	char host[64];
	const char *colon = strrchr(listen, ':');
	size_t hl = colon ? (size_t)(colon - listen) : 0;
	if (!colon || hl == 0 || hl >= sizeof(host))
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "http.listen '%.80s': expected HOST:PORT (e.g. 127.0.0.1:8077)", listen);
	memcpy(host, listen, hl);
	host[hl] = 0;
	int port = 0, rc = parse_port(colon + 1, listen, &port, err, errlen);
	if (rc)
		return rc;
	memset(sa, 0, sizeof(*sa));
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
	if (!strcmp(host, "localhost"))
		snprintf(host, sizeof(host), "127.0.0.1");
	if (host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = 0;
		if (inet_pton(AF_INET6, host + 1, &v6->sin6_addr) != 1)
			goto bad;
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		*salen = sizeof(*v6);
		*loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
		return 0;
	}
	if (inet_pton(AF_INET, host, &v4->sin_addr) != 1)
		goto bad;
	v4->sin_family = AF_INET;
	v4->sin_port = htons((uint16_t)port);
	*salen = sizeof(*v4);
	*loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
	return 0;
bad:
	return herd_errf(err, errlen, HERD_E_FORMAT,
			 "http.listen '%.80s': HOST must be an IPv4 literal, a [bracketed] IPv6 literal "
			 "or localhost", listen);
}

int cfg_http_check(const cfg_http *h, char *err, size_t errlen)
{
	if (!h->listen)
		return 0;
	struct sockaddr_storage sa;
	unsigned len;
	int lo, rc = cfg_http_addr(h->listen, &sa, &len, &lo, err, errlen);
	if (rc)
		return rc;
	if (!lo && h->n_tokens == 0)
		return herd_errf(err, errlen, HERD_E_FORMAT,
				 "http.listen '%.80s' is not a loopback address: set http.tokens (bearer "
				 "tokens) to listen there", h->listen);
	return 0;
}
