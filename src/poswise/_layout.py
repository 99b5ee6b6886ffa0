"""The one place that owns poswise's memory layout and input conversion.

Layout rule: data are samples-first ``(N, D)`` and C-contiguous; ``weights[l]`` is
``(n[l+1], n[l])`` and ``biases[l]`` is ``(n[l+1],)``; all in the network's float dtype
(float32 or float64). Everything that reaches a kernel went through a function here:
inputs are validated with a message naming the parameter, what was expected and what was
given, then converted (non-contiguous, Fortran-ordered and integer inputs are copied into
the layout, never rejected). Kernels assume the layout and cannot fail.
"""
import os
import warnings
from numbers import Integral, Real

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)

#: Memory honesty: converting an input to the network's dtype / C order copies it. A copy
#: larger than this fraction of the machine's physical memory is announced with a
#: :class:`LargeCopyWarning` naming the fix (and refused with a ``ValueError`` naming
#: the fix, before allocating, when it cannot fit in the memory available at all);
#: smaller copies stay silent.
LARGE_COPY_FRACTION = 0.02


class LargeCopyWarning(UserWarning):
    """An input array is being copied whole to match the network's dtype or layout."""


def total_memory():
    """Physical memory of the machine in bytes (``None`` when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def available_memory():
    """Memory available to a new allocation in bytes (``MemAvailable`` on Linux, else
    the physical memory; ``None`` when unknown)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return total_memory()


def format_bytes(n):
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as file managers show sizes)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0


def check_dtype(dtype, owner):
    """Return ``np.float32`` or ``np.float64`` for a dtype-like, or raise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.type not in FLOAT_DTYPES:
        raise ValueError(
            f"The 'dtype' parameter of {owner} must be float32 or float64. "
            f"Got {dtype!r} instead.")
    return dt.type


def check_scalar(value, name, owner, *, kind="float", low=None, low_inclusive=False,
                 high=None, allow_none=False):
    """Validate a scalar parameter; return it as float/int.

    The message follows scikit-learn: "The 'lr' parameter of PositionWise must be a
    float > 0. Got -0.1 instead."
    """
    if value is None and allow_none:
        return None
    if kind == "int":
        ok = isinstance(value, Integral) and not isinstance(value, bool)
        noun = "an int"
    else:
        ok = isinstance(value, Real) and not isinstance(value, bool)
        try:
            ok = ok and bool(np.isfinite(float(value)))
        except OverflowError:      # an int too large for a float
            ok = False
        noun = "a finite float"
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        cond = []
        if low is not None:
            cond.append((">= " if low_inclusive else "> ") + repr(low))
        if high is not None:
            cond.append("<= " + repr(high))
        raise ValueError(
            f"The {name!r} parameter of {owner} must be {noun}"
            f"{' ' + ' and '.join(cond) if cond else ''}"
            f"{' or None' if allow_none else ''}. Got {value!r} instead.")
    return int(value) if kind == "int" else float(value)


def check_widths(value, name, owner, error=ValueError):
    """A tuple of ints >= 1 from an int or a sequence of them (hidden-layer widths)."""
    widths = (value,) if isinstance(value, Integral) and not isinstance(value, bool) else value
    try:
        widths = tuple(widths)
    except TypeError:
        widths = None
    if widths is None or not all(isinstance(w, Integral) and not isinstance(w, bool)
                                 and w >= 1 for w in widths):
        raise error(f"The {name!r} parameter of {owner} must be a sequence of ints >= 1. "
                    f"Got {value!r} instead.")
    return tuple(int(w) for w in widths)


def check_choice(value, name, owner, choices):
    if not isinstance(value, str) or value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"The {name!r} parameter of {owner} must be one of {opts}. Got {value!r} instead.")
    return value


def _as_numeric(a, name):
    if _is_sparse(a):
        raise ValueError(f"{name} is a sparse matrix ({type(a).__name__}); sparse input is "
                        f"not supported; use .toarray() to pass a dense array.")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must hold real numbers (bool, int or float); got an array of dtype "
            f"{arr.dtype}.")
    return arr


def _is_sparse(a):
    """scipy.sparse matrices and arrays, recognised without importing scipy."""
    return type(a).__module__.startswith("scipy.sparse") and hasattr(a, "toarray")


def _check_copy(arr, dtype, name):
    """Announce (or refuse) the whole copy that converting ``arr`` would make.

    A copy is made when the dtype differs or the array is not C-contiguous. Above
    ``LARGE_COPY_FRACTION`` of the physical memory it is announced with the fix; when it
    cannot fit in the available memory it is refused before allocating.
    """
    dt = np.dtype(dtype)
    if arr.dtype == dt and arr.flags.c_contiguous:
        return
    nbytes = arr.size * dt.itemsize
    total = total_memory()
    if total is None or nbytes <= LARGE_COPY_FRACTION * total:
        return
    why = (f"its dtype is {arr.dtype}, the network's is {dt.name}" if arr.dtype != dt
           else "it is not C-contiguous")
    fix = ("pass dtype=np.float32 to the network (MLP(..., dtype=np.float32)) so that the "
           "data are used in place, or convert once with X = X.astype(np.float64)"
           if arr.dtype == np.float32 else
           f"convert once with X = np.ascontiguousarray(X, dtype=np.{dt.name}) and reuse it")
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ValueError(f"{name} would be copied whole ({format_bytes(nbytes)}: {why}), "
                         f"more than the {format_bytes(avail)} of memory available. To "
                         f"avoid the copy, {fix}.")
    warnings.warn(f"{name} is copied whole ({format_bytes(nbytes)}, more than "
                  f"{LARGE_COPY_FRACTION:.0%} of this machine's memory) because {why}. To "
                  f"avoid the copy, {fix}.", LargeCopyWarning, stacklevel=3)


def check_X(X, dtype, n_features=None, name="X"):
    """Return ``X`` as a C-contiguous ``(N, D)`` array of ``dtype`` with finite values.

    A conversion never copies a large array silently (see ``LARGE_COPY_FRACTION``).
    """
    arr = _as_numeric(X, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); got an array "
            f"with {arr.ndim} dimension(s) of shape {arr.shape}. Reshape a single sample "
            f"with x.reshape(1, -1) and flatten images to one row per sample.")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {arr.shape}; need at least one sample "
                         f"and one feature.")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per sample but the network expects "
            f"{n_features} (sizes[0]).")
    _check_copy(arr, dtype, name)
    out = np.ascontiguousarray(arr, dtype=dtype)
    if not _all_finite(out):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) (after conversion "
                         f"to {np.dtype(dtype).name}); clean or impute them first.")
    return out


def _all_finite(a, block_bytes=1 << 22):
    """np.isfinite(a).all() in row blocks: no temporary the size of ``a``."""
    rows = max(1, block_bytes // max(1, a.itemsize * (a.size // max(1, a.shape[0]))))
    return all(np.isfinite(a[i:i + rows]).all() for i in range(0, a.shape[0], rows))


def check_y(y, loss, n_samples, n_outputs, dtype, name="y"):
    """Return targets in the kernels' form for ``loss``.

    bce: ``(N,)`` of ``dtype`` in {0, 1}, or ``(N, K)`` for K > 1 outputs (multi-label);
    cross_entropy / am_softmax: ``(N,)`` ``intc``
    labels in ``[0, K)``; mse: ``(N, K)`` of ``dtype``.
    """
    arr = _as_numeric(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1 and loss != "mse":
        arr = arr[:, 0]
    if loss == "mse":
        if arr.ndim == 1 and n_outputs == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != n_outputs:
            raise ValueError(
                f"{name} for loss 'mse' must have shape (n_samples, {n_outputs})"
                f"{' or (n_samples,)' if n_outputs == 1 else ''} to match the network's "
                f"{n_outputs} output(s); got shape {arr.shape}.")
    elif loss == "bce" and n_outputs > 1:
        if arr.ndim != 2 or arr.shape[1] != n_outputs:
            raise ValueError(
                f"{name} for loss 'bce' with {n_outputs} outputs (multi-label) must have "
                f"shape (n_samples, {n_outputs}) with 0/1 entries; got shape {arr.shape}. "
                f"Use loss='cross_entropy' for one label out of several classes.")
    elif arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, one per sample; got shape "
                         f"{arr.shape}.")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but X has {n_samples} samples.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if loss == "mse":
        out = np.ascontiguousarray(arr, dtype=dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} contains values too large for {np.dtype(dtype).name} (they "
                             f"become inf after conversion); rescale the targets.")
        return out
    if loss == "bce":
        bad = ~((arr == 0) | (arr == 1))
        if bad.any():
            raise ValueError(f"{name} for loss 'bce' must hold labels 0 and 1; found "
                             f"{np.unique(arr[bad])[:5].tolist()}.")
        return np.ascontiguousarray(arr, dtype=dtype)
    # cross_entropy / am_softmax
    if n_outputs < 2:
        raise ValueError(f"loss {loss!r} needs a network with at least 2 outputs (one per "
                         f"class); this one has {n_outputs}. Use loss='bce' for 2 classes "
                         f"with 1 output.")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError(f"{name} for loss {loss!r} must hold integer class labels; found "
                         f"non-integer values.")
    if arr.min() < 0 or arr.max() >= n_outputs:
        raise ValueError(
            f"{name} for loss {loss!r} must hold labels in [0, {n_outputs}) (the network "
            f"has {n_outputs} outputs); found labels from {arr.min():g} to {arr.max():g}.")
    return np.ascontiguousarray(arr, dtype=np.intc)


def as_param(a, dtype):
    """A private, C-contiguous copy of a parameter array."""
    return np.array(a, dtype=dtype, order="C", copy=True)
