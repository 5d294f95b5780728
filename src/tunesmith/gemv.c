/* Products of a few activation rows (decoding: one row per sequence) with a weight matrix on
 * the CPU, y = x Wᵀ (+ bias): W and x both bfloat16 or both float32, or W int8 with a scale per
 * row (x float32 or bfloat16). Built and loaded by gemv.py, which picks the row counts.
 *
 * Decoding reads every weight once per step, so these are bound by how fast the weights stream
 * from memory. PyTorch's bfloat16 and int8 CPU kernels convert and reduce more slowly than
 * memory delivers; here each thread walks its weight rows in blocks (independent sums in
 * flight), uses each loaded piece of a weight row for every activation row, and prefetches
 * the block AHEAD_BLOCKS ahead while it works.
 */
#include <stdint.h>
#include <stdlib.h>
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

/* Activation rows are taken 12, 8, 4, 2 or 1 at a time (each group streams the weights once),
 * with as many weight rows per block as the 32 vector registers allow: MR * NR accumulators +
 * NR weight pieces + 1 activation piece. (16 rows with one weight row measured slower than
 * 12 + 4: too many activation loads per weight piece.) */
#define ROW_BLOCK(MR) ((MR) == 12 ? 2 : (MR) == 8 ? 3 : (MR) == 4 ? 6 : 8)
static inline int row_group(int64_t left) {
    return left >= 12 ? 12 : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* What compiled in: the caller uses a kernel only where its vector loops did (the int8 and
 * float32 ones need AVX-512, the bfloat16 ones AVX512-BF16 too). */
int tunesmith_avx512(void) { return SIMD; }
int tunesmith_avx512_bf16(void) { return BF16_SIMD; }

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

#endif

#if SIMD
/* MR activation rows by NR weight rows: sums[m * NR + r] = sum_k x[m, k] w[n0 + r, k]. Every
 * (m, r) has its own accumulator, fed a piece of k at a time in the same order whatever MR and
 * NR are: a row's result does not depend on how many rows share the call. */
#define BLOCK(NAME, MR, NR, TW, TX, PIECE, WBYTES, MASK, WLOAD, XLOAD, MAC)                   \
    static void NAME##_##MR##x##NR(const void *xv, const void *wv_, int64_t n0, int64_t N,     \
                                   int64_t K, float *sums) {                                   \
        const TX *x = (const TX *)xv;                                                          \
        const TW *w = (const TW *)wv_;                                                         \
        __m512 acc[MR][NR];                                                                    \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) acc[m][r] = _mm512_setzero_ps();                      \
        const char *ahead = (const char *)(w + (n0 + AHEAD_BLOCKS * NR) * K);                  \
        const char *end = (const char *)(w + N * K);                                           \
        for (int64_t k = 0, step = 0; k < K; k += PIECE, step++) {                             \
            /* the block reads NR * PIECE * WBYTES bytes a step: fetch as much of a later one */ \
            prefetch_block(ahead + step * NR * PIECE * WBYTES, end, NR * PIECE * WBYTES);      \
            MASK mk = K - k >= PIECE ? (MASK)~0u : (MASK)((1u << (K - k)) - 1);                \
            __typeof__(WLOAD(mk, w)) wv[NR];                                                   \
            for (int r = 0; r < NR; r++) wv[r] = WLOAD(mk, w + (n0 + r) * K + k);              \
            for (int m = 0; m < MR; m++) {                                                     \
                __typeof__(XLOAD(mk, x)) xm = XLOAD(mk, x + m * K + k);                        \
                for (int r = 0; r < NR; r++) acc[m][r] = MAC(acc[m][r], wv[r], xm);           \
            }                                                                                  \
        }                                                                                      \
        for (int m = 0; m < MR; m++)                                                           \
            for (int r = 0; r < NR; r++) sums[m * NR + r] = _mm512_reduce_add_ps(acc[m][r]);  \
    }

typedef void (*block_fn)(const void *, const void *, int64_t, int64_t, int64_t, float *);

/* A kernel family: its blocks for each row group (1, 2, 4, 8, 12 activation rows; ROW_BLOCK
 * weight rows each) and their one-weight-row versions for the rows left over, and the table
 * NAME_blocks[full or leftover][group] that group_times_w reads. */
#define FAMILY(NAME, ...)                                                                      \
    BLOCK(NAME, 1, 8, __VA_ARGS__)                                                             \
    BLOCK(NAME, 2, 8, __VA_ARGS__)                                                             \
    BLOCK(NAME, 4, 6, __VA_ARGS__)                                                             \
    BLOCK(NAME, 8, 3, __VA_ARGS__)                                                             \
    BLOCK(NAME, 12, 2, __VA_ARGS__)                                                            \
    BLOCK(NAME, 1, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 2, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 4, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 8, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 12, 1, __VA_ARGS__)                                                            \
    static const block_fn NAME##_blocks[2][5] = {                                              \
        {NAME##_1x8, NAME##_2x8, NAME##_4x6, NAME##_8x3, NAME##_12x2},                         \
        {NAME##_1x1, NAME##_2x1, NAME##_4x1, NAME##_8x1, NAME##_12x1},                         \
    };

/* float32: 16 products a piece per accumulator, by fused multiply-adds. */
#define F32_LOAD(mk, p) _mm512_maskz_loadu_ps(mk, p)
#define F32_MAC(acc, w, x) _mm512_fmadd_ps(w, x, acc)
FAMILY(f32, float, float, 16, 4, __mmask16, F32_LOAD, F32_LOAD, F32_MAC)

/* int8 weights (converted to float32 in registers) times float32 x. */
#define INT8_LOAD(mk, p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mk, p)))
FAMILY(int8, int8_t, float, 16, 1, __mmask16, INT8_LOAD, F32_LOAD, F32_MAC)

#if BF16_SIMD
/* bfloat16: 32 products a piece per accumulator by one instruction (exact products, float32
 * sums). */
#define BF16_LOAD(mk, p) ((__m512bh)_mm512_maskz_loadu_epi16(mk, p))
#define BF16_MAC(acc, w, x) _mm512_dpbf16_ps(acc, w, x)
FAMILY(bf16, uint16_t, uint16_t, 32, 2, __mmask32, BF16_LOAD, BF16_LOAD, BF16_MAC)
#endif

/* MR rows of x (a row_group) times all of w: blocks of NR weight rows, then the rows left over
 * one at a time (the same sums, so every weight row gets the same arithmetic). */
static void group_times_w(const void *x, const void *w, const void *scale, const void *bias,
                          void *y, int MR, int64_t N, int64_t K, int threads, int bf16,
                          const block_fn blocks[2][5]) {
    int g = MR == 12 ? 4 : MR == 8 ? 3 : MR == 4 ? 2 : MR == 2 ? 1 : 0;
    int NR = ROW_BLOCK(MR);
    int64_t blocks_n = N / NR;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b <= blocks_n; b++) { /* b == blocks_n: the rows left over */
        float sums[32];
        int nr = b < blocks_n ? NR : 1;
        int64_t first = b * NR, last = b < blocks_n ? first + NR : N;
        for (int64_t n = first; n < last; n += nr) {
            blocks[b < blocks_n ? 0 : 1][g](x, w, n, N, K, sums);
            for (int m = 0; m < MR; m++)
                for (int r = 0; r < nr; r++) {
                    float s = sums[m * nr + r] * (scale ? value(scale, bf16, n + r) : 1.0f);
                    store(y, bf16, m * N + n + r, s + (bias ? value(bias, bf16, n + r) : 0.0f));
                }
        }
    }
}

/* y (M, N) = x (M, K) wᵀ (* scale) + bias; the rows of x go in row groups, each streaming the
 * weights once. x holds x_bytes a number, y, scale and bias bfloat16 or float32. */
static void rows_times_w(const void *x, int64_t x_bytes, const void *w, const void *scale,
                         const void *bias, void *y, int64_t M, int64_t N, int64_t K, int threads,
                         int bf16, const block_fn blocks[2][5]) {
    int64_t y_bytes = bf16 ? 2 : 4;
    for (int64_t m0 = 0; m0 < M;) {
        int MR = row_group(M - m0);
        group_times_w((const char *)x + m0 * K * x_bytes, w, scale, bias,
                      (char *)y + m0 * N * y_bytes, MR, N, K, threads, bf16, blocks);
        m0 += MR;
    }
}
#endif

/* y (M, N) = x (M, K) wᵀ + bias, all float32, w (N, K) row-major, bias may be NULL. */
void tunesmith_gemm_f32(const float *x, const float *w, const float *bias, float *y, int64_t M,
                        int64_t N, int64_t K, int threads) {
#if SIMD
    rows_times_w(x, 4, w, NULL, bias, y, M, N, K, threads, 0, f32_blocks);
#else
    (void)x, (void)w, (void)bias, (void)y, (void)M, (void)N, (void)K, (void)threads;
#endif
}

/* The same in bfloat16 (x, w, bias and y). */
void tunesmith_gemm_bf16(const uint16_t *x, const uint16_t *w, const uint16_t *bias, uint16_t *y,
                         int64_t M, int64_t N, int64_t K, int threads) {
#if BF16_SIMD
    rows_times_w(x, 2, w, NULL, bias, y, M, N, K, threads, 1, bf16_blocks);
#else
    (void)x, (void)w, (void)bias, (void)y, (void)M, (void)N, (void)K, (void)threads;
#endif
}

/* y (M, N) = (x (M, K) wᵀ) * scale + bias, w int8 (N, K) row-major with a scale per row; x, y,
 * scale and bias float32, or bfloat16 when `bf16` (x is read as float32 either way). */
int tunesmith_gemm_int8(const void *x, const int8_t *w, const void *scale, const void *bias,
                        void *y, int64_t M, int64_t N, int64_t K, int threads, int bf16) {
#if SIMD
    float *xf = malloc((size_t)(M * K) * sizeof(float));
    if (!xf) return 1;
    for (int64_t i = 0; i < M * K; i++) xf[i] = value(x, bf16, i);
    rows_times_w(xf, 4, w, scale, bias, y, M, N, K, threads, bf16, int8_blocks);
    free(xf);
#else
    (void)x, (void)w, (void)scale, (void)bias, (void)y, (void)M, (void)N, (void)K, (void)threads,
        (void)bf16;
#endif
    return 0;
}
