/* Memory-bound steps on the CPU, each done in one pass or call where PyTorch makes several:
 * training's cross-entropy of the LM head's logits (the loss and its gradient together), GELU
 * and dropout (a counter-based mask, drawn again in backward rather than stored); decoding's
 * attention of one query per sequence over its cache, and a row's Gumbel-max sampling draw.
 * Built and loaded by fused.py, which uses a kernel only where its AVX-512 loops compiled in.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <immintrin.h>
#define SIMD 1
#else
#define SIMD 0
#endif

int tunesmith_fused_avx512(void) { return SIMD; }

#if SIMD

/* exp(x) for x <= 0, to about 2e-7 relative: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its
 * Taylor series to r^7, times 2^n. Below -87.3 the result is a denormal or 0, as expf's. */
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* this order keeps a NaN a NaN */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* One row of logits (V floats) with target t becomes the gradient of its cross-entropy,
 * softmax - onehot(t), in place; returns the loss, logsumexp - logit[t]. The row (200 KB for
 * GPT-2) stays in cache across the three passes, so memory sees it read and written once. */
static double xent_row(float *row, int64_t V, int64_t t) {
    float target_logit = row[t];
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < V; j += 16) {
        __mmask16 k = tail_mask(V - j);
        m = _mm512_mask_max_ps(m, k, _mm512_maskz_loadu_ps(k, row + j), m);
    }
    float max = _mm512_reduce_max_ps(m);
    if (isnan(max) || isinf(max)) max = 0.0f; /* the loss turns NaN below, as PyTorch's */
    __m512 vmax = _mm512_set1_ps(max), s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 32 <= V; j += 32) {
        __m512 e0 = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + j), vmax));
        __m512 e1 = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + j + 16), vmax));
        _mm512_storeu_ps(row + j, e0);
        _mm512_storeu_ps(row + j + 16, e1);
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
    }
    for (; j < V; j += 16) {
        __mmask16 k = tail_mask(V - j);
        __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), vmax));
        _mm512_mask_storeu_ps(row + j, k, e);
        s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(k, e));
    }
    double sum = (double)_mm512_reduce_add_ps(s0) + (double)_mm512_reduce_add_ps(s1);
    __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (j = 0; j < V; j += 16) {
        __mmask16 k = tail_mask(V - j);
        _mm512_mask_storeu_ps(row + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row + j), inv));
    }
    row[t] -= 1.0f;
    return (double)max + log(sum) - (double)target_logit; /* logsumexp - logit[t] */
}
#endif

/* logits (N, V) float32, overwritten with the gradient of the summed cross-entropy;
 * losses (N,) gets each row's loss. Returns -1 when a target is outside 0..V-1 (nothing is
 * then meaningful), else 0. */
int tunesmith_cross_entropy(float *logits, const int64_t *targets, float *losses, int64_t N,
                            int64_t V, int threads) {
#if SIMD
    for (int64_t i = 0; i < N; i++)
        if (targets[i] < 0 || targets[i] >= V) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < N; i++) losses[i] = (float)xent_row(logits + i * V, V, targets[i]);
    return 0;
#else
    (void)logits, (void)targets, (void)losses, (void)N, (void)V, (void)threads;
    return -1;
#endif
}

#if SIMD
/* Dropout's mask: element i is kept when hash(seed, i) < keep_threshold (keep probability
 * times 2^32). The hash is a counter-based generator (two rounds of a 32-bit integer mixer,
 * keyed by the two halves of the seed), so backward draws the same mask from the same seed
 * with nothing stored, and the mask does not depend on how the work is split among threads. */
static inline __m512i mix32(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* The hashes of elements i..i+15 under seed. */
static inline __m512i hash16(uint64_t seed, int64_t i) {
    __m512i counter = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i),
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                         12, 13, 14, 15));
    __m512i high = _mm512_set1_epi32((int)(uint32_t)((uint64_t)i >> 32));
    __m512i h = mix32(_mm512_xor_si512(counter, _mm512_set1_epi32((int)(uint32_t)seed)));
    return mix32(_mm512_xor_si512(_mm512_add_epi32(h, high),
                                  _mm512_set1_epi32((int)(uint32_t)(seed >> 32))));
}

static inline __mmask16 keep_mask(uint64_t seed, int64_t i, uint32_t keep_threshold) {
    return _mm512_cmplt_epu32_mask(hash16(seed, i), _mm512_set1_epi32((int)keep_threshold));
}
#endif

/* y = x * mask * scale for n float32 elements; backward is the same call on the gradient with
 * the same seed. Elements are taken 16 at a time from index 0, whatever the threads. */
int tunesmith_dropout(const float *x, float *y, int64_t n, uint64_t seed,
                      uint32_t keep_threshold, float scale, int threads) {
#if SIMD
    int64_t blocks = (n + 15) / 16;
    __m512 vscale = _mm512_set1_ps(scale);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t i = b * 16;
        __mmask16 k = tail_mask(n - i) & keep_mask(seed, i, keep_threshold);
        _mm512_mask_storeu_ps(y + i, tail_mask(n - i),
                              _mm512_maskz_mul_ps(k, _mm512_maskz_loadu_ps(k, x + i), vscale));
    }
    return 0;
#else
    (void)x, (void)y, (void)n, (void)seed, (void)keep_threshold, (void)scale, (void)threads;
    return -1;
#endif
}

#if SIMD
/* GELU's tanh form, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), and its
 * derivative; tanh(u) = sign(u) (1 - e) / (1 + e) with e = exp(-2|u|) <= 1. */
#define GELU_C 0.7978845608f /* sqrt(2 / pi) */
#define GELU_A 0.044715f
static inline __m512 tanh_of(__m512 u) {
    __m512 au = _mm512_abs_ps(u);
    __m512 e = exp_nonpositive(_mm512_mul_ps(au, _mm512_set1_ps(-2.0f)));
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    /* the sign of u onto t */
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(t),
        _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32((int)0x80000000u))));
}

static inline __m512 gelu_u(__m512 x) {
    __m512 x2 = _mm512_mul_ps(x, x);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(GELU_C)),
                         _mm512_fmadd_ps(x2, _mm512_set1_ps(GELU_A), _mm512_set1_ps(1.0f)));
}
#endif

/* One pass over n float32 elements: out = gelu(x), or with dy, out = dy * gelu'(x). */
static int gelu_pass(const float *x, const float *dy, float *out, int64_t n, int threads) {
#if SIMD
    int64_t blocks = (n + 15) / 16;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        __mmask16 k = tail_mask(n - b * 16);
        __m512 v = _mm512_maskz_loadu_ps(k, x + b * 16);
        __m512 t = tanh_of(gelu_u(v));
        __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
        __m512 result;
        if (!dy) {
            __m512 half_x = _mm512_mul_ps(half, v);
            result = _mm512_fmadd_ps(half_x, t, half_x); /* 0.5 x (1 + t) */
        } else {
            /* du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2) */
            __m512 du = _mm512_mul_ps(_mm512_set1_ps(GELU_C),
                                      _mm512_fmadd_ps(_mm512_mul_ps(v, v),
                                                      _mm512_set1_ps(3 * GELU_A), one));
            /* 0.5 (1 + t) + 0.5 x (1 - t^2) du */
            __m512 grad = _mm512_fmadd_ps(
                _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_fnmadd_ps(t, t, one)), du,
                _mm512_mul_ps(half, _mm512_add_ps(one, t)));
            result = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + b * 16), grad);
        }
        _mm512_mask_storeu_ps(out + b * 16, k, result);
    }
    return 0;
#else
    (void)x, (void)dy, (void)out, (void)n, (void)threads;
    return -1;
#endif
}

/* y = gelu(x) for n float32 elements. */
int tunesmith_gelu(const float *x, float *y, int64_t n, int threads) {
    return gelu_pass(x, NULL, y, n, threads);
}

/* dx = dy * gelu'(x) for n float32 elements. */
int tunesmith_gelu_backward(const float *x, const float *dy, float *dx, int64_t n, int threads) {
    return gelu_pass(x, dy, dx, n, threads);
}

#if SIMD
/* 16 values from float32 or bfloat16 memory (k of them; the rest 0) as float32. */
static inline __m512 load16(const void *p, int64_t i, int bf16, __mmask16 k) {
    if (!bf16) return _mm512_maskz_loadu_ps(k, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t *)p + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline void store16(void *p, int64_t i, int bf16, __mmask16 k, __m512 x) {
    if (!bf16) {
        _mm512_mask_storeu_ps((float *)p + i, k, x);
        return;
    }
    __m512i u = _mm512_castps_si512(x); /* round to nearest even, as PyTorch converts */
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    _mm256_mask_storeu_epi16((uint16_t *)p + i, k, _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
}
#endif

#define MAX_HEAD_DIM 256

/* Attention of one new query per sequence over its cached keys and values (decoding):
 * q (B, H, D), k and v (B, H, S, D) and out (B, H, D), each with its own strides in elements
 * (the last dimension contiguous), all float32 or all bfloat16; `valid` (B, S) bytes, 0 for a
 * key the query must not see (padding), or NULL. Scores, softmax and sums in float32. Each
 * (sequence, head) is one task, so a row's numbers do not depend on its batch. Returns -1
 * without a result where D is over MAX_HEAD_DIM or memory is short. */
int tunesmith_decode_attention(const void *q, const void *k, const void *v, void *out,
                               const uint8_t *valid, int64_t B, int64_t H, int64_t S, int64_t D,
                               const int64_t *strides, float scale, int bf16, int threads) {
#if SIMD
    /* strides: q (b, h), k (b, h, s), v (b, h, s), out (b, h), valid (b) */
    if (D > MAX_HEAD_DIM || S < 1) return -1;
    float *scores = malloc(sizeof(float) * (size_t)(B * H * S));
    if (!scores) return -1;
    int chunks = (int)((D + 15) / 16);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t task = 0; task < B * H; task++) {
        int64_t b = task / H, h = task % H;
        const uint8_t *ok = valid ? valid + b * strides[10] : NULL;
        float *score = scores + task * S;
        __m512 qv[MAX_HEAD_DIM / 16];
        for (int c = 0; c < chunks; c++)
            qv[c] = _mm512_mul_ps(
                load16(q, b * strides[0] + h * strides[1] + c * 16, bf16, tail_mask(D - c * 16)),
                _mm512_set1_ps(scale));
        float max = -INFINITY;
        for (int64_t s = 0; s < S; s++) {
            if (ok && !ok[s]) {
                score[s] = -INFINITY;
                continue;
            }
            int64_t at = b * strides[2] + h * strides[3] + s * strides[4];
            __m512 acc = _mm512_setzero_ps();
            for (int c = 0; c < chunks; c++)
                acc = _mm512_fmadd_ps(qv[c], load16(k, at + c * 16, bf16, tail_mask(D - c * 16)),
                                      acc);
            score[s] = _mm512_reduce_add_ps(acc);
            if (score[s] > max) max = score[s];
        }
        __m512 sums[MAX_HEAD_DIM / 16];
        for (int c = 0; c < chunks; c++) sums[c] = _mm512_setzero_ps();
        float total = 0.0f;
        if (max != -INFINITY) { /* else every key is masked: the output is 0 */
            for (int64_t s = 0; s < S; s += 16) {
                __mmask16 m = tail_mask(S - s);
                __m512 x = _mm512_maskz_loadu_ps(m, score + s);
                __mmask16 seen = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                __m512 e = exp_nonpositive(_mm512_sub_ps(x, _mm512_set1_ps(max)));
                _mm512_mask_storeu_ps(score + s, m, _mm512_maskz_mov_ps(seen, e)); /* masked: 0 */
            }
            for (int64_t s = 0; s < S; s++) {
                float p = score[s];
                if (p == 0.0f) continue;
                total += p;
                int64_t at = b * strides[5] + h * strides[6] + s * strides[7];
                __m512 vp = _mm512_set1_ps(p);
                for (int c = 0; c < chunks; c++)
                    sums[c] = _mm512_fmadd_ps(
                        vp, load16(v, at + c * 16, bf16, tail_mask(D - c * 16)), sums[c]);
            }
        }
        __m512 inv = _mm512_set1_ps(total > 0.0f ? 1.0f / total : 0.0f);
        for (int c = 0; c < chunks; c++)
            store16(out, b * strides[8] + h * strides[9] + c * 16, bf16, tail_mask(D - c * 16),
                    _mm512_mul_ps(sums[c], inv));
    }
    free(scores);
    return 0;
#else
    (void)q, (void)k, (void)v, (void)out, (void)valid, (void)B, (void)H, (void)S, (void)D;
    (void)strides, (void)scale, (void)bf16, (void)threads;
    return -1;
#endif
}

#if SIMD
/* log(x) for positive normal x, to about 1e-7 relative: x = m 2^k with m in [0.75, 1.5) (so
 * that log(x) near x = 1 keeps its precision), log(m) = 2 atanh((m - 1) / (m + 1)). */
static inline __m512 log_positive(__m512 x) {
    __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p75_1p5, _MM_MANT_SIGN_zero);
    __m512 k = _mm512_getexp_ps(_mm512_div_ps(x, m)); /* x / m is exactly 2^k */
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 r = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one)); /* |r| <= 0.2 */
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(1.0f / 9);
    p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 7));
    p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 5));
    p = _mm512_fmadd_ps(p, r2, _mm512_set1_ps(1.0f / 3));
    p = _mm512_fmadd_ps(p, r2, one);
    return _mm512_fmadd_ps(k, _mm512_set1_ps(0.693147182f),
                           _mm512_mul_ps(_mm512_add_ps(r, r), p));
}

/* 16 uniform draws in (0, 1) for tokens i.., keyed by seed: 23 bits of the same hash as
 * dropout's mask, plus a half, so that neither 0 nor 1 comes up. (With 24 bits, 2^24 - 0.5 is
 * no float32: it rounded to 2^24, a draw of exactly 1, whose Gumbel noise -log(-log 1) is
 * +inf, so about one draw in 330 over GPT-2's vocabulary went to a token whatever the logits.) */
static inline __m512 uniform16(uint64_t seed, int64_t i) {
    __m512i h = hash16(seed, i);
    __m512 bits = _mm512_cvtepi32_ps(_mm512_srli_epi32(h, 9));
    return _mm512_mul_ps(_mm512_add_ps(bits, _mm512_set1_ps(0.5f)),
                         _mm512_set1_ps(1.0f / 8388608));
}
#endif

/* One draw from softmax(logits) (V float32 logits, one row): the argmax of logits plus Gumbel
 * noise -log(-log(u)), u keyed by seed and token id. With top_p < 1 the draw must fall in the
 * nucleus: it does when the tokens likelier than it hold less than top_p of the mass (a draw
 * from the whole distribution that lands there is a draw from the nucleus); else -1. -2 where
 * the kernel did not compile in. */
static int64_t gumbel_pick(const float *logits, int64_t V, uint64_t seed, float top_p) {
#if SIMD
    __m512 best = _mm512_set1_ps(-INFINITY), top = _mm512_set1_ps(-INFINITY);
    __m512i best_at = _mm512_setzero_si512();
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t j = 0; j < V; j += 16) {
        __mmask16 k = tail_mask(V - j);
        __m512 l = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, logits + j);
        __m512 e = _mm512_sub_ps(_mm512_setzero_ps(), log_positive(uniform16(seed, j)));
        __m512 score = _mm512_sub_ps(l, log_positive(e));
        __mmask16 better = _mm512_mask_cmp_ps_mask(k, score, best, _CMP_GT_OQ);
        best = _mm512_mask_mov_ps(best, better, score);
        best_at = _mm512_mask_mov_epi32(best_at, better,
                                        _mm512_add_epi32(lane, _mm512_set1_epi32((int)j)));
        top = _mm512_max_ps(top, l);
    }
    float winner = _mm512_reduce_max_ps(best);
    if (winner == -INFINITY) return 0; /* every logit -inf: nothing to draw, as argmax says */
    __mmask16 at = _mm512_cmp_ps_mask(best, _mm512_set1_ps(winner), _CMP_EQ_OQ);
    /* the first token with the best score, whatever lane holds it */
    int32_t ids[16];
    _mm512_storeu_si512(ids, best_at);
    int64_t pick = -1;
    for (int i = 0; i < 16; i++)
        if ((at >> i) & 1 && (pick < 0 || ids[i] < pick)) pick = ids[i];
    if (top_p >= 1.0f) return pick;
    float max = _mm512_reduce_max_ps(top), chosen = logits[pick];
    __m512 vmax = _mm512_set1_ps(max), total = _mm512_setzero_ps(), likelier = total;
    for (int64_t j = 0; j < V; j += 16) {
        __mmask16 k = tail_mask(V - j);
        __m512 l = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, logits + j);
        __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(l, vmax)));
        total = _mm512_add_ps(total, e);
        likelier = _mm512_add_ps(
            likelier,
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(l, _mm512_set1_ps(chosen), _CMP_GT_OQ), e));
    }
    double mass = _mm512_reduce_add_ps(likelier), all = _mm512_reduce_add_ps(total);
    return mass < (double)top_p * all ? pick : -1;
#else
    (void)logits, (void)V, (void)seed, (void)top_p;
    return -2;
#endif
}

/* gumbel_pick for B rows at once (row b at logits + b * stride, with seeds[b]), the
 * rows shared among the threads: picks[b] as that function returns it. */
void tunesmith_gumbel_picks(const float *logits, int64_t B, int64_t V, int64_t stride,
                            const uint64_t *seeds, float top_p, int64_t *picks, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < B; b++)
        picks[b] = gumbel_pick(logits + b * stride, V, seeds[b], top_p);
}
