"""Shared by the tests/test_reliability_*.py files: every way an epoch can be computed,
reference runs recorded epoch by epoch, and engine hooks."""
import warnings

import numpy as np
import pytest

from poswise import MLP, DivergenceWarning, GradientDescent, PositionWise
from poswise import _plan

# id -> (trainer class, trainer keywords, row-threaded): every first-layer mode (primal,
# dual, direct), the fused GD epoch (direct, full batch), row-threaded PWO span steps,
# mini-batches, and the numpy twin.
MODES = {
    "GD-primal": (GradientDescent, dict(first_layer="primal"), False),
    "GD-dual": (GradientDescent, dict(first_layer="dual"), False),
    "GD-dual-momentum": (GradientDescent, dict(first_layer="dual", update="nesterov"),
                         False),
    "GD-direct-fused": (GradientDescent, dict(first_layer="direct"), False),
    "PWO-primal": (PositionWise, dict(first_layer="primal"), False),
    "PWO-dual": (PositionWise, dict(first_layer="dual"), False),
    "PWO-direct": (PositionWise, dict(first_layer="direct"), False),
    "PWO-direct-rows": (PositionWise, dict(first_layer="direct", threads=2), True),
    "GD-mini-direct": (GradientDescent, dict(first_layer="direct", batch_size=8), False),
    "PWO-mini-primal": (PositionWise, dict(first_layer="primal", batch_size=8), False),
    "GD-numpy": (GradientDescent, dict(backend="numpy"), False),
    "PWO-numpy-mini": (PositionWise, dict(backend="numpy", batch_size=8), False),
}
MODE_IDS = list(MODES)


def direct_available():
    from poswise._kernels import _core
    return _core.direct_supported()


def make_trainer(mode, monkeypatch, lr=0.3, **kw):
    """The trainer of ``mode`` (skips direct modes on CPUs without AVX2; row-threaded
    PWO through the plan's threshold, as tests/test_updates.py does)."""
    cls, opts, rows = MODES[mode]
    if opts.get("first_layer") == "direct" and not direct_available():
        pytest.skip("no AVX2 on this CPU")
    if rows:
        monkeypatch.setattr(_plan, "SPAN_THREAD_MIN_ROWS", 1)
    return cls(lr, rng=0, **dict(opts, **kw))


def plan_of(tr, net, X, epochs=5):
    return _plan.make_plan(tr, net.sizes, X.shape[0], X.shape[1], epochs, tr._rule(),
                           itemsize=X.itemsize)


def params(net):
    """The network's parameters as bytes (bit-for-bit comparisons)."""
    return [(a.dtype.str, a.shape, a.tobytes()) for a in list(net.weights) + list(net.biases)]


def data(n=32, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X[:, 0] - X[:, 1] > 0).astype(float)


def record_run(tr, net0, X, y, epochs, **kw):
    """An uninterrupted run: (parameters after each epoch 0..epochs, its History)."""
    net = net0.copy()
    seen = {}

    def cb(epoch, hist):
        seen[epoch] = params(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        hist = tr.fit(net, X, y, epochs=epochs, callbacks=cb, **kw)
    assert hist.epochs == epochs and hist.stopped_reason == "max_epochs"
    assert params(net) == seen[epochs]
    return [seen[e] for e in range(epochs + 1)], hist


def assert_consistent(hist, validation=False):
    n = hist.epochs + 1
    assert len(hist.loss) == len(hist.seconds) == n, (len(hist.loss), len(hist.seconds), n)
    if validation:
        assert len(hist.val_loss) == len(hist.val_accuracy) == n
    else:
        assert hist.val_loss == [] and hist.val_accuracy == []
    assert all(np.isfinite(hist.loss))


class Proxy:
    """Wraps an engine; ``hook(method, when)`` runs before ('before') and after
    ('after') each call of an engine method."""

    def __init__(self, engine, hook):
        self._engine, self._hook = engine, hook

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self._hook(name, "before")
            out = attr(*args, **kwargs)
            self._hook(name, "after")
            return out
        return call


def hook_engines(monkeypatch, hook, captured=None):
    """Every engine built is wrapped: ``hook(role, method, when)`` with role 'train' or
    'val'; ``captured`` (a list) receives the keywords each engine was built with."""
    real = _plan._new_engine

    def factory(*args, **kwargs):
        engine = real(*args, **kwargs)
        role = "val" if kwargs.get("train", True) is False else "train"
        if captured is not None:
            captured.append((role, args, kwargs))
        return Proxy(engine, lambda name, when: hook(role, name, when))

    monkeypatch.setattr(_plan, "_new_engine", factory)


def new_net(dtype=np.float64, sizes=(6, 5, 4, 1), activation="tanh", seed=2):
    return MLP(list(sizes), activation=activation, dtype=dtype, rng=seed)
