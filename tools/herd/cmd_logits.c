/* herd logits: the logits at every prompt position, in the fixtures' format:
 * OUT = float32 LE [n_tokens][n_vocab], OUT.tokens = int32 LE ids. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"

static int write_all(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "herd logits: cannot create '%s': %s\n", path, strerror(errno));
		return -1;
	}
	int bad = fwrite(data, 1, size, f) != size;
	bad |= fclose(f) != 0;
	if (bad) {
		fprintf(stderr, "herd logits: cannot write '%s': %s\n", path, strerror(errno));
		remove(path);
		return -1;
	}
	return 0;
}

int cmd_logits(int argc, char **argv)
{
	const char *model = NULL, *prompt = NULL, *out = NULL;
	long threads = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-m") && next)
			model = argv[++i];
		else if (!strcmp(a, "-p") && next)
			prompt = argv[++i];
		else if (!strcmp(a, "-o") && next)
			out = argv[++i];
		else if (!strcmp(a, "-t")) {
			if (cli_int(a, next, 0, 4096, &threads))
				return 2;
			i++;
		} else {
			fprintf(stderr, "herd logits: unknown or incomplete option '%s'\n"
					"usage: herd logits -m MODEL -p TEXT -o OUT [-t THREADS]\n", a);
			return 2;
		}
	}
	if (!model || !prompt || !out) {
		fprintf(stderr, "usage: herd logits -m MODEL -p TEXT -o OUT [-t THREADS]\n");
		return 2;
	}
	llama_model *m;
	llama_ctx *c;
	if (cli_load(model, (int)threads, 0, &m, &c))
		return 1;
	int32_t *ids = NULL;
	float *logits = NULL;
	int n = 0, rc = 1;
	llama_seq seq;
	llama_seq_init(&seq);
	char *tpath = NULL;
	int err = cli_tokenize(m->vocab, prompt, 1, &ids, &n);
	if (err || n > llama_ctx_n_ctx(c)) {
		fprintf(stderr, "herd logits: cannot tokenize the prompt or it exceeds the context: %s\n",
			herd_strerror(err ? err : HERD_E_NOSPACE));
		goto out;
	}
	const size_t V = (size_t)m->hp.n_vocab;
	logits = malloc(sizeof(float) * V * n);
	tpath = malloc(strlen(out) + 8);
	if (!logits || !tpath)
		goto out;
	err = llama_eval(c, &seq, ids, n, 1, logits);
	if (err) {
		fprintf(stderr, "herd logits: evaluation failed: %s\n", herd_strerror(err));
		goto out;
	}
	sprintf(tpath, "%s.tokens", out);
	if (write_all(out, logits, sizeof(float) * V * n) || write_all(tpath, ids, sizeof(int32_t) * n))
		goto out;
	fprintf(stderr, "herd logits: %d tokens x %zu logits written to %s\n", n, V, out);
	rc = 0;
out:
	free(tpath);
	free(logits);
	free(ids);
	llama_seq_reset(c, &seq);
	llama_ctx_destroy(c);
	llama_model_destroy(m);
	return rc;
}
