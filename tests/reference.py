"""An independent, deliberately naive implementation of the algorithm (GD and the
position-wise schedule, as docs/design.md states them) for the tests.

It shares no code with poswise: every step recomputes the full forward pass from scratch,
keeps pre-activations, takes activation derivatives from them, and updates layer by layer
exactly as the algorithm text reads.
"""
import numpy as np


def act(z, name, leak=0.01):
    return {"relu": lambda: np.maximum(z, 0.0),
            "tanh": lambda: np.tanh(z),
            "sigmoid": lambda: 1.0 / (1.0 + np.exp(-z)),
            "leaky_relu": lambda: np.where(z > 0, z, leak * z),
            "identity": lambda: z}[name]()


def dact(z, name, leak=0.01):
    if name == "relu":
        return (z > 0).astype(float)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, leak)
    return np.ones_like(z)


def forward(W, b, X, name):
    """Return pre-activations Z[l] and layer inputs A[l] (A[0] = X)."""
    A, Z = [X], []
    for l in range(len(W)):
        z = A[-1] @ W[l].T + b[l]
        Z.append(z)
        if l < len(W) - 1:
            A.append(act(z, name))
    return Z, A


def loss_and_output_grad(z, y, loss):
    N = z.shape[0]
    if loss == "bce":
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        e = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        return e, ((p - y) / N)[:, None]
    if loss == "cross_entropy":
        e_z = np.exp(z - z.max(axis=1, keepdims=True))
        p = e_z / e_z.sum(axis=1, keepdims=True)
        Y = np.eye(z.shape[1])[y]
        return -np.mean(np.log(p[np.arange(N), y])), (p - Y) / N
    if loss == "mse":
        return 0.5 * np.sum((z - y) ** 2) / N, (z - y) / N
    raise ValueError(loss)


def gradients(W, b, X, y, name, loss, first):
    """Gradients of layers first..L-1 from a fresh forward pass."""
    Z, A = forward(W, b, X, name)
    e, dz = loss_and_output_grad(Z[-1], y, loss)
    grads = {}
    for l in range(len(W) - 1, first - 1, -1):
        grads[l] = (dz.T @ A[l], dz.sum(axis=0))
        if l > first:
            dz = (dz @ W[l]) * dact(Z[l - 1], name)
    return e, grads


def train(W, b, X, y, *, name="relu", loss="bce", lr=0.1, epochs=10, pwo=False):
    """Return (W, b, losses) after ``epochs`` epochs of GD or PWO (float64 copies)."""
    W = [w.astype(float).copy() for w in W]
    b = [v.astype(float).copy() for v in b]
    X = X.astype(float)
    L = len(W)
    losses = [gradients(W, b, X, y, name, loss, L - 1)[0]]
    for _ in range(epochs):
        spans = range(L - 1, -1, -1) if pwo else [0]
        for first in spans:
            _, grads = gradients(W, b, X, y, name, loss, first)
            for l, (gW, gb) in grads.items():
                W[l] = W[l] - lr * gW
                b[l] = b[l] - lr * gb
        losses.append(gradients(W, b, X, y, name, loss, L - 1)[0])
    return W, b, losses
