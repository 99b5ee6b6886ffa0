"""Training kernels of poswise: forward pass, layer-span backward pass, in-place update.

Design
------
Layout (owned by ``poswise._layout``; the kernels assume it and cannot fail):
samples-first and C-contiguous. ``X`` is ``(N, n[0])``; layer ``l`` has ``W[l]`` of shape
``(n[l+1], n[l])`` and ``b[l]`` of shape ``(n[l+1],)``; ``A[l]`` is the input of layer
``l`` (``A[0] = X``), ``A[l+1] = act(A[l] W[l]^T + b[l])`` for hidden layers, and the
last layer writes the logits ``out``.

Span semantics: ``step(first, lr)`` backpropagates the output error (already in
``D[L-1]``) through layers ``L-1 ... first`` with the weights as they are, updates those
layers in place, then re-runs the forward pass from layer ``first`` to the output and
computes the loss and the new output error. Activations of shallower layers are unchanged
and reused. A gradient-descent epoch is ``step(0)``; a position-wise epoch is ``step(L-1)``,
``step(L-2)``, ..., ``step(0)``. The invariant between calls: activations and the output
error are fresh for the current weights and data.

Numerics: the weight update is fused into the gradient product,
``W[l] := -lr D[l]^T A[l] + 1 W[l]`` (one GEMM with beta = 1; ``W[l]`` is not one of the
GEMM's inputs). The error ``D[l-1] = (D[l] W[l]) * act'(A[l])`` is computed before ``W[l]``
is updated, so every gradient of a step uses the pre-step weights. Activation derivatives
are taken from the activation output (relu: a > 0, tanh: 1 - a^2, sigmoid: a (1 - a)), so
pre-activations of hidden layers are never stored. Loss sums accumulate in double.

Dual first layer (N < D): ``W[0] = W0_init - C X`` with ``C`` of shape ``(n[1], N)``. Then
``Z[0] = P - G C^T + b[0]`` with ``P = X W0_init^T`` and ``G = X X^T`` computed once, and
the update ``W[0] -= lr D[0]^T X`` becomes ``C += lr D[0]^T``: an N-wide product instead
of a D-wide one. For other data (validation) ``P`` and ``G`` are ``Xv W0_init^T`` and
``Xv X^T``; ``C`` is shared.

Direct first layer (N > D, n[1] <= 32): the first layer is kept transposed and padded,
``WT`` of shape ``(n[0], NP)``, and its two products with X run in the hand-written kernels
of ``_direct.h`` (vectorised across the outputs, X read once per product, sums in natural
order) instead of BLAS, whose general GEMM handles these skinny shapes poorly.

Fused GD (direct first layer, full batch): an epoch applies the gradient of the previous
pass, then runs one pass over X in blocks of rows that go forward and backward while in
cache, accumulating the next gradient: X is read once per epoch instead of twice. Each
thread takes a contiguous range of whole blocks with its own buffers and accumulators;
the partial sums are added in thread order (results depend on the thread count only
through that final sum).

Row-threaded PWO (direct first layer, full batch, many rows): each span step splits its
row-wise work (errors, partial gradients, forward pass, loss) over threads by rows, adds
the partial gradients in thread order and updates each layer of the span once.

Everything that can run without the GIL does: a whole epoch is one ``nogil`` call.
"""
from libc.math cimport exp, log, log1p, fabs, sqrt, tanh, NAN
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np

from ._blas cimport floating, gemm, axpy, dot

cdef extern from "_direct.h" nogil:
    void pw_first_forward_d(const double* X, int N, int D, const double* WT, int NP,
                            double* Z, int n1, int nthreads)
    void pw_first_forward_s(const float* X, int N, int D, const float* WT, int NP,
                            float* Z, int n1, int nthreads)
    void pw_first_gradient_d(const double* X, int N, int D, const double* Dl, int n1,
                             double* G, int accumulate, int nthreads)
    void pw_first_gradient_s(const float* X, int N, int D, const float* Dl, int n1,
                             float* G, int accumulate, int nthreads)
    int pw_direct_supported()
    int pw_clamp_threads(int n)
    long pw_cache_size(int level)
    enum:
        PW_MAX_THREADS
        PW_DIRECT_MAX_WIDTH
        PW_VEC_BYTES
        PW_MAX_PAD_BYTES
    ctypedef void (*pw_fn)(void*) noexcept nogil
    void pw_parallel(pw_fn fn, void** args, int n)

cdef extern from "_small.h" nogil:
    int pw_small_mm_d(const double* A, int rows, int p, const double* W, int trans, int m,
                      double* Z, const double* bias, const double* gate, int relu)
    int pw_small_mm_s(const float* A, int rows, int p, const float* W, int trans, int m,
                      float* Z, const float* bias, const float* gate, int relu)
    int pw_small_tn_d(const double* A, int rows, int p, const double* Dm, int m, double* G,
                      int accumulate)
    int pw_small_tn_s(const float* A, int rows, int p, const float* Dm, int m, float* G,
                      int accumulate)

cdef extern from "_vexp.h" nogil:
    void pw_vexp(double* x, Py_ssize_t n)
    void pw_softmax_args_d(const double* out, const int* yi, int rows, int K, double s,
                           double m, double* buf, double* mxs)
    void pw_softmax_args_s(const float* out, const int* yi, int rows, int K, double s,
                           double m, double* buf, double* mxs)
    double pw_softmax_max_d(const double* x, int yk, int K, double s, double m)
    double pw_softmax_max_s(const float* x, int yk, int K, double s, double m)
    void pw_softmax_chunk_d(const double* x, int yk, int k0, int k1, double s, double m,
                            double mx, double* buf)
    void pw_softmax_chunk_s(const float* x, int yk, int k0, int k1, double s, double m,
                            double mx, double* buf)

cdef extern from "_rules.h" nogil:
    ctypedef struct pw_rule:
        int code
        int nesterov
        double momentum
        double weight_decay
        double beta1
        double beta2
        double eps
        double alpha
        int decay_biases
    int pw_rule_nstate(const pw_rule* r)
    void pw_rule_apply_d(const pw_rule* r, long long t, double lr, double* p, int rows,
                         int cols, Py_ssize_t prs, Py_ssize_t pcs, const double* g,
                         Py_ssize_t grs, Py_ssize_t gcs, double* s1, double* s2,
                         Py_ssize_t srs, Py_ssize_t scs)
    void pw_rule_apply_s(const pw_rule* r, long long t, double lr, float* p, int rows,
                         int cols, Py_ssize_t prs, Py_ssize_t pcs, const float* g,
                         Py_ssize_t grs, Py_ssize_t gcs, float* s1, float* s2,
                         Py_ssize_t srs, Py_ssize_t scs)
    void pw_rule_apply_par_d(const pw_rule* r, long long t, double lr, double* p, int rows,
                             int cols, Py_ssize_t prs, Py_ssize_t pcs, const double* g,
                             Py_ssize_t grs, Py_ssize_t gcs, double* s1, double* s2,
                             Py_ssize_t srs, Py_ssize_t scs, int nthreads)
    void pw_rule_apply_par_s(const pw_rule* r, long long t, double lr, float* p, int rows,
                             int cols, Py_ssize_t prs, Py_ssize_t pcs, const float* g,
                             Py_ssize_t grs, Py_ssize_t gcs, float* s1, float* s2,
                             Py_ssize_t srs, Py_ssize_t scs, int nthreads)
    enum:
        PW_RULE_SGD
        PW_RULE_ADAM
        PW_RULE_ADAMW
        PW_RULE_RMSPROP

cdef enum:
    ACT_RELU = 0
    ACT_TANH = 1
    ACT_SIGMOID = 2
    ACT_LEAKY_RELU = 3
    ACT_IDENTITY = 4

cdef enum:
    LOSS_BCE = 0
    LOSS_CROSS_ENTROPY = 1
    LOSS_AM_SOFTMAX = 2
    LOSS_MSE = 3

ACTIVATIONS = {"relu": ACT_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID,
               "leaky_relu": ACT_LEAKY_RELU, "identity": ACT_IDENTITY}
LOSSES = {"bce": LOSS_BCE, "cross_entropy": LOSS_CROSS_ENTROPY,
          "am_softmax": LOSS_AM_SOFTMAX, "mse": LOSS_MSE}

# Below this norm a vector is not normalised but divided by EPS (as torch's F.normalize).
cdef double NORM_EPS = 1e-12
# Fewest rows per block of a row-wise span step's passes (wide layers: smaller blocks
# would pay the per-call costs of their products more than the cache saves).
cdef int SPAN_BLOCK_MIN_ROWS = 256
# Exps of the softmax per vectorised call (a block of rows, or a chunk of a wide row).
cdef enum:
    SOFTMAX_CHUNK = 512


cdef struct Net:
    int L            # number of weight layers
    int N            # rows of the current data
    int* n           # layer sizes, L + 1
    int act
    double leak
    int loss
    double s         # am_softmax scale
    double m         # am_softmax margin
    void** W         # L weight matrices
    void** b         # L bias vectors
    void** A         # L layer inputs; A[0] is the data
    void** D         # L output errors dE/dZ[l] (NULL when not training)
    void* out        # N x n[L] logits (cosines for am_softmax)
    void* y          # bce: N targets, mse: N x K targets (floating)
    int* yi          # cross_entropy / am_softmax: N labels
    double* sw       # N sample weights, or NULL (every sample counts once)
    double* acc      # scratch, max width
    # am_softmax scratch
    void* what       # K x h unit weight rows
    double* wnorm    # K raw row norms
    void* ahat       # N x h unit features
    double* anorm    # N raw feature norms
    void* gw         # K x h gradient of the last layer
    # dual first layer
    bint dual
    int ncols        # N of the training data (columns of G, C)
    void* P          # N x n[1]
    void* G          # N x ncols
    void* C          # n[1] x ncols
    double* dual_a   # 1: the scale a of W0_init in W[0] = a W0_init - C X (1 without decay)
    void* V          # n[1] x ncols momentum coefficients (NULL without momentum)
    double* dual_va  # 1: the momentum's W0_init coefficient
    # direct first layer
    bint direct
    void* WT         # n[0] x NP transposed, padded first-layer weights
    void* G0         # n[1] x n[0] gradient scratch
    int NP
    int nthreads
    # fused gradient-descent epoch (direct first layer): X read once per epoch
    bint fused
    int B            # rows per block
    void** gW        # L gradient accumulators (gW[0] unused: G0)
    double** gb      # L bias-gradient accumulators
    double invN      # 1 / N of the whole data when > 0 (a block's loss is a share of it)
    bint noloss      # the caller discards the loss value: the softmax skips its log
    size_t itemsize
    int njobs        # threads of a fused pass, each with its own view and accumulators
    void* jobs       # FusedJob[njobs]
    int nspan        # threads of a row-wise span step (0: whole-array span steps)
    void* spans_jobs # SpanJob[nspan], or NULL
    int SB           # rows per block of a row-wise span step's pass (> 0 with spans_jobs)
    # update rule and schedule
    pw_rule rule
    bint plain       # plain SGD: the fused fast path (update folded into the gradient GEMM)
    long long* t     # L step counts, one per layer (its weight and its bias share it)
    void** s1W       # L first state arrays of the weights (canonical (n_out, n_in) layout)
    void** s2W       # L second state arrays of the weights
    void** s1b       # L first state arrays of the biases
    void** s2b       # L second state arrays of the biases
    void* grad       # packed gradients: for l ascending, dE/dW[l] row-major, then dE/db[l]
    Py_ssize_t* goff # L + 1 offsets of the layers in grad (elements)
    double* lscale   # L learning-rate multipliers (layer-wise schedules; 1 otherwise)
    int* spans       # the schedule: first layers of the span steps of one epoch
    int nspans
    # snapshot
    int nstate
    void** state
    void** backup
    size_t* nbytes


# ---------------------------------------------------------------- products of the layers

cdef inline bint _prod(const floating* A, int rows, int p, const floating* W, bint trans,
                       int m, floating* Z, const floating* bias, const floating* gate,
                       bint relu) noexcept nogil:
    """Z (rows x m) := A (rows x p) W^T (``trans``: W is m x p) or A W (W is p x m): the
    narrow-layer kernels of _small.h when they take the shape, then, each if given,
    + bias, ReLU, times [gate > 0] (the errors gated by the ReLU derivative), and True; or
    BLAS for the product alone, and False (the caller applies the rest)."""
    if floating is double:
        if pw_small_mm_d(A, rows, p, W, trans, m, Z, bias, gate, relu):
            return True
    else:
        if pw_small_mm_s(A, rows, p, W, trans, m, Z, bias, gate, relu):
            return True
    if trans:
        gemm(False, True, rows, m, p, <floating>1, <floating*>A, p, <floating*>W, p,
             <floating>0, Z, m)
    else:
        gemm(False, False, rows, m, p, <floating>1, <floating*>A, p, <floating*>W, m,
             <floating>0, Z, m)
    return False


cdef inline void _back_errors(Net* v, int l, int rows, floating* Dl) noexcept nogil:
    """D[l-1] := (D[l] W[l]) * act'(Z[l-1]) for the first ``rows`` rows of the buffers of
    ``v`` (the engine's, or a block's view); the ReLU derivative inside the product's
    kernel when it can."""
    cdef int nin = v.n[l], nout = v.n[l + 1]
    cdef bint relu = v.act == ACT_RELU
    if not _prod(Dl, rows, nout, <floating*>v.W[l], False, nin, <floating*>v.D[l - 1], NULL,
                 <floating*>v.A[l] if relu else NULL, False) or not relu:
        _mul_act_deriv(<floating*>v.D[l - 1], <floating*>v.A[l], <Py_ssize_t>rows * nin,
                       v.act, v.leak)


cdef inline void _prod_tn(const floating* Dm, int rows, int m, const floating* A, int p,
                          floating* G, bint accumulate) noexcept nogil:
    """G (m x p) := Dm^T A (+ G when ``accumulate``), Dm rows x m, A rows x p: as
    ``_prod``, the narrow-layer kernel or BLAS."""
    if floating is double:
        if pw_small_tn_d(A, rows, p, Dm, m, G, accumulate):
            return
    else:
        if pw_small_tn_s(A, rows, p, Dm, m, G, accumulate):
            return
    gemm(True, False, m, p, rows, <floating>1, <floating*>Dm, m, <floating*>A, p,
         <floating>(1 if accumulate else 0), G, p)


# ---------------------------------------------------------------- element-wise pieces

cdef inline floating _sigmoid(floating z) noexcept nogil:
    cdef double e
    if z >= 0:
        return <floating>(1.0 / (1.0 + exp(-<double>z)))
    e = exp(<double>z)
    return <floating>(e / (1.0 + e))


cdef void _bias_act(floating* Z, const floating* b, int N, int n, int act,
                    double leak) noexcept nogil:
    """Z := act(Z + b) row-wise, in place (the activation is chosen outside the loops)."""
    # IN/OUT: Z (N x n)   IN: b (n)
    cdef Py_ssize_t i, j
    cdef floating z
    cdef floating* row
    cdef floating lk = <floating>leak
    if act == ACT_RELU:
        for i in range(N):
            row = Z + i * n
            for j in range(n):
                z = row[j] + b[j]
                row[j] = z if z > 0 else 0
    elif act == ACT_LEAKY_RELU:
        for i in range(N):
            row = Z + i * n
            for j in range(n):
                z = row[j] + b[j]
                row[j] = z if z > 0 else lk * z
    elif act == ACT_TANH:
        for i in range(N):
            row = Z + i * n
            for j in range(n):
                row[j] = <floating>tanh(<double>(row[j] + b[j]))
    elif act == ACT_SIGMOID:
        for i in range(N):
            row = Z + i * n
            for j in range(n):
                row[j] = _sigmoid(row[j] + b[j])
    else:
        for i in range(N):
            row = Z + i * n
            for j in range(n):
                row[j] = row[j] + b[j]


cdef void _mul_act_deriv(floating* D, const floating* A, Py_ssize_t count, int act,
                         double leak) noexcept nogil:
    """D := D * act'(Z), with act'(Z) written in terms of A = act(Z)."""
    # IN/OUT: D   IN: A (same shape)
    cdef Py_ssize_t i
    cdef floating a
    # selects rather than branches: every element is written, so the compiler vectorises
    # the loop (a branch on the sign of A mispredicts about half the time: 3x slower)
    if act == ACT_RELU:
        for i in range(count):
            D[i] = D[i] if A[i] > 0 else 0
    elif act == ACT_LEAKY_RELU:
        for i in range(count):
            D[i] = D[i] if A[i] > 0 else <floating>(leak * D[i])
    elif act == ACT_TANH:
        for i in range(count):
            a = A[i]
            D[i] = D[i] * (1 - a * a)
    elif act == ACT_SIGMOID:
        for i in range(count):
            a = A[i]
            D[i] = D[i] * (a * (1 - a))


cdef inline void _softmax_args(const floating* row, int yk, double s, double m, int k0,
                               int k1, double mx, double* buf) noexcept nogil:
    """buf[k - k0] := s (row[k] - m [k = yk]) - mx for k0 <= k < k1: the arguments of the
    softmax's exps for a chunk of a wide row (_vexp.h's scalar loop)."""
    if floating is double:
        pw_softmax_chunk_d(row, yk, k0, k1, s, m, mx, buf)
    else:
        pw_softmax_chunk_s(row, yk, k0, k1, s, m, mx, buf)


cdef inline double _softmax_loss(Net* net, const floating* row, Py_ssize_t i, double s,
                                 double m, double mx, double ssum) noexcept nogil:
    """Row i's cross-entropy (times its sample weight), from the maximum logit and the sum
    of the exps."""
    cdef double e = mx + log(ssum) - s * (row[net.yi[i]] - m)
    return e if net.sw == NULL else net.sw[i] * e


cdef inline void _softmax_delta(Net* net, floating* drow, Py_ssize_t i, double s,
                                double ssum, const double* e, Py_ssize_t k0, Py_ssize_t k1,
                                double invN) noexcept nogil:
    """drow[k] := s (softmax_k - [k = y]) w / N for k0 <= k < k1, from the exps e[k - k0]
    (w: row i's sample weight, 1 without)."""
    cdef Py_ssize_t k, yk = net.yi[i]
    cdef double f = invN if net.sw == NULL else net.sw[i] * invN
    for k in range(k0, k1):
        drow[k] = <floating>(s * (e[k - k0] / ssum) * f)
    if k0 <= yk < k1:
        drow[yk] = <floating>(s * (e[yk - k0] / ssum - 1.0) * f)


cdef inline double _softmax_row(Net* net, const floating* row, floating* drow, Py_ssize_t i,
                                double s, double m, double mx, const double* e, Py_ssize_t K,
                                double invN) noexcept nogil:
    """Row i's loss from its K exps e and, if ``drow`` is not NULL, its errors."""
    cdef Py_ssize_t k
    cdef double ssum = 0.0
    for k in range(K):
        ssum += e[k]
    if drow != NULL:
        _softmax_delta(net, drow, i, s, ssum, e, 0, K, invN)
    if net.noloss:
        return 0.0
    return _softmax_loss(net, row, i, s, m, mx, ssum)


cdef double _loss_delta(Net* net, floating* out, floating* delta) noexcept nogil:
    """Return the mean loss of ``out`` and, if ``delta`` is not NULL, write dE/d(out)."""
    # IN: out (N x K), targets   OUT: delta (N x K) or NULL
    cdef int N = net.N, K = net.n[net.L]
    cdef Py_ssize_t i, k, yk
    cdef double total = 0.0, z, t, p, mx, ssum, e, s, m
    cdef floating* row
    cdef const floating* yf = <const floating*>net.y
    cdef double invN = net.invN if net.invN > 0 else 1.0 / N
    cdef double ebuf[SOFTMAX_CHUNK]
    cdef double mxs[SOFTMAX_CHUNK]
    cdef Py_ssize_t i0, r, rows, R, k0, k1
    cdef double w = 1.0
    cdef const double* sw = net.sw
    if sw != NULL and net.loss != LOSS_CROSS_ENTROPY and net.loss != LOSS_AM_SOFTMAX:
        # sample weights: row i's terms count w_i times; invN is 1 / sum of the weights
        for i in range(N):
            w = sw[i]
            for k in range(K):
                z = out[i * K + k]
                t = yf[i * K + k]
                if net.loss == LOSS_BCE:
                    e = exp(-fabs(z))
                    total += w * ((z if z > 0 else 0.0) - z * t + log1p(e))
                    if delta != NULL:
                        p = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
                        delta[i * K + k] = <floating>((p - t) * (w * invN))
                else:
                    z = z - t
                    total += w * 0.5 * z * z
                    if delta != NULL:
                        delta[i * K + k] = <floating>(z * (w * invN))
        return total * invN
    if net.loss == LOSS_BCE:
        # K independent sigmoid outputs (multi-label when K > 1)
        for i in range(N * K):
            z = out[i]
            t = yf[i]
            e = exp(-fabs(z))
            total += (z if z > 0 else 0.0) - z * t + log1p(e)
            if delta != NULL:
                p = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
                delta[i] = <floating>((p - t) * invN)
    elif net.loss == LOSS_MSE:
        for i in range(N * K):
            z = <double>out[i] - <double>yf[i]
            total += 0.5 * z * z
            if delta != NULL:
                delta[i] = <floating>(z * invN)
    else:
        # softmax cross-entropy of the logits; for am_softmax the logits are
        # s (cos - m [k = y]) and the error is taken with respect to the cosines (factor s)
        if net.loss == LOSS_AM_SOFTMAX:
            s, m = net.s, net.m
        else:
            s, m = 1.0, 0.0
        if K <= SOFTMAX_CHUNK:
            # blocks of rows: their exps in one vectorised call
            R = SOFTMAX_CHUNK // K
            i0 = 0
            while i0 < N:
                rows = R if N - i0 > R else N - i0
                if floating is double:
                    pw_softmax_args_d(out + i0 * K, net.yi + i0, <int>rows, K, s, m, ebuf,
                                      mxs)
                else:
                    pw_softmax_args_s(out + i0 * K, net.yi + i0, <int>rows, K, s, m, ebuf,
                                      mxs)
                pw_vexp(ebuf, <Py_ssize_t>rows * K)
                for r in range(rows):
                    i = i0 + r
                    total += _softmax_row(net, out + i * K,
                                          delta + i * K if delta != NULL else NULL, i,
                                          s, m, mxs[r], ebuf + r * K, K, invN)
                i0 += rows
        else:
            # wide outputs: each row in chunks, its exps taken twice (sum, then errors)
            for i in range(N):
                row = out + i * K
                yk = net.yi[i]
                if floating is double:
                    mx = pw_softmax_max_d(row, <int>yk, K, s, m)
                else:
                    mx = pw_softmax_max_s(row, <int>yk, K, s, m)
                ssum = 0.0
                k0 = 0
                while k0 < K:
                    k1 = K if K - k0 <= SOFTMAX_CHUNK else k0 + SOFTMAX_CHUNK
                    _softmax_args(row, <int>yk, s, m, <int>k0, <int>k1, mx, ebuf)
                    pw_vexp(ebuf, k1 - k0)
                    for k in range(k1 - k0):
                        ssum += ebuf[k]
                    k0 = k1
                if not net.noloss:
                    total += _softmax_loss(net, row, i, s, m, mx, ssum)
                if delta != NULL:
                    k0 = 0
                    while k0 < K:
                        k1 = K if K - k0 <= SOFTMAX_CHUNK else k0 + SOFTMAX_CHUNK
                        _softmax_args(row, <int>yk, s, m, <int>k0, <int>k1, mx, ebuf)
                        pw_vexp(ebuf, k1 - k0)
                        _softmax_delta(net, delta + i * K, i, s, ssum, ebuf, k0, k1, invN)
                        k0 = k1
    return total * invN


cdef void _normalize_rows(const floating* V, floating* Vhat, double* norms, int rows,
                          int cols) noexcept nogil:
    """Vhat_i := V_i / max(|V_i|, eps); norms_i := |V_i|."""
    cdef Py_ssize_t i, j
    cdef double nrm, inv
    for i in range(rows):
        nrm = 0.0
        for j in range(cols):
            nrm += <double>V[i * cols + j] * V[i * cols + j]
        nrm = sqrt(nrm)
        norms[i] = nrm
        inv = 1.0 / (nrm if nrm > NORM_EPS else NORM_EPS)
        for j in range(cols):
            Vhat[i * cols + j] = <floating>(V[i * cols + j] * inv)


cdef void _normalize_backward(floating* g, const floating* Vhat, const double* norms,
                              int rows, int cols) noexcept nogil:
    """g_i := d(loss)/dV_i given g_i = d(loss)/dVhat_i, for Vhat = V / max(|V|, eps)."""
    cdef Py_ssize_t i, j
    cdef floating proj
    cdef double inv
    for i in range(rows):
        if norms[i] > NORM_EPS:
            proj = dot(cols, g + i * cols, Vhat + i * cols)
            inv = 1.0 / norms[i]
            for j in range(cols):
                g[i * cols + j] = <floating>((g[i * cols + j] - proj * Vhat[i * cols + j]) * inv)
        else:
            for j in range(cols):
                g[i * cols + j] = <floating>(g[i * cols + j] / NORM_EPS)


# ---------------------------------------------------------------- forward and span steps

cdef double _forward(Net* net, int start, floating lr_type_tag) noexcept nogil:
    """Forward from layer ``start`` to the output; return the loss, refresh D[L-1]."""
    cdef int l, L = net.L, N = net.N, nin, nout, act
    cdef bint fuse
    cdef floating* dst
    cdef floating* src
    for l in range(start, L):
        nin = net.n[l]
        nout = net.n[l + 1]
        src = <floating*>net.A[l]
        dst = <floating*>net.A[l + 1] if l < L - 1 else <floating*>net.out
        act = net.act if l < L - 1 else ACT_IDENTITY
        if l == L - 1 and net.loss == LOSS_AM_SOFTMAX:
            _normalize_rows(<floating*>net.W[l], <floating*>net.what, net.wnorm, nout, nin)
            _normalize_rows(src, <floating*>net.ahat, net.anorm, N, nin)
            gemm(False, True, N, nout, nin, <floating>1, <floating*>net.ahat, nin,
                 <floating*>net.what, nin, <floating>0, dst, nout)
            continue
        if l == 0 and net.direct:
            if floating is double:
                pw_first_forward_d(src, N, nin, <double*>net.WT, net.NP, dst, nout,
                                   net.nthreads)
            else:
                pw_first_forward_s(src, N, nin, <float*>net.WT, net.NP, dst, nout,
                                   net.nthreads)
        elif l == 0 and net.dual:
            _dual_base(net, dst, N * nout)
            gemm(False, True, N, nout, net.ncols, <floating>-1, <floating*>net.G, net.ncols,
                 <floating*>net.C, net.ncols, <floating>1, dst, nout)
        else:
            # bias and ReLU (or the output layer's bias) inside the narrow-layer kernel
            fuse = act == ACT_RELU or act == ACT_IDENTITY
            if _prod(src, N, nin, <floating*>net.W[l], True, nout, dst,
                     <floating*>net.b[l] if fuse else NULL, NULL, act == ACT_RELU) and fuse:
                continue
        _bias_act(dst, <floating*>net.b[l], N, nout, act, net.leak)
    return _loss_delta(net, <floating*>net.out,
                       <floating*>net.D[L - 1] if net.D != NULL else NULL)


cdef inline void _dual_base(Net* net, floating* dst, Py_ssize_t cnt) noexcept nogil:
    """dst := a P: the W0_init part of the dual first layer's output (a copy when a = 1,
    as it stays without weight decay)."""
    cdef Py_ssize_t i
    cdef double a = net.dual_a[0]
    cdef floating* P = <floating*>net.P
    if a == 1.0:
        memcpy(dst, P, <size_t>cnt * sizeof(floating))
    else:
        for i in range(cnt):
            dst[i] = <floating>(a * P[i])


cdef void _apply_dual(Net* net, double lr, floating tag) noexcept nogil:
    """The SGD family on the dual first layer, W[0] = a W0_init - C X.

    Every quantity of the rule stays of the form alpha W0_init - M X: the gradient is
    (0, -D[0]^T) (D[0]^T X = -(-D[0]^T) X), weight decay adds lambda (a, C), the momentum
    buffer is (va, V); so the rule runs on the coefficients, elementwise on n[1] x N
    values instead of n[1] x D."""
    cdef int n1 = net.n[1], N = net.ncols
    cdef Py_ssize_t i, j
    cdef double mu = net.rule.momentum, wd = net.rule.weight_decay
    cdef double a = net.dual_a[0], ga, va, sa, gc, v, st
    cdef floating* C = <floating*>net.C
    cdef floating* V = <floating*>net.V
    cdef floating* D0 = <floating*>net.D[0]
    ga = wd * a
    sa = ga
    if mu > 0:
        va = mu * net.dual_va[0] + ga
        net.dual_va[0] = va
        sa = ga + mu * va if net.rule.nesterov else va
    net.dual_a[0] = a - lr * sa
    for j in range(n1):
        for i in range(N):
            gc = wd * <double>C[j * N + i] - <double>D0[i * n1 + j]
            st = gc
            if mu > 0:
                v = mu * <double>V[j * N + i] + gc
                V[j * N + i] = <floating>v
                st = gc + mu * v if net.rule.nesterov else v
            C[j * N + i] = <floating>(<double>C[j * N + i] - lr * st)


cdef void _update_bias(Net* net, int l, floating lr) noexcept nogil:
    """b[l] -= lr * column sums of D[l] (plain SGD)."""
    cdef int N = net.N, nout = net.n[l + 1]
    cdef Py_ssize_t i, j
    cdef floating* Dl = <floating*>net.D[l]
    cdef floating* bl = <floating*>net.b[l]
    _column_sums(Dl, N, nout, net.acc)
    for j in range(nout):
        bl[j] = <floating>(bl[j] - lr * net.acc[j])


cdef inline void _column_sums(const floating* Dl, int N, int n, double* acc) noexcept nogil:
    """acc[j] := sum_i Dl[i, j], in double."""
    cdef Py_ssize_t i, j
    for j in range(n):
        acc[j] = 0.0
    for i in range(N):
        for j in range(n):
            acc[j] += Dl[i * n + j]


cdef inline floating _layer_lr(Net* net, int l, floating lr) noexcept nogil:
    # lr * 1.0 is lr exactly: schedules without per-layer rates keep their arithmetic
    return <floating>(lr * net.lscale[l])


cdef void _cosine_backward(Net* net, bint below, floating* Dl) noexcept nogil:
    """The am_softmax output layer: its weight gradient into ``net.gw`` and, if
    ``below``, the error of the layer below into D[L-2]. Through the cosine logits:
    dE/d(what) = G^T ahat, dE/d(ahat) = G what, then through both normalisations."""
    cdef int l = net.L - 1, N = net.N, nin = net.n[net.L - 1], nout = net.n[net.L]
    if below:
        gemm(False, False, N, nin, nout, <floating>1, Dl, nout,
             <floating*>net.what, nin, <floating>0, <floating*>net.D[l - 1], nin)
        _normalize_backward(<floating*>net.D[l - 1], <floating*>net.ahat, net.anorm, N, nin)
        _mul_act_deriv(<floating*>net.D[l - 1], <floating*>net.A[l],
                       <Py_ssize_t>N * nin, net.act, net.leak)
    gemm(True, False, nout, nin, N, <floating>1, Dl, nout, <floating*>net.ahat, nin,
         <floating>0, <floating*>net.gw, nin)
    _normalize_backward(<floating*>net.gw, <floating*>net.what, net.wnorm, nout, nin)


cdef void _span_gradients(Net* net, int first, bint accumulate,
                          floating tag) noexcept nogil:
    """Packed gradients of layers L-1..first (written, or added with ``accumulate``),
    from the current activations and output error; parameters are not touched."""
    cdef int l, L = net.L, N = net.N, nin, nout
    cdef Py_ssize_t i, j
    cdef floating* Dl
    cdef floating* gW
    cdef floating* gb
    cdef floating* gw
    for l in range(L - 1, first - 1, -1):
        nin = net.n[l]
        nout = net.n[l + 1]
        Dl = <floating*>net.D[l]
        gW = <floating*>net.grad + net.goff[l]
        gb = gW + <Py_ssize_t>nin * nout
        if l == L - 1 and net.loss == LOSS_AM_SOFTMAX:
            _cosine_backward(net, l > first, Dl)
            gw = <floating*>net.gw
            for i in range(<Py_ssize_t>nin * nout):
                gW[i] = gW[i] + gw[i] if accumulate else gw[i]
            continue          # the cosine layer has no bias: its gradient stays 0
        if l > first:
            _back_errors(net, l, N, Dl)
        if l == 0 and net.dual:
            pass              # no primal gradient: _apply_dual reads D[0] itself
        elif l == 0 and net.direct:
            if floating is double:
                pw_first_gradient_d(<double*>net.A[0], N, nin, Dl, nout, gW, accumulate,
                                    net.nthreads)
            else:
                pw_first_gradient_s(<float*>net.A[0], N, nin, Dl, nout, gW, accumulate,
                                    net.nthreads)
        else:
            _prod_tn(Dl, N, nout, <floating*>net.A[l], nin, gW, accumulate)
        _column_sums(Dl, N, nout, net.acc)
        for j in range(nout):
            gb[j] = <floating>(gb[j] + net.acc[j]) if accumulate else <floating>net.acc[j]


cdef inline void _apply_param(const pw_rule* r, long long t, double lr, void* p, int rows,
                              int cols, Py_ssize_t prs, Py_ssize_t pcs, const floating* g,
                              void* s1, void* s2, int nthreads) noexcept nogil:
    # gradient and state arrays are in the canonical (rows, cols) row-major layout
    if floating is double:
        pw_rule_apply_par_d(r, t, lr, <double*>p, rows, cols, prs, pcs, g, cols, 1,
                            <double*>s1, <double*>s2, cols, 1, nthreads)
    else:
        pw_rule_apply_par_s(r, t, lr, <float*>p, rows, cols, prs, pcs, g, cols, 1,
                            <float*>s1, <float*>s2, cols, 1, nthreads)


cdef inline void _apply_transposed(const pw_rule* r, long long t, double lr, void* WT,
                                   int nout, int nin, Py_ssize_t NP, const floating* g,
                                   void* s1, void* s2, int nthreads) noexcept nogil:
    # the direct first layer: W[0][j, i] is WT[i * NP + j] (column stride NP); the rule
    # kernel takes it in tiles of columns small enough for a tile of WT to stay in L1
    # while the nout rows are updated. Gradient and state stay canonical.
    if floating is double:
        pw_rule_apply_par_d(r, t, lr, <double*>WT, nout, nin, 1, NP, g, nin, 1,
                            <double*>s1, <double*>s2, nin, 1, nthreads)
    else:
        pw_rule_apply_par_s(r, t, lr, <float*>WT, nout, nin, 1, NP, g, nin, 1,
                            <float*>s1, <float*>s2, nin, 1, nthreads)


cdef void _apply_span(Net* net, int first, floating lr) noexcept nogil:
    """Apply the update rule to layers first..L-1 from the packed gradients: the one
    general place where parameters are written (the plain-SGD paths are its fast twin)."""
    cdef int l, nin, nout
    cdef double lrl
    cdef floating* g
    cdef pw_rule rb = net.rule        # the biases' rule: without decay if so asked
    cdef long long t
    if not rb.decay_biases:
        rb.weight_decay = 0.0
    for l in range(first, net.L):
        nin = net.n[l]
        nout = net.n[l + 1]
        net.t[l] += 1
        t = net.t[l]
        lrl = <double>lr * net.lscale[l]
        g = <floating*>net.grad + net.goff[l]
        if l == 0 and net.dual:
            _apply_dual(net, lrl, lr)
        elif l == 0 and net.direct:
            _apply_transposed(&net.rule, t, lrl, net.WT, nout, nin, net.NP, g, net.s1W[l],
                              net.s2W[l], net.nthreads)
        else:
            _apply_param(&net.rule, t, lrl, net.W[l], nout, nin, nin, 1, g, net.s1W[l],
                         net.s2W[l], net.nthreads)
        if not (l == net.L - 1 and net.loss == LOSS_AM_SOFTMAX):
            _apply_param(&rb, t, lrl, net.b[l], 1, nout, 0, 1, g + <Py_ssize_t>nin * nout,
                         net.s1b[l], net.s2b[l], 1)


cdef double _step(Net* net, int first, floating lr, bint refresh) noexcept nogil:
    """Backpropagate through layers L-1..first, update them, forward from ``first``."""
    cdef int l, L = net.L, N = net.N, nin, nout
    cdef Py_ssize_t i, j
    cdef floating* Dl
    cdef floating* Cm
    cdef floating* WTm
    cdef floating lrl
    if not net.plain:
        _span_gradients(net, first, False, lr)
        _apply_span(net, first, lr)
        return _forward(net, first, lr) if refresh else 0.0
    # plain SGD, fast path: the update is folded into the gradient products
    for l in range(L - 1, first - 1, -1):
        nin = net.n[l]
        nout = net.n[l + 1]
        Dl = <floating*>net.D[l]
        lrl = _layer_lr(net, l, lr)
        net.t[l] += 1
        if l == L - 1 and net.loss == LOSS_AM_SOFTMAX:
            _cosine_backward(net, l > first, Dl)      # the last layer has no bias
            axpy(nout * nin, -lrl, <floating*>net.gw, <floating*>net.W[l])
            continue
        if l > first:
            _back_errors(net, l, N, Dl)
        if l == 0 and net.direct:
            if floating is double:
                pw_first_gradient_d(<double*>net.A[0], N, nin, Dl, nout, <double*>net.G0,
                                    0, net.nthreads)
            else:
                pw_first_gradient_s(<float*>net.A[0], N, nin, Dl, nout, <float*>net.G0,
                                    0, net.nthreads)
            Cm = <floating*>net.G0
            WTm = <floating*>net.WT
            for i in range(nin):
                for j in range(nout):
                    WTm[i * net.NP + j] -= lrl * Cm[j * nin + i]
        elif l == 0 and net.dual:
            Cm = <floating*>net.C
            for i in range(N):
                for j in range(nout):
                    Cm[j * net.ncols + i] += lrl * Dl[i * nout + j]
        else:
            gemm(True, False, nout, nin, N, -lrl, Dl, nout, <floating*>net.A[l], nin,
                 <floating>1, <floating*>net.W[l], nin)
        _update_bias(net, l, lrl)
    if refresh:
        return _forward(net, first, lr)
    return 0.0


cdef inline double _nan_if_any(const floating* p, Py_ssize_t cnt) noexcept nogil:
    """0.0, or NaN if some p[i] is NaN or infinite (x * 0 is NaN exactly for those).
    Eight independent sums: one chain of dependent adds would cost an add latency per
    element (measured: 10 % of a dual-mode cat epoch)."""
    cdef double z0 = 0.0, z1 = 0.0, z2 = 0.0, z3 = 0.0, z4 = 0.0, z5 = 0.0, z6 = 0.0
    cdef double z7 = 0.0
    cdef Py_ssize_t i = 0
    while i + 8 <= cnt:
        z0 += p[i] * 0.0
        z1 += p[i + 1] * 0.0
        z2 += p[i + 2] * 0.0
        z3 += p[i + 3] * 0.0
        z4 += p[i + 4] * 0.0
        z5 += p[i + 5] * 0.0
        z6 += p[i + 6] * 0.0
        z7 += p[i + 7] * 0.0
        i += 8
    while i < cnt:
        z0 += p[i] * 0.0
        i += 1
    return ((z0 + z1) + (z2 + z3)) + ((z4 + z5) + (z6 + z7))


cdef bint _params_finite(Net* net, floating tag) noexcept nogil:
    """Whether every trainable parameter is finite (ReLU would hide a NaN weight from the
    loss)."""
    cdef int l
    cdef Py_ssize_t i, cnt
    cdef double z = 0.0
    cdef floating* p
    for l in range(net.L):
        if l == 0 and net.direct:
            p = <floating*>net.WT
            cnt = <Py_ssize_t>net.n[0] * net.NP
        elif l == 0 and net.dual:
            p = <floating*>net.C
            cnt = <Py_ssize_t>net.n[1] * net.ncols
            z += net.dual_a[0] * 0.0
        else:
            p = <floating*>net.W[l]
            cnt = <Py_ssize_t>net.n[l] * net.n[l + 1]
        z += _nan_if_any(p, cnt)
        z += _nan_if_any(<floating*>net.b[l], net.n[l + 1])
    return z == 0.0


cdef void _snapshot(Net* net, bint restore) noexcept nogil:
    cdef int i
    for i in range(net.nstate):
        if restore:
            memcpy(net.state[i], net.backup[i], net.nbytes[i])
        else:
            memcpy(net.backup[i], net.state[i], net.nbytes[i])


cdef struct FusedJob:
    Net v            # this thread's view: own block buffers and gradient accumulators
    void* X          # the whole data, targets and logits (v's point into them)
    double* sw
    void* y
    int* yi
    void* out
    double invN      # 1 / rows of the mean loss
    int lo
    int hi
    double loss


cdef double _fused_rows(FusedJob* job, floating tag) noexcept nogil:
    """Loss share and gradients of rows [lo, hi), block by block, into the job's
    accumulators.

    Each block of B rows goes forward through every layer, then backward, and adds its
    share to the gradients while it is still in cache: X is read from memory once per
    epoch instead of twice.
    """
    cdef Net* v = &job.v
    cdef int L = v.L, K = v.n[v.L], l, nin, nout, r0, rows, lo = job.lo, hi = job.hi
    cdef Py_ssize_t i, j
    cdef double total = 0.0
    cdef floating* Dl
    cdef double* g
    v.invN = job.invN
    v.nthreads = 1
    for l in range(L):
        for j in range(v.n[l + 1]):
            v.gb[l][j] = 0.0
    if lo >= hi:            # no rows: zero accumulators
        for l in range(1, L):
            memset(v.gW[l], 0, <size_t>v.n[l] * v.n[l + 1] * sizeof(floating))
        memset(v.G0, 0, <size_t>v.n[0] * v.n[1] * sizeof(floating))
    r0 = lo
    while r0 < hi:
        rows = v.B if r0 + v.B <= hi else hi - r0
        v.N = rows
        v.A[0] = <floating*>job.X + <Py_ssize_t>r0 * v.n[0]
        v.out = <floating*>job.out + <Py_ssize_t>r0 * K
        if job.yi != NULL:
            v.yi = job.yi + r0
        else:
            v.y = <floating*>job.y + <Py_ssize_t>r0 * K
        if job.sw != NULL:
            v.sw = job.sw + r0
        total += _forward(v, 0, tag)
        for l in range(L - 1, -1, -1):
            nin = v.n[l]
            nout = v.n[l + 1]
            Dl = <floating*>v.D[l]
            if l > 0:
                _back_errors(v, l, rows, Dl)
                _prod_tn(Dl, rows, nout, <floating*>v.A[l], nin, <floating*>v.gW[l], r0 > lo)
            elif floating is double:
                pw_first_gradient_d(<double*>v.A[0], rows, nin, Dl, nout, <double*>v.G0,
                                    r0 > lo, 1)
            else:
                pw_first_gradient_s(<float*>v.A[0], rows, nin, Dl, nout, <float*>v.G0,
                                    r0 > lo, 1)
            g = v.gb[l]
            for i in range(rows):
                for j in range(nout):
                    g[j] += Dl[i * nout + j]
        r0 += rows
    return total


cdef void _fused_worker_d(void* p) noexcept nogil:
    cdef FusedJob* job = <FusedJob*>p
    job.loss = _fused_rows[double](job, 0.0)


cdef void _fused_worker_s(void* p) noexcept nogil:
    cdef FusedJob* job = <FusedJob*>p
    job.loss = _fused_rows[float](job, 0.0)


cdef double _fused_pass(Net* net, floating tag) noexcept nogil:
    """Loss and gradients of the current weights in one pass over X: one contiguous range
    of rows per thread (whole blocks), the threads' partial sums added in thread order
    into the engine's accumulators (thread 0's)."""
    cdef FusedJob* jobs = <FusedJob*>net.jobs
    cdef void* args[PW_MAX_THREADS]
    cdef int t, l, T = net.njobs, N = net.N, nblocks = (net.N + net.B - 1) // net.B
    cdef Py_ssize_t i, j, cnt
    cdef double total = 0.0
    cdef floating* dst
    cdef floating* src
    if T > nblocks:
        T = nblocks
    memset(args, 0, sizeof(args))
    for t in range(T):
        jobs[t].X = net.A[0]
        jobs[t].y = net.y
        jobs[t].yi = net.yi
        jobs[t].sw = net.sw
        jobs[t].out = net.out
        jobs[t].invN = net.invN if net.invN > 0 else 1.0 / N
        jobs[t].lo = <int>(min(N, <long long>nblocks * t // T * net.B))
        jobs[t].hi = <int>(min(N, <long long>nblocks * (t + 1) // T * net.B))
        args[t] = &jobs[t]
    if floating is double:
        pw_parallel(_fused_worker_d, args, T)
    else:
        pw_parallel(_fused_worker_s, args, T)
    for t in range(T):
        total += jobs[t].loss
    for t in range(1, T):
        for l in range(net.L):
            for j in range(net.n[l + 1]):
                jobs[0].v.gb[l][j] += jobs[t].v.gb[l][j]
            cnt = <Py_ssize_t>net.n[l] * net.n[l + 1]
            if l == 0:
                dst = <floating*>jobs[0].v.G0
                src = <floating*>jobs[t].v.G0
            else:
                dst = <floating*>jobs[0].v.gW[l]
                src = <floating*>jobs[t].v.gW[l]
            for i in range(cnt):
                dst[i] += src[i]
    return total


cdef struct SpanJob:
    Net v            # rows [lo, hi) of the engine's buffers; own partial gradients (gW, gb)
    Net* net
    int lo
    int hi
    int first
    double loss


cdef void _span_view(SpanJob* job, int lo, int hi) noexcept nogil:
    """Point the job's view at rows [lo, hi) of the engine's (full-size) buffers."""
    cdef Net* net = job.net
    cdef Net* v = &job.v
    cdef int l, K = net.n[net.L]
    v.N = hi - lo
    v.invN = net.invN if net.invN > 0 else 1.0 / net.N
    v.noloss = net.noloss
    v.nthreads = 1
    for l in range(net.L):
        v.A[l] = <char*>net.A[l] + <size_t>lo * net.n[l] * net.itemsize
        if net.D != NULL:
            v.D[l] = <char*>net.D[l] + <size_t>lo * net.n[l + 1] * net.itemsize
    v.out = <char*>net.out + <size_t>lo * K * net.itemsize
    if net.yi != NULL:
        v.yi = net.yi + lo
    else:
        v.y = <char*>net.y + <size_t>lo * K * net.itemsize
    if net.sw != NULL:
        v.sw = net.sw + lo
    if net.loss == LOSS_AM_SOFTMAX:
        v.ahat = <char*>net.ahat + <size_t>lo * net.n[net.L - 1] * net.itemsize
        v.anorm = net.anorm + lo


cdef void _span_backward_rows(SpanJob* job, floating tag) noexcept nogil:
    """Errors of layers first..L-1 for this job's rows and their partial gradients, block
    by block (``SB`` rows: a block's errors and activations stay in cache while they are
    used), the gradients accumulated over the blocks. The direct first layer's gradient
    adds each block's rows in order to one sum per element, so its bits do not depend on
    the blocks."""
    cdef Net* v = &job.v
    cdef int l, nin, nout, rows, b0 = job.lo, b1
    cdef int SB = job.net.SB
    cdef bint acc
    cdef Py_ssize_t i, j
    cdef floating* Dl
    cdef double* g
    for l in range(job.first, v.L):
        g = v.gb[l]
        for j in range(v.n[l + 1]):
            g[j] = 0.0
    while True:              # at least one block, empty when the job has no rows
        b1 = job.hi if job.hi - b0 <= SB else b0 + SB
        rows = b1 - b0
        acc = b0 > job.lo
        _span_view(job, b0, b1)
        for l in range(v.L - 1, job.first - 1, -1):
            nin = v.n[l]
            nout = v.n[l + 1]
            Dl = <floating*>v.D[l]
            if l > job.first:
                _back_errors(v, l, rows, Dl)
            if l == 0 and v.direct:
                if floating is double:
                    pw_first_gradient_d(<double*>v.A[0], rows, nin, Dl, nout,
                                        <double*>v.gW[0], acc, 1)
                else:
                    pw_first_gradient_s(<float*>v.A[0], rows, nin, Dl, nout,
                                        <float*>v.gW[0], acc, 1)
            else:
                _prod_tn(Dl, rows, nout, <floating*>v.A[l], nin, <floating*>v.gW[l], acc)
            g = v.gb[l]
            for i in range(rows):
                for j in range(nout):
                    g[j] += Dl[i * nout + j]
        b0 = b1
        if b0 >= job.hi:
            break


cdef void _span_forward_rows(SpanJob* job, floating tag) noexcept nogil:
    """Forward from ``first`` for this job's rows, block by block; its share of the loss."""
    cdef int b0 = job.lo, b1
    cdef int SB = job.net.SB
    job.loss = 0.0
    while b0 < job.hi:
        b1 = job.hi if job.hi - b0 <= SB else b0 + SB
        _span_view(job, b0, b1)
        job.loss += _forward(&job.v, job.first, tag)
        b0 = b1


cdef void _span_bwd_worker_d(void* p) noexcept nogil:
    _span_backward_rows[double](<SpanJob*>p, 0.0)


cdef void _span_bwd_worker_s(void* p) noexcept nogil:
    _span_backward_rows[float](<SpanJob*>p, 0.0)


cdef void _span_fwd_worker_d(void* p) noexcept nogil:
    _span_forward_rows[double](<SpanJob*>p, 0.0)


cdef void _span_fwd_worker_s(void* p) noexcept nogil:
    _span_forward_rows[float](<SpanJob*>p, 0.0)


cdef void _rows_gradients(Net* net, int first, floating tag) noexcept nogil:
    """The span's gradients with the row-wise work split over threads by rows: partial
    gradients are added in thread order into thread 0's buffers (the packed gradients)
    and the bias sums, in double, into ``net.acc``-like per-thread sums (summed by the
    caller in thread order)."""
    cdef SpanJob* jobs = <SpanJob*>net.spans_jobs
    cdef void* args[PW_MAX_THREADS]
    cdef int T = net.nspan, t, l, N = net.N
    cdef Py_ssize_t i, cnt
    cdef floating* G
    memset(args, 0, sizeof(args))
    for t in range(T):
        jobs[t].lo = <int>(<long long>N * t // T)
        jobs[t].hi = <int>(<long long>N * (t + 1) // T)
        jobs[t].first = first
        args[t] = &jobs[t]
    if floating is double:
        pw_parallel(_span_bwd_worker_d, args, T)
    else:
        pw_parallel(_span_bwd_worker_s, args, T)
    for l in range(net.L - 1, first - 1, -1):
        G = <floating*>jobs[0].v.gW[l]
        cnt = <Py_ssize_t>net.n[l] * net.n[l + 1]
        for t in range(1, T):
            for i in range(cnt):
                G[i] += (<floating*>jobs[t].v.gW[l])[i]


cdef double _rows_forward(Net* net, int first, floating tag) noexcept nogil:
    """Forward from ``first`` with rows split over threads; the loss."""
    cdef SpanJob* jobs = <SpanJob*>net.spans_jobs
    cdef void* args[PW_MAX_THREADS]
    cdef int T = net.nspan, t
    cdef double total = 0.0
    memset(args, 0, sizeof(args))
    for t in range(T):
        jobs[t].first = first
        args[t] = &jobs[t]
    if floating is double:
        pw_parallel(_span_fwd_worker_d, args, T)
    else:
        pw_parallel(_span_fwd_worker_s, args, T)
    for t in range(T):
        total += jobs[t].loss
    return total


cdef inline double _rows_bias_sum(Net* net, int l, Py_ssize_t j) noexcept nogil:
    cdef SpanJob* jobs = <SpanJob*>net.spans_jobs
    cdef int t
    cdef double gsum = 0.0
    for t in range(net.nspan):
        gsum += jobs[t].v.gb[l][j]
    return gsum


cdef double _step_rows(Net* net, int first, floating lr) noexcept nogil:
    """``_step(net, first, lr, True)`` with the row-wise work (errors, partial gradients,
    forward pass, loss) split over threads by rows; partial gradients are added in thread
    order, then every layer of the span is updated once."""
    cdef SpanJob* jobs = <SpanJob*>net.spans_jobs
    cdef int l, nin, nout
    cdef Py_ssize_t i, j
    cdef floating* G
    cdef floating* WTm
    cdef floating* bl
    cdef floating lrl
    _rows_gradients(net, first, lr)
    for l in range(net.L - 1, first - 1, -1):
        nin = net.n[l]
        nout = net.n[l + 1]
        G = <floating*>jobs[0].v.gW[l]
        if not net.plain:
            for j in range(nout):
                G[<Py_ssize_t>nin * nout + j] = <floating>_rows_bias_sum(net, l, j)
            continue
        lrl = _layer_lr(net, l, lr)
        net.t[l] += 1
        if l == 0 and net.direct:
            # each thread took the first layer's gradient of its own rows (its contiguous
            # part of X), so X is streamed once, in order, by each thread
            WTm = <floating*>net.WT
            for i in range(nin):
                for j in range(nout):
                    WTm[i * net.NP + j] -= lrl * G[j * nin + i]
        else:
            axpy(nin * nout, -lrl, G, <floating*>net.W[l])
        bl = <floating*>net.b[l]
        for j in range(nout):
            bl[j] = <floating>(bl[j] - lrl * _rows_bias_sum(net, l, j))
    if not net.plain:
        _apply_span(net, first, lr)
    return _rows_forward(net, first, lr)


cdef void _fused_apply(Net* net, floating lr) noexcept nogil:
    """Apply the gradients of the last fused pass: W[l] -= lr gW[l], b[l] -= lr gb[l]
    (plain SGD; the first layer through its transposed copy), or the update rule."""
    cdef int l, nin, nout
    cdef Py_ssize_t i, j
    cdef floating* Gm = <floating*>net.G0
    cdef floating* WTm = <floating*>net.WT
    cdef floating* bl
    cdef floating* g
    cdef floating lrl
    if not net.plain:
        for l in range(net.L):
            g = <floating*>net.grad + net.goff[l] + <Py_ssize_t>net.n[l] * net.n[l + 1]
            for j in range(net.n[l + 1]):
                g[j] = <floating>net.gb[l][j]
        _apply_span(net, 0, lr)
        return
    for l in range(net.L):
        nin = net.n[l]
        nout = net.n[l + 1]
        lrl = _layer_lr(net, l, lr)
        net.t[l] += 1
        if l == 0:
            for i in range(nin):
                for j in range(nout):
                    WTm[i * net.NP + j] -= lrl * Gm[j * nin + i]
        else:
            axpy(nout * nin, -lrl, <floating*>net.gW[l], <floating*>net.W[l])
        bl = <floating*>net.b[l]
        for j in range(nout):
            bl[j] = <floating>(bl[j] - lrl * net.gb[l][j])


cdef double _epoch(Net* net, floating lr) noexcept nogil:
    """Snapshot, then one full-batch epoch of the schedule on fresh activations; NaN if a
    parameter became non-finite."""
    cdef int k
    cdef double loss = 0.0
    _snapshot(net, False)
    if net.fused:
        _fused_apply(net, lr)
        loss = _fused_pass(net, lr)
    else:
        for k in range(net.nspans):
            # only the last span step's loss is the epoch's: the others skip its log
            net.noloss = k < net.nspans - 1
            if net.spans_jobs != NULL:
                loss = _step_rows(net, net.spans[k], lr)
            else:
                loss = _step(net, net.spans[k], lr, True)
        net.noloss = False
    if not _params_finite(net, lr):
        return NAN
    return loss


cdef int _run_epochs(Net* net, int k, floating lr, double* losses, double* times,
                     double stop_below) noexcept nogil:
    """Up to ``k`` epochs in one call: each epoch's loss and the monotonic clock after it
    (CLOCK_MONOTONIC, the clock of Python's ``time.perf_counter`` on Linux); stops after
    an epoch whose loss is not finite (rolled back by the caller) or below
    ``stop_below``. Returns the number of epochs run."""
    cdef int i
    cdef double loss
    cdef timespec ts
    for i in range(k):
        loss = _epoch(net, lr)
        clock_gettime(CLOCK_MONOTONIC, &ts)
        losses[i] = loss
        times[i] = ts.tv_sec + 1e-9 * ts.tv_nsec
        if not (loss - loss == 0.0) or loss < stop_below:
            return i + 1
    return k


cdef bint _batch_step(Net* net, floating lr) noexcept nogil:
    """One pass of the schedule on the current (mini-batch) data, from a fresh forward
    (the last step does not refresh); False if a parameter became non-finite."""
    cdef int k
    _forward(net, 0, lr)
    for k in range(net.nspans):
        _step(net, net.spans[k], lr, k < net.nspans - 1)
    return _params_finite(net, lr)


cdef double _accuracy(Net* net, floating tag) noexcept nogil:
    cdef int N = net.N, K = net.n[net.L]
    cdef Py_ssize_t i, k, best
    cdef floating* out = <floating*>net.out
    cdef const floating* yf = <const floating*>net.y
    cdef Py_ssize_t hits = 0
    if net.loss == LOSS_BCE:
        # a sample is right when every one of its K labels is (subset accuracy)
        for i in range(N):
            best = 1
            for k in range(K):
                if (out[i * K + k] > 0) != (yf[i * K + k] > 0.5):
                    best = 0
            hits += best
    else:
        for i in range(N):
            best = 0
            for k in range(1, K):
                if out[i * K + k] > out[i * K + best]:
                    best = k
            hits += best == net.yi[i]
    return <double>hits / N


# ---------------------------------------------------------------- Python-facing engine

def _dtype_of(arr):
    return np.float64 if arr.dtype == np.float64 else np.float32


cdef class Engine:
    """Workspace and state of one training engine, in the layout of ``poswise._layout``.

    Not public: ``poswise.trainers`` builds engines from validated, contiguous arrays and
    an execution plan. The engine updates ``weights`` and ``biases`` in place (``C``
    instead of ``weights[0]`` in dual mode, the transposed copy ``direct`` in direct mode)
    and the update rule's ``state`` arrays. Its numpy twin is
    ``poswise._numpy_backend.NumpyEngine``.

    Parameters (besides the network's arrays and settings)
    ------------------------------------------------------
    rule : tuple or None
        ``UpdateRule.kernel_params()``; None is plain SGD.
    state : dict or None
        The rule's state, owned by the caller so that it outlives the engine: ``"t"`` (L
        int64 step counts) and ``"s1W"``, ``"s2W"``, ``"s1b"``, ``"s2b"`` (L arrays each,
        ``(n_out, n_in)`` / ``(n_out,)``, or None where the rule keeps no such state).
    spans : sequence of int
        The schedule: the first layer of each span step of an epoch (GD ``[0]``, PWO
        ``[L-1, ..., 0]``).
    scales : sequence of float
        Per-layer learning-rate multipliers (default 1).
    """
    cdef Net net
    cdef Net win             # the row window of ``window()``
    cdef bint windowed
    cdef bint f64
    cdef readonly Py_ssize_t capacity
    cdef readonly object grad_buffer
    cdef readonly tuple offsets
    cdef list _keep          # arrays whose memory the Net points into
    cdef object _X
    cdef object _y
    cdef object _out
    cdef object _dual_data
    cdef object _Xwin
    cdef object _sw
    cdef object _state
    cdef void** _winA        # the window's own pointer arrays
    cdef void** _winD

    def __cinit__(self):
        memset(&self.net, 0, sizeof(Net))
        memset(&self.win, 0, sizeof(Net))

    def __init__(self, weights, biases, str loss, str activation, double leak,
                 double s, double m, Py_ssize_t capacity, bint train=True, dual=None,
                 direct=None, int nthreads=1, Py_ssize_t fused_block=0,
                 bint row_threads=False, rule=None, state=None, spans=None, scales=None,
                 int span_block=0):
        cdef int L = len(weights)
        cdef int l, widest
        cdef object dt = weights[0].dtype
        self.f64 = dt == np.float64
        self.capacity = capacity
        self._keep = []
        self.net.L = L
        self.net.N = 0
        self.net.act = ACTIVATIONS[activation]
        self.net.leak = leak
        self.net.loss = LOSSES[loss]
        self.net.s = s
        self.net.m = m
        self.net.itemsize = np.dtype(dt).itemsize
        self.net.n = <int*>malloc((L + 1) * sizeof(int))
        self.net.W = <void**>calloc(L, sizeof(void*))
        self.net.b = <void**>calloc(L, sizeof(void*))
        self.net.A = <void**>calloc(L, sizeof(void*))
        self._winA = <void**>calloc(L, sizeof(void*))
        self._winD = <void**>calloc(L, sizeof(void*))
        if self.net.n == NULL or self.net.W == NULL or self.net.b == NULL or \
                self.net.A == NULL or self._winA == NULL or self._winD == NULL:
            raise MemoryError()
        for l in range(L):
            self.net.n[l] = weights[l].shape[1]
            self.net.W[l] = _ptr(weights[l])
            self.net.b[l] = _ptr(biases[l])
        self.net.n[L] = weights[L - 1].shape[0]
        widest = max(self.net.n[l] for l in range(L + 1))
        self._keep.extend(weights)
        self._keep.extend(biases)
        self.net.acc = <double*>calloc(widest, sizeof(double))
        if self.net.acc == NULL:
            raise MemoryError()
        self._set_rule(rule, state, weights, biases, dt)
        self._set_schedule(spans, scales)
        if dual is not None and self.net.rule.code != PW_RULE_SGD:
            raise ValueError("the dual first layer represents the SGD family only")
        if fused_block > 0:
            if direct is None or not train or loss == "am_softmax":
                raise ValueError("a fused engine needs the direct first layer, training "
                                 "and a loss other than am_softmax")
            if self.net.nspans != 1 or self.net.spans[0] != 0:
                raise ValueError("a fused engine runs one span from layer 0 per epoch")
            self.net.fused = True
            self.net.B = <int>min(fused_block, capacity)
        rows = self.net.B if self.net.fused else capacity
        for l in range(1, L):
            self.net.A[l] = self._alloc((rows, self.net.n[l]), dt)
        self._out = np.zeros((capacity, self.net.n[L]), dtype=dt)
        self.net.out = _ptr(self._out)
        if train:
            self.net.D = <void**>calloc(L, sizeof(void*))
            if self.net.D == NULL:
                raise MemoryError()
            for l in range(L):
                self.net.D[l] = self._alloc((rows, self.net.n[l + 1]), dt)
            offsets = [0]
            for l in range(L):
                offsets.append(offsets[l] + self.net.n[l] * self.net.n[l + 1]
                               + self.net.n[l + 1])
            self.offsets = tuple(offsets)
            self.net.goff = <Py_ssize_t*>calloc(L + 1, sizeof(Py_ssize_t))
            if self.net.goff == NULL:
                raise MemoryError()
            for l in range(L + 1):
                self.net.goff[l] = offsets[l]
            self.grad_buffer = np.zeros(offsets[L], dtype=dt)
            self._keep.append(self.grad_buffer)
            self.net.grad = _ptr(self.grad_buffer)
        if self.net.fused:
            self.net.gW = <void**>calloc(L, sizeof(void*))
            self.net.gb = <double**>calloc(L, sizeof(double*))
            if self.net.gW == NULL or self.net.gb == NULL:
                raise MemoryError()
            for l in range(L):
                self.net.gW[l] = self._grad_ptr(l) if l > 0 else NULL
                self.net.gb[l] = <double*>self._alloc((self.net.n[l + 1],), np.float64)
        if self.net.loss == LOSS_AM_SOFTMAX:
            h = self.net.n[L - 1]
            K = self.net.n[L]
            self.net.what = self._alloc((K, h), dt)
            self.net.ahat = self._alloc((capacity, h), dt)
            self.net.gw = self._alloc((K, h), dt)
            self.net.wnorm = <double*>calloc(K, sizeof(double))
            self.net.anorm = <double*>calloc(capacity, sizeof(double))
            if self.net.wnorm == NULL or self.net.anorm == NULL:
                raise MemoryError()
        self.net.dual = dual is not None
        dual_snap = []
        if dual is not None:
            P, G, C = dual[:3]
            a, V, va = dual[3:] if len(dual) > 3 else (np.ones(1), None, np.zeros(1))
            if a.dtype != np.float64 or a.shape != (1,) or va.dtype != np.float64 or \
                    va.shape != (1,) or (V is None) != (self.net.rule.momentum == 0) or \
                    (V is not None and (V.shape != C.shape or V.dtype != dt)):
                raise ValueError("dual first layer: a and va must be float64 (1,), V "
                                 "(n[1], N) of the network's dtype exactly with momentum")
            self._keep.extend((P, G, C, a, V, va))
            self.net.P = _ptr(P)
            self.net.G = _ptr(G)
            self.net.C = _ptr(C)
            self.net.dual_a = <double*><size_t>a.ctypes.data
            self.net.dual_va = <double*><size_t>va.ctypes.data
            self.net.V = NULL if V is None else _ptr(V)
            self.net.ncols = C.shape[1]
            dual_snap = [a, va] + ([V] if V is not None else [])
        self.net.direct = direct is not None
        self.net.nthreads = pw_clamp_threads(nthreads)
        if direct is not None:
            if dual is not None:
                raise ValueError("the first layer is either dual or direct, not both")
            WT = direct
            if WT.dtype != dt or WT.shape[0] != self.net.n[0] or WT.shape[1] < self.net.n[1] \
                    or (WT.shape[1] * WT.itemsize) % PW_VEC_BYTES \
                    or WT.shape[1] * WT.itemsize > PW_MAX_PAD_BYTES:
                raise ValueError(f"direct first layer: WT must be (n[0], NP), NP * itemsize a "
                                 f"multiple of {PW_VEC_BYTES} bytes, at most "
                                 f"{PW_MAX_PAD_BYTES}, NP >= n[1]")
            self._keep.append(WT)
            self.net.WT = _ptr(WT)
            self.net.NP = WT.shape[1]
            # the first layer's gradient scratch is its part of the packed gradients
            self.net.G0 = (self._grad_ptr(0) if train
                           else self._alloc((self.net.n[1], self.net.n[0]), dt))
        # State to snapshot: everything the updates write.
        snap = list(biases) + [w for l, w in enumerate(weights)
                               if not (l == 0 and (dual is not None or direct is not None))]
        if dual is not None:
            snap.append(dual[2])
            snap.extend(dual_snap)
        if direct is not None:
            snap.append(direct)
        snap.append(self._state["t"])
        for key in ("s1W", "s2W", "s1b", "s2b"):
            snap.extend(a for a in self._state[key] if a is not None)
        if self.net.fused:
            self._setup_fused_jobs(dt)
        if row_threads:
            if not train or dual is not None or loss == "am_softmax" or self.net.fused:
                raise ValueError("row-wise span steps need training, no dual first layer, "
                                 "a loss other than am_softmax and an engine that is not fused")
            self._setup_span_jobs(dt, span_block)
        self.net.nstate = len(snap)
        self.net.state = <void**>calloc(len(snap), sizeof(void*))
        self.net.backup = <void**>calloc(len(snap), sizeof(void*))
        self.net.nbytes = <size_t*>calloc(len(snap), sizeof(size_t))
        if self.net.state == NULL or self.net.backup == NULL or self.net.nbytes == NULL:
            raise MemoryError()
        for i, arr in enumerate(snap):
            self.net.state[i] = _ptr(arr)
            self.net.backup[i] = self._alloc(arr.shape, arr.dtype)
            self.net.nbytes[i] = arr.nbytes

    cdef int _set_rule(self, rule, state, weights, biases, dt) except -1:
        """The update rule and its state arrays (the caller's, or fresh zeros)."""
        cdef int L = self.net.L, l, ns
        if rule is None:
            rule = (PW_RULE_SGD, 0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 1)
        code, mom, nest, wd, b1, b2, eps, alpha, decay_biases = rule
        if code not in (PW_RULE_SGD, PW_RULE_ADAM, PW_RULE_ADAMW, PW_RULE_RMSPROP):
            raise ValueError(f"unknown update rule code {code!r}")
        self.net.rule.code = code
        self.net.rule.momentum = mom
        self.net.rule.nesterov = nest
        self.net.rule.weight_decay = wd
        self.net.rule.beta1 = b1
        self.net.rule.beta2 = b2
        self.net.rule.eps = eps
        self.net.rule.alpha = alpha
        self.net.rule.decay_biases = decay_biases
        self.net.plain = code == PW_RULE_SGD and mom == 0 and wd == 0
        ns = pw_rule_nstate(&self.net.rule)
        if state is None:
            state = new_rule_state(ns, [w.shape for w in weights], dt)
        self._check_state(state, ns, weights, dt)
        self._state = state
        self.net.t = <long long*><size_t>state["t"].ctypes.data
        self.net.s1W = <void**>calloc(L, sizeof(void*))
        self.net.s2W = <void**>calloc(L, sizeof(void*))
        self.net.s1b = <void**>calloc(L, sizeof(void*))
        self.net.s2b = <void**>calloc(L, sizeof(void*))
        if self.net.s1W == NULL or self.net.s2W == NULL or self.net.s1b == NULL or \
                self.net.s2b == NULL:
            raise MemoryError()
        for l in range(L):
            self.net.s1W[l] = self._state_ptr(state["s1W"][l])
            self.net.s2W[l] = self._state_ptr(state["s2W"][l])
            self.net.s1b[l] = self._state_ptr(state["s1b"][l])
            self.net.s2b[l] = self._state_ptr(state["s2b"][l])
        self._keep.append(state["t"])
        return 0

    cdef void* _state_ptr(self, a):
        if a is None:
            return NULL
        self._keep.append(a)
        return <void*><size_t>a.ctypes.data

    cdef int _check_state(self, state, int ns, weights, dt) except -1:
        cdef int L = self.net.L
        t = state["t"]
        if t.dtype != np.int64 or t.shape != (L,) or not t.flags.c_contiguous:
            raise ValueError("rule state: t must be a contiguous int64 array of L counts")
        for key, k, biasq in (("s1W", 1, False), ("s2W", 2, False), ("s1b", 1, True),
                              ("s2b", 2, True)):
            arrs = state[key]
            if len(arrs) != L:
                raise ValueError(f"rule state: {key} needs {L} entries")
            for l in range(L):
                shape = (weights[l].shape[0],) if biasq else weights[l].shape
                a = arrs[l]
                if (a is None) != (ns < k):
                    raise ValueError(f"rule state: {key}[{l}] must be "
                                     f"{'None' if ns < k else 'an array'} for this rule")
                if a is not None and (a.dtype != dt or a.shape != shape
                                      or not a.flags.c_contiguous):
                    raise ValueError(f"rule state: {key}[{l}] must be a contiguous "
                                     f"{np.dtype(dt).name} array of shape {shape}")
        return 0

    cdef int _set_schedule(self, spans, scales) except -1:
        cdef int L = self.net.L, k
        spans = [0] if spans is None else [int(f) for f in spans]
        if not spans or any(f < 0 or f >= L for f in spans):
            raise ValueError(f"spans must be a non-empty list of layers in [0, {L})")
        scales = [1.0] * L if scales is None else [float(c) for c in scales]
        if len(scales) != L:
            raise ValueError(f"scales needs one multiplier per layer ({L})")
        self.net.nspans = len(spans)
        self.net.spans = <int*>malloc(len(spans) * sizeof(int))
        self.net.lscale = <double*>malloc(L * sizeof(double))
        if self.net.spans == NULL or self.net.lscale == NULL:
            raise MemoryError()
        for k in range(len(spans)):
            self.net.spans[k] = spans[k]
        for k in range(L):
            self.net.lscale[k] = scales[k]
        return 0

    cdef void* _grad_ptr(self, int l) except NULL:
        return <char*>self.net.grad + <size_t>self.net.goff[l] * self.net.itemsize

    cdef int _setup_span_jobs(self, dt, int span_block) except -1:
        """One view and one set of partial-gradient buffers per thread (thread 0 adds the
        others' into its own, which are the packed gradients), and the rows per block of
        a span step's passes: as many as fit, with their activations and errors of every
        layer after the first (2 n[l] values per row and layer), the level-2 cache the CPU
        reports (``span_block`` > 0: that many rows)."""
        cdef int T = pw_clamp_threads(self.net.nthreads), t, l, L = self.net.L
        cdef long row_bytes = 0
        cdef SpanJob* jobs = <SpanJob*>calloc(T, sizeof(SpanJob))
        if jobs == NULL:
            raise MemoryError()
        self.net.spans_jobs = jobs
        self.net.nspan = T
        for l in range(1, L + 1):
            row_bytes += 2 * self.net.n[l] * <long>self.net.itemsize
        if span_block > 0:
            self.net.SB = span_block
        else:
            self.net.SB = <int>max(SPAN_BLOCK_MIN_ROWS,
                                   pw_cache_size(2) // row_bytes // 16 * 16)
        for t in range(T):
            jobs[t].v = self.net
            jobs[t].net = &self.net
            _new_view_arrays(&jobs[t].v, L)
            for l in range(L):
                jobs[t].v.gW[l] = (self._grad_ptr(l) if t == 0 else
                                   self._alloc((self.net.n[l + 1], self.net.n[l]), dt))
                jobs[t].v.gb[l] = <double*>self._alloc((self.net.n[l + 1],), np.float64)
        return 0

    cdef int _setup_fused_jobs(self, dt) except -1:
        """One view per thread: own block buffers and accumulators (thread 0 uses the
        engine's accumulators, which the update reads)."""
        cdef int T = pw_clamp_threads(self.net.nthreads), t, l, L = self.net.L
        cdef FusedJob* jobs = <FusedJob*>calloc(T, sizeof(FusedJob))
        if jobs == NULL:
            raise MemoryError()
        self.net.jobs = jobs
        self.net.njobs = T
        for t in range(T):
            jobs[t].v = self.net
            _new_view_arrays(&jobs[t].v, L)
            for l in range(L):
                if l > 0:
                    jobs[t].v.A[l] = self._alloc((self.net.B, self.net.n[l]), dt)
                jobs[t].v.D[l] = self._alloc((self.net.B, self.net.n[l + 1]), dt)
                if t == 0:
                    jobs[t].v.gW[l] = self.net.gW[l]
                    jobs[t].v.gb[l] = self.net.gb[l]
                else:
                    jobs[t].v.gW[l] = (self._alloc((self.net.n[l + 1], self.net.n[l]), dt)
                                       if l > 0 else NULL)
                    jobs[t].v.gb[l] = <double*>self._alloc((self.net.n[l + 1],), np.float64)
            if t > 0:
                jobs[t].v.G0 = self._alloc((self.net.n[1], self.net.n[0]), dt)
        return 0

    cdef void* _alloc(self, shape, dt) except NULL:
        arr = np.zeros(shape, dtype=dt)
        self._keep.append(arr)
        return _ptr(arr)

    def __dealloc__(self):
        free(self.net.n)
        free(self.net.W)
        free(self.net.b)
        free(self.net.A)
        free(self.net.D)
        free(self._winA)
        free(self._winD)
        free(self.net.acc)
        free(self.net.wnorm)
        free(self.net.anorm)
        free(self.net.state)
        free(self.net.backup)
        free(self.net.nbytes)
        free(self.net.s1W)
        free(self.net.s2W)
        free(self.net.s1b)
        free(self.net.s2b)
        free(self.net.goff)
        free(self.net.spans)
        free(self.net.lscale)
        cdef FusedJob* jobs = <FusedJob*>self.net.jobs
        cdef SpanJob* spans = <SpanJob*>self.net.spans_jobs
        cdef int t
        if spans != NULL:
            for t in range(self.net.nspan):
                _free_view_arrays(&spans[t].v)
            free(spans)
        if jobs != NULL:
            for t in range(self.net.njobs):
                _free_view_arrays(&jobs[t].v)
            free(jobs)
        free(self.net.gW)
        free(self.net.gb)

    @property
    def threads(self):
        """Threads the kernels use (the request clamped to [1, MAX_THREADS])."""
        return self.net.nthreads

    @property
    def fused(self):
        return bool(self.net.fused)

    @property
    def row_threads(self):
        """Whether span steps run row-wise (blocked by rows, threaded when threads > 1)."""
        return self.net.spans_jobs != NULL

    @property
    def span_block(self):
        """Rows per block of a row-wise span step's passes (0: span steps are not
        row-wise)."""
        return self.net.SB if self.net.spans_jobs != NULL else 0

    def set_data(self, X, y, P=None, G=None, n_total=None, sample_weight=None):
        """Point the engine at data ``X`` (rows <= capacity) and targets ``y``.

        In dual mode ``P`` and ``G`` are the data's ``X W0_init^T`` and ``X X_train^T``.
        ``n_total`` is the number of rows the mean loss is taken over (default: the rows
        of ``X``): losses and gradients are then this data's share of that mean.
        ``sample_weight`` (float64, one per row, >= 0) weighs each row's loss; the mean is
        then over the sum of the weights (or over ``n_total``, the global sum).
        ``X=None`` streams the data: the rows of ``y``, X only through ``window`` blocks.
        """
        cdef Py_ssize_t rows = y.shape[0] if X is None else X.shape[0]
        if rows > self.capacity or rows < 1:
            raise ValueError("data rows exceed the engine's capacity")
        if n_total is not None and n_total < rows:
            raise ValueError("n_total must be at least the rows of X")
        if X is None and (self.net.dual or self.net.fused):
            raise ValueError("streamed data (X=None) need an engine neither dual nor fused")
        self._X = X
        self._y = y
        self._sw = sample_weight
        self.windowed = False
        self.net.N = rows
        self.net.invN = 1.0 / n_total if n_total is not None else 0.0
        self.net.sw = NULL
        if sample_weight is not None:
            if sample_weight.dtype != np.float64 or sample_weight.shape != (rows,) \
                    or not sample_weight.flags.c_contiguous:
                raise ValueError("sample_weight must be contiguous float64, one per row")
            self.net.sw = <double*><size_t>sample_weight.ctypes.data
            if n_total is None:
                self.net.invN = 1.0 / float(np.sum(sample_weight))
        self.net.A[0] = NULL if X is None else _ptr(X)
        if y.dtype == np.intc:
            self.net.yi = <int*><size_t>y.ctypes.data
            self.net.y = NULL
        else:
            self.net.y = _ptr(y)
            self.net.yi = NULL
        if self.net.dual:
            self._dual_data = (P, G)
            self.net.P = _ptr(P)
            self.net.G = _ptr(G)

    def window(self, Py_ssize_t lo, Py_ssize_t hi, X_block=None):
        """Restrict ``forward`` and ``gradients`` to rows [lo, hi) of the data, with
        ``X_block`` (hi - lo rows) as their input if given; ``window(0, N)`` without a
        block restores the whole data."""
        cdef SpanJob job
        cdef int l
        if self.net.fused or self.net.dual:
            raise ValueError("row windows need an engine that is neither fused nor dual")
        if not 0 <= lo < hi <= self.net.N:
            raise ValueError(f"window [{lo}, {hi}) is not inside [0, {self.net.N})")
        if lo == 0 and hi == self.net.N and X_block is None:
            self.windowed = False
            return
        if X_block is not None and (X_block.shape[0] != hi - lo or
                                    X_block.shape[1] != self.net.n[0] or
                                    X_block.dtype != self._out.dtype):
            raise ValueError("X_block must have hi - lo rows of the data's width and dtype")
        if X_block is None and self._X is None and not (lo == 0 and hi == self.net.N):
            raise ValueError("streamed data: a window needs its block of X")
        job.v = self.net
        job.v.A = self._winA
        job.v.D = self._winD
        job.net = &self.net
        job.lo = <int>lo
        job.hi = <int>hi
        _span_view(&job, job.lo, job.hi)
        self.win = job.v
        self.win.nthreads = self.net.nthreads
        if X_block is not None:
            self._Xwin = X_block
            self.win.A[0] = _ptr(X_block)
        self.windowed = True

    cdef Net* _active(self):
        return &self.win if self.windowed else &self.net

    cdef int _needs_X(self, int first) except -1:
        # streamed data: passes through layer 0 take X from a window's block
        if first == 0 and self._X is None and not self.windowed:
            raise ValueError("streamed data: passes that read X need a window with its "
                             "block (engine.window(lo, hi, X_block))")
        return 0

    def forward(self, int start=0):
        """Forward from layer ``start``; return the mean loss (this data's share of it
        with ``n_total``) and refresh the output error.

        A fused engine also computes the gradients (its epochs start with the update).
        """
        cdef double loss
        cdef Net* net = self._active()
        if start < 0 or start >= self.net.L:
            raise ValueError("start out of range")
        self._needs_X(start)
        if self.net.fused:
            if start != 0:
                raise ValueError("a fused engine only runs whole forward passes")
            if self.f64:
                with nogil:
                    loss = _fused_pass[double](net, 0.0)
            else:
                with nogil:
                    loss = _fused_pass[float](net, 0.0)
            return loss
        if self.f64:
            with nogil:
                loss = _forward[double](net, start, 0.0)
        else:
            with nogil:
                loss = _forward[float](net, start, 0.0)
        return loss

    def step(self, int first, double lr):
        """One span step (see the module docstring); return the loss after it."""
        cdef double loss
        cdef Net* net = self._active()
        self._check_span(first, "step")
        self._needs_X(first)
        if self.f64:
            with nogil:
                loss = _step[double](net, first, lr, True)
        else:
            with nogil:
                loss = _step[float](net, first, <float>lr, True)
        return loss

    cdef int _check_span(self, int first, str what) except -1:
        if first < 0 or first >= self.net.L:
            raise ValueError("first out of range")
        if self.net.fused:
            raise ValueError(f"a fused engine has no {what}(): it only runs whole epochs")
        if self.net.D == NULL:
            raise ValueError("this engine was built for evaluation only")
        return 0

    def gradients(self, int first, bint accumulate=False):
        """Compute the gradients of layers first..L-1 (added to the buffer with
        ``accumulate``) from the current activations and output error, without updating;
        return the span's part of ``grad_buffer`` (a view: for l ascending, dE/dW[l]
        row-major then dE/db[l])."""
        cdef Net* net = self._active()
        cdef int l, j, nin, nout
        self._check_span(first, "gradients")
        self._needs_X(first)
        if self.net.dual:
            raise ValueError("the dual first layer has no primal gradient buffer")
        if self.net.spans_jobs != NULL and not self.windowed and not accumulate:
            if self.f64:
                with nogil:
                    _rows_gradients[double](net, first, 0.0)
            else:
                with nogil:
                    _rows_gradients[float](net, first, 0.0)
            buf = self.grad_buffer
            for l in range(first, self.net.L):
                nin, nout = self.net.n[l], self.net.n[l + 1]
                off = self.offsets[l] + nin * nout
                for j in range(nout):
                    buf[off + j] = _rows_bias_sum(net, l, j)
        elif self.f64:
            with nogil:
                _span_gradients[double](net, first, accumulate, 0.0)
        else:
            with nogil:
                _span_gradients[float](net, first, accumulate, 0.0)
        return self.grad_buffer[self.offsets[first]:]

    def apply(self, int first, double lr):
        """Apply the update rule to layers first..L-1 from ``grad_buffer`` (the general
        path, plain SGD included)."""
        cdef Net* net = self._active()
        self._check_span(first, "apply")
        if self.net.dual:
            raise ValueError("the dual first layer has no primal gradient buffer")
        if self.f64:
            with nogil:
                _apply_span[double](net, first, lr)
        else:
            with nogil:
                _apply_span[float](net, first, <float>lr)

    def epoch(self, double lr):
        """Snapshot the state, then one full-batch epoch of the schedule; the loss after
        it (NaN if it or any parameter is not finite)."""
        cdef double loss
        if self.windowed or self._X is None:
            raise ValueError("epoch() runs on the whole data in memory")
        if self.f64:
            with nogil:
                loss = _epoch[double](&self.net, lr)
        else:
            with nogil:
                loss = _epoch[float](&self.net, <float>lr)
        return loss

    def run_epochs(self, int k, double lr, double[::1] losses, double[::1] times,
                   double stop_below=-1e308):
        """Up to ``k`` full-batch epochs in one GIL-free call (what ``epoch`` does, k
        times): ``losses[i]`` and ``times[i]`` (``time.perf_counter``'s clock) after epoch
        i; stops after a non-finite loss (the caller rolls it back) or one below
        ``stop_below``. Returns the number of epochs run."""
        cdef int n
        if self.windowed or self._X is None:
            raise ValueError("run_epochs() runs on the whole data in memory")
        if k < 0 or losses.shape[0] < k or times.shape[0] < k:
            raise ValueError("losses and times need k entries")
        if self.f64:
            with nogil:
                n = _run_epochs[double](&self.net, k, lr, &losses[0], &times[0], stop_below)
        else:
            with nogil:
                n = _run_epochs[float](&self.net, k, <float>lr, &losses[0], &times[0],
                                       stop_below)
        return n

    def batch_step(self, double lr):
        """Forward the current mini-batch, then one pass of the schedule on it; False if
        a parameter became non-finite."""
        cdef bint ok
        self._check_span(0, "batch_step")
        self._needs_X(0)
        if self.f64:
            with nogil:
                ok = _batch_step[double](&self.net, lr)
        else:
            with nogil:
                ok = _batch_step[float](&self.net, <float>lr)
        return ok

    def params_finite(self):
        """Whether every trainable parameter is finite (what ``epoch`` checks; for epochs
        driven from outside through ``gradients``/``apply``)."""
        if self.f64:
            return bool(_params_finite[double](&self.net, 0.0))
        return bool(_params_finite[float](&self.net, 0.0))

    def snapshot(self):
        """Copy the trainable state (parameters, rule state, step counts) to the backup
        buffers."""
        with nogil:
            _snapshot(&self.net, False)

    def rollback(self):
        """Restore the trainable state from the last snapshot."""
        with nogil:
            _snapshot(&self.net, True)

    def accuracy(self):
        """Fraction of the current data classified correctly by the last forward."""
        if self.net.loss == LOSS_MSE:
            return float("nan")
        if self.f64:
            return _accuracy[double](self._active(), 0.0)
        return _accuracy[float](self._active(), 0.0)

    def output(self):
        """Copy of the logits (cosines for am_softmax) of the last forward."""
        return self._out[:self.net.N].copy()


def new_rule_state(int nstate, shapes, dt):
    """Zero state for a rule with ``nstate`` arrays per parameter over layers of weight
    ``shapes``: ``{"t", "s1W", "s2W", "s1b", "s2b"}`` (see ``Engine``)."""
    L = len(shapes)
    return {
        "t": np.zeros(L, dtype=np.int64),
        "s1W": [np.zeros(sh, dtype=dt) if nstate >= 1 else None for sh in shapes],
        "s2W": [np.zeros(sh, dtype=dt) if nstate >= 2 else None for sh in shapes],
        "s1b": [np.zeros(sh[0], dtype=dt) if nstate >= 1 else None for sh in shapes],
        "s2b": [np.zeros(sh[0], dtype=dt) if nstate >= 2 else None for sh in shapes],
    }


def rule_nstate(rule):
    """State arrays per parameter of a rule given as ``UpdateRule.kernel_params()``."""
    cdef pw_rule r
    code, mom, nest, wd, b1, b2, eps, alpha, _ = rule
    r.code, r.momentum, r.nesterov, r.weight_decay = code, mom, nest, wd
    r.beta1, r.beta2, r.eps, r.alpha = b1, b2, eps, alpha
    return pw_rule_nstate(&r)


cdef int _new_view_arrays(Net* v, int L) except -1:
    """Give a per-thread view its own pointer arrays (A, D, gW, gb); the buffers they
    point to are set by the caller."""
    v.A = <void**>calloc(L, sizeof(void*))
    v.D = <void**>calloc(L, sizeof(void*))
    v.gW = <void**>calloc(L, sizeof(void*))
    v.gb = <double**>calloc(L, sizeof(double*))
    if v.A == NULL or v.D == NULL or v.gW == NULL or v.gb == NULL:
        raise MemoryError()
    return 0


cdef void _free_view_arrays(Net* v) noexcept:
    free(v.A)
    free(v.D)
    free(v.gW)
    free(v.gb)


cdef inline void* _ptr(arr) except NULL:
    if not arr.flags.c_contiguous:
        raise ValueError("poswise kernels need C-contiguous arrays")
    return <void*><size_t>arr.ctypes.data


# The rule codes are defined once in _rules.h; poswise.updates names them.
from ..updates import RULE_CODES as _RULE_CODES
if _RULE_CODES != {"sgd": PW_RULE_SGD, "adam": PW_RULE_ADAM, "adamw": PW_RULE_ADAMW,
                   "rmsprop": PW_RULE_RMSPROP}:
    raise ImportError("poswise.updates.RULE_CODES disagree with _kernels/_rules.h")

# Limits shared with _direct.h (defined there once).
MAX_THREADS = PW_MAX_THREADS
DIRECT_MAX_WIDTH = PW_DIRECT_MAX_WIDTH
VEC_BYTES = PW_VEC_BYTES
SPAN_BLOCK_MIN = SPAN_BLOCK_MIN_ROWS


def direct_supported():
    """Whether this CPU runs the direct first-layer kernels (AVX2+FMA or AVX-512)."""
    return bool(pw_direct_supported())


def materialize_first_layer(W0_init, C, X, W0_out, double a=1.0):
    """W0_out := a W0_init - C X (the dual first layer's primal weights)."""
    cdef int n1 = C.shape[0], N = C.shape[1], D = X.shape[1]
    cdef void* pC = _ptr(C)
    cdef void* pX = _ptr(X)
    cdef void* pW = _ptr(W0_out)
    if a == 1.0:
        np.copyto(W0_out, W0_init)
    else:
        np.multiply(W0_init, a, out=W0_out, casting="unsafe")
    if W0_out.dtype == np.float64:
        with nogil:
            gemm(False, False, n1, D, N, -1.0, <double*>pC, N, <double*>pX, D, 1.0,
                 <double*>pW, D)
    else:
        with nogil:
            gemm(False, False, n1, D, N, <float>-1.0, <float*>pC, N, <float*>pX, D,
                 <float>1.0, <float*>pW, D)
