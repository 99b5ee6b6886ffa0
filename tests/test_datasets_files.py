"""The dataset registry, load(name), Fashion-MNIST and your own files (load_file)."""
import gzip
import hashlib
import zipfile

import numpy as np
import pytest

from poswise import datasets
from poswise.datasets import DATASETS, Dataset, DatasetError, load, load_file
from test_datasets import (_isolated_env, _write_cat, check_mnist_equal,  # noqa: F401
                           fake_cifar, fake_mnist, http_server, idx_bytes, write_cifar_py,
                           write_mnist)

h5py = pytest.importorskip("h5py")


@pytest.fixture(autouse=True)
def _no_env_home(monkeypatch):
    monkeypatch.delenv("POSWISE_DATA", raising=False)


# -------------------------------------------------------------------- registry

def _fake_home(home):
    """A data home holding small fake copies of every file-based dataset."""
    _write_cat(home / "cat")
    write_mnist(home / "mnist", fake_mnist(seed=1))
    write_mnist(home / "fashion_mnist", fake_mnist(seed=2))
    write_cifar_py(home / "cifar10", fake_cifar(seed=3))
    return home


def test_registry_covers_every_loader_once():
    assert list(DATASETS) == ["synthetic", "cat", "mnist", "fashion_mnist", "cifar10"]
    loaders = [info.loader for info in DATASETS.values()]
    assert len(set(loaders)) == len(loaders)
    for key, info in DATASETS.items():
        assert info.name == key and info.label and len(info.classes) >= 2
        assert len(set(info.classes)) == len(info.classes)
    assert DATASETS["fashion_mnist"].label == "Fashion-MNIST"
    assert DATASETS["fashion_mnist"].classes[9] == "Ankle boot"
    assert DATASETS["mnist"].classes == tuple("0123456789")


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_load_by_name_returns_what_the_registry_says(tmp_path, name, dtype):
    home = _fake_home(tmp_path / "home")
    ds = load(name, home, dtype=dtype)
    info = DATASETS[name]
    assert isinstance(ds, Dataset)
    assert ds.name == name and ds.classes == info.classes
    assert ds.X_train.dtype == dtype and ds.X_test.dtype == dtype
    assert ds.X_train.flags.c_contiguous
    assert ds.y_train.max() < len(info.classes)
    if name == "synthetic":
        np.testing.assert_array_equal(
            ds.X_train, datasets.make_synthetic(**datasets.SYNTHETIC_DEFAULTS,
                                                dtype=dtype).X_train)
        assert ds.n_features == info.n_features


def test_load_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="'name' parameter of load must be one of.*"
                                         "'fashion_mnist'.*load_file"):
        load("imagenet")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load("cat", tmp_path, download=True)
    with pytest.raises(ValueError, match="dtype"):
        load("synthetic", dtype=np.int32)
    with pytest.raises(ValueError, match="download"):
        load("mnist", tmp_path, download="yes")
    with pytest.raises(FileNotFoundError, match="MNIST files not found"):
        load("mnist", tmp_path)
    assert load("fashion-mnist", _fake_home(tmp_path / "h")).name == "fashion_mnist"


# --------------------------------------------------------------- Fashion-MNIST

@pytest.mark.parametrize("sub", ["fashion_mnist", "fashion-mnist"])
def test_fashion_mnist_in_the_data_home(tmp_path, monkeypatch, sub):
    arrays = fake_mnist(seed=4)
    write_mnist(tmp_path / "home" / sub, arrays)
    write_mnist(tmp_path / "home" / "mnist", fake_mnist(seed=5))     # not picked up
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "home"))
    ds = datasets.load_fashion_mnist()
    check_mnist_equal(ds, arrays)
    assert ds.name == "fashion_mnist" and ds.classes[0] == "T-shirt/top"
    assert datasets.load_mnist().name == "mnist"


def test_fashion_mnist_in_the_system_folder(tmp_path, monkeypatch):
    arrays = fake_mnist(seed=6)
    system = write_mnist(tmp_path / "usr-share-datasets-fashion-mnist", arrays)
    monkeypatch.setitem(datasets.SYSTEM_DIRS, "fashion_mnist", (str(system),))
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path / "empty-home"))
    check_mnist_equal(datasets.load_fashion_mnist(), arrays)
    # a data home copy wins over the system one
    mine = fake_mnist(seed=7)
    write_mnist(tmp_path / "empty-home" / "fashion_mnist", mine)
    check_mnist_equal(datasets.load_fashion_mnist(), mine)


def test_debian_folder_is_searched_by_default(tmp_path, monkeypatch):
    assert "/usr/share/datasets/fashion-mnist" in datasets.SYSTEM_DIRS["fashion_mnist"]
    monkeypatch.setenv("POSWISE_DATA", str(tmp_path))
    try:
        datasets.load_fashion_mnist()
    except FileNotFoundError as exc:
        msg = str(exc)
        assert "/usr/share/datasets/fashion-mnist" in msg
        assert "dataset-fashion-mnist" in msg and "download=True" in msg


def test_fashion_mnist_download_uses_its_own_checksums(tmp_path, http_server, monkeypatch):
    url, served, log = http_server
    arrays = fake_mnist(seed=8)
    served.mkdir(parents=True)
    for name, arr in arrays.items():
        data = gzip.compress(idx_bytes(arr))
        (served / (name + ".gz")).write_bytes(data)
        monkeypatch.setitem(datasets.MD5_CHECKSUMS, f"fashion_mnist/{name}.gz",
                            hashlib.md5(data).hexdigest())
    home = tmp_path / "home"
    ds = datasets.load_fashion_mnist(home, download=True, base_url=url)
    check_mnist_equal(ds, arrays)
    assert ds.name == "fashion_mnist"
    assert sorted(p.name for p in (home / "fashion_mnist").iterdir()) == sorted(
        n + ".gz" for n in arrays)
    # MNIST's published checksums (same file names) are not used for Fashion-MNIST
    (home / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setitem(datasets.MD5_CHECKSUMS, "fashion_mnist/t10k-labels-idx1-ubyte.gz",
                        "0" * 32)
    with pytest.raises(DatasetError, match="0{32}"):
        datasets.load_fashion_mnist(home, download=True, base_url=url)


def test_fashion_mnist_published_checksums_are_distinct_from_mnist():
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        f, m = datasets.MD5_CHECKSUMS[f"fashion_mnist/{name}"], datasets.MD5_CHECKSUMS[name]
        assert f != m and len(f) == 32
        assert f"fashion_mnist/{name}" in datasets.EXPECTED_SIZES
    assert datasets.BASE_URLS["fashion_mnist"]


# ------------------------------------------------------------------ load_file

def _xy(n=12, d=5, k=3, seed=0, xdtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(xdtype)
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    return X, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_npz_with_and_without_test_split(tmp_path, dtype):
    X, y = _xy()
    Xt, yt = _xy(n=4, seed=1)
    np.savez(tmp_path / "full.npz", X_train=X, y_train=y, X_test=Xt, y_test=yt)
    ds = load_file(tmp_path / "full.npz", dtype=dtype)
    np.testing.assert_array_equal(ds.X_train, X.astype(dtype))
    np.testing.assert_array_equal(ds.X_test, Xt.astype(dtype))
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.name == "full" and ds.classes == ("0", "1", "2")
    assert ds.X_train.dtype == dtype and ds.y_train.dtype == np.int64
    assert ds.X_train.flags.writeable and ds.X_train.flags.c_contiguous
    np.savez_compressed(tmp_path / "train_only.npz", X_train=X, y_train=y)
    ds = load_file(tmp_path / "train_only.npz", name="mine")
    assert ds.name == "mine" and ds.X_test.shape == (0, 5) and ds.y_test.shape == (0,)


def test_npz_name_and_classes_from_the_file(tmp_path):
    X, y = _xy()
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, classes=np.array(["a", "b", "c"]),
             name=np.array("toys"))
    ds = load_file(tmp_path / "d.npz")
    assert ds.name == "toys" and ds.classes == ("a", "b", "c")
    assert load_file(tmp_path / "d.npz", name="override").name == "override"


def test_npy_pairs(tmp_path):
    X, y = _xy()
    Xt, yt = _xy(n=4, seed=2)
    np.save(tmp_path / "X_train.npy", X)
    np.save(tmp_path / "y_train.npy", y)
    ds = load_file(tmp_path / "X_train.npy")
    np.testing.assert_array_equal(ds.X_train, X)
    assert ds.n_test == 0
    assert ds.X_train.flags.writeable      # the user may normalise in place
    np.save(tmp_path / "X_test.npy", Xt)
    np.save(tmp_path / "y_test.npy", yt)
    for path in (tmp_path / "X_train.npy", tmp_path):
        ds = load_file(path)
        np.testing.assert_array_equal(ds.X_test, Xt)
        np.testing.assert_array_equal(ds.y_test, yt)
    np.save(tmp_path / "feat.npy", X)
    np.save(tmp_path / "lab.npy", y.astype(np.float32))     # integral floats are labels
    ds = load_file(tmp_path / "feat.npy", y=tmp_path / "lab.npy", name="explicit")
    np.testing.assert_array_equal(ds.y_train, y)
    ds = load_file(tmp_path / "feat.npy", y=tmp_path / "lab.npy", X_test=tmp_path /
                   "X_test.npy", y_test=tmp_path / "y_test.npy")
    assert ds.n_test == 4
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    assert load_file(tmp_path / "X.npy").name == "X"


def test_images_are_flattened_and_fortran_order_read(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 255, (6, 4, 4, 3)).astype(np.uint8)
    y = np.arange(6) % 2
    np.savez(tmp_path / "img.npz", X_train=imgs, y_train=y)
    ds = load_file(tmp_path / "img.npz")
    np.testing.assert_array_equal(ds.X_train, imgs.reshape(6, -1).astype(np.float64))
    F = np.asfortranarray(rng.standard_normal((7, 3)))
    np.save(tmp_path / "X.npy", F)
    np.save(tmp_path / "y.npy", np.arange(7) % 2)
    np.testing.assert_array_equal(load_file(tmp_path / "X.npy").X_train, F)


def test_hdf5_default_and_custom_keys(tmp_path):
    X, y = _xy()
    Xt, yt = _xy(n=3, seed=4)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X_train"], f["y_train"], f["X_test"], f["y_test"] = X, y, Xt, yt
        f["classes"] = np.array([b"r", b"g", b"b"])
        f.attrs["name"] = "rgb"
    ds = load_file(tmp_path / "d.h5")
    np.testing.assert_array_equal(ds.X_train, X)
    np.testing.assert_array_equal(ds.y_test, yt)
    assert ds.name == "rgb" and ds.classes == ("r", "g", "b")
    with h5py.File(tmp_path / "cat_like.hdf5", "w") as f:
        f.create_dataset("train_set_x", data=X, chunks=(4, 5), compression="gzip")
        f["train_set_y"] = y
    ds = load_file(tmp_path / "cat_like.hdf5",
                   keys={"X_train": "train_set_x", "y_train": "train_set_y"})
    np.testing.assert_array_equal(ds.X_train, X)
    assert ds.name == "cat_like"


def _expect(path, match, **kwargs):
    with pytest.raises(DatasetError, match=match) as exc:
        load_file(path, **kwargs)
    assert str(path) in str(exc.value)


def test_bad_files_give_a_named_dataset_error(tmp_path):
    X, y = _xy()
    p = tmp_path / "p.npz"
    np.savez(p, X=X, y=y)
    _expect(p, r"lacks the array\(s\) 'X_train', 'y_train'.*holds 'X', 'y'.*keys=")
    np.savez(p, X_train=X, y_train=y[:-1])
    _expect(p, "y_train has 11 labels for 12 samples")
    np.savez(p, X_train=X, y_train=y + 0.5)
    _expect(p, "integer class labels")
    np.savez(p, X_train=X, y_train=y - 1)
    _expect(p, "negative labels")
    np.savez(p, X_train=np.zeros((12, 0)), y_train=y)
    _expect(p, "zero features")
    np.savez(p, X_train=X[:, 0], y_train=y)
    _expect(p, r"shape \(n_samples, n_features\)")
    bad = X.copy()
    bad[3, 2] = np.nan
    np.savez(p, X_train=bad, y_train=y)
    _expect(p, "1 NaN or infinite")
    np.savez(p, X_train=np.array([["a"] * 5] * 12), y_train=y)
    _expect(p, "must hold numbers")
    np.savez(p, X_train=X, y_train=y, X_test=X[:, :4], y_test=y)
    _expect(p, "X_test has 4 features per sample but X_train has 5")
    np.savez(p, X_train=X, y_train=y, X_test=X)
    _expect(p, "only one of")
    np.savez(p, X_train=X, y_train=y, classes=np.array(["a", "b"]))
    _expect(p, "labels go up to 2 but the file names only 2 classes")
    np.savez(p, X_train=np.empty((0, 5)), y_train=np.empty(0, int))
    _expect(p, "no samples")
    np.save(tmp_path / "obj.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    _expect(tmp_path / "obj.npy", "Python objects", y=tmp_path / "obj.npy")
    (tmp_path / "text.npz").write_text("hello")
    _expect(tmp_path / "text.npz", "not a .npz, .npy or HDF5 file")
    (tmp_path / "empty.h5").write_bytes(b"")
    _expect(tmp_path / "empty.h5", "not a readable HDF5 file")
    (tmp_path / "trunc.npz").write_bytes(open_bytes(p)[:50])
    _expect(tmp_path / "trunc.npz", "npz")
    np.save(tmp_path / "alone.npy", X)
    _expect(tmp_path / "alone.npy", "give the labels with y=")
    np.save(tmp_path / "Xlonely.npy", X)
    _expect(tmp_path / "Xlonely.npy", "ylonely.npy.*was not found")


def open_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_load_file_argument_errors(tmp_path):
    X, y = _xy()
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_file(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="X_train.npy"):
        load_file(tmp_path)
    with pytest.raises(TypeError, match="'path' parameter of load_file"):
        load_file(None)
    with pytest.raises(ValueError, match="'name' parameter of load_file"):
        load_file(tmp_path / "d.npz", name="")
    with pytest.raises(ValueError, match="'keys' parameter of load_file"):
        load_file(tmp_path / "d.npz", keys={"X": "a"})
    with pytest.raises(ValueError, match="are for .npy files"):
        load_file(tmp_path / "d.npz", y=tmp_path / "y.npy")
    with pytest.raises(ValueError, match="dtype"):
        load_file(tmp_path / "d.npz", dtype=np.int8)


def test_zero_feature_cat_files_are_refused(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    for fname, (kx, ky) in (("CatClassificationTrain.h5", ("train_set_x", "train_set_y")),
                            ("CatClassificationVal.h5", ("test_set_x", "test_set_y"))):
        with h5py.File(folder / fname, "w") as f:
            f[kx] = np.zeros((4, 0, 64, 3), np.uint8)
            f[ky] = np.zeros(4, np.int64)
    with pytest.raises(DatasetError, match="CatClassificationTrain.h5.*zero features"):
        datasets.load_cat(tmp_path)


def test_npz_with_a_pickled_member_is_refused_without_unpickling(tmp_path, monkeypatch):
    import pickle
    X, y = _xy()
    np.savez(tmp_path / "evil.npz", X_train=X, y_train=np.array([object()] * 12,
                                                                  dtype=object))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    _expect(tmp_path / "evil.npz", "Python objects")
    with zipfile.ZipFile(tmp_path / "evil.npz") as zf:
        assert "y_train.npy" in zf.namelist()
