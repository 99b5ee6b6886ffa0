"""Dataset loaders and a synthetic dataset generator.

Every loader returns a :class:`Dataset` in poswise's data layout: samples-first,
C-contiguous float arrays (``float64`` unless ``dtype=np.float32`` is asked for), pixel
values scaled to ``[0, 1]`` by dividing by 255, each image flattened in its stored order
(the row-major order of the array as stored on disk), and integer labels as ``int64``.

Available data:

- :func:`load_cat` -- the "cat vs non-cat" HDF5 files of the deeplearning.ai course
  (64x64x3 images, 2 classes);
- :func:`load_mnist` -- the four original MNIST IDX files, gzipped or not (28x28, 10
  classes), optionally downloaded;
- :func:`load_cifar10` -- the CIFAR-10 batches, in the python-pickle or the binary
  format (32x32x3 stored channel-major, 10 classes), optionally downloaded;
- :func:`make_synthetic` -- a small, seeded dataset labelled by a random "teacher" MLP;
  it is the default dataset when no real data are given.

Where the files are looked for
------------------------------
``path`` may be the folder that holds the files themselves, or a *data home* holding the
subfolders ``cat/``, ``mnist/`` and ``cifar10/`` (for CIFAR-10 also
``cifar-10-batches-py/`` or ``cifar-10-batches-bin/``, directly or inside ``cifar10/``).
Without ``path`` the data home is the folder named by the ``POSWISE_DATA`` environment
variable, else a per-user cache folder (``$XDG_CACHE_HOME/poswise`` or
``~/.cache/poswise``); see :func:`get_data_home`.

Errors
------
A missing file raises :class:`FileNotFoundError` naming the expected files, the folders
searched and ``POSWISE_DATA``. A file that is present but unusable (wrong magic number,
truncated archive, sizes that do not match, missing keys, forbidden pickle content...)
raises :class:`DatasetError`, a :class:`ValueError`. A download that cannot reach any
server raises :class:`DownloadError`, a :class:`ConnectionError` (hence an
:class:`OSError`).
"""
import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np

from ._layout import check_dtype, check_scalar, check_widths

__all__ = [
    "Dataset",
    "DatasetError",
    "DownloadError",
    "BASE_URLS",
    "MD5_CHECKSUMS",
    "get_data_home",
    "load_cat",
    "load_mnist",
    "load_cifar10",
    "make_synthetic",
]

#: Base URLs tried in order by the downloaders; a file name is appended to each one.
#: Change an entry (or pass ``base_url=``) to download from a mirror.
BASE_URLS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}

#: Published md5 checksums of the downloadable files.
MD5_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
}

#: Seconds to wait for a server before giving up on a URL.
DOWNLOAD_TIMEOUT = 30.0

ENV_VAR = "POSWISE_DATA"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(k) for k in range(10))

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801

_CAT_TRAIN = ("CatClassificationTrain.h5", "train_catvnoncat.h5")
_CAT_TEST = ("CatClassificationVal.h5", "test_catvnoncat.h5")

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PIXELS = 3 * 32 * 32

_CHUNK = 1 << 16


class DatasetError(ValueError):
    """A dataset file is present but cannot be used (corrupt, truncated, inconsistent)."""


class DownloadError(ConnectionError):
    """Downloading a dataset failed because no server could be reached."""


# --------------------------------------------------------------------------- Dataset

@dataclass(repr=False, eq=False)
class Dataset:
    """A train/test split in poswise's layout.

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
        Training inputs, samples-first, C-contiguous float array.
    y_train : ndarray of shape (n_train,)
        Training labels, ``int64`` in ``[0, n_classes)``.
    X_test : ndarray of shape (n_test, n_features)
        Test inputs, same layout and dtype as ``X_train``.
    y_test : ndarray of shape (n_test,)
        Test labels, ``int64``.
    name : str
        Name of the dataset (``"cat"``, ``"mnist"``, ``"cifar10"``, ``"synthetic"``).
    classes : tuple of str
        Class names; label ``k`` is ``classes[k]``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    classes: tuple

    @property
    def n_features(self):
        """int : Number of input features (columns of ``X_train``)."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self):
        """int : Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def n_train(self):
        """int : Number of training samples."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self):
        """int : Number of test samples."""
        return int(self.X_test.shape[0])

    def __repr__(self):
        def arr(a):
            return f"{tuple(a.shape)} {a.dtype}"
        return (f"Dataset(name={self.name!r}, X_train={arr(self.X_train)}, "
                f"y_train={arr(self.y_train)}, X_test={arr(self.X_test)}, "
                f"y_test={arr(self.y_test)}, n_classes={self.n_classes})")


# --------------------------------------------------------------------- validation

def _check_int(value, name, owner, low):
    return check_scalar(value, name, owner, kind="int", low=low, low_inclusive=True)


def _check_bool(value, name, owner):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"The {name!r} parameter of {owner} must be a bool. "
                         f"Got {value!r} instead.")
    return bool(value)


def _check_path(path, owner):
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The 'path' parameter of {owner} must be a str, an os.PathLike "
                        f"or None. Got {path!r} instead.")
    return Path(os.fspath(path)).expanduser()


def _check_base_urls(base_url, key, owner):
    if base_url is None:
        urls = BASE_URLS[key]
        urls = [urls] if isinstance(urls, str) else list(urls)
    elif isinstance(base_url, str):
        urls = [base_url]
    else:
        try:
            urls = list(base_url)
        except TypeError:
            urls = None
        if not urls or not all(isinstance(u, str) for u in urls):
            urls = None
    if not urls:
        raise ValueError(f"The 'base_url' parameter of {owner} must be a str, a non-empty "
                         f"sequence of str or None. Got {base_url!r} instead.")
    return [u if u.endswith("/") else u + "/" for u in urls]


# -------------------------------------------------------------------- locations

def get_data_home(path=None):
    """Return the data home folder.

    Parameters
    ----------
    path : str or os.PathLike, optional
        If given, it is returned (with ``~`` expanded).

    Returns
    -------
    pathlib.Path
        ``path`` if given; else the folder named by the ``POSWISE_DATA`` environment
        variable if it is set and not empty; else ``$XDG_CACHE_HOME/poswise`` if
        ``XDG_CACHE_HOME`` is set; else ``~/.cache/poswise``. The folder is not created.
    """
    path = _check_path(path, "get_data_home")
    if path is not None:
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "poswise"


def _candidate_dirs(path, subdirs):
    """Folders to search, in order: ``path`` itself, then ``path/<sub>`` for each sub.

    Without ``path`` the data home is used (its subfolders first, then itself).
    """
    base = get_data_home(path)
    subs = [base / s for s in subdirs]
    dirs = [base] + subs if path is not None else subs + [base]
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _env_state():
    value = os.environ.get(ENV_VAR)
    return f"{ENV_VAR}={value!r}" if value else f"{ENV_VAR} is not set"


def _where_hint(folder_name, home):
    return (f"Place the files in one of these folders, pass path=<folder>, or set the "
            f"{ENV_VAR} environment variable to a data home holding a '{folder_name}/' "
            f"subfolder ({_env_state()}; data home {str(home)!r}).")


def _missing_error(title, expected, dirs, best_missing, home, folder_name, download_hint):
    msg = (f"{title} files not found. Expected {', '.join(expected)} in one of these "
           f"folders: {', '.join(repr(str(d)) for d in dirs)}.")
    if best_missing is not None:
        folder, missing = best_missing
        msg += f" Folder {str(folder)!r} lacks {', '.join(missing)}."
    msg += " " + _where_hint(folder_name, home)
    if download_hint:
        msg += " Or pass download=True to fetch them."
    return FileNotFoundError(msg)


# ----------------------------------------------------------------- conversions

def _pixels_to_float(pixels, dtype, source):
    """Flatten ``(n, ...)`` integer pixels in stored order and scale them by 1/255."""
    pixels = np.asarray(pixels)
    if pixels.dtype.kind not in "ui":
        raise DatasetError(f"{source}: expected integer pixel values, got dtype "
                           f"{pixels.dtype}.")
    if pixels.dtype != np.uint8 and pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DatasetError(f"{source}: pixel values must be in [0, 255].")
    flat = pixels.reshape(pixels.shape[0], -1)
    # one pass, computed in ``dtype``: the same values as ``flat.astype(dtype) / 255``
    X = np.divide(flat, dtype(255), dtype=dtype)
    return np.ascontiguousarray(X)


def _labels(y, n, n_classes, source):
    y = np.asarray(y)
    if y.size != n:
        raise DatasetError(f"{source}: {y.size} labels for {n} images.")
    if y.dtype.kind not in "uib":
        raise DatasetError(f"{source}: labels must be integers, got dtype {y.dtype}.")
    y = np.ascontiguousarray(y.reshape(-1), dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DatasetError(f"{source}: labels must be in [0, {n_classes - 1}], found "
                           f"values in [{y.min()}, {y.max()}].")
    return y


def _dataset(Xtr, ytr, Xte, yte, name, classes, source):
    if Xtr.shape[1] != Xte.shape[1]:
        raise DatasetError(f"{source}: train images have {Xtr.shape[1]} values each but "
                           f"test images have {Xte.shape[1]}.")
    return Dataset(X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte,
                   name=name, classes=tuple(classes))


# -------------------------------------------------------------------------- cat

def _find_pair(d, train_names, test_names):
    tr = next((d / n for n in train_names if (d / n).is_file()), None)
    te = next((d / n for n in test_names if (d / n).is_file()), None)
    return tr, te


def _read_h5(fname, x_key, y_key):
    import h5py

    try:
        f = h5py.File(fname, "r")
    except OSError as exc:
        raise DatasetError(f"{str(fname)!r} is not a readable HDF5 file: {exc}") from None
    with f:
        missing = [k for k in (x_key, y_key) if k not in f]
        if missing:
            raise DatasetError(f"{str(fname)!r} lacks the dataset key(s) "
                               f"{', '.join(repr(k) for k in missing)} (it holds "
                               f"{', '.join(repr(k) for k in f.keys()) or 'nothing'}).")
        try:
            x = np.asarray(f[x_key][()])
            y = np.asarray(f[y_key][()])
            classes = np.asarray(f["list_classes"][()]) if "list_classes" in f else None
        except (OSError, TypeError, ValueError) as exc:
            raise DatasetError(f"{str(fname)!r}: cannot read its arrays: {exc}") from None
    if x.ndim < 2 or x.shape[0] == 0:
        raise DatasetError(f"{str(fname)!r}: {x_key!r} must be an array of images "
                           f"(n, ...), got shape {x.shape}.")
    return x, y, classes


def _decode_classes(classes, fname):
    if classes is None:
        return None
    out = []
    for c in np.asarray(classes).reshape(-1):
        if isinstance(c, bytes):
            c = c.decode("utf-8", "replace")
        out.append(str(c))
    if len(out) < 2:
        raise DatasetError(f"{str(fname)!r}: 'list_classes' must name at least 2 classes, "
                           f"got {out!r}.")
    return tuple(out)


def load_cat(path=None, *, dtype=np.float64):
    """Load the "cat vs non-cat" dataset (64x64 RGB images, 2 classes).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder holding the two HDF5 files, or a data home holding a ``cat/`` subfolder.
        Default: the data home (see :func:`get_data_home`).
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``.

    Returns
    -------
    Dataset
        209 training and 50 test samples of 12288 features (each image flattened in its
        stored ``(64, 64, 3)`` row-major order, scaled to [0, 1]); ``classes`` are read
        from the file's ``list_classes`` (``('non-cat', 'cat')``).

    Raises
    ------
    FileNotFoundError
        If neither ``CatClassificationTrain.h5``/``CatClassificationVal.h5`` nor the
        original ``train_catvnoncat.h5``/``test_catvnoncat.h5`` are found.
    DatasetError
        If a file is not HDF5, lacks the keys ``train_set_x``/``train_set_y`` (resp.
        ``test_set_x``/``test_set_y``) or holds inconsistent arrays.

    Notes
    -----
    The files hold ``train_set_x`` (209, 64, 64, 3) uint8, ``train_set_y`` (209,),
    ``test_set_x``, ``test_set_y`` and ``list_classes`` (e.g. ``[b'non-cat', b'cat']``).
    """
    owner = "load_cat"
    dtype = check_dtype(dtype, owner)
    path = _check_path(path, owner)
    dirs = _candidate_dirs(path, ["cat"])
    best = None
    for d in dirs:
        tr, te = _find_pair(d, _CAT_TRAIN, _CAT_TEST)
        if tr is not None and te is not None:
            break
        if (tr is not None or te is not None) and best is None:
            best = (d, [" or ".join(_CAT_TEST)] if tr is not None else [" or ".join(_CAT_TRAIN)])
    else:
        expected = [f"{_CAT_TRAIN[0]} and {_CAT_TEST[0]} (or {_CAT_TRAIN[1]} and "
                    f"{_CAT_TEST[1]})"]
        raise _missing_error("Cat", expected, dirs, best, get_data_home(path), "cat", False)

    xtr, ytr, ctr = _read_h5(tr, "train_set_x", "train_set_y")
    xte, yte, cte = _read_h5(te, "test_set_x", "test_set_y")
    classes = _decode_classes(ctr, tr) or _decode_classes(cte, te) or ("non-cat", "cat")
    Xtr = _pixels_to_float(xtr, dtype, repr(str(tr)))
    Xte = _pixels_to_float(xte, dtype, repr(str(te)))
    ytr = _labels(ytr, Xtr.shape[0], len(classes), repr(str(tr)))
    yte = _labels(yte, Xte.shape[0], len(classes), repr(str(te)))
    return _dataset(Xtr, ytr, Xte, yte, "cat", classes, f"{str(tr)!r} and {str(te)!r}")


# ------------------------------------------------------------------------ MNIST

def _mnist_variants(base):
    """File names accepted for one MNIST file, in order of preference."""
    dotted = base.replace("-idx", ".idx", 1)
    return [base, dotted, base + ".gz", dotted + ".gz"]


def _find_mnist_file(d, base):
    return next((d / n for n in _mnist_variants(base) if (d / n).is_file()), None)


def _read_maybe_gzip(fname):
    with open(fname, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{str(fname)!r} is a corrupt or truncated gzip file: "
                           f"{exc}") from None


def _parse_idx(data, fname, magic):
    """Parse IDX bytes with the given magic; return the uint8 array."""
    src = repr(str(fname))
    if len(data) < 4:
        raise DatasetError(f"{src} is too short to be an IDX file ({len(data)} bytes).")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DatasetError(f"{src} has IDX magic number 0x{got:08x}; expected "
                           f"0x{magic:08x} ({'images' if magic == _IDX_IMAGES_MAGIC else 'labels'}).")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{src} is truncated: {len(data)} bytes, but its IDX header "
                           f"alone takes {header}.")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DatasetError(f"{src} has {len(data)} bytes but its IDX header declares "
                           f"dimensions {dims}, i.e. {expected} bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_mnist_split(images, labels, dtype):
    img = _parse_idx(_read_maybe_gzip(images), images, _IDX_IMAGES_MAGIC)
    lab = _parse_idx(_read_maybe_gzip(labels), labels, _IDX_LABELS_MAGIC)
    if lab.shape[0] != img.shape[0]:
        raise DatasetError(f"{str(labels)!r} holds {lab.shape[0]} labels but "
                           f"{str(images)!r} holds {img.shape[0]} images.")
    X = _pixels_to_float(img, dtype, repr(str(images)))
    y = _labels(lab, img.shape[0], 10, repr(str(labels)))
    return X, y


def load_mnist(path=None, *, dtype=np.float64, download=False, base_url=None):
    """Load MNIST (28x28 grayscale digits, 10 classes).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder holding the four IDX files, or a data home holding a ``mnist/``
        subfolder. Default: the data home (see :func:`get_data_home`).
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``.
    download : bool, default=False
        If True, download the files that are missing (from the mirrors in
        ``BASE_URLS['mnist']``, in order) and check their md5 checksums. They go to the
        folder that already holds some of them, else to ``<data home>/mnist``.
    base_url : str or sequence of str, optional
        Mirror(s) to download from instead of ``BASE_URLS['mnist']``.

    Returns
    -------
    Dataset
        60000 training and 10000 test samples of 784 features (row-major 28x28),
        scaled to [0, 1]; ``classes`` are ``('0', ..., '9')``.

    Raises
    ------
    FileNotFoundError
        If some of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` are missing (each may be
        gzipped, ``.gz``, and may use the ``train-images.idx3-ubyte`` spelling) and
        ``download`` is False.
    DatasetError
        If a file is corrupt: wrong IDX magic number, truncated gzip, size not matching
        the header, label count not matching the image count, labels out of range, or
        a downloaded file whose md5 does not match.
    DownloadError
        If ``download`` is True and no mirror could be reached.
    """
    owner = "load_mnist"
    dtype = check_dtype(dtype, owner)
    path = _check_path(path, owner)
    download = _check_bool(download, "download", owner)
    dirs = _candidate_dirs(path, ["mnist"])

    def scan():
        found = []
        for d in dirs:
            files = {k: _find_mnist_file(d, v) for k, v in _MNIST_FILES.items()}
            found.append((d, files))
            if all(files.values()):
                return d, files, found
        return None, None, found

    folder, files, found = scan()
    if folder is None and download:
        urls = _check_base_urls(base_url, "mnist", owner)
        partial = [(d, f) for d, f in found if any(f.values())]
        target = partial[0][0] if partial else get_data_home(path) / "mnist"
        present = dict(partial[0][1]) if partial else {}
        for key, base in _MNIST_FILES.items():
            if present.get(key) is None:
                _download(base + ".gz", urls, target, "MNIST", "mnist", path)
        folder, files, found = scan()
    if folder is None:
        partial = [(d, f) for d, f in found if any(f.values())]
        best = None
        if partial:
            d, f = max(partial, key=lambda p: sum(v is not None for v in p[1].values()))
            best = (d, [_MNIST_FILES[k] + "[.gz]" for k, v in f.items() if v is None])
        expected = [v + "[.gz]" for v in _MNIST_FILES.values()]
        raise _missing_error("MNIST", expected, dirs, best, get_data_home(path), "mnist",
                             True)

    Xtr, ytr = _load_mnist_split(files["train_images"], files["train_labels"], dtype)
    Xte, yte = _load_mnist_split(files["test_images"], files["test_labels"], dtype)
    return _dataset(Xtr, ytr, Xte, yte, "mnist", MNIST_CLASSES, repr(str(folder)))


# --------------------------------------------------------------------- CIFAR-10

def _allowed_pickle_globals():
    a = np.zeros(1, dtype=np.uint8)
    reconstruct = a.__reduce__()[0]
    frombuffer = a.__reduce_ex__(5)[0]
    scalar = np.uint8(0).__reduce__()[0]
    import _codecs
    allowed = {
        ("_codecs", "encode"): _codecs.encode,
        ("builtins", "bytes"): bytes,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds dicts, lists, bytes, numbers and numpy arrays."""

    _allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_pickle_globals()
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load the global '{module}.{name}': only dicts, lists, bytes "
                f"and numpy arrays are allowed in CIFAR-10 batches") from None


def _unpickle(fname):
    with open(fname, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{str(fname)!r}: not a valid CIFAR-10 pickle batch "
                           f"({exc}).") from None
    except Exception as exc:  # truncated data, bad opcodes, bad reduce args...
        raise DatasetError(f"{str(fname)!r}: not a valid CIFAR-10 pickle batch "
                           f"({type(exc).__name__}: {exc}).") from None


def _get_key(d, key):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def _read_cifar_py_batch(fname):
    src = repr(str(fname))
    d = _unpickle(fname)
    if not isinstance(d, dict):
        raise DatasetError(f"{src}: expected a dict, got {type(d).__name__}.")
    data, labels = _get_key(d, "data"), _get_key(d, "labels")
    if data is None or labels is None:
        raise DatasetError(f"{src}: the batch lacks the key b'data' or b'labels'.")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_PIXELS):
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{src}: b'data' must be a uint8 array of shape "
                           f"(n, {_CIFAR_PIXELS}); got {desc}.")
    try:
        lab = np.asarray(labels)
    except Exception:
        lab = np.asarray([], dtype=object)
    if lab.ndim != 1 or lab.dtype.kind not in "ui":
        raise DatasetError(f"{src}: b'labels' must be a list of ints.")
    if lab.shape[0] != data.shape[0]:
        raise DatasetError(f"{src}: {lab.shape[0]} labels for {data.shape[0]} images.")
    return data, lab


def _read_cifar_bin_batch(fname):
    with open(fname, "rb") as f:
        raw = f.read()
    rec = 1 + _CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % rec:
        raise DatasetError(f"{str(fname)!r}: size {len(raw)} bytes is not a positive "
                           f"multiple of the {rec}-byte CIFAR-10 record (1 label byte + "
                           f"{_CIFAR_PIXELS} pixel bytes).")
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)
    return arr[:, 1:], arr[:, 0]


def _cifar_classes_py(d):
    meta = d / "batches.meta"
    if not meta.is_file():
        return CIFAR10_CLASSES
    m = _unpickle(meta)
    names = _get_key(m, "label_names") if isinstance(m, dict) else None
    if names is None:
        raise DatasetError(f"{str(meta)!r}: expected a dict with b'label_names'.")
    out = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)
                for n in names)
    if len(out) != 10:
        raise DatasetError(f"{str(meta)!r}: expected 10 label names, got {len(out)}.")
    return out


def _cifar_classes_bin(d):
    meta = d / "batches.meta.txt"
    if not meta.is_file():
        return CIFAR10_CLASSES
    names = tuple(line.strip() for line in meta.read_text("utf-8", "replace").splitlines()
                  if line.strip())
    if len(names) != 10:
        raise DatasetError(f"{str(meta)!r}: expected 10 label names, got {len(names)}.")
    return names


def _cifar_dirs(path):
    subs = [_CIFAR_PY_DIR, _CIFAR_BIN_DIR, "cifar10",
            f"cifar10/{_CIFAR_PY_DIR}", f"cifar10/{_CIFAR_BIN_DIR}"]
    return _candidate_dirs(path, subs)


def _scan_cifar(dirs):
    """Return (folder, format) of the first complete set of batches, and the best partial."""
    best = None
    for d in dirs:
        for fmt, suffix in (("py", ""), ("bin", ".bin")):
            names = [b + suffix for b in _CIFAR_BATCHES]
            have = [(d / n).is_file() for n in names]
            if all(have):
                return (d, fmt), None
            if any(have) and (best is None or sum(have) > best[2]):
                best = (d, [n for n, h in zip(names, have) if not h], sum(have))
    return None, (best[:2] if best else None)


def _safe_extract_cifar(tar_path, target):
    """Extract ``cifar-10-batches-py/`` from the tarball into ``target``, safely."""
    src = repr(str(tar_path))
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        try:
            tf = tarfile.open(tar_path, "r:*")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{src} is not a readable tar archive: {exc}") from None
        with tf:
            try:
                members = tf.getmembers()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise DatasetError(f"{src} is a corrupt tar archive: {exc}") from None
            root = tmp.resolve()
            for m in members:
                name = m.name
                dest = (root / name).resolve()
                if (name.startswith(("/", "\\")) or os.path.isabs(name)
                        or ".." in Path(name).parts or (dest != root and root not in dest.parents)):
                    raise DatasetError(f"{src}: refusing to extract {name!r}, a path "
                                       f"outside the target folder.")
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{src}: refusing to extract {name!r}, which is "
                                       f"not a regular file or folder.")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            try:
                tf.extractall(tmp, members=members, **kwargs)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise DatasetError(f"{src}: extraction failed: {exc}") from None
        extracted = tmp / _CIFAR_PY_DIR
        if not extracted.is_dir():
            raise DatasetError(f"{src} does not contain a '{_CIFAR_PY_DIR}/' folder.")
        final = target / _CIFAR_PY_DIR
        if final.exists():
            shutil.rmtree(final)
        os.replace(extracted, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_cifar10(path=None, *, dtype=np.float64, download=False, base_url=None):
    """Load CIFAR-10 (32x32 RGB images, 10 classes).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder holding the batches, or a folder holding ``cifar-10-batches-py/`` or
        ``cifar-10-batches-bin/``, or a data home holding ``cifar10/`` (with the
        batches directly or in one of those two subfolders). Default: the data home
        (see :func:`get_data_home`).
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``.
    download : bool, default=False
        If True and no complete set of batches is found, download
        ``cifar-10-python.tar.gz`` (from ``BASE_URLS['cifar10']``) into
        ``<data home>/cifar10``, check its md5 and extract it safely (regular files
        only, no path outside the folder). An archive already there is not downloaded
        again (its md5 is checked before it is extracted).
    base_url : str or sequence of str, optional
        Mirror(s) to download from instead of ``BASE_URLS['cifar10']``.

    Returns
    -------
    Dataset
        50000 training and 10000 test samples of 3072 features, in the stored order
        (the 1024 red values, then green, then blue, each row-major 32x32), scaled to
        [0, 1]. ``classes`` come from ``batches.meta`` / ``batches.meta.txt`` when
        present, else ``airplane, automobile, bird, cat, deer, dog, frog, horse, ship,
        truck``.

    Raises
    ------
    FileNotFoundError
        If no folder holds all of ``data_batch_1`` ... ``data_batch_5`` and
        ``test_batch`` (python format) or the same names with ``.bin`` (binary format).
    DatasetError
        If a batch is corrupt: a pickle that holds anything but dicts, lists, bytes,
        numbers and numpy arrays (it is refused without being run), wrong array shape
        or dtype, label count not matching the image count, a binary file whose size is
        not a multiple of 3073 bytes, labels out of range, a downloaded archive whose
        md5 does not match or that holds unsafe paths.
    DownloadError
        If ``download`` is True and no server could be reached.

    Notes
    -----
    Pickle batches are dicts with ``b'data'`` (uint8, (n, 3072)) and ``b'labels'``;
    binary batches are records of 1 label byte followed by 3072 pixel bytes. The
    python format is preferred when a folder holds both.
    """
    owner = "load_cifar10"
    dtype = check_dtype(dtype, owner)
    path = _check_path(path, owner)
    download = _check_bool(download, "download", owner)
    dirs = _cifar_dirs(path)
    found, best = _scan_cifar(dirs)
    if found is None and download:
        urls = _check_base_urls(base_url, "cifar10", owner)
        target = get_data_home(path) / "cifar10"
        tar_path = target / _CIFAR_TAR
        if not tar_path.is_file():
            _download(_CIFAR_TAR, urls, target, "CIFAR-10", "cifar10", path)
        else:
            _verify_md5(tar_path)
        _safe_extract_cifar(tar_path, target)
        found, best = _scan_cifar(dirs)
    if found is None:
        expected = [", ".join(_CIFAR_BATCHES) + " (python format, e.g. in "
                    f"{_CIFAR_PY_DIR}/)", "or the same names with '.bin' (binary format, "
                    f"e.g. in {_CIFAR_BIN_DIR}/)"]
        raise _missing_error("CIFAR-10", expected, dirs, best, get_data_home(path),
                             "cifar10", True)

    folder, fmt = found
    if fmt == "py":
        batches = [_read_cifar_py_batch(folder / b) for b in _CIFAR_BATCHES]
        classes = _cifar_classes_py(folder)
        names = list(_CIFAR_BATCHES)
    else:
        names = [b + ".bin" for b in _CIFAR_BATCHES]
        batches = [_read_cifar_bin_batch(folder / n) for n in names]
        classes = _cifar_classes_bin(folder)
    parts_X, parts_y = [], []
    for (data, lab), n in zip(batches, names):
        src = repr(str(folder / n))
        parts_X.append(data)
        parts_y.append(_labels(lab, data.shape[0], len(classes), src))
    Xtr = _pixels_to_float(np.concatenate(parts_X[:5]), dtype, repr(str(folder)))
    Xte = _pixels_to_float(parts_X[5], dtype, repr(str(folder / names[5])))
    ytr = np.concatenate(parts_y[:5])
    return _dataset(Xtr, ytr, Xte, parts_y[5], "cifar10", classes, repr(str(folder)))


# --------------------------------------------------------------------- download

def _verify_md5(fname):
    """Check a file already on disk against ``MD5_CHECKSUMS`` (if listed there)."""
    expected = MD5_CHECKSUMS.get(Path(fname).name)
    if expected is None:
        return
    md5 = hashlib.md5()
    with open(fname, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
    if md5.hexdigest() != expected:
        raise DatasetError(f"{str(fname)!r} has md5 {md5.hexdigest()}, not the published "
                           f"checksum {expected}; delete it and download it again.")


def _download(fname, urls, target, title, folder_name, path):
    """Download ``fname`` from the first working mirror into ``target``, atomically.

    The file is streamed into a temporary file in ``target``, its md5 is checked
    against ``MD5_CHECKSUMS`` and only then is it renamed into place. On any failure
    the temporary file is removed.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    expected_md5 = MD5_CHECKSUMS.get(fname)
    final = target / fname
    failures, bad_checksum = [], False
    for base in urls:
        url = base + fname
        fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=target)
        try:
            md5 = hashlib.md5()
            try:
                with os.fdopen(fd, "wb") as out, \
                        urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        md5.update(chunk)
                        out.write(chunk)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # URLError/HTTPError, socket errors and timeouts are OSErrors;
                # ValueError covers malformed URLs.
                reason = getattr(exc, "reason", None) or exc
                failures.append(f"{url} ({type(exc).__name__}: {reason})")
                continue
            digest = md5.hexdigest()
            if expected_md5 is not None and digest != expected_md5:
                bad_checksum = True
                failures.append(f"{url} (md5 {digest} does not match the published "
                                f"checksum {expected_md5})")
                continue
            os.replace(tmp, final)
            tmp = None
            return final
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
    home = get_data_home(path)
    msg = (f"Downloading {title} failed: could not fetch {fname!r}. Tried: "
           f"{'; '.join(failures)}. To install the data manually, download {fname!r} "
           f"yourself and put it in {str(target)!r}; or put the files in "
           f"'<folder>/{folder_name}/' and set the {ENV_VAR} environment variable to "
           f"<folder> ({_env_state()}; data home {str(home)!r}), or pass path=<folder>.")
    if bad_checksum:
        raise DatasetError(msg)
    raise DownloadError(msg)


# -------------------------------------------------------------------- synthetic

def make_synthetic(n_samples=500, n_features=20, n_classes=2, *, hidden=(16,),
                   n_test=None, noise=0.0, rng=None, dtype=np.float64):
    """Make a seeded classification dataset labelled by a random teacher MLP.

    Inputs are i.i.d. standard normal. Labels come from a "teacher" MLP with random
    weights (normal with variance ``1/fan_in``, biases normal with standard deviation
    0.5) and ``tanh`` hidden units: with 2 classes the teacher has one output,
    thresholded at its median over the training inputs, so that the training classes
    are balanced (``n_samples // 2`` ones); with ``K > 2`` classes it has ``K``
    outputs, each centered on its training mean, and the label is their argmax.

    Parameters
    ----------
    n_samples : int, default=500
        Number of training samples (>= 1).
    n_features : int, default=20
        Number of input features (>= 1).
    n_classes : int, default=2
        Number of classes (>= 2).
    hidden : sequence of int or int, default=(16,)
        Hidden layer widths of the teacher; ``()`` gives a linear teacher.
    n_test : int, optional
        Number of test samples (>= 0). Default: ``n_samples // 4``.
    noise : float, default=0.0
        Fraction in [0, 1] of labels replaced by a different class drawn at random
        (``round(noise * n)`` labels in each split).
    rng : None, int, numpy.random.Generator or SeedSequence, optional
        Seed or generator, passed to :func:`numpy.random.default_rng`. An int gives the
        same dataset every time.
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test`` (values are drawn in float64 and cast,
        so the seed gives the same data in both dtypes up to rounding).

    Returns
    -------
    Dataset
        ``name='synthetic'``, ``classes=('0', ..., str(n_classes - 1))``.

    Examples
    --------
    >>> ds = make_synthetic(rng=0)
    >>> ds.X_train.shape, ds.X_test.shape
    ((500, 20), (125, 20))
    """
    owner = "make_synthetic"
    n_samples = _check_int(n_samples, "n_samples", owner, 1)
    n_features = _check_int(n_features, "n_features", owner, 1)
    n_classes = _check_int(n_classes, "n_classes", owner, 2)
    hidden_t = check_widths(hidden, "hidden", owner)
    n_test = n_samples // 4 if n_test is None else _check_int(n_test, "n_test", owner, 0)
    if not (isinstance(noise, Real) and not isinstance(noise, bool)
            and 0.0 <= float(noise) <= 1.0):
        raise ValueError(f"The 'noise' parameter of {owner} must be a float in [0, 1]. "
                         f"Got {noise!r} instead.")
    dtype = check_dtype(dtype, owner)
    try:
        gen = np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise ValueError(f"The 'rng' parameter of {owner} must be None, an int >= 0, a "
                         f"numpy Generator or SeedSequence. Got {rng!r} instead.") from None

    sizes = [n_features, *[int(h) for h in hidden_t], 1 if n_classes == 2 else n_classes]
    weights = [gen.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])
               for i in range(len(sizes) - 1)]
    biases = [0.5 * gen.standard_normal(sizes[i + 1]) for i in range(len(sizes) - 1)]
    n_total = n_samples + n_test
    X = gen.standard_normal((n_total, n_features))

    a = X
    for W, b in zip(weights[:-1], biases[:-1]):
        a = np.tanh(a @ W.T + b)
    out = a @ weights[-1].T + biases[-1]
    if n_classes == 2:
        y = (out[:, 0] > np.median(out[:n_samples, 0])).astype(np.int64)
    else:
        out -= out[:n_samples].mean(axis=0)
        y = np.argmax(out, axis=1).astype(np.int64)

    if noise > 0:
        for lo, hi in ((0, n_samples), (n_samples, n_total)):
            k = int(round(float(noise) * (hi - lo)))
            if k:
                idx = lo + gen.choice(hi - lo, size=k, replace=False)
                y[idx] = (y[idx] + gen.integers(1, n_classes, size=k)) % n_classes

    X = X.astype(dtype, order="C")
    return Dataset(X_train=np.ascontiguousarray(X[:n_samples]),
                   y_train=np.ascontiguousarray(y[:n_samples]),
                   X_test=np.ascontiguousarray(X[n_samples:]),
                   y_test=np.ascontiguousarray(y[n_samples:]),
                   name="synthetic",
                   classes=tuple(str(k) for k in range(n_classes)))
