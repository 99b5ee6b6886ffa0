"""Row blocks of data larger than memory: the reader the streamed epochs consume.

``X`` may be an ``np.memmap``, an ``h5py.Dataset`` or any object with a 2-D ``shape``, a
``dtype`` and row slicing (``X[lo:hi]`` gives an array-like of those rows). Blocks are
converted to the training dtype and checked for NaN/inf one at a time, so memory stays
bounded by a few blocks whatever the size of ``X``; the next block is read in a background
thread while the current one is computed (the kernels release the GIL).

Rows stored uncompressed in a file -- a ``.npy`` file (:class:`NpyRows`), an HDF5 dataset
opened read-only whose layout is contiguous or chunked in whole rows -- are not copied at
all: each block is a read-only memory mapping of its rows (:class:`FileRows`, in
:mod:`poswise._mapped`), filled from the page cache in one system call. That costs no
copy (the kernels read the page cache); without an address-space limit the mappings are
kept for the next pass, under one (``ulimit -v``) each ends with its block, so the
address space stays a few blocks whatever the size of the file. Anything else is read
into two reused buffers (HDF5: ``read_direct``), converted there if its dtype is not the
training dtype.
"""
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np

from ._mapped import MIN_EXTENT_BYTES, FileRows, NpyRows, file_rows

__all__ = ["BlockReader", "NpyRows", "FileRows", "file_rows", "is_streamable",
           "DEFAULT_BLOCK_BYTES", "MIN_EXTENT_BYTES"]

#: Size of one converted block. Large enough that BLAS runs near its rate on a block and
#: the per-block overhead (a few Python calls) is negligible, small enough that two blocks
#: in flight are a small part of a memory budget.
DEFAULT_BLOCK_BYTES = 16 << 20


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

    def _mapped(self, lo, hi):
        """The block mapped from the file, or None (not mapped, or mapping failed)."""
        f = self._file
        if f is None:
            return None
        try:
            return f.rows(lo, hi)
        except OSError:      # a file system that cannot map, no address space left:
            self._file = None    # read from here on (the block bounds still fit)
            return None

    def read(self, lo, hi, slot=None):
        """Rows ``lo..hi-1`` as a C-contiguous array of ``dtype`` (checked finite).

        With ``slot`` (0 or 1), a block that must be copied goes into that reused buffer
        (valid until the buffer is used again)."""
        raw = self._mapped(lo, hi)
        out = None
        if raw is None or raw.dtype != self.dtype:
            out = None if slot is None else self._buffer(slot, hi - lo)
        if raw is None and out is not None and self._direct:
            self.X.read_direct(out, np.s_[lo:hi], np.s_[0:hi - lo])
            raw = out
        elif raw is None:
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
