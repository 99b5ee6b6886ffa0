/*
 * Products of the narrow layers after the first (every dimension but the rows at most
 * PW_SMALL_MAX), for blocks of rows that sit in cache: the row-wise span steps of PWO and
 * the fused gradient-descent pass call them ~40 times per layer and epoch on MNIST-shaped
 * data (1552-row blocks of 20-7-5-10 layers), where a general GEMM spends most of its time
 * packing and dispatching (OpenBLAS: 11-27 us per 1552 x 20 x 7 product on AVX-512).
 *
 *   pw_small_mm:  Z (rows x m) = A (rows x p) B, B = W^T (W is m x p) or B = W (p x m);
 *                 vectorised across the m outputs, RB rows of accumulators, B packed once
 *                 per call into padded rows that stay in L1; with an epilogue in registers
 *                 (+ bias and ReLU for the forward pass, the ReLU derivative for the
 *                 errors) that spares a pass over Z, with the bits of the separate steps;
 *   pw_small_tn:  G (m x p) = [G +] D^T A (D is rows x m, A rows x p): vectorised across
 *                 the p columns of A, the accumulators of JG outputs in registers over all
 *                 rows.
 *
 * Every element is one sum in the natural order (k ascending, rows ascending), one fused
 * multiply-add per term, so the results do not depend on the blocks of rows (pw_small_tn
 * with accumulation continues each sum where the previous block left it) nor on the class
 * (AVX-512 and AVX2 give the same bits, so an AVX-512 CPU takes the 256-bit kernels
 * where the vectors run across at most 32 bytes: 8 float32 or 4 float64 lanes; on CPUs
 * that run 512-bit operations on 256-bit units, such as AMD Zen 4, a 512-bit vector of
 * 7 float32 outputs costs twice the 256-bit one). Rows are stored with full vectors
 * while the spill past a row stays inside the call's rows (the next row's store
 * overwrites it); the rows near the end go through a buffer, so no call reads or writes
 * outside its own rows.
 * Without a vector class (pw_isa() == 0) or for wider layers the functions return 0 and
 * the caller uses BLAS; so does pw_small_tn for more than 4 vectors of columns (AVX2
 * float64 beyond 16), where only 2 outputs' accumulators fit the registers per pass.
 */
#ifndef POSWISE_SMALL_H
#define POSWISE_SMALL_H

#include "_direct.h"

/* Widest dimension (outputs and inner) these kernels take; wider layers use BLAS. */
#define PW_SMALL_MAX 32

#define PW_SMALL_BODIES(T, V, VU, VL, NAME, ATTR)                                          \
PW_INLINE void NAME##_mm_b(const T* A, int rows, int p, const T* Bp, int m, T* Z,          \
                           const T* Bb, const T* gate, int relu, const int NV, const int RB) { \
    int i = 0, k, v, r, j;                                                                 \
    const size_t end = (size_t)rows * m;                                                   \
    T tmp[8 * VL] __attribute__((aligned(64)));                                            \
    for (; i < rows; i += RB) {                                                            \
        V acc[4][8];                                                                       \
        const T* a = A + (size_t)i * p;                                                    \
        int rb = rows - i < RB ? rows - i : RB;                                            \
        _Pragma("GCC unroll 32")                                                           \
        for (r = 0; r < RB; r++)                                                           \
            _Pragma("GCC unroll 32")                                                       \
            for (v = 0; v < NV; v++) acc[r][v] = (V){0};                                   \
        if (rb == RB) {                                                                    \
            for (k = 0; k < p; k++) {                                                      \
                const T* b = Bp + (size_t)k * NV * VL;                                     \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) {                                                 \
                    V bv = *(const V*)(b + v * VL);                                        \
                    _Pragma("GCC unroll 32")                                               \
                    for (r = 0; r < RB; r++) acc[r][v] += a[(size_t)r * p + k] * bv;       \
                }                                                                          \
            }                                                                              \
        } else {                                                                           \
            for (r = 0; r < rb; r++) {                                                     \
                for (k = 0; k < p; k++)                                                    \
                    _Pragma("GCC unroll 32")                                               \
                    for (v = 0; v < NV; v++)                                               \
                        acc[r][v] += a[(size_t)r * p + k] * *(const V*)(Bp + ((size_t)k * NV + v) * VL); \
            }                                                                              \
        }                                                                                  \
        /* epilogue: + bias, ReLU, or the errors gated by the activations (ReLU') */       \
        for (r = 0; r < rb; r++) {                                                         \
            T* z = Z + (size_t)(i + r) * m;                                                \
            const T* g = gate != NULL ? gate + (size_t)(i + r) * m : NULL;                 \
            int full = (size_t)(i + r) * m + (size_t)NV * VL <= end;                       \
            _Pragma("GCC unroll 32")                                                       \
            for (v = 0; v < NV; v++) {                                                     \
                V x = acc[r][v];                                                           \
                if (Bb != NULL) x += *(const V*)(Bb + v * VL);                             \
                if (relu) {                                                                \
                    __typeof__(x > x) on = x > (V){0};                                     \
                    x = (V)((__typeof__(on))x & on);                                       \
                }                                                                          \
                if (g != NULL) {                                                           \
                    V gv;                                                                  \
                    __typeof__(x > x) on;                                                  \
                    if (full) gv = *(const VU*)(g + v * VL);                               \
                    else {                                                                 \
                        for (j = 0; j < VL; j++) tmp[j] = v * VL + j < m ? g[v * VL + j] : (T)0; \
                        gv = *(const V*)tmp;                                               \
                    }                                                                      \
                    on = gv > (V){0};                                                      \
                    x = (V)((__typeof__(on))x & on);                                       \
                }                                                                          \
                acc[r][v] = x;                                                             \
            }                                                                              \
            if (full) {                                                                    \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) *(VU*)(z + v * VL) = acc[r][v];                   \
            } else {                                                                       \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) *(V*)(tmp + v * VL) = acc[r][v];                  \
                for (j = 0; j < m; j++) z[j] = tmp[j];                                     \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}                                                                                          \
                                                                                           \
PW_INLINE void NAME##_tn_b(const T* A, int rows, int p, const T* Dm, int m, T* Gp,         \
                           const int NV, const int JG) {                                   \
    int i, j0, jj, v, k;                                                                   \
    const size_t end = (size_t)rows * p;                                                   \
    T row[8 * VL] __attribute__((aligned(64)));                                            \
    for (j0 = 0; j0 < m; j0 += JG) {                                                       \
        V acc[24][8];                                                                      \
        int jn = m - j0 < JG ? m - j0 : JG;                                                \
        _Pragma("GCC unroll 32")                                                           \
        for (jj = 0; jj < JG; jj++)      /* a last group's extra outputs: discarded */    \
            _Pragma("GCC unroll 32")                                                       \
            for (v = 0; v < NV; v++)                                                       \
                acc[jj][v] = j0 + jj < m ? *(const V*)(Gp + ((size_t)(j0 + jj) * NV + v) * VL) \
                                         : (V){0};                                         \
        for (i = 0; i < rows; i++) {                                                       \
            V av[8];                                                                       \
            const T* a = A + (size_t)i * p;                                                \
            const T* d = Dm + (size_t)i * m;                                               \
            if ((size_t)i * p + (size_t)NV * VL <= end) {                                  \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) av[v] = *(const VU*)(a + v * VL);                 \
            } else {                                                                       \
                for (k = 0; k < NV * VL; k++) row[k] = k < p ? a[k] : (T)0;                \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) av[v] = *(const V*)(row + v * VL);                \
            }                                                                              \
            _Pragma("GCC unroll 32")                                                       \
            for (jj = 0; jj < JG; jj++) {                                                  \
                T dj;                                                                      \
                if (jj == jn) break;        /* a last group of fewer outputs */            \
                dj = d[j0 + jj];                                                           \
                _Pragma("GCC unroll 32")                                                   \
                for (v = 0; v < NV; v++) acc[jj][v] += dj * av[v];                         \
            }                                                                              \
        }                                                                                  \
        _Pragma("GCC unroll 32")                                                           \
        for (jj = 0; jj < JG; jj++) {                                                      \
            if (jj == jn) break;                                                           \
            _Pragma("GCC unroll 32")                                                       \
            for (v = 0; v < NV; v++)                                                       \
                *(V*)(Gp + ((size_t)(j0 + jj) * NV + v) * VL) = acc[jj][v];                \
        }                                                                                  \
    }                                                                                      \
}

/* One specialisation per vector count NV (1..8) with its row block RB / output group JG. */
#define PW_SMALL_SPECIAL(T, NAME, ATTR, NV, RB, JG)                                        \
ATTR static void NAME##_mm##NV(const T* A, int rows, int p, const T* Bp, int m, T* Z,      \
                              const T* Bb, const T* gate, int relu)                        \
    { NAME##_mm_b(A, rows, p, Bp, m, Z, Bb, gate, relu, NV, RB); }                         \
ATTR static void NAME##_tn##NV(const T* A, int rows, int p, const T* Dm, int m, T* Gp)     \
    { NAME##_tn_b(A, rows, p, Dm, m, Gp, NV, JG); }

#define PW_SMALL_CASES(NAME, KIND, NV, ...)                                                \
    switch (NV) {                                                                          \
    case 1: NAME##_##KIND##1(__VA_ARGS__); break;                                          \
    case 2: NAME##_##KIND##2(__VA_ARGS__); break;                                          \
    case 3: NAME##_##KIND##3(__VA_ARGS__); break;                                          \
    case 4: NAME##_##KIND##4(__VA_ARGS__); break;                                          \
    case 5: NAME##_##KIND##5(__VA_ARGS__); break;                                          \
    case 6: NAME##_##KIND##6(__VA_ARGS__); break;                                          \
    case 7: NAME##_##KIND##7(__VA_ARGS__); break;                                          \
    default: NAME##_##KIND##8(__VA_ARGS__); break;                                         \
    }

/* Register budgets: RB x NV accumulators (+ NV weights) in the products, JG x NV (+ NV
 * columns of A) in the gradient; AVX-512 has 32 vector registers, AVX2 16. */
#define PW_SMALL_ISA(T, SUF, ISA, ATTR, RB1, RB2, RB3, RB4, JG1, JG2, JG3, JG4)           \
PW_SMALL_BODIES(T, pw_v_##SUF##ISA, pw_vu_##SUF##ISA,                                      \
                (int)(sizeof(pw_v_##SUF##ISA) / sizeof(T)), pw_sm_##SUF##ISA, ATTR)        \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 1, RB1, JG1)                                   \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 2, RB2, JG2)                                   \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 3, RB3, JG3)                                   \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 4, RB4, JG4)                                   \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 5, 1, 2)                                       \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 6, 1, 2)                                       \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 7, 1, 1)                                       \
PW_SMALL_SPECIAL(T, pw_sm_##SUF##ISA, ATTR, 8, 1, 1)

#define PW_SMALL_TYPE(T, SUF)                                                              \
PW_SMALL_ISA(T, SUF, 512, PW_AVX512, 4, 4, 4, 4, 24, 12, 8, 6)                             \
PW_SMALL_ISA(T, SUF, 256, PW_AVX2, 4, 4, 3, 2, 12, 6, 4, 3)                                \
                                                                                           \
/* Z (rows x m) = A (rows x p) B with B = W^T (trans: W is m x p) or W (p x m), then, in   \
 * this order and each if asked: + bias (m), ReLU (relu), times [gate > 0] (gate: rows x m, \
 * the activations whose ReLU derivative gates the errors). Returns 0 (nothing done) when  \
 * the layer is too wide or the CPU has no vector class. */                                \
static int pw_small_mm_##SUF(const T* A, int rows, int p, const T* W, int trans, int m,    \
                             T* Z, const T* bias, const T* gate, int relu) {               \
    T Bp[PW_SMALL_MAX * PW_SMALL_MAX] __attribute__((aligned(64)));                        \
    T Bb[PW_SMALL_MAX] __attribute__((aligned(64)));                                       \
    int isa = pw_isa(), VL, NV, k, j;                                                      \
    if (isa == 0 || p > PW_SMALL_MAX || m > PW_SMALL_MAX || p < 1 || m < 1) return 0;      \
    if (isa == 2 && m * (int)sizeof(T) <= 32) isa = 1;   /* one half vector is enough */   \
    VL = (isa == 2 ? 64 : 32) / (int)sizeof(T);                                            \
    NV = (m + VL - 1) / VL;                                                                \
    for (k = 0; k < p; k++)                                                                \
        for (j = 0; j < NV * VL; j++)                                                      \
            Bp[(size_t)k * NV * VL + j] = j >= m ? (T)0 : (trans ? W[(size_t)j * p + k]    \
                                                              : W[(size_t)k * m + j]);     \
    if (bias != NULL)                                                                      \
        for (j = 0; j < NV * VL; j++) Bb[j] = j < m ? bias[j] : (T)0;                      \
    if (isa == 2) {                                                                        \
        PW_SMALL_CASES(pw_sm_##SUF##512, mm, NV, A, rows, p, Bp, m, Z,                     \
                       bias != NULL ? Bb : NULL, gate, relu)                               \
    } else {                                                                               \
        PW_SMALL_CASES(pw_sm_##SUF##256, mm, NV, A, rows, p, Bp, m, Z,                     \
                       bias != NULL ? Bb : NULL, gate, relu)                               \
    }                                                                                      \
    return 1;                                                                              \
}                                                                                          \
                                                                                           \
/* G (m x p) = D^T A (+ G when accumulate), D rows x m, A rows x p. Returns 0 as above. */ \
static int pw_small_tn_##SUF(const T* A, int rows, int p, const T* Dm, int m, T* G,        \
                             int accumulate) {                                             \
    T Gp[PW_SMALL_MAX * PW_SMALL_MAX] __attribute__((aligned(64)));                        \
    int isa = pw_isa(), VL, NV, k, j;                                                      \
    if (isa == 0 || p > PW_SMALL_MAX || m > PW_SMALL_MAX || p < 1 || m < 1) return 0;      \
    if (isa == 2 && p * (int)sizeof(T) <= 32) isa = 1;   /* one half vector is enough */   \
    VL = (isa == 2 ? 64 : 32) / (int)sizeof(T);                                            \
    NV = (p + VL - 1) / VL;                                                                \
    if (NV > 4) return 0;       /* JG <= 2 outputs per pass over the rows: BLAS is faster */ \
    for (j = 0; j < m; j++)                                                                \
        for (k = 0; k < NV * VL; k++)                                                      \
            Gp[(size_t)j * NV * VL + k] = (accumulate && k < p) ? G[(size_t)j * p + k] : (T)0; \
    if (isa == 2) { PW_SMALL_CASES(pw_sm_##SUF##512, tn, NV, A, rows, p, Dm, m, Gp) }      \
    else { PW_SMALL_CASES(pw_sm_##SUF##256, tn, NV, A, rows, p, Dm, m, Gp) }               \
    for (j = 0; j < m; j++)                                                                \
        for (k = 0; k < p; k++) G[(size_t)j * p + k] = Gp[(size_t)j * NV * VL + k];        \
    return 1;                                                                              \
}

#if PW_X86
PW_SMALL_TYPE(double, d)
PW_SMALL_TYPE(float, s)
#else
static int pw_small_mm_d(const double* A, int rows, int p, const double* W, int trans,
                         int m, double* Z, const double* bias, const double* gate, int relu)
    { (void)A; (void)rows; (void)p; (void)W; (void)trans; (void)m; (void)Z; (void)bias;
      (void)gate; (void)relu; return 0; }
static int pw_small_mm_s(const float* A, int rows, int p, const float* W, int trans, int m,
                         float* Z, const float* bias, const float* gate, int relu)
    { (void)A; (void)rows; (void)p; (void)W; (void)trans; (void)m; (void)Z; (void)bias;
      (void)gate; (void)relu; return 0; }
static int pw_small_tn_d(const double* A, int rows, int p, const double* Dm, int m,
                         double* G, int accumulate) { (void)A; (void)rows; (void)p; (void)Dm;
                         (void)m; (void)G; (void)accumulate; return 0; }
static int pw_small_tn_s(const float* A, int rows, int p, const float* Dm, int m, float* G,
                         int accumulate) { (void)A; (void)rows; (void)p; (void)Dm; (void)m;
                         (void)G; (void)accumulate; return 0; }
#endif

/* For tests (ctypes): the two entry points on float64 (is_double) or float32 arrays. */
PW_EXPORT int pw_small_mm_x(const void* A, int rows, int p, const void* W, int trans, int m,
                            void* Z, const void* bias, const void* gate, int relu,
                            int is_double) {
    return is_double ? pw_small_mm_d((const double*)A, rows, p, (const double*)W, trans, m,
                                     (double*)Z, (const double*)bias, (const double*)gate,
                                     relu)
                     : pw_small_mm_s((const float*)A, rows, p, (const float*)W, trans, m,
                                     (float*)Z, (const float*)bias, (const float*)gate, relu);
}

PW_EXPORT int pw_small_tn_x(const void* A, int rows, int p, const void* Dm, int m, void* G,
                            int accumulate, int is_double) {
    return is_double ? pw_small_tn_d((const double*)A, rows, p, (const double*)Dm, m,
                                     (double*)G, accumulate)
                     : pw_small_tn_s((const float*)A, rows, p, (const float*)Dm, m,
                                     (float*)G, accumulate);
}

#endif
