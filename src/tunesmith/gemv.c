/* Matrix-vector products for decoding one sequence on the CPU: y = W x (+ bias), with W in
 * bfloat16 or in int8 with a scale per row, x and y in float32 or bfloat16. Built and loaded
 * by gemv.py.
 *
 * At batch 1 a decoding step reads every weight once, so these are bound by how fast the
 * weights stream from memory. PyTorch's bf16 and int8 kernels convert and reduce more slowly
 * than memory delivers on AVX-512 CPUs; here each thread walks its rows in blocks of ROWS
 * (ROWS independent sums in flight) and asks for the block AHEAD_BLOCKS ahead while it works.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SIMD 1
#else
#define SIMD 0
#endif

#ifndef ROWS
#define ROWS 8
#endif
#ifndef AHEAD_BLOCKS
#define AHEAD_BLOCKS 2
#endif

/* 1 where the AVX-512 loops were compiled in; the caller uses this library only then. */
int tunesmith_gemv_simd(void) { return SIMD; }

static inline float bf16_value(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#if SIMD
static inline __m512 int8_chunk(const int8_t *w, int64_t k, __mmask16 m) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, w + k)));
}

static inline __m512 bf16_chunk(const uint16_t *w, int64_t k, __mmask16 m) {
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* One block of ROWS rows starting at row n0; `bytes` per weight, `ahead` the block to prefetch. */
#define BLOCK_LOOP(TYPE, CHUNK, BYTES)                                                          \
    __m512 acc[ROWS];                                                                           \
    for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();                                \
    const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * ROWS) * K);                     \
    const char *end = (const char *)(w + N * K);                                                \
    for (int64_t k = 0, it = 0; k < K; k += 16, it++) {                                         \
        /* this block consumes ROWS * 16 * BYTES bytes per step: fetch as much of the future */ \
        for (int line = 0; line < ROWS * 16 * BYTES; line += 64) {                               \
            const char *p = ahead + it * (ROWS * 16 * BYTES) + line;                            \
            if (p < end) _mm_prefetch(p, _MM_HINT_T1);                                          \
        }                                                                                       \
        __mmask16 m = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);       \
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);                                            \
        for (int r = 0; r < ROWS; r++)                                                          \
            acc[r] = _mm512_fmadd_ps(CHUNK((const TYPE *)w + (n0 + r) * K, k, m), xv, acc[r]);  \
    }                                                                                           \
    for (int r = 0; r < ROWS; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);

#if defined(__AVX512BF16__)
/* bfloat16 weights times bfloat16 x: one instruction multiplies and adds 32 pairs (exact
 * products, float32 sums), a few percent faster than converting the weights to float32. */
static void bf16_block_dot(const uint16_t *x, const uint16_t *w, int64_t n0, int64_t N, int64_t K,
                           float *sums) {
    __m512 acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();
    const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * ROWS) * K);
    const char *end = (const char *)(w + N * K);
    for (int64_t k = 0, it = 0; k < K; k += 32, it++) {
        for (int line = 0; line < ROWS * 64; line += 64) {
            const char *p = ahead + it * (ROWS * 64) + line;
            if (p < end) _mm_prefetch(p, _MM_HINT_T1);
        }
        __mmask32 m = K - k >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (K - k)) - 1);
        __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + k);
        for (int r = 0; r < ROWS; r++) {
            __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + (n0 + r) * K + k);
            acc[r] = _mm512_dpbf16_ps(acc[r], wv, xv);
        }
    }
    for (int r = 0; r < ROWS; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
}
#endif
#endif

/* The activations (x, and y, bias and scale with them) are float32, or bfloat16 when `bf16`;
 * x is read as float32, from `buffer` (K floats on the caller's stack) when converted. */
static const float *as_floats(const void *v, int bf16, int64_t n, float *buffer) {
    if (!bf16) return (const float *)v;
    for (int64_t i = 0; i < n; i++) buffer[i] = bf16_value(((const uint16_t *)v)[i]);
    return buffer;
}

static inline float value(const void *v, int bf16, int64_t i) {
    return bf16 ? bf16_value(((const uint16_t *)v)[i]) : ((const float *)v)[i];
}

static inline void store(void *y, int bf16, int64_t i, float f) {
    if (!bf16) {
        ((float *)y)[i] = f;
        return;
    }
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even, as PyTorch converts */
    ((uint16_t *)y)[i] = (uint16_t)(u >> 16);
}

/* y[n] = scale[n] * sum_k w[n,k] x[k] + bias[n]; w int8 (N, K), row-major; bias may be NULL. */
void tunesmith_gemv_int8(const void *xv, const int8_t *w, const void *scale, const void *bias,
                         void *y, int64_t N, int64_t K, int threads, int bf16) {
    float xbuf[bf16 ? K : 1];
    const float *x = as_floats(xv, bf16, K, xbuf);
    int64_t blocks = (N + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t n0 = b * ROWS;
        float sums[ROWS];
#if SIMD
        if (n0 + ROWS <= N) {
            BLOCK_LOOP(int8_t, int8_chunk, 1)
        } else
#endif
        {
            for (int64_t n = n0; n < N && n < n0 + ROWS; n++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s += (float)w[n * K + k] * x[k];
                sums[n - n0] = s;
            }
        }
        for (int64_t n = n0; n < N && n < n0 + ROWS; n++)
            store(y, bf16, n,
                  sums[n - n0] * value(scale, bf16, n) + (bias ? value(bias, bf16, n) : 0.0f));
    }
}

/* y[n] = sum_k w[n,k] x[k] + bias[n]; w bfloat16 (N, K), row-major; bias may be NULL. */
void tunesmith_gemv_bf16(const void *xv, const uint16_t *w, const void *bias, void *y, int64_t N,
                         int64_t K, int threads, int bf16) {
    float xbuf[bf16 ? K : 1];
    const float *x = as_floats(xv, bf16, K, xbuf);
    int64_t blocks = (N + ROWS - 1) / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t n0 = b * ROWS;
        float sums[ROWS];
#if SIMD && defined(__AVX512BF16__)
        if (n0 + ROWS <= N && bf16) {
            bf16_block_dot((const uint16_t *)xv, w, n0, N, K, sums);
        } else
#endif
#if SIMD
        if (n0 + ROWS <= N) {
            BLOCK_LOOP(uint16_t, bf16_chunk, 2)
        } else
#endif
        {
            for (int64_t n = n0; n < N && n < n0 + ROWS; n++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s += bf16_value(w[n * K + k]) * x[k];
                sums[n - n0] = s;
            }
        }
        for (int64_t n = n0; n < N && n < n0 + ROWS; n++)
            store(y, bf16, n, sums[n - n0] + (bias ? value(bias, bf16, n) : 0.0f));
    }
}
