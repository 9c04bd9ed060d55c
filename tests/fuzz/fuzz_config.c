/* libFuzzer target: the herdd JSON configuration (broker/config.h) on
 * arbitrary text.
 *
 * The input, as a NUL-terminated copy, goes through cfg_init,
 * cfg_parse_json and, when it parses, cfg_finish (environment defaults and
 * validation); cfg_fini must release everything on every path. A parse
 * failure must say why. When everything succeeds the result is checked
 * against the documented invariants. Deterministic for a fixed
 * environment; no global state. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/config.h"
#include "herd/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	check(text != NULL);
	memcpy(text, data, size);
	text[size] = 0;
	cfg c;
	char err[512];
	err[0] = 0;
	cfg_init(&c);
	int rc = cfg_parse_json(&c, text, err, sizeof(err));
	if (rc) {
		check(rc == HERD_E_FORMAT || rc == -ENOMEM);
		check(rc != HERD_E_FORMAT || err[0] != 0);
	} else {
		check(c.n_models >= 0 && (c.n_models == 0 || c.models != NULL));
		for (int i = 0; i < c.n_models; i++) {
			const cfg_model *m = &c.models[i];
			check(m->name && m->file);
			const size_t nl = strlen(m->name);
			check(nl >= 1 && nl <= 63 && m->name[0] != '.');
			for (int j = 0; j < i; j++)
				check(strcmp(c.models[j].name, m->name) != 0); /* replaced by name */
		}
		err[0] = 0;
		/* fixed environment values: the defaults never depend on the host */
		const cfg_env env = {.runtime_dir = "/run/user/1000", .state_home = NULL,
				     .home = "/home/fuzz"};
		rc = cfg_finish(&c, &env, err, sizeof(err));
		if (rc == 0)
			check(c.socket_path && c.state_dir && c.n_models >= 1 &&
			      c.max_batch_size >= 1 && c.max_batch_size <= 256 && c.max_frame >= 4096);
		else
			check((rc == HERD_E_INVAL && err[0] != 0) || rc == -ENOMEM);
	}
	cfg_fini(&c);
	free(text);
	return 0;
}
