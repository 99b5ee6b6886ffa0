/*
 * Update rules of poswise: the only code that writes a parameter from its gradient
 * (besides the fused plain-SGD fast path of _core.pyx, tested equal to this one).
 *
 * One call updates one parameter (a weight matrix or a bias vector) of `rows` x `cols`
 * elements, each array addressed through its own strides so that the same kernel serves
 * W[l] (row-major), the direct first layer's transposed, padded copy WT and gradients in
 * either layout. State arrays (momentum buffers, moments) have the strides `srs`, `scs`.
 * Arithmetic is in double whatever the storage type. The formulas are torch.optim's
 * (see poswise/updates.py for the same formulas in numpy, the specification):
 *
 *   SGD:     g += wd p;  v = mu v + g;  step = nesterov ? g + mu v : v (g if mu == 0);
 *            p -= lr step
 *   Adam:    g += wd p;  m += (1-b1)(g - m);  s = b2 s + (1-b2) g^2;
 *            p -= (lr / (1-b1^t)) m / (sqrt(s) / sqrt(1-b2^t) + eps)
 *   AdamW:   p *= 1 - lr wd; then Adam without the g += wd p
 *   RMSprop: g += wd p;  s = alpha s + (1-alpha) g^2;  d = g / (sqrt(s) + eps);
 *            b = mu b + d, p -= lr b  (mu > 0)   or   p -= lr d
 *
 * t is the parameter's own step count, this step included (1 on its first update).
 * The codes are those of poswise.updates.RULE_CODES (checked at import by _core.pyx).
 */
#ifndef POSWISE_RULES_H
#define POSWISE_RULES_H

#include <math.h>
#include <stddef.h>

#include "_direct.h"      /* the thread pool (pw_parallel) and its limits */

#define PW_RULE_SGD 0
#define PW_RULE_ADAM 1
#define PW_RULE_ADAMW 2
#define PW_RULE_RMSPROP 3

typedef struct {
    int code;
    int nesterov;
    double momentum;
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    double alpha;
    int decay_biases;   /* 0: the caller applies biases with weight_decay 0 */
} pw_rule;

/* Number of state arrays per parameter. */
static inline int pw_rule_nstate(const pw_rule* r) {
    switch (r->code) {
    case PW_RULE_SGD: return r->momentum > 0 ? 1 : 0;
    case PW_RULE_ADAM: case PW_RULE_ADAMW: return 2;
    default: return r->momentum > 0 ? 2 : 1;
    }
}

/* One element of each rule (p: the parameter, g: its gradient, a/b: its state). The
 * loops below only choose the addresses; has_mu and nest are constants at each call, so
 * that the contiguous loops are free of branches (and vectorise). */
#define PW_RULE_ELEMS(T, SUF)                                                               \
static inline __attribute__((always_inline)) void pw_sgd_##SUF(                           \
        T* p, double g, T* v, double lr, double wd, double mu, int has_mu, int nest) {     \
    double gi = g + wd * (double)*p, step = gi;                                             \
    if (has_mu) {                                                                           \
        double vi = mu * (double)*v + gi;                                                   \
        *v = (T)vi;                                                                         \
        step = nest ? gi + mu * vi : vi;                                                    \
    }                                                                                       \
    *p = (T)((double)*p - lr * step);                                                       \
}                                                                                           \
static inline __attribute__((always_inline)) void pw_adam_##SUF(                          \
        T* p, double g, T* m, T* s, double l2, double decay, double b1, double b2,         \
        double step_size, double bc2_sqrt, double eps) {                                    \
    double pi = (double)*p, gi = g + l2 * pi, mi, si;                                       \
    pi *= decay;                          /* 1.0 for Adam: exact */                         \
    mi = (double)*m + (gi - (double)*m) * (1.0 - b1);                                       \
    si = b2 * (double)*s + (1.0 - b2) * gi * gi;                                            \
    *m = (T)mi;                                                                             \
    *s = (T)si;                                                                             \
    *p = (T)(pi - step_size * (mi / (sqrt(si) / bc2_sqrt + eps)));                          \
}                                                                                           \
static inline __attribute__((always_inline)) void pw_rmsprop_##SUF(                       \
        T* p, double g, T* s, T* b, double lr, double wd, double a, double mu, double eps, \
        int has_mu) {                                                                       \
    double gi = g + wd * (double)*p, si, d;                                                 \
    si = a * (double)*s + (1.0 - a) * gi * gi;                                              \
    *s = (T)si;                                                                             \
    d = gi / (sqrt(si) + eps);                                                              \
    if (has_mu) {                                                                           \
        d = mu * (double)*b + d;                                                            \
        *b = (T)d;                                                                          \
    }                                                                                       \
    *p = (T)((double)*p - lr * d);                                                          \
}

/* The loops: FLAT walks n contiguous elements (k), STRIDED a rows x cols grid (i, j). */
#define PW_AT_FLAT(a, k) ((a) + (k))
#define PW_RULE_LOOPS(T, SUF, NAME, ARGS, P, G, S1, S2, LOOP)                               \
static void NAME ARGS {                                                                     \
    const double wd = r->weight_decay, mu = r->momentum;                                    \
    switch (r->code) {                                                                      \
    case PW_RULE_SGD:                                                                       \
        if (mu > 0 && r->nesterov)                                                          \
            LOOP(pw_sgd_##SUF(P, (double)G, S1, lr, wd, mu, 1, 1))                          \
        else if (mu > 0)                                                                    \
            LOOP(pw_sgd_##SUF(P, (double)G, S1, lr, wd, mu, 1, 0))                          \
        else                                                                                \
            LOOP(pw_sgd_##SUF(P, (double)G, (T*)0, lr, wd, 0.0, 0, 0))                      \
        break;                                                                              \
    case PW_RULE_ADAM:                                                                      \
    case PW_RULE_ADAMW: {                                                                   \
        const double b1 = r->beta1, b2 = r->beta2, eps = r->eps;                            \
        const double step_size = lr / (1.0 - pow(b1, (double)t));                           \
        const double bc2_sqrt = sqrt(1.0 - pow(b2, (double)t));                             \
        const double decay = r->code == PW_RULE_ADAMW ? 1.0 - lr * wd : 1.0;                \
        const double l2 = r->code == PW_RULE_ADAM ? wd : 0.0;                               \
        LOOP(pw_adam_##SUF(P, (double)G, S1, S2, l2, decay, b1, b2, step_size, bc2_sqrt,   \
                           eps))                                                            \
        break;                                                                              \
    }                                                                                       \
    default: { /* RMSprop */                                                                \
        const double a = r->alpha, eps = r->eps;                                            \
        if (mu > 0)                                                                         \
            LOOP(pw_rmsprop_##SUF(P, (double)G, S1, S2, lr, wd, a, mu, eps, 1))             \
        else                                                                                \
            LOOP(pw_rmsprop_##SUF(P, (double)G, S1, (T*)0, lr, wd, a, 0.0, eps, 0))         \
        break;                                                                              \
    }                                                                                       \
    }                                                                                       \
}

#define PW_LOOP_FLAT(BODY) { ptrdiff_t k; for (k = 0; k < n; k++) { BODY; } }
#define PW_LOOP_GRID(BODY) { int i, j; for (i = 0; i < rows; i++)                           \
                                           for (j = 0; j < cols; j++) { BODY; } }

/* Whether parameter, gradient and state are one contiguous run (row-major, or one row). */
#define PW_RULE_CONTIGUOUS                                                                  \
    (pcs == 1 && gcs == 1 && scs == 1 &&                                                    \
     (rows == 1 || (prs == cols && grs == cols && srs == cols)))

#define PW_RULE_APPLY(T, SUF)                                                               \
PW_RULE_ELEMS(T, SUF)                                                                       \
PW_RULE_LOOPS(T, SUF, pw_rule_flat_##SUF,                                                   \
              (const pw_rule* r, long long t, double lr, ptrdiff_t n, T* restrict p,        \
               const T* restrict g, T* restrict s1, T* restrict s2),                        \
              p + k, g[k], s1 + k, s2 + k, PW_LOOP_FLAT)                                    \
PW_RULE_LOOPS(T, SUF, pw_rule_grid_##SUF,                                                   \
              (const pw_rule* r, long long t, double lr, T* p, int rows, int cols,          \
               ptrdiff_t prs, ptrdiff_t pcs, const T* g, ptrdiff_t grs, ptrdiff_t gcs,      \
               T* s1, T* s2, ptrdiff_t srs, ptrdiff_t scs),                                 \
              p + i * prs + j * pcs, g[i * grs + j * gcs], s1 + i * srs + j * scs,          \
              s2 + i * srs + j * scs, PW_LOOP_GRID)                                         \
/* Contiguous arrays (all row-major, or one row) take the flat loop: the same element     \
 * functions, so the same bits. */                                                          \
static void pw_rule_apply_##SUF(const pw_rule* r, long long t, double lr, T* p, int rows,   \
                                int cols, ptrdiff_t prs, ptrdiff_t pcs, const T* g,         \
                                ptrdiff_t grs, ptrdiff_t gcs, T* s1, T* s2, ptrdiff_t srs,  \
                                ptrdiff_t scs) {                                            \
    if (PW_RULE_CONTIGUOUS)                                                                 \
        pw_rule_flat_##SUF(r, t, lr, (ptrdiff_t)rows * cols, p, g, s1, s2);                 \
    else                                                                                    \
        pw_rule_grid_##SUF(r, t, lr, p, rows, cols, prs, pcs, g, grs, gcs, s1, s2, srs,     \
                           scs);                                                            \
}

/* The same, tiled and threaded. Columns are taken in tiles of PW_RULE_TILE_BYTES of the
 * parameter (at least 8 columns), all rows of a tile at once: for the direct layer's
 * transposed copy (column stride NP) a tile's lines of WT stay in L1 while its rows are
 * updated, and the gradient and state rows are read contiguously. Contiguous arrays are
 * one row of rows * cols elements. Threads split the columns by whole tiles (each at least
 * PW_THREAD_GRAIN elements); every element sees the same arithmetic whatever the split,
 * so the result does not depend on the thread count. */
#define PW_RULE_TILE_BYTES 16384
#define PW_RULE_PARALLEL(T, SUF)                                                            \
typedef struct {                                                                            \
    const pw_rule* r; long long t; double lr; T* p; int rows, lo, hi, tile;                 \
    ptrdiff_t prs, pcs; const T* g; ptrdiff_t grs, gcs; T* s1; T* s2; ptrdiff_t srs, scs;   \
} pw_rule_job_##SUF;                                                                        \
static void pw_rule_job_run_##SUF(void* arg) {                                              \
    pw_rule_job_##SUF* a = (pw_rule_job_##SUF*)arg;                                         \
    int c, w;                                                                               \
    for (c = a->lo; c < a->hi; c += a->tile) {                                              \
        w = a->hi - c < a->tile ? a->hi - c : a->tile;                                      \
        pw_rule_apply_##SUF(a->r, a->t, a->lr, a->p + c * a->pcs, a->rows, w, a->prs,      \
                            a->pcs, a->g + c * a->gcs, a->grs, a->gcs,                      \
                            a->s1 ? a->s1 + c * a->scs : a->s1,                             \
                            a->s2 ? a->s2 + c * a->scs : a->s2, a->srs, a->scs);            \
    }                                                                                       \
}                                                                                           \
static void pw_rule_apply_par_##SUF(const pw_rule* r, long long t, double lr, T* p,         \
                                    int rows, int cols, ptrdiff_t prs, ptrdiff_t pcs,       \
                                    const T* g, ptrdiff_t grs, ptrdiff_t gcs, T* s1, T* s2, \
                                    ptrdiff_t srs, ptrdiff_t scs, int nthreads) {           \
    pw_rule_job_##SUF jobs[PW_MAX_THREADS];                                                 \
    void* args[PW_MAX_THREADS];                                                             \
    int k, n = pw_clamp_threads(nthreads), tiles, tile;                                     \
    long long cap = (long long)rows * cols / PW_THREAD_GRAIN, span;                         \
    if (PW_RULE_CONTIGUOUS) {                                                               \
        cols = rows * cols;               /* contiguous: one row */                         \
        rows = 1;                                                                           \
    }                                                                                       \
    span = (pcs < 0 ? -pcs : pcs) * (long long)sizeof(T);   /* bytes per column */          \
    tile = span > 0 ? (int)(PW_RULE_TILE_BYTES / span) : cols;                              \
    if (tile < 8) tile = 8;                                                                 \
    if (tile > cols) tile = cols < 1 ? 1 : cols;                                            \
    tiles = (cols + tile - 1) / tile;                                                       \
    if (cap > tiles) cap = tiles;                                                           \
    if (n > cap) n = cap < 1 ? 1 : (int)cap;                                                \
    for (k = 0; k < n; k++) {                                                               \
        pw_rule_job_##SUF* a = &jobs[k];                                                    \
        a->r = r; a->t = t; a->lr = lr; a->p = p; a->g = g; a->s1 = s1; a->s2 = s2;         \
        a->rows = rows; a->tile = tile;                                                     \
        a->prs = prs; a->pcs = pcs; a->grs = grs; a->gcs = gcs; a->srs = srs; a->scs = scs; \
        a->lo = (int)((long long)tiles * k / n) * tile;                                     \
        a->hi = k == n - 1 ? cols : (int)((long long)tiles * (k + 1) / n) * tile;           \
        args[k] = a;                                                                        \
    }                                                                                       \
    pw_parallel(pw_rule_job_run_##SUF, args, n);                                            \
}

PW_RULE_APPLY(double, d)
PW_RULE_APPLY(float, s)
PW_RULE_PARALLEL(double, d)
PW_RULE_PARALLEL(float, s)

#endif
