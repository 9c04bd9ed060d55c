/* herd's own weight types (kernels.h, KERN_TYPE_HQ*): b-bit integers in
 * blocks of B, for rows no GGUF block divides (a 172-wide FFN, 43 * 4) and
 * for bit widths between ggml's. Never in a file meant for llama.cpp: herd
 * quantize marks a file holding them (herd.own_types) and can be kept to
 * standard types (--standard-only).
 *
 * Block layout (kern_hq_block_size(b, B) bytes): an IEEE half scale d, then
 * B unsigned b-bit codes packed LSB first (code j at bit j * b of the
 * byte stream; the last byte zero-padded). Value = d * (code - 2^(b-1)).
 * Quantization is Q4_0's rule generalised: d = m / -2^(b-1) for the block's
 * value m of largest magnitude, code = clamp(round(x / d) + 2^(b-1),
 * 0, 2^b - 1) (half up). Dot products take f32 activations (vec_dot_type
 * F32): no activation rounding. Reference code only; pure, thread-safe. */
#include <math.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"
#include "variant.h"

static float hq_signed_absmax(const float *x, int n)
{
	float amax = 0, max = 0;
	for (int j = 0; j < n; j++)
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	return max;
}

static void hq_quant(const float *restrict x, uint8_t *restrict y, int64_t n, int b, int B)
{
	const size_t bs = KERN_HQ_BLOCK_BYTES(b, B);
	const int off = 1 << (b - 1), top = (1 << b) - 1;
	for (int64_t i = 0; i < n / B; i++, x += B, y += bs) {
		const float d = hq_signed_absmax(x, B) / -(float)off;
		const float id = d ? 1.0f / d : 0.0f;
		const kern_fp16_t dh = kern_fp32_to_fp16(d);
		memcpy(y, &dh, sizeof(dh));
		uint8_t *q = y + sizeof(dh);
		memset(q, 0, bs - sizeof(dh));
		for (int j = 0; j < B; j++) {
			int c = (int)floorf(x[j] * id + (float)off + 0.5f);
			c = c < 0 ? 0 : c > top ? top : c;
			const int bit = j * b;
			const uint32_t v = (uint32_t)c << (bit & 7);
			q[bit >> 3] |= (uint8_t)v;
			if ((bit & 7) + b > 8)
				q[(bit >> 3) + 1] |= (uint8_t)(v >> 8);
			if ((bit & 7) + b > 16)
				q[(bit >> 3) + 2] |= (uint8_t)(v >> 16);
		}
	}
}

/* The B values of one block. */
static void hq_block(const uint8_t *restrict y, float *restrict out, int b, int B)
{
	kern_fp16_t dh;
	memcpy(&dh, y, sizeof(dh));
	const float d = kern_fp16_to_fp32(dh);
	const uint8_t *q = y + sizeof(dh);
	const int off = 1 << (b - 1);
	const uint32_t mask = (1u << b) - 1;
	for (int j = 0; j < B; j++) {
		const int bit = j * b, byte = bit >> 3;
		uint32_t v = q[byte];
		if ((bit & 7) + b > 8)
			v |= (uint32_t)q[byte + 1] << 8;
		if ((bit & 7) + b > 16)
			v |= (uint32_t)q[byte + 2] << 16;
		out[j] = d * (float)((int)((v >> (bit & 7)) & mask) - off);
	}
}

static void hq_dequant(const void *restrict x, float *restrict y, int64_t n, int b, int B)
{
	const size_t bs = KERN_HQ_BLOCK_BYTES(b, B);
	for (int64_t i = 0; i < n / B; i++)
		hq_block((const uint8_t *)x + (size_t)i * bs, y + i * B, b, B);
}

static void hq_dot(int n, float *restrict s, const void *restrict x, const void *restrict y, int b,
		   int B)
{
	const size_t bs = KERN_HQ_BLOCK_BYTES(b, B);
	const float *a = y;
	float v[KERN_HQ_MAX_BLOCK];
	double sum = 0;
	for (int i = 0; i < n / B; i++) {
		hq_block((const uint8_t *)x + (size_t)i * bs, v, b, B);
		float part = 0;
		for (int j = 0; j < B; j++)
			part += v[j] * a[i * B + j];
		sum += part;
	}
	*s = (float)sum;
}

/* One set of kernel entry points per (bits, block). */
#define HQ_TYPE(b, B)                                                                          \
	static void hq_quant_##b##_##B(const float *restrict x, void *restrict y, int64_t n)   \
	{                                                                                      \
		hq_quant(x, y, n, b, B);                                                       \
	}                                                                                      \
	static void hq_dequant_##b##_##B(const void *restrict x, float *restrict y, int64_t n) \
	{                                                                                      \
		hq_dequant(x, y, n, b, B);                                                     \
	}                                                                                      \
	static void hq_dot_##b##_##B(int n, float *restrict s, const void *restrict x,         \
				     const void *restrict y)                                   \
	{                                                                                      \
		hq_dot(n, s, x, y, b, B);                                                      \
	}
#define HQ_ENTRY(b, B)                                                                         \
	{.type = KERN_TYPE_HQ##b##_##B, .to_float = {[KERN_ISA_REF] = hq_dequant_##b##_##B},   \
	 .from_float = {[KERN_ISA_REF] = hq_quant_##b##_##B},                                  \
	 .vec_dot = {[KERN_ISA_REF] = hq_dot_##b##_##B}}

HQ_TYPE(4, 32)
HQ_TYPE(5, 32)
HQ_TYPE(6, 32)
HQ_TYPE(7, 32)
HQ_TYPE(8, 32)
HQ_TYPE(4, 43)
HQ_TYPE(5, 43)
HQ_TYPE(6, 43)
HQ_TYPE(7, 43)
HQ_TYPE(8, 43)

static const kern_type_variants hq_variants[] = {
	HQ_ENTRY(4, 32), HQ_ENTRY(5, 32), HQ_ENTRY(6, 32), HQ_ENTRY(7, 32), HQ_ENTRY(8, 32),
	HQ_ENTRY(4, 43), HQ_ENTRY(5, 43), HQ_ENTRY(6, 43), HQ_ENTRY(7, 43), HQ_ENTRY(8, 43),
};

void kern_ops_init_herd(kern_ops *ops, kern_isa isa)
{
	kern_ops_fill_types(ops, hq_variants, sizeof(hq_variants) / sizeof(hq_variants[0]), isa);
}
