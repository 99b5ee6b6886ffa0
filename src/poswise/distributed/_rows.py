"""Which rows of the data a rank owns, loaders that read only those rows, and the split of
independent tasks (a comparison grid) over the ranks."""
from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = ["rows_for_rank", "rank_and_size", "load_npy_rows", "load_h5_rows",
           "load_rows", "load_dataset_rows", "share_of", "gather_shares"]


def _check_int(value, name, low):
    if not (isinstance(value, Integral) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"The {name!r} parameter of rows_for_rank must be an int >= {low}. "
                         f"Got {value!r} instead.")
    return int(value)


def rows_for_rank(n, rank, size):
    """The contiguous block of rows ``slice(lo, hi)`` that ``rank`` of ``size`` owns.

    Balanced: the first ``n % size`` ranks own ``n // size + 1`` rows, the others
    ``n // size``; the blocks are in rank order and cover ``0..n-1`` exactly once.
    """
    n = _check_int(n, "n", 0)
    size = _check_int(size, "size", 1)
    rank = _check_int(rank, "rank", 0)
    if rank >= size:
        raise ValueError(f"The 'rank' parameter of rows_for_rank must be < size ({size}). "
                         f"Got {rank} instead.")
    q, r = divmod(n, size)
    lo = rank * q + min(rank, r)
    return slice(lo, lo + q + (rank < r))


def rank_and_size(comm=None, rank=None, size=None):
    """(rank, size) from a communicator, or the given pair (both or neither)."""
    if comm is not None:
        if rank is not None or size is not None:
            raise ValueError("give either comm or rank and size, not both.")
        return comm.Get_rank(), comm.Get_size()
    if rank is None or size is None:
        raise ValueError("give a communicator (comm=) or both rank= and size=.")
    return rank, size


def _row_error(n, size):
    if n < size:
        raise ValueError(f"the data have {n} rows, fewer than the {size} ranks: every rank "
                         f"needs at least one row. Use fewer ranks.")


def load_npy_rows(path, comm=None, *, rank=None, size=None, mmap=False):
    """This rank's rows of the array stored in the ``.npy`` file ``path``.

    The file is memory-mapped, so only this rank's rows are read. ``mmap=True`` returns
    the read-only memmap of those rows (for data larger than memory, streamed by the
    trainer); otherwise an in-memory copy.
    """
    rank, size = rank_and_size(comm, rank, size)
    arr = np.load(path, mmap_mode="r")
    if arr.ndim < 1:
        raise ValueError(f"{path} holds a 0-d array; expected rows of samples.")
    _row_error(arr.shape[0], size)
    part = arr[rows_for_rank(arr.shape[0], rank, size)]
    return part if mmap else np.array(part)


def load_h5_rows(path, key, comm=None, *, rank=None, size=None):
    """This rank's rows of the HDF5 dataset ``key`` of the file ``path`` (an in-memory
    array read by dataset slicing: only those rows are read)."""
    import h5py
    rank, size = rank_and_size(comm, rank, size)
    with h5py.File(path, "r") as f:
        if key not in f:
            raise KeyError(f"{path} has no dataset {key!r}; it holds {sorted(f.keys())}.")
        ds = f[key]
        if ds.ndim < 1:
            raise ValueError(f"{path}[{key!r}] is a scalar; expected rows of samples.")
        _row_error(ds.shape[0], size)
        return ds[rows_for_rank(ds.shape[0], rank, size)]


H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def load_rows(path, comm=None, *, key=None, rank=None, size=None):
    """This rank's rows of a ``.npy`` file or of dataset ``key`` of an HDF5 file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        return load_npy_rows(path, comm, rank=rank, size=size)
    if suffix in H5_SUFFIXES:
        if key is None:
            raise ValueError(f"reading {path} needs key= (the HDF5 dataset's name).")
        return load_h5_rows(path, key, comm, rank=rank, size=size)
    raise ValueError(f"cannot read rows of {path}: expected a .npy file or an HDF5 file "
                     f"({', '.join(H5_SUFFIXES)}); got suffix {suffix!r}.")


def load_dataset_rows(name, comm=None, *, rank=None, size=None, **kwargs):
    """A built-in dataset (:mod:`poswise.datasets`) whose training split holds only this
    rank's rows; the test split is whole on every rank (validation is global).

    ``name`` is ``"cat"``, ``"mnist"``, ``"cifar10"`` or ``"synthetic"``; ``kwargs`` go to
    its loader (a synthetic set must use the same ``rng`` on every rank).
    """
    from dataclasses import replace

    from .. import datasets
    loaders = {"cat": datasets.load_cat, "mnist": datasets.load_mnist,
               "cifar10": datasets.load_cifar10, "synthetic": datasets.make_synthetic}
    if name not in loaders:
        raise ValueError(f"The 'name' parameter of load_dataset_rows must be one of "
                         f"{sorted(loaders)}. Got {name!r} instead.")
    rank, size = rank_and_size(comm, rank, size)
    ds = loaders[name](**kwargs)
    _row_error(ds.n_train, size)
    rows = rows_for_rank(ds.n_train, rank, size)
    return replace(ds, X_train=np.ascontiguousarray(ds.X_train[rows]),
                   y_train=np.ascontiguousarray(ds.y_train[rows]))


def share_of(items, comm=None, *, rank=None, size=None):
    """This rank's share of a list of independent tasks (``poswise compare --mpi``: the
    seed x lr x optimizer grid): ``[(index, item), ...]`` for every ``size``-th item from
    ``rank`` on, so long and short tasks mix on every rank."""
    rank, size = rank_and_size(comm, rank, size)
    items = list(items)
    return [(i, items[i]) for i in range(rank, len(items), size)]


def gather_shares(comm, pairs, root=0):
    """On ``root``: the results of :func:`share_of`'s tasks from every rank, as one list
    in task order (``pairs`` are ``(index, result)``); None on the other ranks."""
    parts = comm.gather(list(pairs), root=root)
    if comm.Get_rank() != root:
        return None
    merged = sorted((p for part in parts for p in part), key=lambda p: p[0])
    return [result for _, result in merged]
