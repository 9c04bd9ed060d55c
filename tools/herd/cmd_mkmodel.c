/* herd mkmodel: write a deterministic random-weight LLaMA model (a demo:
 * no weights can be downloaded). Exit 0 on success, 1 when the model could
 * not be made, 2 for a usage error. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "herd/error.h"
#include "model/ftype.h"
#include "model/mkmodel.h"

static void mk_usage(FILE *f)
{
	fprintf(f,
		"usage: herd mkmodel --shape %s -t TYPE -o OUT [--vocab GGUF] [--seed N] "
		"[--threads N]\n"
		"  --shape S      model shape: tinyllama-1.1b (TinyLlama-1.1B's) or mini (tests)\n"
		"  -t, --type T   file type: %s\n"
		"  -o, --out F    output GGUF path (written atomically)\n"
		"  --vocab GGUF   copy the tokenizer from this GGUF (default: a synthetic one)\n"
		"  --seed N       weight seed (default 0)\n"
		"  --threads N    threads (default: one per CPU)\n",
		mkmodel_shape_names(), ftype_names());
}

int cmd_mkmodel(int argc, char **argv)
{
	mkmodel_opts o = {0};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			mk_usage(stdout);
			return 0;
		}
		const int has_val = i + 1 < argc;
		const char *v = has_val ? argv[i + 1] : NULL;
		if (!strcmp(a, "--shape") || !strcmp(a, "-t") || !strcmp(a, "--type") ||
		    !strcmp(a, "-o") || !strcmp(a, "--out") || !strcmp(a, "--vocab") ||
		    !strcmp(a, "--seed") || !strcmp(a, "--threads")) {
			if (!has_val) {
				fprintf(stderr, "herd mkmodel: %s needs a value\n", a);
				mk_usage(stderr);
				return 2;
			}
			i++;
		} else {
			fprintf(stderr, "herd mkmodel: unexpected argument '%s'\n", a);
			mk_usage(stderr);
			return 2;
		}
		if (!strcmp(a, "--shape")) {
			o.shape = v;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--type")) {
			o.ftype = v;
		} else if (!strcmp(a, "-o") || !strcmp(a, "--out")) {
			o.out_path = v;
		} else if (!strcmp(a, "--vocab")) {
			o.vocab_path = v;
		} else if (!strcmp(a, "--seed")) {
			int ok;
			o.seed = cli_u64_or(v, &ok);
			if (!ok) {
				fprintf(stderr, "herd mkmodel: --seed expects an unsigned integer, got '%s'\n",
					v);
				return 2;
			}
		} else {
			long n;
			if (cli_int("--threads", v, 1, 1024, &n))
				return 2;
			o.n_threads = (int)n;
		}
	}
	if (!o.shape || !o.ftype || !o.out_path) {
		fprintf(stderr, "herd mkmodel: missing %s\n",
			!o.shape ? "--shape" : !o.ftype ? "-t TYPE" : "-o OUT");
		mk_usage(stderr);
		return 2;
	}
	if (!mkmodel_shape_find(o.shape)) {
		fprintf(stderr, "herd mkmodel: unknown shape '%s' (known: %s)\n", o.shape,
			mkmodel_shape_names());
		return 2;
	}
	ftype_id ft;
	if (ftype_parse(o.ftype, &ft)) {
		fprintf(stderr, "herd mkmodel: unknown type '%s' (known: %s)\n", o.ftype,
			ftype_names());
		return 2;
	}
	char err[1024] = "";
	const int rc = mkmodel_write(&o, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herd mkmodel: %s (%s)\n", err[0] ? err : "failed",
			herd_strerror(rc));
		return 1;
	}
	fprintf(stderr, "herd mkmodel: wrote %s (%s, %s, random weights, seed %llu)\n", o.out_path,
		o.shape, ftype_name(ft), (unsigned long long)o.seed);
	return 0;
}
