"""Files and downloads that lie about their size (issue 12, families 5 and 6).

Every reader meets a small file declaring a huge array (stride-0 pickles, unwritten
HDF5 chunks, gzip bombs, overflowing IDX dimensions, zip directories declaring huge
members, .npy headers): it must raise its own error naming the file, quickly, without
allocating what the file declares (measured with tracemalloc). Downloads meet loopback
servers that trickle, stream too much, or stop early; each server stops by itself.
"""
import gzip
import hashlib
import os
import pickle
import socket
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import isolate_downloads

import poswise
from poswise import datasets
from poswise.datasets import DatasetError, DownloadError
from poswise._layout import format_bytes
from poswise.datasets._download import size_cap
from poswise.io import ModelFileError, load_model

h5py = pytest.importorskip("h5py")

MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
#: No reader may allocate more than this while refusing a lying file.
PEAK_LIMIT = 32 * 2**20


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate_downloads(monkeypatch, tmp_path)
    monkeypatch.delenv("POSWISE_DATA", raising=False)


# ----------------------------------------------------------------- file makers

def idx_header(magic, dims):
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)


def gzip_stream(head, zeros):
    """gzip of ``head`` followed by ``zeros`` zero bytes, built without holding them."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(head)]
    block = bytes(1 << 20)
    for _ in range(zeros >> 20):
        out.append(comp.compress(block))
    out.append(comp.compress(bytes(zeros & ((1 << 20) - 1))))
    out.append(comp.flush())
    return b"".join(out)


def write_mnist_folder(folder, images_file_bytes, *, gz):
    """A MNIST folder whose train-images file is ``images_file_bytes``; the others are
    small and valid."""
    folder.mkdir(parents=True, exist_ok=True)
    others = {
        "train-labels-idx1-ubyte": idx_header(0x801, (2,)) + bytes(2),
        "t10k-images-idx3-ubyte": idx_header(0x803, (1, 28, 28)) + bytes(784),
        "t10k-labels-idx1-ubyte": idx_header(0x801, (1,)) + bytes(1),
    }
    suffix = ".gz" if gz else ""
    (folder / ("train-images-idx3-ubyte" + suffix)).write_bytes(images_file_bytes)
    for name, data in others.items():
        (folder / (name + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return folder / ("train-images-idx3-ubyte" + suffix)


class _Stride0:
    """Pickles as ``numpy.ndarray(shape, uint8, buffer, 0, strides)``: a stride-0 view
    declaring a huge array over a few bytes."""

    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return (np.ndarray, ((self.n, 3072), np.dtype(np.uint8), b"\x07" * 3072, 0, (0, 1)))


class _Call:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _cifar_folder(folder, bad_batch):
    folder.mkdir(parents=True, exist_ok=True)
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in CIFAR_BATCHES:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    (folder / "data_batch_1").write_bytes(bad_batch)
    return folder / "data_batch_1"


def _reconstruct_lie():
    """numpy's own reconstruction path asked for a huge empty array."""
    from numpy._core.multiarray import _reconstruct
    return pickle.dumps({b"data": _Call(_reconstruct, (np.ndarray, (200000, 3072), b"B")),
                         b"labels": [0]}, protocol=4)


def _cat_folder(folder, make_x):
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "CatClassificationTrain.h5", "w") as f:
        make_x(f, "train_set_x")
        f["train_set_y"] = np.zeros(200000, np.int64)[:1]
    with h5py.File(folder / "CatClassificationVal.h5", "w") as f:
        f["test_set_x"] = np.zeros((1, 4, 4, 3), np.uint8)
        f["test_set_y"] = np.zeros(1, np.int64)
    return folder / "CatClassificationTrain.h5"


def _unwritten_chunked(f, key):
    f.create_dataset(key, shape=(200000, 64, 64, 3), dtype=np.uint8, chunks=(1, 64, 64, 3))


def _partly_written(f, key):
    d = f.create_dataset(key, shape=(1000, 64, 64, 3), dtype=np.uint8, chunks=(10, 64, 64, 3))
    d[:10] = 1


def _unwritten_contiguous(f, key):
    f.create_dataset(key, shape=(200000, 64, 64, 3), dtype=np.uint8)


def _compressed_zeros(f, key):
    d = f.create_dataset(key, shape=(2000, 64, 64, 3), dtype=np.uint8,
                         chunks=(500, 64, 64, 3), compression="gzip", compression_opts=9)
    for i in range(0, 2000, 500):
        d[i:i + 500] = 0


def _zip_with_lying_member(path, arrays, member, *, file_size, deflate=False):
    """An .npz whose central directory declares ``file_size`` bytes for ``member``."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for key, arr in arrays.items():
            buf = __import__("io").BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(key + ".npy", buf.getvalue())
    raw = bytearray(Path(path).read_bytes())
    pos = raw.find(b"PK\x01\x02" + b"\x00" * 0)
    name = (member + ".npy").encode()
    while pos >= 0:
        n = struct.unpack("<H", raw[pos + 28:pos + 30])[0]
        if raw[pos + 46:pos + 46 + n] == name:
            raw[pos + 24:pos + 28] = struct.pack("<I", file_size)
            break
        pos = raw.find(b"PK\x01\x02", pos + 4)
    assert pos >= 0
    Path(path).write_bytes(bytes(raw))
    return path


def _npy_lying_header(path, shape, payload=16):
    with open(path, "wb") as f:
        hdr = {"descr": "<f8", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(f, hdr)
        f.write(b"\0" * payload)


# ------------------------------------------------------------------ the battery

def case_idx_overflow(tmp_path):
    dims = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    f = write_mnist_folder(tmp_path / "m", idx_header(0x803, dims) + bytes(100), gz=False)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_idx_gz_overflow(tmp_path):
    dims = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    f = write_mnist_folder(tmp_path / "m", gzip.compress(idx_header(0x803, dims)), gz=True)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_idx_header_declares_more(tmp_path):
    f = write_mnist_folder(tmp_path / "m", idx_header(0x803, (200000, 28, 28)) + bytes(784),
                           gz=False)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_gzip_bomb_bad_magic(tmp_path):
    f = write_mnist_folder(tmp_path / "m", gzip_stream(b"", 48 << 20), gz=True)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_gzip_bomb_valid_header(tmp_path):
    head = idx_header(0x803, (60000, 28, 28))
    f = write_mnist_folder(tmp_path / "m", gzip_stream(head, 60000 * 784), gz=True)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_gzip_truncated_body(tmp_path):
    data = gzip.compress(idx_header(0x803, (50, 28, 28)) + os.urandom(50 * 784))
    f = write_mnist_folder(tmp_path / "m", data[:len(data) // 2], gz=True)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_gzip_more_than_declared(tmp_path):
    data = gzip.compress(idx_header(0x803, (2, 28, 28)) + bytes(3 * 784))
    f = write_mnist_folder(tmp_path / "m", data, gz=True)
    return lambda: datasets.load_mnist(tmp_path / "m"), f, DatasetError


def case_fashion_overflow(tmp_path):
    dims = (0xFFFFFFFF, 28, 28)
    f = write_mnist_folder(tmp_path / "fashion_mnist", idx_header(0x803, dims), gz=False)
    return lambda: datasets.load_fashion_mnist(tmp_path), f, DatasetError


def case_cifar_stride0(tmp_path):
    bad = pickle.dumps({b"data": _Stride0(200000), b"labels": [0]}, protocol=4)
    assert len(bad) < 4000
    arr = pickle.loads(bad)[b"data"]           # what an unrestricted unpickler builds
    assert arr.shape == (200000, 3072) and arr.strides == (0, 1)
    f = _cifar_folder(tmp_path / "c", bad)
    return lambda: datasets.load_cifar10(tmp_path / "c"), f, DatasetError


def case_cifar_reconstruct_huge(tmp_path):
    f = _cifar_folder(tmp_path / "c", _reconstruct_lie())
    return lambda: datasets.load_cifar10(tmp_path / "c"), f, DatasetError


def case_cifar_bytes_of_int(tmp_path):
    bad = pickle.dumps({b"data": _Call(bytes, (10**12,)), b"labels": [0]}, protocol=4)
    assert b"builtins" in bad
    f = _cifar_folder(tmp_path / "c", bad)
    return lambda: datasets.load_cifar10(tmp_path / "c"), f, DatasetError


def case_cifar_bytearray_of_int(tmp_path):
    bad = pickle.dumps({b"data": _Call(bytearray, (10**12,)), b"labels": [0]}, protocol=4)
    f = _cifar_folder(tmp_path / "c", bad)
    return lambda: datasets.load_cifar10(tmp_path / "c"), f, DatasetError


def case_cifar_tar_members_declare_huge(tmp_path, monkeypatch):
    import io as _io
    import tarfile
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 64 << 20
        tf.addfile(info, _io.BytesIO(bytes(64 << 20)))
    folder = tmp_path / "cifar10"
    folder.mkdir()
    tar = folder / "cifar-10-python.tar.gz"
    tar.write_bytes(buf.getvalue())
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz",
                        hashlib.md5(buf.getvalue()).hexdigest())
    return (lambda: datasets.load_cifar10(tmp_path, download=True, base_url="http://127.0.0.1:9/"),
            tar, DatasetError)


def case_cat_unwritten_chunks(tmp_path):
    f = _cat_folder(tmp_path / "cat", _unwritten_chunked)
    assert f.stat().st_size < 64 * 1024
    return lambda: datasets.load_cat(tmp_path), f, DatasetError


def case_cat_partly_written(tmp_path):
    f = _cat_folder(tmp_path / "cat", _partly_written)
    return lambda: datasets.load_cat(tmp_path), f, DatasetError


def case_cat_unwritten_contiguous(tmp_path):
    f = _cat_folder(tmp_path / "cat", _unwritten_contiguous)
    return lambda: datasets.load_cat(tmp_path), f, DatasetError


def case_cat_compressed_beyond_ratio(tmp_path):
    f = _cat_folder(tmp_path / "cat", _compressed_zeros)
    return lambda: datasets.load_cat(tmp_path), f, DatasetError


def case_file_h5_unwritten(tmp_path):
    path = tmp_path / "own.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X_train", shape=(200000, 12288), dtype=np.float64,
                         chunks=(100, 12288))
        f["y_train"] = np.zeros(200000, np.int8)
    return lambda: datasets.load_file(path), path, DatasetError


def case_file_npz_member_declares_huge(tmp_path):
    path = _zip_with_lying_member(tmp_path / "own.npz",
                                  {"X_train": np.ones((3, 2)), "y_train": np.zeros(3, int)},
                                  "X_train", file_size=0xFFFFFF00)
    return lambda: datasets.load_file(path), path, DatasetError


def case_file_npz_deflated_declares_huge(tmp_path):
    path = _zip_with_lying_member(tmp_path / "own.npz",
                                  {"X_train": np.ones((3, 2)), "y_train": np.zeros(3, int)},
                                  "X_train", file_size=0xFFFFFF00, deflate=True)
    return lambda: datasets.load_file(path), path, DatasetError


def case_file_npz_header_declares_huge(tmp_path):
    path = tmp_path / "own.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("X_train.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**3)})
            f.write(bytes(64))
        buf = __import__("io").BytesIO()
        np.save(buf, np.zeros(3))
        zf.writestr("y_train.npy", buf.getvalue())
    return lambda: datasets.load_file(path), path, DatasetError


def case_file_npy_header_declares_huge(tmp_path):
    path = tmp_path / "X_train.npy"
    _npy_lying_header(path, (10**9, 10**3))
    np.save(tmp_path / "y_train.npy", np.zeros(3))
    return lambda: datasets.load_file(path), path, DatasetError


def case_file_npy_overflowing_shape(tmp_path):
    path = tmp_path / "X.npy"
    _npy_lying_header(path, (2**62, 2**62))
    np.save(tmp_path / "y.npy", np.zeros(3))
    return lambda: datasets.load_file(path), path, DatasetError


def case_model_zip_member_declares_huge(tmp_path):
    net = poswise.MLP((3, 2), rng=0)
    good = tmp_path / "good.npz"
    net.save(good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    path = _zip_with_lying_member(tmp_path / "model.npz", arrays, "weights_0",
                                  file_size=0xFFFFFF00)
    return lambda: load_model(path), path, ModelFileError


def case_model_deflated_member_declares_huge(tmp_path):
    net = poswise.MLP((3, 2), rng=0)
    good = tmp_path / "good.npz"
    net.save(good)
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    path = _zip_with_lying_member(tmp_path / "model.npz", arrays, "weights_0",
                                  file_size=0xFFFFFF00, deflate=True)
    return lambda: load_model(path), path, ModelFileError


CASES = {name[5:]: func for name, func in sorted(globals().items())
         if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_size_lying_file_is_refused_before_allocating(case, tmp_path, monkeypatch):
    func = CASES[case]
    args = (tmp_path, monkeypatch) if func.__code__.co_argcount == 2 else (tmp_path,)
    call, lying_file, error = func(*args)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(error) as exc:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 10
    assert not isinstance(exc.value, MemoryError)
    assert str(lying_file) in str(exc.value) or os.path.basename(str(lying_file)) in str(
        exc.value), str(exc.value)
    assert peak < PEAK_LIMIT, f"{case}: {peak / 2**20:.1f} MiB allocated"


def test_the_battery_covers_every_reader():
    """Each file reader appears in the battery (a new reader needs its lying files)."""
    readers = {"idx", "gzip", "fashion", "cifar", "cat", "file_h5", "file_npz", "file_npy",
               "model"}
    assert all(any(c.startswith(r) for c in CASES) for r in readers)


# ----------------------------------------------------------- non-regular files

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("reader", ["load_file", "load_model", "mnist", "cat", "cifar"])
def test_fifo_is_refused_at_once(tmp_path, reader):
    if reader == "load_file":
        fifo = tmp_path / "data.npz"
        call, error = (lambda: datasets.load_file(fifo)), DatasetError
    elif reader == "load_model":
        fifo = tmp_path / "model.npz"
        call, error = (lambda: load_model(fifo)), ModelFileError
    elif reader == "mnist":
        write_mnist_folder(tmp_path / "m", b"", gz=False)
        fifo = tmp_path / "m" / "train-images-idx3-ubyte"
        fifo.unlink()
        call, error = (lambda: datasets.load_mnist(tmp_path / "m")), DatasetError
    elif reader == "cat":
        _cat_folder(tmp_path / "cat", lambda f, k: f.__setitem__(k, np.zeros((1, 2, 2, 3),
                                                                          np.uint8)))
        fifo = tmp_path / "cat" / "CatClassificationVal.h5"
        fifo.unlink()
        call, error = (lambda: datasets.load_cat(tmp_path)), DatasetError
    else:
        _cifar_folder(tmp_path / "c", b"")
        fifo = tmp_path / "c" / "data_batch_1"
        fifo.unlink()
        call, error = (lambda: datasets.load_cifar10(tmp_path / "c")), DatasetError
    os.mkfifo(fifo)
    if reader in ("mnist", "cat", "cifar"):
        # loaders look for regular files: a FIFO in place of one is "not found" or
        # refused, never read
        error = (error, FileNotFoundError)
    done = []

    def run():
        try:
            call()
        except BaseException as exc:   # noqa: BLE001  (recorded and checked below)
            done.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():                   # unblock the reader so the test ends
        with open(fifo, "wb"):
            pass
        t.join(5)
        pytest.fail(f"{reader} blocked on a FIFO")
    assert isinstance(done[0], error), done[0]
    assert "fifo" in str(done[0]).lower() or "not found" in str(done[0]).lower() \
        or "regular" in str(done[0]).lower()


# ------------------------------------------------------------------ downloads

class _Server:
    """A loopback HTTP server whose every response is ``behave(conn)``; it stops by
    itself after ``lifetime`` seconds."""

    def __init__(self, behave, lifetime=15.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.behave, self.stop_at = behave, time.monotonic() + lifetime
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def alive(self):
        return time.monotonic() < self.stop_at

    def _run(self):
        while self.alive():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                conn.recv(65536)
                self.behave(self, conn)
            except OSError:
                pass
            finally:
                conn.close()
        self.sock.close()

    def close(self):
        self.stop_at = 0
        self.thread.join(5)


@pytest.fixture
def server():
    made = []

    def make(behave):
        s = _Server(behave)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def _trickle(srv, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while srv.alive():
        conn.sendall(b"x")
        time.sleep(0.05)


def _endless(srv, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    block = bytes(1 << 16)
    for _ in range(4096):              # at most 256 MiB, far beyond any cap used here
        if not srv.alive():
            break
        conn.sendall(block)


def _announces_huge(srv, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50331648\r\n\r\n" + bytes(1024))


def _short(srv, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + bytes(4000))


def _short_unannounced(srv, conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + bytes(4000))


def _limits(monkeypatch, **values):
    for k, v in values.items():
        monkeypatch.setattr(datasets, k, v)


FILE = "train-images-idx3-ubyte.gz"


def _fetch(tmp_path, url):
    return datasets.load_mnist(tmp_path / "home", download=True, base_url=url)


def _no_leftovers(tmp_path):
    folder = tmp_path / "home" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_trickling_server_is_stopped_by_the_minimum_rate(tmp_path, server, monkeypatch):
    srv = server(_trickle)
    _limits(monkeypatch, DOWNLOAD_TIMEOUT=0.5, DOWNLOAD_MIN_RATE=2000)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="too slow") as exc:
        _fetch(tmp_path, srv.url)
    assert time.perf_counter() - t0 < 5
    assert srv.url + FILE in str(exc.value)
    _no_leftovers(tmp_path)


def test_trickling_server_is_stopped_by_the_deadline(tmp_path, server, monkeypatch):
    srv = server(_trickle)
    _limits(monkeypatch, DOWNLOAD_TIMEOUT=5.0, DOWNLOAD_MIN_RATE=0, DOWNLOAD_DEADLINE=1.0)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="deadline"):
        _fetch(tmp_path, srv.url)
    assert 0.9 < time.perf_counter() - t0 < 5
    _no_leftovers(tmp_path)


def test_oversized_stream_is_cut_at_the_cap(tmp_path, server, monkeypatch):
    srv = server(_endless)
    monkeypatch.setitem(datasets.EXPECTED_SIZES, FILE, 100_000)
    cap = size_cap(FILE)
    assert 100_000 < cap < 200_000
    with pytest.raises(DownloadError, match=f"exceeds the {format_bytes(cap)} allowed"):
        _fetch(tmp_path, srv.url)
    _no_leftovers(tmp_path)


def test_announced_oversize_is_refused_before_reading(tmp_path, server, monkeypatch):
    srv = server(_announces_huge)
    monkeypatch.setitem(datasets.EXPECTED_SIZES, FILE, 10_000_000)   # a 10 MB file
    with pytest.raises(DownloadError, match="announces 50.3 MB"):
        _fetch(tmp_path, srv.url)
    _no_leftovers(tmp_path)


def test_unknown_file_has_the_default_cap(tmp_path, server, monkeypatch):
    srv = server(_endless)
    monkeypatch.setattr(datasets, "EXPECTED_SIZES", {})
    monkeypatch.setattr(datasets, "DOWNLOAD_MAX_BYTES", 300_000)
    with pytest.raises(DownloadError, match="exceeds"):
        _fetch(tmp_path, srv.url)


@pytest.mark.parametrize("behave", [_short, _short_unannounced])
def test_short_body_is_an_incomplete_download(tmp_path, server, behave):
    srv = server(behave)
    with pytest.raises(DownloadError, match="incomplete download") as exc:
        _fetch(tmp_path, srv.url)
    assert not isinstance(exc.value, DatasetError)
    assert "md5" not in str(exc.value)
    _no_leftovers(tmp_path)


def test_fashion_mnist_downloads_are_bounded_too(tmp_path, server, monkeypatch):
    srv = server(_short)
    with pytest.raises(DownloadError, match="incomplete download"):
        datasets.load_fashion_mnist(tmp_path / "home", download=True, base_url=srv.url)


def _trickle_headers(srv, conn):
    """A header line that never ends: no body byte ever comes."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while srv.alive():
        conn.sendall(b"a")
        time.sleep(0.05)


def test_deadline_holds_while_headers_trickle(tmp_path, server, monkeypatch):
    srv = server(_trickle_headers)
    _limits(monkeypatch, DOWNLOAD_TIMEOUT=5.0, DOWNLOAD_DEADLINE=1.0)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="deadline"):
        _fetch(tmp_path, srv.url)
    assert time.perf_counter() - t0 < 4
    _no_leftovers(tmp_path)


def test_silent_server_times_out(tmp_path, server, monkeypatch):
    srv = server(lambda s, conn: time.sleep(3))
    _limits(monkeypatch, DOWNLOAD_TIMEOUT=0.5)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="[Tt]imed? ?out"):
        _fetch(tmp_path, srv.url)
    assert time.perf_counter() - t0 < 3


@pytest.mark.parametrize("variant", ["multi_member", "zero_padded", "trailing_garbage"])
def test_streamed_gzip_keeps_gzip_semantics(tmp_path, variant):
    """The streaming reader reads what gzip reads (several members, zero padding) and
    refuses what gzip refuses (garbage after the stream)."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    raw = idx_header(0x803, imgs.shape) + imgs.tobytes()
    data = {"multi_member": gzip.compress(raw[:100]) + gzip.compress(raw[100:]),
            "zero_padded": gzip.compress(raw) + bytes(3000),
            "trailing_garbage": gzip.compress(raw) + b"not gzip"}[variant]
    f = write_mnist_folder(tmp_path / "m", data, gz=True)
    if variant == "trailing_garbage":
        with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*corrupt"):
            datasets.load_mnist(tmp_path / "m")
        return
    assert gzip.decompress(f.read_bytes()) == raw
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_header(0x801, (3,)) + bytes(3)))
    ds = datasets.load_mnist(tmp_path / "m")
    np.testing.assert_array_equal(ds.X_train, imgs.reshape(3, -1) / 255.0)
