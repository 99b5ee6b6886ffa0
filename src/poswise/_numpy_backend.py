"""The numpy twin of the training kernels (``backend="numpy"``).

Written for clarity, not speed: this is the readable specification of what
``poswise._kernels._core.Engine`` computes, the oracle its tests compare against, and a
benchmark baseline. Same layout, same interface, same span semantics (see the docstring of
``_core.pyx``): ``step(first, lr)`` computes the gradients of layers ``first..L-1`` from
the current activations and weights, updates those layers with the update rule (whose
formulas are :meth:`poswise.updates.UpdateRule.apply`), and re-runs the forward pass from
layer ``first``; an epoch runs the schedule's span steps in order.
"""
import numpy as np

from .losses import loss_value_and_delta

NORM_EPS = 1e-12


def activate(z, activation, leak):
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "leaky_relu":
        return np.where(z > 0, z, leak * z).astype(z.dtype)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "sigmoid":
        return sigmoid(z)
    return z


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow warnings."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def activation_derivative(a, activation, leak):
    """act'(z) written in terms of a = act(z)."""
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    if activation == "leaky_relu":
        return np.where(a > 0, 1, leak).astype(a.dtype)
    if activation == "tanh":
        return 1 - a * a
    if activation == "sigmoid":
        return a * (1 - a)
    return np.ones_like(a)


def normalize_rows(v):
    """(v / max(|v|, eps), |v|) row-wise."""
    norms = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=1))
    return (v / np.maximum(norms, NORM_EPS)[:, None]).astype(v.dtype), norms


def normalize_backward(g, vhat, norms):
    """Gradient w.r.t. v given the gradient w.r.t. vhat = v / max(|v|, eps)."""
    proj = np.sum(g * vhat, axis=1, keepdims=True)
    big = (norms > NORM_EPS)[:, None]
    return np.where(big, (g - proj * vhat) / np.maximum(norms, NORM_EPS)[:, None],
                    g / NORM_EPS).astype(g.dtype)


def forward_output(weights, biases, X, activation, leak, *, cosine=False):
    """Last-layer values for ``X``: logits, or cosines when ``cosine``."""
    a = X
    for W, b in zip(weights[:-1], biases[:-1]):
        a = activate(a @ W.T + b, activation, leak)
    if cosine:
        return normalize_rows(a)[0] @ normalize_rows(weights[-1])[0].T
    return a @ weights[-1].T + biases[-1]


def new_rule_state(rule, shapes, dtype):
    """Zero state of ``rule`` for layers with weight ``shapes`` (the layout of
    ``_core.Engine``'s ``state``: step counts ``t`` and per-layer state arrays)."""
    n = rule.n_state
    return {
        "t": np.zeros(len(shapes), dtype=np.int64),
        "s1W": [np.zeros(sh, dtype=dtype) if n >= 1 else None for sh in shapes],
        "s2W": [np.zeros(sh, dtype=dtype) if n >= 2 else None for sh in shapes],
        "s1b": [np.zeros(sh[0], dtype=dtype) if n >= 1 else None for sh in shapes],
        "s2b": [np.zeros(sh[0], dtype=dtype) if n >= 2 else None for sh in shapes],
    }


class NumpyEngine:
    """Plain-numpy engine with the interface of ``_core.Engine``.

    ``rule`` is an :class:`poswise.updates.UpdateRule` (None: plain SGD), ``state`` the
    rule's state (see :func:`new_rule_state`), ``spans`` the schedule (first layers of
    the span steps of an epoch), ``scales`` per-layer learning-rate multipliers.
    """

    threads = 1
    fused = False
    row_threads = False

    def __init__(self, weights, biases, loss, activation, leak, s, m, capacity,
                 train=True, dual=None, rule=None, state=None, spans=None, scales=None):
        from .updates import SGD
        if dual is not None:
            raise ValueError("the numpy backend has no dual first layer; "
                             "use first_layer='primal'")
        self.W, self.b = weights, biases      # updated in place
        self.loss, self.activation, self.leak, self.s, self.m = loss, activation, leak, s, m
        self.capacity = capacity
        self.L = len(weights)
        self.rule = SGD() if rule is None else rule
        self.state = (new_rule_state(self.rule, [w.shape for w in weights], weights[0].dtype)
                      if state is None else state)
        self.spans = [0] if spans is None else [int(f) for f in spans]
        self.scales = [1.0] * self.L if scales is None else [float(c) for c in scales]
        sizes = [w.size + w.shape[0] for w in weights]
        self.offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)]))
        self.grad_buffer = np.zeros(self.offsets[-1], dtype=weights[0].dtype)
        self._backup = None
        self._win = None

    def set_data(self, X, y, P=None, G=None, n_total=None, sample_weight=None):
        self.X, self.y, self.n_total, self.sw = X, y, n_total, sample_weight
        N = X.shape[0]
        self._win = None
        self.A = [X] + [np.zeros((N, w.shape[1]), dtype=X.dtype) for w in self.W[1:]]
        self.out = np.zeros((N, self.W[-1].shape[0]), dtype=X.dtype)
        self.delta = np.zeros_like(self.out)

    def window(self, lo, hi, X_block=None):
        """Restrict forward/gradients to rows [lo, hi), with ``X_block`` as their input."""
        if lo == 0 and hi == self.X.shape[0] and X_block is None:
            self._win = None
        else:
            self._win = (lo, hi, self.X[lo:hi] if X_block is None else X_block)

    def _rows(self):
        if self._win is None:
            return slice(None), self.X
        lo, hi, Xb = self._win
        return slice(lo, hi), Xb

    def _forward(self, start):
        L = self.L
        rows, X0 = self._rows()
        for l in range(start, L):
            a = X0 if l == 0 else self.A[l][rows]
            if l < L - 1:
                self.A[l + 1][rows] = activate(a @ self.W[l].T + self.b[l], self.activation,
                                               self.leak)
            elif self.loss == "am_softmax":
                self.ahat, self.anorm = normalize_rows(a)
                self.what, self.wnorm = normalize_rows(self.W[l])
                self.out[rows] = self.ahat @ self.what.T
            else:
                self.out[rows] = a @ self.W[l].T + self.b[l]
        n_total = self.n_total
        if n_total is None and self._win is not None:
            n_total = self.X.shape[0] if self.sw is None else float(np.sum(self.sw))
        value, self.delta[rows] = loss_value_and_delta(
            self.loss, self.out[rows], self.y[rows], s=self.s, m=self.m, n_total=n_total,
            weights=None if self.sw is None else self.sw[rows])
        return float(value)

    def forward(self, start=0):
        return self._forward(start)

    def _gradients(self, first):
        """{l: (dE/dW[l], dE/db[l])} for l in first..L-1, from the current state."""
        grads = {}
        rows, X0 = self._rows()
        delta = self.delta[rows]                     # dE/dZ[L-1]
        for l in range(self.L - 1, first - 1, -1):
            a = X0 if l == 0 else self.A[l][rows]
            if l == self.L - 1 and self.loss == "am_softmax":
                g_what = delta.T @ self.ahat
                grads[l] = (normalize_backward(g_what, self.what, self.wnorm), None)
                if l > first:
                    g_a = normalize_backward(delta @ self.what, self.ahat, self.anorm)
            else:
                grads[l] = (delta.T @ a, delta.sum(axis=0))
                if l > first:
                    g_a = delta @ self.W[l]
            if l > first:
                delta = g_a * activation_derivative(a, self.activation, self.leak)
        return grads

    def gradients(self, first, accumulate=False):
        """The span's gradients into the packed ``grad_buffer`` (see ``_core.Engine``)."""
        for l, (gW, gb) in self._gradients(first).items():
            o, k = self.offsets[l], self.W[l].size
            gw_part = self.grad_buffer[o:o + k].reshape(self.W[l].shape)
            gb_part = self.grad_buffer[o + k:self.offsets[l + 1]]
            if not accumulate:
                gw_part[...] = 0
                gb_part[...] = 0
            gw_part += gW
            if gb is not None:
                gb_part += gb
        return self.grad_buffer[self.offsets[first]:]

    def _update(self, l, gW, gb, lr):
        """One update of layer l by the rule: the weight and the bias are two parameters
        with the same step count."""
        st = self.state
        st["t"][l] += 1
        t, lrl = int(st["t"][l]), lr * self.scales[l]
        self.rule.apply(self.W[l], gW, [st["s1W"][l], st["s2W"][l]], t, lrl)
        if gb is not None:
            self.rule.apply(self.b[l], gb, [st["s1b"][l], st["s2b"][l]], t, lrl, bias=True)

    def apply(self, first, lr):
        cosine = self.loss == "am_softmax"
        for l in range(first, self.L):
            o, k = self.offsets[l], self.W[l].size
            gb = None if cosine and l == self.L - 1 else self.grad_buffer[o + k:self.offsets[l + 1]]
            self._update(l, self.grad_buffer[o:o + k].reshape(self.W[l].shape), gb, lr)

    def step(self, first, lr, refresh=True):
        for l, (gW, gb) in sorted(self._gradients(first).items()):
            self._update(l, gW, gb, lr)
        if refresh:
            return self._forward(first)
        return 0.0

    def _finite(self):
        return all(np.isfinite(p).all() for p in self.W + self.b)

    def params_finite(self):
        return bool(self._finite())

    def epoch(self, lr):
        self.snapshot()
        for first in self.spans:
            loss = self.step(first, lr)
        return loss if self._finite() else float("nan")

    def run_epochs(self, k, lr, losses, times, stop_below=-np.inf):
        """Up to k epochs, as ``_core.Engine.run_epochs``."""
        import time
        for i in range(k):
            losses[i] = self.epoch(lr)
            times[i] = time.perf_counter()
            if not np.isfinite(losses[i]) or losses[i] < stop_below:
                return i + 1
        return k

    def batch_step(self, lr):
        self._forward(0)
        for k, first in enumerate(self.spans):
            self.step(first, lr, refresh=k < len(self.spans) - 1)
        return self._finite()

    def _state_arrays(self):
        st = self.state
        return self.W + self.b + [st["t"]] + [a for key in ("s1W", "s2W", "s1b", "s2b")
                                              for a in st[key] if a is not None]

    def snapshot(self):
        self._backup = [a.copy() for a in self._state_arrays()]

    def rollback(self):
        for dst, src in zip(self._state_arrays(), self._backup):
            np.copyto(dst, src)

    def accuracy(self):
        rows, _ = self._rows()
        out, y = self.out[rows], self.y[rows]
        if self.loss == "mse":
            return float("nan")
        if self.loss == "bce":
            hits = (out > 0) == (np.reshape(y, out.shape) > 0.5)
            return float(np.mean(hits.all(axis=1)))
        return float(np.mean(np.argmax(out, axis=1) == y))

    def output(self):
        rows, _ = self._rows()
        return self.out[rows].copy()
