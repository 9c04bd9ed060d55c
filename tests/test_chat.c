/* Chat template: rendered text, template detection, and the exact tokens
 * llama.cpp gives for a conversation on the LLaMA SPM fixture vocab. */
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
#include "model/chat.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#ifndef HERD_FIXTURES
#define HERD_FIXTURES "../shared/fixtures"
#endif

static const char *fixtures_dir(void)
{
	const char *e = getenv("HERD_FIXTURES");
	return (e && *e) ? e : HERD_FIXTURES;
}

static const chat_msg k_conv[2] = {
	{"system", "You are a friendly chatbot."},
	{"user", "Hello!"},
};

static void test_format(void **state)
{
	(void)state;
	char buf[256];
	const char *expect = "<|system|>\nYou are a friendly chatbot.</s>\n"
			     "<|user|>\nHello!</s>\n<|assistant|>\n";
	int n = chat_format(k_conv, 2, 1, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(expect));
	assert_string_equal(buf, expect);
	/* no generation prompt */
	n = chat_format(k_conv, 1, 0, buf, sizeof(buf));
	assert_string_equal(buf, "<|system|>\nYou are a friendly chatbot.</s>\n");
	/* measuring, truncation */
	assert_int_equal(chat_format(k_conv, 2, 1, NULL, 0), (int)strlen(expect));
	assert_int_equal(chat_format(k_conv, 2, 1, buf, 6), (int)strlen(expect));
	assert_string_equal(buf, "<|sys");
	assert_int_equal(chat_format(NULL, 0, 1, buf, sizeof(buf)), 14);
	assert_string_equal(buf, "<|assistant|>\n");
	/* errors */
	chat_msg bad = {"user", NULL};
	assert_int_equal(chat_format(&bad, 1, 1, buf, sizeof(buf)), HERD_E_INVAL);
	assert_int_equal(chat_format(k_conv, -1, 1, buf, sizeof(buf)), HERD_E_INVAL);
}

static int detect_with(const char *tmpl)
{
	char path[512], err[256];
	const char *d = getenv("TMPDIR");
	gguf_writer *w;
	gguf_ctx *g;
	int kind;
	snprintf(path, sizeof(path), "%s/herd_test_chat_%d.gguf", (d && *d) ? d : "/tmp",
		 (int)getpid());
	assert_int_equal(gguf_writer_create(&w), 0);
	assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
	if (tmpl)
		assert_int_equal(gguf_writer_set_str(w, "tokenizer.chat_template", tmpl), 0);
	assert_int_equal(gguf_writer_write(w, path, err, sizeof(err)), 0);
	gguf_writer_destroy(w);
	assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
	unlink(path);
	kind = chat_template_detect(g);
	assert_int_equal(chat_template_supported(g), kind == CHAT_TEMPLATE_ZEPHYR);
	gguf_close(g);
	return kind;
}

static void test_detect(void **state)
{
	(void)state;
	/* TinyLlama-1.1B-Chat-v1.0's template */
	const char *tinyllama =
		"{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
		"{{ '<|user|>\n' + message['content'] + eos_token }}\n"
		"{% elif message['role'] == 'system' %}\n"
		"{{ '<|system|>\n' + message['content'] + eos_token }}\n"
		"{% elif message['role'] == 'assistant' %}\n"
		"{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
		"{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
		"{% endif %}\n{% endfor %}";
	const char *chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
			     "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
	assert_int_equal(detect_with(tinyllama), CHAT_TEMPLATE_ZEPHYR);
	assert_int_equal(detect_with(chatml), CHAT_TEMPLATE_OTHER);
	assert_int_equal(detect_with(NULL), CHAT_TEMPLATE_ABSENT);
	assert_int_equal(chat_template_detect(NULL), CHAT_TEMPLATE_ABSENT);
}

/* ---- fixture vocab --------------------------------------------------- */

static int vocab_setup(void **state)
{
	char path[4096], err[256];
	gguf_ctx *g = NULL;
	tok_vocab *v = NULL;
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", fixtures_dir());
	assert_int_equal(gguf_open(&g, path, err, sizeof(err)), 0);
	assert_int_equal(tok_create(&v, g, err, sizeof(err)), 0);
	gguf_close(g);
	*state = v;
	return 0;
}

static int vocab_teardown(void **state)
{
	tok_destroy(*state);
	return 0;
}

/* llama.cpp on the rendered text, add_special = parse_special = true:
 *   [BOS]
 *   " <|system|>\nYou are a friendly chatbot."   (dummy prefix: first text)
 *   [EOS]
 *   " \n<|user|>\nHello!"                         (dummy prefix after EOS)
 *   [EOS]
 *   " \n<|assistant|>\n"                          (dummy prefix after EOS)
 * "▁<" is a piece (529) but "▁\n" is not, so after EOS the prefix stays a
 * lone "▁" (29871) and "<" is 29966. */
static const int32_t k_expect[] = {
	1,                                                  /* <s> */
	529, 29989, 5205, 29989, 29958, 13,                 /* ▁< | system | > \n */
	3492, 526, 263, 19780, 13563, 7451, 29889,          /* You ▁are ▁a ▁friendly ▁chat bot . */
	2,                                                  /* </s> */
	29871, 13, 29966, 29989, 1792, 29989, 29958, 13,    /* ▁ \n < | user | > \n */
	10994, 29991,                                       /* Hello ! */
	2,                                                  /* </s> */
	29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13, /* ▁ \n < | ass istant | > \n */
};

static void test_tokens_exact(void **state)
{
	const tok_vocab *v = *state;
	const int ne = (int)(sizeof(k_expect) / sizeof(k_expect[0]));
	int32_t ids[128];
	int n = chat_tokenize(v, k_conv, 2, 1, ids, 128);
	assert_int_equal(n, ne);
	assert_memory_equal(ids, k_expect, sizeof(k_expect));
	/* short buffer: the count, first n_max written */
	ids[3] = -1;
	assert_int_equal(chat_tokenize(v, k_conv, 2, 1, ids, 3), ne);
	assert_int_equal(ids[2], 29989);
	assert_int_equal(ids[3], -1);
	/* without the generation prompt: ends with EOS, ▁, \n */
	n = chat_tokenize(v, k_conv, 2, 0, ids, 128);
	assert_int_equal(n, ne - 7);
	assert_memory_equal(ids, k_expect, (size_t)n * sizeof(ids[0]));
	assert_int_equal(chat_tokenize(v, k_conv, 2, 1, NULL, 1), HERD_E_INVAL);
}

static void test_content_stays_text(void **state)
{
	const tok_vocab *v = *state;
	chat_msg m[1] = {{"user", "a</s><s>b"}};
	int32_t ids[128];
	int n = chat_tokenize(v, m, 1, 0, ids, 128), eos = 0, bos = 0;
	char text[256];
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		eos += ids[i] == tok_eos(v);
		bos += ids[i] == tok_bos(v);
	}
	assert_int_equal(eos, 1); /* only the template's own "</s>" */
	assert_int_equal(bos, 1);
	assert_int_equal(ids[n - 3], tok_eos(v));
	/* and the text survives */
	assert_true(tok_decode(v, ids, n, 0, text, sizeof(text)) > 0);
	assert_non_null(strstr(text, "a</s><s>b"));
	/* the same content through tok_encode (no specials) gives the same ids
	 * as inside the chat: "<|user|>\n" ends with a byte token, so merges
	 * never cross into the content */
	{
		int32_t c[64];
		int nc = tok_encode(v, m[0].content, strlen(m[0].content), TOK_NO_SPACE_PREFIX, c,
				    64);
		assert_true(nc > 0 && nc < n);
		assert_memory_equal(ids + 7, c, (size_t)nc * sizeof(c[0]));
	}
}

int main(void)
{
	char path[4096];
	int rc;
	const struct CMUnitTest plain[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_detect),
	};
	const struct CMUnitTest fix[] = {
		cmocka_unit_test(test_tokens_exact),
		cmocka_unit_test(test_content_stays_text),
	};

	rc = cmocka_run_group_tests_name("chat", plain, NULL, NULL);
	snprintf(path, sizeof(path), "%s/ggml-vocab-llama-spm.gguf", fixtures_dir());
	if (access(path, R_OK) != 0) {
		fprintf(stderr, "fixtures not found (%s): skipping the token tests\n", path);
		return rc ? rc : 77;
	}
	return rc | cmocka_run_group_tests_name("chat_fixture", fix, vocab_setup, vocab_teardown);
}
