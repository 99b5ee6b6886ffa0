"""Data larger than memory: the block reader and streamed epochs (poswise._streaming and
the epoch runner with a reader)."""
import threading
import time

import h5py
import numpy as np
import pytest

from dist_cases import ENGINES, RULES, make_case, rel_err, train
from poswise._streaming import BlockReader, NpyRows, is_streamable
from poswise.distributed import run_ranks, rows_for_rank


class Rows:
    """An array-like of rows that records each read (the generic X of the reader)."""

    def __init__(self, a):
        self.a, self.reads = a, []
        self.shape, self.dtype = a.shape, a.dtype
        self.threads = set()

    def __getitem__(self, key):
        self.reads.append((key.start, key.stop))
        self.threads.add(threading.current_thread().name)
        return self.a[key].tolist()          # not even an ndarray


@pytest.fixture
def files(tmp_path):
    X = np.random.default_rng(0).standard_normal((23, 6))
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X.astype(np.float32)
    return X, tmp_path


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("block_rows", [1, 5, 23, 100])
def test_blocks_cover_rows(files, prefetch, block_rows):
    X, d = files
    X32 = X.astype(np.float32)
    mm = np.load(d / "x.npy", mmap_mode="r")
    with h5py.File(d / "x.h5", "r") as f:
        for src in (mm, f["X"], Rows(X32), X32, NpyRows(d / "x.npy")):
            for dtype in (np.float32, np.float64):
                r = BlockReader(src, dtype, block_rows=block_rows, prefetch=prefetch)
                blocks = list(r)
                assert [(lo, hi) for lo, hi, _ in blocks] == r.bounds()
                assert all(b.dtype == dtype and b.flags.c_contiguous for *_, b in blocks)
                assert max(b.shape[0] for *_, b in blocks) == min(block_rows, 23)
                np.testing.assert_array_equal(np.concatenate([b for *_, b in blocks]),
                                              X32.astype(dtype))
                assert list(r) and r.n_blocks == len(blocks)       # a second pass works
                r.close()


def test_npy_rows(tmp_path):
    X = np.arange(60, dtype=np.float32).reshape(12, 5)
    np.save(tmp_path / "x.npy", X)
    rows = NpyRows(tmp_path / "x.npy")
    assert rows.shape == X.shape and rows.dtype == X.dtype and len(rows) == 12
    for lo, hi in ((0, 12), (3, 7), (11, 12), (5, 5)):
        np.testing.assert_array_equal(rows[lo:hi], X[lo:hi])
    np.testing.assert_array_equal(rows[-2:], X[-2:])
    with pytest.raises(TypeError, match="row slices"):
        rows[::2]
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="Fortran order"):
        NpyRows(tmp_path / "f.npy")
    with open(tmp_path / "x.npy", "r+b") as f:       # cut off the last rows
        f.truncate(f.seek(0, 2) - 30)
    with pytest.raises(ValueError, match="truncated"):
        NpyRows(tmp_path / "x.npy")[8:12]


def test_block_size_from_bytes():
    r = BlockReader(np.zeros((1000, 10), np.float32), np.float64, block_bytes=800)
    assert r.block_rows == 10                                   # 800 B of float64 rows
    assert not r.prefetch                                       # in-memory array


def test_hdf5_blocks_are_whole_chunks(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("X", data=np.ones((1000, 4)), chunks=(30, 4))
        f.create_dataset("Y", data=np.ones((1000, 4)), chunks=(30, 2))
        assert BlockReader(f["X"], np.float64, block_bytes=100 * 32).block_rows == 90
        assert BlockReader(f["X"], np.float64, block_bytes=10 * 32).block_rows == 30
        assert BlockReader(f["Y"], np.float64, block_bytes=100 * 32).block_rows == 100


def test_memmap_block_is_a_view_of_the_file(files):
    _, d = files
    mm = np.load(d / "x.npy", mmap_mode="r")
    (_, _, block), = list(BlockReader(mm, np.float32, block_rows=23))
    assert np.shares_memory(block, mm)


def test_prefetch_reads_ahead_in_a_thread(files):
    X, _ = files
    src = Rows(X)
    r = BlockReader(src, np.float64, block_rows=4)
    assert r.prefetch
    it = iter(r)
    next(it)
    for _ in range(500):                        # the next block is read without asking
        if len(src.reads) == 2:
            break
        time.sleep(0.01)
    assert src.reads == [(0, 4), (4, 8)]
    assert src.threads == {t for t in src.threads if t.startswith("poswise-read")}
    it.close()                                  # abandoned mid-pass: no read left running
    r.close()


@pytest.mark.parametrize("prefetch", [False, True])
def test_nonfinite_block_names_rows(prefetch):
    X = np.ones((10, 3))
    X[7, 2] = np.nan
    X[8, 0] = np.inf
    r = BlockReader(X, np.float64, block_rows=4, prefetch=prefetch)
    with pytest.raises(ValueError, match=r"X rows \[4, 8\) contain 1 NaN or infinite "
                                         r"value\(s\).*row 7, column 2"):
        list(r)
    big = np.full((3, 2), 1e300)
    with pytest.raises(ValueError, match=r"rows \[0, 3\).*after conversion to float32"):
        list(BlockReader(big, np.float32))


@pytest.mark.parametrize("X, match, exc", [
    (object(), "must be an array, an np.memmap, an h5py.Dataset", TypeError),
    (np.zeros(5), "2-D array", ValueError),
    (np.zeros((0, 3)), "non-empty", ValueError),
    (np.array([["a"]]), "real numbers", ValueError),
])
def test_reader_errors(X, match, exc):
    with pytest.raises(exc, match=match):
        BlockReader(X, np.float64)


@pytest.mark.parametrize("check", ["once", "always"])
def test_finiteness_checked_once_or_always(check):
    X = np.ones((10, 3))
    r = BlockReader(X, np.float64, block_rows=4, check=check, prefetch=False)
    list(r)
    X[9, 1] = np.inf                   # the data change after a first, clean pass
    if check == "always":
        with pytest.raises(ValueError, match=r"rows \[8, 10\)"):
            list(r)
    else:
        assert np.isinf(np.concatenate([b for *_, b in r])).sum() == 1
    with pytest.raises(ValueError, match="'check'"):
        BlockReader(X, np.float64, check="never")


def test_reader_checks_features_and_block_rows():
    with pytest.raises(ValueError, match="4 features per sample but the network expects 5"):
        BlockReader(np.zeros((3, 4)), np.float64, n_features=5)
    with pytest.raises(ValueError, match="'block_rows'"):
        BlockReader(np.zeros((3, 4)), np.float64, block_rows=0)


def test_is_streamable(files):
    _, d = files
    assert is_streamable(np.load(d / "x.npy", mmap_mode="r"))
    assert not is_streamable(np.zeros((2, 2)))
    with h5py.File(d / "x.h5", "r") as f:
        assert is_streamable(f["X"])


# ------------------------------------------------------------------ streamed epochs

def _on_disk(tmp_path, X, kind):
    if kind == "memmap":
        np.save(tmp_path / "x.npy", X)
        return np.load(tmp_path / "x.npy", mmap_mode="r"), None
    f = h5py.File(tmp_path / "x.h5", "w")
    f["X"] = X
    return f["X"], f


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["memmap", "hdf5"])
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
@pytest.mark.parametrize("update", ["sgd", "adam", "rmsprop"])
def test_streamed_equals_in_memory(tmp_path, kind, schedule, update, engine):
    X, y, W, b = make_case(N=41)
    W1, b1, l1 = train(X, y, W, b, schedule=schedule, update=update, epochs=20,
                       engine=engine)
    Xd, f = _on_disk(tmp_path, X, kind)
    try:
        reader = BlockReader(Xd, np.float64, block_rows=6)
        Ws, bs, ls = train(None, y, W, b, schedule=schedule, update=update, epochs=20,
                           reader=reader, engine=engine)
    finally:
        if f is not None:
            f.close()
    assert rel_err(Ws + bs, W1 + b1) <= 1e-12
    np.testing.assert_allclose(ls, l1, rtol=1e-12)


@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_streamed_float32_file_trained_in_float64(tmp_path, schedule):
    """A float32 file, a float64 network: each block is converted, never X whole."""
    X, y, W, b = make_case(N=30)
    X32 = X.astype(np.float32)
    W1, b1, _ = train(X32.astype(np.float64), y, W, b, schedule=schedule, update="adam",
                      epochs=10)
    np.save(tmp_path / "x.npy", X32)
    reader = BlockReader(np.load(tmp_path / "x.npy", mmap_mode="r"), np.float64,
                         block_rows=7)
    Ws, bs, _ = train(None, y, W, b, schedule=schedule, update="adam", epochs=10,
                      reader=reader)
    assert rel_err(Ws + bs, W1 + b1) <= 1e-12


@pytest.mark.parametrize("schedule, passes", [("gd", 1), ("pwo", 2)])
def test_reads_of_X_per_epoch(schedule, passes):
    X, y, W, b = make_case(N=20)
    src = Rows(X)
    reader = BlockReader(src, np.float64, block_rows=6)
    epochs = 5
    train(None, y, W, b, schedule=schedule, update="sgd", epochs=epochs, reader=reader)
    rows_read = sum(hi - lo for lo, hi in src.reads)
    # the first epoch starts with one forward pass over X (fused with the gradient)
    assert rows_read == len(y) * (1 + passes * epochs)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
@pytest.mark.parametrize("update", RULES)
def test_streamed_ranks_equal_single_process(tmp_path, schedule, update, engine):
    """Two simulated ranks, each streaming its rows of one memmap file."""
    X, y, W, b = make_case(N=29)
    W1, b1, l1 = train(X, y, W, b, schedule=schedule, update=update, epochs=20,
                       engine=engine)
    np.save(tmp_path / "x.npy", X)

    def rank(comm):
        rows = rows_for_rank(len(y), comm.Get_rank(), comm.Get_size())
        Xr = np.load(tmp_path / "x.npy", mmap_mode="r")[rows]
        reader = BlockReader(Xr, np.float64, block_rows=4)
        return train(None, y[rows], W, b, schedule=schedule, update=update, epochs=20,
                     comm=comm, n_total=len(y), reader=reader, engine=engine)

    out = run_ranks(2, rank)
    for Wk, bk, lk in out:
        assert rel_err(Wk + bk, W1 + b1) <= 1e-12
        np.testing.assert_allclose(lk, l1, rtol=1e-12)
        for a, c in zip(Wk + bk, out[0][0] + out[0][1]):
            np.testing.assert_array_equal(a, c)


# ------------------------------------------------------------------ mapped files, buffers

def _h5(path, X, mode="r", **create):
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, **create)
    f = h5py.File(path, mode)
    return f, f["X"]


@pytest.mark.parametrize("create, mapped", [
    ({}, True),                                          # contiguous
    ({"chunks": (4, 6)}, True),                          # whole rows, written in order
    ({"chunks": (4, 3)}, False),                         # chunks split rows
    ({"chunks": (4, 6), "compression": "gzip"}, False),  # a filter
    ({"chunks": (4, 6), "shuffle": True}, False),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hdf5_rows_mapped_from_the_file(tmp_path, monkeypatch, create, mapped, dtype):
    """Uncompressed rows stored as one C-ordered array are mapped (no copy); the blocks
    equal the data whatever the path, for both training dtypes."""
    from poswise import _mapped
    monkeypatch.setattr(_mapped, "MIN_EXTENT_BYTES", 0)        # a tiny test file
    X = np.random.default_rng(1).standard_normal((23, 6)).astype(np.float32)
    f, ds = _h5(tmp_path / "x.h5", X, **create)
    with f:
        r = BlockReader(ds, dtype, block_rows=5)
        assert r.mapped is mapped
        for blocks in ([b for *_, b in r], [b.copy() for *_, b in r.stream()]):
            np.testing.assert_array_equal(np.concatenate(blocks), X.astype(dtype))
        r.close()


def test_hdf5_not_mapped_when_writable_or_chunks_out_of_order(tmp_path):
    X = np.arange(40, dtype=np.float64).reshape(8, 5)
    f, ds = _h5(tmp_path / "w.h5", X, mode="r+")
    with f:                              # data may sit in HDF5's cache: read through it
        assert not BlockReader(ds, np.float64).mapped
    with h5py.File(tmp_path / "o.h5", "w") as f:
        d = f.create_dataset("X", shape=(8, 5), dtype=np.float64, chunks=(2, 5))
        for lo in (6, 4, 2, 0):          # chunks allocated in reverse row order
            d[lo:lo + 2] = X[lo:lo + 2]
    with h5py.File(tmp_path / "o.h5", "r") as f:
        r = BlockReader(f["X"], np.float64, block_rows=3)
        assert not r.mapped
        np.testing.assert_array_equal(np.concatenate([b for *_, b in r]), X)


def test_mapped_npy_rows(tmp_path):
    X = np.random.default_rng(2).standard_normal((31, 7))
    np.save(tmp_path / "x.npy", X)
    r = BlockReader(NpyRows(tmp_path / "x.npy"), np.float64, block_rows=4)
    assert r.mapped
    blocks = [b for *_, b in r]
    assert not any(b.flags.writeable for b in blocks)           # the file's pages
    np.testing.assert_array_equal(np.concatenate(blocks), X)
    with open(tmp_path / "x.npy", "r+b") as f:
        f.truncate(f.seek(0, 2) - 8)
    with pytest.raises(ValueError, match="truncated"):
        BlockReader(NpyRows(tmp_path / "x.npy"), np.float64)


@pytest.mark.parametrize("prefetch", [False, True])
def test_stream_reuses_two_buffers(files, prefetch):
    """stream(): converted blocks alternate between two buffers, each block right when
    it is handed out (the next one is read into the other buffer)."""
    X, d = files
    src = Rows(X.astype(np.float32))
    r = BlockReader(src, np.float64, block_rows=4, prefetch=prefetch)
    seen = []
    for lo, hi, block in r.stream():
        np.testing.assert_array_equal(block, X.astype(np.float32)[lo:hi].astype(np.float64))
        seen.append(block)
    assert len(seen) == 6
    assert all(np.shares_memory(seen[i], seen[i + 2]) for i in range(len(seen) - 2))
    assert not np.shares_memory(seen[0], seen[1])


@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_fit_on_mapped_hdf5_and_npy_rows(tmp_path, monkeypatch, schedule):
    """fit on rows mapped from an HDF5 file (chunked, read-only) and from a .npy file: the
    weights of the in-memory run, float64 training of float32 data and float32 of float32."""
    from poswise import MLP, SCHEDULES, _mapped
    monkeypatch.setattr(_mapped, "MIN_EXTENT_BYTES", 0)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((157, 8)).astype(np.float32)
    y = rng.integers(0, 3, 157)
    f, ds = _h5(tmp_path / "x.h5", X, chunks=(16, 8))
    np.save(tmp_path / "x.npy", X)
    with f:
        assert BlockReader(ds, np.float64).mapped
        for dtype in (np.float64, np.float32):
            ref = MLP((8, 6, 3), rng=2, dtype=dtype)
            tr = SCHEDULES[schedule](0.1, loss="cross_entropy", update="adam", threads=1)
            h_ref = tr.fit(ref, X.astype(dtype), y, epochs=8)
            for src in (ds, NpyRows(tmp_path / "x.npy")):
                net = MLP((8, 6, 3), rng=2, dtype=dtype)
                h = tr.fit(net, src, y, epochs=8)
                tol = 1e-12 if dtype == np.float64 else 1e-5
                np.testing.assert_allclose(h.loss, h_ref.loss, rtol=tol)
                for p, q in zip(net.weights + net.biases, ref.weights + ref.biases):
                    assert rel_err(p, q) <= tol


def test_hdf5_chunks_in_separate_runs(tmp_path, monkeypatch):
    """Chunks stored apart (here in reverse order) are separate extents: mapped blocks
    end where an extent ends; with runs smaller than MIN_EXTENT_BYTES, h5py reads."""
    from poswise import _mapped
    X = np.random.default_rng(4).standard_normal((22, 6))
    with h5py.File(tmp_path / "r.h5", "w") as f:
        d = f.create_dataset("X", shape=X.shape, dtype=X.dtype, chunks=(4, 6))
        for lo in range(20, -1, -4):
            d[lo:lo + 4] = X[lo:lo + 4]
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert not BlockReader(f["X"], np.float64).mapped
        monkeypatch.setattr(_mapped, "MIN_EXTENT_BYTES", 0)
        r = BlockReader(f["X"], np.float64, block_rows=8)
        assert r.mapped and len(r._file.extents) == 6
        assert r.bounds() == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 22)]
        np.testing.assert_array_equal(np.concatenate([b for *_, b in r.stream()]), X)
        with pytest.raises(ValueError, match="cross the end of a stored extent"):
            r._file.rows(2, 6)


def test_mappings_kept_only_without_an_address_space_limit(tmp_path, monkeypatch):
    """Without ``ulimit -v`` a block's mapping is kept for the next pass (like a memmap of
    the file); under a limit each block is mapped anew and dropped with its array."""
    import resource
    X = np.arange(120, dtype=np.float64).reshape(20, 6)
    np.save(tmp_path / "x.npy", X)
    kept = NpyRows(tmp_path / "x.npy").file_rows()
    assert kept.keep is (resource.getrlimit(resource.RLIMIT_AS)[0]
                         == resource.RLIM_INFINITY)
    for keep in (True, False):
        fr = NpyRows(tmp_path / "x.npy").file_rows()
        fr.keep = keep
        a, b = fr.rows(4, 9), fr.rows(4, 9)
        np.testing.assert_array_equal(a, X[4:9])
        assert (a is b) is keep
        fr.close()
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1 << 30, 1 << 30))
    assert NpyRows(tmp_path / "x.npy").file_rows().keep is False


def test_blocks_at_hand_skip_the_read_ahead_thread(tmp_path):
    """Second pass over kept mappings: every block is a checked view, taken without the
    thread (no wait for it to be scheduled)."""
    X = np.random.default_rng(5).standard_normal((40, 6))
    np.save(tmp_path / "x.npy", X)
    r = BlockReader(NpyRows(tmp_path / "x.npy"), np.float64, block_rows=7)
    r._file.keep = True
    assert r.prefetch
    first = [b for *_, b in r.stream()]

    class NoThread:
        def submit(self, *a):
            raise AssertionError("a block at hand was sent to the thread")

        def shutdown(self, wait=True):
            pass
    r._pool = NoThread()
    second = [b for *_, b in r.stream()]
    assert all(np.shares_memory(a, b) for a, b in zip(first, second))
    np.testing.assert_array_equal(np.concatenate(second), X)


def test_mapping_failure_falls_back_to_reading(tmp_path, monkeypatch):
    """A file system that cannot map (or no address space left): the reader reads."""
    X = np.random.default_rng(6).standard_normal((30, 4))
    np.save(tmp_path / "x.npy", X)
    r = BlockReader(NpyRows(tmp_path / "x.npy"), np.float64, block_rows=8)
    assert r.mapped

    def fail(lo, hi):
        raise OSError(19, "No such device")
    monkeypatch.setattr(r._file, "rows", fail)
    np.testing.assert_array_equal(np.concatenate([b for *_, b in r.stream()]), X)
    assert not r.mapped
