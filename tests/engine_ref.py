"""A numpy engine with the span-step interface the epoch runners drive.

Independent of poswise's engines: the runners' tests use it (and the real engines once they
offer the interface) to check that K ranks and streamed data give the single-process run.
Interface: set_data(X, y, n_total), forward(start) -> loss share, gradients(first,
accumulate) -> packed view of grad_buffer (layers first..L-1 ascending, W row-major then
b), apply(first, lr) with an update rule of poswise.updates (per-parameter state and step
counts), window(lo, hi, X_block). Losses: bce, cross_entropy, mse.
"""
import numpy as np

from poswise._numpy_backend import activate, activation_derivative
from poswise.losses import loss_value_and_delta
from poswise.updates import get_update


class RefEngine:
    def __init__(self, weights, biases, loss, activation="relu", leak=0.01, update="sgd"):
        self.W, self.b = weights, biases            # updated in place
        self.loss, self.activation, self.leak = loss, activation, leak
        self.rule = get_update(update)
        self.L = len(weights)
        self.params = [p for l in range(self.L) for p in (self.W[l], self.b[l])]
        self.state = [self.rule.new_state(p) for p in self.params]
        self.t = [0] * len(self.params)
        sizes = [w.size + b.size for w, b in zip(self.W, self.b)]
        self.offset = [int(sum(sizes[:l])) for l in range(self.L)]
        self.grad_buffer = np.zeros(sum(sizes), dtype=self.W[0].dtype)

    def set_data(self, X, y, n_total=None):
        n = len(y)
        self.X, self.y = X, y
        self.n_total = n if n_total is None else n_total
        dt = self.W[0].dtype
        self.A = [X] + [np.zeros((n, w.shape[0]), dt) for w in self.W[:-1]]
        self.out = np.zeros((n, self.W[-1].shape[0]), dt)
        self.delta = np.zeros_like(self.out)
        self.window(0, n)

    def window(self, lo, hi, X_block=None):
        self.lo, self.hi, self.Xb = lo, hi, X_block

    def _input(self, l):
        if l == 0:
            return self.Xb if self.Xb is not None else self.X[self.lo:self.hi]
        return self.A[l][self.lo:self.hi]

    def forward(self, start=0):
        lo, hi = self.lo, self.hi
        a = self._input(start)
        for l in range(start, self.L):
            z = a @ self.W[l].T + self.b[l]
            if l < self.L - 1:
                a = activate(z, self.activation, self.leak)
                self.A[l + 1][lo:hi] = a
            else:
                self.out[lo:hi] = z
        value, delta = loss_value_and_delta(self.loss, self.out[lo:hi], self.y[lo:hi])
        scale = (hi - lo) / self.n_total
        self.delta[lo:hi] = delta * scale
        return float(value) * scale

    def _layer_views(self, view, first, l):
        o = self.offset[l] - self.offset[first]
        w, b = self.W[l], self.b[l]
        return (view[o:o + w.size].reshape(w.shape),
                view[o + w.size:o + w.size + b.size])

    def gradients(self, first, accumulate=False):
        view = self.grad_buffer[self.offset[first]:]
        if not accumulate:
            view[...] = 0
        d = self.delta[self.lo:self.hi]
        for l in range(self.L - 1, first - 1, -1):
            a = self._input(l)
            gW, gb = self._layer_views(view, first, l)
            gW += d.T @ a
            gb += d.sum(axis=0)
            if l > first:
                d = (d @ self.W[l]) * activation_derivative(a, self.activation, self.leak)
        return view

    def apply(self, first, lr):
        view = self.grad_buffer[self.offset[first]:]
        for l in range(first, self.L):
            for k, g in zip((2 * l, 2 * l + 1), self._layer_views(view, first, l)):
                self.t[k] += 1
                self.rule.apply(self.params[k], g.copy(), self.state[k], self.t[k], lr)
