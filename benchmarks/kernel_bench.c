/*
 * Kernel-level timer of _direct.h, compiled against a given copy of the header (see
 * benchmarks/kernel_ab.py, which builds it for two headers and alternates them):
 *
 *   kernel_bench prod N D n1 d|s THREADS REPS   first-layer forward and gradient products
 *   kernel_bench pool N REPS                    one empty pw_parallel call with N threads
 *
 * Prints one JSON line; times are the minimum over REPS (robust to other processes on a
 * shared machine). The data are deterministic; "check" lets two headers' results be
 * compared (the kernels must agree to the last bit).
 */
#include "_direct.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* CPU time of the calling thread: with one thread it excludes the time other processes
 * hold the core (the robust figure on a shared machine); wall time is reported too. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void nop(void* p) { (void)p; }

#define PROD(T, SUF)                                                                        \
    do {                                                                                    \
        int NP = (n1 * (int)sizeof(T) + PW_VEC_BYTES - 1) / PW_VEC_BYTES * PW_VEC_BYTES     \
                 / (int)sizeof(T);                                                          \
        T* X = malloc((size_t)N * D * sizeof(T));                                          \
        T* WT = calloc((size_t)D * NP, sizeof(T));                                          \
        T* Z = malloc((size_t)N * n1 * sizeof(T));                                         \
        T* G = malloc((size_t)n1 * D * sizeof(T));                                         \
        double bf = 1e30, bb = 1e30, cf = 1e30, cb = 1e30, check = 0;                       \
        size_t i;                                                                           \
        int r, j;                                                                           \
        for (i = 0; i < (size_t)N * D; i++) X[i] = (T)((i * 2654435761u) % 1000) / 1000 - (T)0.5; \
        for (i = 0; i < (size_t)D; i++)                                                     \
            for (j = 0; j < n1; j++) WT[i * NP + j] = (T)(((i * 31 + j) * 40503u) % 1000) / 1000 - (T)0.5; \
        for (r = 0; r < reps; r++) {                                                        \
            double t0 = now(), c0 = cpu_now(), t1, t2, c1, c2;                              \
            pw_first_forward_##SUF(X, N, D, WT, NP, Z, n1, threads);                        \
            t1 = now(); c1 = cpu_now();                                                     \
            pw_first_gradient_##SUF(X, N, D, Z, n1, G, 0, threads);                         \
            t2 = now(); c2 = cpu_now();                                                     \
            if (t1 - t0 < bf) bf = t1 - t0;                                                 \
            if (t2 - t1 < bb) bb = t2 - t1;                                                 \
            if (c1 - c0 < cf) cf = c1 - c0;                                                 \
            if (c2 - c1 < cb) cb = c2 - c1;                                                 \
        }                                                                                   \
        for (i = 0; i < (size_t)n1 * D; i++) check += G[i] * (double)(i % 7 + 1);           \
        for (i = 0; i < (size_t)N * n1; i++) check += Z[i] * (double)(i % 5 + 1);           \
        printf("{\"fwd_s\": %.9g, \"grad_s\": %.9g, \"fwd_cpu_s\": %.9g, \"grad_cpu_s\": %.9g, " \
               "\"check\": %.17g}\n", bf, bb, cf, cb, check);                                 \
        free(X); free(WT); free(Z); free(G);                                                \
    } while (0)

int main(int argc, char** argv) {
    (void)pw_direct_supported;
    if (argc >= 4 && strcmp(argv[1], "pool") == 0) {
        int n = atoi(argv[2]), reps = atoi(argv[3]), r, rr;
        void* args[PW_MAX_THREADS] = {0};
        double best = 1e30;
        pw_parallel(nop, args, n);                      /* start the workers (if any) */
        for (rr = 0; rr < 5; rr++) {
            double t0 = now(), t;
            for (r = 0; r < reps; r++) pw_parallel(nop, args, n);
            t = (now() - t0) / reps;
            if (t < best) best = t;
        }
        printf("{\"call_s\": %.9g}\n", best);
        return 0;
    }
    if (argc >= 8 && strcmp(argv[1], "prod") == 0) {
        int N = atoi(argv[2]), D = atoi(argv[3]), n1 = atoi(argv[4]);
        int threads = atoi(argv[6]), reps = atoi(argv[7]);
        if (argv[5][0] == 'd') PROD(double, d);
        else PROD(float, s);
        return 0;
    }
    fprintf(stderr, "usage: kernel_bench prod N D n1 d|s THREADS REPS | pool N REPS\n");
    return 2;
}
