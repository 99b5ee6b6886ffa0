"""The datasets as the experiments and the command line see them: through
:mod:`poswise.datasets`' registry (``DATASETS``, ``load``, ``load_file``).

Until that registry lands, a temporary adapter over the per-dataset loaders stands in for
it (marked below); nothing else in the presentation layer loads a dataset by name.
"""
import numpy as np

from .. import datasets as _ds

__all__ = ["dataset_names", "load_dataset", "load_file"]


def dataset_names():
    """Names ``load_dataset`` accepts, in the registry's order."""
    if hasattr(_ds, "DATASETS"):
        return tuple(_ds.DATASETS)
    return tuple(_COMPAT)                       # temporary adapter


def load_dataset(name, data_dir=None, *, dtype=np.float64, download=False):
    """``poswise.datasets.load(name, data_dir, dtype=dtype, download=download)``."""
    if hasattr(_ds, "load"):
        return _ds.load(name, data_dir, dtype=dtype, download=download)
    # --- temporary adapter, until poswise.datasets.load lands -------------------------
    if name not in _COMPAT:
        raise ValueError(f"unknown dataset {name!r}; expected one of "
                         f"{', '.join(_COMPAT)}.")
    if name == "synthetic":
        return _ds.make_synthetic(rng=0, dtype=dtype)
    if name == "cat":
        if download:
            raise ValueError("the cat dataset has no official download; place its files "
                             "in the data folder.")
        return _ds.load_cat(data_dir, dtype=dtype)
    return _COMPAT[name](data_dir, dtype=dtype, download=download)


def load_file(path, *, name=None, dtype=np.float64):
    """``poswise.datasets.load_file(path, name=name, dtype=dtype)``: your own data."""
    if hasattr(_ds, "load_file"):
        return _ds.load_file(path, name=name, dtype=dtype)
    # --- temporary adapter: .npz with X_train, y_train[, X_test, y_test] only ----------
    import os
    if not str(path).endswith(".npz"):
        raise ValueError(f"{path}: this version reads .npz files only.")
    with np.load(path, allow_pickle=False) as z:
        Xtr, ytr = z["X_train"], z["y_train"]
        Xte, yte = (z["X_test"], z["y_test"]) if "X_test" in z else (Xtr[:0], ytr[:0])
    classes = tuple(str(k) for k in range(int(max(ytr.max(), 1)) + 1))
    label = name or os.path.splitext(os.path.basename(str(path)))[0]
    return _ds.Dataset(np.ascontiguousarray(Xtr, dtype=dtype), ytr.astype(np.int64),
                       np.ascontiguousarray(Xte, dtype=dtype), yte.astype(np.int64),
                       label, classes)


# Temporary adapter: the per-dataset loaders (replaced by poswise.datasets.DATASETS).
_COMPAT = {"synthetic": None, "cat": None, "mnist": _ds.load_mnist,
           "cifar10": _ds.load_cifar10}
