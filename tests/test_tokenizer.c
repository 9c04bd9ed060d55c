/* Tokenizer: llama.cpp's ids on the LLaMA SPM fixture (46 cases), round
 * trips, special-token handling, byte fallback, metadata errors, and a small
 * in-memory vocabulary that needs no fixtures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

#define SEP "\n__ggml_vocab_test__\n"

static const char *fixtures_dir(void)
{
	const char *e = getenv("HERD_FIXTURES");
	return (e && *e) ? e : HERD_FIXTURES;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		if (buf) {
			buf[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

/* ---- fixture vocabulary (shared by the fixture tests) ---------------- */

typedef struct fixture {
	tok_vocab *v;
	char *inp, *out;
	size_t inp_len, out_len;
} fixture;

static int fixture_setup(void **state)
{
	char path[4096], err[256];
	gguf_ctx *g = NULL;
	fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", fixtures_dir());
	assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
	assert_int_equal(tok_create(&fx->v, g, err, sizeof(err)), 0);
	gguf_close(g); /* the vocab must not need it any more */
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf.inp", fixtures_dir());
	fx->inp = read_file(path, &fx->inp_len);
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf.out", fixtures_dir());
	fx->out = read_file(path, &fx->out_len);
	assert_non_null(fx->inp);
	assert_non_null(fx->out);
	*state = fx;
	return 0;
}

static int fixture_teardown(void **state)
{
	fixture *fx = *state;
	tok_destroy(fx->v);
	free(fx->inp);
	free(fx->out);
	free(fx);
	return 0;
}

static int encode_all(const tok_vocab *v, const char *s, size_t len, int flags, int32_t **ids)
{
	int n = tok_encode(v, s, len, flags, NULL, 0);
	assert_true(n >= 0);
	*ids = malloc(((size_t)n + 1) * sizeof(**ids));
	assert_non_null(*ids);
	assert_int_equal(tok_encode(v, s, len, flags, *ids, n), n);
	return n;
}

static void test_fixture_cases(void **state)
{
	fixture *fx = *state;
	const char *p = fx->inp, *end = fx->inp + fx->inp_len;
	char *line = fx->out, *save = NULL;
	int n_cases = 0;

	/* split .out into lines by hand: empty lines matter */
	while (p < end) {
		const char *sep = strstr(p, SEP);
		char *nl;
		int32_t expect[1024], *got;
		int n_expect = 0, n_got;
		if (!sep)
			break;
		nl = strchr(line, '\n');
		assert_non_null(nl);
		*nl = '\0';
		for (char *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save))
			expect[n_expect++] = (int32_t)strtol(t, NULL, 10);
		n_got = encode_all(fx->v, p, (size_t)(sep - p), 0, &got);
		if (n_got != n_expect || memcmp(got, expect, (size_t)n_got * sizeof(*got)) != 0) {
			fprintf(stderr, "case %d '%.*s': got", n_cases, (int)(sep - p), p);
			for (int i = 0; i < n_got; i++)
				fprintf(stderr, " %d", got[i]);
			fprintf(stderr, "\n");
		}
		assert_int_equal(n_got, n_expect);
		assert_memory_equal(got, expect, (size_t)n_got * sizeof(*got));

		/* round trip: decode(encode(x)) == x, the dummy prefix stripped */
		{
			size_t len = (size_t)(sep - p);
			char *dec = malloc(len + 16);
			assert_non_null(dec);
			assert_int_equal(tok_decode(fx->v, got, n_got, TOK_DECODE_STRIP_SPACE, dec,
						    len + 16),
					 (int)len);
			assert_memory_equal(dec, p, len);
			free(dec);
		}
		free(got);
		line = nl + 1;
		p = sep + strlen(SEP);
		n_cases++;
	}
	assert_int_equal(n_cases, 46);
}

static void test_fixture_basics(void **state)
{
	fixture *fx = *state;
	const tok_vocab *v = fx->v;
	int32_t ids[64];
	char buf[64];

	assert_int_equal(tok_n_vocab(v), 32000);
	assert_int_equal(tok_bos(v), 1);
	assert_int_equal(tok_eos(v), 2);
	assert_int_equal(tok_unk(v), 0);
	assert_true(tok_is_eog(v, 2));
	assert_false(tok_is_eog(v, 1));
	assert_true(tok_is_control(v, 1));
	assert_false(tok_is_control(v, 15043));
	assert_int_equal(tok_add_bos(v), 1);

	/* BOS flag */
	assert_int_equal(tok_encode(v, "Hello world", 11, TOK_ADD_BOS, ids, 64), 3);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[1], 15043);
	assert_int_equal(ids[2], 3186);
	/* no dummy prefix: "world" continues text */
	assert_int_equal(tok_encode(v, " world", 6, TOK_NO_SPACE_PREFIX, ids, 64), 1);
	assert_int_equal(ids[0], 3186);
	/* empty input: nothing, or just BOS */
	assert_int_equal(tok_encode(v, "", 0, 0, ids, 64), 0);
	assert_int_equal(tok_encode(v, NULL, 0, TOK_ADD_BOS, ids, 64), 1);
	/* short output buffer: the count, and only n_max written */
	ids[1] = -7;
	assert_int_equal(tok_encode(v, "Hello world", 11, 0, ids, 1), 2);
	assert_int_equal(ids[0], 15043);
	assert_int_equal(ids[1], -7);
	assert_int_equal(tok_encode(v, "x", 1, 0, ids, -1), HERD_E_INVAL);

	/* "<s>" and "</s>" typed as text stay text */
	int n = tok_encode(v, "<s>hi</s>", 9, 0, ids, 64);
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		assert_false(tok_is_control(v, ids[i]));
		assert_true(ids[i] != 1 && ids[i] != 2);
	}
	/* ... unless asked: "<s>" then " hi" with its dummy prefix again */
	n = tok_encode(v, "<s>hi</s>", 9, TOK_PARSE_SPECIAL, ids, 64);
	assert_true(n >= 3);
	assert_int_equal(ids[0], 1);
	assert_int_equal(ids[n - 1], 2);

	/* pieces */
	assert_int_equal(tok_piece(v, 15043, buf, sizeof(buf)), 6);
	assert_memory_equal(buf, " Hello", 6);
	assert_int_equal(tok_piece(v, 15043, buf, 3), 6); /* too small: size only */
	assert_int_equal(tok_piece(v, 1, buf, sizeof(buf)), 0);  /* control */
	assert_int_equal(tok_piece(v, 0, buf, sizeof(buf)), 0);  /* unknown */
	assert_int_equal(tok_piece(v, 13, buf, sizeof(buf)), 1); /* <0x0A> */
	assert_int_equal(buf[0], '\n');
	assert_int_equal(tok_piece(v, 32000, buf, sizeof(buf)), HERD_E_RANGE);
	assert_int_equal(tok_piece(v, -1, buf, sizeof(buf)), HERD_E_RANGE);
	assert_true(tok_max_piece_len(v) >= 6);

	/* decode with BOS/EOS: they decode to nothing */
	{
		int32_t seq[] = {1, 15043, 3186, 2};
		assert_int_equal(tok_decode(v, seq, 4, 0, buf, sizeof(buf)), 12);
		assert_string_equal(buf, " Hello world");
		/* truncation: full length returned, buffer NUL-terminated */
		assert_int_equal(tok_decode(v, seq, 4, 0, buf, 5), 12);
		assert_string_equal(buf, " Hel");
		int32_t bad[] = {15043, 40000};
		assert_int_equal(tok_decode(v, bad, 2, 0, buf, sizeof(buf)), HERD_E_RANGE);
	}
}

static void test_fixture_byte_fallback(void **state)
{
	fixture *fx = *state;
	int32_t *ids;
	char buf[64];
	/* U+1F999 (4 bytes, not in the vocab) -> <0xF0> <0x9F> <0xA6> <0x99> */
	const char *s = "\xf0\x9f\xa6\x99";
	int n = encode_all(fx->v, s, 4, TOK_NO_SPACE_PREFIX, &ids);
	assert_int_equal(n, 4);
	assert_int_equal(ids[0], 0xF0 + 3);
	assert_int_equal(ids[1], 0x9F + 3);
	assert_int_equal(ids[2], 0xA6 + 3);
	assert_int_equal(ids[3], 0x99 + 3);
	assert_int_equal(tok_decode(fx->v, ids, n, 0, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, s, 4);
	free(ids);

	/* invalid UTF-8 and NUL bytes survive the round trip */
	const char raw[] = {'a', '\0', (char)0xff, (char)0x80, 'b', (char)0xc3};
	n = encode_all(fx->v, raw, sizeof(raw), 0, &ids);
	assert_int_equal(tok_decode(fx->v, ids, n, TOK_DECODE_STRIP_SPACE, buf, sizeof(buf)),
			 (int)sizeof(raw));
	assert_memory_equal(buf, raw, sizeof(raw));
	free(ids);
}

static void test_fixture_long_input(void **state)
{
	fixture *fx = *state;
	/* 1 MiB of mixed text: must be fast (no quadratic behaviour) and
	 * round-trip */
	const char *unit = "The quick brown fox jumps over the lazy dog. \xd0\x9f\xd1\x80\xd0\xb8 "
			   "\xe4\xbd\xa0\xe5\xa5\xbd 12345\n\t";
	size_t ul = strlen(unit), len = 0, cap = 1 << 20;
	char *s = malloc(cap), *dec;
	int32_t *ids;
	assert_non_null(s);
	while (len + ul <= cap) {
		memcpy(s + len, unit, ul);
		len += ul;
	}
	int n = encode_all(fx->v, s, len, 0, &ids);
	assert_true(n > 0);
	dec = malloc(len + 8);
	assert_non_null(dec);
	assert_int_equal(tok_decode(fx->v, ids, n, TOK_DECODE_STRIP_SPACE, dec, len + 8), (int)len);
	assert_memory_equal(dec, s, len);
	free(dec);
	free(ids);
	free(s);
}

/* ---- a small vocabulary built in memory ------------------------------ */

static char *tmp_path(char *buf, size_t n, const char *name)
{
	const char *d = getenv("TMPDIR");
	snprintf(buf, n, "%s/herd_test_tok_%d_%s.gguf", (d && *d) ? d : "/tmp", (int)getpid(),
		 name);
	return buf;
}

typedef struct mini_tok {
	const char *text;
	float score;
	int32_t type;
} mini_tok;

/* Writes a vocabulary GGUF with the given pieces (+ every byte token) and
 * opens it; returns the error of tok_create and the vocab in *out. */
static int make_vocab(const mini_tok *toks, int n, const char *model, int types, int scores,
		      tok_vocab **out, char *err, size_t errlen)
{
	char path[512];
	gguf_writer *w = NULL;
	gguf_ctx *g = NULL;
	int total = n + 256, rc;
	gguf_str *strs = calloc((size_t)total, sizeof(*strs));
	float *sc = calloc((size_t)total, sizeof(*sc));
	int32_t *ty = calloc((size_t)total, sizeof(*ty));
	char(*bytes)[8] = calloc(256, 8);
	assert_true(strs && sc && ty && bytes);
	for (int i = 0; i < n; i++) {
		strs[i].ptr = toks[i].text;
		strs[i].len = strlen(toks[i].text);
		sc[i] = toks[i].score;
		ty[i] = toks[i].type;
	}
	for (int b = 0; b < 256; b++) {
		snprintf(bytes[b], 8, "<0x%02X>", b);
		strs[n + b].ptr = bytes[b];
		strs[n + b].len = 6;
		ty[n + b] = TOK_TYPE_BYTE;
	}
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	if (model)
		assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", model), 0);
	assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)total),
			 0);
	if (scores)
		assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, sc,
						     (uint64_t)(scores > 0 ? total : total - 1)),
				 0);
	if (types)
		assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32,
						     ty, (uint64_t)total),
				 0);
	assert_int_equal(gguf_writer_write(w, tmp_path(path, sizeof(path), "v"), err, errlen), 0);
	gguf_writer_destroy(w);
	assert_int_equal(gguf_open(&g, path, err, errlen), 0);
	unlink(path);
	rc = tok_create(out, g, err, errlen);
	gguf_close(g);
	free(bytes);
	free(ty);
	free(sc);
	free(strs);
	return rc;
}

static const mini_tok k_mini[] = {
	{"<unk>", 0, TOK_TYPE_UNKNOWN},
	{"<s>", 0, TOK_TYPE_CONTROL},
	{"</s>", 0, TOK_TYPE_CONTROL},
	{"\xe2\x96\x81", -1, TOK_TYPE_NORMAL},             /* 3: ▁ */
	{"a", -2, TOK_TYPE_NORMAL},                        /* 4 */
	{"b", -2, TOK_TYPE_NORMAL},                        /* 5 */
	{"c", -2, TOK_TYPE_NORMAL},                        /* 6 */
	{"ab", -5, TOK_TYPE_NORMAL},                       /* 7 */
	{"bc", -3, TOK_TYPE_NORMAL},                       /* 8: beats ab */
	{"abc", -4, TOK_TYPE_NORMAL},                      /* 9 */
	{"\xe2\x96\x81" "a", -6, TOK_TYPE_NORMAL},         /* 10: ▁a */
	{"<", -2, TOK_TYPE_NORMAL},                        /* 11 */
	{"s", -2, TOK_TYPE_NORMAL},                        /* 12 */
	{">", -2, TOK_TYPE_NORMAL},                        /* 13 */
	{"<s", -1, TOK_TYPE_NORMAL},                       /* 14: could reach <s> */
	{"[X]", 0, TOK_TYPE_USER_DEFINED},                 /* 15 */
	{"\xe2\x96\x81\xe2\x96\x81", -1, TOK_TYPE_NORMAL}, /* 16: ▁▁ */
};

static void test_mini_vocab(void **state)
{
	(void)state;
	char err[256], buf[64];
	tok_vocab *v = NULL;
	int32_t ids[64];
	int n;

	assert_int_equal(make_vocab(k_mini, 17, "llama", 1, 1, &v, err, sizeof(err)), 0);
	assert_int_equal(tok_n_vocab(v), 17 + 256);

	/* "abc": "bc" (-3) merges before "ab" (-5), then "a"+"bc" = "abc" */
	n = tok_encode(v, "abc", 3, TOK_NO_SPACE_PREFIX, ids, 64);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 9);
	/* " abc" -> ▁ a b c: bc, then ▁+a? ▁a (-6) vs abc (-4): abc first */
	n = tok_encode(v, "abc", 3, 0, ids, 64);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 3);
	assert_int_equal(ids[1], 9);
	/* "ab": only "ab" */
	n = tok_encode(v, "ab", 2, TOK_NO_SPACE_PREFIX, ids, 64);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 7);
	/* ties go to the leftmost pair: "aa" is not a piece; "bcbc" -> bc bc */
	n = tok_encode(v, "bcbc", 4, TOK_NO_SPACE_PREFIX, ids, 64);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 8);
	assert_int_equal(ids[1], 8);
	/* byte fallback for 'z' */
	n = tok_encode(v, "z", 1, TOK_NO_SPACE_PREFIX, ids, 64);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 17 + 'z');
	/* "<s>" typed: "<s" merges, but never into the control token */
	n = tok_encode(v, "<s>", 3, TOK_NO_SPACE_PREFIX, ids, 64);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 14);
	assert_int_equal(ids[1], 13);
	/* user-defined pieces are split out even without TOK_PARSE_SPECIAL, and
	 * the text after them gets the dummy prefix again (llama.cpp) */
	n = tok_encode(v, "a[X]a", 5, 0, ids, 64);
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 10);
	assert_int_equal(ids[1], 15);
	assert_int_equal(ids[2], 10);
	assert_int_equal(tok_decode(v, ids, n, 0, buf, sizeof(buf)), 7);
	assert_string_equal(buf, " a[X] a");
	/* spaces: "  " -> ▁▁▁ -> ▁▁ ▁ */
	n = tok_encode(v, "  ", 2, 0, ids, 64);
	assert_int_equal(n, 2);
	assert_int_equal(ids[0], 16);
	assert_int_equal(ids[1], 3);
	assert_int_equal(tok_find(v, "abc", 3), 9);
	assert_int_equal(tok_find(v, "zz", 2), -1);
	tok_destroy(v);

	/* no types and no scores: everything NORMAL, score 0 */
	assert_int_equal(make_vocab(k_mini, 17, "llama", 0, 0, &v, err, sizeof(err)), 0);
	assert_int_equal(tok_type(v, 1), TOK_TYPE_NORMAL);
	assert_true(tok_score(v, 9) == 0.0f);
	tok_destroy(v);
}

static void test_mini_errors(void **state)
{
	(void)state;
	char err[256];
	tok_vocab *v = (tok_vocab *)1;

	assert_int_equal(make_vocab(k_mini, 17, "gpt2", 1, 1, &v, err, sizeof(err)),
			 HERD_E_UNSUPPORTED);
	assert_null(v);
	assert_non_null(strstr(err, "gpt2"));
	assert_int_equal(make_vocab(k_mini, 17, NULL, 1, 1, &v, err, sizeof(err)), HERD_E_MISSING);
	assert_non_null(strstr(err, "tokenizer.ggml.model"));
	/* scores one short */
	assert_int_equal(make_vocab(k_mini, 17, "llama", 1, -1, &v, err, sizeof(err)),
			 HERD_E_FORMAT);
	assert_non_null(strstr(err, "scores"));
	/* malformed byte token */
	{
		mini_tok bad[] = {{"<unk>", 0, TOK_TYPE_UNKNOWN}, {"<0xZZ>", 0, TOK_TYPE_BYTE}};
		assert_int_equal(make_vocab(bad, 2, "llama", 1, 1, &v, err, sizeof(err)),
				 HERD_E_FORMAT);
	}
	/* no tokens at all */
	{
		char path[512];
		gguf_writer *w;
		gguf_ctx *g;
		assert_int_equal(gguf_writer_create(&w), 0);
		assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"), 0);
		assert_int_equal(gguf_writer_write(w, tmp_path(path, sizeof(path), "e"), err,
						   sizeof(err)),
				 0);
		gguf_writer_destroy(w);
		assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
		unlink(path);
		assert_int_equal(tok_create(&v, g, err, sizeof(err)), HERD_E_MISSING);
		assert_non_null(strstr(err, "tokenizer.ggml.tokens"));
		gguf_close(g);
	}
	tok_destroy(NULL);
}

int main(void)
{
	char path[4096];
	int rc;
	const struct CMUnitTest mini[] = {
		cmocka_unit_test(test_mini_vocab),
		cmocka_unit_test(test_mini_errors),
	};
	const struct CMUnitTest fix[] = {
		cmocka_unit_test(test_fixture_cases),
		cmocka_unit_test(test_fixture_basics),
		cmocka_unit_test(test_fixture_byte_fallback),
		cmocka_unit_test(test_fixture_long_input),
	};

	rc = cmocka_run_group_tests_name("tokenizer_mini", mini, NULL, NULL);
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", fixtures_dir());
	if (access(path, R_OK) != 0) {
		fprintf(stderr, "fixtures not found (%s): skipping the fixture tests\n", path);
		return rc ? rc : 77;
	}
	return rc | cmocka_run_group_tests_name("tokenizer_fixture", fix, fixture_setup,
						fixture_teardown);
}
