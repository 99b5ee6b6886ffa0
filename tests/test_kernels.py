"""Kernel-level tests: gradients by finite differences, span semantics, edge shapes."""
import numpy as np
import pytest

import poswise
from poswise._kernels._core import Engine
from poswise._numpy_backend import NumpyEngine
from poswise._layout import check_y
from conftest import make_problem, rel_err

ENGINES = {"cython": Engine, "numpy": NumpyEngine}
ACTS = ["relu", "tanh", "sigmoid", "leaky_relu", "identity"]
LOSSES = [("bce", 1), ("cross_entropy", 3), ("am_softmax", 3), ("mse", 2)]


def _engine(kind, net, X, y, loss, s=30.0, m=0.35, pwo=True):
    spans = list(range(net.n_layers - 1, -1, -1)) if pwo else [0]
    eng = ENGINES[kind](net._weights, net._biases, loss, net.activation, net.leak, s, m,
                        X.shape[0], spans=spans)
    eng.set_data(X, y)
    return eng


def _problem(loss, K, dtype=np.float64, N=9, D=5, seed=0):
    rng = np.random.default_rng(seed)
    X, y = make_problem(N, D, K, loss, rng)
    X = np.ascontiguousarray(X, dtype=dtype)
    return X, check_y(y, loss, N, K, dtype)


def _engine_gradient(kind, net, X, y, loss, first=0, **kw):
    """Gradient of layers >= first, read off one step with lr = 1."""
    before = [w.copy() for w in net._weights], [b.copy() for b in net._biases]
    eng = _engine(kind, net, X, y, loss, **kw)
    eng.forward()
    eng.step(first, 1.0)
    gW = [b - a for a, b in zip(net._weights, before[0])]
    gb = [b - a for a, b in zip(net._biases, before[1])]
    for dst, src in zip(net._weights + net._biases, before[0] + before[1]):
        np.copyto(dst, src)
    return gW, gb


def _numeric_gradient(kind, net, X, y, loss, arr, h=1e-6, **kw):
    g = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + h
        fp = _engine(kind, net, X, y, loss, **kw).forward()
        arr[idx] = old - h
        fm = _engine(kind, net, X, y, loss, **kw).forward()
        arr[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("kind", ["cython", "numpy"])
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("loss,K", LOSSES)
def test_gradient_matches_finite_differences(kind, activation, loss, K):
    X, y = _problem(loss, K, seed=K)
    net = poswise.MLP((5, 4, 3, K), activation=activation, rng=1)
    # shift biases so that no relu pre-activation sits at its kink
    for b in net._biases:
        b += 0.05
    s, m = (4.0, 0.2) if loss == "am_softmax" else (30.0, 0.35)
    gW, gb = _engine_gradient(kind, net, X, y, loss, s=s, m=m)
    for l in range(3):
        num = _numeric_gradient(kind, net, X, y, loss, net._weights[l], s=s, m=m)
        assert rel_err(gW[l], num) < 1e-6, (l, gW[l], num)
        if loss == "am_softmax" and l == 2:
            assert np.all(gb[l] == 0)         # the cosine layer has no bias
            continue
        num = _numeric_gradient(kind, net, X, y, loss, net._biases[l], s=s, m=m)
        assert rel_err(gb[l], num) < 1e-6


@pytest.mark.parametrize("kind", ["cython", "numpy"])
def test_am_softmax_loss_value(kind):
    """The am_softmax loss is softmax cross-entropy of s (cos - m [k = y])."""
    X, y = _problem("am_softmax", 3)
    net = poswise.MLP((5, 4, 3), rng=2, activation="tanh")
    value = _engine(kind, net, X, y, "am_softmax", s=10.0, m=0.3).forward()
    h = np.tanh(X @ net.weights[0].T + net.biases[0])
    W = net.weights[1]
    cos = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
        W / np.linalg.norm(W, axis=1, keepdims=True)).T
    logits = 10.0 * (cos - 0.3 * np.eye(3)[y])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert value == pytest.approx(-np.mean(logp[np.arange(len(y)), y]), rel=1e-12)


@pytest.mark.parametrize("first", [0, 1, 2])
@pytest.mark.parametrize("loss,K", LOSSES)
def test_span_step_updates_only_layers_from_first(first, loss, K):
    X, y = _problem(loss, K, N=12, D=6)
    net = poswise.MLP((6, 5, 4, K), rng=3)
    twin = net.copy()
    before = [w.copy() for w in net.weights]
    e1 = _engine("cython", net, X, y, loss)
    e2 = _engine("numpy", twin, X, y, loss)
    e1.forward(), e2.forward()
    l1, l2 = e1.step(first, 0.1), e2.step(first, 0.1)
    assert l1 == pytest.approx(l2, rel=1e-12)
    for l in range(3):
        changed = not np.array_equal(net.weights[l], before[l])
        assert changed == (l >= first)
        assert rel_err(net.weights[l], twin.weights[l]) <= 1e-12
        assert rel_err(net.biases[l], twin.biases[l]) <= 1e-12
    np.testing.assert_allclose(e1.output(), e2.output(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("N,D,sizes", [(1, 1, (1, 1)), (1, 4, (4, 3, 1)), (7, 1, (1, 1, 1)),
                                       (1, 3, (3, 2, 2))])
def test_edge_shapes_match_twin(dtype, tol, N, D, sizes):
    loss = "bce" if sizes[-1] == 1 else "cross_entropy"
    X, y = _problem(loss, sizes[-1], dtype=dtype, N=N, D=D)
    net = poswise.MLP(sizes, rng=0, dtype=dtype, activation="tanh")
    twin = net.copy()
    e1, e2 = _engine("cython", net, X, y, loss), _engine("numpy", twin, X, y, loss)
    e1.forward(), e2.forward()
    for _ in range(3):
        a, b = e1.epoch(0.1), e2.epoch(0.1)
        assert a == pytest.approx(b, rel=tol)
    for l in range(net.n_layers):
        assert rel_err(net.weights[l], twin.weights[l]) <= tol


def test_rollback_restores_snapshot():
    X, y = _problem("bce", 1)
    net = poswise.MLP((5, 4, 1), rng=0)
    before = [a.copy() for a in net.weights + net.biases]
    eng = _engine("cython", net, X, y, "bce")
    eng.forward()
    eng.epoch(0.5)                # snapshots the state first
    assert not np.array_equal(net.weights[0], before[0])
    eng.rollback()
    for a, b in zip(net.weights + net.biases, before):
        np.testing.assert_array_equal(a, b)


def test_accuracy_and_output_match_predict():
    X, y = _problem("cross_entropy", 3, N=30)
    net = poswise.MLP((5, 6, 3), rng=0)
    eng = _engine("cython", net, X, y, "cross_entropy")
    eng.forward()
    np.testing.assert_allclose(eng.output(), net.decision_function(X), rtol=1e-12)
    assert eng.accuracy() == pytest.approx(np.mean(net.predict(X) == y))
