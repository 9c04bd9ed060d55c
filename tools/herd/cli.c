#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herd/error.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"
#include "model/convert.h"

int cli_env_read(cli_env *e)
{
	e->force_ref = getenv("HERD_FORCE_REF") != NULL;
	e->no_repack = getenv("HERD_NO_REPACK") != NULL;
	e->max_isa = 0;
	const char *isa = getenv("HERD_ISA");
	if (!isa || !*isa)
		return 0;
	if (!strcmp(isa, "ref")) {
		e->force_ref = 1;
	} else if (!strcmp(isa, "avx2")) {
		e->max_isa = KERN_ISA_AVX2;
	} else if (!strcmp(isa, "avx512")) {
		e->max_isa = KERN_ISA_AVX512;
	} else {
		fprintf(stderr, "herd: HERD_ISA must be ref, avx2 or avx512, got '%.32s'\n", isa);
		return -1;
	}
	return 0;
}

int cli_repack_policy(const cli_env *e)
{
	if (e->no_repack)
		return 0;
	return e->max_isa ? kern_repack_policy(kern_isa_clamp((kern_isa)e->max_isa)) : convert_repack_enabled(0);
}

int cli_int(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = s ? strtol(s, &end, 10) : 0;
	if (!s || errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "herd: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi,
			s ? s : "(nothing)");
		return -1;
	}
	*out = v;
	return 0;
}

int cli_int_list(const char *opt, const char *s, long lo, long hi, long *out, int max, int *n)
{
	char buf[256];
	const size_t len = s ? strlen(s) : 0;
	int ok = len && len < sizeof(buf) && s[0] != ',' && s[len - 1] != ',' && !strstr(s, ",,");
	*n = 0;
	if (ok) {
		snprintf(buf, sizeof(buf), "%s", s);
		for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && ok; t = strtok_r(NULL, ",", &save))
			ok = *n < max && !cli_int(opt, t, lo, hi, &out[(*n)++]);
	}
	if (!ok) {
		fprintf(stderr, "herd: %s expects N or a list N,N,... of at most %d integers in [%ld, %ld], "
				"got '%s'\n", opt, max, lo, hi, s ? s : "(nothing)");
		return -1;
	}
	return 0;
}

int cli_float(const char *opt, const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = s ? strtod(s, &end) : 0;
	if (!s || errno || end == s || *end || v != v) {
		fprintf(stderr, "herd: %s expects a number, got '%s'\n", opt, s ? s : "(nothing)");
		return -1;
	}
	*out = v;
	return 0;
}

uint64_t cli_u64_or(const char *s, int *ok)
{
	char *end;
	errno = 0;
	unsigned long long v = s ? strtoull(s, &end, 0) : 0;
	*ok = s && !errno && end != s && !*end && s[0] != '-';
	return v;
}

int cli_kv_type(const char *opt, const char *s, int *out)
{
	const int t = llama_kv_type_parse(s);
	if (t < 0) {
		fprintf(stderr, "herd: %s expects a KV cache type (f16, q8_0, q4_0), got '%s'\n", opt,
			s ? s : "(nothing)");
		return -1;
	}
	*out = t;
	return 0;
}

int cli_load(const char *path, int n_threads, int n_ctx, int kv_type, llama_model **m,
	     llama_ctx **c)
{
	char err[512] = "";
	cli_env env;
	if (cli_env_read(&env))
		return HERD_E_INVAL;
	int rc = llama_model_load(m, path, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "herd: cannot load '%s': %s (%s)\n", path, err, herd_strerror(rc));
		return rc;
	}
	const int policy = cli_repack_policy(&env);
	if (policy && (rc = llama_model_repack(*m, policy))) {
		fprintf(stderr, "herd: cannot repack '%s': %s\n", path, herd_strerror(rc));
		llama_model_destroy(*m);
		*m = NULL;
		return rc;
	}
	llama_ctx_opts o = {.n_threads = n_threads, .n_ctx = n_ctx, .force_ref = env.force_ref,
			    .max_isa = env.max_isa, .kv_type = kv_type};
	if (!llama_kv_type_fits(&(*m)->hp, (kern_type)(kv_type ? kv_type : KERN_TYPE_F16))) {
		fprintf(stderr, "herd: KV cache type %s needs a head size that is a multiple of 32; '%s' has %d\n",
			kern_type_name(kv_type), path, (*m)->hp.head_dim);
		rc = HERD_E_INVAL;
	} else {
		rc = llama_ctx_create(c, *m, &o);
	}
	if (rc) {
		fprintf(stderr, "herd: cannot create a context: %s\n", herd_strerror(rc));
		llama_model_destroy(*m);
		*m = NULL;
	}
	return rc;
}

int cli_tokenize(const tok_vocab *v, const char *text, int add_bos, int32_t **ids, int *n)
{
	size_t len = strlen(text);
	int cap = (int)(len + 8 < 1 << 30 ? len + 8 : 1 << 30);
	int32_t *buf = malloc(sizeof(int32_t) * cap);
	if (!buf)
		return -ENOMEM;
	int rc = tok_encode(v, text, len, add_bos ? TOK_ADD_BOS : 0, buf, cap);
	if (rc < 0 || rc > cap) {
		free(buf);
		return rc < 0 ? rc : HERD_E_NOSPACE;
	}
	*ids = buf;
	*n = rc;
	return 0;
}


int cli_write_file(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	int bad = !f || fwrite(data, 1, size, f) != size;
	if (f)
		bad |= fclose(f) != 0;
	if (bad) {
		fprintf(stderr, "herd: cannot write '%s': %s\n", path, strerror(errno));
		remove(path);
	}
	return bad;
}

int cli_read_tokens(const char *who, const char *path, int max, int n_vocab, int32_t **ids, int *n)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: cannot open '%s': %s\n", who, path, strerror(errno));
		return -1;
	}
	int32_t *buf = malloc(sizeof(int32_t) * (size_t)(max + 1));
	const size_t k = buf ? fread(buf, sizeof(int32_t), (size_t)max + 1, f) : 0;
	fclose(f);
	const char *bad = !buf ? "out of memory" : k == 0 ? "no tokens" : k > (size_t)max ? "longer than the context" : NULL;
	for (size_t i = 0; !bad && i < k; i++)
		if (buf[i] < 0 || buf[i] >= n_vocab)
			bad = "a token id outside the vocabulary";
	if (bad) {
		fprintf(stderr, "%s: '%s': %s\n", who, path, bad);
		free(buf);
		return -1;
	}
	*ids = buf;
	*n = (int)k;
	return 0;
}
