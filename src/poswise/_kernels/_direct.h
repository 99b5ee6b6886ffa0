/*
 * Hand-written first-layer kernels of poswise for skinny products (n_out <= 32).
 *
 * The first layer's two products with X dominate an epoch: Z = X W^T (forward) and
 * W -= lr D^T X (update), with X of shape (N, D) and only n_out (~20) outputs. General
 * GEMMs pack X for such shapes and run at a fraction of their square-matrix rate. These
 * kernels keep the weights transposed and padded, WT of shape (D, NP) with NP a multiple of
 * the vector width, and vectorise across the outputs, so that
 *   forward:  z_i[0:NP]  = sum_k x_ik WT[k, 0:NP]          (4 rows of X at a time)
 *   backward: G[k, 0:NP] = sum_i x_ik d_i[0:NP]            (8 columns of X at a time)
 * are register-blocked outer products that read X once each, with every sum taken in the
 * natural order (k ascending, i ascending): no reassociation, no -ffast-math, results
 * independent of the number of threads. The backward pass walks X in row chunks that stay
 * in cache while all column blocks are processed.
 *
 * Portability: GCC vector extensions compiled twice, for AVX-512 (64-byte vectors, 4 rows
 * or 8 columns per register block) and AVX2+FMA (32-byte vectors, smaller blocks so the
 * accumulators fit 16 registers), chosen at run time from the CPU's features; no
 * -march=native. On CPUs with neither, pw_direct_supported() is 0 and poswise uses BLAS.
 * Threads split rows (forward) or columns (backward) with plain pthreads: no OpenMP
 * runtime that could spin against OpenBLAS's threads.
 */
#ifndef POSWISE_DIRECT_H
#define POSWISE_DIRECT_H

#include <pthread.h>
#include <stddef.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PW_X86 1
#define PW_AVX512 __attribute__((target("avx512f")))
#define PW_AVX2 __attribute__((target("avx2,fma")))
#else
#define PW_X86 0
#define PW_AVX512
#define PW_AVX2
#endif
#define PW_INLINE static inline __attribute__((always_inline))

/* 2: AVX-512, 1: AVX2+FMA, 0: neither (use BLAS). */
static int pw_isa(void) {
#if PW_X86
    static int isa = -1;
    if (isa < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) isa = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 1;
        else isa = 0;
    }
    return isa;
#else
    return 0;
#endif
}

static int pw_direct_supported(void) { return pw_isa() > 0; }

/* The one limit on threads shared by C and Cython (_core.pyx reads it from here): every
 * per-thread array of the kernels and of the engine has PW_MAX_THREADS entries, and
 * pw_parallel and the job builders clamp to it themselves, so no caller can pass more.
 * 64 covers a two-socket server; more cores than that run 64 threads. */
#define PW_MAX_THREADS 64

/* Clamp a requested thread count to [1, PW_MAX_THREADS]. */
static inline int pw_clamp_threads(int n) {
    return n < 1 ? 1 : (n > PW_MAX_THREADS ? PW_MAX_THREADS : n);
}

/* Widest first layer the direct kernels take, and the lane padding of WT in bytes: NP *
 * itemsize is a multiple of PW_VEC_BYTES and at most PW_MAX_PAD_BYTES. */
#define PW_DIRECT_MAX_WIDTH 32
#define PW_VEC_BYTES 64
#define PW_MAX_PAD_BYTES 256

typedef struct {
    void (*fn)(void*);
    void* arg;
} pw_task;

static void* pw_thread_main(void* p) {
    pw_task* t = (pw_task*)p;
    t->fn(t->arg);
    return NULL;
}

/* Run fn(args[0..n-1]) with n threads (the caller runs args[0]); n is clamped to
 * [1, PW_MAX_THREADS], so args needs at most PW_MAX_THREADS entries. If a thread cannot be
 * started its share runs in the caller: never fails. */
static void pw_parallel(void (*fn)(void*), void** args, int n) {
    pthread_t th[PW_MAX_THREADS];
    pw_task tasks[PW_MAX_THREADS];
    int started[PW_MAX_THREADS] = {0};
    int t;
    n = pw_clamp_threads(n);
    for (t = 1; t < n; t++) {
        tasks[t].fn = fn;
        tasks[t].arg = args[t];
        started[t] = pthread_create(&th[t], NULL, pw_thread_main, &tasks[t]) == 0;
        if (!started[t]) fn(args[t]);
    }
    fn(args[0]);
    for (t = 1; t < n; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

/* ------------------------------------------------------------------ templates */

/* Bodies for scalar T, vector type V (VL lanes); RB rows per forward block; NV, KB are
 * compile-time constants after inlining into the specialised functions below. */
#define PW_BODIES(T, V, VU, VL, NAME)                                                      \
PW_INLINE void NAME##_fwd(const T* X, int D, const T* WT, int NP, T* Z, int n1, int r0,    \
                          int r1, const int NV, const int RB) {                            \
    int i = r0, k, v, r;                                                                   \
    T tmp[8 * VL];                                                                         \
    for (; i + RB <= r1; i += RB) {                                                        \
        V acc[8][8];                                                                       \
        const T* x = X + (size_t)i * D;                                                    \
        for (r = 0; r < RB; r++)                                                           \
            for (v = 0; v < NV; v++) acc[r][v] = (V){0};                                   \
        for (k = 0; k < D; k++) {                                                          \
            const T* w = WT + (size_t)k * NP;                                              \
            T b[8];                                                                        \
            for (r = 0; r < RB; r++) b[r] = x[(size_t)r * D + k];                          \
            for (v = 0; v < NV; v++) {                                                     \
                V wv = *(const VU*)(w + v * VL);                                           \
                for (r = 0; r < RB; r++) acc[r][v] += b[r] * wv;                           \
            }                                                                              \
        }                                                                                  \
        for (r = 0; r < RB; r++) {                                                         \
            for (v = 0; v < NV; v++) *(VU*)(tmp + v * VL) = acc[r][v];                     \
            memcpy(Z + (size_t)(i + r) * n1, tmp, (size_t)n1 * sizeof(T));                 \
        }                                                                                  \
    }                                                                                      \
    for (; i < r1; i++) {                                                                  \
        V acc1[8];                                                                         \
        const T* x0 = X + (size_t)i * D;                                                   \
        for (v = 0; v < NV; v++) acc1[v] = (V){0};                                         \
        for (k = 0; k < D; k++) {                                                          \
            const T* w = WT + (size_t)k * NP;                                              \
            for (v = 0; v < NV; v++) acc1[v] += x0[k] * *(const VU*)(w + v * VL);          \
        }                                                                                  \
        for (v = 0; v < NV; v++) *(VU*)(tmp + v * VL) = acc1[v];                           \
        memcpy(Z + (size_t)i * n1, tmp, (size_t)n1 * sizeof(T));                          \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* G[j, k0:k1] (G is n1 x D) += sum over rows i of d_ij x_i[k0:k1], rows RBW at a time:   \
 * the RBW row segments of X stay in registers while every output j is accumulated. */     \
PW_INLINE void NAME##_bwd(const T* X, int N, int D, const T* Dl, int n1, T* G, int k0,     \
                          int k1, const int RBW) {                                         \
    int i, k, j, r;                                                                        \
    for (i = 0; i + RBW <= N; i += RBW) {                                                  \
        const T* x = X + (size_t)i * D;                                                    \
        const T* d = Dl + (size_t)i * n1;                                                  \
        for (k = k0; k + VL <= k1; k += VL) {                                              \
            V xv[16];                                                                      \
            for (r = 0; r < RBW; r++) xv[r] = *(const VU*)(x + (size_t)r * D + k);         \
            for (j = 0; j < n1; j++) {                                                     \
                T* g = G + (size_t)j * D + k;                                              \
                V acc = *(const VU*)g;                                                     \
                for (r = 0; r < RBW; r++) acc += d[(size_t)r * n1 + j] * xv[r];            \
                *(VU*)g = acc;                                                             \
            }                                                                              \
        }                                                                                  \
        for (; k < k1; k++)                                                                \
            for (j = 0; j < n1; j++) {                                                     \
                T acc = G[(size_t)j * D + k];                                              \
                for (r = 0; r < RBW; r++) acc += d[(size_t)r * n1 + j] * x[(size_t)r * D + k]; \
                G[(size_t)j * D + k] = acc;                                                \
            }                                                                              \
    }                                                                                      \
    for (; i < N; i++) {                                                                   \
        const T* x = X + (size_t)i * D;                                                    \
        const T* d = Dl + (size_t)i * n1;                                                  \
        for (j = 0; j < n1; j++)                                                           \
            for (k = k0; k < k1; k++) G[(size_t)j * D + k] += d[j] * x[k];                 \
    }                                                                                      \
}

/* One forward specialisation: NV vectors per padded row of WT, RB rows per block (as many
 * as the accumulators, RB x NV, leave registers for). */
#define PW_SPECIAL(T, NAME, ATTR, NV, RB)                                                  \
ATTR static void NAME##_fwd##NV(const T* X, int D, const T* WT, int NP, T* Z, int n1,      \
                                int r0, int r1)                                            \
    { NAME##_fwd(X, D, WT, NP, Z, n1, r0, r1, NV, RB); }

#define PW_ISA(T, SUF, ISA, VB, ATTR, RB1, RB2, RB3, RB4, RB6, RB8, RBW)                   \
typedef T pw_v_##SUF##ISA __attribute__((vector_size(VB)));                                \
typedef T pw_vu_##SUF##ISA __attribute__((vector_size(VB), aligned(sizeof(T))));           \
PW_BODIES(T, pw_v_##SUF##ISA, pw_vu_##SUF##ISA, (int)(VB / sizeof(T)), pw_##SUF##ISA)      \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 1, RB1)                                                 \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 2, RB2)                                                 \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 3, RB3)                                                 \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 4, RB4)                                                 \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 6, RB6)                                                 \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 8, RB8)                                                 \
static void pw_##SUF##ISA##_fwd_any(const T* X, int D, const T* WT, int NP, T* Z, int n1,  \
                                    int r0, int r1) {                                      \
    switch (NP / (int)(VB / sizeof(T))) {                                                  \
    case 1: pw_##SUF##ISA##_fwd1(X, D, WT, NP, Z, n1, r0, r1); break;                      \
    case 2: pw_##SUF##ISA##_fwd2(X, D, WT, NP, Z, n1, r0, r1); break;                      \
    case 3: pw_##SUF##ISA##_fwd3(X, D, WT, NP, Z, n1, r0, r1); break;                      \
    case 4: pw_##SUF##ISA##_fwd4(X, D, WT, NP, Z, n1, r0, r1); break;                      \
    case 6: pw_##SUF##ISA##_fwd6(X, D, WT, NP, Z, n1, r0, r1); break;                      \
    default: pw_##SUF##ISA##_fwd8(X, D, WT, NP, Z, n1, r0, r1); break;                     \
    }                                                                                      \
}                                                                                          \
ATTR static void pw_##SUF##ISA##_bwd_any(const T* X, int N, int D, const T* Dl, int n1,    \
                                         T* G, int k0, int k1)                             \
    { pw_##SUF##ISA##_bwd(X, N, D, Dl, n1, G, k0, k1, RBW); }

/* Register budgets: AVX-512 has 32 vector registers, AVX2 16. */
#define PW_TYPE(T, SUF)                                                                    \
PW_ISA(T, SUF, 512, 64, PW_AVX512, 8, 8, 8, 4, 4, 2, 16)                                   \
PW_ISA(T, SUF, 256, 32, PW_AVX2, 8, 4, 4, 2, 2, 1, 8)                                      \
                                                                                           \
typedef struct {                                                                           \
    const T* X; const T* WT; const T* Dl; T* Z; T* G;                                      \
    int N, D, NP, n1, lo, hi;                                                              \
} pw_job_##SUF;                                                                            \
                                                                                           \
static void pw_fwd_job_##SUF(void* p) {                                                    \
    pw_job_##SUF* j = (pw_job_##SUF*)p;                                                    \
    if (pw_isa() == 2) pw_##SUF##512_fwd_any(j->X, j->D, j->WT, j->NP, j->Z, j->n1, j->lo, j->hi); \
    else pw_##SUF##256_fwd_any(j->X, j->D, j->WT, j->NP, j->Z, j->n1, j->lo, j->hi);       \
}                                                                                          \
                                                                                           \
static void pw_bwd_job_##SUF(void* p) {                                                    \
    pw_job_##SUF* j = (pw_job_##SUF*)p;                                                    \
    if (pw_isa() == 2) pw_##SUF##512_bwd_any(j->X, j->N, j->D, j->Dl, j->n1, j->G, j->lo, j->hi); \
    else pw_##SUF##256_bwd_any(j->X, j->N, j->D, j->Dl, j->n1, j->G, j->lo, j->hi);        \
}                                                                                          \
                                                                                           \
/* Z (N x n1) = X (N x D) WT[:, :n1]; rows split over nthreads. */                         \
static void pw_first_forward_##SUF(const T* X, int N, int D, const T* WT, int NP, T* Z,   \
                                   int n1, int nthreads) {                                 \
    pw_job_##SUF jobs[PW_MAX_THREADS];                                                     \
    void* args[PW_MAX_THREADS];                                                            \
    int t, n = pw_clamp_threads(nthreads);                                               \
    if ((long long)N * D < (1LL << 18) * n || N < 8 * n) n = 1;                            \
    for (t = 0; t < n; t++) {                                                              \
        jobs[t].X = X; jobs[t].WT = WT; jobs[t].Z = Z; jobs[t].D = D; jobs[t].NP = NP;     \
        jobs[t].n1 = n1;                                                                   \
        jobs[t].lo = (int)(((long long)N * t / n) & ~3LL);                                 \
        jobs[t].hi = t == n - 1 ? N : (int)(((long long)N * (t + 1) / n) & ~3LL);          \
        args[t] = &jobs[t];                                                                \
    }                                                                                      \
    pw_parallel(pw_fwd_job_##SUF, args, n);                                                \
}                                                                                          \
                                                                                           \
/* G (n1 x D) = Dl^T X, or G += Dl^T X with accumulate (Dl is N x n1); columns of X     \
 * split over nthreads. */                                                                 \
static void pw_first_gradient_##SUF(const T* X, int N, int D, const T* Dl, int n1, T* G,  \
                                    int accumulate, int nthreads) {                        \
    pw_job_##SUF jobs[PW_MAX_THREADS];                                                     \
    void* args[PW_MAX_THREADS];                                                            \
    int t, n = pw_clamp_threads(nthreads);                                               \
    if (!accumulate) memset(G, 0, (size_t)n1 * D * sizeof(T));                             \
    if ((long long)N * D < (1LL << 18) * n || D < 32 * n) n = 1;                           \
    for (t = 0; t < n; t++) {                                                              \
        jobs[t].X = X; jobs[t].Dl = Dl; jobs[t].G = G; jobs[t].N = N; jobs[t].D = D;       \
        jobs[t].n1 = n1;                                                                   \
        jobs[t].lo = (int)(((long long)D * t / n) & ~15LL);                                \
        jobs[t].hi = t == n - 1 ? D : (int)(((long long)D * (t + 1) / n) & ~15LL);         \
        args[t] = &jobs[t];                                                                \
    }                                                                                      \
    pw_parallel(pw_bwd_job_##SUF, args, n);                                                \
}

PW_TYPE(double, d)
PW_TYPE(float, s)

#endif
