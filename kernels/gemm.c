/* Row-interleaved layouts: repacking, activation preparation, the scalar
 * reference GEMMs, and their dispatch. */
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "herd/error.h"
#include "legacy.h"

int kern_repack_worthwhile(void)
{
	return kern_isa_detect() >= KERN_ISA_AVX512 && !getenv("HERD_NO_REPACK");
}

int kern_repack_type(kern_type t)
{
	switch (t) {
	case KERN_TYPE_Q4_0: return KERN_TYPE_Q4_0_R16;
	case KERN_TYPE_Q8_0: return KERN_TYPE_Q8_0_R16;
	default: return -1;
	}
}

int kern_type_is_r16(int t)
{
	return t == KERN_TYPE_Q4_0_R16 || t == KERN_TYPE_Q8_0_R16;
}

int kern_r16_base_type(int t)
{
	switch (t) {
	case KERN_TYPE_Q4_0_R16: return KERN_TYPE_Q4_0;
	case KERN_TYPE_Q8_0_R16: return KERN_TYPE_Q8_0;
	default: return -1;
	}
}

/* Moves 4-byte words between plain blocks and interleaved chunks; pack = 1
 * goes plain -> R16. */
static int r16_convert(int r16, const void *src, int64_t n_rows, int64_t K, void *dst, int pack)
{
	if (n_rows % KERN_R || K % 32 || n_rows < 0 || K <= 0)
		return HERD_E_INVAL;
	const int64_t nb = K / 32;
	const int q4 = r16 == KERN_TYPE_Q4_0_R16;
	const size_t pb = q4 ? sizeof(kern_block_q4_0) : sizeof(kern_block_q8_0);
	const size_t gb = KERN_R * pb;
	const int words = q4 ? 4 : 8; /* 4-byte words of quants per row per block */
	for (int64_t g = 0; g < n_rows / KERN_R; g++)
		for (int64_t b = 0; b < nb; b++) {
			char *pg = (char *)(pack ? dst : (void *)src) + (size_t)(g * nb + b) * gb;
			for (int r = 0; r < KERN_R; r++) {
				char *pr = (char *)(pack ? (void *)src : dst) +
					   ((size_t)(g * KERN_R + r) * nb + b) * pb;
				/* d is the first field of both block kinds */
				if (pack)
					memcpy(pg + 2 * r, pr, 2);
				else
					memcpy(pr, pg + 2 * r, 2);
				for (int j = 0; j < words; j++) {
					char *gw = pg + 2 * KERN_R + (size_t)j * 64 + 4 * r;
					char *rw = pr + 2 + 4 * j;
					if (pack)
						memcpy(gw, rw, 4);
					else
						memcpy(rw, gw, 4);
				}
			}
		}
	return 0;
}

int kern_repack(kern_type t, const void *src, int64_t n_rows, int64_t K, void *dst)
{
	const int r16 = kern_repack_type(t);
	return r16 < 0 ? HERD_E_INVAL : r16_convert(r16, src, n_rows, K, dst, 1);
}

int kern_unpack_r16(kern_type r16, const void *src, int64_t n_rows, int64_t K, void *dst)
{
	return kern_type_is_r16(r16) ? r16_convert(r16, src, n_rows, K, dst, 0) : HERD_E_INVAL;
}

size_t kern_act_stride(int64_t K)
{
	return ((size_t)(K / 32) * 8 + (size_t)K + 63) / 64 * 64;
}

/* unsigned_q: store quants + 128 as uint8 and no zero-point sums. */
static void act_q8(const float *restrict x, int64_t K, int n_b, void *restrict dst, int unsigned_q)
{
	const int64_t nb = K / 32;
	for (int b = 0; b < n_b; b++) {
		char *row = (char *)dst + (size_t)b * kern_act_stride(K);
		float *d = (float *)row;
		int32_t *s = (int32_t *)(row + 4 * nb);
		int8_t *qs = (int8_t *)(row + 8 * nb);
		for (int64_t i = 0; i < nb; i++) {
			kern_block_q8_0 blk;
			kern_quant_q8_0_ref(x + (size_t)b * K + i * 32, &blk, 32);
			d[i] = kern_fp16_to_fp32(blk.d);
			int32_t sum = 0;
			for (int j = 0; j < 32; j++)
				sum += blk.qs[j];
			s[i] = unsigned_q ? 0 : 8 * sum;
			for (int j = 0; j < 32; j++)
				qs[i * 32 + j] = (int8_t)(unsigned_q ? (uint8_t)(blk.qs[j] ^ 0x80) : blk.qs[j]);
		}
	}
}

void kern_act_q8_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	act_q8(x, K, n_b, dst, 0);
}

void kern_act_q8u_ref(const float *restrict x, int64_t K, int n_b, void *restrict dst)
{
	act_q8(x, K, n_b, dst, 1);
}

void kern_gemm_q4_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nb = K / 32;
	const kern_block_q4_0_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const char *row = (const char *)act + (size_t)b * act_stride;
		const float *d = (const float *)row;
		const int32_t *s = (const int32_t *)(row + 4 * nb);
		const int8_t *qs = (const int8_t *)(row + 8 * nb);
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nb; i++) {
				int32_t dot = 0;
				for (int j = 0; j < 4; j++)
					for (int e = 0; e < 4; e++) {
						const uint8_t q = w[i].qs[j][4 * r + e];
						dot += (q & 15) * qs[i * 32 + 4 * j + e];
						dot += (q >> 4) * qs[i * 32 + 16 + 4 * j + e];
					}
				acc += (float)(dot - s[i]) * (kern_fp16_to_fp32(w[i].d[r]) * d[i]);
			}
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

void kern_gemm_q8_0_r16_ref(int64_t K, const void *restrict wg, const void *restrict act,
			    size_t act_stride, int n_b, float *restrict y, int64_t ldy)
{
	const int64_t nb = K / 32;
	const kern_block_q8_0_r16 *w = wg;
	for (int b = 0; b < n_b; b++) {
		const char *row = (const char *)act + (size_t)b * act_stride;
		const float *d = (const float *)row;
		const uint8_t *qs = (const uint8_t *)(row + 8 * nb);
		for (int r = 0; r < KERN_R; r++) {
			float acc = 0;
			for (int64_t i = 0; i < nb; i++) {
				int32_t dot = 0;
				for (int g = 0; g < 8; g++)
					for (int e = 0; e < 4; e++)
						dot += w[i].qs[g][4 * r + e] * (qs[i * 32 + 4 * g + e] - 128);
				acc += (float)dot * (kern_fp16_to_fp32(w[i].d[r]) * d[i]);
			}
			y[(int64_t)b * ldy + r] = acc;
		}
	}
}

void kern_ops_init_gemm(kern_ops *ops, kern_isa isa)
{
	const int simd = isa >= KERN_ISA_AVX512;
	ops->act[KERN_TYPE_Q4_0_R16] = simd ? kern_act_q8_avx512 : kern_act_q8_ref;
	ops->act[KERN_TYPE_Q8_0_R16] = simd ? kern_act_q8u_avx512 : kern_act_q8u_ref;
	ops->gemm[KERN_TYPE_Q4_0_R16] = simd ? kern_gemm_q4_0_r16_avx512 : kern_gemm_q4_0_r16_ref;
	ops->gemm[KERN_TYPE_Q8_0_R16] = simd ? kern_gemm_q8_0_r16_avx512 : kern_gemm_q8_0_r16_ref;
}
