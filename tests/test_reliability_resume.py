"""Family 4 of issue 12: a resume continues exactly or is refused, before anything
changes, with a message naming what differs; every path is checked before the first
epoch."""
import os
import sys

import numpy as np
import pytest

from poswise import MLP, GradientDescent, History, LayerwiseGD, PositionWise
from poswise import io as pio
from reliability_helpers import assert_consistent, data, new_net, params, record_run


def _checkpointed(tr, net0, X, y, epochs, path, **kw):
    net = net0.copy()
    tr.fit(net, X, y, epochs=epochs, checkpoint=path, **kw)
    return net


def _refused(fit, net, path, match):
    """``fit`` raises ValueError matching ``match``; the network and the file are as
    they were, and the network is free."""
    before, stamp = params(net), (os.path.getmtime(path), os.path.getsize(path))
    with pytest.raises(ValueError, match=match):
        fit()
    assert params(net) == before
    assert (os.path.getmtime(path), os.path.getsize(path)) == stamp
    assert net._trainer is None and net.weights[0].flags.writeable


@pytest.mark.parametrize("mode", ["dual", "primal", "direct"])
def test_other_data_of_the_same_size_is_refused(tmp_path, mode):
    X, y = data(n=10, d=30)
    path = tmp_path / "ck.npz"
    net0 = new_net(sizes=(30, 5, 1))
    tr = GradientDescent(0.1, first_layer=mode)
    _checkpointed(tr, net0, X, y, 3, path)
    X2 = X.copy()
    X2[0, 0] += 1e-9
    y2 = 1 - y
    net = net0.copy()
    for Xr, yr, what in ((X2, y, "X"), (X, y2, "y")):
        _refused(lambda: tr.fit(net, Xr, yr, epochs=6, resume=path), net, path,
                 f"other training data \\({what} differ")
    # the same data, even as another array (list, Fortran order), continues exactly
    ref, _ = record_run(tr, net0, X, y, 6)
    h = tr.fit(net, np.asfortranarray(X), list(y), epochs=6, resume=path)
    assert h.epochs == 6 and params(net) == ref[6]


@pytest.mark.parametrize("change", [
    dict(lr=0.2), dict(loss="mse"), dict(batch_size=4), dict(shuffle=False),
    dict(update="momentum"),
    dict(update="adam"), dict(backend="numpy"), dict(schedule="pwo"),
    dict(schedule="layerwise"), dict(first_layer="direct")],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_every_trainer_setting_is_verified(tmp_path, change):
    X, y = data()
    path = tmp_path / "ck.npz"
    net0 = new_net()
    _checkpointed(GradientDescent(0.1, first_layer="primal", rng=0), net0, X, y, 2, path)
    kw = dict(first_layer="primal", rng=0)
    kw.update(change)
    cls = {"gd": GradientDescent, "pwo": PositionWise,
           "layerwise": LayerwiseGD}[kw.pop("schedule", "gd")]
    tr = cls(kw.pop("lr", 0.1), **kw)
    net = net0.copy()
    key = next(iter(change))
    match = ("first_layer" if key == "first_layer" else
             f"other trainer settings \\(.*{'optimizer' if key == 'schedule' else ''}")
    _refused(lambda: tr.fit(net, X, y, epochs=4, resume=path), net, path, match)


def test_layer_scales_and_rule_hyperparameters_are_verified(tmp_path):
    X, y = data()
    path = tmp_path / "ck.npz"
    net0 = new_net()
    _checkpointed(LayerwiseGD(0.1, layer_scales=[1, 2, 3], update="momentum"), net0, X, y,
                  2, path)
    net = net0.copy()
    for tr in (LayerwiseGD(0.1, layer_scales=[1, 2, 4], update="momentum"),
               LayerwiseGD(0.1, layer_scales=[1, 2, 3],
                           update=__import__("poswise").SGD(momentum=0.5))):
        _refused(lambda: tr.fit(net, X, y, epochs=4, resume=path), net, path,
                 "other trainer settings")


@pytest.mark.parametrize("other", [dict(leak=0.2), dict(activation="relu"),
                                   dict(dtype=np.float32)], ids=str)
def test_every_network_setting_is_verified(tmp_path, other):
    X, y = data()
    path = tmp_path / "ck.npz"
    kw = dict(activation="leaky_relu", leak=0.05, rng=0)
    _checkpointed(GradientDescent(0.1), MLP([6, 5, 1], **kw), X, y, 2, path)
    net = MLP([6, 5, 1], **dict(kw, **other))
    _refused(lambda: GradientDescent(0.1).fit(net, X, y, epochs=4, resume=path), net, path,
             "holds a network")


def test_new_target_after_the_old_one_was_reached(tmp_path):
    """A target reached before the checkpoint does not stop a resumed run aiming lower;
    the resumed run equals a straight run with the new target."""
    X, y = data()
    net0 = new_net()
    tr = GradientDescent(0.5)
    full = net0.copy()
    h_full = tr.fit(full, X, y, epochs=200)
    t1, t2 = h_full.loss[5] + 1e-12, h_full.loss[40] + 1e-12
    path = tmp_path / "ck.npz"
    net = net0.copy()
    h1 = tr.fit(net, X, y, epochs=200, target_loss=t1, checkpoint=path)
    assert h1.stopped_reason == "target_reached" and h1.epochs_to_target == 5
    straight = net0.copy()
    h_ref = tr.fit(straight, X, y, epochs=200, target_loss=t2)
    h2 = tr.fit(net, X, y, epochs=200, target_loss=t2, resume=path)
    assert h2.stopped_reason == "target_reached" and h2.epochs_to_target == 40
    assert h2.loss == h_ref.loss and params(net) == params(straight)
    h3 = tr.fit(net0.copy(), X, y, epochs=12, resume=path)       # no target: run on
    assert h3.stopped_reason == "max_epochs" and h3.epochs_to_target is None
    h4 = tr.fit(net0.copy(), X, y, epochs=200, target_loss=1.0, resume=path)  # met before
    assert h4.stopped_reason == "target_reached" and h4.epochs == 5
    assert h4.epochs_to_target == 0


def test_validation_data_must_match(tmp_path):
    X, y = data()
    val = (X[:7], y[:7])
    net0 = new_net()
    tr = GradientDescent(0.3)
    with_val, without = tmp_path / "v.npz", tmp_path / "n.npz"
    _checkpointed(tr, net0, X, y, 2, with_val, validation_data=val)
    _checkpointed(tr, net0, X, y, 2, without)
    net = net0.copy()
    _refused(lambda: tr.fit(net, X, y, epochs=4, resume=without, validation_data=val), net,
             without, "written without validation_data")
    _refused(lambda: tr.fit(net, X, y, epochs=4, resume=with_val), net, with_val,
             "written with validation_data")
    _refused(lambda: tr.fit(net, X, y, epochs=4, resume=with_val,
                            validation_data=(X[:8], y[:8])), net, with_val,
             "other validation_data")
    _refused(lambda: tr.fit(net, X, y, epochs=4, resume=without, monitor="val_loss",
                            validation_data=val), net, without, "validation_data")
    ref, ref_hist = record_run(tr, net0, X, y, 4, validation_data=val)
    h = tr.fit(net, X, y, epochs=4, resume=with_val, validation_data=val)
    assert_consistent(h, validation=True)
    assert h.val_loss == ref_hist.val_loss and params(net) == ref[4]


def test_history_fields_from_a_newer_version_are_ignored(tmp_path):
    X, y = data()
    net0 = new_net()
    tr = PositionWise(0.3)
    path, newer = tmp_path / "ck.npz", tmp_path / "newer.npz"
    _checkpointed(tr, net0, X, y, 2, path)
    cnet, meta, arrays = pio.read_model_file(path)
    meta["checkpoint"]["history"]["grad_norms"] = [1.0, 2.0, 3.0]
    meta["checkpoint"]["history"]["comment"] = {"from": "poswise 9"}
    meta["checkpoint"]["future_field"] = True
    pio.save_model(cnet, newer, metadata=meta, arrays=arrays)
    ref, ref_hist = record_run(tr, net0, X, y, 5)
    net = net0.copy()
    h = tr.fit(net, X, y, epochs=5, resume=newer)
    assert h.loss == ref_hist.loss and params(net) == ref[5]
    d = ref_hist.to_dict()
    d["new_list"] = [1]
    assert History.from_dict(d) == ref_hist


@pytest.mark.parametrize("bitgen", [np.random.MT19937, np.random.Philox, np.random.SFC64,
                                    np.random.PCG64DXSM, np.random.PCG64])
def test_any_numpy_generator_checkpoints_and_resumes_exactly(tmp_path, bitgen):
    X, y = data()
    net0 = new_net()

    def tr():
        return PositionWise(0.3, batch_size=8, rng=np.random.Generator(bitgen(7)))
    ref, ref_hist = record_run(tr(), net0, X, y, 5)
    path = tmp_path / "ck.npz"
    _checkpointed(tr(), net0, X, y, 2, path)
    net = net0.copy()
    h = tr().fit(net, X, y, epochs=5, resume=path)
    assert h.loss == ref_hist.loss and params(net) == ref[5]
    other = np.random.SFC64 if bitgen is not np.random.SFC64 else np.random.MT19937
    _refused(lambda: PositionWise(0.3, batch_size=8, rng=np.random.Generator(other(7))).fit(
        net, X, y, epochs=6, resume=path), net, path, "generator")


class _OpaqueBitGenerator(np.random.PCG64):
    """A bit generator whose state is not plain data (as a third-party one may be)."""

    @property
    def state(self):
        return {"bit_generator": "_OpaqueBitGenerator", "handle": object()}

    @state.setter
    def state(self, value):
        raise TypeError("state cannot be set")


def test_unstorable_generator_refused_before_training(tmp_path):
    X, y = data()
    net = new_net()
    before = params(net)
    epochs_run = []
    with pytest.raises(ValueError, match="rng of PositionWise.fit .* cannot be stored"):
        PositionWise(0.3, batch_size=8,
                     rng=np.random.Generator(_OpaqueBitGenerator(0))).fit(
            net, X, y, epochs=3, checkpoint=tmp_path / "c.npz",
            callbacks=lambda e, h: epochs_run.append(e))
    assert epochs_run == [] and params(net) == before
    assert not os.path.exists(tmp_path / "c.npz")


def _unwritable_paths(tmp_path):
    paths = [(tmp_path, "is a directory"),
             (tmp_path / "missing" / "c.npz", "does not exist")]
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        paths.append(("/proc/self/poswise.npz", "no file can be created"))
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        paths.append((fifo, "not a regular file"))
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        paths.append((ro / "c.npz", "no file can be created"))
    return paths


def test_invalid_checkpoint_paths_found_before_the_first_epoch(tmp_path):
    X, y = data()
    for path, why in _unwritable_paths(tmp_path):
        net = new_net()
        before = params(net)
        epochs_run = []
        with pytest.raises(ValueError, match=f"'checkpoint' parameter of GradientDescent"
                                             f".fit.*{why}"):
            GradientDescent(0.1).fit(net, X, y, epochs=3, checkpoint=path,
                                     callbacks=lambda e, h: epochs_run.append(e))
        assert epochs_run == [] and params(net) == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".poswise-probe")]


def test_resume_refuses_a_plain_model_file_and_a_missing_one(tmp_path):
    X, y = data()
    net = new_net()
    path = tmp_path / "m.npz"
    net.save(path)
    _refused(lambda: GradientDescent(0.1).fit(net, X, y, epochs=2, resume=path), net, path,
             "not a training checkpoint")
    with pytest.raises(FileNotFoundError):
        GradientDescent(0.1).fit(net, X, y, epochs=2, resume=tmp_path / "none.npz")
    assert net.weights[0].flags.writeable
