"""fit's patience rule: the stop epoch against a plain loop over the loss history."""
import numpy as np
import pytest

import poswise
from conftest import make_problem


def expected_stop(losses, patience, tol):
    """The first epoch e with e - best_epoch >= patience, written out directly: best_epoch
    is the last epoch whose loss beat the best of the epochs before it by more than
    tol * |best| (the initial loss, epoch 0, is the first best)."""
    best, best_epoch = losses[0], 0
    for e in range(1, len(losses)):
        if losses[e] < best - tol * abs(best):
            best, best_epoch = losses[e], e
        if e - best_epoch >= patience:
            return e
    return None


def _problem(seed=0, D=12, N=40):
    """Noisy regression with a small network: the loss levels off above zero, so the
    relative improvements shrink until the patience rule fires."""
    rng = np.random.default_rng(seed)
    X, y = make_problem(N, D, 1, "mse", rng)
    return X, y, poswise.MLP([D, 3, 2, 1], rng=rng)


@pytest.mark.parametrize("schedule", ["gd", "pwo", "layerwise"])
@pytest.mark.parametrize("mode", ["chunks", "per_epoch", "minibatch"])
@pytest.mark.parametrize("patience,tol", [(3, 1e-2), (8, 1e-2), (25, 0.05)])
def test_stops_where_the_history_says(schedule, mode, patience, tol):
    X, y, net = _problem()
    ref_net = net.copy()
    kw = {"batch_size": 16} if mode == "minibatch" else {}
    cls = poswise.SCHEDULES[schedule]
    fit_kw = {"callbacks": [lambda e, h: False]} if mode == "per_epoch" else {}
    full = cls(0.05, loss="mse", rng=1, **kw).fit(ref_net, X, y, epochs=300, **fit_kw)
    stop = expected_stop(np.asarray(full.loss), patience, tol)
    assert stop is not None and stop < 300, "the case must stall within its budget"
    hist = cls(0.05, loss="mse", rng=1, **kw).fit(net, X, y, epochs=300, patience=patience, tol=tol,
                                     **fit_kw)
    assert hist.stopped_reason == "no_improvement"
    assert hist.epochs == stop
    np.testing.assert_array_equal(hist.loss, full.loss[:stop + 1])


def test_no_stop_while_improving_and_target_first():
    X, y, net = _problem(1)
    hist = poswise.GradientDescent(0.02, loss="mse").fit(net.copy(), X, y, epochs=50, patience=5,
                                            tol=0.0)
    assert np.all(np.diff(hist.loss) < 0)      # strictly improving: never stalls
    assert hist.stopped_reason == "max_epochs" and hist.epochs == 50
    target = hist.loss[20]
    h2 = poswise.GradientDescent(0.02, loss="mse").fit(net.copy(), X, y, epochs=50, patience=5,
                                          target_loss=target)
    assert h2.stopped_reason == "target_reached"


def test_val_loss_monitor():
    X, y, net = _problem(2)
    Xv, yv = X[:10] + 0.5, y[:10]
    ref = net.copy()
    full = poswise.PositionWise(0.05, loss="mse").fit(ref, X, y, epochs=200, validation_data=(Xv, yv))
    stop = expected_stop(np.asarray(full.val_loss), 4, 1e-3)
    assert stop is not None
    hist = poswise.PositionWise(0.05, loss="mse").fit(net, X, y, epochs=200, validation_data=(Xv, yv),
                                         monitor="val_loss", patience=4, tol=1e-3)
    assert hist.epochs == stop and hist.stopped_reason == "no_improvement"


def test_resume_stops_at_the_same_epoch(tmp_path):
    X, y, net = _problem(3)
    a, b = net.copy(), net.copy()
    tr = poswise.PositionWise(0.01, loss="mse", update="adam")
    whole = tr.fit(a, X, y, epochs=400, patience=10, tol=1e-2)
    assert whole.stopped_reason == "no_improvement"
    ck = tmp_path / "ck.npz"
    k = whole.epochs - 3                      # interrupted three epochs before the stop
    tr.fit(b, X, y, epochs=k, checkpoint=ck)
    rest = tr.fit(b, X, y, epochs=400, resume=ck, patience=10, tol=1e-2)
    assert rest.epochs == whole.epochs and rest.stopped_reason == "no_improvement"
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("kw,msg", [({"patience": 0}, "patience"),
                                    ({"patience": 2.5}, "patience"),
                                    ({"patience": 3, "tol": -1.0}, "tol")])
def test_bad_values_are_refused(kw, msg):
    X, y, net = _problem()
    before = [w.copy() for w in net.weights]
    with pytest.raises((ValueError, TypeError), match=msg):
        poswise.GradientDescent(0.1, loss="mse").fit(net, X, y, epochs=5, **kw)
    for w, w0 in zip(net.weights, before):
        np.testing.assert_array_equal(w, w0)
