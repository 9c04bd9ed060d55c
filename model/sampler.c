#include "model/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "herd/error.h"

typedef struct sampler_cand {
	int32_t id;
	float logit;
	float p;
} sampler_cand;

struct sampler {
	sampler_params prm;
	int n_vocab;
	uint64_t rng[4];       /* xoshiro256** state */
	sampler_cand *cand;    /* [n_vocab] working set */
	int32_t *hist;         /* [repeat_last_n] ring of accepted tokens */
	int32_t *hist_count;   /* [n_vocab] occurrences of each token in hist */
	int hist_head;         /* next slot to write */
	int hist_len;
};

sampler_params sampler_params_default(void)
{
	sampler_params p = {
		.temperature = 0.8f,
		.top_k = 40,
		.top_p = 0.95f,
		.min_p = 0.05f,
		.repeat_penalty = 1.0f,
		.repeat_last_n = 64,
		.seed = 0x5eedu,
	};
	return p;
}

/* ---- PRNG: splitmix64 seeds xoshiro256** ----------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
	uint64_t r = rotl64(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl64(s[3], 45);
	return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4])
{
	return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static void rng_seed(uint64_t s[4], uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		s[i] = splitmix64(&x);
}

/* ---- lifecycle ------------------------------------------------------- */

int sampler_create(sampler **out, const sampler_params *p, int n_vocab)
{
	sampler *s = NULL;
	int rc = HERD_E_INVAL;

	if (!out)
		return HERD_E_INVAL;
	*out = NULL;
	if (!p || n_vocab < 1 || p->repeat_last_n < 0 || isnan(p->temperature) ||
	    isnan(p->top_p) || isnan(p->min_p) || !(p->repeat_penalty > 0.0f))
		return HERD_E_INVAL;

	rc = -ENOMEM;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto fail;
	s->prm = *p;
	s->n_vocab = n_vocab;
	/* Working memory is allocated but only touched when used (large blocks
	 * come zeroed from the kernel), so a broker holding many samplers pays
	 * for the pages each one really uses: greedy sampling never writes the
	 * candidates, and without a penalty there is no history. */
	s->cand = malloc((size_t)n_vocab * sizeof(*s->cand));
	if (!s->cand)
		goto fail;
	if (p->repeat_last_n > 0 && p->repeat_penalty != 1.0f) {
		s->hist_count = calloc((size_t)n_vocab, sizeof(*s->hist_count));
		s->hist = malloc((size_t)p->repeat_last_n * sizeof(*s->hist));
		if (!s->hist || !s->hist_count)
			goto fail;
	}
	rng_seed(s->rng, s->prm.seed);
	*out = s;
	return 0;
fail:
	sampler_destroy(s);
	return rc;
}

void sampler_destroy(sampler *s)
{
	if (!s)
		return;
	free(s->hist);
	free(s->hist_count);
	free(s->cand);
	free(s);
}

void sampler_reset(sampler *s)
{
	if (!s)
		return;
	rng_seed(s->rng, s->prm.seed);
	if (s->hist_count)
		memset(s->hist_count, 0, (size_t)s->n_vocab * sizeof(*s->hist_count));
	s->hist_head = 0;
	s->hist_len = 0;
}

void sampler_accept(sampler *s, int32_t tok)
{
	int cap;

	if (!s || tok < 0 || tok >= s->n_vocab)
		return;
	cap = s->prm.repeat_last_n;
	if (cap <= 0 || !s->hist_count) /* no penalty: no history kept */
		return;
	if (s->hist_len == cap)
		s->hist_count[s->hist[s->hist_head]]--; /* evict the oldest */
	else
		s->hist_len++;
	s->hist[s->hist_head] = tok;
	s->hist_count[tok]++;
	s->hist_head = (s->hist_head + 1) % cap;
}

/* ---- sampling -------------------------------------------------------- */

/* a ranks before b: higher logit, then lower id. */
static int cand_better(const sampler_cand *a, const sampler_cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void cand_swap(sampler_cand *a, sampler_cand *b)
{
	sampler_cand t = *a;
	*a = *b;
	*b = t;
}

/* Binary heap over c[0..n). worst_top: c[0] is the worst element (used to
 * keep the k best); otherwise c[0] is the best. */
static int heap_above(const sampler_cand *a, const sampler_cand *b, int worst_top)
{
	return worst_top ? cand_better(b, a) : cand_better(a, b);
}

static void heap_sift_down(sampler_cand *c, int n, int i, int worst_top)
{
	for (;;) {
		int l = 2 * i + 1, r = l + 1, w = i;
		if (l < n && heap_above(&c[l], &c[w], worst_top))
			w = l;
		if (r < n && heap_above(&c[r], &c[w], worst_top))
			w = r;
		if (w == i)
			return;
		cand_swap(&c[i], &c[w]);
		i = w;
	}
}

static void heap_build(sampler_cand *c, int n, int worst_top)
{
	for (int i = n / 2 - 1; i >= 0; i--)
		heap_sift_down(c, n, i, worst_top);
}

/* Heapsort c[0..n), best first, in place, no allocation (glibc's qsort may
 * call malloc). */
static void cand_sort(sampler_cand *c, int n)
{
	heap_build(c, n, 1);
	for (int i = n - 1; i > 0; i--) {
		cand_swap(&c[0], &c[i]); /* the worst left goes last */
		heap_sift_down(c, i, 0, 1);
	}
}

/* Keeps the k best of c[0..n) in c[0..k), sorted best first: O(n log k). */
static void cand_top_k(sampler_cand *c, int n, int k)
{
	heap_build(c, k, 1);
	for (int i = k; i < n; i++) {
		if (cand_better(&c[i], &c[0])) {
			c[0] = c[i];
			heap_sift_down(c, k, 0, 1);
		}
	}
	cand_sort(c, k);
}

/* p = softmax(logit) over c[0..n), c sorted best first (c[0] is the max,
 * finite). */
static void cand_softmax_sorted(sampler_cand *c, int n)
{
	float max = c[0].logit;
	double sum = 0.0;
	for (int i = 0; i < n; i++) {
		c[i].p = expf(c[i].logit - max);
		sum += c[i].p;
	}
	for (int i = 0; i < n; i++)
		c[i].p = (float)(c[i].p / sum);
}

/* top-p over unsorted c[0..n): the shortest best-first prefix whose
 * softmax probability reaches top_p, found by popping a max-heap so only
 * that prefix is ever ordered. Leaves it sorted in c[0..m), returns m. */
static int cand_top_p_unsorted(sampler_cand *c, int n, float top_p)
{
	float max = -INFINITY, cum = 0.0f;
	double sum = 0.0;
	int m = 0;

	for (int i = 0; i < n; i++)
		if (c[i].logit > max)
			max = c[i].logit;
	for (int i = 0; i < n; i++)
		sum += expf(c[i].logit - max);
	heap_build(c, n, 0);
	/* pop the best to the end: c[n-1], c[n-2], ... hold the prefix */
	while (m < n) {
		int last = n - 1 - m;
		cand_swap(&c[0], &c[last]);
		heap_sift_down(c, last, 0, 0);
		c[last].p = (float)(expf(c[last].logit - max) / sum);
		m++;
		cum += c[last].p;
		if (cum >= top_p)
			break;
	}
	/* move the prefix, reversed, to the front */
	for (int i = 0; i < m / 2; i++)
		cand_swap(&c[n - 1 - i], &c[n - m + i]);
	memmove(c, c + (n - m), (size_t)m * sizeof(*c));
	return m;
}

/* logits[i] with NaN as -inf and the repetition penalty applied when the
 * token is in the window (llama.cpp: divide a positive logit, multiply a
 * negative one). */
static inline float penalized_logit(const sampler *s, const float *logits, int i, int penalize)
{
	float l = logits[i];
	if (isnan(l))
		l = -INFINITY;
	if (penalize && s->hist_count[i] > 0)
		l = l > 0.0f ? l / s->prm.repeat_penalty : l * s->prm.repeat_penalty;
	return l;
}

/* Greedy: argmax of the penalized logits, lowest id on ties, without
 * touching the candidate array. */
static int32_t sample_greedy(const sampler *s, const float *logits, int penalize)
{
	int best = -1;
	float bl = -INFINITY;
	for (int i = 0; i < s->n_vocab; i++) {
		const float l = penalized_logit(s, logits, i, penalize);
		if (best < 0 || l > bl) {
			best = i;
			bl = l;
		}
	}
	return best;
}

/* Fills the candidates with every token's penalized logit; returns the
 * largest (-inf when nothing is finite). */
static float cand_fill(sampler *s, const float *logits, int penalize)
{
	sampler_cand *c = s->cand;
	float max = -INFINITY;
	for (int i = 0; i < s->n_vocab; i++) {
		c[i].id = i;
		c[i].logit = penalized_logit(s, logits, i, penalize);
	}
	for (int i = 0; i < s->n_vocab; i++)
		if (c[i].logit > max)
			max = c[i].logit;
	return max;
}

/* top-p over sorted c[0..n): the length of the shortest prefix whose
 * probability reaches top_p (n when none does). */
static int cand_top_p_sorted(sampler_cand *c, int n, float top_p)
{
	float cum = 0.0f;
	cand_softmax_sorted(c, n);
	for (int i = 0; i < n; i++) {
		cum += c[i].p;
		if (cum >= top_p)
			return i + 1;
	}
	return n;
}

/* min-p: keeps logit >= max + log(min_p), i.e. p >= min_p * p_max (at least
 * one candidate); sorted says whether c[0..n) is best first. Returns the
 * new count. */
static int cand_min_p(sampler_cand *c, int n, float max, float min_p, int sorted)
{
	const float min_logit = fminf(max + logf(min_p), max); /* keep >= 1 */
	int keep = 0;
	if (sorted) {
		keep = 1;
		while (keep < n && c[keep].logit >= min_logit)
			keep++;
	} else {
		for (int i = 0; i < n; i++)
			if (c[i].logit >= min_logit)
				c[keep++] = c[i];
	}
	return keep;
}

/* Temperature, then the draw from sorted c[0..n). */
static int32_t cand_draw(sampler *s, sampler_cand *c, int n, float temperature)
{
	for (int i = 0; i < n; i++)
		c[i].logit /= temperature;
	cand_softmax_sorted(c, n);
	double u = rng_uniform(s->rng), cum = 0.0;
	for (int i = 0; i < n; i++) {
		cum += c[i].p;
		if (u < cum)
			return c[i].id;
	}
	return c[n - 1].id; /* rounding left cum just below u */
}

int32_t sampler_sample(sampler *s, const float *logits)
{
	const sampler_params *p = &s->prm;
	sampler_cand *c = s->cand;
	int n = s->n_vocab, sorted = 0;
	const int penalize = s->hist_count && s->hist_len > 0;

	if (p->temperature <= 0.0f)
		return sample_greedy(s, logits, penalize);

	const float max = cand_fill(s, logits, penalize);
	if (max == -INFINITY)
		return 0; /* nothing finite to sample from */

	/* top-k (sorts what it keeps) */
	if (p->top_k > 0 && p->top_k < n) {
		cand_top_k(c, n, p->top_k);
		n = p->top_k;
		sorted = 1;
	}
	/* top-p: the shortest prefix whose probability reaches top_p */
	if (p->top_p < 1.0f) {
		n = sorted ? cand_top_p_sorted(c, n, p->top_p) : cand_top_p_unsorted(c, n, p->top_p);
		sorted = 1;
	}
	if (p->min_p > 0.0f)
		n = cand_min_p(c, n, max, p->min_p, sorted);
	if (!sorted)
		cand_sort(c, n);
	return cand_draw(s, c, n, p->temperature);
}
