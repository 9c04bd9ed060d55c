/* herd image digest: a fast 256-bit content hash ("HM256").
 *
 * Purpose: name and check a shared-memory model image (hundreds of MB), so it
 * must run at memory speed: on x86-64 it hashes well above 5 GB/s from cache
 * and is bounded by memory bandwidth otherwise. It detects accidental change
 * (a bit flip, a truncated or partly written object, another build of the
 * image); it is NOT a cryptographic hash and does not resist a deliberate
 * collision. Images are protected from tampering by their file mode (0440),
 * not by the digest.
 *
 * Algorithm (byte-exact, little-endian):
 *   - State: four 64-bit lanes v[0..3], seeded with distinct constants, and
 *     the total length.
 *   - Input is consumed in 32-byte stripes; lane i takes the 8-byte word at
 *     stripe offset 8*i:  v[i] = rotl64(v[i] + w * P2, 31) * P1
 *     (xxHash64's round: one multiply per 8 bytes, four independent chains,
 *     so the multiplier pipeline runs at full rate).
 *   - A final partial stripe is zero-padded to 32 bytes and consumed the same
 *     way; the total length, mixed in at the end, tells padding from data.
 *   - Finish: m = rotl(v0,1) + rotl(v1,7) + rotl(v2,12) + rotl(v3,18)
 *     ^ len * P5; out word i = avalanche(v[i] ^ rotl(m, 17 * i + 5) + (i + 1) * P3),
 *     where avalanche is xxHash64's final mix. Each output word depends on
 *     every input byte (through m) and on its own lane; the 32 output bytes
 *     are the four words in little-endian order.
 *
 * The streaming state is a caller-owned struct; functions are pure (no
 * globals) and thread-safe on distinct states.
 */
#ifndef HERD_SHM_DIGEST_H
#define HERD_SHM_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHM_DIGEST_SIZE 32
/* Hex characters of a full digest, without the NUL. */
#define SHM_DIGEST_HEX 64

typedef struct shm_digest_state {
	uint64_t v[4];
	uint64_t len;     /* bytes consumed so far */
	uint8_t buf[32];  /* partial stripe */
	uint32_t buf_len; /* 0..31 */
} shm_digest_state;

void shm_digest_init(shm_digest_state *s);
/* Consumes n bytes of p (p may be NULL when n == 0). Any split of the input
 * into calls gives the same digest. */
void shm_digest_update(shm_digest_state *s, const void *p, size_t n);
/* Consumes n zero bytes without needing a buffer. */
void shm_digest_update_zeros(shm_digest_state *s, size_t n);
/* Writes the digest; s must be re-initialised before reuse. */
void shm_digest_final(shm_digest_state *s, uint8_t out[SHM_DIGEST_SIZE]);
/* One shot. */
void shm_digest(const void *p, size_t n, uint8_t out[SHM_DIGEST_SIZE]);
/* Lower-case hex of the first n_bytes bytes of d (n_bytes <= 32) into hex,
 * which must hold 2 * n_bytes + 1 chars; NUL-terminated. */
void shm_digest_hex(const uint8_t *d, size_t n_bytes, char *hex);

#ifdef __cplusplus
}
#endif
#endif
