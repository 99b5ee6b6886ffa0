"""What every dataset reader shares: the Dataset record, the errors, argument checks,
the pixel/label conversions and the size limits checked before anything is allocated.

Size rule (issue 12, family 5): a reader learns the size an array *declares* (a header,
a pickle, an HDF5 shape) and checks it against what the file can hold and against the
machine's memory before it allocates anything; a file that lies raises
:class:`DatasetError` naming the file. The limits live here, once.
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _filecheck
from .._filecheck import MAX_DECOMPRESSION_RATIO, max_expanded  # noqa: F401
from .._layout import check_scalar, format_bytes, total_memory

#: The arrays a loader returns may take at most this fraction of the physical memory.
MAX_MEMORY_FRACTION = 0.5


class DatasetError(ValueError):
    """A dataset file is present but cannot be used (corrupt, truncated, inconsistent,
    or declaring sizes it cannot hold)."""


class DownloadError(ConnectionError):
    """Downloading a dataset failed: no server could be reached, the transfer was too
    slow, too long, too large or incomplete."""


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
        Test inputs, same layout and dtype as ``X_train`` (``n_test`` may be 0 for a
        file without a test split).
    y_test : ndarray of shape (n_test,)
        Test labels, ``int64``.
    name : str
        Name of the dataset (a key of ``poswise.datasets.DATASETS`` or the user's name).
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

def check_int(value, name, owner, low):
    return check_scalar(value, name, owner, kind="int", low=low, low_inclusive=True)


def check_bool(value, name, owner):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"The {name!r} parameter of {owner} must be a bool. "
                         f"Got {value!r} instead.")
    return bool(value)


def check_path(path, owner, name="path"):
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The {name!r} parameter of {owner} must be a str, an os.PathLike "
                        f"or None. Got {path!r} instead.")
    return Path(os.fspath(path)).expanduser()


def src(fname):
    """How a file is named in messages."""
    return repr(str(fname))


# ------------------------------------------------------------------------ limits

def memory_limit():
    """Bytes a loader may allocate for its result (``None``: unknown, no limit)."""
    total = total_memory()
    return None if total is None else int(MAX_MEMORY_FRACTION * total)


def check_alloc(nbytes, fname, what):
    """Refuse an allocation of ``nbytes`` (declared by ``fname``) beyond the memory limit."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        raise DatasetError(f"{src(fname)}: {what} would take {format_bytes(nbytes)}, more "
                           f"than {MAX_MEMORY_FRACTION:.0%} of this machine's memory "
                           f"({format_bytes(limit)} allowed); the file is corrupt or too "
                           f"large for this machine (dtype=np.float32 halves the size).")


def declared_bytes(shape, itemsize):
    """Bytes of an array of ``shape``, in Python integers (no int64 overflow)."""
    return math.prod(int(d) for d in shape) * int(itemsize)


def check_declared(shape, itemsize, available, fname, what):
    """An uncompressed array cannot hold more bytes than its file has: refuse a shape
    that declares more (a stride-0 trick, a lying header) before allocating."""
    nbytes = declared_bytes(shape, itemsize)
    if nbytes > available:
        raise DatasetError(f"{src(fname)}: {what} declares shape {tuple(shape)} "
                           f"({format_bytes(nbytes)}) but the file holds only "
                           f"{format_bytes(available)}; it is truncated or corrupt.")
    return nbytes


def open_regular(fname):
    """Open ``fname`` for binary reading; a FIFO, a device or a folder is refused before
    a byte is read (a FIFO would block forever)."""
    try:
        return _filecheck.open_regular(fname)
    except _filecheck.FileProblem as exc:
        raise DatasetError(f"{src(fname)}: {exc}.") from None


def read_whole(fname):
    """The bytes of a regular file whose size fits the memory limit."""
    with open_regular(fname) as f:
        size = os.fstat(f.fileno()).st_size
        check_alloc(size, fname, "reading the file")
        return f.read()


# ----------------------------------------------------------------- conversions

def pixels_to_float(pixels, dtype, source):
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


def check_labels(y, n, n_classes, source):
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


def make_dataset(Xtr, ytr, Xte, yte, name, classes, source):
    if Xtr.shape[1] != Xte.shape[1]:
        raise DatasetError(f"{source}: train images have {Xtr.shape[1]} values each but "
                           f"test images have {Xte.shape[1]}.")
    if Xtr.shape[1] < 1:
        raise DatasetError(f"{source}: the samples have no features (shape "
                           f"{Xtr.shape}).")
    return Dataset(X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte,
                   name=name, classes=tuple(classes))
