/* Products of a few activation rows (decoding: one row per sequence) with a weight matrix on
 * the CPU, y = x Wᵀ (+ bias): W and x in bfloat16 or in float32 (a few rows), or W in int8
 * with a scale per row (x float32 or bfloat16, one row). Built and loaded by gemv.py.
 *
 * Decoding reads every weight once per step, so these are bound by how fast the weights stream
 * from memory. PyTorch's bfloat16 and int8 CPU kernels convert and reduce more slowly than
 * memory delivers; here each thread walks its weight rows in blocks (independent sums in
 * flight), uses each loaded piece of a weight row for every activation row, and prefetches
 * the block AHEAD_BLOCKS ahead while it works.
 */
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SIMD 1
#else
#define SIMD 0
#endif
#if SIMD && defined(__AVX512BF16__)
#define BF16_SIMD 1
#else
#define BF16_SIMD 0
#endif

#define AHEAD_BLOCKS 2
#define INT8_ROWS 8 /* weight rows per block of the int8 kernel */

/* Activation rows are taken 12, 8, 4, 2 or 1 at a time (each group streams the weights once),
 * with as many weight rows per block as the 32 vector registers allow: MR * NR accumulators +
 * NR weight pieces + 1 activation piece. (16 rows with one weight row measured slower than
 * 12 + 4: too many activation loads per weight piece.) */
#define ROW_BLOCK(MR) ((MR) == 12 ? 2 : (MR) == 8 ? 3 : (MR) == 4 ? 6 : 8)
static inline int row_group(int64_t left) {
    return left >= 12 ? 12 : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* What compiled in: the caller uses a kernel only where its vector loops did. */
int tunesmith_int8_simd(void) { return SIMD; }
int tunesmith_bf16_simd(void) { return BF16_SIMD; }

static inline float bf16_value(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even, as PyTorch converts */
    return (uint16_t)(u >> 16);
}

/* Activations (x, y, bias, scale) in float32, or in bfloat16 when `bf16`. */
static inline float value(const void *v, int bf16, int64_t i) {
    return bf16 ? bf16_value(((const uint16_t *)v)[i]) : ((const float *)v)[i];
}

static inline void store(void *y, int bf16, int64_t i, float f) {
    if (bf16)
        ((uint16_t *)y)[i] = bf16_bits(f);
    else
        ((float *)y)[i] = f;
}

#if SIMD
static inline void prefetch_block(const char *ahead, const char *end, int64_t bytes) {
    for (int64_t line = 0; line < bytes; line += 64)
        if (ahead + line < end) _mm_prefetch(ahead + line, _MM_HINT_T1);
}

/* Sums over k of w[n0 + r, k] x[k] for r < INT8_ROWS. */
static void int8_block(const float *x, const int8_t *w, int64_t n0, int64_t N, int64_t K,
                       float *sums) {
    __m512 acc[INT8_ROWS];
    for (int r = 0; r < INT8_ROWS; r++) acc[r] = _mm512_setzero_ps();
    const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * INT8_ROWS) * K);
    const char *end = (const char *)(w + N * K);
    for (int64_t k = 0, step = 0; k < K; k += 16, step++) {
        /* the block consumes INT8_ROWS * 16 bytes a step: fetch as much of the future one */
        prefetch_block(ahead + step * INT8_ROWS * 16, end, INT8_ROWS * 16);
        __mmask16 m = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
        for (int r = 0; r < INT8_ROWS; r++) {
            __m128i q = _mm_maskz_loadu_epi8(m, w + (n0 + r) * K + k);
            __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
            acc[r] = _mm512_fmadd_ps(wv, xv, acc[r]);
        }
    }
    for (int r = 0; r < INT8_ROWS; r++) sums[r] = _mm512_reduce_add_ps(acc[r]);
}
#endif

/* One row: y[n] = scale[n] * sum_k w[n,k] x[k] + bias[n]; w int8 (N, K), row-major; bias may be
 * NULL. */
void tunesmith_gemv_int8(const void *xv, const int8_t *w, const void *scale, const void *bias,
                         void *y, int64_t N, int64_t K, int threads, int bf16) {
    float xbuf[K];
    for (int64_t k = 0; k < K; k++) xbuf[k] = value(xv, bf16, k);
    const float *x = xbuf;
    int64_t blocks = (N + INT8_ROWS - 1) / INT8_ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t n0 = b * INT8_ROWS;
        float sums[INT8_ROWS];
#if SIMD
        if (n0 + INT8_ROWS <= N) {
            int8_block(x, w, n0, N, K, sums);
        } else
#endif
        {
            for (int64_t n = n0; n < N && n < n0 + INT8_ROWS; n++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++) s += (float)w[n * K + k] * x[k];
                sums[n - n0] = s;
            }
        }
        for (int64_t n = n0; n < N && n < n0 + INT8_ROWS; n++)
            store(y, bf16, n,
                  sums[n - n0] * value(scale, bf16, n) + (bias ? value(bias, bf16, n) : 0.0f));
    }
}

#if BF16_SIMD
/* MR activation rows by NR weight rows: sums[m * NR + r] = sum_k x[m, k] w[n0 + r, k]. Every
 * (m, r) has its own accumulator, fed 32 products a step by one instruction in the same order
 * whatever MR and NR are: a row's result does not depend on how many rows share the call. */
#define BF16_BLOCK(MR, NR)                                                                     \
    static void bf16_block_##MR##x##NR(const uint16_t *x, const uint16_t *w, int64_t n0,       \
                                       int64_t N, int64_t K, float *sums) {                    \
        __m512 acc[MR][NR];                                                                    \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) acc[m][r] = _mm512_setzero_ps();                      \
        const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * NR) * K);                  \
        const char *end = (const char *)(w + N * K);                                           \
        for (int64_t k = 0, step = 0; k < K; k += 32, step++) {                                \
            prefetch_block(ahead + step * NR * 64, end, NR * 64);                              \
            __mmask32 mk =                                                                     \
                K - k >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (K - k)) - 1);       \
            __m512bh wv[NR];                                                                   \
            for (int r = 0; r < NR; r++)                                                       \
                wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mk, w + (n0 + r) * K + k);          \
            for (int m = 0; m < MR; m++) {                                                     \
                __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mk, x + m * K + k);           \
                for (int r = 0; r < NR; r++) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], wv[r], xv); \
            }                                                                                  \
        }                                                                                      \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) sums[m * NR + r] = _mm512_reduce_add_ps(acc[m][r]);  \
    }

BF16_BLOCK(1, 8)
BF16_BLOCK(2, 8)
BF16_BLOCK(4, 6)
BF16_BLOCK(8, 3)
BF16_BLOCK(12, 2)
BF16_BLOCK(1, 1)
BF16_BLOCK(2, 1)
BF16_BLOCK(4, 1)
BF16_BLOCK(8, 1)
BF16_BLOCK(12, 1)

typedef void (*bf16_block_fn)(const uint16_t *, const uint16_t *, int64_t, int64_t, int64_t,
                              float *);

/* MR rows of x (a row_group) times all of w: blocks of NR weight rows, then the rows left over
 * one at a time (the same sums, so every weight row gets the same arithmetic). */
static void bf16_rows(const uint16_t *x, const uint16_t *w, const uint16_t *bias, uint16_t *y,
                      int MR, int64_t N, int64_t K, int threads) {
    bf16_block_fn block = MR == 12 ? bf16_block_12x2
                          : MR == 8  ? bf16_block_8x3
                          : MR == 4  ? bf16_block_4x6
                          : MR == 2  ? bf16_block_2x8
                                     : bf16_block_1x8;
    bf16_block_fn single = MR == 12 ? bf16_block_12x1
                           : MR == 8  ? bf16_block_8x1
                           : MR == 4  ? bf16_block_4x1
                           : MR == 2  ? bf16_block_2x1
                                      : bf16_block_1x1;
    int NR = ROW_BLOCK(MR);
    int64_t blocks = N / NR;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b <= blocks; b++) { /* b == blocks: the rows left over */
        float sums[32];
        int64_t first = b * NR, last = b < blocks ? first + NR : N;
        for (int64_t n = first; n < last; n += (b < blocks ? NR : 1)) {
            int nr = b < blocks ? NR : 1;
            (b < blocks ? block : single)(x, w, n, N, K, sums);
            for (int m = 0; m < MR; m++)
                for (int r = 0; r < nr; r++) {
                    float s = sums[m * nr + r] + (bias ? bf16_value(bias[n + r]) : 0.0f);
                    y[m * N + n + r] = bf16_bits(s);
                }
        }
    }
}
#endif

#if SIMD
/* The float32 counterpart: 16 products a step per accumulator, by fused multiply-adds. */
#define F32_BLOCK(MR, NR)                                                                      \
    static void f32_block_##MR##x##NR(const float *x, const float *w, int64_t n0, int64_t N,  \
                                      int64_t K, float *sums) {                                \
        __m512 acc[MR][NR];                                                                    \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) acc[m][r] = _mm512_setzero_ps();                      \
        const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * NR) * K);                  \
        const char *end = (const char *)(w + N * K);                                           \
        for (int64_t k = 0, step = 0; k < K; k += 16, step++) {                                \
            prefetch_block(ahead + step * NR * 64, end, NR * 64);                              \
            __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1); \
            __m512 wv[NR];                                                                     \
            for (int r = 0; r < NR; r++) wv[r] = _mm512_maskz_loadu_ps(mk, w + (n0 + r) * K + k); \
            for (int m = 0; m < MR; m++) {                                                     \
                __m512 xv = _mm512_maskz_loadu_ps(mk, x + m * K + k);                          \
                for (int r = 0; r < NR; r++) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]); \
            }                                                                                  \
        }                                                                                      \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) sums[m * NR + r] = _mm512_reduce_add_ps(acc[m][r]);  \
    }

F32_BLOCK(1, 8)
F32_BLOCK(2, 8)
F32_BLOCK(4, 6)
F32_BLOCK(8, 3)
F32_BLOCK(12, 2)
F32_BLOCK(1, 1)
F32_BLOCK(2, 1)
F32_BLOCK(4, 1)
F32_BLOCK(8, 1)
F32_BLOCK(12, 1)

typedef void (*f32_block_fn)(const float *, const float *, int64_t, int64_t, int64_t, float *);

static void f32_rows(const float *x, const float *w, const float *bias, float *y, int MR,
                     int64_t N, int64_t K, int threads) {
    f32_block_fn block = MR == 12 ? f32_block_12x2
                         : MR == 8  ? f32_block_8x3
                         : MR == 4  ? f32_block_4x6
                         : MR == 2  ? f32_block_2x8
                                    : f32_block_1x8;
    f32_block_fn single = MR == 12 ? f32_block_12x1
                          : MR == 8  ? f32_block_8x1
                          : MR == 4  ? f32_block_4x1
                          : MR == 2  ? f32_block_2x1
                                     : f32_block_1x1;
    int NR = ROW_BLOCK(MR);
    int64_t blocks = N / NR;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b <= blocks; b++) { /* b == blocks: the rows left over */
        float sums[32];
        int64_t first = b * NR, last = b < blocks ? first + NR : N;
        for (int64_t n = first; n < last; n += (b < blocks ? NR : 1)) {
            int nr = b < blocks ? NR : 1;
            (b < blocks ? block : single)(x, w, n, N, K, sums);
            for (int m = 0; m < MR; m++)
                for (int r = 0; r < nr; r++)
                    y[m * N + n + r] = sums[m * nr + r] + (bias ? bias[n + r] : 0.0f);
        }
    }
}
#endif

/* y (M, N) = x (M, K) wᵀ + bias, all float32, w (N, K) row-major, bias may be NULL; the rows of
 * x go in groups (row_group): each group streams the weights once. */
void tunesmith_gemm_f32(const float *x, const float *w, const float *bias, float *y, int64_t M,
                        int64_t N, int64_t K, int threads) {
#if SIMD
    for (int64_t m0 = 0; m0 < M;) {
        int MR = row_group(M - m0);
        f32_rows(x + m0 * K, w, bias, y + m0 * N, MR, N, K, threads);
        m0 += MR;
    }
#else
    (void)x, (void)w, (void)bias, (void)y, (void)M, (void)N, (void)K, (void)threads;
#endif
}

/* y (M, N) = x (M, K) wᵀ + bias, all bfloat16, w (N, K) row-major, bias may be NULL. The rows
 * of x go in groups (row_group): each group streams the weights once. */
void tunesmith_gemm_bf16(const uint16_t *x, const uint16_t *w, const uint16_t *bias, uint16_t *y,
                         int64_t M, int64_t N, int64_t K, int threads) {
#if BF16_SIMD
    for (int64_t m0 = 0; m0 < M;) {
        int MR = row_group(M - m0);
        bf16_rows(x + m0 * K, w, bias, y + m0 * N, MR, N, K, threads);
        m0 += MR;
    }
#else
    (void)x, (void)w, (void)bias, (void)y, (void)M, (void)N, (void)K, (void)threads;
#endif
}
