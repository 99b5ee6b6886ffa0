"""The "cat vs non-cat" HDF5 files of the deeplearning.ai course."""
import numpy as np

from .._layout import check_dtype
from ._base import (DatasetError, check_alloc, check_labels, check_path, make_dataset,
                    pixels_to_float, src)
from ._h5 import check_stored, open_h5, read_array
from ._home import candidate_dirs, get_data_home, missing_error

CAT_CLASSES = ("non-cat", "cat")

_CAT_TRAIN = ("CatClassificationTrain.h5", "train_catvnoncat.h5")
_CAT_TEST = ("CatClassificationVal.h5", "test_catvnoncat.h5")


def _find_pair(d, train_names, test_names):
    tr = next((d / n for n in train_names if (d / n).is_file()), None)
    te = next((d / n for n in test_names if (d / n).is_file()), None)
    return tr, te


def _read_h5(fname, x_key, y_key, dtype):
    with open_h5(fname) as f:
        missing = [k for k in (x_key, y_key) if k not in f]
        if missing:
            raise DatasetError(f"{src(fname)} lacks the dataset key(s) "
                               f"{', '.join(repr(k) for k in missing)} (it holds "
                               f"{', '.join(repr(k) for k in f.keys()) or 'nothing'}).")
        xd = f[x_key]
        if not hasattr(xd, "shape") or xd.shape is None or len(xd.shape) < 2 \
                or xd.shape[0] == 0:
            raise DatasetError(f"{src(fname)}: {x_key!r} must be an array of images "
                               f"(n, ...), got shape {getattr(xd, 'shape', None)}.")
        if int(np.prod(xd.shape[1:], dtype=object)) == 0:
            raise DatasetError(f"{src(fname)}: {x_key!r} has shape {xd.shape}: its images "
                               f"have no pixels (zero features).")
        check_stored(xd, fname, x_key)          # unwritten chunks first: the precise reason
        check_alloc(int(np.prod(xd.shape, dtype=object)) * np.dtype(dtype).itemsize, fname,
                    f"the float images {x_key!r}")
        x = read_array(f, x_key, fname, "the images")
        y = read_array(f, y_key, fname, "the labels")
        classes = (read_array(f, "list_classes", fname, "the class names")
                   if "list_classes" in f else None)
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
        raise DatasetError(f"{src(fname)}: 'list_classes' must name at least 2 classes, "
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
        ``test_set_x``/``test_set_y``), holds inconsistent arrays, images without
        pixels, or declares arrays its bytes do not hold.

    Notes
    -----
    The files hold ``train_set_x`` (209, 64, 64, 3) uint8, ``train_set_y`` (209,),
    ``test_set_x``, ``test_set_y`` and ``list_classes`` (e.g. ``[b'non-cat', b'cat']``).
    """
    owner = "load_cat"
    dtype = check_dtype(dtype, owner)
    path = check_path(path, owner)
    dirs = candidate_dirs(path, ["cat"])
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
        raise missing_error("Cat", expected, dirs, best, get_data_home(path), "cat", False)

    xtr, ytr, ctr = _read_h5(tr, "train_set_x", "train_set_y", dtype)
    xte, yte, cte = _read_h5(te, "test_set_x", "test_set_y", dtype)
    classes = _decode_classes(ctr, tr) or _decode_classes(cte, te) or CAT_CLASSES
    Xtr = pixels_to_float(xtr, dtype, src(tr))
    Xte = pixels_to_float(xte, dtype, src(te))
    ytr = check_labels(ytr, Xtr.shape[0], len(classes), src(tr))
    yte = check_labels(yte, Xte.shape[0], len(classes), src(te))
    return make_dataset(Xtr, ytr, Xte, yte, "cat", classes, f"{src(tr)} and {src(te)}")
