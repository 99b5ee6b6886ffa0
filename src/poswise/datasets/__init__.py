"""Datasets: the loaders, your own files, and the one registry of dataset names.

Every loader returns a :class:`Dataset` in poswise's data layout: samples-first,
C-contiguous float arrays (``float64`` unless ``dtype=np.float32`` is asked for), pixel
values scaled to ``[0, 1]`` by dividing by 255, each image flattened in its stored order,
and integer labels as ``int64``.

- :data:`DATASETS` -- the registry: name -> :class:`DatasetInfo` (label for tables and
  figures, class names, loader); :func:`load` loads a dataset by name;
- :func:`load_cat` -- the "cat vs non-cat" HDF5 files (64x64x3 images, 2 classes);
- :func:`load_mnist`, :func:`load_fashion_mnist` -- the IDX files (28x28, 10 classes),
  gzipped or not, optionally downloaded;
- :func:`load_cifar10` -- the CIFAR-10 batches, python-pickle or binary format,
  optionally downloaded;
- :func:`make_synthetic` -- a small, seeded dataset labelled by a random teacher MLP;
- :func:`load_file` -- your own ``.npz``, ``.npy`` pair or HDF5 file.

Where the files are looked for
------------------------------
``path`` may be the folder that holds the files themselves, or a *data home* holding one
subfolder per dataset (``cat/``, ``mnist/``, ``fashion_mnist/``, ``cifar10/``). Without
``path`` the data home is the folder named by ``POSWISE_DATA``, else a per-user cache
folder (see :func:`get_data_home`); Fashion-MNIST is also looked for where Debian's
``dataset-fashion-mnist`` package installs it.

Errors
------
A missing file raises :class:`FileNotFoundError` naming the expected files, the folders
searched and ``POSWISE_DATA``. A file that is present but unusable (wrong magic number,
truncated archive, sizes that do not match or that the file cannot hold, missing keys,
forbidden pickle content...) raises :class:`DatasetError` (a :class:`ValueError`) naming
the file. A download that fails (no server, too slow, too large, incomplete) raises
:class:`DownloadError`, a :class:`ConnectionError` (hence an :class:`OSError`).
See docs/datasets.md.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._layout import check_dtype
from ._base import (MAX_DECOMPRESSION_RATIO, MAX_MEMORY_FRACTION, Dataset, DatasetError,
                    DownloadError, check_bool, check_path)
from ._cat import CAT_CLASSES, load_cat
from ._cifar import CIFAR10_CLASSES, load_cifar10
from ._download import (BASE_URLS, DOWNLOAD_DEADLINE, DOWNLOAD_MAX_BYTES,
                        DOWNLOAD_MIN_RATE, DOWNLOAD_SIZE_MARGIN, DOWNLOAD_TIMEOUT,
                        EXPECTED_SIZES, MD5_CHECKSUMS)
from ._files import load_file
from ._home import ENV_VAR, SYSTEM_DIRS, get_data_home
from ._idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from ._synthetic import SYNTHETIC_DEFAULTS, make_synthetic

__all__ = [
    "Dataset", "DatasetError", "DownloadError", "DatasetInfo", "DATASETS", "load",
    "load_file", "BASE_URLS", "MD5_CHECKSUMS", "EXPECTED_SIZES", "get_data_home",
    "load_cat", "load_mnist", "load_fashion_mnist", "load_cifar10", "make_synthetic",
    "SYNTHETIC_DEFAULTS",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of poswise knows about a dataset, in one place.

    Attributes
    ----------
    name : str
        The key (``Dataset.name`` of what the loader returns).
    label : str
        How tables and figures print it ("Fashion-MNIST").
    classes : tuple of str
        The class names (label ``k`` is ``classes[k]``).
    loader : callable
        ``loader(path, *, dtype, **kwargs) -> Dataset`` (``path`` is ignored by the
        synthetic dataset).
    downloadable : bool
        Whether ``download=True`` can fetch it.
    files : str
        The files it needs, for messages and documentation.
    n_features : int
        Features per sample of what the loader returns.
    """
    name: str
    label: str
    classes: tuple
    loader: Callable
    downloadable: bool
    files: str
    n_features: int


def _load_synthetic(path=None, *, dtype=np.float64):
    return make_synthetic(**SYNTHETIC_DEFAULTS, dtype=dtype)


#: The dataset registry: name -> :class:`DatasetInfo`. Read by :func:`load`, the command
#: line, ``compare`` and the plots.
DATASETS = {
    "synthetic": DatasetInfo("synthetic", "synthetic", ("0", "1"), _load_synthetic, False,
                             "none (generated, seeded)", SYNTHETIC_DEFAULTS["n_features"]),
    "cat": DatasetInfo("cat", "cat vs non-cat", CAT_CLASSES, load_cat, False,
                       "cat/CatClassificationTrain.h5, cat/CatClassificationVal.h5",
                       64 * 64 * 3),
    "mnist": DatasetInfo("mnist", "MNIST", MNIST_CLASSES, load_mnist, True,
                         "mnist/{train,t10k}-{images,labels}-idx*-ubyte[.gz]", 28 * 28),
    "fashion_mnist": DatasetInfo("fashion_mnist", "Fashion-MNIST", FASHION_MNIST_CLASSES,
                                 load_fashion_mnist, True,
                                 "fashion_mnist/{train,t10k}-{images,labels}-idx*-ubyte"
                                 "[.gz]", 28 * 28),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", CIFAR10_CLASSES, load_cifar10, True,
                           "cifar10/cifar-10-batches-py/ (or -bin/)", 32 * 32 * 3),
}


def load(name, data_dir=None, *, dtype=np.float64, download=False):
    """Load a registered dataset by name.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`: ``"synthetic"``, ``"cat"``, ``"mnist"``,
        ``"fashion_mnist"`` or ``"cifar10"`` (``"fashion-mnist"`` is accepted too).
    data_dir : str or os.PathLike, optional
        The folder holding the files, or a data home (see :func:`get_data_home`).
    dtype : {np.float64, np.float32}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``.
    download : bool, default=False
        Download missing files (MNIST, Fashion-MNIST, CIFAR-10). For the other datasets
        ``True`` raises ``ValueError``.

    Returns
    -------
    Dataset
    """
    owner = "load"
    key = name.replace("-", "_").lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"The 'name' parameter of {owner} must be one of "
                         f"{', '.join(repr(k) for k in DATASETS)}. Got {name!r} instead. "
                         f"For your own files use load_file(path).")
    info = DATASETS[key]
    dtype = check_dtype(dtype, owner)
    download = check_bool(download, "download", owner)
    data_dir = check_path(data_dir, owner, "data_dir")
    if download and not info.downloadable:
        raise ValueError(f"The {key!r} dataset cannot be downloaded (it has no official "
                         f"download); place its files ({info.files}) in the data home or "
                         f"pass data_dir.")
    if info.downloadable:
        return info.loader(data_dir, dtype=dtype, download=download)
    return info.loader(data_dir, dtype=dtype)
