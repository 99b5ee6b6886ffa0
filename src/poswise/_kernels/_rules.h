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

#define PW_RULE_APPLY(T, SUF)                                                               \
static void pw_rule_apply_##SUF(const pw_rule* r, long long t, double lr, T* p, int rows,   \
                                int cols, ptrdiff_t prs, ptrdiff_t pcs, const T* g,         \
                                ptrdiff_t grs, ptrdiff_t gcs, T* s1, T* s2, ptrdiff_t srs,  \
                                ptrdiff_t scs) {                                            \
    int i, j;                                                                               \
    const double wd = r->weight_decay, mu = r->momentum;                                    \
    switch (r->code) {                                                                      \
    case PW_RULE_SGD:                                                                       \
        for (i = 0; i < rows; i++)                                                          \
            for (j = 0; j < cols; j++) {                                                    \
                T* pp = p + i * prs + j * pcs;                                              \
                double gi = (double)g[i * grs + j * gcs] + wd * (double)*pp, step = gi;     \
                if (mu > 0) {                                                               \
                    T* v = s1 + i * srs + j * scs;                                          \
                    double vi = mu * (double)*v + gi;                                       \
                    *v = (T)vi;                                                             \
                    step = r->nesterov ? gi + mu * vi : vi;                                 \
                }                                                                           \
                *pp = (T)((double)*pp - lr * step);                                         \
            }                                                                               \
        break;                                                                              \
    case PW_RULE_ADAM:                                                                      \
    case PW_RULE_ADAMW: {                                                                   \
        const double b1 = r->beta1, b2 = r->beta2;                                          \
        const double step_size = lr / (1.0 - pow(b1, (double)t));                           \
        const double bc2_sqrt = sqrt(1.0 - pow(b2, (double)t));                             \
        const double decay = r->code == PW_RULE_ADAMW ? 1.0 - lr * wd : 1.0;                \
        const double l2 = r->code == PW_RULE_ADAM ? wd : 0.0;                               \
        for (i = 0; i < rows; i++)                                                          \
            for (j = 0; j < cols; j++) {                                                    \
                T* pp = p + i * prs + j * pcs;                                              \
                T* m = s1 + i * srs + j * scs;                                              \
                T* s = s2 + i * srs + j * scs;                                              \
                double pi = (double)*pp, gi, mi, si;                                        \
                gi = (double)g[i * grs + j * gcs] + l2 * pi;                                \
                if (decay != 1.0) pi *= decay;                                              \
                mi = (double)*m + (gi - (double)*m) * (1.0 - b1);                           \
                si = b2 * (double)*s + (1.0 - b2) * gi * gi;                                \
                *m = (T)mi;                                                                 \
                *s = (T)si;                                                                 \
                *pp = (T)(pi - step_size * (mi / (sqrt(si) / bc2_sqrt + r->eps)));          \
            }                                                                               \
        break;                                                                              \
    }                                                                                       \
    default: { /* RMSprop */                                                                \
        const double a = r->alpha;                                                          \
        for (i = 0; i < rows; i++)                                                          \
            for (j = 0; j < cols; j++) {                                                    \
                T* pp = p + i * prs + j * pcs;                                              \
                T* s = s1 + i * srs + j * scs;                                              \
                double gi = (double)g[i * grs + j * gcs] + wd * (double)*pp, si, d;         \
                si = a * (double)*s + (1.0 - a) * gi * gi;                                  \
                *s = (T)si;                                                                 \
                d = gi / (sqrt(si) + r->eps);                                               \
                if (mu > 0) {                                                               \
                    T* b = s2 + i * srs + j * scs;                                          \
                    d = mu * (double)*b + d;                                                \
                    *b = (T)d;                                                              \
                }                                                                           \
                *pp = (T)((double)*pp - lr * d);                                            \
            }                                                                               \
        break;                                                                              \
    }                                                                                       \
    }                                                                                       \
}

PW_RULE_APPLY(double, d)
PW_RULE_APPLY(float, s)

#endif
