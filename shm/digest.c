/* HM256 content hash: see digest.h for the algorithm. */
#include "shm/digest.h"

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shm/digest.c reads words in host order and assumes little-endian"
#endif

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
	return (x << (r & 63)) | (x >> ((64 - r) & 63));
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t w)
{
	acc += w * P2;
	acc = rotl64(acc, 31);
	return acc * P1;
}

static inline uint64_t avalanche(uint64_t h)
{
	h ^= h >> 33;
	h *= P2;
	h ^= h >> 29;
	h *= P3;
	h ^= h >> 32;
	return h;
}

/* Consumes whole stripes; returns the bytes used (a multiple of 32). */
static size_t stripes(uint64_t v[4], const uint8_t *p, size_t n)
{
	uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
	const size_t whole = n & ~(size_t)31;
	for (size_t i = 0; i < whole; i += 32) {
		a = round64(a, rd64(p + i));
		b = round64(b, rd64(p + i + 8));
		c = round64(c, rd64(p + i + 16));
		d = round64(d, rd64(p + i + 24));
	}
	v[0] = a;
	v[1] = b;
	v[2] = c;
	v[3] = d;
	return whole;
}

void shm_digest_init(shm_digest_state *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = P1 + P2;
	s->v[1] = P2;
	s->v[2] = P4;
	s->v[3] = 0 - P1;
}

void shm_digest_update(shm_digest_state *s, const void *p, size_t n)
{
	const uint8_t *b = p;
	if (n == 0)
		return;
	s->len += n;
	if (s->buf_len) {
		const size_t take = n < 32 - s->buf_len ? n : 32 - s->buf_len;
		memcpy(s->buf + s->buf_len, b, take);
		s->buf_len += (uint32_t)take;
		b += take;
		n -= take;
		if (s->buf_len < 32)
			return;
		stripes(s->v, s->buf, 32);
		s->buf_len = 0;
	}
	const size_t used = stripes(s->v, b, n);
	if (n > used) {
		memcpy(s->buf, b + used, n - used);
		s->buf_len = (uint32_t)(n - used);
	}
}

void shm_digest_update_zeros(shm_digest_state *s, size_t n)
{
	static const uint8_t zeros[4096];
	while (n > 0) {
		const size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
		shm_digest_update(s, zeros, k);
		n -= k;
	}
}

void shm_digest_final(shm_digest_state *s, uint8_t out[SHM_DIGEST_SIZE])
{
	if (s->buf_len) {
		memset(s->buf + s->buf_len, 0, 32 - s->buf_len);
		stripes(s->v, s->buf, 32);
		s->buf_len = 0;
	}
	const uint64_t *v = s->v;
	const uint64_t m = (rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) +
			    rotl64(v[3], 18)) ^
			   (s->len * P5);
	for (unsigned i = 0; i < 4; i++) {
		const uint64_t w = avalanche((v[i] ^ rotl64(m, 17 * i + 5)) + (i + 1) * P3);
		memcpy(out + 8 * i, &w, 8);
	}
}

void shm_digest(const void *p, size_t n, uint8_t out[SHM_DIGEST_SIZE])
{
	shm_digest_state s;
	shm_digest_init(&s);
	shm_digest_update(&s, p, n);
	shm_digest_final(&s, out);
}

void shm_digest_hex(const uint8_t *d, size_t n_bytes, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	if (n_bytes > SHM_DIGEST_SIZE)
		n_bytes = SHM_DIGEST_SIZE;
	for (size_t i = 0; i < n_bytes; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * n_bytes] = '\0';
}
