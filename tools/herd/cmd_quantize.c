/* herd quantize IN OUT -t TYPE: model/quantize.h does the work; this
 * parses options, draws the progress bar on a terminal and reports every
 * tensor that fell back to another type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "herd/error.h"
#include "model/quantize.h"

typedef struct qcli {
	int tty, verbose, n_fallback, n_tensors, n_own;
} qcli;

static void q_usage(FILE *f)
{
	fprintf(f,
		"usage: herd quantize IN OUT -t TYPE [options]\n"
		"  -t TYPE               a llama.cpp file type (Q4_K_M, Q8_0, Q3_K_S, ...) or any\n"
		"                        weight type (herd quantize --types lists them)\n"
		"  --calib TOKENS        int32 [n][L] token streams: importance matrix and GPTQ\n"
		"                        error feedback from the model's real activations\n"
		"  --calib-len L         stream length of TOKENS (default 128)\n"
		"  --imatrix FILE        llama.cpp importance matrix: read it, or with --calib\n"
		"                        write the computed one there\n"
		"  --tensor-type S=TYPE  tensors whose name contains S get TYPE (repeatable)\n"
		"  --threads N           threads (default: every CPU)\n"
		"  -t auto --target-bytes N | --target-bpw X\n"
		"                        each tensor's type from its measured KL per byte (needs\n"
		"                        --calib; one evaluation per candidate: small models)\n"
		"  --mix-streams N       calibration streams the sensitivities use (default 8)\n"
		"  --standard-only       only GGUF types llama.cpp loads (no herd HQ* fallbacks)\n"
		"  -v                    report every tensor, not only fallbacks\n");
}

static void q_note(void *user, const quant_note *n)
{
	qcli *q = user;
	q->n_tensors++;
	const int fell = n->got != n->wanted;
	q->n_fallback += fell;
	q->n_own += n->got >= KERN_TYPE_HERD_FIRST;
	if (!fell && !q->verbose)
		return;
	fprintf(stderr, "%s%-28s [%5lld x %6lld] %-5s -> %-5s (%s)", q->tty ? "\r\033[K" : "", n->name,
		(long long)n->ne0, (long long)n->ne1, kern_type_name(n->src), kern_type_name(n->got),
		n->how);
	if (fell)
		fprintf(stderr, ": fallback, %s's block of %d does not divide the row of %lld",
			kern_type_name(n->wanted), kern_type_info(n->wanted)->blck_size, (long long)n->ne0);
	fputc('\n', stderr);
}

static void q_progress(void *user, int done, int total, const char *name)
{
	qcli *q = user;
	if (!q->tty || total <= 0)
		return;
	const int w = 30, k = done * w / total;
	fprintf(stderr, "\r\033[K[%.*s%*s] %d/%d %s", k, "##############################", w - k, "",
		done, total, name);
	if (done == total)
		fputc('\n', stderr);
}

/* --target-bytes N / --target-bpw X. */
static int q_target(const char *a, const char *v, quant_opts *o)
{
	int ok = 1;
	double x = 0;
	if (!strcmp(a, "--target-bytes"))
		o->target_bytes = (size_t)cli_u64_or(v, &ok);
	else
		ok = !cli_float(a, v, &x) && x > 0 && x <= 32;
	if (x > 0)
		o->target_bpw = x;
	if (!ok || (!o->target_bytes && !o->target_bpw)) {
		fprintf(stderr, "herd quantize: %s expects %s, got '%s'\n", a,
			a[9] == 'y' ? "a positive byte count" : "bits per weight in (0, 32]", v);
		return 2;
	}
	return 0;
}

static int q_args(int argc, char **argv, quant_opts *o, const char **in, const char **out, qcli *q)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long n;
		if (!strcmp(a, "-v") || !strcmp(a, "--standard-only")) {
			*(a[1] == 'v' ? &q->verbose : &o->standard_only) = 1;
			continue;
		}
		if (a[0] != '-') {
			if (*in && *out) {
				fprintf(stderr, "herd quantize: unexpected argument '%s'\n", a);
				return 2;
			}
			*(*in ? out : in) = a;
			continue;
		}
		if (!v) {
			fprintf(stderr, "herd quantize: unknown option or missing value: '%s'\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "-t") || !strcmp(a, "--type"))
			o->type = v;
		else if (!strcmp(a, "--calib"))
			o->calib = v;
		else if (!strcmp(a, "--imatrix"))
			o->imatrix_in = v;
		else if (!strcmp(a, "--calib-len") || !strcmp(a, "--threads") ||
			 !strcmp(a, "--mix-streams")) {
			if (cli_int(a, v, 1, 65536, &n))
				return 2;
			*(a[2] == 'c' ? &o->calib_len : a[2] == 't' ? &o->n_threads : &o->mix_streams) = (int)n;
		} else if (!strcmp(a, "--target-bytes") || !strcmp(a, "--target-bpw")) {
			if (q_target(a, v, o))
				return 2;
		} else if (!strcmp(a, "--tensor-type") && o->n_overrides < QUANT_MAX_OVERRIDES)
			o->overrides[o->n_overrides++] = v;
		else {
			fprintf(stderr, "herd quantize: unknown option '%s'\n", a);
			return 2;
		}
	}
	if (!o->type && (o->target_bytes || o->target_bpw))
		o->type = "auto";
	if (!*in || !*out || !o->type) {
		fprintf(stderr, "herd quantize: missing %s\n", !*in ? "IN" : !*out ? "OUT" : "-t TYPE");
		return 2;
	}
	if (o->calib && o->imatrix_in) { /* with --calib, --imatrix names the output */
		o->imatrix_out = o->imatrix_in;
		o->imatrix_in = NULL;
	}
	return 0;
}

int cmd_quantize(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		q_usage(stdout);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "--types")) {
		kern_ops ops;
		char names[1024];
		kern_ops_init(&ops, kern_isa_detect());
		quant_weight_type_names(&ops, names, sizeof(names));
		printf("weight types: %s\n", names);
		return 0;
	}
	qcli q = {.tty = isatty(2)};
	quant_opts o = {.note = q_note, .progress = q_progress, .user = &q};
	const char *in = NULL, *out = NULL;
	if (q_args(argc, argv, &o, &in, &out, &q)) {
		q_usage(stderr);
		return 2;
	}
	char err[1024] = "";
	const int rc = quant_model(in, out, &o, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "%sherd quantize: %s\n", q.tty ? "\r\033[K" : "", err);
		return rc == HERD_E_UNSUPPORTED || rc == HERD_E_INVAL ? 2 : 1;
	}
	if (q.n_own)
		fprintf(stderr, "herd quantize: warning: %d tensors use herd's own types (HQ*): llama.cpp "
				"cannot load %s (use --standard-only for a file it loads)\n", q.n_own, out);
	struct stat si, so;
	if (!stat(in, &si) && !stat(out, &so))
		fprintf(stderr, "herd quantize: %s (%lld bytes) -> %s (%lld bytes, %s), %d tensors, %d "
				"fell back\n", in, (long long)si.st_size, out, (long long)so.st_size, o.type,
			q.n_tensors, q.n_fallback);
	return 0;
}
