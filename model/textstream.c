#include "textstream.h"

#include <string.h>

size_t text_utf8_incomplete(const char *text, size_t len)
{
	for (size_t k = 1; k <= 4 && k <= len; k++) {
		const unsigned char ch = (unsigned char)text[len - k];
		if ((ch & 0xC0) == 0x80)
			continue; /* continuation byte: look further back */
		const size_t need = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1;
		return need > k ? k : 0;
	}
	return 0;
}

/* Length of the well-formed character at s[0..n), or 0. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
	const unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
	if (!need || need > n)
		return 0;
	unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k < need; k++)
		if ((s[k] & 0xC0) != 0x80)
			return 0;
	return need;
}

size_t text_utf8_sanitize(const char *in, size_t n, char *out)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		const size_t k = utf8_char(s + i, n - i);
		if (k) {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		} else {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	return o;
}

size_t text_holdback(const char *text, size_t len, const char *const *stop, size_t n_stop)
{
	size_t h = 0;
	for (size_t i = 0; i < n_stop; i++) {
		const size_t sl = strlen(stop[i]);
		if (sl == 0)
			continue;
		for (size_t k = sl - 1 < len ? sl - 1 : len; k > h; k--)
			if (!memcmp(text + len - k, stop[i], k)) {
				h = k;
				break;
			}
	}
	const size_t u = text_utf8_incomplete(text, len);
	return u > h ? u : h;
}

long text_find_stop(const char *text, size_t len, size_t from, const char *const *stop,
		    size_t n_stop)
{
	long best = -1;
	for (size_t i = 0; i < n_stop; i++) {
		const size_t sl = strlen(stop[i]);
		if (sl == 0)
			continue;
		const size_t start = from >= sl - 1 ? from - (sl - 1) : 0;
		if (len < start + sl)
			continue;
		const char *hit = memmem(text + start, len - start, stop[i], sl);
		if (hit && (best < 0 || hit - text < best))
			best = hit - text;
	}
	return best;
}
