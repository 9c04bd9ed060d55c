/* Streaming text: stop strings and UTF-8 hold-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "model/textstream.h"

static void test_utf8(void **state)
{
	(void)state;
	assert_int_equal(text_utf8_incomplete("abc", 3), 0);
	assert_int_equal(text_utf8_incomplete("caf\xC3", 4), 1);         /* é cut after its lead byte */
	assert_int_equal(text_utf8_incomplete("caf\xC3\xA9", 5), 0);     /* é complete */
	assert_int_equal(text_utf8_incomplete("x\xE2\x82", 3), 2);       /* € missing its last byte */
	assert_int_equal(text_utf8_incomplete("x\xE2\x82\xAC", 4), 0);
	assert_int_equal(text_utf8_incomplete("\xF0\x9F\xA6", 3), 3);    /* 4-byte character, 3 here */
	assert_int_equal(text_utf8_incomplete("\xA9\xA9", 2), 0);        /* stray continuation bytes */
	assert_int_equal(text_utf8_incomplete("", 0), 0);
}

static void test_holdback(void **state)
{
	(void)state;
	const char *stop[] = {"</s>", "", "END"};
	/* a proper prefix of a stop string is held back; empty stop strings
	 * are ignored (they used to hang libherd's local generation) */
	assert_int_equal(text_holdback("hello </", 8, stop, 3), 2);
	assert_int_equal(text_holdback("hello EN", 8, stop, 3), 2);
	assert_int_equal(text_holdback("hello", 5, stop, 3), 0);
	assert_int_equal(text_holdback("<", 1, stop, 3), 1);
	/* the longer of the two reasons wins */
	assert_int_equal(text_holdback("a\xE2\x82", 3, stop, 3), 2);
	assert_int_equal(text_holdback("a\xE2\x82", 3, NULL, 0), 2);
}

static void test_find_stop(void **state)
{
	(void)state;
	const char *stop[] = {"</s>", "", "xy"};
	const char *t = "ab</s>cd xy";
	const size_t n = strlen(t);
	assert_int_equal(text_find_stop(t, n, 0, stop, 3), 2);
	/* only stops ending at or after `from` count: "</s>" ends at 6 */
	assert_int_equal(text_find_stop(t, n, 5, stop, 3), 2);
	assert_int_equal(text_find_stop(t, n, 6, stop, 3), 9);
	assert_int_equal(text_find_stop(t, 5, 0, stop, 3), -1); /* "</s" is not a stop yet */
	assert_int_equal(text_find_stop(t, n, 0, NULL, 0), -1);
}

/* Well-formed characters pass; every other byte becomes U+FFFD. */
static void test_utf8_sanitize(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"plain", "plain"},
		{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\xa6\x99", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\xa6\x99"},
		{"a\x84" "b", "a\xef\xbf\xbd" "b"},                      /* a lone continuation byte */
		{"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},             /* overlong */
		{"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
		{"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* past U+10FFFF */
		{"x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd"},           /* cut short */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		size_t n = text_utf8_sanitize(cases[i].in, strlen(cases[i].in), out);
		out[n] = 0;
		assert_string_equal(out, cases[i].out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_holdback),
		cmocka_unit_test(test_find_stop),
		cmocka_unit_test(test_utf8_sanitize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
