"""Row blocks of data larger than memory: the reader the streamed epochs consume.

``X`` may be an ``np.memmap``, an ``h5py.Dataset`` or any object with a 2-D ``shape``, a
``dtype`` and row slicing (``X[lo:hi]`` gives an array-like of those rows). Blocks are
converted to the training dtype and checked for NaN/inf one at a time, so memory stays
bounded by a few blocks whatever the size of ``X``; the next block is read in a background
thread while the current one is computed (the kernels release the GIL).

Rows stored uncompressed in a file -- a ``.npy`` file (:class:`NpyRows`), an HDF5 dataset
opened read-only whose layout is contiguous or chunked in whole rows stored in order --
are not copied at all: each block is a read-only memory mapping of its rows
(:class:`FileRows`), filled from the page cache in one system call, and unmapped when the
block is dropped. That costs no copy (the kernels read the page cache), and the address
space stays a few blocks whatever the size of the file (``ulimit -v``). Anything else is
read into two reused buffers (HDF5: ``read_direct``), converted there if its dtype is not
the training dtype.
"""
import bisect
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np

__all__ = ["BlockReader", "NpyRows", "FileRows", "file_rows", "is_streamable",
           "DEFAULT_BLOCK_BYTES"]

#: Size of one converted block. Large enough that BLAS runs near its rate on a block and
#: the per-block overhead (a few Python calls) is negligible, small enough that two blocks
#: in flight are a small part of a memory budget.
DEFAULT_BLOCK_BYTES = 16 << 20


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


def is_streamable(X):
    """Whether ``X`` should be read in blocks rather than converted whole: a memmap, an
    h5py dataset or another array-like that is not an in-memory ndarray."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, np.ndarray):
        return False
    return hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__")


class _Done:
    """A finished read, with the two methods of a Future the reader uses."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value

    def cancel(self):
        return False


class BlockReader:
    """Read ``X`` in row blocks of ``dtype``.

    Parameters
    ----------
    X : np.memmap, h5py.Dataset, ndarray or array-like with ``shape``/``dtype``/slicing
        The samples, ``(N, D)``.
    dtype : float32 or float64
        The training dtype each block is converted to.
    n_features : int, optional
        Expected ``D`` (the network's input width).
    block_rows : int, optional
        Rows per block; default: ``block_bytes`` worth of converted rows.
    block_bytes : int
        Target size of a converted block (default :data:`DEFAULT_BLOCK_BYTES`).
    prefetch : bool or "auto"
        Read the next block in a background thread. "auto": for everything but an
        in-memory ndarray.
    name : str
        Name of ``X`` in error messages.
    check : {"once", "always"}
        Check a block for NaN/inf the first time this reader reads it ("once": later
        epochs read the same rows of the same file) or on every read.
    map_files : bool, default True
        Map the blocks of a :class:`NpyRows` or a suitable HDF5 dataset straight from
        the file (:func:`file_rows`) instead of reading them.

    Notes
    -----
    A block of a C-contiguous memmap or ndarray already of ``dtype`` is a view (no copy);
    its pages are faulted in by the finiteness check, in the read-ahead thread. So is a
    block mapped from a file. Iterating gives fresh arrays; :meth:`stream` (the epoch
    runner's way) reuses two buffers for the blocks that must be copied or converted.
    """

    def __init__(self, X, dtype, *, n_features=None, block_rows=None,
                 block_bytes=DEFAULT_BLOCK_BYTES, prefetch="auto", name="X", check="once",
                 map_files=True):
        shape = getattr(X, "shape", None)
        xdt = getattr(X, "dtype", None)
        if shape is None or xdt is None or not hasattr(X, "__getitem__"):
            raise TypeError(f"{name} must be an array, an np.memmap, an h5py.Dataset or an "
                            f"object with shape, dtype and row slicing; got "
                            f"{type(X).__name__}.")
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"{name} must be a non-empty 2-D array (n_samples, n_features); "
                             f"got shape {tuple(shape)}.")
        if np.dtype(xdt).kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers; got dtype {np.dtype(xdt)}.")
        if n_features is not None and shape[1] != n_features:
            raise ValueError(f"{name} has {shape[1]} features per sample but the network "
                             f"expects {n_features} (sizes[0]).")
        self.X, self.dtype, self.name = X, np.dtype(dtype), name
        self.shape = (int(shape[0]), int(shape[1]))
        if block_rows is None:
            block_rows = max(1, int(block_bytes) // (self.shape[1] * self.dtype.itemsize))
            # An HDF5 dataset stored in chunks of whole rows: blocks of whole chunks, so no
            # chunk is read (and decompressed) twice for two neighbouring blocks.
            chunks = getattr(X, "chunks", None)
            if chunks and len(chunks) == 2 and chunks[1] == self.shape[1]:
                block_rows = max(1, block_rows // chunks[0]) * chunks[0]
        elif not (isinstance(block_rows, Integral) and block_rows >= 1):
            raise ValueError(f"The 'block_rows' parameter of BlockReader must be an int >= 1. "
                             f"Got {block_rows!r} instead.")
        self.block_rows = int(min(block_rows, self.shape[0]))
        self._file = file_rows(X) if map_files else None
        ends = self._file.extent_ends() if self._file is not None else [self.shape[0]]
        self._bounds, lo = [], 0
        for end in ends:               # a mapped block lies inside one stored extent
            self._bounds += [(a, min(a + self.block_rows, end))
                             for a in range(lo, end, self.block_rows)]
            lo = end
        if prefetch == "auto":
            prefetch = not (isinstance(X, np.ndarray) and not isinstance(X, np.memmap))
        self.prefetch = bool(prefetch) and self.n_blocks > 1
        if check not in ("once", "always"):
            raise ValueError(f"The 'check' parameter of BlockReader must be 'once' or "
                             f"'always'. Got {check!r} instead.")
        self.check = check
        self._checked = set()      # (lo, hi) of the blocks found finite
        self._pool = None
        self._direct = hasattr(X, "read_direct") and np.dtype(xdt) == self.dtype
        self._buffers = [None, None]    # reused by stream(): the block in use, the next

    @property
    def mapped(self):
        """Whether blocks are mapped from the file (no copy)."""
        return self._file is not None

    @property
    def n_rows(self):
        return self.shape[0]

    @property
    def n_blocks(self):
        return len(self._bounds)

    def bounds(self):
        """The blocks' row ranges ``(lo, hi)``, in order: ``block_rows`` each, shorter
        where a mapped file's stored extent ends, and at the end."""
        return list(self._bounds)

    def _buffer(self, slot, rows):
        buf = self._buffers[slot]
        if buf is None:
            buf = self._buffers[slot] = np.empty((self.block_rows, self.shape[1]),
                                                 self.dtype)
        return buf[:rows]

    def read(self, lo, hi, slot=None):
        """Rows ``lo..hi-1`` as a C-contiguous array of ``dtype`` (checked finite).

        With ``slot`` (0 or 1), a block that must be copied goes into that reused buffer
        (valid until the buffer is used again)."""
        out = None if slot is None else self._buffer(slot, hi - lo)
        if self._file is not None:
            raw = self._file.rows(lo, hi)
        elif out is not None and self._direct:
            self.X.read_direct(out, np.s_[lo:hi], np.s_[0:hi - lo])
            raw = out
        else:
            raw = self.X[lo:hi]
        if isinstance(raw, np.ndarray) and raw.dtype == self.dtype and raw.flags.c_contiguous:
            block = raw.view(np.ndarray)
        elif out is not None and np.shape(raw) == out.shape:
            with np.errstate(over="ignore", invalid="ignore"):   # reported just below
                np.copyto(out, raw, casting="unsafe")
            block = out
        else:
            with np.errstate(over="ignore"):      # reported just below, naming the rows
                block = np.ascontiguousarray(np.asarray(raw), dtype=self.dtype)
        if block.shape != (hi - lo, self.shape[1]):
            raise ValueError(f"{self.name}[{lo}:{hi}] gave shape {block.shape}; expected "
                             f"{(hi - lo, self.shape[1])}.")
        if self.check == "once" and (lo, hi) in self._checked:
            return block
        finite = np.isfinite(block)
        if finite.all():
            self._checked.add((lo, hi))
        else:
            bad = np.argwhere(~finite)
            r, c = bad[0]
            raise ValueError(
                f"{self.name} rows [{lo}, {hi}) contain {len(bad)} NaN or infinite value(s) "
                f"(after conversion to {self.dtype.name}); the first at row {lo + r}, column "
                f"{c}. Clean or impute them first.")
        return block

    def _ready(self, lo, hi):
        """Whether block ``lo..hi-1`` is at hand without reading: a view of memory or of a
        kept mapping, of the training dtype, already checked."""
        if self.check != "once" or (lo, hi) not in self._checked:
            return False
        if self._file is not None:
            return self._file.dtype == self.dtype and (lo, hi) in self._file._maps
        return (isinstance(self.X, np.ndarray) and self.X.dtype == self.dtype
                and self.X.flags.c_contiguous)

    def __iter__(self):
        """Yield ``(lo, hi, block)`` for every block, in row order (fresh arrays)."""
        return self._blocks(reuse=False)

    def stream(self):
        """Like iterating, but a block is valid only until the next one is asked for:
        blocks that must be copied or converted go into two reused buffers (no memory
        allocated, no page faulted in per block)."""
        return self._blocks(reuse=True)

    def _blocks(self, reuse):
        bounds = self.bounds()

        def read(i):
            return self.read(*bounds[i], slot=i % 2 if reuse else None)
        if not self.prefetch:
            for i, (lo, hi) in enumerate(bounds):
                yield lo, hi, read(i)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poswise-read")
        # Block i+1 is read (into the other buffer) while the caller computes block i;
        # it is submitted only once the caller is done with block i-1, whose buffer it
        # takes.
        def fetch(i):
            # A block that needs no reading (a view, already checked) is taken at once:
            # handing it to the thread would only add a wait for the thread to be
            # scheduled, which on a busy machine can be a whole time slice per block.
            if self._ready(*bounds[i]):
                return _Done(read(i))
            return self._pool.submit(read, i)
        nxt = fetch(0)
        try:
            for i, (lo, hi) in enumerate(bounds):
                block = nxt.result()
                nxt = fetch(i + 1) if i + 1 < len(bounds) else None
                yield lo, hi, block
        finally:
            if nxt is not None:      # abandoned mid-pass: do not leave a read running
                nxt.cancel()
                try:
                    nxt.result()
                except Exception:  # noqa: BLE001 -- the pass is already being abandoned
                    pass

    def close(self):
        """Stop the read-ahead thread and free the buffers (a new pass starts again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._buffers = [None, None]
        if self._file is not None:
            self._file.release()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
