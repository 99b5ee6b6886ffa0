"""Your own data: ``.npz``, ``.npy`` pairs and HDF5 files, through :func:`load_file`.

Every array's declared size is checked against the file before it is read (``.npy``
headers, zip members, HDF5 storage), so a lying file raises :class:`DatasetError`.
"""
import os
import zipfile
from pathlib import Path

import numpy as np

from .. import _filecheck
from .._layout import check_dtype
from ._base import (Dataset, DatasetError, check_alloc, check_path, open_regular, src)
from ._h5 import open_h5, read_array

#: The array names looked for in ``.npz`` and HDF5 files (``keys=`` overrides them).
DEFAULT_KEYS = {"X_train": "X_train", "y_train": "y_train",
                "X_test": "X_test", "y_test": "y_test"}
#: Optional entries naming the classes (an array of strings) and the dataset (a string).
CLASSES_KEYS = ("classes", "list_classes")
NAME_KEY = "name"

_SUFFIXES = {".npz": "npz", ".npy": "npy", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
             ".he5": "hdf5"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


# ------------------------------------------------------------------ readers

def _read_npy(fname, f, what, available):
    """Read one ``.npy`` array from ``f`` (a file or a zip member of ``available``
    bytes) after checking that its header's shape fits in those bytes."""
    try:
        dtype, shape, fortran, header = _filecheck.read_npy_header(f)
    except _filecheck.FileProblem as exc:
        raise DatasetError(f"{src(fname)}: {what} is {exc}.") from None
    nbytes = _filecheck.nbytes(dtype, shape)
    if header + nbytes > available:
        raise DatasetError(f"{src(fname)}: {what} declares shape {shape} ({nbytes} bytes) "
                           f"but only {max(available - header, 0)} bytes of data follow "
                           f"its header.")
    check_alloc(nbytes, fname, f"{what} {shape}")
    return _read_data(f, fname, what, dtype, shape, fortran)


def _read_data(f, fname, what, dtype, shape, fortran):
    """The array's bytes, read straight into a new (writeable) array."""
    arr = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    view = memoryview(arr.reshape(-1, order="A")).cast("B") if arr.size else memoryview(b"")
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise DatasetError(f"{src(fname)}: {what} is truncated ({done} of {len(view)} "
                               f"bytes).")
        done += n
    return arr


def _read_npz(fname, keys):
    """{role: array} from an ``.npz`` (a zip of ``.npy``), plus classes and name."""
    with open_regular(fname) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DatasetError(f"{src(fname)} is not a readable .npz archive: {exc}") from None
        with zf:
            try:
                _filecheck.check_zip(zf, size)
            except _filecheck.FileProblem as exc:
                raise DatasetError(f"{src(fname)}: {exc}.") from None
            members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
            out = {}
            wanted = list(keys.items()) + [("classes", k) for k in CLASSES_KEYS] + [
                (NAME_KEY, NAME_KEY)]
            for role, key in wanted:
                if key not in members or role in out:
                    continue
                info = members[key]
                try:
                    with zf.open(info) as f:
                        arr = _read_npy(fname, f, f"array {key!r}", info.file_size)
                except DatasetError:
                    raise
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                    raise DatasetError(f"{src(fname)}: cannot read {key!r}: {exc}") from None
                out[role] = arr
    return out, sorted(members)


def _read_hdf5(fname, keys):
    with open_h5(fname) as f:
        out = {}
        for role, key in keys.items():
            if key is not None and key in f:
                out[role] = read_array(f, key, fname, f"the array {role}")
        for key in CLASSES_KEYS:
            if key in f:
                out["classes"] = read_array(f, key, fname, "the class names")
                break
        name = f.attrs.get(NAME_KEY)
        if name is not None:
            out["name"] = np.asarray(name)
        return out, sorted(f.keys())


def _npy_pair_paths(path, y, X_test, y_test):
    """The files of a ``.npy`` dataset: given explicitly, or found next to ``path``.

    ``X_train.npy`` pairs with ``y_train.npy`` (and ``X_test.npy``/``y_test.npy`` in the
    same folder, if both exist); any ``X<rest>.npy`` pairs with ``y<rest>.npy``.
    """
    stem = path.stem if path.suffix == ".npy" else path.name
    if y is None:
        if not stem.startswith(("X", "x")):
            raise DatasetError(f"{src(path)}: a .npy file holds one array; give the labels "
                               f"with y='labels.npy', or name the files X<...>.npy and "
                               f"y<...>.npy side by side (e.g. X_train.npy, y_train.npy).")
        y = path.with_name("y" + stem[1:] + ".npy")
        if not y.is_file():
            raise DatasetError(f"{src(path)}: its labels file {str(y)!r} was not found; "
                               f"pass y='<labels>.npy'.")
        if X_test is None and y_test is None and stem[1:] == "_train":
            xt, yt = path.with_name(stem[0] + "_test.npy"), path.with_name("y_test.npy")
            if xt.is_file() and yt.is_file():
                X_test, y_test = xt, yt
    if (X_test is None) != (y_test is None):
        raise DatasetError(f"{src(path)}: X_test and y_test must be given together.")
    return y, X_test, y_test


def _read_npy_file(fname, what):
    with open_regular(fname) as f:
        return _read_npy(fname, f, what, os.fstat(f.fileno()).st_size)


# ------------------------------------------------------------------ checks

def _as_X(arr, fname, role, dtype):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{src(fname)}: {role} must hold numbers; got dtype {arr.dtype}.")
    if arr.ndim < 2:
        raise DatasetError(f"{src(fname)}: {role} must have shape (n_samples, n_features) "
                           f"(or (n_samples, ...) for images); got shape {arr.shape}.")
    n = arr.shape[0]
    d = int(np.prod(arr.shape[1:], dtype=np.int64))
    if d == 0:
        raise DatasetError(f"{src(fname)}: {role} has shape {arr.shape}: zero features.")
    check_alloc(n * d * np.dtype(dtype).itemsize, fname, f"{role} as {np.dtype(dtype).name}")
    X = np.ascontiguousarray(arr.reshape(n, d), dtype=dtype)
    if not np.isfinite(X).all():
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise DatasetError(f"{src(fname)}: {role} contains {bad} NaN or infinite value(s) "
                           f"(after conversion to {np.dtype(dtype).name}).")
    return X


def _as_y(arr, n, fname, role):
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DatasetError(f"{src(fname)}: {role} must be a 1-D array of labels; got shape "
                           f"{arr.shape}.")
    if arr.shape[0] != n:
        raise DatasetError(f"{src(fname)}: {role} has {arr.shape[0]} labels for {n} "
                           f"samples.")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and np.all(arr == np.round(arr))):
            raise DatasetError(f"{src(fname)}: {role} must hold integer class labels; "
                               f"found non-integer values.")
    elif arr.dtype.kind not in "biu":
        raise DatasetError(f"{src(fname)}: {role} must hold integer class labels; got "
                           f"dtype {arr.dtype}.")
    y = arr.astype(np.int64)
    if y.size and y.min() < 0:
        raise DatasetError(f"{src(fname)}: {role} holds negative labels (min {y.min()}); "
                           f"labels must be 0, 1, ..., n_classes - 1.")
    return np.ascontiguousarray(y)


def _as_classes(value, fname):
    flat = np.asarray(value).reshape(-1)
    out = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in flat.tolist())
    if len(out) < 2 or len(set(out)) != len(out):
        raise DatasetError(f"{src(fname)}: the class names must be at least 2 distinct "
                           f"strings; got {out!r}.")
    return out


def _as_name(value, fname):
    v = np.asarray(value)
    v = v.item() if v.ndim == 0 else (v.reshape(-1)[0].item() if v.size == 1 else None)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str) or not v:
        raise DatasetError(f"{src(fname)}: its 'name' entry must be a non-empty string.")
    return v


# ------------------------------------------------------------------ API

def load_file(path, *, name=None, dtype=np.float64, y=None, X_test=None, y_test=None,
              keys=None):
    """Load your own dataset from a ``.npz``, ``.npy`` or HDF5 file.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its format is told by its first bytes (zip, ``.npy``, HDF5), else by
        its suffix:

        - ``.npz``: arrays ``X_train``, ``y_train`` and optionally ``X_test``, ``y_test``
          (as written by ``np.savez(f, X_train=..., y_train=..., ...)``); optional
          ``classes`` (strings) and ``name`` (a string);
        - ``.npy``: the inputs; the labels come from ``y=`` or, by default, from the
          file next to it whose name starts with ``y`` instead of ``X``
          (``X_train.npy`` -> ``y_train.npy``, ``X.npy`` -> ``y.npy``); next to
          ``X_train.npy``, ``X_test.npy`` and ``y_test.npy`` are the test split;
        - HDF5 (``.h5``, ``.hdf5``): datasets named like the ``.npz`` arrays; optional
          ``classes`` (or ``list_classes``) dataset and ``name`` attribute.
    name : str, optional
        Name of the dataset (in tables and figures). Default: the file's ``name`` entry,
        else the file name without its suffix.
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``. Values are used as stored (no
        scaling); inputs with more than 2 dimensions are flattened per sample.
    y, X_test, y_test : str or os.PathLike, optional
        For ``.npy`` input: the labels file and the test-split files.
    keys : dict, optional
        For ``.npz``/HDF5 input: other names for the arrays, e.g.
        ``{"X_train": "train_set_x", "y_train": "train_set_y"}`` (missing roles keep
        their default names).

    Returns
    -------
    Dataset
        ``classes`` from the file, else ``('0', ..., str(max label))``. Without a test
        split, ``X_test`` has shape ``(0, n_features)`` and ``y_test`` shape ``(0,)``.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    DatasetError
        Naming the file, for every unusable input: unknown format, missing arrays,
        shapes that do not match, arrays declaring more bytes than the file holds,
        non-numeric or non-finite inputs, zero features, non-integer or negative
        labels, labels beyond the class names.
    """
    owner = "load_file"
    dtype = check_dtype(dtype, owner)
    path = check_path(path, owner)
    if path is None:
        raise TypeError(f"The 'path' parameter of {owner} must be a str or an os.PathLike. "
                        f"Got None instead.")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"The 'name' parameter of {owner} must be a non-empty str or None. "
                         f"Got {name!r} instead.")
    if keys is not None and not (isinstance(keys, dict) and set(keys) <= set(DEFAULT_KEYS)
                                 and all(isinstance(v, str) for v in keys.values())):
        raise ValueError(f"The 'keys' parameter of {owner} must be a dict from "
                         f"{sorted(DEFAULT_KEYS)} to array names. Got {keys!r} instead.")
    keys = {**DEFAULT_KEYS, **(keys or {})}
    extra = {k: check_path(v, owner, k) for k, v in
             (("y", y), ("X_test", X_test), ("y_test", y_test))}
    if path.is_dir():
        path = path / "X_train.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{src(path.parent)} is a folder; load_file needs a "
                                    f"file (.npz, .npy or HDF5), or a folder holding "
                                    f"X_train.npy and y_train.npy.")
    if not path.exists():
        raise FileNotFoundError(f"{src(path)} does not exist.")

    with open_regular(path) as f:
        magic = f.read(8)
    if magic.startswith(_HDF5_MAGIC):
        fmt = "hdf5"
    elif magic[:4] in _ZIP_MAGIC:
        fmt = "npz"
    elif magic.startswith(_NPY_MAGIC):
        fmt = "npy"
    elif _SUFFIXES.get(path.suffix.lower()) == "hdf5":
        fmt = "hdf5"        # h5py also finds the signature after a user block
    else:
        raise DatasetError(f"{src(path)} is not a .npz, .npy or HDF5 file (its first "
                           f"bytes are {magic!r}).")
    if fmt != "npy" and any(v is not None for v in extra.values()):
        raise ValueError(f"y, X_test and y_test of {owner} are for .npy files; {src(path)} "
                         f"is a {fmt} file (use keys= to name its arrays).")

    if fmt == "npy":
        ypath, xt, yt = _npy_pair_paths(path, extra["y"], extra["X_test"], extra["y_test"])
        arrays = {"X_train": _read_npy_file(path, "the input array"),
                  "y_train": _read_npy_file(ypath, "the label array")}
        where = {"X_train": path, "y_train": ypath}
        if xt is not None:
            arrays["X_test"] = _read_npy_file(xt, "the test input array")
            arrays["y_test"] = _read_npy_file(yt, "the test label array")
            where.update(X_test=xt, y_test=yt)
        holds = None
    else:
        arrays, holds = (_read_npz if fmt == "npz" else _read_hdf5)(path, keys)
        where = dict.fromkeys(("X_train", "y_train", "X_test", "y_test"), path)
    missing = [keys[r] for r in ("X_train", "y_train") if r not in arrays]
    if missing:
        raise DatasetError(f"{src(path)} lacks the array(s) "
                           f"{', '.join(repr(m) for m in missing)} (it holds "
                           f"{', '.join(repr(h) for h in holds) or 'nothing'}); name them "
                           f"X_train/y_train[/X_test/y_test] or pass keys=.")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise DatasetError(f"{src(path)} has only one of {keys['X_test']!r} and "
                           f"{keys['y_test']!r}; give both or neither.")

    Xtr = _as_X(arrays["X_train"], where["X_train"], "X_train", dtype)
    ytr = _as_y(arrays["y_train"], Xtr.shape[0], where["y_train"], "y_train")
    if Xtr.shape[0] == 0:
        raise DatasetError(f"{src(where['X_train'])}: X_train holds no samples.")
    if "X_test" in arrays:
        Xte = _as_X(arrays["X_test"], where["X_test"], "X_test", dtype)
        yte = _as_y(arrays["y_test"], Xte.shape[0], where["y_test"], "y_test")
        if Xte.shape[1] != Xtr.shape[1]:
            raise DatasetError(f"{src(where['X_test'])}: X_test has {Xte.shape[1]} features "
                               f"per sample but X_train has {Xtr.shape[1]}.")
    else:
        Xte = np.empty((0, Xtr.shape[1]), dtype=dtype)
        yte = np.empty(0, dtype=np.int64)
    top = int(max(ytr.max(initial=0), yte.max(initial=0)))
    if "classes" in arrays:
        classes = _as_classes(arrays["classes"], path)
        if top >= len(classes):
            raise DatasetError(f"{src(path)}: labels go up to {top} but the file names "
                               f"only {len(classes)} classes.")
    else:
        classes = tuple(str(k) for k in range(max(top + 1, 2)))
    if name is None:
        name = _as_name(arrays["name"], path) if "name" in arrays else Path(path).stem
    return Dataset(X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte, name=name,
                   classes=classes)
