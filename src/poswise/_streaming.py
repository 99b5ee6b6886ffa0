"""Row blocks of data larger than memory: the reader the streamed epochs consume.

``X`` may be an ``np.memmap``, an ``h5py.Dataset`` or any object with a 2-D ``shape``, a
``dtype`` and row slicing (``X[lo:hi]`` gives an array-like of those rows). Blocks are
converted to the training dtype and checked for NaN/inf one at a time, so memory stays
bounded by a few blocks whatever the size of ``X``; the next block is read in a background
thread while the current one is computed (the kernels release the GIL).
"""
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np

__all__ = ["BlockReader", "NpyRows", "is_streamable", "DEFAULT_BLOCK_BYTES"]

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


def is_streamable(X):
    """Whether ``X`` should be read in blocks rather than converted whole: a memmap, an
    h5py dataset or another array-like that is not an in-memory ndarray."""
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, np.ndarray):
        return False
    return hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__")


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

    Notes
    -----
    A block of a C-contiguous memmap or ndarray already of ``dtype`` is a view (no copy);
    its pages are faulted in by the finiteness check, in the read-ahead thread.
    """

    def __init__(self, X, dtype, *, n_features=None, block_rows=None,
                 block_bytes=DEFAULT_BLOCK_BYTES, prefetch="auto", name="X", check="once"):
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
        if prefetch == "auto":
            prefetch = not (isinstance(X, np.ndarray) and not isinstance(X, np.memmap))
        self.prefetch = bool(prefetch) and self.n_blocks > 1
        if check not in ("once", "always"):
            raise ValueError(f"The 'check' parameter of BlockReader must be 'once' or "
                             f"'always'. Got {check!r} instead.")
        self.check = check
        self._checked = set()      # (lo, hi) of the blocks found finite
        self._pool = None

    @property
    def n_rows(self):
        return self.shape[0]

    @property
    def n_blocks(self):
        return -(-self.shape[0] // self.block_rows)

    def bounds(self):
        """The blocks' row ranges ``(lo, hi)``, in order."""
        n, b = self.shape[0], self.block_rows
        return [(lo, min(lo + b, n)) for lo in range(0, n, b)]

    def read(self, lo, hi):
        """Rows ``lo..hi-1`` as a C-contiguous array of ``dtype`` (checked finite)."""
        raw = self.X[lo:hi]
        if isinstance(raw, np.ndarray) and raw.dtype == self.dtype and raw.flags.c_contiguous:
            block = raw.view(np.ndarray)
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

    def __iter__(self):
        """Yield ``(lo, hi, block)`` for every block, in row order."""
        bounds = self.bounds()
        if not self.prefetch:
            for lo, hi in bounds:
                yield lo, hi, self.read(lo, hi)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="poswise-read")
        nxt = self._pool.submit(self.read, *bounds[0])
        try:
            for i, (lo, hi) in enumerate(bounds):
                block = nxt.result()
                nxt = self._pool.submit(self.read, *bounds[i + 1]) if i + 1 < len(bounds) \
                    else None
                yield lo, hi, block
        finally:
            if nxt is not None:      # abandoned mid-pass: do not leave a read running
                nxt.cancel()
                try:
                    nxt.result()
                except Exception:  # noqa: BLE001 -- the pass is already being abandoned
                    pass

    def close(self):
        """Stop the read-ahead thread (a new pass starts it again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
