"""CIFAR-10: the python-pickle batches (read with a restricted unpickler) and the
binary batches.

Pickles are never run: only dicts, lists, bytes, numbers and numpy arrays can be built,
numpy arrays only the way numpy itself pickles them (``_reconstruct`` of an empty array
then its bytes, or ``_frombuffer`` of in-band bytes), so an array's bytes are always in
the file. ``bytes(n)``/``bytearray(n)`` with an integer (which would allocate ``n``
zero bytes) and direct ``ndarray(shape, ..., strides)`` calls (stride-0 views declaring
huge arrays over a few bytes) are refused, and every array is checked against the file
size before it is converted.
"""
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .._layout import check_dtype
from ._base import (MAX_DECOMPRESSION_RATIO, DatasetError, check_alloc, check_bool,
                    check_labels, check_path, make_dataset, max_expanded, pixels_to_float,
                    read_whole,
                    src)
from . import _download
from ._home import candidate_dirs, get_data_home, missing_error

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PIXELS = 3 * 32 * 32


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: it may be passed to ``_reconstruct``
    (how numpy pickles arrays) but not called (``ndarray(shape, dtype, buffer, offset,
    strides)`` could declare a huge stride-0 array over a few bytes)."""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("refusing a direct numpy.ndarray(...) call: arrays "
                                     "must be pickled the way numpy pickles them")


_NDARRAY = _NdarrayToken()


def _no_int_size(kind):
    """``bytes``/``bytearray`` without the ``kind(n)`` form that allocates n bytes."""
    def build(*args):
        if args and not isinstance(args[0], (bytes, bytearray, str, list, tuple)):
            raise pickle.UnpicklingError(f"refusing {kind.__name__}(<"
                                         f"{type(args[0]).__name__}>), which would "
                                         f"allocate a buffer the file does not hold")
        return kind(*args)
    return build


def _allowed_pickle_globals():
    a = np.zeros(1, dtype=np.uint8)
    reconstruct = a.__reduce__()[0]
    frombuffer = a.__reduce_ex__(5)[0]
    scalar = np.uint8(0).__reduce__()[0]
    import _codecs

    def safe_reconstruct(cls, shape, dtype):
        if cls is not _NDARRAY or tuple(shape) != (0,):
            raise pickle.UnpicklingError("refusing an array reconstruction that numpy "
                                         "itself never pickles")
        return reconstruct(np.ndarray, (0,), dtype)

    allowed = {
        ("_codecs", "encode"): _codecs.encode,
        ("builtins", "bytes"): _no_int_size(bytes),
        ("builtins", "bytearray"): _no_int_size(bytearray),
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "tuple"): tuple,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = safe_reconstruct
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
    data = read_whole(fname)
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
    src_ = src(fname)
    d = _unpickle(fname)
    if not isinstance(d, dict):
        raise DatasetError(f"{src_}: expected a dict, got {type(d).__name__}.")
    data, labels = _get_key(d, "data"), _get_key(d, "labels")
    if data is None or labels is None:
        raise DatasetError(f"{src_}: the batch lacks the key b'data' or b'labels'.")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_PIXELS):
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DatasetError(f"{src_}: b'data' must be a uint8 array of shape "
                           f"(n, {_CIFAR_PIXELS}); got {desc}.")
    size = os.path.getsize(fname)
    if data.nbytes > size:
        # numpy pickles an array's bytes whole: an array larger than its file is a lie
        raise DatasetError(f"{src_}: b'data' declares shape {data.shape} "
                           f"({data.nbytes} bytes) but the file holds only {size} bytes.")
    if isinstance(labels, (list, tuple)) and len(labels) > size:
        raise DatasetError(f"{src_}: b'labels' declares {len(labels)} labels in a "
                           f"{size}-byte file.")
    try:
        lab = np.asarray(labels)
    except Exception:
        lab = np.asarray([], dtype=object)
    if lab.ndim != 1 or lab.dtype.kind not in "ui":
        raise DatasetError(f"{src_}: b'labels' must be a list of ints.")
    if lab.shape[0] != data.shape[0]:
        raise DatasetError(f"{src_}: {lab.shape[0]} labels for {data.shape[0]} images.")
    return data, lab


def _read_cifar_bin_batch(fname):
    raw = read_whole(fname)
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
    return candidate_dirs(path, subs)


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
    where = src(tar_path)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        try:
            tf = tarfile.open(tar_path, "r:*")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{where} is not a readable tar archive: {exc}") from None
        with tf:
            try:
                members = tf.getmembers()
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise DatasetError(f"{where} is a corrupt tar archive: {exc}") from None
            root = tmp.resolve()
            total = sum(m.size for m in members if m.isfile())
            archive = os.path.getsize(tar_path)
            if total > max_expanded(archive):
                raise DatasetError(f"{where}: its members declare {total} bytes, more than "
                                   f"{MAX_DECOMPRESSION_RATIO} times the archive's "
                                   f"{archive}; refused as corrupt.")
            for m in members:
                name = m.name
                dest = (root / name).resolve()
                if (name.startswith(("/", "\\")) or os.path.isabs(name)
                        or ".." in Path(name).parts or (dest != root and root not in dest.parents)):
                    raise DatasetError(f"{where}: refusing to extract {name!r}, a path "
                                       f"outside the target folder.")
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{where}: refusing to extract {name!r}, which is "
                                       f"not a regular file or folder.")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            try:
                tf.extractall(tmp, members=members, **kwargs)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise DatasetError(f"{where}: extraction failed: {exc}") from None
        extracted = tmp / _CIFAR_PY_DIR
        if not extracted.is_dir():
            raise DatasetError(f"{where} does not contain a '{_CIFAR_PY_DIR}/' folder.")
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
    path = check_path(path, owner)
    download_ = check_bool(download, "download", owner)
    dirs = _cifar_dirs(path)
    found, best = _scan_cifar(dirs)
    if found is None and download_:
        urls = _download.check_base_urls(base_url, "cifar10", owner)
        target = get_data_home(path) / "cifar10"
        tar_path = target / _CIFAR_TAR
        if not tar_path.is_file():
            _download.download(_CIFAR_TAR, urls, target, "CIFAR-10", "cifar10", path,
                               "cifar10")
        else:
            _download.verify_md5(tar_path, _download.file_key("cifar10", _CIFAR_TAR))
        _safe_extract_cifar(tar_path, target)
        found, best = _scan_cifar(dirs)
    if found is None:
        expected = [", ".join(_CIFAR_BATCHES) + " (python format, e.g. in "
                    f"{_CIFAR_PY_DIR}/)", "or the same names with '.bin' (binary format, "
                    f"e.g. in {_CIFAR_BIN_DIR}/)"]
        raise missing_error("CIFAR-10", expected, dirs, best, get_data_home(path),
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
        parts_X.append(data)
        parts_y.append(check_labels(lab, data.shape[0], len(classes), src(folder / n)))
    check_alloc(sum(p.size for p in parts_X) * np.dtype(dtype).itemsize, folder,
                "the float images")
    Xtr = pixels_to_float(np.concatenate(parts_X[:5]), dtype, src(folder))
    Xte = pixels_to_float(parts_X[5], dtype, src(folder / names[5]))
    ytr = np.concatenate(parts_y[:5])
    return make_dataset(Xtr, ytr, Xte, parts_y[5], "cifar10", classes, src(folder))
