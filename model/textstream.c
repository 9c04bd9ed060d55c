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
