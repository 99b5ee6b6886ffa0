"""The numpy twin of the training kernels (``backend="numpy"``).

Written for clarity, not speed: this is the readable specification of what
``poswise._kernels._core.Engine`` computes, the oracle its tests compare against, and a
benchmark baseline. Same layout, same interface, same span semantics (see the docstring of
``_core.pyx``): ``step(first, lr)`` computes the gradients of layers ``first..L-1`` from
the current activations and weights, updates those layers, and re-runs the forward pass
from layer ``first``.
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


class NumpyEngine:
    """Plain-numpy engine with the interface of ``_core.Engine``."""

    def __init__(self, weights, biases, loss, activation, leak, s, m, capacity,
                 train=True, dual=None):
        if dual is not None:
            raise ValueError("the numpy backend has no dual first layer; "
                             "use first_layer='primal'")
        self.W, self.b = weights, biases      # updated in place
        self.loss, self.activation, self.leak, self.s, self.m = loss, activation, leak, s, m
        self.capacity = capacity
        self.L = len(weights)
        self._backup = None

    def set_data(self, X, y, P=None, G=None):
        self.X, self.y = X, y
        self.A = [X] + [None] * (self.L - 1)    # A[l] is the input of layer l

    def _forward(self, start):
        L = self.L
        for l in range(start, L):
            a = self.A[l]
            if l < L - 1:
                self.A[l + 1] = activate(a @ self.W[l].T + self.b[l], self.activation,
                                         self.leak)
            elif self.loss == "am_softmax":
                self.ahat, self.anorm = normalize_rows(a)
                self.what, self.wnorm = normalize_rows(self.W[l])
                self.out = self.ahat @ self.what.T
            else:
                self.out = a @ self.W[l].T + self.b[l]
        value, self.delta = loss_value_and_delta(self.loss, self.out, self.y, s=self.s,
                                                 m=self.m)
        return float(value)

    def forward(self):
        return self._forward(0)

    def _gradients(self, first):
        """{l: (dE/dW[l], dE/db[l])} for l in first..L-1, from the current state."""
        grads = {}
        delta = self.delta                     # dE/dZ[L-1]
        for l in range(self.L - 1, first - 1, -1):
            a = self.A[l]
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

    def step(self, first, lr, refresh=True):
        for l, (gW, gb) in self._gradients(first).items():
            self.W[l] -= lr * gW
            if gb is not None:
                self.b[l] -= lr * gb
        if refresh:
            return self._forward(first)
        return 0.0

    def epoch(self, pwo, lr):
        self.snapshot()
        if not pwo:
            return self.step(0, lr)
        for first in range(self.L - 1, -1, -1):
            loss = self.step(first, lr)
        return loss

    def batch_step(self, pwo, lr):
        self._forward(0)
        if pwo:
            for first in range(self.L - 1, 0, -1):
                self.step(first, lr)
        self.step(0, lr, refresh=False)

    def snapshot(self):
        self._backup = ([w.copy() for w in self.W], [b.copy() for b in self.b])

    def rollback(self):
        for dst, src in zip(self.W + self.b, self._backup[0] + self._backup[1]):
            np.copyto(dst, src)

    def accuracy(self):
        if self.loss == "mse":
            return float("nan")
        if self.loss == "bce":
            return float(np.mean((self.out[:, 0] > 0) == (self.y > 0.5)))
        return float(np.mean(np.argmax(self.out, axis=1) == self.y))

    def output(self):
        return self.out.copy()
