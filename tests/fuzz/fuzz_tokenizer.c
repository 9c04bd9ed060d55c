/* libFuzzer target: the SentencePiece tokenizer (model/tokenizer.h) on
 * arbitrary text, with LLaMA's real vocabulary.
 *
 * The vocabulary is read once, in LLVMFuzzerInitialize, from the vocab-only
 * GGUF fixture: $HERD_VOCAB if set, else $HERD_FIXTURES/ggml-vocab-llama-spm.gguf,
 * else the HERD_FIXTURES path compiled in. It is never written afterwards
 * (the only global state). Without it the target exits 77 (skipped).
 *
 * Per input: encode with BOS, without BOS, and with special-token parsing
 * into a bounded buffer (retried with an exact one when the text needs
 * more); the counts must be in range, the BOS run must be the plain run with
 * one BOS in front, every id inside the vocabulary; every id goes through
 * tok_piece (length within tok_max_piece_len), and the pieces must add up to
 * what tok_decode gives. Deterministic. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_BOUNDED 64 /* the first try's buffer: long inputs need the retry */

static const tok_vocab *vocab; /* read-only after LLVMFuzzerInitialize */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char path[4096];
	const char *env = getenv("HERD_VOCAB"), *fx = getenv("HERD_FIXTURES");
	if (env && *env)
		snprintf(path, sizeof(path), "%s", env);
	else
		snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf",
			 fx && *fx ? fx : HERD_FIXTURES);
	gguf_ctx *g = NULL;
	tok_vocab *v = NULL;
	char err[512];
	if (gguf_open(&g, path, err, sizeof(err)) != 0 ||
	    tok_create(&v, g, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_tokenizer: SKIP: no vocabulary: %s (set HERD_VOCAB)\n", err);
		gguf_close(g);
		exit(77);
	}
	gguf_close(g);
	vocab = v;
	return 0;
}

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Encodes text with flags; returns a malloc'd array of all ids in *out. */
static int encode(const char *text, size_t len, int flags, int32_t **out)
{
	int32_t small[N_BOUNDED];
	const int n = tok_encode(vocab, text, len, flags, small, N_BOUNDED);
	check(n >= 0);
	/* A byte gives at most 3 tokens (a space becomes the 3-byte U+2581,
	 * which byte fallback spells out when a malformed lead byte swallowed
	 * part of it), plus BOS and the 3-byte dummy prefix. */
	check((size_t)n <= 3 * len + 4);
	int32_t *ids = malloc(((size_t)n + 1) * sizeof(*ids));
	check(ids != NULL);
	if (n <= N_BOUNDED) {
		memcpy(ids, small, (size_t)n * sizeof(*ids));
	} else {
		check(tok_encode(vocab, text, len, flags, ids, n) == n);
		check(memcmp(ids, small, sizeof(small)) == 0);
	}
	const int nv = tok_n_vocab(vocab);
	for (int i = 0; i < n; i++)
		check(ids[i] >= 0 && ids[i] < nv);
	*out = ids;
	return n;
}

/* Every piece fits tok_max_piece_len and the pieces make tok_decode's text. */
static void detok(const int32_t *ids, int n)
{
	const int maxp = tok_max_piece_len(vocab);
	char *piece = malloc((size_t)maxp + 1);
	size_t total = 0;
	check(piece != NULL);
	for (int i = 0; i < n; i++) {
		const int k = tok_piece(vocab, ids[i], piece, (size_t)maxp);
		check(k >= 0 && k <= maxp);
		check(tok_piece(vocab, ids[i], NULL, 0) == k);
		total += (size_t)k;
	}
	check(tok_piece(vocab, tok_n_vocab(vocab), piece, (size_t)maxp) == HERD_E_RANGE);
	check(tok_piece(vocab, -1, piece, (size_t)maxp) == HERD_E_RANGE);
	char *text = malloc(total + 1);
	check(text != NULL);
	check(tok_decode(vocab, ids, n, 0, text, total + 1) == (int)total);
	check(text[total] == 0);
	free(text);
	free(piece);
}

/* Every multi-byte lead byte followed by its continuation bytes. */
static int utf8_ok(const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s;
	for (size_t i = 0; i < n;) {
		const size_t k = p[i] < 0x80 ? 1 : p[i] < 0xc0 ? 0 : p[i] < 0xe0 ? 2 : p[i] < 0xf0 ? 3
			       : p[i] < 0xf8 ? 4 : 0;
		if (k == 0 || k > n - i)
			return 0;
		for (size_t j = 1; j < k; j++)
			if ((p[i + j] & 0xc0) != 0x80)
				return 0;
		i += k;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	int32_t *plain, *bos, *special;
	const int n_plain = encode(text, size, 0, &plain);
	const int n_bos = encode(text, size, TOK_ADD_BOS, &bos);
	const int n_special = encode(text, size, TOK_ADD_BOS | TOK_PARSE_SPECIAL, &special);
	if (tok_bos(vocab) >= 0 && tok_add_bos(vocab)) {
		check(n_bos == n_plain + 1 && bos[0] == tok_bos(vocab));
		check(n_plain == 0 || memcmp(bos + 1, plain, (size_t)n_plain * sizeof(*plain)) == 0);
	}
	check(n_special >= 1);
	/* SentencePiece with byte fallback loses nothing: decoding the plain
	 * run (dropping the dummy prefix) gives well-formed UTF-8 text back,
	 * except that a literal U+2581 reads back as a space. (Malformed UTF-8
	 * may not come back: a bad lead byte swallows the next bytes into one
	 * unit before spaces are restored, as in llama.cpp.) */
	if (tok_add_space_prefix(vocab) && utf8_ok(text, size) &&
	    !memmem(text, size, "\xe2\x96\x81", 3)) {
		char *back = malloc(size + 2);
		check(back != NULL);
		const int k = tok_decode(vocab, plain, n_plain, TOK_DECODE_STRIP_SPACE, back, size + 2);
		check(k == (int)size && memcmp(back, text, size) == 0);
		free(back);
	}
	detok(plain, n_plain);
	detok(bos, n_bos);
	detok(special, n_special);
	free(special);
	free(bos);
	free(plain);
	return 0;
}
