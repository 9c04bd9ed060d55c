/* Scalar half and bfloat16 conversions, rounding as ggml does (IEEE
 * round-to-nearest-even), so converted data matches llama.cpp bit for bit.
 * Pure functions: thread-safe. */
#ifndef HERD_KERNELS_FP16_H
#define HERD_KERNELS_FP16_H

#include <stdint.h>
#include <string.h>

#include "quant_blocks.h"

static inline uint32_t kern_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static inline float kern_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float kern_fp16_to_fp32(kern_fp16_t h)
{
	const uint32_t w = (uint32_t)h << 16;
	const uint32_t sign = w & 0x80000000u;
	const uint32_t two_w = w + w;
	const uint32_t exp_offset = 0xE0u << 23;
	const float exp_scale = 0x1.0p-112f;
	const float normalized = kern_bits_f32((two_w >> 4) + exp_offset) * exp_scale;
	const uint32_t magic_mask = 126u << 23;
	const float magic_bias = 0.5f;
	const float denormalized = kern_bits_f32((two_w >> 17) | magic_mask) - magic_bias;
	const uint32_t denorm_cutoff = 1u << 27;
	const uint32_t result = sign | (two_w < denorm_cutoff ? kern_f32_bits(denormalized)
							      : kern_f32_bits(normalized));
	return kern_bits_f32(result);
}

static inline kern_fp16_t kern_fp32_to_fp16(float f)
{
	const float scale_to_inf = 0x1.0p+112f;
	const float scale_to_zero = 0x1.0p-110f;
	float base = ((f < 0 ? -f : f) * scale_to_inf) * scale_to_zero;
	const uint32_t w = kern_f32_bits(f);
	const uint32_t shl1_w = w + w;
	const uint32_t sign = w & 0x80000000u;
	uint32_t bias = shl1_w & 0xFF000000u;
	if (bias < 0x71000000u)
		bias = 0x71000000u;
	base = kern_bits_f32((bias >> 1) + 0x07800000u) + base;
	const uint32_t bits = kern_f32_bits(base);
	const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
	const uint32_t mantissa_bits = bits & 0x00000FFFu;
	const uint32_t nonsign = exp_bits + mantissa_bits;
	return (kern_fp16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float kern_bf16_to_fp32(kern_bf16_t h)
{
	return kern_bits_f32((uint32_t)h << 16);
}

static inline kern_bf16_t kern_fp32_to_bf16(float f)
{
	uint32_t u = kern_f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
		return (kern_bf16_t)((u >> 16) | 64);
	return (kern_bf16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

#endif
