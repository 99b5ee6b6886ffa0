"""Reading arrays from HDF5 files without trusting their declared shapes.

An HDF5 dataset declares a shape; its bytes may never have been written (the library
then returns the fill value, so a 4 KB file can "hold" gigabytes of zeros), or live in
other files (external storage, virtual datasets). Before reading, :func:`read_array`
checks that every byte the shape declares is stored in this file: contiguous storage at
least as large as the data, all chunks of a chunked dataset written, compressed chunks
within ``MAX_DECOMPRESSION_RATIO`` of their stored size, and the result within the
memory limit.
"""
import math

import numpy as np

from .._layout import format_bytes
from ._base import (MAX_DECOMPRESSION_RATIO, DatasetError, check_alloc, declared_bytes,
                    max_expanded, open_regular, src)


def open_h5(fname):
    """An open ``h5py.File`` (read-only) or a DatasetError naming the file."""
    import h5py

    open_regular(fname).close()     # a FIFO or a device is refused before h5py blocks
    try:
        return h5py.File(fname, "r")
    except OSError as exc:
        raise DatasetError(f"{src(fname)} is not a readable HDF5 file: {exc}") from None


def check_stored(dset, fname, key):
    """Raise DatasetError unless all the bytes ``dset`` declares are in the file."""
    import h5py

    shape, itemsize = dset.shape, dset.dtype.itemsize
    if shape is None:
        raise DatasetError(f"{src(fname)}: dataset {key!r} is empty (null dataspace).")
    nbytes = declared_bytes(shape, itemsize)
    if dset.is_virtual or dset.external:
        raise DatasetError(f"{src(fname)}: dataset {key!r} keeps its data in other files "
                           f"(virtual or external storage); poswise reads only data "
                           f"stored in the file itself.")
    stored = dset.id.get_storage_size()
    layout = dset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CHUNKED:
        chunks = dset.chunks
        needed = math.prod(-(-int(s) // int(c)) for s, c in zip(shape, chunks))
        written = dset.id.get_num_chunks() if needed else 0
        if written < needed:
            raise DatasetError(f"{src(fname)}: dataset {key!r} declares shape {shape} "
                               f"({format_bytes(nbytes)}) but only {written} of its "
                               f"{needed} chunks were ever written; the file is incomplete "
                               f"or corrupt.")
        if nbytes > max_expanded(stored):
            raise DatasetError(f"{src(fname)}: dataset {key!r} declares shape {shape} "
                               f"({format_bytes(nbytes)}) stored in "
                               f"{format_bytes(stored)}, more than "
                               f"{MAX_DECOMPRESSION_RATIO} times its stored size; refused as "
                               f"corrupt.")
    elif layout == h5py.h5d.CONTIGUOUS and stored < nbytes:
        raise DatasetError(f"{src(fname)}: dataset {key!r} declares shape {shape} "
                           f"({format_bytes(nbytes)}) but the file stores only "
                           f"{format_bytes(stored)} of it; the file is incomplete or "
                           f"corrupt.")
    return nbytes


def read_array(f, key, fname, what="array"):
    """Read dataset ``key`` of the open file ``f`` after checking its declared size."""
    import h5py

    obj = f.get(key)
    if obj is None:
        raise DatasetError(f"{src(fname)} has no dataset {key!r} (it holds "
                           f"{', '.join(repr(k) for k in f.keys()) or 'nothing'}).")
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(f"{src(fname)}: {key!r} is a group, not an array.")
    nbytes = check_stored(obj, fname, key)
    check_alloc(nbytes, fname, f"{what} {key!r} {obj.shape}")
    try:
        return np.asarray(obj[()])
    except (OSError, TypeError, ValueError) as exc:
        raise DatasetError(f"{src(fname)}: cannot read {key!r}: {exc}") from None
