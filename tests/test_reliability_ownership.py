"""Family 1 of issue 12: a network being trained belongs to its fit, in every first-layer
mode. Readers (other threads, callbacks) get consistent read-only snapshots between two
epochs; writers (in-place edits, replaced arrays, changed settings, a second fit) are
refused; the trained network ends exactly as an undisturbed run."""
import pickle
import threading

import numpy as np
import pytest

from poswise import MLP, GradientDescent
from reliability_helpers import (MODE_IDS, assert_consistent, data, make_trainer, new_net,
                                 params, plan_of, record_run)

pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]


def test_modes_are_what_they_say(monkeypatch):
    """The fused and row-threaded paths really run in the modes named so."""
    X, y = data()
    net = new_net()
    fused = plan_of(make_trainer("GD-direct-fused", monkeypatch), net, X)
    rows = plan_of(make_trainer("PWO-direct-rows", monkeypatch), net, X)
    assert fused.fused_block > 0 and rows.row_threads and rows.threads == 2
    assert plan_of(make_trainer("GD-dual", monkeypatch), net, X).first_layer == "dual"


@pytest.mark.parametrize("mode", MODE_IDS)
def test_concurrent_readers_see_whole_epochs(monkeypatch, mode):
    """A thread reading weights, biases, copy() and predict() throughout a fit: every
    read equals the parameters after one epoch of an undisturbed run (never a mix, never
    a half-materialised first layer), and the trained network equals that run's."""
    X, y = data(n=40, d=12)
    net0 = new_net(sizes=(12, 6, 4, 1), activation="relu")
    E = 12
    ref, ref_hist = record_run(make_trainer(mode, monkeypatch), net0, X, y, E)
    by_bytes = {tuple(p): e for e, p in enumerate(ref)}
    net = net0.copy()
    reads, done, errors = [], threading.Event(), []
    count = [0]

    def reader():
        try:
            while not done.is_set():
                c = net.copy()
                w = net.weights
                p = net.predict(X)
                reads.append((params(c), [(a.dtype.str, a.shape, a.tobytes()) for a in w],
                              p))
                count[0] += 1
        except Exception as exc:          # pragma: no cover - reported below
            errors.append(exc)

    def handshake(epoch, hist):
        # the first epochs wait for a read, so that reads fall between several epochs
        if epoch <= 4:
            seen = count[0]
            for _ in range(2000):
                if count[0] > seen or errors:
                    break
                threading.Event().wait(0.001)

    t = threading.Thread(target=reader)
    t.start()
    try:
        hist = make_trainer(mode, monkeypatch).fit(net, X, y, epochs=E, callbacks=handshake)
    finally:
        done.set()
        t.join()
    assert not errors, errors
    assert hist.loss == ref_hist.loss
    assert params(net) == ref[E]
    epochs_seen = set()
    for full, weights, _ in reads:
        assert tuple(full) in by_bytes, "a read mixed epochs or saw a partial first layer"
        e = by_bytes[tuple(full)]
        epochs_seen.add(e)
        L = len(weights)
        if weights != full[:L]:        # a later epoch: still one whole epoch
            assert any(weights == p[:L] for p in ref)
    assert len(epochs_seen) >= 3, epochs_seen


@pytest.mark.parametrize("mode", MODE_IDS)
def test_callbacks_may_read_but_not_write(monkeypatch, mode):
    """In every mode: in-place edits (also through a reference taken before the fit),
    replaced arrays, changed settings and a nested fit are refused the same way; the
    run is undisturbed; afterwards the network is writeable again."""
    X, y = data()
    net0 = new_net()
    ref, ref_hist = record_run(make_trainer(mode, monkeypatch), net0, X, y, 4)
    net = net0.copy()
    before = net.weights[0]
    outcomes = []

    def meddle(epoch, hist):
        if epoch != 2:
            return
        w = net.weights
        assert not w[0].flags.writeable and not net.biases[1].flags.writeable
        assert params(net) == ref[2]
        for edit in (lambda: w[0].__setitem__((0, 0), 5.0),
                     lambda: before.__setitem__((0, 0), 5.0),
                     lambda: net.biases[0].__iadd__(1.0),
                     lambda: np.copyto(net.weights[1], 0.0)):
            with pytest.raises(ValueError, match="read-only"):
                edit()
        with pytest.raises(RuntimeError, match="being trained"):
            net.weights[0] = np.zeros(net.weights[0].shape, dtype=np.float32)
        with pytest.raises(RuntimeError, match="being trained"):
            net.biases[0] = np.zeros(net.biases[0].shape)
        with pytest.raises(RuntimeError, match="being trained"):
            GradientDescent(0.1).fit(net, X, y, epochs=1)
        with pytest.raises(RuntimeError, match="being trained"):
            GradientDescent(0.1).session(net).fit(X, y, epochs=1)
        with pytest.raises(RuntimeError, match="activation cannot change"):
            net.activation = "relu"
        with pytest.raises(RuntimeError, match="leak cannot change"):
            net.leak = 0.3
        clone = pickle.loads(pickle.dumps(net))
        assert params(clone) == ref[2] and clone.weights[0].flags.writeable
        outcomes.append(epoch)

    hist = make_trainer(mode, monkeypatch).fit(net, X, y, epochs=4, callbacks=meddle)
    assert outcomes == [2]
    assert hist.loss == ref_hist.loss and params(net) == ref[4]
    assert_consistent(hist)
    # released: the network's own arrays again, writeable, edits stick
    assert net.weights[0] is before and before.flags.writeable
    before[0, 0] = 7.0
    net.biases[0][0] = 1.0
    assert net.weights[0][0, 0] == 7.0 and net.biases[0][0] == 1.0
    net.activation = "relu"
    assert net.activation == "relu"


@pytest.mark.parametrize("mode", ["GD-primal", "GD-dual", "PWO-direct", "PWO-numpy-mini"])
def test_two_threads_fitting_one_network(monkeypatch, mode):
    """A fit started while another runs (another thread, another session) is refused
    without touching anything; the first one ends as an undisturbed run."""
    X, y = data()
    net0 = new_net()
    ref, ref_hist = record_run(make_trainer(mode, monkeypatch), net0, X, y, 5)
    net = net0.copy()
    inside, go, result = threading.Event(), threading.Event(), {}

    def pause(epoch, hist):
        if epoch == 2:
            inside.set()
            go.wait(10)

    def first():
        result["hist"] = make_trainer(mode, monkeypatch).fit(net, X, y, epochs=5,
                                                              callbacks=pause)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert inside.wait(10)
        for attempt in (lambda: GradientDescent(0.1).fit(net, X, y, epochs=3),
                        lambda: make_trainer(mode, monkeypatch).session(net).fit(
                            X, y, epochs=3)):
            with pytest.raises(RuntimeError, match="is being trained"):
                attempt()
    finally:
        go.set()
        t.join()
    assert result["hist"].loss == ref_hist.loss and params(net) == ref[5]


@pytest.mark.parametrize("mode", ["GD-dual", "PWO-direct", "GD-numpy"])
def test_failed_fit_releases_the_network(monkeypatch, mode):
    """A callback error propagates; the network stays at the epoch the callback saw and
    is released (writeable, trainable)."""
    X, y = data()
    net0 = new_net()
    ref, _ = record_run(make_trainer(mode, monkeypatch), net0, X, y, 2)
    net = net0.copy()

    def boom(epoch, hist):
        if epoch == 2:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        make_trainer(mode, monkeypatch).fit(net, X, y, epochs=5, callbacks=boom)
    assert params(net) == ref[2]
    assert all(a.flags.writeable for a in list(net.weights) + list(net.biases))
    assert make_trainer(mode, monkeypatch).fit(net, X, y, epochs=1).epochs == 1


def test_validation_failure_leaves_network_writeable():
    net = new_net()
    with pytest.raises(ValueError):
        GradientDescent(0.1).fit(net, np.ones((4, 3)), np.ones(4), epochs=1)
    assert net.weights[0].flags.writeable and net._trainer is None
