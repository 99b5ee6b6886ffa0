"""Reliability of fit: divergence, interruption (callbacks, mid-epoch, real signals),
callback stops, and memory that stays flat over long runs and many fits."""
import _thread
import gc
import os
import resource
import signal
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from poswise import MLP, DivergenceWarning, GradientDescent, PositionWise
from poswise import _plan as trainers   # where the engines are built
from reliability_helpers import Proxy

# numpy's own warnings while the numpy backend overflows (DivergenceWarning is kept)
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

# (trainer, backend, batch_size, first_layer): every way an epoch can be computed.
CONFIGS = [
    (cls, backend, batch, mode)
    for cls in (GradientDescent, PositionWise)
    for backend, batch, mode in [("cython", None, "primal"), ("cython", None, "dual"),
                                 ("cython", None, "direct"), ("cython", 8, "primal"),
                                 ("cython", 8, "direct"), ("numpy", None, "primal"),
                                 ("numpy", 8, "primal")]
]
CONFIG_IDS = [f"{c.__name__[:3]}-{b}-{'mini' if s else 'full'}-{m}" for c, b, s, m in CONFIGS]


def params(net):
    return [(a.dtype.str, a.shape, a.tobytes()) for a in net.weights + net.biases]


def trainer(config, lr, **kw):
    cls, backend, batch, mode = config
    return cls(lr, backend=backend, batch_size=batch, first_layer=mode, rng=0, **kw)


def reference(config, lr, net0, X, y, epochs, **kw):
    """``net0`` trained for exactly ``epochs`` epochs by a fresh trainer."""
    net = net0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        hist = trainer(config, lr, **kw).fit(net, X, y, epochs=epochs)
    assert hist.stopped_reason == "max_epochs" and hist.epochs == epochs
    return net, hist


def assert_history_consistent(hist, validation=False):
    n = hist.epochs + 1
    assert len(hist.loss) == len(hist.seconds) == n, (len(hist.loss), len(hist.seconds), n)
    if validation:
        assert len(hist.val_loss) == len(hist.val_accuracy) == n, (
            len(hist.val_loss), len(hist.val_accuracy), n)
    assert all(np.isfinite(hist.loss))


def regression_data(seed=0):
    """A linear problem that an identity network with a large step blows up on."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((32, 6))
    return X, X @ rng.standard_normal((6, 1))


def classification_data(n=32, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, (X[:, 0] - X[:, 1] > 0).astype(float)


# ======================================================================== divergence
def _diverging(config, dtype):
    net0 = MLP([6, 8, 8, 1], activation="identity", output="identity", dtype=dtype, rng=1)
    # Measured: these steps make every config diverge after 3 to 15 finite epochs.
    lr = 0.35 if config[2] else 0.45
    return net0, lr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_divergence_stops_and_restores_last_finite_epoch(config, dtype):
    X, y = regression_data()
    net0, lr = _diverging(config, dtype)
    net = net0.copy()
    with pytest.warns(DivergenceWarning, match=r"diverged at epoch (\d+) .*restored to "
                                               r"epoch \d+\. Try a smaller learning rate"):
        hist = trainer(config, lr, loss="mse").fit(net, X, y, epochs=500,
                                                   validation_data=(X[:5], y[:5]))
    assert hist.stopped_reason == "diverged"
    k = hist.epochs
    assert 2 <= k < 500
    assert_history_consistent(hist, validation=True)
    assert all(np.isfinite(a).all() for a in net.weights + net.biases)
    ref, ref_hist = reference(config, lr, net0, X, y, k, loss="mse")
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss
    assert net.output == "identity"
    assert np.array_equal(net.predict(X), ref.predict(X))


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_divergence_raise(config):
    X, y = regression_data()
    net0, lr = _diverging(config, np.float64)
    net = net0.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)     # raise, not warn
        with pytest.raises(FloatingPointError, match=r"diverged at epoch (\d+) .*lr="):
            trainer(config, lr, loss="mse", on_divergence="raise").fit(net, X, y, epochs=500)
    # Even when raising, the network is left at the last finite epoch.
    assert all(np.isfinite(a).all() for a in net.weights + net.biases)
    with pytest.warns(DivergenceWarning):
        hist = trainer(config, lr, loss="mse").fit(net0.copy(), X, y, epochs=500)
    ref, _ = reference(config, lr, net0, X, y, hist.epochs, loss="mse")
    assert params(net) == params(ref)


def test_divergence_message_names_epoch_and_lr():
    X, y = regression_data()
    net0, lr = _diverging(CONFIGS[0], np.float64)
    with pytest.warns(DivergenceWarning) as rec:
        hist = GradientDescent(lr, loss="mse").fit(net0.copy(), X, y, epochs=500)
    (w,) = [r for r in rec if issubclass(r.category, DivergenceWarning)]
    msg = str(w.message)
    assert f"diverged at epoch {hist.epochs + 1}" in msg
    assert f"restored to epoch {hist.epochs}" in msg and f"lr={lr!r}" in msg
    assert w.filename == __file__             # points at the caller's fit line


# ======================================================================== interruption
def _interrupt_at(k):
    def callback(epoch, hist):
        if epoch == k:
            raise KeyboardInterrupt
    return callback


def _fit_guarded(fit):
    """Run ``fit``; a KeyboardInterrupt escaping it must fail the test, not end pytest."""
    try:
        return fit()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped fit")


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_keyboard_interrupt_in_callback(config, k):
    X, y = classification_data()
    net0 = MLP([6, 5, 4, 1], activation="tanh", rng=2)
    net = net0.copy()
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(
        net, X, y, epochs=10, callbacks=_interrupt_at(k), validation_data=(X[:7], y[:7])))
    assert hist.stopped_reason == "interrupted"
    assert hist.epochs == k and len(hist.loss) == k + 1
    assert_history_consistent(hist, validation=True)
    ref, ref_hist = reference(config, 0.3, net0, X, y, k)
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss
    assert net.output == "sigmoid"


def _hook_engines(monkeypatch, *, train=None, val=None):
    real = trainers._new_engine

    def factory(*args, **kwargs):
        engine = real(*args, **kwargs)
        hook = val if kwargs.get("train", True) is False else train
        if hook is None:
            return engine
        # hook(name) right after each real call of the engine's methods
        return Proxy(engine, lambda name, when: hook(name) if when == "after" else None)

    monkeypatch.setattr(trainers, "_new_engine", factory)


def _raise_on_call(method, n):
    """A hook raising KeyboardInterrupt right after the n-th call of ``method``: what a
    Ctrl-C arriving during that (GIL-free) kernel call looks like to Python."""
    count = {"n": 0}

    def hook(name):
        if name == method:
            count["n"] += 1
            if count["n"] == n:
                raise KeyboardInterrupt
    return hook


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_keyboard_interrupt_mid_epoch_rolls_back(monkeypatch, config):
    """Interrupted inside epoch k (after the kernels ran): the network is restored to
    epoch k - 1, which the history ends with."""
    X, y = classification_data()
    net0 = MLP([6, 5, 4, 1], activation="tanh", rng=2)
    k = 3
    if config[2]:     # 4 mini-batches per epoch: interrupt after the 2nd one of epoch k
        hook = _raise_on_call("batch_step", 4 * (k - 1) + 2)
    else:
        hook = _raise_on_call("epoch", k)
    _hook_engines(monkeypatch, train=hook)
    net = net0.copy()
    # a callback keeps the epoch-by-epoch path (without one, epochs run in chunks: see
    # test_keyboard_interrupt_after_a_chunk_keeps_its_epochs)
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(net, X, y, epochs=10,
                                                          callbacks=lambda e, h: None))
    monkeypatch.undo()
    assert hist.stopped_reason == "interrupted"
    assert hist.epochs == k - 1
    assert_history_consistent(hist)
    ref, ref_hist = reference(config, 0.3, net0, X, y, k - 1)
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c[2]],
                         ids=[i for c, i in zip(CONFIGS, CONFIG_IDS) if not c[2]])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_keyboard_interrupt_after_a_chunk_keeps_its_epochs(monkeypatch, config, k):
    """Without per-epoch Python work, epochs run in chunks inside one kernel call. An
    interrupt arriving when the k-th chunk returns keeps the epochs the kernel completed
    (they cannot be undone one by one): history and network agree, as a fresh run of
    that many epochs."""
    X, y = classification_data()
    net0 = MLP([6, 5, 4, 1], activation="tanh", rng=2)
    _hook_engines(monkeypatch, train=_raise_on_call("run_epochs", k))
    net = net0.copy()
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(net, X, y, epochs=10 ** 6))
    monkeypatch.undo()
    assert hist.stopped_reason == "interrupted"
    assert 1 <= hist.epochs < 10 ** 6
    assert_history_consistent(hist)
    ref, ref_hist = reference(config, 0.3, net0, X, y, hist.epochs)
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss


@pytest.mark.parametrize("method", ["forward", "accuracy"])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_keyboard_interrupt_during_validation_keeps_history_and_network_consistent(
        monkeypatch, method, backend):
    """BUG (poswise/trainers.py, _run: ``record(loss, t_train)`` runs while
    ``in_epoch`` is still True). A Ctrl-C that arrives while epoch k's validation data
    are evaluated (veng.forward/accuracy, GIL-free calls) lands inside ``record``: the
    handler rolls the network back to epoch k-1, but ``hist.loss``/``seconds`` (and
    ``val_loss`` when raised after forward) already hold epoch k, ``hist.epochs`` is
    stale (k-1), and the lists have different lengths. Observed for k=3: net at epoch 2,
    len(loss) == len(seconds) == 4, len(val_loss) == 4, len(val_accuracy) == 3,
    epochs == 2. Expected: a consistent result -- either epoch k counts (network at k,
    every list k+1 long) or it does not (network at k-1, every list k long). The same
    window exists, smaller, for a signal arriving between the appends of ``record`` with
    no validation data."""
    X, y = classification_data()
    net0 = MLP([6, 5, 1], activation="tanh", rng=2)
    k = 3
    _hook_engines(monkeypatch, val=_raise_on_call(method, k + 1))   # call 1: epoch 0
    net = net0.copy()
    config = (GradientDescent, backend, None, "primal")
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(
        net, X, y, epochs=10, validation_data=(X[:9], y[:9])))
    monkeypatch.undo()
    assert hist.stopped_reason == "interrupted"
    assert hist.epochs in (k - 1, k)
    assert_history_consistent(hist, validation=True)
    ref, _ = reference(config, 0.3, net0, X, y, hist.epochs)
    assert params(net) == params(ref)


def _send_sigint_later(how, delay):
    main = threading.main_thread().ident

    def fire():
        if how == "interrupt_main":
            _thread.interrupt_main()
        else:
            signal.pthread_kill(main, signal.SIGINT)
    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
                    reason="SIGINT is not handled by Python's default handler here")
@pytest.mark.parametrize("how", ["interrupt_main", "pthread_kill"])
@pytest.mark.parametrize("config", [(GradientDescent, "cython", None, "primal"),
                                    (PositionWise, "cython", None, "direct"),
                                    (PositionWise, "cython", 64, "primal")],
                         ids=["GD-full-primal", "PWO-full-direct", "PWO-mini-primal"])
def test_real_sigint_from_another_thread(how, config):
    if how == "pthread_kill" and not hasattr(signal, "pthread_kill"):
        pytest.skip("no pthread_kill")
    X, y = classification_data(n=400, d=50)
    net0 = MLP([50, 32, 32, 1], activation="tanh", rng=3)
    net = net0.copy()
    # the first fit of a process imports the kernels: warm up, so that the interrupt
    # lands in training (an interrupt during preparation propagates, by design)
    trainer(config, 0.01).fit(net0.copy(), X, y, epochs=1)
    t0 = time.perf_counter()
    timer = _send_sigint_later(how, 0.25)
    try:
        hist = _fit_guarded(lambda: trainer(config, 0.01).fit(net, X, y, epochs=10**7))
    finally:
        timer.join()
    elapsed = time.perf_counter() - t0
    assert hist.stopped_reason == "interrupted"
    assert elapsed < 5
    assert 1 <= hist.epochs < 10**7
    assert_history_consistent(hist)
    ref, ref_hist = reference(config, 0.01, net0, X, y, hist.epochs)
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss


# ======================================================================== resume
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path, config):
    X, y = classification_data()
    net0 = MLP([6, 5, 4, 1], activation="tanh", rng=2)
    ref, ref_hist = reference(config, 0.3, net0, X, y, 10)
    path = tmp_path / "ckpt.npz"
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(
        net0.copy(), X, y, epochs=10, callbacks=_interrupt_at(5), checkpoint=path,
        checkpoint_every=2))
    assert hist.stopped_reason == "interrupted" and hist.epochs == 5
    net = net0.copy()
    hist = trainer(config, 0.3).fit(net, X, y, epochs=10, resume=path)
    assert hist.stopped_reason == "max_epochs" and hist.epochs == 10
    assert params(net) == params(ref)
    assert hist.loss == ref_hist.loss


@pytest.mark.parametrize("cls", [GradientDescent, PositionWise])
def test_resume_after_mid_epoch_interrupt_of_minibatch_run(monkeypatch, tmp_path, cls):
    """BUG (poswise/trainers.py, _run): in mini-batch training the epoch's permutation is
    drawn from ``gen`` before the kernels run; a Ctrl-C inside the epoch rolls the weights
    back to the epoch start but not the generator, and the checkpoint written on stop
    stores the advanced ``gen.bit_generator.state``. Resuming then shuffles epoch k
    differently from an uninterrupted run (observed: final weights and losses differ),
    although ``fit`` promises "exactly as an uninterrupted run would". Expected: save the
    generator state with ``eng.snapshot()`` at the start of each epoch and restore it
    together with ``eng.rollback()`` (divergence included)."""
    X, y = classification_data()
    config = (cls, "cython", 8, "primal")
    net0 = MLP([6, 5, 1], activation="tanh", rng=2)
    ref, ref_hist = reference(config, 0.3, net0, X, y, 10)
    _hook_engines(monkeypatch, train=_raise_on_call("batch_step", 4 * 4 + 2))  # in epoch 5
    path = tmp_path / "ckpt.npz"
    hist = _fit_guarded(lambda: trainer(config, 0.3).fit(net0.copy(), X, y, epochs=10,
                                                         checkpoint=path))
    monkeypatch.undo()
    assert hist.stopped_reason == "interrupted" and hist.epochs == 4
    net = net0.copy()
    hist = trainer(config, 0.3).fit(net, X, y, epochs=10, resume=path)
    assert hist.loss == ref_hist.loss
    assert params(net) == params(ref)


def test_periodic_checkpoint_records_the_trained_output_head(tmp_path):
    """BUG (poswise/trainers.py, _run): ``net.output`` is set to the loss's head only after
    the loop, so checkpoints written during the fit store the head the network had before
    (here "auto"). A periodic checkpoint of an am_softmax network then loads with a softmax
    head instead of the cosine one and predicts differently from the network being
    trained. Expected: set ``net.output`` before the first checkpoint (e.g. right after
    validation) so every checkpoint describes the network as trained."""
    from poswise.io import load_model
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)
    path = tmp_path / "ckpt.npz"
    heads = []

    def look(epoch, hist):
        if epoch == 3:                     # the checkpoint of epoch 2 is on disk
            heads.append(load_model(path).output)

    GradientDescent(0.1, loss="am_softmax").fit(MLP([6, 5, 3], rng=0), X, y, epochs=6,
                                               checkpoint=path, checkpoint_every=2,
                                               callbacks=look)
    assert heads == ["cosine"]
    assert load_model(path).output == "cosine"


# ======================================================================== callback stop
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_callback_stop(config):
    X, y = classification_data()
    net0 = MLP([6, 5, 1], activation="tanh", rng=2)
    seen = []

    def stop_at_4(epoch, hist):
        seen.append((epoch, len(hist.loss)))
        return epoch == 4

    net = net0.copy()
    hist = trainer(config, 0.3).fit(net, X, y, epochs=10, callbacks=[lambda e, h: None,
                                                                     stop_at_4])
    assert hist.stopped_reason == "callback" and hist.epochs == 4
    assert seen == [(e, e + 1) for e in range(5)]
    assert_history_consistent(hist)
    ref, _ = reference(config, 0.3, net0, X, y, 4)
    assert params(net) == params(ref)


def test_callback_truthy_values_other_than_true_do_not_stop():
    X, y = classification_data()
    hist = GradientDescent(0.3).fit(MLP([6, 5, 1], rng=0), X, y, epochs=3,
                                    callbacks=lambda e, h: 1)
    assert hist.stopped_reason == "max_epochs"


def test_callback_returning_numpy_true_stops():
    """BUG (poswise/trainers.py, _stop_reason: ``cb(epoch, hist) is True``): a callback
    returning ``np.True_`` -- e.g. ``return np.all(net.predict(X) == y)`` or
    ``return np.mean(...) > 0.9`` -- is silently ignored and training runs to the end.
    Expected: numpy booleans count as True (``r is True or r is np.True_``)."""
    X, y = classification_data()
    hist = GradientDescent(0.3).fit(MLP([6, 5, 1], rng=0), X, y, epochs=5,
                                    callbacks=lambda e, h: np.bool_(e == 2))
    assert hist.stopped_reason == "callback" and hist.epochs == 2


def test_callback_exception_propagates_and_net_stays_usable():
    X, y = classification_data()
    net0 = MLP([6, 5, 1], rng=0)
    net = net0.copy()

    def boom(epoch, hist):
        if epoch == 2:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        GradientDescent(0.3, first_layer="dual").fit(net, X[:4], y[:4], epochs=5,
                                                     callbacks=boom)
    ref, _ = reference((GradientDescent, "cython", None, "dual"), 0.3, net0, X[:4], y[:4], 2)
    np.testing.assert_array_equal(net.weights[0], ref.weights[0])
    assert params(net) == params(ref)


# ======================================================================== memory
def _rss_bytes():
    """Current resident set size (Linux), else the peak (other POSIX)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _history_bytes(hist):
    lists = [hist.loss, hist.seconds, hist.val_loss, hist.val_accuracy]
    return sum(sys.getsizeof(v) + sum(sys.getsizeof(x) for x in v) for v in lists)


@pytest.mark.parametrize("backend, batch", [("cython", None), ("cython", 4)])
def test_memory_flat_over_many_epochs(backend, batch):
    """10^5 epochs of a tiny network: nothing but the History grows."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4))
    y = (X[:, 0] > 0).astype(float)
    epochs = 10**5 if batch is None else 5000      # tracemalloc slows the batch loop
    gd = GradientDescent(1e-3, backend=backend, batch_size=batch, rng=0)
    gd.fit(MLP([4, 3, 1], rng=0), X, y, epochs=100)           # warm caches
    net = MLP([4, 3, 1], rng=0)
    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        hist = gd.fit(net, X, y, epochs=epochs)
        current, peak = tracemalloc.get_traced_memory()
        hist_bytes = _history_bytes(hist)
        assert hist.epochs == epochs
        del hist
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # while alive, the history is (nearly) all that was added ...
    assert current - base < 1.2 * hist_bytes + 256 * 1024, (current - base, hist_bytes)
    assert peak - base < 1.3 * hist_bytes + 1024 * 1024, (peak - base, hist_bytes)
    # ... and once dropped, nothing stays behind
    assert after - base < 64 * 1024, after - base
    assert _rss_bytes() - rss0 < 32 * 2**20


def test_memory_flat_over_repeated_fits():
    """200 fits (every engine kind, validation data included): no growth."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    y = (X[:, 0] > 0).astype(float)
    Xs = rng.standard_normal((5, 60))
    ys = (Xs[:, 0] > 0).astype(float)
    net = MLP([20, 16, 1], rng=0)
    small = MLP([60, 8, 1], rng=0)
    runs = [
        lambda: GradientDescent(1e-3).fit(net, X, y, epochs=3, validation_data=(X, y)),
        lambda: PositionWise(1e-3, first_layer="direct").fit(net, X, y, epochs=3),
        lambda: PositionWise(1e-3, batch_size=64, rng=0).fit(net, X, y, epochs=2),
        lambda: GradientDescent(1e-3, first_layer="dual").fit(small, Xs, ys, epochs=3,
                                                              validation_data=(Xs, ys)),
        lambda: GradientDescent(1e-3, backend="numpy").fit(net, X[:50], y[:50], epochs=2),
    ]

    def round_(n):
        for i in range(n):
            runs[i % len(runs)]()

    round_(20)                                              # warm caches
    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start()
    try:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        round_(200)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown
    # C-level allocations (the engines' malloc'd tables) are invisible to tracemalloc
    round_(200)
    gc.collect()
    assert _rss_bytes() - rss0 < 16 * 2**20
