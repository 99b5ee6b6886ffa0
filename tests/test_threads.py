"""Thread counts 1 to 64 through the public API, on every threaded path (issue 8).

The machine may have 2 cores: counts above that oversubscribe it on purpose, the point is
the code paths (per-thread arrays, the job builders' clamping, the thread pool). Every case
checks that it really ran on several threads: the direct kernels count their parallel
calls (``pw_stats`` in ``_direct.h``, read with ctypes), the BLAS paths report their thread
count through threadpoolctl during the epochs.

The promised bound, float64, 3 epochs, norm-wise relative (``conftest.rel_err``):

* mini-batch with the direct first layer: bit-identical. Its kernels split the forward
  product by rows and the gradient by columns, so every element's sum runs over the same
  terms in the same order for any thread count.
* fused GD and row-threaded PWO (direct), dual and primal (BLAS threads): <= 1e-12. Thread
  t sums its own contiguous rows and the per-thread partial sums are added in thread order,
  so only the association of each sum over the rows changes. Two associations of a sum of
  n terms a_i differ by at most 2 (n - 1) u sum|a_i| (u = 2**-53), by about 2 sqrt(n) u
  sum|a_i| for rounding errors of random sign. Here n <= 4096 rows and the gradient's
  terms carry the loss's 1/n, so sum|a_i| is of the order of max|a_i| n = O(1) for
  standardised data; with lr = 0.05 one epoch moves a weight by at most
  0.05 * 2 * 4096 * 1.1e-16 = 4.5e-14 (worst case) and 1.5e-15 (typical), relative to
  weights of order 0.1: 4.5e-13 and 1.5e-14 per epoch. Three epochs of a contracting
  training map keep the typical case two orders of magnitude under 1e-12; the worst case
  of 1.4e-12 would need every rounding error of every sum to share its sign.
"""
import ctypes

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import poswise
import poswise._plan as plan
from poswise._kernels import _core
from conftest import make_problem, rel_err

THREADS = (1, 2, 3, 8, 9, 16, 33, 64)
BOUND = 1e-12
EPOCHS = 3

requires_direct = pytest.mark.skipif(not _core.direct_supported(),
                                     reason="this CPU has neither AVX2+FMA nor AVX-512")


class KernelStats:
    """The direct kernels' parallel-call counters (``pw_stats`` in ``_direct.h``)."""

    def __init__(self):
        lib = ctypes.CDLL(_core.__file__)        # the loaded extension: same handle
        self._reset = lib.pw_stats_reset
        self._stats = (ctypes.c_longlong * 5).in_dll(lib, "pw_stats")

    def reset(self):
        self._reset()

    @property
    def calls(self):
        """pw_parallel calls that ran with more than one thread."""
        return self._stats[0]

    @property
    def widest(self):
        """The largest thread count of such a call."""
        return self._stats[1]

    @property
    def pooled(self):
        return self._stats[2]


@pytest.fixture
def kstats():
    s = KernelStats()
    s.reset()
    return s


def _blas_threads():
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def _train(cls, sizes, X, y, threads, seen=None, **kw):
    net = poswise.MLP(sizes, rng=1, activation="tanh")
    callbacks = [lambda epoch, hist: seen.append(_blas_threads())] if seen is not None else []
    hist = cls(0.05, loss="cross_entropy", threads=threads, **kw).fit(
        net, X, y, epochs=EPOCHS, callbacks=callbacks)
    return net, hist


def _max_rel(net, ref):
    return max(rel_err(a, b) for a, b in zip(net.weights + net.biases,
                                            ref.weights + ref.biases))


_REFERENCES = {}


def _reference(key, make):
    """threads=1 result of a case, computed once per session."""
    if key not in _REFERENCES:
        _REFERENCES[key] = make()
    return _REFERENCES[key]


# ------------------------------------------------------------------ direct, fused GD

def _fused_case(monkeypatch):
    # 1100 rows, blocks of 16 rows: 69 blocks, so even 64 threads get whole blocks each
    N, D = 1100, 48
    monkeypatch.setattr(plan, "FUSED_BLOCK_BYTES", 16 * D * 8)
    X, y = make_problem(N, D, 3, "cross_entropy", np.random.default_rng(0))
    return X, y, (D, 20, 7, 3)


@requires_direct
@pytest.mark.parametrize("threads", THREADS)
def test_fused_gd_any_thread_count(monkeypatch, kstats, threads):
    X, y, sizes = _fused_case(monkeypatch)
    ref, _ = _reference("fused", lambda: _train(poswise.GradientDescent, sizes, X, y, 1,
                                                first_layer="direct"))
    kstats.reset()
    net, hist = _train(poswise.GradientDescent, sizes, X, y, threads, first_layer="direct")
    assert hist.first_layer == "direct"
    nblocks = -(-X.shape[0] // 16)
    assert kstats.widest == (min(threads, 64, nblocks) if threads > 1 else 0)
    assert _max_rel(net, ref) <= BOUND
    assert np.all(np.isfinite(hist.loss))


# ------------------------------------------------------------------ direct, row-threaded PWO

@requires_direct
@pytest.mark.parametrize("threads", THREADS)
def test_row_threaded_pwo_any_thread_count(kstats, threads):
    # N = SPAN_THREAD_MIN_ROWS rows: the span steps split their rows over the threads
    N, D = plan.SPAN_THREAD_MIN_ROWS, 24
    X, y = make_problem(N, D, 3, "cross_entropy", np.random.default_rng(1))
    sizes = (D, 20, 7, 5, 3)
    ref, _ = _reference("rows", lambda: _train(poswise.PositionWise, sizes, X, y, 1,
                                               first_layer="direct"))
    kstats.reset()
    net, hist = _train(poswise.PositionWise, sizes, X, y, threads, first_layer="direct")
    assert kstats.widest == (min(threads, 64) if threads > 1 else 0)
    assert _max_rel(net, ref) <= BOUND


@requires_direct
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("block", [16, 112, None])
def test_row_wise_span_steps_any_block(monkeypatch, kstats, block, threads):
    # row-wise span steps go block by block over each thread's rows; against the
    # whole-array span steps (no row-wise passes), only the association of the gradients'
    # sums over the rows changes: the same bound as thread counts
    N, D = 1000, 24
    X, y = make_problem(N, D, 3, "cross_entropy", np.random.default_rng(3))
    sizes = (D, 20, 7, 5, 3)
    monkeypatch.setattr(plan, "SPAN_THREAD_MIN_ROWS", 10 ** 9)
    ref, _ = _train(poswise.PositionWise, sizes, X, y, 1, first_layer="direct")
    monkeypatch.setattr(plan, "SPAN_THREAD_MIN_ROWS", 1)
    monkeypatch.setattr(plan, "SPAN_BLOCK_ROWS", block)
    kstats.reset()
    net, hist = _train(poswise.PositionWise, sizes, X, y, threads, first_layer="direct")
    assert kstats.widest == (threads if threads > 1 else 0)
    assert _max_rel(net, ref) <= BOUND
    assert np.all(np.isfinite(hist.loss))


@requires_direct
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_narrow_layers_span_block_changes_no_bits(monkeypatch, dtype):
    # layers after the first of at most PW_SMALL_MAX units take _small.h's kernels, whose
    # gradient continues each element's sum from block to block, as the first layer's
    # does, and the bias sums run over the rows in order: on one thread the weights do
    # not depend on the span block at all (only the reported loss, a sum of block sums)
    if dtype == np.float64 and ctypes.CDLL(_core.__file__).pw_active_isa() == 1:
        pytest.skip("AVX2 float64 gradients of more than 16 columns (the 20-unit layer's) "
                    "keep BLAS, whose sums depend on the block (docs/design.md)")
    N, D = 1000, 24
    X, y = make_problem(N, D, 3, "cross_entropy", np.random.default_rng(5))
    X = X.astype(dtype)
    monkeypatch.setattr(plan, "SPAN_THREAD_MIN_ROWS", 1)
    nets = []
    for block in (16, 112, 0):
        monkeypatch.setattr(plan, "SPAN_BLOCK_ROWS", block)
        net = poswise.MLP((D, 20, 7, 5, 3), rng=1, activation="tanh", dtype=dtype)
        poswise.PositionWise(0.05, loss="cross_entropy", threads=1,
                             first_layer="direct").fit(net, X, y, epochs=EPOCHS)
        nets.append(net)
    for net in nets[1:]:
        for a, b in zip(net.weights + net.biases, nets[0].weights + nets[0].biases):
            np.testing.assert_array_equal(a, b)


def test_span_block_from_the_level_2_cache():
    # the engine's rows per block: as given, or as many rows as fit the level-2 cache the
    # CPU reports with their activations and errors (2 values per unit of each layer
    # after the first), at least SPAN_BLOCK_MIN
    lib = ctypes.CDLL(_core.__file__)
    lib.pw_cache_size.restype = ctypes.c_long
    l2 = lib.pw_cache_size(2)
    for dt, sizes in ((np.float64, (24, 20, 7, 5, 3)), (np.float32, (24, 300, 200, 3)),
                      (np.float64, (24, 4000, 3))):
        net = poswise.MLP(sizes, rng=0, dtype=dt)
        ws = [np.ascontiguousarray(w) for w in net.weights]
        bs = [np.ascontiguousarray(b) for b in net.biases]
        args = (ws, bs, "cross_entropy", "tanh", 0.0, 30.0, 0.0, 100)
        assert _core.Engine(*args).span_block == 0
        assert _core.Engine(*args, row_threads=True, span_block=48).span_block == 48
        row_bytes = 2 * sum(sizes[1:]) * np.dtype(dt).itemsize
        assert _core.Engine(*args, row_threads=True).span_block == max(
            _core.SPAN_BLOCK_MIN, l2 // row_bytes // 16 * 16)


# ------------------------------------------------------------------ direct, mini-batch

@requires_direct
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
@pytest.mark.parametrize("threads", THREADS)
def test_direct_minibatch_bit_identical(kstats, pwo, threads):
    # the kernels take at least PW_THREAD_GRAIN (65536) elements of X per thread: up to 3
    # threads split a batch's products (1000 x 256), up to 11 the first forward pass over
    # the whole data (3000 x 256)
    X, y = make_problem(3000, 256, 3, "cross_entropy", np.random.default_rng(2))
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    sizes = (256, 20, 7, 3)
    kw = dict(first_layer="direct", batch_size=1000, rng=0)
    ref, _ = _reference(("mb", pwo), lambda: _train(cls, sizes, X, y, 1, **kw))
    kstats.reset()
    net, _ = _train(cls, sizes, X, y, threads, **kw)
    assert kstats.widest == (min(threads, 3000 * 256 // 65536) if threads > 1 else 0)
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ BLAS paths

@pytest.mark.parametrize("threads", [pytest.param(t, marks=pytest.mark.slow) if t > 8 else t
                                     for t in THREADS])
@pytest.mark.parametrize("mode,N,D,cls", [("dual", 300, 500, poswise.PositionWise),
                                          ("primal", 800, 150, poswise.GradientDescent)],
                         ids=["dual-pwo", "primal-gd"])
def test_blas_paths_any_thread_count(threads, mode, N, D, cls):
    # Oversubscribed OpenBLAS threads wait for each other slowly (~0.1 s per call above 8
    # threads on 2 cores): primal runs GD, whose epoch has fewer BLAS calls than PWO's,
    # and the counts above 8 are marked slow.
    X, y = make_problem(N, D, 3, "cross_entropy", np.random.default_rng(3))
    sizes = (D, 20, 7, 3)
    ref, _ = _reference(mode, lambda: _train(cls, sizes, X, y, 1, first_layer=mode))
    seen = []
    net, hist = _train(cls, sizes, X, y, threads, seen=seen, first_layer=mode)
    assert hist.first_layer == mode
    # BLAS ran on several threads, at most the requested number, during every epoch (an
    # OpenBLAS built for fewer threads than asked clamps the request)
    assert seen and all(all(min(threads, 2) <= n <= threads for n in s) for s in seen)
    assert _max_rel(net, ref) <= BOUND


# ------------------------------------------------------------------ the pool itself

@requires_direct
def test_pool_runs_shares_on_workers(monkeypatch, kstats):
    """Thread counts above the pool's size of the moment grow it; every share of a call
    with n threads but the caller's runs on a pool worker when no other call owns it."""
    X, y, sizes = _fused_case(monkeypatch)
    _train(poswise.GradientDescent, sizes, X, y, 5, first_layer="direct")
    assert kstats.calls > 0
    assert kstats.pooled == 4 * kstats.calls


@requires_direct
def test_concurrent_fits_share_the_pool_safely(monkeypatch):
    """Two Python threads training at once: one owns the pool, the other starts threads
    of its own; both give the serial results."""
    import threading
    X, y, sizes = _fused_case(monkeypatch)
    ref, _ = _reference("fused", lambda: _train(poswise.GradientDescent, sizes, X, y, 1,
                                                first_layer="direct"))
    nets = [None] * 4

    def run(i):
        nets[i], _ = _train(poswise.GradientDescent, sizes, X, y, 3 + i,
                            first_layer="direct")

    workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for net in nets:
        assert _max_rel(net, ref) <= BOUND


@requires_direct
def test_pool_works_in_a_forked_child(monkeypatch):
    """A child forked after the pool started has none of its workers: it must start its
    own instead of waiting for the parent's (which do not exist in the child)."""
    import os
    import time
    X, y, sizes = _fused_case(monkeypatch)
    ref, _ = _reference("fused", lambda: _train(poswise.GradientDescent, sizes, X, y, 1,
                                                first_layer="direct"))
    _train(poswise.GradientDescent, sizes, X, y, 4, first_layer="direct")   # pool running
    pid = os.fork()
    if pid == 0:                                   # the child: never returns into pytest
        code = 3
        try:
            net, _ = _train(poswise.GradientDescent, sizes, X, y, 4, first_layer="direct")
            code = 0 if _max_rel(net, ref) <= BOUND else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the thread pool")
        time.sleep(0.02)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# ------------------------------------------------------------------ MNIST-shaped, 1..16

@pytest.mark.slow
@pytest.mark.parametrize("pwo", [False, True], ids=["gd", "pwo"])
def test_mnist_shaped_threads_1_to_16(pwo):
    """The issue's run: 20000 x 784 random data, 784-20-7-5-10, cross-entropy, lr 0.05,
    3 epochs, first_layer="auto", threads 1 to 16 against threads=1."""
    rng = np.random.default_rng(8)
    X = rng.random((20000, 784))
    y = rng.integers(0, 10, 20000)
    cls = poswise.PositionWise if pwo else poswise.GradientDescent
    results = {}
    for threads in range(1, 17):
        net = poswise.MLP((784, 20, 7, 5, 10), rng=0)
        hist = cls(0.05, loss="cross_entropy", threads=threads).fit(net, X, y, epochs=3)
        results[threads] = (net, hist)
    ref, href = results[1]
    for threads, (net, hist) in results.items():
        assert hist.first_layer == href.first_layer
        assert _max_rel(net, ref) <= BOUND, threads
        np.testing.assert_allclose(hist.loss, href.loss, rtol=BOUND)
