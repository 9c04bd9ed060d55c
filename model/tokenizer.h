/* LLaMA SentencePiece (SPM) tokenizer, read from a GGUF's tokenizer.ggml.*
 * keys, producing exactly llama.cpp's ids (tokenizer.ggml.model "llama").
 *
 * Encoding, as llama.cpp's llama_tokenize():
 *  1. Special-token partition: the text is split around occurrences of
 *     special tokens, longest token text first. USER_DEFINED tokens are
 *     always split out; CONTROL and UNKNOWN tokens ("<s>", "</s>", "<unk>")
 *     only with TOK_PARSE_SPECIAL. Without it, a user typing "<s>" gets the
 *     text tokens for '<', 's', '>'.
 *  2. Each raw-text fragment: spaces become U+2581 "▁"; when
 *     add_space_prefix (default true) and the fragment is the first one or
 *     follows a special token, one "▁" is prepended (the dummy prefix).
 *  3. The fragment is split into UTF-8 characters (a malformed lead byte
 *     still starts a 1-4 byte unit, as llama.cpp does) and adjacent symbols
 *     are merged greedily: a priority queue of pairs whose concatenation is a
 *     vocabulary piece, highest score first, ties to the leftmost pair.
 *  4. Every final symbol that is a piece becomes its id; any other symbol
 *     becomes one byte-fallback token "<0xXX>" per byte.
 * The one intended difference from llama.cpp: CONTROL and UNKNOWN pieces
 * never take part in the merges of step 3, so text can never produce them
 * (in LLaMA's vocabulary no merge can reach them anyway).
 *
 * Decoding, as llama.cpp's llama_token_to_piece(special = false): NORMAL
 * pieces with "▁" turned back into spaces, BYTE tokens as their raw byte,
 * USER_DEFINED pieces verbatim, CONTROL / UNKNOWN / UNUSED tokens as nothing.
 *
 * A tok_vocab is immutable after tok_create: any number of threads may use
 * one concurrently.
 */
#ifndef HERD_MODEL_TOKENIZER_H
#define HERD_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token types, as GGUF's tokenizer.ggml.token_type stores them. */
enum {
	TOK_TYPE_UNDEFINED = 0,
	TOK_TYPE_NORMAL = 1,
	TOK_TYPE_UNKNOWN = 2,
	TOK_TYPE_CONTROL = 3,
	TOK_TYPE_USER_DEFINED = 4,
	TOK_TYPE_UNUSED = 5,
	TOK_TYPE_BYTE = 6,
};

/* tok_encode flags */
enum {
	TOK_ADD_BOS = 1 << 0,         /* put BOS first (when the vocab has one) */
	TOK_NO_SPACE_PREFIX = 1 << 1, /* no dummy prefix on the first fragment:
				       * for text that continues earlier text */
	TOK_PARSE_SPECIAL = 1 << 2,   /* control-token texts ("</s>") in the
				       * input become those tokens */
};

/* tok_decode flags */
enum {
	TOK_DECODE_STRIP_SPACE = 1 << 0, /* drop one leading space of the first
					  * token's piece (the dummy prefix;
					  * a leading BOS is looked past) when
					  * the vocab adds one, as llama.cpp's
					  * detokenize does */
};

typedef struct tok_vocab tok_vocab;

/* Builds the tokenizer from g's tokenizer.ggml.* keys: model (must be
 * "llama"), tokens, scores (default 0), token_type (default NORMAL),
 * bos/eos/unknown/padding/eot/eom_token_id (defaults 1/2/0/none/none/none;
 * an id out of range keeps the default, as llama.cpp does), add_bos_token
 * (default true), add_space_prefix (default true). Copies everything it
 * needs: g may be closed afterwards.
 * Returns 0, or HERD_E_MISSING (no model or tokens key), HERD_E_UNSUPPORTED
 * (another tokenizer model, named in err), HERD_E_FORMAT (wrong value types,
 * array lengths that differ from tokens, an empty vocabulary, a malformed
 * byte token), HERD_E_RANGE (more than INT32_MAX tokens), HERD_E_INVAL (NULL
 * out or g) or -ENOMEM; on failure *out is NULL and err (if errlen > 0)
 * holds a message. */
int tok_create(tok_vocab **out, const gguf_ctx *g, char *err, size_t errlen);
void tok_destroy(tok_vocab *v); /* accepts NULL */

/* Tokenizes text[0..len) (need not be NUL-terminated; may contain NUL
 * bytes). Writes at most n_max ids to ids (which may be NULL when n_max is
 * 0) and returns the total number of tokens, which may exceed n_max: then
 * only the first n_max were written and the caller retries with a bigger
 * array. Returns HERD_E_INVAL (NULL v, NULL text with len > 0, n_max < 0),
 * HERD_E_RANGE (len above INT32_MAX / 4) or -ENOMEM. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, int flags, int32_t *ids,
	       int n_max);

/* As tok_encode, but CONTROL and UNKNOWN token texts are recognised only
 * where every byte of the occurrence has special_ok[i] != 0 (special_ok
 * has len entries; NULL: nowhere, TOK_PARSE_SPECIAL is ignored). For chat
 * templates: the template's own text may hold "</s>", the messages may
 * not. */
int tok_encode_masked(const tok_vocab *v, const char *text, size_t len,
		      const uint8_t *special_ok, int flags, int32_t *ids, int n_max);

/* The piece of token id as bytes (no NUL terminator). Returns the piece's
 * length; when that is more than n, nothing is written (ask again with at
 * least that much room; tok_max_piece_len() always suffices). Returns
 * HERD_E_RANGE for an id outside the vocabulary. */
int tok_piece(const tok_vocab *v, int32_t id, char *buf, size_t n);

/* Concatenated pieces of ids[0..n_ids), NUL-terminated when n > 0. Returns
 * the full length (without the NUL); if that is >= n, the text was cut at
 * n - 1 bytes (possibly inside a UTF-8 sequence): retry bigger. Returns
 * HERD_E_RANGE when an id is outside the vocabulary, HERD_E_INVAL for bad
 * arguments, -ENOMEM. */
int tok_decode(const tok_vocab *v, const int32_t *ids, int n_ids, int flags, char *buf,
	       size_t n);

int32_t tok_bos(const tok_vocab *v); /* -1 when none */
int32_t tok_eos(const tok_vocab *v); /* -1 when none */
int32_t tok_unk(const tok_vocab *v); /* -1 when none */
int32_t tok_pad(const tok_vocab *v); /* -1 when none */
int tok_n_vocab(const tok_vocab *v);
int tok_add_bos(const tok_vocab *v);          /* tokenizer.ggml.add_bos_token */
int tok_add_space_prefix(const tok_vocab *v); /* tokenizer.ggml.add_space_prefix */
int tok_max_piece_len(const tok_vocab *v);    /* bound on tok_piece's result */
/* End of generation: EOS, EOT, EOM, and control tokens llama.cpp treats as
 * such by their text ("<|eot_id|>", "<|im_end|>", "<|end|>", ...). */
int tok_is_eog(const tok_vocab *v, int32_t id);
int tok_is_control(const tok_vocab *v, int32_t id);
int tok_type(const tok_vocab *v, int32_t id);    /* TOK_TYPE_*, -1 if out of range */
float tok_score(const tok_vocab *v, int32_t id); /* 0 if out of range */
/* The piece as the vocabulary stores it (not NUL-terminated, "▁" kept), and
 * its length in *len; NULL when id is out of range. Valid until
 * tok_destroy. */
const char *tok_text(const tok_vocab *v, int32_t id, size_t *len);
/* Id of the token whose stored text is exactly text[0..len), any type
 * (duplicates: the highest id, as llama.cpp), or -1. */
int32_t tok_find(const tok_vocab *v, const char *text, size_t len);

#ifdef __cplusplus
}
#endif
#endif
