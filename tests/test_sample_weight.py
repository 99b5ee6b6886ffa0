"""Sample weights: a weighted mean loss; integer weights equal duplicated rows."""
import numpy as np
import pytest

from poswise import MLP, GradientDescent, LayerwiseGD, PositionWise
from poswise._layout import check_y
from conftest import make_problem, rel_err


def _case(loss, K, N=24, D=7, seed=0):
    rng = np.random.default_rng(seed)
    X, y = make_problem(N, D, K, loss, rng)
    if loss == "bce" and K > 1:
        y = (rng.random((N, K)) > 0.5).astype(float)
    w = rng.integers(0, 4, N).astype(float)
    w[0] = max(w[0], 1.0)
    return X, y, w


@pytest.mark.parametrize("loss,K", [("bce", 1), ("bce", 3), ("cross_entropy", 4),
                                    ("am_softmax", 4), ("mse", 2)])
@pytest.mark.parametrize("cls", [GradientDescent, PositionWise, LayerwiseGD])
@pytest.mark.parametrize("mode", ["primal", "direct", "dual", "numpy"])
def test_integer_weights_equal_duplicated_rows(loss, K, cls, mode):
    """Weight k on a row trains exactly as k copies of it (and 0 as leaving it out), for
    every first-layer mode: the reference is the plain run on the duplicated data."""
    from poswise._kernels._core import direct_supported
    if mode == "direct" and not direct_supported():
        pytest.skip("no AVX2")
    if mode == "dual" and loss == "am_softmax":
        mode = "primal"
    X, y, w = _case(loss, K, D=40 if mode == "dual" else 7)
    idx = np.repeat(np.arange(X.shape[0]), w.astype(int))
    net = MLP((X.shape[1], 6, 5, K), rng=1, activation="tanh")
    ref = net.copy()
    kw = dict(loss=loss, backend="numpy") if mode == "numpy" else dict(loss=loss,
                                                                          first_layer=mode)
    h = cls(0.05, update="momentum", **kw).fit(net, X, y, epochs=6, sample_weight=w)
    h_ref = cls(0.05, update="momentum", loss=loss, backend="numpy").fit(
        ref, X[idx], np.asarray(y)[idx], epochs=6)
    assert h.loss[-1] == pytest.approx(h_ref.loss[-1], rel=1e-9)
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        assert rel_err(a, b) <= 1e-9


def test_minibatch_weights_and_errors():
    X, y, w = _case("cross_entropy", 3)
    net = MLP((7, 5, 3), rng=0)
    h = PositionWise(0.05, loss="cross_entropy", batch_size=5, rng=0).fit(
        net, X, y, epochs=3, sample_weight=w)
    assert h.epochs == 3 and np.isfinite(h.loss[-1])
    before = [a.copy() for a in net.weights]
    for bad, msg in ((w[:-1], "sample_weight must have one entry per sample"),
                     (-w, "sample_weight must be finite and >= 0"),
                     (np.zeros_like(w), "sample_weight must have a positive sum"),
                     (np.full_like(w, np.nan), "sample_weight must be finite")):
        with pytest.raises(ValueError, match=msg):
            PositionWise(0.05, loss="cross_entropy").fit(net, X, y, epochs=2,
                                                         sample_weight=bad)
    for a, b in zip(net.weights, before):
        np.testing.assert_array_equal(a, b)
