/* herd tokenize: ids of TEXT on one line. Works on vocabulary-only GGUFs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"

int cmd_tokenize(int argc, char **argv)
{
	const char *model = NULL, *text = NULL;
	int bos = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-m") && i + 1 < argc)
			model = argv[++i];
		else if (!strcmp(argv[i], "--no-bos"))
			bos = 0;
		else if (!strcmp(argv[i], "--") && i + 1 < argc && !text)
			text = argv[++i];
		else if (!text && (argv[i][0] != '-' || argv[i][1] == '\0'))
			text = argv[i];
		else {
			fprintf(stderr, "herd tokenize: unexpected argument '%s'\n"
					"usage: herd tokenize -m MODEL [--no-bos] TEXT\n", argv[i]);
			return 2;
		}
	}
	if (!model || !text) {
		fprintf(stderr, "usage: herd tokenize -m MODEL [--no-bos] TEXT\n");
		return 2;
	}
	char err[512] = "";
	gguf_ctx *g = NULL;
	tok_vocab *v = NULL;
	int32_t *ids = NULL;
	int n = 0, rc = gguf_open(&g, model, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herd tokenize: cannot open '%s': %s\n", model, err);
		return 1;
	}
	rc = tok_create(&v, g, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herd tokenize: '%s': %s\n", model, err);
		gguf_close(g);
		return 1;
	}
	rc = cli_tokenize(v, text, bos, &ids, &n);
	if (rc)
		fprintf(stderr, "herd tokenize: %s\n", herd_strerror(rc));
	for (int i = 0; i < n; i++)
		printf(i ? " %d" : "%d", ids[i]);
	if (!rc)
		printf("\n");
	free(ids);
	tok_destroy(v);
	gguf_close(g);
	return rc ? 1 : 0;
}
