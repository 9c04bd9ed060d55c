#include "model/chat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"

/* Render target: text and, optionally, a per-byte flag "template text"
 * (special tokens allowed) vs "message text". Counts everything, stores what
 * fits in cap. */
typedef struct chat_buf {
	char *text;
	uint8_t *mask;
	size_t cap, len;
} chat_buf;

static void put(chat_buf *b, const char *s, size_t n, uint8_t special_ok)
{
	if (b->len < b->cap) {
		size_t k = b->cap - b->len < n ? b->cap - b->len : n;
		if (b->text)
			memcpy(b->text + b->len, s, k);
		if (b->mask)
			memset(b->mask + b->len, special_ok, k);
	}
	b->len += n;
}

static void put_tmpl(chat_buf *b, const char *s)
{
	put(b, s, strlen(s), 1);
}

static int check_msgs(const chat_msg *msgs, int n)
{
	if (n < 0 || (!msgs && n > 0))
		return HERD_E_INVAL;
	for (int i = 0; i < n; i++)
		if (!msgs[i].role || !msgs[i].content)
			return HERD_E_INVAL;
	return 0;
}

/* The one place the template lives. */
static void render(chat_buf *b, const chat_msg *msgs, int n, int add_generation_prompt)
{
	for (int i = 0; i < n; i++) {
		put_tmpl(b, "<|");
		put(b, msgs[i].role, strlen(msgs[i].role), 0);
		put_tmpl(b, "|>\n");
		put(b, msgs[i].content, strlen(msgs[i].content), 0);
		put_tmpl(b, "</s>\n");
	}
	if (add_generation_prompt)
		put_tmpl(b, "<|assistant|>\n");
}

int chat_format(const chat_msg *msgs, int n, int add_generation_prompt, char *out, size_t n_out)
{
	chat_buf b = {out, NULL, n_out ? n_out - 1 : 0, 0};
	int rc = check_msgs(msgs, n);

	if (rc)
		return rc;
	if (!out && n_out > 0)
		return HERD_E_INVAL;
	render(&b, msgs, n, add_generation_prompt);
	if (n_out > 0)
		out[b.len < n_out ? b.len : n_out - 1] = '\0';
	return b.len > INT32_MAX ? HERD_E_RANGE : (int)b.len;
}

int chat_tokenize(const tok_vocab *v, const chat_msg *msgs, int n_msgs,
		  int add_generation_prompt, int32_t *ids, int n_max)
{
	chat_buf b = {NULL, NULL, 0, 0};
	int rc = check_msgs(msgs, n_msgs);

	if (rc)
		return rc;
	if (!v || n_max < 0 || (!ids && n_max > 0))
		return HERD_E_INVAL;
	render(&b, msgs, n_msgs, add_generation_prompt); /* measure */
	if (b.len > INT32_MAX / 4)
		return HERD_E_RANGE;
	b.cap = b.len;
	b.text = malloc(b.len ? b.len : 1);
	b.mask = malloc(b.len ? b.len : 1);
	if (!b.text || !b.mask) {
		rc = -ENOMEM;
		goto done;
	}
	b.len = 0;
	render(&b, msgs, n_msgs, add_generation_prompt);
	rc = tok_encode_masked(v, b.text, b.len, b.mask, tok_add_bos(v) ? TOK_ADD_BOS : 0, ids,
			       n_max);
done:
	free(b.mask);
	free(b.text);
	return rc;
}

chat_template_kind chat_template_detect(const gguf_ctx *g)
{
	gguf_str s;
	char *t;
	int zephyr;

	if (!g || gguf_get_str(g, "tokenizer.chat_template", &s) != 0)
		return CHAT_TEMPLATE_ABSENT;
	t = malloc(s.len + 1);
	if (!t)
		return CHAT_TEMPLATE_OTHER;
	memcpy(t, s.ptr, s.len);
	t[s.len] = '\0';
	/* TinyLlama-Chat / zephyr: role markers "<|user|>", "<|assistant|>" and
	 * each message closed by the EOS token (written as eos_token or
	 * "</s>"); not ChatML ("<|im_start|>") nor Phi-3 ("<|end|>"). */
	zephyr = strstr(t, "<|user|>") && strstr(t, "<|assistant|>") &&
		 (strstr(t, "eos_token") || strstr(t, "</s>")) && !strstr(t, "<|im_start|>") &&
		 !strstr(t, "<|end|>");
	free(t);
	return zephyr ? CHAT_TEMPLATE_ZEPHYR : CHAT_TEMPLATE_OTHER;
}

int chat_template_supported(const gguf_ctx *g)
{
	return chat_template_detect(g) == CHAT_TEMPLATE_ZEPHYR;
}
