/* The "http" object of the configuration (config.c calls these; the
 * struct is in config.h). */
#ifndef HERD_BROKER_CONFIG_HTTP_H
#define HERD_BROKER_CONFIG_HTTP_H

#include <json-c/json.h>

#include "broker/config.h"

/* Applies the keys of o over h (messages name "http.KEY"). */
int cfg_parse_http(cfg_http *h, json_object *o, char *err, size_t errlen);
/* At cfg_finish: the listen address parses, and a non-loopback one has
 * tokens. */
int cfg_http_check(const cfg_http *h, char *err, size_t errlen);
void cfg_http_fini(cfg_http *h);

#endif
