/*
 * Hand-written first-layer kernels of poswise for skinny products (n_out <= 32), and the
 * thread pool that runs them.
 *
 * The first layer's two products with X dominate an epoch: Z = X W^T (forward) and
 * W -= lr D^T X (update), with X of shape (N, D) and only n_out (~20) outputs. General
 * GEMMs pack X for such shapes and run at a fraction of their square-matrix rate. These
 * kernels keep the weights transposed and padded, WT of shape (D, NP) with NP a multiple of
 * PW_VEC_BYTES / itemsize, and compute
 *   forward:  z_i[0:n1]  = sum_k x_ik WT[k, 0:n1]   vectorised across the outputs, RB rows
 *             x NV vectors (+ a half vector) of accumulators per block;
 *   backward: G[j, k:k+VL] = sum_i d_ij x_i[k:k+VL]  vectorised across the columns of X, the
 *             accumulators of a group of outputs in registers over PW_RBW rows;
 * register-blocked outer products that read X once each, with every sum taken in the
 * natural order (k ascending, i ascending, one fused multiply-add per term): no
 * reassociation, no -ffast-math, results independent of the number of threads and of the
 * register and cache blocks (they only change which elements are computed when, never the
 * order of any element's sum).
 *
 * Per CPU class (chosen at run time, no -march=native): GCC vector extensions compiled for
 * AVX-512 (64-byte vectors, 32 registers; with AVX512VL and FMA for the 256-bit halves) and
 * AVX2+FMA (32-byte vectors, 16 registers). The forward kernel computes only the lanes that
 * hold outputs, in full vectors and one half vector: 20 float64 outputs take 5 AVX2 vectors
 * (not 6) or 2.5 AVX-512 ones (not 3), 20 float32 outputs 1.5 AVX-512 vectors (not 2); a
 * CPU that runs 512-bit operations on 256-bit units (AMD Zen 4) does a half in half the
 * time. With AVX2's 16 registers the forward kernel takes the outputs in chunks of at most
 * 3 whole vectors with their weights held in registers (pw_X256_fwd_chunks), and the
 * gradient of an X that fits the cache 4 outputs by 3 vectors of columns at a time
 * (pw_X256_bwd_chunks): fewer loads per FMA, the same sums. The gradient's chunks of PW_RBW rows amortise the loads and stores of G, its
 * prefetches (PW_PF elements ahead in each row of the chunk) keep PW_RBW row streams of X
 * in flight, and when a thread's share of G outgrows the level-2 cache the CPU reports
 * (pw_cache_size) its columns are taken in blocks that fit. On CPUs with neither class
 * (including ARM64) pw_direct_supported() is 0 and poswise uses BLAS.
 * POSWISE_ISA=avx512|avx2|none|auto (read once per process) caps the class, so that every
 * path can be tested on one machine.
 *
 * Threads (pw_parallel): a persistent pool of plain pthreads, no OpenMP runtime that could
 * spin against OpenBLAS's threads. Workers are started lazily (the first call that needs
 * them), parked on their own condition variable between calls, joined at exit, and reset
 * in a forked child. One caller owns the pool at a time; a second concurrent caller (two
 * Python threads training at once, or a nested call from a worker) runs on threads of its
 * own, started for that call, as before the pool existed. Results never depend on which.
 */
#ifndef POSWISE_DIRECT_H
#define POSWISE_DIRECT_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PW_X86 1
/* avx512vl and fma: the half vectors of the forward kernel are 256-bit FMAs on registers
 * 0-31 (avx512f alone has neither, and GCC then splits them into a multiply and an add) */
#define PW_AVX512 __attribute__((target("avx512f,avx512vl,fma")))
#define PW_AVX2 __attribute__((target("avx2,fma")))
#else
#define PW_X86 0
#define PW_AVX512
#define PW_AVX2
#endif
#define PW_INLINE static inline __attribute__((always_inline))
/* Entry points for tests and tools (ctypes): the extension's other symbols stay static. */
#define PW_EXPORT __attribute__((visibility("default"), used))

/* 2: AVX-512, 1: AVX2+FMA, 0: neither (use BLAS). */
static int pw_isa_detect(void) {
#if PW_X86
    int isa, cap = 2;
    const char* env = getenv("POSWISE_ISA");
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma")) isa = 2;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 1;
    else isa = 0;
    if (env != NULL && env[0] != '\0' && strcmp(env, "auto") != 0) {
        if (strcmp(env, "avx512") == 0) cap = 2;
        else if (strcmp(env, "avx2") == 0) cap = 1;
        else if (strcmp(env, "none") == 0) cap = 0;
        else
            fprintf(stderr, "poswise: POSWISE_ISA must be one of avx512, avx2, none, auto; "
                            "got '%s'; using auto\n", env);
    }
    return isa < cap ? isa : cap;
#else
    return 0;
#endif
}

static int pw_isa(void) {
    static int isa = -1;
    int v = __atomic_load_n(&isa, __ATOMIC_ACQUIRE);
    if (v < 0) {               /* racing first calls compute the same value */
        v = pw_isa_detect();
        __atomic_store_n(&isa, v, __ATOMIC_RELEASE);
    }
    return v;
}

static int pw_direct_supported(void) { return pw_isa() > 0; }

/* The class the kernels run on (2 AVX-512, 1 AVX2+FMA, 0 none), after POSWISE_ISA. */
PW_EXPORT int pw_active_isa(void) { return pw_isa(); }

/* Data cache size in bytes of level 1 or 2 (per core), as the CPU reports it: sysconf,
 * then /sys, then a conservative default (32 KiB, 256 KiB). Read once per level. */
static long pw_cache_read(int level) {
    long v = 0;
    char path[96], buf[32], type[32];
    int idx;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    v = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
#endif
    for (idx = 0; v <= 0 && idx < 8; idx++) {
        FILE* f;
        int lv = 0;
        long size = 0;
        char unit = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", idx);
        if ((f = fopen(path, "r")) == NULL) break;
        if (fscanf(f, "%d", &lv) != 1) lv = 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", idx);
        type[0] = '\0';
        if ((f = fopen(path, "r")) != NULL) {
            if (fscanf(f, "%31s", type) != 1) type[0] = '\0';
            fclose(f);
        }
        if (lv != level || strcmp(type, "Instruction") == 0) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        if ((f = fopen(path, "r")) != NULL) {
            if (fgets(buf, sizeof buf, f) != NULL && sscanf(buf, "%ld%c", &size, &unit) >= 1)
                v = size * (unit == 'K' ? 1024L : unit == 'M' ? 1048576L : 1L);
            fclose(f);
        }
    }
    if (v < 4096 || v > (1L << 30)) v = level == 1 ? 32768L : 262144L;
    return v;
}

PW_EXPORT long pw_cache_size(int level) {
    static long cached[3] = {0, 0, 0};
    long v;
    if (level != 1 && level != 2) return 0;
    v = __atomic_load_n(&cached[level], __ATOMIC_ACQUIRE);
    if (v == 0) {
        v = pw_cache_read(level);
        __atomic_store_n(&cached[level], v, __ATOMIC_RELEASE);
    }
    return v;
}

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

/* Elements of X per thread below which the forward and gradient kernels use fewer threads:
 * a pool dispatch costs a few microseconds, this much work ~20 us on one core (n1 = 20). */
#define PW_THREAD_GRAIN (1LL << 16)

/* ------------------------------------------------------------------ thread pool */

/* Counters for tests and benchmarks (read with ctypes; see tests/test_threads.py):
 * [0] pw_parallel calls with n > 1, [1] the largest n of such a call, [2] shares run by
 * pool workers, [3] shares run by threads started for one call (pool busy),
 * [4] shares run by the caller because no thread could be started. */
PW_EXPORT long long pw_stats[5];

PW_EXPORT void pw_stats_reset(void) {
    int i;
    for (i = 0; i < 5; i++) __atomic_store_n(&pw_stats[i], 0, __ATOMIC_RELAXED);
}

static inline void pw_stat_add(int i, long long v) {
    __atomic_fetch_add(&pw_stats[i], v, __ATOMIC_RELAXED);
}

typedef struct {
    void (*fn)(void*);
    void* arg;
} pw_task;

typedef struct {
    pthread_mutex_t lock;                /* guards the fields below */
    pthread_cond_t done;                 /* the owner waits here for pending == 0 */
    pthread_cond_t wake[PW_MAX_THREADS]; /* worker t waits here for busy[t] */
    pthread_t th[PW_MAX_THREADS];
    pw_task task[PW_MAX_THREADS];
    int busy[PW_MAX_THREADS];
    int started;                         /* workers 1..started are running */
    int pending;                         /* shares of the current call not yet done */
    int shutdown;
    int ready;                           /* condition variables initialised */
} pw_pool_t;

static pw_pool_t pw_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
/* Held by the one caller that dispatches to the pool. */
static pthread_mutex_t pw_pool_owner = PTHREAD_MUTEX_INITIALIZER;

static void* pw_worker_main(void* p) {
    int t = (int)(intptr_t)p;
    pw_pool_t* P = &pw_pool;
    pthread_mutex_lock(&P->lock);
    for (;;) {
        while (!P->busy[t] && !P->shutdown) pthread_cond_wait(&P->wake[t], &P->lock);
        if (P->busy[t]) {
            pw_task task = P->task[t];
            pthread_mutex_unlock(&P->lock);
            task.fn(task.arg);
            pthread_mutex_lock(&P->lock);
            P->busy[t] = 0;
            if (--P->pending == 0) pthread_cond_signal(&P->done);
        } else {
            break;                       /* shutdown and nothing left to run */
        }
    }
    pthread_mutex_unlock(&P->lock);
    return NULL;
}

/* atexit: wake and join every worker (a share still running finishes first). */
static void pw_pool_shutdown(void) {
    pw_pool_t* P = &pw_pool;
    int t, n;
    pthread_mutex_lock(&P->lock);
    P->shutdown = 1;
    n = P->started;
    for (t = 1; t <= n; t++) pthread_cond_signal(&P->wake[t]);
    pthread_mutex_unlock(&P->lock);
    for (t = 1; t <= n; t++) pthread_join(P->th[t], NULL);
    pthread_mutex_lock(&P->lock);
    P->started = 0;
    pthread_mutex_unlock(&P->lock);
}

/* In a forked child only the forking thread exists: forget the parent's workers. */
static void pw_pool_after_fork(void) {
    pw_pool_t* P = &pw_pool;
    int t;
    pthread_mutex_init(&P->lock, NULL);
    pthread_cond_init(&P->done, NULL);
    for (t = 0; t < PW_MAX_THREADS; t++) {
        pthread_cond_init(&P->wake[t], NULL);
        P->busy[t] = 0;
    }
    P->started = 0;
    P->pending = 0;
    pthread_mutex_init(&pw_pool_owner, NULL);
}

/* Start workers up to index n - 1 (with the pool lock held); returns how many run. */
static int pw_pool_grow(int n) {
    pw_pool_t* P = &pw_pool;
    sigset_t all, old;
    int t;
    if (!P->ready) {
        for (t = 0; t < PW_MAX_THREADS; t++) pthread_cond_init(&P->wake[t], NULL);
        pthread_atfork(NULL, NULL, pw_pool_after_fork);
        atexit(pw_pool_shutdown);
        P->ready = 1;
    }
    if (P->started >= n - 1) return P->started;
    /* workers block every signal: Python's handlers belong to the main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (t = P->started + 1; t < n; t++) {
        P->busy[t] = 0;
        if (pthread_create(&P->th[t], NULL, pw_worker_main, (void*)(intptr_t)t) != 0) break;
        P->started = t;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return P->started;
}

static void* pw_thread_main(void* p) {
    pw_task* t = (pw_task*)p;
    t->fn(t->arg);
    return NULL;
}

/* Threads started for one call: the pool is owned by another caller. */
static void pw_parallel_spawn(void (*fn)(void*), void** args, int n) {
    pthread_t th[PW_MAX_THREADS];
    pw_task tasks[PW_MAX_THREADS];
    int started[PW_MAX_THREADS] = {0};
    int t;
    for (t = 1; t < n; t++) {
        tasks[t].fn = fn;
        tasks[t].arg = args[t];
        started[t] = pthread_create(&th[t], NULL, pw_thread_main, &tasks[t]) == 0;
        if (started[t]) pw_stat_add(3, 1);
        else {
            pw_stat_add(4, 1);
            fn(args[t]);
        }
    }
    fn(args[0]);
    for (t = 1; t < n; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

/* Run fn(args[0..n-1]), each share on its own thread (the caller runs args[0]) and return
 * when all are done; n is clamped to [1, PW_MAX_THREADS], so args needs at most
 * PW_MAX_THREADS entries. Shares no thread can take run in the caller: never fails. */
static void pw_parallel(void (*fn)(void*), void** args, int n) {
    pw_pool_t* P = &pw_pool;
    long long seen;
    int t, m;
    n = pw_clamp_threads(n);
    if (n == 1) {
        fn(args[0]);
        return;
    }
    pw_stat_add(0, 1);
    seen = __atomic_load_n(&pw_stats[1], __ATOMIC_RELAXED);
    while (seen < n && !__atomic_compare_exchange_n(&pw_stats[1], &seen, (long long)n, 1,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    if (pthread_mutex_trylock(&pw_pool_owner) != 0) {
        pw_parallel_spawn(fn, args, n);
        return;
    }
    pthread_mutex_lock(&P->lock);
    if (P->shutdown) {
        pthread_mutex_unlock(&P->lock);
        pthread_mutex_unlock(&pw_pool_owner);
        pw_parallel_spawn(fn, args, n);
        return;
    }
    m = pw_pool_grow(n) + 1;             /* threads available, the caller included */
    if (m > n) m = n;
    P->pending = m - 1;
    for (t = 1; t < m; t++) {
        P->task[t].fn = fn;
        P->task[t].arg = args[t];
        P->busy[t] = 1;
        pthread_cond_signal(&P->wake[t]);
    }
    pthread_mutex_unlock(&P->lock);
    pw_stat_add(2, m - 1);
    fn(args[0]);
    for (t = m; t < n; t++) {            /* workers that could not be started */
        pw_stat_add(4, 1);
        fn(args[t]);
    }
    pthread_mutex_lock(&P->lock);
    while (P->pending > 0) pthread_cond_wait(&P->done, &P->lock);
    pthread_mutex_unlock(&P->lock);
    pthread_mutex_unlock(&pw_pool_owner);
}

/* ------------------------------------------------------------------ templates */

/* Bodies for scalar T, vector type V (VL lanes); NV, RB, RBW are compile-time constants
 * after inlining into the specialised functions below. */
#define PW_BODIES(T, V, VU, H, HU, VL, NAME)                                               \
/* NV full vectors of outputs and, with NH = 1, a half vector after them (outputs that    \
 * fill at most half a vector: 20 float32 outputs on AVX-512 take 16 + 8 lanes, not 32;  \
 * on CPUs that run 512-bit operations on 256-bit units the half costs half). */          \
PW_INLINE void NAME##_fwd(const T* X, int D, const T* WT, int NP, T* Z, int n1, int r0,    \
                          int r1, const int NV, const int NH, const int RB,               \
                          const int PFN) {                                                 \
    int i = r0, k, v, r;                                                                   \
    T tmp[8 * VL];                                                                         \
    for (; i + RB <= r1; i += RB) {                                                        \
        V acc[8][8];                                                                       \
        H hacc[8];                                                                         \
        const T* x = X + (size_t)i * D;                                                    \
        for (r = 0; r < RB; r++) {                                                         \
            for (v = 0; v < NV; v++) acc[r][v] = (V){0};                                   \
            if (NH) hacc[r] = (H){0};                                                      \
        }                                                                                  \
        for (k = 0; k < D; k++) {                                                          \
            const T* w = WT + (size_t)k * NP;                                              \
            T b[8];                                                                        \
            if (PFN && (k & (int)(64 / sizeof(T) - 1)) == 0)                               \
                for (r = 0; r < RB; r++) __builtin_prefetch(x + (size_t)(r + RB) * D + k, 0, 2); \
            for (r = 0; r < RB; r++) b[r] = x[(size_t)r * D + k];                          \
            for (v = 0; v < NV; v++) {                                                     \
                V wv = *(const VU*)(w + v * VL);                                           \
                for (r = 0; r < RB; r++) acc[r][v] += b[r] * wv;                           \
            }                                                                              \
            if (NH) {                                                                      \
                H wh = *(const HU*)(w + NV * VL);                                          \
                for (r = 0; r < RB; r++) hacc[r] += b[r] * wh;                             \
            }                                                                              \
        }                                                                                  \
        for (r = 0; r < RB; r++) {                                                         \
            for (v = 0; v < NV; v++) *(VU*)(tmp + v * VL) = acc[r][v];                     \
            if (NH) *(HU*)(tmp + NV * VL) = hacc[r];                                       \
            memcpy(Z + (size_t)(i + r) * n1, tmp, (size_t)n1 * sizeof(T));                 \
        }                                                                                  \
    }                                                                                      \
    for (; i < r1; i++) {                                                                  \
        V acc1[8];                                                                         \
        H hacc1 = (H){0};                                                                  \
        const T* x0 = X + (size_t)i * D;                                                   \
        for (v = 0; v < NV; v++) acc1[v] = (V){0};                                         \
        for (k = 0; k < D; k++) {                                                          \
            const T* w = WT + (size_t)k * NP;                                              \
            for (v = 0; v < NV; v++) acc1[v] += x0[k] * *(const VU*)(w + v * VL);          \
            if (NH) hacc1 += x0[k] * *(const HU*)(w + NV * VL);                            \
        }                                                                                  \
        for (v = 0; v < NV; v++) *(VU*)(tmp + v * VL) = acc1[v];                           \
        if (NH) *(HU*)(tmp + NV * VL) = hacc1;                                             \
        memcpy(Z + (size_t)i * n1, tmp, (size_t)n1 * sizeof(T));                           \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* NC output vectors from vector c0 on (at most 3), RB rows from x (RB * NC <= 12), the     \
 * NC weight vectors held in registers: per k, NC loads and RB broadcasts for RB * NC FMAs  \
 * (the AVX2 chunks of NAME##_fwd_chunks; same sums, same order as NAME##_fwd). PF: also   \
 * prefetch the next RB rows (the first chunk, which brings the rows in from memory). */   \
PW_INLINE void NAME##_fwdc(const T* x, int D, const T* WT, int NP, T* Z, int n1, int c0,   \
                           const int NC, const int RB, const int PF) {                    \
    V acc[12][3];                                                                          \
    T tmp[3 * VL];                                                                         \
    const T* w = WT + c0 * VL;                                                             \
    int k, r, v, m = n1 - c0 * VL < NC * VL ? n1 - c0 * VL : NC * VL;                      \
    for (r = 0; r < RB; r++)                                                               \
        for (v = 0; v < NC; v++) acc[r][v] = (V){0};                                       \
    for (k = 0; k < D; k++, w += NP) {                                                     \
        V wv[3];                                                                           \
        for (v = 0; v < NC; v++) wv[v] = *(const VU*)(w + v * VL);                         \
        if (PF && (k & (int)(64 / sizeof(T) - 1)) == 0)                                    \
            for (r = 0; r < RB; r++)                                                       \
                __builtin_prefetch(x + (size_t)(r + RB) * D + k, 0, 3);                    \
        for (r = 0; r < RB; r++) {                                                         \
            T b = x[(size_t)r * D + k];                                                    \
            for (v = 0; v < NC; v++) acc[r][v] += b * wv[v];                               \
        }                                                                                  \
    }                                                                                      \
    for (r = 0; r < RB; r++) {                                                             \
        for (v = 0; v < NC; v++) *(VU*)(tmp + v * VL) = acc[r][v];                         \
        memcpy(Z + (size_t)r * n1 + c0 * VL, tmp, (size_t)m * sizeof(T));                 \
    }                                                                                      \
}                                                                                          \
                                                                                           \
/* G[j0:j0+JB, k:k+VL] (G is n1 x D) += sum over R rows i of d_ij x_i[k:k+VL], for one   \
 * group of JB outputs and one vector of columns: the JB accumulators stay in registers    \
 * over the R rows (one load and store of G per R rows) and the rows are the inner loop,  \
 * so that the JB independent chains interleave (one output at a time, rows inner, left   \
 * the FMA units waiting on one chain's latency: 2-3x slower). PF > 0 prefetches each row  \
 * of X PF elements ahead. */                                                              \
PW_INLINE void NAME##_bwdv(const T* x, int D, const T* d, int n1, T* G, int k, int R,     \
                           int j0, const int JB, const int PF) {                          \
    int jj, r;                                                                             \
    V acc[32];                                                                             \
    /* unrolled in full: the accumulators must be registers (GCC peels only 16) */        \
    _Pragma("GCC unroll 32")                                                               \
    for (jj = 0; jj < JB; jj++) acc[jj] = *(const VU*)(G + (size_t)(j0 + jj) * D + k);    \
    for (r = 0; r < R; r++) {                                                              \
        const T* xr = x + (size_t)r * D + k;                                               \
        const T* dr = d + (size_t)r * n1 + j0;                                             \
        V xv = *(const VU*)xr;                                                             \
        if (PF > 0) __builtin_prefetch(xr + PF, 0, 3);                                     \
        _Pragma("GCC unroll 32")                                                           \
        for (jj = 0; jj < JB; jj++) acc[jj] += dr[jj] * xv;                                \
    }                                                                                      \
    _Pragma("GCC unroll 32")                                                               \
    for (jj = 0; jj < JB; jj++) *(VU*)(G + (size_t)(j0 + jj) * D + k) = acc[jj];          \
}                                                                                          \
                                                                                           \
/* G[j0:j0+JB, k:k+MC*VL] += sum over R rows i of d_ij x_i[k:k+MC*VL]: JB outputs (at     \
 * most 4) x MC vectors of columns (at most 3) of accumulators, per row MC loads of X and   \
 * JB broadcasts for JB * MC FMAs (the AVX2 gradient; NAME##_bwdv loads one vector and JB  \
 * broadcasts per JB FMAs). Same sums, same order (rows ascending from G's value). PF: the \
 * first group of a chunk prefetches each row PW_GPF256 elements ahead into L1 and the same \
 * columns of the next chunk's rows into L2. */                                            \
PW_INLINE void NAME##_bwdm(const T* x, int D, const T* d, int n1, T* G, int k, int R,     \
                           int j0, const int JB, const int MC, const int PF) {            \
    int jj, m, r;                                                                          \
    V acc[4][3];                                                                           \
    for (jj = 0; jj < JB; jj++)                                                            \
        for (m = 0; m < MC; m++)                                                           \
            acc[jj][m] = *(const VU*)(G + (size_t)(j0 + jj) * D + k + m * VL);             \
    for (r = 0; r < R; r++) {                                                              \
        const T* xr = x + (size_t)r * D + k;                                               \
        const T* dr = d + (size_t)r * n1 + j0;                                             \
        V xv[3];                                                                           \
        for (m = 0; m < MC; m++) xv[m] = *(const VU*)(xr + m * VL);                        \
        if (PF) {                                                                          \
            __builtin_prefetch(xr + PW_GPF256, 0, 3);                                      \
            __builtin_prefetch(xr + PW_GPF256 + MC * VL - 1, 0, 3);                        \
            __builtin_prefetch(xr + (size_t)R * D, 0, 2);                                  \
            __builtin_prefetch(xr + (size_t)R * D + MC * VL - 1, 0, 2);                    \
        }                                                                                  \
        for (jj = 0; jj < JB; jj++) {                                                      \
            T b = dr[jj];                                                                  \
            for (m = 0; m < MC; m++) acc[jj][m] += b * xv[m];                              \
        }                                                                                  \
    }                                                                                      \
    for (jj = 0; jj < JB; jj++)                                                            \
        for (m = 0; m < MC; m++)                                                           \
            *(VU*)(G + (size_t)(j0 + jj) * D + k + m * VL) = acc[jj][m];                   \
}                                                                                          \
                                                                                           \
/* The columns k0:k1 beyond the last full vector, one element at a time (same order). */  \
PW_INLINE void NAME##_bwdt(const T* x, int D, const T* d, int n1, T* G, int k0, int k1,   \
                           int R) {                                                        \
    int k, j, r;                                                                           \
    for (k = k0; k < k1; k++)                                                              \
        for (j = 0; j < n1; j++) {                                                         \
            T a = G[(size_t)j * D + k];                                                    \
            for (r = 0; r < R; r++) a += d[(size_t)r * n1 + j] * x[(size_t)r * D + k];     \
            G[(size_t)j * D + k] = a;                                                      \
        }                                                                                  \
}

/* case w: one call of the group kernel specialised for w outputs (w <= 24). */
#define PW_BWD_CASE(F, w, ...) case w: F(__VA_ARGS__, w, PW_PF); break;
#define PW_BWD_CASES(F, x, D, d, n1, G, k, R, j0)                                          \
    PW_BWD_CASE(F, 1, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 2, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 3, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 4, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 5, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 6, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 7, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 8, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 9, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 10, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 11, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 12, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 13, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 14, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 15, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 16, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 17, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 18, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 19, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 20, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 21, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 22, x, D, d, n1, G, k, R, j0) \
    PW_BWD_CASE(F, 23, x, D, d, n1, G, k, R, j0) PW_BWD_CASE(F, 24, x, D, d, n1, G, k, R, j0) \
    default: break;

/* The gradient's blocks (benchmarks/kernel_bench.c takes -D overrides to tune them). Rows
 * per chunk: 64 took CIFAR-shaped (3072-column) gradients from 2.5x to 1.3x the forward
 * kernel's time (16: G's loads and stores from L2 dominated; 128: no better, and slower on
 * AVX2). Prefetch distance in elements: 64 (32-128 within noise, none 10-25 % slower on
 * 784 columns). Column blocks: a thread's share of G at most L2 / PW_KC_DIV. Measured on
 * AMD Zen 4 (docs/performance.md). */
#ifndef PW_RBW
#define PW_RBW 64
#endif
#ifndef PW_PF
#define PW_PF 64
#endif
#ifndef PW_KC_DIV
#define PW_KC_DIV 1
#endif
/* Whether the forward kernel prefetches into L2, one line per row of X at a time, the next
 * register block's rows at the columns it is reading (1) or not (0), per class. AVX-512, one
 * thread, AMD Zen 4, X from memory, 3 alternating runs: MNIST-shaped 41-44 against 45-51 ms
 * (float64), 22-27 against 27-31 (float32); CIFAR-shaped (8 rows ahead: 196 KiB in float64)
 * unchanged, where a prefetch into L1 was 1.1-1.4 x slower. A prefetch a fixed distance
 * ahead in each row had changed nothing. AVX2 runs the chunks of pw_X256_fwd_chunks (4 rows
 * ahead, into L1), and this kernel only for the last rows. */
#ifndef PW_FPN512
#define PW_FPN512 1
#endif
#ifndef PW_FPN256
#define PW_FPN256 0
#endif

/* One forward specialisation: NV vectors (and NH half vectors) per row of outputs, RB rows
 * per block (as many as the accumulators, RB x (NV + NH), leave registers for). */
#define PW_SPECIAL(T, NAME, ATTR, NV, NH, RB, PFN)                                         \
ATTR static void NAME##_fwd##NV##_##NH(const T* X, int D, const T* WT, int NP, T* Z,       \
                                       int n1, int r0, int r1)                             \
    { NAME##_fwd(X, D, WT, NP, Z, n1, r0, r1, NV, NH, RB, PFN); }

#define PW_ISA(T, SUF, ISA, VB, ATTR, RB1, RB2, RB3, RB4, RB5, RB6, RB7, RB8, RBW, JBM, PFN) \
typedef T pw_v_##SUF##ISA __attribute__((vector_size(VB)));                                \
typedef T pw_vu_##SUF##ISA __attribute__((vector_size(VB), aligned(sizeof(T))));           \
typedef T pw_h_##SUF##ISA __attribute__((vector_size(VB / 2)));                            \
typedef T pw_hu_##SUF##ISA __attribute__((vector_size(VB / 2), aligned(sizeof(T))));       \
PW_BODIES(T, pw_v_##SUF##ISA, pw_vu_##SUF##ISA, pw_h_##SUF##ISA, pw_hu_##SUF##ISA,         \
          (int)(VB / sizeof(T)), pw_##SUF##ISA)                                            \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 0, 1, RB1, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 1, 0, RB1, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 1, 1, RB2, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 2, 0, RB2, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 2, 1, RB3, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 3, 0, RB3, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 3, 1, RB4, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 4, 0, RB4, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 4, 1, RB5, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 5, 0, RB5, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 5, 1, RB6, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 6, 0, RB6, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 6, 1, RB7, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 7, 0, RB7, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 7, 1, RB8, PFN)                                         \
PW_SPECIAL(T, pw_##SUF##ISA, ATTR, 8, 0, RB8, PFN)                                         \
static void pw_##SUF##ISA##_fwd_any(const T* X, int D, const T* WT, int NP, T* Z, int n1,  \
                                    int r0, int r1) {                                      \
    /* only the lanes that hold outputs: full vectors, then a half vector when the rest   \
     * fits in one; the padding of NP beyond them is not computed */                       \
    const int VL = (int)(VB / sizeof(T));                                                  \
    int nv = n1 / VL, rest = n1 % VL, nh = rest > 0 && 2 * rest <= VL;                     \
    if (rest > 0 && !nh) nv++;                                                             \
    switch (2 * nv + nh) {                                                                 \
    case 1: pw_##SUF##ISA##_fwd0_1(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 2: pw_##SUF##ISA##_fwd1_0(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 3: pw_##SUF##ISA##_fwd1_1(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 4: pw_##SUF##ISA##_fwd2_0(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 5: pw_##SUF##ISA##_fwd2_1(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 6: pw_##SUF##ISA##_fwd3_0(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 7: pw_##SUF##ISA##_fwd3_1(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 8: pw_##SUF##ISA##_fwd4_0(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 9: pw_##SUF##ISA##_fwd4_1(X, D, WT, NP, Z, n1, r0, r1); break;                    \
    case 10: pw_##SUF##ISA##_fwd5_0(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    case 11: pw_##SUF##ISA##_fwd5_1(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    case 12: pw_##SUF##ISA##_fwd6_0(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    case 13: pw_##SUF##ISA##_fwd6_1(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    case 14: pw_##SUF##ISA##_fwd7_0(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    case 15: pw_##SUF##ISA##_fwd7_1(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    default: pw_##SUF##ISA##_fwd8_0(X, D, WT, NP, Z, n1, r0, r1); break;                   \
    }                                                                                      \
}                                                                                          \
ATTR static void pw_##SUF##ISA##_bwd_any(const T* X, int N, int D, const T* Dl, int n1,    \
                                         T* G, int k0, int k1) {                           \
    /* outputs in ng groups of at most JBM (accumulators that fit the registers), rows in  \
     * chunks of RBW, columns one vector at a time inside a chunk (the chunk's X lines     \
     * stay in L1 while every group uses them) */                                          \
    const int VL = (int)(VB / sizeof(T));                                                  \
    int ng = (n1 + JBM - 1) / JBM, jb = (n1 + ng - 1) / ng;                                \
    int i, k, g, R, kb, ke;                                                                \
    long kc = pw_cache_size(2) / PW_KC_DIV / ((long)n1 * (long)sizeof(T)) / VL * VL;       \
    if (kc < VL) kc = VL;                                                                  \
    for (kb = k0; kb < k1; kb = ke) {                                                      \
        ke = (long)(k1 - kb) <= kc ? k1 : kb + (int)kc;                                    \
        for (i = 0; i < N; i += RBW) {                                                     \
            const T* x = X + (size_t)i * D;                                                \
            const T* d = Dl + (size_t)i * n1;                                              \
            R = N - i < RBW ? N - i : RBW;                                                 \
            for (k = kb; k + VL <= ke; k += VL)                                            \
                for (g = 0; g < ng; g++) {                                                 \
                    int j0 = g * jb, w = n1 - j0 < jb ? n1 - j0 : jb;                      \
                    switch (w) {                                                           \
                    PW_BWD_CASES(pw_##SUF##ISA##_bwdv, x, D, d, n1, G, k, R, j0)           \
                    }                                                                      \
                }                                                                          \
            if (k < ke) pw_##SUF##ISA##_bwdt(x, D, d, n1, G, k, ke, R);                   \
        }                                                                                  \
    }                                                                                      \
}

/* The AVX2 forward kernel: rows in blocks of 12, the outputs' vectors in chunks of at most
 * 3 (5 = 3 + 2, 8 = 3 + 3 + 2), each chunk over the block's rows in register blocks of
 * 12 / NC rows with its weight vectors in registers: 12 accumulators, NC weights and a
 * broadcast fill the 16 registers. One block of 2 rows x 5 vectors (10 accumulators, the
 * weights as memory operands) loaded 12 values per 10 FMAs and re-read all of WT from L2
 * every 2 rows; 4 rows x 3 vectors load 7 per 12 and every 4 rows (16 -> 23 G
 * multiply-adds per second with X in cache, float64, 20 outputs, AMD Zen 4). The first
 * chunk brings each block in from memory and prefetches the next register block's rows;
 * the later chunks find the rows in cache. Rows beyond the last block of 12 go through
 * pw_X256_fwd_any (the same sums: every output is sum_k x_ik WT[k, j] in k order). */
#define PW_FWD_CHUNKS(T, SUF)                                                              \
PW_AVX2 static void pw_##SUF##256_fwd_chunks(const T* X, int D, const T* WT, int NP, T* Z, \
                                             int n1, int r0, int r1) {                     \
    const int VL = (int)(32 / sizeof(T));                                                  \
    int nv = (n1 + VL - 1) / VL, i = r0, c, nc, r;                                         \
    for (; i + 12 <= r1; i += 12) {                                                        \
        const T* x = X + (size_t)i * D;                                                    \
        T* z = Z + (size_t)i * n1;                                                         \
        for (c = 0; c < nv; c += nc) {                                                     \
            nc = nv - c == 4 ? 2 : (nv - c >= 3 ? 3 : nv - c);                             \
            if (nc == 3 && c == 0)                                                         \
                for (r = 0; r < 12; r += 4)                                                \
                    pw_##SUF##256_fwdc(x + (size_t)r * D, D, WT, NP, z + (size_t)r * n1, n1, c, 3, 4, 1); \
            else if (nc == 3)                                                              \
                for (r = 0; r < 12; r += 4)                                                \
                    pw_##SUF##256_fwdc(x + (size_t)r * D, D, WT, NP, z + (size_t)r * n1, n1, c, 3, 4, 0); \
            else if (nc == 2 && c == 0)                                                    \
                for (r = 0; r < 12; r += 6)                                                \
                    pw_##SUF##256_fwdc(x + (size_t)r * D, D, WT, NP, z + (size_t)r * n1, n1, c, 2, 6, 1); \
            else if (nc == 2)                                                              \
                for (r = 0; r < 12; r += 6)                                                \
                    pw_##SUF##256_fwdc(x + (size_t)r * D, D, WT, NP, z + (size_t)r * n1, n1, c, 2, 6, 0); \
            else                                                                           \
                pw_##SUF##256_fwdc(x, D, WT, NP, z, n1, c, 1, 12, 1);                      \
        }                                                                                  \
    }                                                                                      \
    if (i < r1) pw_##SUF##256_fwd_any(X, D, WT, NP, Z, n1, i, r1);                         \
}

/* The AVX2 gradient for X in cache: as pw_X_bwd_any, but the columns of a chunk of
 * PW_RBW256 rows in steps of 3 vectors and the outputs in groups of at most 4 (12
 * accumulators, 3 vectors of X and a broadcast fill the 16 registers: 7 loads per 12 FMAs,
 * against 11 per 10); the columns beyond the last step of 3 vectors go through
 * pw_X256_bwd_any. pw_bwd_job takes it when the thread's X is at most 2 L2s (the fused
 * pass's blocks), where it took 0.80-0.86 x pw_X256_bwd_any's time (blocks of 250
 * MNIST-shaped or 64 CIFAR-shaped rows, 20 outputs, AMD Zen 4, POSWISE_ISA=avx2). From
 * memory it was not better on MNIST-shaped data (60-72 against 54 ms per product, float64;
 * 16- or 32-row chunks: 45-51 on MNIST-shaped data but 150-215 against 127 on
 * CIFAR-shaped), so larger X keeps pw_X256_bwd_any. */
#ifndef PW_RBW256
#define PW_RBW256 64
#endif
#ifndef PW_GPF256
#define PW_GPF256 32
#endif
/* case w (1-4 outputs) of the AVX2 gradient's group kernel, 3 vectors of columns; PF: the
 * first group of a chunk, which prefetches */
#define PW_BWDM_CASES(F, w, PF, ...)                                                       \
    switch (w) {                                                                           \
    case 1: F(__VA_ARGS__, 1, 3, PF); break;                                               \
    case 2: F(__VA_ARGS__, 2, 3, PF); break;                                               \
    case 3: F(__VA_ARGS__, 3, 3, PF); break;                                               \
    default: F(__VA_ARGS__, 4, 3, PF); break;                                              \
    }
#define PW_BWD_CHUNKS(T, SUF)                                                              \
PW_AVX2 static void pw_##SUF##256_bwd_chunks(const T* X, int N, int D, const T* Dl, int n1, \
                                             T* G, int k0, int k1) {                       \
    const int S = (int)(96 / sizeof(T));              /* 3 vectors of columns */           \
    int i, k, R, kb, ke, j0, w, k3 = k0 + (k1 - k0) / S * S;                               \
    long kc = pw_cache_size(2) / PW_KC_DIV / ((long)n1 * (long)sizeof(T)) / S * S;         \
    if (kc < S) kc = S;                                                                    \
    for (kb = k0; kb < k3; kb = ke) {                                                      \
        ke = (long)(k3 - kb) <= kc ? k3 : kb + (int)kc;                                    \
        for (i = 0; i < N; i += PW_RBW256) {                                               \
            const T* x = X + (size_t)i * D;                                                \
            const T* d = Dl + (size_t)i * n1;                                              \
            R = N - i < PW_RBW256 ? N - i : PW_RBW256;                                     \
            for (k = kb; k < ke; k += S)                                                   \
                for (j0 = 0; j0 < n1; j0 += 4) {                                           \
                    w = n1 - j0 < 4 ? n1 - j0 : 4;                                         \
                    if (j0 == 0) { PW_BWDM_CASES(pw_##SUF##256_bwdm, w, 1, x, D, d, n1, G, k, R, j0) } \
                    else { PW_BWDM_CASES(pw_##SUF##256_bwdm, w, 0, x, D, d, n1, G, k, R, j0) }    \
                }                                                                          \
        }                                                                                  \
    }                                                                                      \
    if (k3 < k1) pw_##SUF##256_bwd_any(X, N, D, Dl, n1, G, k3, k1);                        \
}

/* Register budgets, RB rows x NV vectors of accumulators plus NV weight vectors and a
 * broadcast: AVX-512 has 32 vector registers, AVX2 16. RBW rows of X stay in registers in
 * the backward kernel beside one accumulator. */
#define PW_TYPE(T, SUF)                                                                    \
PW_ISA(T, SUF, 512, 64, PW_AVX512, 8, 8, 8, 4, 4, 4, 2, 2, PW_RBW, 24, PW_FPN512)   \
PW_ISA(T, SUF, 256, 32, PW_AVX2, 8, 4, 3, 2, 2, 2, 1, 1, PW_RBW, 12, PW_FPN256)     \
PW_FWD_CHUNKS(T, SUF)                                                                      \
PW_BWD_CHUNKS(T, SUF)                                                                      \
                                                                                           \
typedef struct {                                                                           \
    const T* X; const T* WT; const T* Dl; T* Z; T* G;                                      \
    int N, D, NP, n1, lo, hi;                                                              \
} pw_job_##SUF;                                                                            \
                                                                                           \
static void pw_fwd_job_##SUF(void* p) {                                                    \
    pw_job_##SUF* j = (pw_job_##SUF*)p;                                                    \
    if (pw_isa() == 2) pw_##SUF##512_fwd_any(j->X, j->D, j->WT, j->NP, j->Z, j->n1, j->lo, j->hi); \
    else pw_##SUF##256_fwd_chunks(j->X, j->D, j->WT, j->NP, j->Z, j->n1, j->lo, j->hi);    \
}                                                                                          \
                                                                                           \
static void pw_bwd_job_##SUF(void* p) {                                                    \
    pw_job_##SUF* j = (pw_job_##SUF*)p;                                                    \
    if (pw_isa() == 2) pw_##SUF##512_bwd_any(j->X, j->N, j->D, j->Dl, j->n1, j->G, j->lo, j->hi); \
    else if ((long long)j->N * j->D * (long long)sizeof(T) <= 2LL * pw_cache_size(2))      \
        pw_##SUF##256_bwd_chunks(j->X, j->N, j->D, j->Dl, j->n1, j->G, j->lo, j->hi);      \
    else pw_##SUF##256_bwd_any(j->X, j->N, j->D, j->Dl, j->n1, j->G, j->lo, j->hi);        \
}                                                                                          \
                                                                                           \
/* Z (N x n1) = X (N x D) WT[:, :n1]; rows split over up to nthreads (each thread at     \
 * least PW_THREAD_GRAIN elements of X and 8 rows). */                                     \
static void pw_first_forward_##SUF(const T* X, int N, int D, const T* WT, int NP, T* Z,   \
                                   int n1, int nthreads) {                                 \
    pw_job_##SUF jobs[PW_MAX_THREADS];                                                     \
    void* args[PW_MAX_THREADS];                                                            \
    int t, n = pw_clamp_threads(nthreads);                                                 \
    long long cap = (long long)N * D / PW_THREAD_GRAIN;                                    \
    if (cap > N / 8) cap = N / 8;                                                          \
    if (n > cap) n = cap < 1 ? 1 : (int)cap;                                               \
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
 * split over up to nthreads (each at least PW_THREAD_GRAIN elements and 32 columns). */  \
static void pw_first_gradient_##SUF(const T* X, int N, int D, const T* Dl, int n1, T* G,  \
                                    int accumulate, int nthreads) {                        \
    pw_job_##SUF jobs[PW_MAX_THREADS];                                                     \
    void* args[PW_MAX_THREADS];                                                            \
    int t, n = pw_clamp_threads(nthreads);                                                 \
    long long cap = (long long)N * D / PW_THREAD_GRAIN;                                    \
    if (cap > D / 32) cap = D / 32;                                                        \
    if (n > cap) n = cap < 1 ? 1 : (int)cap;                                               \
    if (!accumulate) memset(G, 0, (size_t)n1 * D * sizeof(T));                             \
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

/* Entry point for tests (ctypes): with grad = 0, Z (N x n1) = X (N x D) WT[:, :n1] (B is
 * WT, D x NP); with grad = 1, G (n1 x D) = B^T X (B is Dl, N x n1; NP unused). float64
 * when dbl, else float32; nthreads as the engine passes it. */
PW_EXPORT void pw_first_x(int dbl, int grad, const void* X, int N, int D, const void* B,
                          int NP, int n1, void* out, int nthreads) {
    if (dbl && grad)
        pw_first_gradient_d((const double*)X, N, D, (const double*)B, n1, (double*)out, 0,
                            nthreads);
    else if (dbl)
        pw_first_forward_d((const double*)X, N, D, (const double*)B, NP, (double*)out, n1,
                           nthreads);
    else if (grad)
        pw_first_gradient_s((const float*)X, N, D, (const float*)B, n1, (float*)out, 0,
                            nthreads);
    else
        pw_first_forward_s((const float*)X, N, D, (const float*)B, NP, (float*)out, n1,
                           nthreads);
}

#endif
