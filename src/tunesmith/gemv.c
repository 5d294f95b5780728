/* Products of a few activation rows (decoding: one row per sequence) with a weight matrix on
 * the CPU, y = x Wᵀ (+ bias): W and x both bfloat16 or both float32, or W int8 with a scale per
 * row (x float32 or bfloat16). Built and loaded by gemv.py, which picks the row counts.
 *
 * Decoding reads every weight once per step, so these are bound by how fast the weights stream
 * from memory. PyTorch's bfloat16 and int8 CPU kernels convert and reduce more slowly than
 * memory delivers; here each thread walks its weight rows in blocks (independent sums in
 * flight), uses each loaded block for every activation row (a register tile of them at a
 * time), and prefetches blocks AHEAD_BLOCKS on while it works. So a call reads the weights
 * once whatever its row count: from a few rows on, the products, not memory, set the pace.
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

/* Every weight is read from memory once per call, whatever the row count: each block of weight
 * rows, once loaded, serves all the activation rows, taken a register tile at a time (a tile's
 * sums, MR * NR accumulators, + NR weight pieces + 1 activation piece fit the 32 vector
 * registers). Up to 2 rows (bound by memory alone) blocks are 8 weight rows wide; from 3 rows,
 * 4 wide, with tiles of up to 6 rows, as even as the row count allows. */
#define WIDE_NR 4
#define NARROW_NR 8
#define MAX_TILE 6

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
/* Prefetch `bytes` from `at` into L2. No bounds check: a prefetch past the weights' end does
 * not fault, and a branch here made the compiler keep the block's sums in memory. */
static inline void prefetch_block(uintptr_t at, int64_t bytes) {
    for (int64_t line = 0; line < bytes; line += 64)
        _mm_prefetch((const char *)(at + line), _MM_HINT_T1);
}
#endif

#if SIMD
/* The sums of four vectors, [sum a, sum b, sum c, sum d], each by the same tree of additions
 * (its 128-bit quarters pairwise, then their lanes) whichever vectors share the call; a third
 * of the shuffles four _mm512_reduce_add_ps take (5% of a 16-row product). */
static inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    __m512 q =
        _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    q = _mm512_add_ps(q, _mm512_shuffle_ps(q, q, _MM_SHUFFLE(2, 3, 0, 1)));
    q = _mm512_add_ps(q, _mm512_shuffle_ps(q, q, _MM_SHUFFLE(1, 0, 3, 2)));
    __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(firsts, q));
}

/* Unrolled early, a tile's sums stay in registers (else GCC stored them to memory every step). */
#define UNROLLED _Pragma("GCC unroll 32")

/* One step of a tile: the NR weight rows' and MR activation rows' pieces at k (lanes mk) into
 * the tile's sums. */
#define TILE_STEP(MR, NR, mk, WLOAD, XLOAD, MAC)                                              \
    {                                                                                          \
        __typeof__(WLOAD(mk, w)) wv[NR];                                                       \
        UNROLLED for (int r = 0; r < NR; r++) wv[r] = WLOAD(mk, w + (n0 + r) * K + k);         \
        UNROLLED for (int m = 0; m < MR; m++) {                                                \
            __typeof__(XLOAD(mk, x)) xm = XLOAD(mk, x + m * K + k);                            \
            UNROLLED for (int r = 0; r < NR; r++) acc[m][r] = MAC(acc[m][r], wv[r], xm);       \
        }                                                                                      \
    }

/* MR activation rows by NR weight rows: sums[m * NR + r] = sum_k x[m, k] w[n0 + r, k]. Every
 * (m, r) has its own accumulator, fed a piece of k at a time in the same order whatever MR and
 * NR are: a row's result does not depend on how many rows share the call. Whole pieces load
 * unmasked (a masked load costs an extra micro-op); only the last, partial one is masked. */
#define BLOCK(NAME, MR, NR, TW, TX, PIECE, WBYTES, MASK, WLOAD, XLOAD, MAC)                   \
    static void NAME##_##MR##x##NR(const void *xv, const void *wv_, int64_t n0, int64_t K,     \
                                   float *sums, int ahead) {                                   \
        const TX *x = (const TX *)xv;                                                          \
        const TW *w = (const TW *)wv_;                                                         \
        __m512 acc[MR][NR];                                                                    \
        UNROLLED for (int m = 0; m < MR; m++)                                                  \
            UNROLLED for (int r = 0; r < NR; r++) acc[m][r] = _mm512_setzero_ps();             \
        /* a step reads NR * PIECE * WBYTES bytes of weights: fetch as much of the block      \
         * `ahead` blocks on (each tile of a block a different one, so that memory stays busy  \
         * through all of them) */                                                             \
        uintptr_t at = (uintptr_t)(w + (n0 + ahead * NR) * K);                                 \
        int64_t k = 0;                                                                         \
        for (; k + PIECE <= K; k += PIECE, at += NR * PIECE * WBYTES) {                        \
            prefetch_block(at, NR * PIECE * WBYTES);                                           \
            TILE_STEP(MR, NR, (MASK)~0u, WLOAD, XLOAD, MAC)                                    \
        }                                                                                      \
        if (k < K) {                                                                           \
            MASK mk = (MASK)((1ull << (K - k)) - 1);                                           \
            TILE_STEP(MR, NR, mk, WLOAD, XLOAD, MAC)                                           \
        }                                                                                      \
        /* four weight rows' sums at a time; a lone one by the same tree (a row's sums do not \
         * depend on the block it falls in) */                                                 \
        UNROLLED for (int m = 0; m < MR; m++) {                                                \
            UNROLLED for (int r = 0; r + 4 <= NR; r += 4)                                      \
                _mm_storeu_ps(sums + m * NR + r,                                               \
                              reduce4(acc[m][r], acc[m][r + 1], acc[m][r + 2], acc[m][r + 3])); \
            UNROLLED for (int r = NR - NR % 4; r < NR; r++)                                    \
                sums[m * NR + r] =                                                             \
                    _mm_cvtss_f32(reduce4(acc[m][r], acc[m][r], acc[m][r], acc[m][r]));        \
        }                                                                                      \
    }

typedef void (*block_fn)(const void *, const void *, int64_t, int64_t, float *, int);

/* A kernel's blocks, indexed [width][tile rows - 1]: width 0 is NARROW_NR weight rows (tiles of
 * 1-2 rows), 1 is WIDE_NR (tiles of 1 to MAX_TILE rows), 2 is one weight row (the rows left over
 * at the end of w, any tile). */
#define FAMILY(NAME, ...)                                                                      \
    BLOCK(NAME, 1, 8, __VA_ARGS__)                                                             \
    BLOCK(NAME, 2, 8, __VA_ARGS__)                                                             \
    BLOCK(NAME, 1, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 2, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 3, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 4, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 5, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 6, 4, __VA_ARGS__)                                                             \
    BLOCK(NAME, 1, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 2, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 3, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 4, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 5, 1, __VA_ARGS__)                                                             \
    BLOCK(NAME, 6, 1, __VA_ARGS__)                                                             \
    static const block_fn NAME##_blocks[3][MAX_TILE] = {                                       \
        {NAME##_1x8, NAME##_2x8},                                                              \
        {NAME##_1x4, NAME##_2x4, NAME##_3x4, NAME##_4x4, NAME##_5x4, NAME##_6x4},              \
        {NAME##_1x1, NAME##_2x1, NAME##_3x1, NAME##_4x1, NAME##_5x1, NAME##_6x1},              \
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

/* y (M, N) = x (M, K) wᵀ (* scale) + bias: each thread takes a share of the blocks of weight
 * rows (the rows left over at the end one at a time, with the same sums), and each block, once
 * loaded, serves every row of x, a tile at a time. x holds x_bytes a number; y, scale and bias
 * are bfloat16 when `bf16`, else float32. */
static void rows_times_w(const void *x, int64_t x_bytes, const void *w, const void *scale,
                         const void *bias, void *y, int64_t M, int64_t N, int64_t K, int threads,
                         int bf16, const block_fn blocks[3][MAX_TILE]) {
    int narrow = M <= 2;
    int NR = narrow ? NARROW_NR : WIDE_NR, max_tile = narrow ? 2 : MAX_TILE;
    int64_t tiles = (M + max_tile - 1) / max_tile, blocks_n = N / NR;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b <= blocks_n; b++) { /* b == blocks_n: the rows left over */
        float sums[MAX_TILE * NARROW_NR];
        int nr = b < blocks_n ? NR : 1;
        const block_fn *row = blocks[b < blocks_n ? !narrow : 2];
        int64_t first = b * NR, last = b < blocks_n ? first + NR : N;
        for (int64_t n = first; n < last; n += nr)
            for (int64_t t = 0, m0 = 0; t < tiles; t++) {
                /* tiles as even as M allows: the first M % tiles get one row more */
                int MR = (int)(M / tiles + (t < M % tiles));
                row[MR - 1]((const char *)x + m0 * K * x_bytes, w, n, K, sums, AHEAD_BLOCKS + t);
                for (int m = 0; m < MR; m++)
                    for (int r = 0; r < nr; r++) {
                        float s = sums[m * nr + r] * (scale ? value(scale, bf16, n + r) : 1.0f);
                        float add = bias ? value(bias, bf16, n + r) : 0.0f;
                        store(y, bf16, (m0 + m) * N + n + r, s + add);
                    }
                m0 += MR;
            }
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
