"""Rows of data stored plainly in a file, read without a copy: a ``.npy`` file read by
rows (:class:`NpyRows`) and the mapping of blocks of rows straight from a file
(:class:`FileRows`), for ``.npy`` files and uncompressed HDF5 datasets (:func:`file_rows`).
The block reader (:mod:`poswise._streaming`) uses them.
"""
import bisect
import mmap
import os

import numpy as np

__all__ = ["NpyRows", "FileRows", "file_rows", "MIN_EXTENT_BYTES"]


class NpyRows:
    """Rows of a 2-D ``.npy`` file read with plain file reads (no memory map).

    A memory map of a file larger than an address-space limit (``ulimit -v``) cannot be
    created at all, and its resident pages are charged to the process; this reads each
    requested row range with one ``readinto`` instead. Has ``shape``, ``dtype`` and row
    slicing (``rows[lo:hi]``), so :class:`BlockReader` takes it like a memmap.
    """

    def __init__(self, path):
        from numpy.lib import format as npformat
        self.path = path
        with open(path, "rb") as f:
            major, _ = npformat.read_magic(f)
            read_header = (npformat.read_array_header_1_0 if major == 1
                           else npformat.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{path} must hold a C-ordered 2-D numeric array to be read by "
                             f"rows; it holds shape {shape}, "
                             f"{'Fortran' if fortran else 'C'} order, dtype {dtype}.")
        self.shape, self.dtype = tuple(shape), dtype
        self._row_bytes = shape[1] * dtype.itemsize

    def file_rows(self):
        """The rows as a :class:`FileRows` (mapped block by block), or None."""
        return FileRows(self.path, [(0, self.shape[0], self.offset)], self.shape,
                        self.dtype)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyRows supports contiguous row slices rows[lo:hi] only.")
        lo, hi, _ = key.indices(self.shape[0])
        out = np.empty((max(0, hi - lo), self.shape[1]), dtype=self.dtype)
        if out.size == 0:
            return out
        with open(self.path, "rb") as f:
            f.seek(self.offset + lo * self._row_bytes)
            if f.readinto(out.reshape(-1).view(np.uint8)) != out.nbytes:
                raise ValueError(f"{self.path} is truncated: rows [{lo}, {hi}) are missing.")
        return out


class FileRows:
    """Rows of a 2-D C-ordered array of a native numeric dtype stored in a file, read by
    mapping each block of rows on its own.

    The rows lie in one or more *extents* ``(row_lo, row_hi, byte_offset)`` (an HDF5
    dataset's chunks come in runs separated by the file's own metadata); a block must
    not cross an extent's end (:meth:`extent_ends`). ``rows(lo, hi)`` maps just those
    rows read-only with ``MAP_POPULATE`` (the page-cache pages are entered in one system
    call, not faulted one by one) and returns them as an array. No copy is made.

    ``keep``: keep each block's mapping for the next pass (as a memmap of the whole file
    would: no mapping and no page-table work per epoch). By default only when the address
    space is unlimited; under ``ulimit -v`` a mapping ends when its block is dropped, so
    only the blocks alive at a time take address space.
    """

    def __init__(self, path, extents, shape, dtype, keep=None):
        self.path = os.fspath(path)
        self.extents = [(int(a), int(b), int(o)) for a, b, o in extents]
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), np.dtype(dtype)
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        self._starts = [a for a, _, _ in self.extents]
        if keep is None:
            import resource
            keep = resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
        self.keep, self._maps = bool(keep), {}
        self._fd = os.open(self.path, os.O_RDONLY)
        end = max(o + (b - a) * self._row_bytes for a, b, o in self.extents)
        if os.fstat(self._fd).st_size < end:
            self.close()
            raise ValueError(f"{self.path} is truncated: its {self.shape[0]} rows end at "
                             f"byte {end}, beyond the end of the file.")

    def extent_ends(self):
        """The rows at which an extent ends (the last is ``n_rows``)."""
        return [b for _, b, _ in self.extents]

    def rows(self, lo, hi):
        block = self._maps.get((lo, hi))
        if block is not None:
            return block
        a, b, offset = self.extents[bisect.bisect_right(self._starts, lo) - 1]
        if not a <= lo < hi <= b:
            raise ValueError(f"rows [{lo}, {hi}) cross the end of a stored extent "
                             f"[{a}, {b}) of {self.path}.")
        start = offset + (lo - a) * self._row_bytes
        delta = start % mmap.ALLOCATIONGRANULARITY
        length = (hi - lo) * self._row_bytes + delta
        m = mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                      prot=mmap.PROT_READ, offset=start - delta)
        block = np.frombuffer(m, self.dtype, count=(hi - lo) * self.shape[1],
                              offset=delta).reshape(hi - lo, self.shape[1])
        if self.keep:
            self._maps[(lo, hi)] = block
        return block

    def release(self):
        """Forget the kept mappings (each ends with the last array using it)."""
        self._maps = {}

    def close(self):
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


#: Mapping an HDF5 dataset pays when its stored runs of rows are at least this large
#: (smaller ones would make tiny blocks); otherwise it is read through h5py.
MIN_EXTENT_BYTES = 1 << 20


def _h5_extents(ds):
    """The extents ``(row_lo, row_hi, byte_offset)`` of the rows of the h5py dataset
    ``ds`` in its file: one for a contiguous layout; for chunks of whole rows, the runs of
    chunks stored side by side in row order. None if the rows are not stored plainly
    (compressed, filtered, external, unallocated, chunks splitting rows) or the runs are
    small."""
    from h5py import h5d
    dcpl = ds.id.get_create_plist()
    if dcpl.get_nfilters() or dcpl.get_external_count():
        return None
    n, row_bytes = ds.shape[0], ds.shape[1] * ds.dtype.itemsize
    layout = dcpl.get_layout()
    if layout == h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        return None if offset is None else [(0, n, offset)]
    if layout != h5d.CHUNKED or ds.chunks[1] != ds.shape[1]:
        return None
    c = ds.chunks[0]
    chunks = []
    ds.id.chunk_iter(lambda info: chunks.append(
        (info.chunk_offset[0], info.byte_offset, info.size, info.filter_mask)))
    if len(chunks) != -(-n // c):
        return None                     # chunks never written: no bytes to map
    chunks.sort()
    extents = []
    for k, (row, where, size, mask) in enumerate(chunks):
        if row != k * c or size != c * row_bytes or mask:
            return None
        hi = min(row + c, n)
        if extents and extents[-1][1] == row and \
                extents[-1][2] + (row - extents[-1][0]) * row_bytes == where:
            extents[-1] = (extents[-1][0], hi, extents[-1][2])
        else:
            extents.append((row, hi, where))
    if n * row_bytes < MIN_EXTENT_BYTES * len(extents):
        return None
    return extents


def file_rows(X):
    """A :class:`FileRows` reading the rows of ``X`` without a copy, or None: for a
    :class:`NpyRows`, and for an h5py dataset of a file opened read-only with the default
    driver, 2-D, of a native numeric dtype, whose rows lie in the file as one C-ordered
    array or in large runs of whole-row chunks (see :func:`_h5_extents`)."""
    if not hasattr(mmap, "PROT_READ"):         # no POSIX mmap (Windows): read instead
        return None
    if isinstance(X, NpyRows):
        return X.file_rows()
    try:
        import h5py
    except ImportError:
        return None
    if not isinstance(X, h5py.Dataset):
        return None
    try:
        f = X.file
        if (f.mode != "r" or f.driver != "sec2" or X.ndim != 2 or not X.dtype.isnative
                or X.dtype.kind not in "biuf" or X.shape[0] < 1):
            return None
        extents = _h5_extents(X)
        return None if extents is None else FileRows(f.filename, extents, X.shape, X.dtype)
    except Exception:  # noqa: BLE001 -- an unusual file: read it through h5py instead
        return None
