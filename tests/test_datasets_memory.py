"""Memory honesty (issue 13): converting X never copies a large array silently, and
inputs poswise cannot use (scipy sparse) get a message with the fix."""
import warnings

import numpy as np
import pytest

import poswise
from poswise import _layout
from poswise._layout import LARGE_COPY_FRACTION, LargeCopyWarning, check_X


@pytest.fixture
def small_machine(monkeypatch):
    """Pretend the machine has 1 MB of memory, all available: a copy above
    LARGE_COPY_FRACTION of it (20 kB) is large."""
    monkeypatch.setattr(_layout, "total_memory", lambda: 1_000_000)
    monkeypatch.setattr(_layout, "available_memory", lambda: 1_000_000)
    return LARGE_COPY_FRACTION * 1_000_000


def _silent(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return func(*args, **kwargs)


@pytest.mark.parametrize("dtype, src_dtype, fix", [
    (np.float64, np.float32, "dtype=np.float32"),
    (np.float32, np.float64, "np.ascontiguousarray"),
    (np.float64, np.int64, "np.ascontiguousarray"),
])
def test_large_dtype_conversion_is_announced_with_the_fix(small_machine, dtype, src_dtype,
                                                          fix):
    X = np.ones((1000, 10), dtype=src_dtype)           # 10000 values: 40-80 kB copies
    assert X.size * np.dtype(dtype).itemsize > small_machine
    with pytest.warns(LargeCopyWarning, match=f"X is copied whole.*{fix}") as rec:
        out = check_X(X, dtype)
    assert len(rec) == 1
    np.testing.assert_array_equal(out, X.astype(dtype))


def test_large_non_contiguous_copy_is_announced(small_machine):
    X = np.asfortranarray(np.ones((1000, 10)))
    with pytest.warns(LargeCopyWarning, match="not C-contiguous.*np.ascontiguousarray"):
        check_X(X, np.float64)


def test_no_copy_no_word(small_machine):
    X = np.ones((1000, 10))
    out = _silent(check_X, X, np.float64)
    assert out is X                                    # used in place


def test_small_copies_stay_silent(small_machine):
    X = np.ones((100, 10), dtype=np.float32)           # 8 kB < 20 kB
    _silent(check_X, X, np.float64)


def test_copy_beyond_available_memory_is_refused_before_allocating(small_machine,
                                                                  monkeypatch):
    monkeypatch.setattr(_layout, "available_memory", lambda: 50_000)
    X = np.ones((1000, 10), dtype=np.float32)          # 80 kB copy > 50 kB available
    with pytest.raises(ValueError, match="X would be copied whole.*dtype=np.float32"):
        check_X(X, np.float64)


def test_predict_announces_the_copy_of_a_float32_memmap_fit_streams_it(small_machine, tmp_path):
    path = tmp_path / "X.f32"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(1000, 10))
    mm[:] = np.random.default_rng(0).standard_normal((1000, 10))
    y = (mm[:, 0] > 0).astype(int)
    net = poswise.MLP((10, 4, 1), rng=0)                # float64 network
    with pytest.warns(LargeCopyWarning, match="float32"):
        net.predict(mm)
    # fit does not copy it: the memmap is read in blocks (converted per block)
    ref = net.copy()
    _silent(poswise.GradientDescent(0.1).fit, net, mm, y, epochs=1)
    poswise.GradientDescent(0.1).fit(ref, np.asarray(mm, dtype=np.float64), y, epochs=1)
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    net32 = poswise.MLP((10, 4, 1), rng=0, dtype=np.float32)
    _silent(net32.predict, mm)                          # the fix: no copy, no word


def test_real_machine_threshold_is_a_fraction_of_its_memory():
    total = _layout.total_memory()
    assert total is None or total > 0
    avail = _layout.available_memory()
    assert avail is None or 0 < avail <= (total or avail) * 1.01
    assert 0 < LARGE_COPY_FRACTION < 1


def test_sparse_input_gets_a_clear_message():
    sparse = pytest.importorskip("scipy.sparse")
    net = poswise.MLP((5, 3, 1), rng=0)
    X = sparse.random(8, 5, density=0.5, format="csr", random_state=0)
    y = np.arange(8) % 2
    for call in (lambda: net.predict(X), lambda: net.predict_proba(X),
                 lambda: poswise.GradientDescent(0.1).fit(net, X, y, epochs=1),
                 lambda: poswise.GradientDescent(0.1).fit(
                     net, X.toarray(), y, epochs=1, validation_data=(X, y))):
        with pytest.raises(ValueError, match=r"sparse input is not supported; use "
                                             r"\.toarray\(\)"):
            call()
    for fmt in ("coo", "csc", "lil"):
        with pytest.raises(ValueError, match="sparse"):
            check_X(X.asformat(fmt), np.float64)
    if hasattr(sparse, "csr_array"):
        with pytest.raises(ValueError, match="sparse"):
            check_X(sparse.csr_array(X), np.float64)
    np.testing.assert_array_equal(check_X(X.toarray(), np.float64), X.toarray())
