"""Trainer parity: poswise's GD and PWO against an independent implementation."""
import threading

import numpy as np
import pytest

import poswise
from conftest import make_problem, rel_err
import reference

DEPTHS = {1: (9,), 2: (9, 7), 3: (9, 7, 5), 5: (9, 8, 7, 6, 5)}


def _fit(trainer_cls, net, X, y, epochs, **kw):
    return trainer_cls(kw.pop("lr", 0.1), **kw).fit(net, X, y, epochs=epochs)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("depth", sorted(DEPTHS))
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 3), ("cross_entropy", 2),
                                    ("mse", 2)])
@pytest.mark.parametrize("N,D", [(13, 40), (60, 6)], ids=["N<D", "N>D"])
def test_matches_reference_float64(backend, pwo, depth, loss, K, N, D):
    rng = np.random.default_rng(depth * 100 + K + N)
    X, y = make_problem(N, D, K, loss, rng)
    net = poswise.MLP((D,) + DEPTHS[depth] + (K,), activation="tanh", rng=rng)
    W0 = [w.copy() for w in net.weights]
    b0 = [b.copy() for b in net.biases]
    trainer = (poswise.PositionWise if pwo else poswise.GradientDescent)(
        0.3, loss=loss, backend=backend, first_layer="primal")
    hist = trainer.fit(net, X, y, epochs=10)
    W, b, losses = reference.train(W0, b0, X, y, name="tanh", loss=loss, lr=0.3, epochs=10,
                                   pwo=pwo)
    for l in range(net.n_layers):
        assert rel_err(net.weights[l], W[l]) <= 1e-9
        assert rel_err(net.biases[l], b[l]) <= 1e-9
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-9)
    assert hist.epochs == 10 and hist.stopped_reason == "max_epochs"


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "leaky_relu", "identity"])
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
def test_activations_match_reference(activation, pwo):
    rng = np.random.default_rng(7)
    X, y = make_problem(30, 8, 3, "cross_entropy", rng)
    net = poswise.MLP((8, 10, 6, 3), activation=activation, rng=3)
    W0, b0 = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    cls(0.2, loss="cross_entropy").fit(net, X, y, epochs=10)
    W, b, _ = reference.train(W0, b0, X, y, name=activation, loss="cross_entropy", lr=0.2,
                              epochs=10, pwo=pwo)
    for l in range(3):
        assert rel_err(net.weights[l], W[l]) <= 1e-9
        assert rel_err(net.biases[l], b[l]) <= 1e-9


def test_pwo_differs_from_gd_and_updates_last_layer_more():
    """A PWO epoch is not a GD epoch: with L = 3, the last layer moves in 3 steps."""
    rng = np.random.default_rng(1)
    X, y = make_problem(40, 5, 1, "bce", rng)
    net = poswise.MLP((5, 6, 4, 1), rng=0)
    gd, pwo = net.copy(), net.copy()
    poswise.GradientDescent(0.1).fit(gd, X, y, epochs=1)
    poswise.PositionWise(0.1).fit(pwo, X, y, epochs=1)
    for l in range(3):
        assert not np.allclose(gd.weights[l], pwo.weights[l]) or l == 0
    # the first layer gets one update from the same activations' error in both methods
    # only when the later layers have not moved; here they have, so it differs too
    assert not np.allclose(gd.weights[0], pwo.weights[0])


@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 4), ("am_softmax", 4),
                                    ("mse", 2)])
def test_cython_matches_numpy_twin(pwo, loss, K):
    rng = np.random.default_rng(11)
    X, y = make_problem(50, 12, K, loss, rng)
    net = poswise.MLP((12, 9, 7, K), rng=5)
    twin = net.copy()
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    lr = 0.05 if loss == "am_softmax" else 0.2
    h1 = cls(lr, loss=loss, first_layer="primal").fit(net, X, y, epochs=10)
    h2 = cls(lr, loss=loss, backend="numpy").fit(twin, X, y, epochs=10)
    for l in range(3):
        assert rel_err(net.weights[l], twin.weights[l]) <= 1e-9
        assert rel_err(net.biases[l], twin.biases[l]) <= 1e-9
    np.testing.assert_allclose(h1.loss, h2.loss, rtol=1e-9)


@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 3), ("am_softmax", 3)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 2e-4)])
def test_dual_first_layer_matches_primal(pwo, loss, K, dtype, tol):
    rng = np.random.default_rng(2)
    X, y = make_problem(20, 300, K, loss, rng)
    Xv, yv = make_problem(7, 300, K, loss, rng)
    net = poswise.MLP((300, 8, 5, K), rng=4, dtype=dtype)
    dual = net.copy()
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    h1 = cls(0.05, loss=loss, first_layer="primal").fit(net, X, y, epochs=10,
                                                         validation_data=(Xv, yv))
    h2 = cls(0.05, loss=loss, first_layer="dual").fit(dual, X, y, epochs=10,
                                                      validation_data=(Xv, yv))
    assert h1.first_layer == "primal" and h2.first_layer == "dual"
    for l in range(3):
        assert rel_err(dual.weights[l], net.weights[l]) <= tol
        assert rel_err(dual.biases[l], net.biases[l]) <= tol
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=tol)
    np.testing.assert_allclose(h2.val_loss, h1.val_loss, rtol=tol)


def test_dual_weights_readable_during_fit():
    """A callback reading net.weights sees the current first layer in dual mode."""
    rng = np.random.default_rng(3)
    X, y = make_problem(10, 100, 1, "bce", rng)
    net = poswise.MLP((100, 6, 1), rng=1)
    ref = net.copy()
    seen = {}

    def cb(epoch, hist):
        if epoch == 3:
            seen["W0"] = net.weights[0].copy()

    poswise.GradientDescent(0.1, first_layer="dual").fit(net, X, y, epochs=6, callbacks=[cb])
    poswise.GradientDescent(0.1, first_layer="primal").fit(ref, X, y, epochs=3)
    assert rel_err(seen["W0"], ref.weights[0]) <= 1e-9


def test_auto_picks_dual_when_n_much_smaller_than_d():
    rng = np.random.default_rng(0)
    X, y = make_problem(20, 500, 1, "bce", rng)
    h = poswise.GradientDescent(0.1).fit(poswise.MLP((500, 8, 1), rng=0), X, y, epochs=50)
    assert h.first_layer == "dual"
    X, y = make_problem(200, 10, 1, "bce", rng)
    h = poswise.GradientDescent(0.1).fit(poswise.MLP((10, 8, 1), rng=0), X, y, epochs=50)
    assert h.first_layer == "primal"


@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 3), ("am_softmax", 3)])
def test_float32_agrees_with_float64(pwo, loss, K):
    rng = np.random.default_rng(5)
    X, y = make_problem(40, 10, K, loss, rng)
    n64 = poswise.MLP((10, 8, 6, K), rng=9)
    n32 = poswise.MLP((10, 8, 6, K), rng=9, dtype=np.float32)
    assert n32.weights[0].dtype == np.float32
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    lr = 0.002 if loss == "am_softmax" else 0.05   # s = 30 makes am_softmax steps large
    h64 = cls(lr, loss=loss).fit(n64, X, y, epochs=10)
    h32 = cls(lr, loss=loss).fit(n32, X, y, epochs=10)
    for l in range(3):
        assert n32.weights[l].dtype == np.float32
        assert rel_err(n32.weights[l], n64.weights[l]) <= 1e-4
    np.testing.assert_allclose(h32.loss, h64.loss, rtol=1e-4)


@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_minibatch_matches_reference_steps(pwo, backend):
    """batch_size=n: each shuffled mini-batch of an epoch is one GD step or PWO sweep."""
    rng = np.random.default_rng(8)
    X, y = make_problem(23, 6, 1, "bce", rng)
    net = poswise.MLP((6, 5, 4, 1), rng=2)
    W, b = [w.copy() for w in net.weights], [v.copy() for v in net.biases]
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    hist = cls(0.3, batch_size=5, rng=42, backend=backend).fit(net, X, y, epochs=3)
    gen = np.random.default_rng(42)
    for _ in range(3):
        perm = gen.permutation(23)
        for s in range(0, 23, 5):
            idx = perm[s:s + 5]
            W, b, _ = reference.train(W, b, X[idx], y[idx], lr=0.3, epochs=1, pwo=pwo)
    for l in range(3):
        assert rel_err(net.weights[l], W[l]) <= 1e-9
    full_loss = reference.gradients(W, b, X, y, "relu", "bce", 2)[0]
    assert hist.loss[-1] == pytest.approx(full_loss, rel=1e-9)


def test_target_loss_stops_at_first_epoch_below():
    rng = np.random.default_rng(4)
    X, y = make_problem(60, 4, 1, "bce", rng)
    y = (X[:, 0] > 0).astype(int)
    net = poswise.MLP((4, 8, 1), rng=0)
    free = net.copy()
    hist = poswise.PositionWise(0.5).fit(net, X, y, epochs=500, target_loss=0.3)
    full = poswise.PositionWise(0.5).fit(free, X, y, epochs=500)
    first = next(i for i, v in enumerate(full.loss) if v < 0.3)
    assert hist.epochs_to_target == first == hist.epochs
    assert hist.stopped_reason == "target_reached"
    assert hist.loss == full.loss[:first + 1]
    assert len(hist.seconds) == len(hist.loss)
    assert all(np.diff(hist.seconds) >= 0)
    assert hist.seconds_to_target == hist.seconds[first]


def test_validation_history_and_monitor():
    rng = np.random.default_rng(6)
    X, y = make_problem(50, 5, 3, "cross_entropy", rng)
    Xv, yv = make_problem(20, 5, 3, "cross_entropy", rng)
    y, yv = np.argmax(X[:, :3], axis=1), np.argmax(Xv[:, :3], axis=1)   # learnable
    net = poswise.MLP((5, 7, 3), rng=0)
    hist = poswise.GradientDescent(0.5, loss="cross_entropy").fit(
        net, X, y, epochs=5, validation_data=(Xv, yv))
    assert len(hist.val_loss) == len(hist.val_accuracy) == 6
    # the last entries describe the trained network
    p = net.predict_proba(Xv)
    assert hist.val_loss[-1] == pytest.approx(-np.mean(np.log(p[np.arange(20), yv])),
                                              rel=1e-9)
    assert hist.val_accuracy[-1] == pytest.approx(np.mean(net.predict(Xv) == yv))
    h2 = poswise.GradientDescent(0.5, loss="cross_entropy").fit(
        net.copy(), X, y, epochs=100, validation_data=(Xv, yv), monitor="val_loss",
        target_loss=hist.val_loss[-1])
    assert h2.epochs_to_target is not None
    assert h2.val_loss[h2.epochs_to_target] < hist.val_loss[-1]


def test_callback_stops_training():
    rng = np.random.default_rng(0)
    X, y = make_problem(20, 3, 1, "bce", rng)
    calls = []

    def cb(epoch, hist):
        calls.append(epoch)
        return epoch == 4

    hist = poswise.GradientDescent(0.1).fit(poswise.MLP((3, 2, 1), rng=0), X, y, epochs=50,
                                            callbacks=[cb])
    assert calls == [0, 1, 2, 3, 4]
    assert hist.epochs == 4 and hist.stopped_reason == "callback"


def test_determinism_under_fixed_seed():
    rng = np.random.default_rng(0)
    X, y = make_problem(40, 6, 3, "cross_entropy", rng)
    runs = []
    for _ in range(2):
        net = poswise.MLP((6, 5, 3), rng=123)
        poswise.PositionWise(0.1, loss="cross_entropy", batch_size=7, rng=9).fit(
            net, X, y, epochs=4)
        runs.append(net.weights)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
def test_two_threads_give_sequential_results(pwo):
    """The kernels release the GIL; concurrent fits on separate nets stay exact."""
    rng = np.random.default_rng(1)
    X, y = make_problem(400, 300, 3, "cross_entropy", rng)
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    nets = [poswise.MLP((300, 20, 7, 3), rng=s) for s in (1, 2)]
    seq = [n.copy() for n in nets]
    for n in seq:
        cls(0.1, loss="cross_entropy", first_layer="primal").fit(n, X, y, epochs=15)
    threads = [threading.Thread(target=cls(0.1, loss="cross_entropy",
                                           first_layer="primal").fit,
                                args=(n, X, y), kwargs={"epochs": 15}) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(nets, seq):
        for l in range(3):
            assert rel_err(a.weights[l], b.weights[l]) <= 1e-12


def test_kernel_releases_gil():
    """While a long nogil epoch runs, another Python thread keeps running."""
    from poswise._kernels._core import Engine
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 800))
    y = rng.integers(0, 2, 3000).astype(np.float64)
    net = poswise.MLP((800, 64, 1), rng=0)
    eng = Engine(net.weights, net.biases, "bce", "relu", 0.01, 30.0, 0.35, 3000)
    eng.set_data(X, y)
    eng.forward()
    ticks = []
    done = threading.Event()

    def spin():
        while not done.is_set():
            ticks.append(1)

    import sys
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    t = threading.Thread(target=spin)
    t.start()
    try:
        before = len(ticks)
        for _ in range(5):
            eng.epoch(0.01)
        during = len(ticks) - before
    finally:
        done.set()
        t.join()
        sys.setswitchinterval(old)
    assert during > 100


requires_direct = pytest.mark.skipif(
    not __import__("poswise._kernels._core", fromlist=["x"]).direct_supported(),
    reason="this CPU has neither AVX2+FMA nor AVX-512")


@requires_direct
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("N,D,n1", [(7, 3, 1), (130, 77, 5), (301, 250, 20), (2001, 50, 32),
                                    (33, 19, 16), (600, 700, 8)])
def test_direct_first_layer_matches_primal(pwo, dtype, tol, N, D, n1):
    rng = np.random.default_rng(N + D + n1)
    X, y = make_problem(N, D, 3, "cross_entropy", rng)
    Xv, yv = make_problem(11, D, 3, "cross_entropy", rng)
    net = poswise.MLP((D, n1, 6, 3), rng=1, dtype=dtype, activation="tanh")
    direct = net.copy()
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    kw = dict(epochs=10, validation_data=(Xv, yv))
    h1 = cls(0.05, loss="cross_entropy", first_layer="primal").fit(net, X, y, **kw)
    h2 = cls(0.05, loss="cross_entropy", first_layer="direct", threads=2).fit(direct, X, y,
                                                                              **kw)
    assert h2.first_layer == "direct"
    for l in range(3):
        assert rel_err(direct.weights[l], net.weights[l]) <= tol
        assert rel_err(direct.biases[l], net.biases[l]) <= tol
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=tol)
    np.testing.assert_allclose(h2.val_loss, h1.val_loss, rtol=tol)


@requires_direct
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
def test_direct_minibatch_and_thread_count_invariance(pwo):
    """Direct kernels give identical results for any thread count (sums in fixed order)."""
    rng = np.random.default_rng(3)
    X, y = make_problem(3000, 200, 1, "bce", rng)
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    nets = []
    for threads in (1, 2, 3):
        net = poswise.MLP((200, 20, 7, 1), rng=2)
        cls(0.05, first_layer="direct", threads=threads, batch_size=1000, rng=0).fit(
            net, X, y, epochs=3)
        nets.append(net)
    ref = poswise.MLP((200, 20, 7, 1), rng=2)
    cls(0.05, first_layer="primal", batch_size=1000, rng=0).fit(ref, X, y, epochs=3)
    for net in nets[1:]:
        for a, b in zip(net.weights + net.biases, nets[0].weights + nets[0].biases):
            np.testing.assert_array_equal(a, b)
    for l in range(3):
        assert rel_err(nets[0].weights[l], ref.weights[l]) <= 1e-9


def test_dual_epochs_run_blas_on_one_thread_unless_told():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {p["filepath"]: p["num_threads"] for p in threadpool_info()
                if p["user_api"] == "blas"}

    before = blas_threads()
    rng = np.random.default_rng(0)
    X, y = make_problem(20, 400, 1, "bce", rng)
    seen = []
    cb = lambda epoch, hist: seen.append(set(blas_threads().values()))  # noqa: E731
    poswise.GradientDescent(0.1, first_layer="dual").fit(
        poswise.MLP((400, 8, 1), rng=0), X, y, epochs=3, callbacks=[cb])
    assert all(s == {1} for s in seen)
    assert blas_threads() == before
    seen.clear()
    poswise.GradientDescent(0.1, first_layer="primal").fit(
        poswise.MLP((400, 8, 1), rng=0), X, y, epochs=3, callbacks=[cb])
    assert seen[-1] == set(before.values())


@requires_direct
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 3), ("mse", 2)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("block_bytes", [1, 3000, 1 << 22], ids=["16rows", "odd", "one"])
def test_fused_gd_epoch_matches_primal(monkeypatch, loss, K, dtype, tol, block_bytes):
    """Full-batch GD with the direct first layer reads X once per epoch, block by block
    (blocks of 16 rows, of an odd size with a tail, or one block): same results."""
    import poswise._plan as tr
    monkeypatch.setattr(tr, "FUSED_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(K)
    X, y = make_problem(203, 37, K, loss, rng)
    Xv, yv = make_problem(9, 37, K, loss, rng)
    net = poswise.MLP((37, 20, 6, K), rng=1, dtype=dtype, activation="tanh")
    fused, three = net.copy(), net.copy()
    kw = dict(epochs=10, validation_data=(Xv, yv))
    h1 = poswise.GradientDescent(0.05, loss=loss, first_layer="primal").fit(net, X, y, **kw)
    h2 = poswise.GradientDescent(0.05, loss=loss, first_layer="direct").fit(fused, X, y, **kw)
    # three threads, each with its own range of blocks
    poswise.GradientDescent(0.05, loss=loss, first_layer="direct", threads=3).fit(
        three, X, y, **kw)
    for l in range(3):
        assert rel_err(three.weights[l], net.weights[l]) <= tol
        assert rel_err(fused.weights[l], net.weights[l]) <= tol
        assert rel_err(fused.biases[l], net.biases[l]) <= tol
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=tol)
    np.testing.assert_allclose(h2.val_loss, h1.val_loss, rtol=tol)
    np.testing.assert_allclose(h2.val_accuracy, h1.val_accuracy)


@requires_direct
@pytest.mark.parametrize("loss,K", [("bce", 1), ("cross_entropy", 3), ("mse", 2)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("threads", [2, 3])
def test_row_threaded_pwo_matches_primal(monkeypatch, loss, K, dtype, tol, threads):
    """PWO span steps split over threads by rows (partial gradients added in thread
    order) agree with the serial BLAS path, validation data included."""
    import poswise._plan as tr
    monkeypatch.setattr(tr, "SPAN_THREAD_MIN_ROWS", 1)
    rng = np.random.default_rng(K + threads)
    X, y = make_problem(211, 37, K, loss, rng)
    Xv, yv = make_problem(9, 37, K, loss, rng)
    net = poswise.MLP((37, 20, 6, 5, K), rng=1, dtype=dtype, activation="tanh")
    rows = net.copy()
    kw = dict(epochs=10, validation_data=(Xv, yv))
    h1 = poswise.PositionWise(0.05, loss=loss, first_layer="primal").fit(net, X, y, **kw)
    h2 = poswise.PositionWise(0.05, loss=loss, first_layer="direct", threads=threads).fit(
        rows, X, y, **kw)
    for l in range(4):
        assert rel_err(rows.weights[l], net.weights[l]) <= tol
        assert rel_err(rows.biases[l], net.biases[l]) <= tol
    np.testing.assert_allclose(h2.loss, h1.loss, rtol=tol)
    np.testing.assert_allclose(h2.val_loss, h1.val_loss, rtol=tol)
