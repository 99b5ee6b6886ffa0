"""Family 2 of issue 12: divergence is detected from the parameters, not only from the
loss. ReLU maps NaN to 0 in the kernels, so a first layer holding NaN can give a finite
loss; every engine checks every parameter after each epoch and mini-batch step, and the
session rolls the epoch back. A final checkpoint never raises out of fit."""
import warnings

import numpy as np
import pytest

from poswise import DivergenceWarning, _layout, _plan
from poswise._numpy_backend import new_rule_state
from reliability_helpers import (MODE_IDS, MODES, assert_consistent, data, hook_engines,
                                 make_trainer, new_net, params, plan_of, record_run)

pytestmark = [pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]


def _engine(mode, monkeypatch, net, X, y):
    """The training engine of ``mode`` on (X, y) and the array it trains as the first
    layer (W[0], the transposed copy of direct mode, or C of dual mode)."""
    tr = make_trainer(mode, monkeypatch, lr=0.1)
    captured = []
    hook_engines(monkeypatch, lambda *a: None, captured)
    plan = plan_of(tr, net, X)
    rule = tr._rule()
    ws, bs = list(net._weights), list(net._biases)
    state = new_rule_state(rule, [w.shape for w in ws], net.dtype)
    y = _layout.check_y(y, tr.loss, X.shape[0], net.sizes[-1], net.dtype)
    eng, _, _, _ = _plan.build_engines(plan, tr, net, ws, bs, X, y, None, rule, state)
    kwargs = captured[0][2]
    if plan.first_layer == "dual":
        first = lambda: kwargs["dual"][2][0, :]        # unit 0's row of C  # noqa: E731
    elif plan.first_layer == "direct":
        first = lambda: kwargs["direct"][:, 0]         # unit 0's column  # noqa: E731
    else:
        first = lambda: ws[0][0, :]                    # noqa: E731
    return eng, first, plan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODE_IDS)
def test_kernels_flag_a_nan_that_relu_hides(monkeypatch, mode, dtype):
    X, y = data(n=40, d=12)
    X = X.astype(dtype)
    net = new_net(dtype=dtype, sizes=(12, 6, 1), activation="relu")
    eng, first, plan = _engine(mode, monkeypatch, net, X, y)
    assert np.isfinite(eng.forward())
    first()[...] = np.nan                                # unit 0 is NaN for every sample
    loss = eng.forward()
    if MODES[mode][1].get("backend") != "numpy":         # numpy's maximum keeps NaN
        assert np.isfinite(loss), "ReLU should hide the NaN from the loss"
    eng.snapshot()
    assert np.isnan(eng.epoch(0.1))
    if not plan.fused_block and plan.first_layer != "dual":
        eng.rollback()
        first()[...] = np.nan
        assert eng.batch_step(0.1) is False


@pytest.mark.parametrize("mode", [m for m in MODE_IDS if "dual" not in m])
def test_nan_born_in_an_epoch_is_divergence(monkeypatch, tmp_path, mode):
    """A NaN enters X after epoch 3 (as a corrupted buffer would): the next update puts
    NaN into the first layer, which ReLU hides from the loss. The run must end as
    diverged, restored to the last finite epoch, with a usable final checkpoint. (A dual
    epoch does not read X; its check is the kernel test above.)"""
    X, y = data(n=40, d=12)
    net0 = new_net(sizes=(12, 6, 4, 1), activation="relu")
    ref, ref_hist = record_run(make_trainer(mode, monkeypatch), net0, X, y, 8)
    Xc = X.copy()
    net, path = net0.copy(), tmp_path / "ck.npz"

    def corrupt(epoch, hist):
        if epoch == 3:
            Xc[5, 2] = np.nan          # the engine reads this very array (no copy made)

    with pytest.warns(DivergenceWarning, match="loss or a parameter became non-finite"):
        hist = make_trainer(mode, monkeypatch).fit(net, Xc, y, epochs=8, callbacks=corrupt,
                                                   checkpoint=path)
    assert hist.stopped_reason == "diverged"
    # a fused epoch applies the previous pass's gradient: the NaN reaches the weights
    # one epoch later
    assert hist.epochs in (3, 4) if "fused" in mode else hist.epochs == 3
    assert_consistent(hist)
    assert params(net) == ref[hist.epochs]
    assert hist.loss[:4] == ref_hist.loss[:4]      # (fused: epoch 4's loss saw the NaN X)
    from poswise.io import load_model
    assert params(load_model(path)) == ref[hist.epochs]
    net.save(tmp_path / "model.npz")                     # a finite network saves


def test_final_checkpoint_of_any_failure_returns_history(monkeypatch, tmp_path):
    """Whatever the writer raises at the end, fit warns and returns the History."""
    from poswise import io as pio
    X, y = data()
    net = new_net()

    def broken(*args, **kwargs):
        raise ValueError("The network's weights[0] or biases[0] contain NaN or inf.")
    monkeypatch.setattr(pio, "save_model", broken)
    with pytest.warns(RuntimeWarning, match="could not be written.*NaN or inf"):
        hist = make_trainer("GD-primal", monkeypatch).fit(net, X, y, epochs=3,
                                                          checkpoint=tmp_path / "c.npz")
    assert hist.epochs == 3 and hist.stopped_reason == "max_epochs"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_consistent(hist)
