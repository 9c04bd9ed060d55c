/* Chat template: TinyLlama-Chat's (zephyr style).
 *
 *   for each message:        "<|{role}|>\n{content}</s>\n"
 *   add_generation_prompt:   "<|assistant|>\n"
 *
 * herd renders this one template whatever the GGUF's tokenizer.chat_template
 * says (it does not run Jinja); chat_template_detect() tells a caller
 * whether the file's template is this one, so it can warn when it is not.
 *
 * Tokens (chat_tokenize) are what llama.cpp gives for the rendered text with
 * add_special = true (BOS first, when the vocab's add_bos_token says so) and
 * parse_special = true, except that only the template's own text may hold
 * special tokens: the "</s>" the template writes becomes EOS, while a "</s>"
 * (or "<s>") inside a message's role or content stays plain text. As in
 * llama.cpp, the text right after each special token gets SentencePiece's
 * dummy-prefix space again (so "</s>\n<|user|>" gives EOS, "▁", "<0x0A>",
 * ...).
 *
 * All functions are pure: thread-safe on shared inputs.
 */
#ifndef HERD_MODEL_CHAT_H
#define HERD_MODEL_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chat_msg {
	const char *role;    /* "system", "user", "assistant" (any text is rendered) */
	const char *content; /* NUL-terminated UTF-8 */
} chat_msg;

/* Renders the conversation into out[0..n_out), NUL-terminated when n_out >
 * 0. Returns the full length without the NUL; when that is >= n_out the text
 * was cut (retry bigger). HERD_E_INVAL for NULL msgs with n > 0, a NULL
 * role or content, n < 0 or NULL out with n_out > 0; HERD_E_RANGE when the
 * text would exceed INT32_MAX bytes. */
int chat_format(const chat_msg *msgs, int n, int add_generation_prompt, char *out, size_t n_out);

/* Tokenizes the rendered conversation (see above). Writes at most n_max ids
 * and returns the total count, which may exceed n_max (retry bigger), or a
 * negative error: HERD_E_INVAL / HERD_E_RANGE as chat_format and
 * tok_encode, -ENOMEM. */
int chat_tokenize(const tok_vocab *v, const chat_msg *msgs, int n_msgs,
		  int add_generation_prompt, int32_t *ids, int n_max);

typedef enum chat_template_kind {
	CHAT_TEMPLATE_ABSENT = 0, /* no tokenizer.chat_template: zephyr is used */
	CHAT_TEMPLATE_ZEPHYR = 1, /* recognised: "<|user|>", "<|assistant|>" with
				   * eos_token or "</s>" after each message */
	CHAT_TEMPLATE_OTHER = 2,  /* another template: zephyr is used anyway */
} chat_template_kind;

chat_template_kind chat_template_detect(const gguf_ctx *g);
/* 1 when the GGUF has a template and it is recognised (zephyr), else 0. */
int chat_template_supported(const gguf_ctx *g);

#ifdef __cplusplus
}
#endif
#endif
