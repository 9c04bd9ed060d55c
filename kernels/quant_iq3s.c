/* IQ3_S quantization without an importance matrix (weights x^2), the one
 * codebook i-quant llama-quantize makes without one.
 *
 * Per 32-element sub-block: signs are stored as they are, the magnitudes
 * go to 8 groups of 4, each a point of the 512-entry grid (coordinates odd,
 * 1..15). For 19 trial scales around max/15 every group is rounded to the
 * nearest lattice point; off-grid points take the best of their nearest
 * grid neighbours (three distance shells, a table built once); the scale of
 * the best trial is refitted by weighted least squares. The super-block
 * then stores d = max scale / 31 and per sub-block 2l+1 (4-bit l), and the
 * groups are assigned once more at that final scale. */
#include "iquant.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "fp16.h"
#include "kquant.h"

#define IQ3S_POINTS 4096 /* 8^4 lattice points, l0 | l1 << 3 | l2 << 6 | l3 << 9 */
#define IQ3S_MAX_NBR 40000

static struct {
	int16_t map[IQ3S_POINTS]; /* grid index of an on-grid point, else -1 */
	uint16_t start[IQ3S_POINTS], count[IQ3S_POINTS];
	uint16_t nbr[IQ3S_MAX_NBR];
} iq3s;
static pthread_once_t iq3s_once = PTHREAD_ONCE_INIT;

static int gbyte(int g, int i)
{
	return (int)((kern_iq3s_grid[g] >> (8 * i)) & 0xff);
}

/* Grid entries within the three nearest distance shells of point u. */
static void iq3s_neighbours(int u, int *n_out)
{
	int d2[512], shell[3] = {1 << 30, 1 << 30, 1 << 30};
	for (int g = 0; g < 512; g++) {
		int d = 0;
		for (int i = 0; i < 4; i++) {
			const int e = 2 * ((u >> (3 * i)) & 7) + 1 - gbyte(g, i);
			d += e * e;
		}
		d2[g] = d;
		if (d == shell[0] || d == shell[1] || d == shell[2])
			continue;
		if (d < shell[0]) {
			shell[2] = shell[1], shell[1] = shell[0], shell[0] = d;
		} else if (d < shell[1]) {
			shell[2] = shell[1], shell[1] = d;
		} else if (d < shell[2]) {
			shell[2] = d;
		}
	}
	iq3s.start[u] = (uint16_t)*n_out;
	for (int g = 0; g < 512 && *n_out < IQ3S_MAX_NBR; g++)
		if (d2[g] <= shell[2])
			iq3s.nbr[(*n_out)++] = (uint16_t)g;
	iq3s.count[u] = (uint16_t)(*n_out - iq3s.start[u]);
}

static void iq3s_init(void)
{
	memset(iq3s.map, 0xff, sizeof(iq3s.map));
	for (int g = 0; g < 512; g++) {
		int u = 0;
		for (int i = 0; i < 4; i++)
			u |= ((gbyte(g, i) - 1) / 2) << (3 * i);
		iq3s.map[u] = (int16_t)g;
	}
	int n = 0;
	for (int u = 0; u < IQ3S_POINTS; u++)
		if (iq3s.map[u] < 0)
			iq3s_neighbours(u, &n);
}

/* The grid entry for magnitudes a[4] (weights w) at scale s (inverse is). */
static int iq3s_group(const float *a, const float *w, float s, float is)
{
	int u = 0;
	for (int i = 0; i < 4; i++) {
		int l = kern_nearest_int(0.5f * (is * a[i] - 1));
		l = l < 0 ? 0 : (l > 7 ? 7 : l);
		u |= l << (3 * i);
	}
	if (iq3s.map[u] >= 0)
		return iq3s.map[u];
	int best = iq3s.nbr[iq3s.start[u]];
	float best_e = INFINITY;
	for (int k = 0; k < iq3s.count[u]; k++) {
		const int g = iq3s.nbr[iq3s.start[u] + k];
		float e = 0;
		for (int i = 0; i < 4; i++) {
			const float diff = s * (float)gbyte(g, i) - a[i];
			e += w[i] * diff * diff;
		}
		if (e < best_e) {
			best_e = e;
			best = g;
		}
	}
	return best;
}

/* Assigns the 8 groups at scale s; returns sum w q a and sum w q^2. */
static void iq3s_assign(const float *a, const float *w, float s, int g[8], float *sqx, float *sq2)
{
	float x = 0, q2 = 0;
	for (int k = 0; k < 8; k++) {
		g[k] = iq3s_group(a + 4 * k, w + 4 * k, s, 1.0f / s);
		for (int i = 0; i < 4; i++) {
			const float q = (float)gbyte(g[k], i);
			x += w[4 * k + i] * q * a[4 * k + i];
			q2 += w[4 * k + i] * q * q;
		}
	}
	*sqx = x;
	*sq2 = q2;
}

/* Best scale of one sub-block (0 when it is all zeros). */
static float iq3s_sub_scale(const float *a, const float *w)
{
	float max = 0;
	for (int i = 0; i < 32; i++)
		max = a[i] > max ? a[i] : max;
	if (max == 0)
		return 0;
	float best = 0, scale = max / 15, sqx, sq2;
	int g[8];
	for (int t = -9; t <= 9; t++) {
		const float s = max / (15 + 0.2f * (float)t);
		iq3s_assign(a, w, s, g, &sqx, &sq2);
		if (sq2 > 0 && sqx * sqx > best * sq2) {
			scale = sqx / sq2;
			best = scale * sqx;
		}
	}
	iq3s_assign(a, w, scale, g, &sqx, &sq2);
	return sq2 > 0 ? sqx / sq2 : scale;
}

static void iq3s_block(const float *x, kern_block_iq3_s *y)
{
	float a[KERN_QK_K], w[KERN_QK_K], sc[8], max_scale = 0;
	memset(y, 0, sizeof(*y));
	for (int i = 0; i < KERN_QK_K; i++) {
		a[i] = fabsf(x[i]);
		w[i] = x[i] * x[i];
		if (x[i] < 0)
			y->signs[i / 8] |= (uint8_t)(1u << (i % 8));
	}
	for (int ib = 0; ib < 8; ib++) {
		sc[ib] = iq3s_sub_scale(a + 32 * ib, w + 32 * ib);
		max_scale = sc[ib] > max_scale ? sc[ib] : max_scale;
	}
	const float d = max_scale / 31;
	y->d = kern_fp32_to_fp16(d);
	const float dr = kern_fp16_to_fp32(y->d); /* the scale the decoder sees */
	for (int ib = 0; ib < 8; ib++) {
		int l = dr > 0 ? kern_nearest_int(0.5f * (sc[ib] / dr - 1)) : 0;
		l = l < 0 ? 0 : (l > 15 ? 15 : l);
		y->scales[ib / 2] |= (uint8_t)(l << (4 * (ib % 2)));
		int g[8];
		float sqx, sq2;
		const float s = dr > 0 ? dr * (float)(2 * l + 1) : 1.0f;
		iq3s_assign(a + 32 * ib, w + 32 * ib, s, g, &sqx, &sq2);
		for (int k = 0; k < 8; k++) {
			y->qs[8 * ib + k] = (uint8_t)(g[k] & 255);
			y->qh[ib] |= (uint8_t)((g[k] >> 8) << k);
		}
	}
}

void kern_quant_iq3_s_ref(const float *restrict x, void *restrict vy, int64_t n)
{
	pthread_once(&iq3s_once, iq3s_init);
	kern_block_iq3_s *y = vy;
	for (int64_t i = 0; i < n / KERN_QK_K; i++)
		iq3s_block(x + KERN_QK_K * i, y + i);
}
