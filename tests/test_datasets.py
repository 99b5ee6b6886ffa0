"""Tests of poswise.datasets.

Real data (cat, MNIST) are read from the folder named by $POSWISE_DATA; those tests skip
when it is unset or lacks the files. Everything else runs on small files written to
tmp_path, and the download tests only talk to an HTTP server on 127.0.0.1.
"""
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import isolate_downloads

from poswise import datasets
from poswise.datasets import (Dataset, DatasetError, DownloadError, get_data_home,
                              load_cat, load_cifar10, load_mnist, make_synthetic)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# ----------------------------------------------------------------- helpers

def _real_home():
    path = os.environ.get("POSWISE_DATA")
    if not path or not Path(path).is_dir():
        pytest.skip("POSWISE_DATA is not set to a data folder")
    return Path(path)


@pytest.fixture
def real_home():
    return _real_home()


@pytest.fixture(scope="module")
def mnist_real():
    """Full MNIST from $POSWISE_DATA (data-home form), loaded once."""
    home = _real_home()
    if not all((home / "mnist" / (n + ".gz")).is_file() for n in MNIST_NAMES):
        pytest.skip("MNIST files are not in $POSWISE_DATA/mnist")
    return load_mnist(home)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No proxy for loopback requests, and a data home that is never the real one."""
    isolate_downloads(monkeypatch, tmp_path)


def idx_bytes(arr, magic=None):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x800 | arr.ndim
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def fake_mnist(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(folder, arrays, *, gz=True, dotted=False):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if dotted:
            name = name.replace("-idx", ".idx", 1)
        data = idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def check_mnist_equal(ds, arrays):
    np.testing.assert_array_equal(
        ds.X_train, arrays["train-images-idx3-ubyte"].reshape(-1, 784) / 255.0)
    np.testing.assert_array_equal(
        ds.X_test, arrays["t10k-images-idx3-ubyte"].reshape(-1, 784) / 255.0)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64


def fake_cifar(sizes=(3, 2, 4, 1, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             [int(v) for v in rng.integers(0, 10, n)]) for n in sizes]


def cifar_py_pickle(data, labels, *, protocol=2, old_numpy_names=True):
    """A batch in the layout of the official archive (dict with bytes keys)."""
    d = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
         b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    raw = pickle.dumps(d, protocol=protocol)
    if old_numpy_names and protocol == 2:
        # The official batches were pickled by numpy 1 under Python 2.
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray\n_reconstruct" in raw
    return raw


def write_cifar_py(folder, batches, *, label_names=None, protocol=2):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in zip(CIFAR_BATCHES, batches):
        (folder / name).write_bytes(cifar_py_pickle(data, labels, protocol=protocol))
    if label_names is not None:
        meta = {b"label_names": [n.encode() for n in label_names],
                b"num_cases_per_batch": 10000, b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_cifar_bin(folder, batches, *, label_names=None):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in zip(CIFAR_BATCHES, batches):
        rec = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data], axis=1)
        (folder / (name + ".bin")).write_bytes(rec.tobytes())
    if label_names is not None:
        (folder / "batches.meta.txt").write_text("\n".join(label_names) + "\n\n")
    return folder


def check_cifar_equal(ds, batches):
    Xtr = np.concatenate([d for d, _ in batches[:5]])
    ytr = np.concatenate([lab for _, lab in batches[:5]])
    np.testing.assert_array_equal(ds.X_train, Xtr / 255.0)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.X_test, batches[5][0] / 255.0)
    np.testing.assert_array_equal(ds.y_test, batches[5][1])
    assert ds.X_train.shape == (sum(len(lab) for _, lab in batches[:5]), 3072)
    assert ds.y_train.dtype == np.int64
    assert ds.X_train.flags.c_contiguous and ds.X_test.flags.c_contiguous


def leftovers(folder):
    """Temporary or partial files left in a folder."""
    return [p.name for p in Path(folder).iterdir()
            if p.name.startswith(".") or p.name.endswith(".part")]


# ------------------------------------------------------------------ HTTP server

class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        return super().do_GET()


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/'served' on 127.0.0.1 (ephemeral port); yield (url, dir, log)."""
    served = tmp_path / "served"
    served.mkdir()
    log = []
    handler = type("H", (_Handler,), {"requests": log})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mirror/", served / "mirror", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_url():
    """A URL on 127.0.0.1 where nothing listens."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def serve_mnist(folder, arrays, monkeypatch):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = gzip.compress(idx_bytes(arr))
        (folder / (name + ".gz")).write_bytes(data)
        monkeypatch.setitem(datasets.MD5_CHECKSUMS, name + ".gz",
                            hashlib.md5(data).hexdigest())


# -------------------------------------------------------------------- Dataset

def test_dataset_properties_and_repr():
    ds = Dataset(np.zeros((5, 3)), np.zeros(5, np.int64), np.zeros((2, 3)),
                 np.zeros(2, np.int64), "toy", ("a", "b", "c"))
    assert ds.n_features == 3
    assert ds.n_classes == 3
    r = repr(ds)
    assert "toy" in r and "(5, 3)" in r and "(2, 3)" in r and "(5,)" in r
    assert "float64" in r


# ------------------------------------------------------------------ data home

def test_get_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "d"))
    assert get_data_home() == tmp_path / "d"
    assert get_data_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("POSWISE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert get_data_home() == tmp_path / "cache" / "poswise"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_data_home() == tmp_path / "home" / ".cache" / "poswise"
    monkeypatch.setenv("POSWISE_DATA", "")
    assert get_data_home() == tmp_path / "home" / ".cache" / "poswise"


def test_env_var_is_the_default_path(monkeypatch, tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path / "home" / "mnist", arrays)
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "home"))
    check_mnist_equal(load_mnist(), arrays)


# ------------------------------------------------------------------- cat (real)

def _check_cat(ds, dtype=np.float64):
    assert ds.name == "cat"
    assert ds.classes == ("non-cat", "cat")
    assert ds.X_train.shape == (209, 64 * 64 * 3)
    assert ds.X_test.shape == (50, 64 * 64 * 3)
    assert ds.n_features == 12288 and ds.n_classes == 2
    assert ds.X_train.dtype == dtype and ds.X_test.dtype == dtype
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.X_train.flags.c_contiguous and ds.X_test.flags.c_contiguous
    assert np.bincount(ds.y_train).tolist() == [137, 72]
    assert np.bincount(ds.y_test).tolist() == [17, 33]
    for X in (ds.X_train, ds.X_test):
        assert X.min() >= 0.0 and X.max() <= 1.0
        assert X.max() > 0.9  # really scaled pixels, not all zero


def test_cat_real_both_path_forms(real_home):
    if not (real_home / "cat" / "CatClassificationTrain.h5").is_file():
        pytest.skip("cat files are not in $POSWISE_DATA/cat")
    ds = load_cat(real_home)
    _check_cat(ds)
    ds32 = load_cat(str(real_home / "cat"), dtype=np.float32)
    _check_cat(ds32, np.float32)
    np.testing.assert_allclose(ds32.X_train, ds.X_train, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(ds32.y_test, ds.y_test)

    # flattened in stored (64, 64, 3) row-major order, scaled by exactly /255
    import h5py
    with h5py.File(real_home / "cat" / "CatClassificationTrain.h5", "r") as f:
        raw = f["train_set_x"][()]
        raw_y = f["train_set_y"][()]
    np.testing.assert_array_equal(ds.X_train, raw.reshape(209, -1) / 255.0)
    np.testing.assert_array_equal(ds.y_train, raw_y)


def test_cat_original_file_names(real_home, tmp_path):
    src = real_home / "cat"
    if not (src / "CatClassificationTrain.h5").is_file():
        pytest.skip("cat files are not in $POSWISE_DATA/cat")
    shutil.copyfile(src / "CatClassificationTrain.h5", tmp_path / "train_catvnoncat.h5")
    shutil.copyfile(src / "CatClassificationVal.h5", tmp_path / "test_catvnoncat.h5")
    _check_cat(load_cat(tmp_path))


# -------------------------------------------------------------------- cat (fake)

def _write_cat(folder, n_train=4, n_test=3, *, train_keys=None, test_key_x="test_set_x",
               classes=(b"non-cat", b"cat"), y_train=None):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    xtr = rng.integers(0, 256, (n_train, 5, 4, 3), dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, 5, 4, 3), dtype=np.uint8)
    ytr = rng.integers(0, 2, n_train) if y_train is None else y_train
    yte = rng.integers(0, 2, n_test)
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "CatClassificationTrain.h5", "w") as f:
        keys = train_keys or ("train_set_x", "train_set_y")
        f[keys[0]] = xtr
        f[keys[1]] = ytr
        f["list_classes"] = np.array(classes)
    with h5py.File(folder / "CatClassificationVal.h5", "w") as f:
        f[test_key_x] = xte
        f["test_set_y"] = yte
        f["list_classes"] = np.array(classes)
    return xtr, ytr, xte, yte


def test_cat_small_files_exact(tmp_path):
    xtr, ytr, xte, yte = _write_cat(tmp_path / "cat")
    ds = load_cat(tmp_path)
    np.testing.assert_array_equal(ds.X_train, xtr.reshape(4, -1) / 255.0)
    np.testing.assert_array_equal(ds.X_test, xte.reshape(3, -1) / 255.0)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.classes == ("non-cat", "cat")


def test_cat_missing_key(tmp_path):
    _write_cat(tmp_path, test_key_x="wrong_key")
    with pytest.raises(DatasetError, match=r"CatClassificationVal\.h5.*test_set_x"):
        load_cat(tmp_path)


def test_cat_label_count_mismatch(tmp_path):
    _write_cat(tmp_path, y_train=np.array([0, 1, 1]))
    with pytest.raises(DatasetError, match=r"CatClassificationTrain\.h5.*3 labels for 4"):
        load_cat(tmp_path)


def test_cat_not_hdf5(tmp_path):
    (tmp_path / "CatClassificationTrain.h5").write_bytes(b"not an hdf5 file" * 10)
    (tmp_path / "CatClassificationVal.h5").write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(DatasetError, match="CatClassificationTrain.h5"):
        load_cat(tmp_path)


def test_cat_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        load_cat(tmp_path)
    msg = str(exc.value)
    for part in ("CatClassificationTrain.h5", "CatClassificationVal.h5",
                 "train_catvnoncat.h5", "POSWISE_DATA", str(tmp_path / "cat")):
        assert part in msg


# ----------------------------------------------------------------- MNIST (real)

def _check_mnist_real(ds, dtype=np.float64):
    assert ds.name == "mnist"
    assert ds.classes == tuple("0123456789")
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.X_train.dtype == dtype and ds.X_test.dtype == dtype
    assert ds.y_train.dtype == np.int64
    assert ds.X_train.flags.c_contiguous
    assert np.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    for X in (ds.X_train, ds.X_test):
        assert X.min() == 0.0 and X.max() == 1.0  # pixel range 0..255


def test_mnist_real_data_home(mnist_real):
    _check_mnist_real(mnist_real)
    # values are exactly k/255
    k = mnist_real.X_test * 255.0
    np.testing.assert_array_equal(k, np.round(k))


def test_mnist_real_direct_folder_float32(mnist_real):
    ds = load_mnist(_real_home() / "mnist", dtype=np.float32)
    _check_mnist_real(ds, np.float32)
    np.testing.assert_allclose(ds.X_test, mnist_real.X_test, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(ds.y_train, mnist_real.y_train)


def test_mnist_real_uncompressed_copies(mnist_real, tmp_path):
    src = _real_home() / "mnist"
    for name in MNIST_NAMES:
        with gzip.open(src / (name + ".gz"), "rb") as f, open(tmp_path / name, "wb") as g:
            shutil.copyfileobj(f, g)
    ds = load_mnist(tmp_path)
    # np.array_equal: assert_array_equal is slow on 47M values
    assert np.array_equal(ds.X_train, mnist_real.X_train)
    assert np.array_equal(ds.y_train, mnist_real.y_train)
    assert np.array_equal(ds.X_test, mnist_real.X_test)
    assert np.array_equal(ds.y_test, mnist_real.y_test)


# ----------------------------------------------------------------- MNIST (fake)

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dotted", [False, True])
def test_mnist_small_files_all_variants(tmp_path, gz, dotted):
    arrays = fake_mnist()
    write_mnist(tmp_path / "mnist", arrays, gz=gz, dotted=dotted)
    check_mnist_equal(load_mnist(tmp_path), arrays)               # data home
    check_mnist_equal(load_mnist(tmp_path / "mnist"), arrays)     # direct folder


def test_mnist_float32(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    ds = load_mnist(tmp_path, dtype=np.float32)
    assert ds.X_train.dtype == np.float32 and ds.X_test.dtype == np.float32
    np.testing.assert_array_equal(
        ds.X_train,
        arrays["train-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32)
        / np.float32(255))


def test_mnist_bad_magic(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    bad = idx_bytes(arrays["train-images-idx3-ubyte"], magic=0x00000804)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*magic"):
        load_mnist(tmp_path)


def test_mnist_labels_file_with_image_magic(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    bad = idx_bytes(arrays["t10k-labels-idx1-ubyte"].reshape(-1, 1, 1), magic=0x803)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz.*0x00000801"):
        load_mnist(tmp_path)


def test_mnist_truncated_gzip(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz.*gzip"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("delta", [-1, +5])
def test_mnist_header_size_mismatch(tmp_path, delta):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    data = p.read_bytes()
    p.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*header"):
        load_mnist(tmp_path)


def test_mnist_label_count_mismatch(tmp_path):
    arrays = fake_mnist(n_train=6)
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:5]
    write_mnist(tmp_path, arrays)
    with pytest.raises(DatasetError, match=r"5 labels.*6 images"):
        load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    arrays = fake_mnist()
    arrays["t10k-labels-idx1-ubyte"][0] = 12
    write_mnist(tmp_path, arrays)
    with pytest.raises(DatasetError, match=r"t10k-labels.*\[0, 9\]"):
        load_mnist(tmp_path)


def test_mnist_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as exc:
        load_mnist()
    msg = str(exc.value)
    for part in MNIST_NAMES + ["POSWISE_DATA", str(tmp_path / "home" / "mnist")]:
        assert part in msg


def test_mnist_partial_files_message_names_missing(tmp_path):
    arrays = fake_mnist()
    del arrays["t10k-labels-idx1-ubyte"]
    write_mnist(tmp_path, arrays)
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


# ------------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_batches(tmp_path, protocol):
    batches = fake_cifar()
    names = [f"class{k}" for k in range(10)]
    write_cifar_py(tmp_path / "cifar10" / "cifar-10-batches-py", batches,
                   label_names=names, protocol=protocol)
    ds = load_cifar10(tmp_path)                       # data home
    check_cifar_equal(ds, batches)
    assert ds.classes == tuple(names) and ds.name == "cifar10"
    ds2 = load_cifar10(tmp_path / "cifar10")           # holds cifar-10-batches-py/
    check_cifar_equal(ds2, batches)
    ds3 = load_cifar10(tmp_path / "cifar10" / "cifar-10-batches-py", dtype=np.float32)
    assert ds3.X_train.dtype == np.float32
    np.testing.assert_allclose(ds3.X_train, ds.X_train, rtol=1e-7, atol=0)


def test_cifar_binary_batches(tmp_path):
    batches = fake_cifar(seed=3)
    write_cifar_bin(tmp_path / "cifar-10-batches-bin", batches)
    ds = load_cifar10(tmp_path)
    check_cifar_equal(ds, batches)
    assert ds.classes == datasets.CIFAR10_CLASSES
    # pixel order: the first feature is the first stored pixel byte (red, row 0, col 0)
    assert ds.X_train[0, 0] == batches[0][0][0, 0] / 255.0
    assert ds.X_train[0, 1024] == batches[0][0][0, 1024] / 255.0

    names = [f"n{k}" for k in range(10)]
    write_cifar_bin(tmp_path / "direct", batches, label_names=names)
    ds2 = load_cifar10(tmp_path / "direct")
    check_cifar_equal(ds2, batches)
    assert ds2.classes == tuple(names)


def test_cifar_pickle_default_classes(tmp_path):
    batches = fake_cifar()
    write_cifar_py(tmp_path, batches)
    ds = load_cifar10(tmp_path)
    assert ds.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                          "horse", "ship", "truck")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "batch_value"])
def test_cifar_malicious_pickle_refused(tmp_path, kind):
    batches = fake_cifar()
    write_cifar_py(tmp_path, batches)
    marker = tmp_path / "pwned"
    if kind == "os.system":
        payload = _Evil(os.system, f"touch '{marker}'")
    elif kind == "builtins.exec":
        payload = _Evil(exec, f"open({str(marker)!r}, 'w').close()")
    else:
        payload = {b"data": _Evil(os.system, f"touch '{marker}'"), b"labels": [0]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3.*refusing"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_pickle_wrong_shape(tmp_path):
    batches = fake_cifar()
    batches[1] = (batches[1][0][:, :100], batches[1][1])
    write_cifar_py(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"data_batch_2.*3072"):
        load_cifar10(tmp_path)


def test_cifar_pickle_label_count_mismatch(tmp_path):
    batches = fake_cifar()
    batches[5] = (batches[5][0], batches[5][1][:-1])
    write_cifar_py(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"test_batch.*2 labels for 3 images"):
        load_cifar10(tmp_path)


def test_cifar_truncated_pickle(tmp_path):
    batches = fake_cifar()
    write_cifar_py(tmp_path, batches)
    p = tmp_path / "data_batch_1"
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_cifar10(tmp_path)


def test_cifar_binary_bad_size(tmp_path):
    batches = fake_cifar()
    write_cifar_bin(tmp_path, batches)
    p = tmp_path / "data_batch_4.bin"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"data_batch_4\.bin.*3073"):
        load_cifar10(tmp_path)


def test_cifar_binary_label_out_of_range(tmp_path):
    batches = fake_cifar()
    batches[0][1][0] = 200
    write_cifar_bin(tmp_path, batches)
    with pytest.raises(DatasetError, match=r"data_batch_1\.bin.*labels"):
        load_cifar10(tmp_path)


def test_cifar_missing_files_message(tmp_path):
    batches = fake_cifar()
    write_cifar_py(tmp_path / "cifar10", batches)
    (tmp_path / "cifar10" / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError) as exc:
        load_cifar10(tmp_path)
    msg = str(exc.value)
    for part in ["data_batch_1", "test_batch", "POSWISE_DATA", ".bin",
                 str(tmp_path / "cifar10"), "lacks data_batch_5"]:
        assert part in msg


# ------------------------------------------------------------------- downloads

def test_mnist_download_success_and_only_missing(tmp_path, http_server, monkeypatch):
    url, served, log = http_server
    arrays = fake_mnist(seed=5)
    serve_mnist(served, arrays, monkeypatch)
    home = tmp_path / "home"
    ds = load_mnist(home, download=True, base_url=url)
    check_mnist_equal(ds, arrays)
    folder = home / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(n + ".gz" for n in MNIST_NAMES)
    assert len(log) == 4

    # everything present: no request at all
    check_mnist_equal(load_mnist(home, download=True, base_url=url), arrays)
    assert len(log) == 4
    # one file missing: only that one is fetched
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    check_mnist_equal(load_mnist(home, download=True, base_url=url), arrays)
    assert log[4:] == ["/mirror/t10k-labels-idx1-ubyte.gz"]


def test_mnist_download_module_mapping_and_mirror_fallback(tmp_path, http_server,
                                                           closed_url, monkeypatch):
    url, served, log = http_server
    arrays = fake_mnist(seed=6)
    serve_mnist(served, arrays, monkeypatch)
    monkeypatch.setitem(datasets.BASE_URLS, "mnist", [closed_url, url])
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "envhome"))
    ds = load_mnist(download=True)
    check_mnist_equal(ds, arrays)
    assert (tmp_path / "envhome" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert leftovers(tmp_path / "envhome" / "mnist") == []


def test_mnist_download_checksum_mismatch_leaves_nothing(tmp_path, http_server,
                                                         monkeypatch):
    url, served, log = http_server
    serve_mnist(served, fake_mnist(), monkeypatch)
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "train-images-idx3-ubyte.gz", "0" * 32)
    home = tmp_path / "home"
    with pytest.raises(DatasetError, match=r"md5.*0{32}") as exc:
        load_mnist(home, download=True, base_url=url)
    assert url + "train-images-idx3-ubyte.gz" in str(exc.value)
    folder = home / "mnist"
    names = [p.name for p in folder.iterdir()]
    assert "train-images-idx3-ubyte.gz" not in names
    assert leftovers(folder) == []
    assert log  # the server was asked


def test_mnist_download_no_network(tmp_path, closed_url):
    home = tmp_path / "home"
    mirrors = [closed_url + "a/", closed_url + "b/"]
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as exc:
        load_mnist(home, download=True, base_url=mirrors)
    assert time.perf_counter() - t0 < 10
    assert isinstance(exc.value, OSError) and isinstance(exc.value, ConnectionError)
    msg = str(exc.value)
    assert "failed" in msg
    for m in mirrors:
        assert m + "train-images-idx3-ubyte.gz" in msg
    assert "POSWISE_DATA" in msg and str(home / "mnist") in msg
    folder = home / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_download_rejects_bad_base_url(tmp_path):
    with pytest.raises(ValueError, match="base_url"):
        load_mnist(tmp_path, download=True, base_url=[])


def _cifar_tarball(batches, *, extra=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, (data, labels) in zip(CIFAR_BATCHES, batches):
            raw = cifar_py_pickle(data, labels)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
        if extra is not None:
            extra(tf)
    return buf.getvalue()


def test_cifar_download_and_extract(tmp_path, http_server, monkeypatch):
    url, served, log = http_server
    batches = fake_cifar(seed=9)
    blob = _cifar_tarball(batches)
    served.mkdir(parents=True)
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz",
                        hashlib.md5(blob).hexdigest())
    home = tmp_path / "home"
    ds = load_cifar10(home, download=True, base_url=url)
    check_cifar_equal(ds, batches)
    assert (home / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()
    assert leftovers(home / "cifar10") == []
    load_cifar10(home, download=True, base_url=url)
    assert len(log) == 1


def test_cifar_download_checksum_mismatch(tmp_path, http_server, monkeypatch):
    url, served, log = http_server
    served.mkdir(parents=True)
    (served / "cifar-10-python.tar.gz").write_bytes(_cifar_tarball(fake_cifar()))
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz", "f" * 32)
    home = tmp_path / "home"
    with pytest.raises(DatasetError, match="md5"):
        load_cifar10(home, download=True, base_url=url)
    assert list((home / "cifar10").iterdir()) == []


def test_cifar_existing_tarball_is_used_and_checked(tmp_path, closed_url, monkeypatch):
    batches = fake_cifar(seed=2)
    blob = _cifar_tarball(batches)
    folder = tmp_path / "cifar10"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(blob)
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz", "e" * 32)
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz.*md5"):
        load_cifar10(tmp_path, download=True, base_url=closed_url)
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz",
                        hashlib.md5(blob).hexdigest())
    # no server is reachable: the archive on disk is extracted without any download
    check_cifar_equal(load_cifar10(tmp_path, download=True, base_url=closed_url), batches)


@pytest.mark.parametrize("attack", ["dotdot", "absolute", "symlink"])
def test_cifar_tar_path_traversal_refused(tmp_path, http_server, monkeypatch, attack):
    url, served, log = http_server

    def extra(tf):
        if attack == "symlink":
            info = tarfile.TarInfo("cifar-10-batches-py/link")
            info.type = tarfile.SYMTYPE
            info.linkname = str(tmp_path / "outside")
            tf.addfile(info)
            return
        name = "../../evil" if attack == "dotdot" else str(tmp_path / "evil")
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))

    blob = _cifar_tarball(fake_cifar(), extra=extra)
    served.mkdir(parents=True)
    (served / "cifar-10-python.tar.gz").write_bytes(blob)
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "cifar-10-python.tar.gz",
                        hashlib.md5(blob).hexdigest())
    home = tmp_path / "a" / "b" / "home"
    with pytest.raises(DatasetError, match="refusing to extract"):
        load_cifar10(home, download=True, base_url=url)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert not (home / "cifar10" / "cifar-10-batches-py").exists()
    assert leftovers(home / "cifar10") == []


# ------------------------------------------------------------------ synthetic

def test_synthetic_defaults_shapes_and_balance():
    ds = make_synthetic(rng=0)
    assert ds.name == "synthetic" and ds.classes == ("0", "1")
    assert ds.X_train.shape == (500, 20) and ds.X_test.shape == (125, 20)
    assert ds.y_train.shape == (500,) and ds.y_test.shape == (125,)
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.int64
    assert ds.X_train.flags.c_contiguous and ds.X_test.flags.c_contiguous
    assert np.bincount(ds.y_train).tolist() == [250, 250]
    assert 0.3 < ds.y_test.mean() < 0.7
    assert abs(ds.X_train.mean()) < 0.1 and 0.9 < ds.X_train.std() < 1.1


def test_synthetic_determinism():
    a = make_synthetic(rng=123)
    b = make_synthetic(rng=123)
    c = make_synthetic(rng=124)
    for f in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.y_train, c.y_train)
    d = make_synthetic(rng=np.random.default_rng(123))
    np.testing.assert_array_equal(a.y_train, d.y_train)


def test_synthetic_labels_follow_a_teacher():
    # The labels are a function of the inputs: nearest neighbours agree far above chance.
    ds = make_synthetic(2000, 5, 2, hidden=(8,), n_test=200, rng=0)
    d2 = ((ds.X_test[:, None, :] - ds.X_train[None, :, :]) ** 2).sum(-1)
    pred = ds.y_train[np.argmin(d2, axis=1)]
    assert (pred == ds.y_test).mean() > 0.75


def test_synthetic_multiclass_and_options():
    ds = make_synthetic(300, 7, 4, hidden=(10, 6), n_test=50, rng=1, dtype=np.float32)
    assert ds.X_train.shape == (300, 7) and ds.X_test.shape == (50, 7)
    assert ds.X_train.dtype == np.float32
    assert ds.n_classes == 4 and ds.classes == ("0", "1", "2", "3")
    assert set(np.unique(ds.y_train)) == {0, 1, 2, 3}
    ds64 = make_synthetic(300, 7, 4, hidden=(10, 6), n_test=50, rng=1)
    np.testing.assert_array_equal(ds.y_train, ds64.y_train)
    np.testing.assert_allclose(ds.X_train, ds64.X_train, rtol=1e-6)
    lin = make_synthetic(50, 3, hidden=(), rng=0)
    assert lin.X_train.shape == (50, 3)
    assert make_synthetic(1, rng=0).X_test.shape == (0, 20)


def test_synthetic_noise_flips_exact_fraction():
    clean = make_synthetic(400, 5, 3, n_test=100, rng=7)
    noisy = make_synthetic(400, 5, 3, n_test=100, noise=0.2, rng=7)
    np.testing.assert_array_equal(clean.X_train, noisy.X_train)
    assert (clean.y_train != noisy.y_train).sum() == 80
    assert (clean.y_test != noisy.y_test).sum() == 20


def test_synthetic_is_fast():
    make_synthetic(rng=0)
    best = min(_timed(lambda: make_synthetic(rng=0)) for _ in range(5))
    assert best < 0.05


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


@pytest.mark.parametrize("kwargs, match", [
    ({"n_classes": 1}, r"The 'n_classes' parameter of make_synthetic must be an int >= 2\. "
                       r"Got 1 instead\."),
    ({"n_classes": 2.0}, r"'n_classes'.*Got 2\.0 instead"),
    ({"n_samples": 0}, r"The 'n_samples' parameter of make_synthetic must be an int >= 1\."),
    ({"n_samples": True}, r"'n_samples'"),
    ({"n_features": -3}, r"'n_features'.*>= 1"),
    ({"n_test": -1}, r"'n_test'.*>= 0"),
    ({"noise": 1.5}, r"'noise'.*\[0, 1\]"),
    ({"noise": "a"}, r"'noise'"),
    ({"hidden": (4, 0)}, r"'hidden'"),
    ({"dtype": np.int32}, r"'dtype'.*float32 or float64"),
    ({"rng": "seed"}, r"'rng'"),
])
def test_synthetic_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)


def test_loader_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'dtype' parameter of load_mnist"):
        load_mnist(tmp_path, dtype=np.int8)
    with pytest.raises(ValueError, match=r"'download' parameter of load_cifar10"):
        load_cifar10(tmp_path, download="yes")
    with pytest.raises(TypeError, match=r"'path' parameter of load_cat"):
        load_cat(123)
