"""The poswise model file: an MLP (and, for checkpoints, extra arrays) in one ``.npz``.

(Over 400 lines on purpose: the format's specification, its writer and its reader are
kept side by side so that a change to one is seen next to the others.)

Format ``poswise-mlp``, version 1
---------------------------------
An uncompressed ``.npz`` (a zip of ``.npy`` members, readable by ``np.load``) holding
only plain numeric arrays, so that reading it never needs pickle:

===================  ========================================================================
key                  content
===================  ========================================================================
``metadata``         uint8 array: UTF-8 JSON object (the fields below)
``weights_<l>``      ``(sizes[l+1], sizes[l])`` float32/float64 (the network's dtype)
``biases_<l>``       ``(sizes[l+1],)``, same dtype
``extra/<name>``     optional arrays given to ``save_model(..., arrays=...)`` (checkpoints)
===================  ========================================================================

Metadata fields: ``format`` (``"poswise-mlp"``), ``format_version`` (1),
``poswise_version``, ``sizes``, ``activation``, ``leak``, ``output``, ``init`` (or null),
``dtype`` (``"float32"``/``"float64"``), ``extra_arrays`` (sorted names), ``user`` (the
``metadata`` dict given to ``save_model``) and ``sha256``.

``sha256`` is the hex digest of the canonical metadata JSON without the ``sha256`` field
(sorted keys, compact separators) followed by every array in sorted key order, each as its
key, dtype and shape (JSON) and its little-endian C-order bytes. It detects edits to the
values or the settings that keep the zip valid; the zip's CRC-32 per member already catches
flipped bytes. It is an integrity check, not a signature: anyone can recompute it.

Versioning: a reader refuses files whose ``format_version`` is newer than it knows; a new
version is introduced only when an older reader would misread the file (new optional
metadata fields do not need one).

Files are written atomically by :func:`poswise._atomic.atomic_write`: to a temporary file
in the destination directory (a name short enough for any legal destination name),
flushed and fsync'ed, then moved over the destination with ``os.replace``. A failure at
any point leaves the previous file (if any) untouched and removes the temporary file; a
save first removes the temporaries of its destination left by a writer that was killed.

Reading checks before it allocates: the path must be a regular file (a FIFO or a device
is refused at once), every zip member must fit in the archive (a directory declaring a
75 GiB member in a 1.5 KB file is refused), every ``.npy`` header's shape must fit in its
member, and the metadata is strict JSON (``NaN``/``Infinity`` are refused).

Dependencies: this module imports :mod:`poswise.network` (the network owns its config:
``MLP.get_config``, ``MLP.check_config``, ``MLP.from_config``) and registers
:func:`save_model` as the writer behind ``MLP.save``; the network never imports it.
"""
import errno
import hashlib
import json
import math
import os
import re
import struct
import zipfile
import zlib

import numpy as np

from . import _filecheck
from ._atomic import atomic_write
from .network import ACTIVATIONS, CONFIG_FIELDS, INITS, MLP, OUTPUTS

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "save_model", "load_model",
           "read_model_file"]

FORMAT_NAME = "poswise-mlp"
FORMAT_VERSION = 1

METADATA_KEY = "metadata"
EXTRA_PREFIX = "extra/"
_EXTRA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
_EXTRA_KINDS = "biufc"          # bool, ints, floats, complex: never objects, strings, records
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # a zip's first local header / an empty zip
_MAX_METADATA_BYTES = 64 * 2**20
# What zipfile and np.lib.format raise on damaged input (a flipped flag bit can ask for
# encryption or an unknown compression method: RuntimeError / NotImplementedError).
_CORRUPTION = (ValueError, TypeError, KeyError, EOFError, OSError, RuntimeError,
               OverflowError, struct.error, zipfile.BadZipFile, zlib.error)


class ModelFileError(ValueError):
    """A file is not a valid poswise model file (corrupted, truncated, tampered with,
    or written by a newer poswise).

    Attributes
    ----------
    path : str
        The file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path, problem):
        self.path = os.fspath(path) if path is not None else None
        self.problem = problem
        super().__init__(f"Cannot read poswise model file {self.path!r}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


# ---------------------------------------------------------------------------- helpers
def _weight_key(l):
    return f"weights_{l}"


def _bias_key(l):
    return f"biases_{l}"


def _canonical_json(meta):
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True)


def _digest(meta, arrays):
    """sha256 of the metadata (without ``sha256``) and of every array (see module doc)."""
    h = hashlib.sha256()
    h.update(FORMAT_NAME.encode() + b"\0")
    h.update(_canonical_json({k: v for k, v in meta.items() if k != "sha256"}).encode())
    for key in sorted(arrays):
        a = arrays[key]
        # Little-endian bytes, so a file hashes the same whatever machine wrote it.
        canon = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
        h.update(b"\0" + json.dumps([key, canon.dtype.str, list(a.shape)]).encode() + b"\0")
        h.update(canon.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _json_default(obj):
    if isinstance(obj, np.generic):      # numpy scalars: np.int64(3) -> 3
        return obj.item()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _check_keys(obj, where="metadata"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be strings; got {k!r}.")
            _check_keys(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_keys(v, f"{where}[{i}]")


def _user_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of JSON-serialisable values; got "
                        f"{type(metadata).__name__}.")
    try:
        text = json.dumps(metadata, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:   # circular references included
        raise ValueError(f"metadata must be JSON-serialisable (str keys; str, int, float, "
                         f"bool, None, lists and dicts; no NaN or infinity): {exc}") from None
    _check_keys(metadata)   # json.dumps would silently turn 1 into "1"
    return json.loads(text)


def _extra_arrays(arrays):
    if arrays is None:
        return {}
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> array; got "
                        f"{type(arrays).__name__}.")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _EXTRA_NAME.fullmatch(name):
            raise ValueError(f"arrays names must be 1-100 characters from [A-Za-z0-9_.-], "
                             f"not starting with '.' or '-'; got {name!r}.")
        try:
            arr = np.asarray(value)
        except Exception as exc:   # ragged lists and the like
            raise ValueError(f"arrays[{name!r}] could not be converted to an array: "
                             f"{exc}") from None
        if arr.dtype.kind not in _EXTRA_KINDS:
            raise TypeError(f"arrays[{name!r}] must hold numbers or booleans; got dtype "
                            f"{arr.dtype}. Model files never store Python objects (they "
                            f"would need pickle to load).")
        out[EXTRA_PREFIX + name] = np.asarray(arr, order="C")   # keeps 0-d arrays 0-d
    return out


def _write_npz(fh, arrays):
    np.savez(fh, allow_pickle=False, **arrays)


# ---------------------------------------------------------------------------- save
def save_model(net, path, *, metadata=None, arrays=None):
    """Write ``net`` to ``path`` as a poswise model file (format ``poswise-mlp`` 1).

    Parameters
    ----------
    net : MLP
        The network: weights, biases, sizes, activation, leak, output head, init and dtype
        are stored.
    path : str or os.PathLike
        Destination, used as given (no ``.npz`` suffix is added). An existing file is
        replaced atomically: readers see the old file or the new one, never a mix.
    metadata : dict, optional
        JSON-serialisable user data (str keys; numpy scalars are converted), returned by
        :func:`read_model_file`. NaN and infinity are refused (strict JSON).
    arrays : dict of str -> array_like, optional
        Extra named arrays (numeric or bool, e.g. a checkpoint's trainer state), stored
        under ``extra/<name>`` and returned by :func:`read_model_file`. Names use
        ``[A-Za-z0-9_.-]``.

    Raises
    ------
    TypeError
        ``net`` is not an MLP, or ``metadata``/``arrays`` hold unsupported types.
    ValueError
        The network has non-finite or inconsistent parameters, or ``metadata`` is not
        JSON-serialisable.
    OSError
        The file could not be written (the previous file, if any, is left intact).
    """
    from . import __version__

    if not isinstance(net, MLP):
        raise TypeError(f"net must be a poswise.MLP; got {type(net).__name__}.")
    path = os.fsdecode(os.fspath(path))
    dt = np.dtype(net.dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"The network's dtype must be float32 or float64; got {dt}.")
    for field, choices in (("activation", ACTIVATIONS), ("output", OUTPUTS),
                           ("init", INITS + (None,))):
        if getattr(net, field) not in choices:
            raise ValueError(f"The network's {field} {getattr(net, field)!r} is not one of "
                             f"{choices}; refusing to save a network that cannot be loaded.")
    leak = net.leak
    if not (isinstance(leak, (int, float)) and math.isfinite(leak) and leak >= 0):
        raise ValueError(f"The network's leak must be a finite float >= 0; got {leak!r}.")
    weights, biases = (list(p) for p in net._params())   # one epoch's snapshot
    if len(weights) < 1 or len(weights) != len(biases):
        raise ValueError(f"The network has {len(weights)} weight matrices and "
                         f"{len(biases)} bias vectors.")
    payload = {}
    sizes = [int(np.shape(weights[0])[1])] if np.ndim(weights[0]) == 2 else None
    for l, (w, b) in enumerate(zip(weights, biases)):
        w = np.ascontiguousarray(w, dtype=dt)
        b = np.ascontiguousarray(b, dtype=dt)
        if sizes is None or w.ndim != 2 or w.shape[1] != sizes[-1] or b.shape != w.shape[:1]:
            raise ValueError(f"The network's arrays do not chain at layer {l}: weights "
                             f"{w.shape}, biases {b.shape}.")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError(f"The network's weights[{l}] or biases[{l}] contain NaN or "
                             f"inf; refusing to save a network that cannot be loaded.")
        sizes.append(int(w.shape[0]))
        payload[_weight_key(l)] = w
        payload[_bias_key(l)] = b
    extras = _extra_arrays(arrays)
    payload.update(extras)
    config = net.get_config()
    config["sizes"] = sizes          # the sizes of the arrays actually written
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "poswise_version": __version__,
        **config,
        "extra_arrays": sorted(k[len(EXTRA_PREFIX):] for k in extras),
        "user": _user_metadata(metadata),
    }
    meta["sha256"] = _digest(meta, payload)
    text = _canonical_json(meta).encode("utf-8")
    payload = {METADATA_KEY: np.frombuffer(text, dtype=np.uint8), **payload}

    atomic_write(path, lambda fh: _write_npz(fh, payload))


# ---------------------------------------------------------------------------- load
def _header(zf, info, path):
    """(dtype, shape, fortran_order) of one ``.npy`` member, read without its data."""
    try:
        with zf.open(info) as f:
            dtype, shape, fortran, header_len = _filecheck.read_npy_header(f)
    except _filecheck.ObjectArrayProblem as exc:
        raise ModelFileError(path, f"array {info.filename[:-4]!r} holds Python objects "
                                   f"(dtype {exc.dtype}); poswise model files contain only "
                                   f"numbers, and loading objects would need pickle, which "
                                   f"can run arbitrary code. Refusing to load it.") from None
    except _filecheck.FileProblem as exc:
        raise ModelFileError(path, f"member {info.filename!r} is {exc}.") from None
    except _CORRUPTION as exc:
        raise ModelFileError(path, f"member {info.filename!r} is not a valid .npy array "
                                   f"({exc}).") from None
    nbytes = _filecheck.nbytes(dtype, shape)
    if header_len + nbytes > info.file_size:
        raise ModelFileError(path, f"array {info.filename[:-4]!r} declares shape {shape} "
                                   f"({nbytes} bytes) but its member holds only "
                                   f"{info.file_size - header_len} bytes of data.")
    return dtype, shape, fortran


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def _parse_metadata(raw, path):
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(path, f"'metadata' must be a 1-D uint8 array; got dtype "
                                   f"{raw.dtype}, shape {raw.shape}.")
    try:
        # strict JSON: NaN and Infinity (which json accepts by default) are refused here,
        # not later as an unnamed error of the integrity check
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_no_constants)
    except RecursionError:
        raise ModelFileError(path, "the metadata is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(path, f"the metadata is not valid UTF-8 JSON ({exc}).") from None
    if not isinstance(meta, dict):
        raise ModelFileError(path, "the metadata is not a JSON object.")
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFileError(path, f"format is {fmt!r}, not {FORMAT_NAME!r}.")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(path, f"invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format_version {version} is newer than this poswise reads (up to "
                  f"{FORMAT_VERSION}); the file was written by poswise "
                  f"{meta.get('poswise_version')!r}. Upgrade poswise to read it.")

    def bad(field, expected):
        raise ModelFileError(path, f"metadata field {field!r} must be {expected}; got "
                                   f"{meta.get(field, '<missing>')!r}.")

    try:
        MLP.check_config({k: meta[k] for k in CONFIG_FIELDS if k in meta})
    except ValueError as exc:
        raise ModelFileError(path, f"metadata {exc}") from None
    extra = meta.get("extra_arrays")
    if not (isinstance(extra, list) and all(
            isinstance(n, str) and _EXTRA_NAME.fullmatch(n) for n in extra)):
        bad("extra_arrays", "a list of array names")
    if not isinstance(meta.get("user"), dict):
        bad("user", "a JSON object")
    if not isinstance(meta.get("sha256"), str):
        bad("sha256", "a hex string")
    return meta


def read_model_file(path):
    """Read a poswise model file or checkpoint.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    net : MLP
        The network, with the stored dtype, settings and ``init``.
    metadata : dict
        The ``metadata`` given to :func:`save_model` (``{}`` if none); JSON types (tuples
        come back as lists).
    arrays : dict of str -> ndarray
        The extra ``arrays`` given to :func:`save_model` (``{}`` if none).

    Raises
    ------
    ModelFileError
        (a ``ValueError``) The file is not a poswise model file, is truncated or corrupted,
        declares members or arrays larger than it holds, fails the integrity check,
        holds object arrays or non-strict JSON metadata (NaN, Infinity), has a newer
        format version, or is not a regular file (a FIFO or a device: refused at once,
        without reading).
    FileNotFoundError, PermissionError, IsADirectoryError
        As ``open`` raises them.
    """
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "Is a directory (not a poswise model file)",
                                path)
    try:
        fh = _filecheck.open_regular(path)
    except _filecheck.FileProblem as exc:
        raise ModelFileError(path, f"{exc}.") from None
    with fh:
        archive_size = os.fstat(fh.fileno()).st_size
        magic = fh.read(4)
        if magic not in _ZIP_MAGIC:
            what = "an empty file" if not magic else (
                "a single .npy array" if magic.startswith(b"\x93NUM") else
                "a pickle" if magic[:1] == b"\x80" else "not a zip archive")
            raise ModelFileError(path, f"not a .npz model file ({what}).")
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except _CORRUPTION as exc:
            raise ModelFileError(path, f"the .npz archive is truncated or corrupted "
                                       f"({exc}).") from None
        with zf:
            try:
                _filecheck.check_zip(zf, archive_size)
            except _filecheck.FileProblem as exc:
                raise ModelFileError(path, f"{exc}.") from None
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise ModelFileError(path, "the archive has duplicate members.")
            bad_names = [n for n in names if not n.endswith(".npy")]
            if bad_names:
                raise ModelFileError(path, f"unexpected members {bad_names[:5]} (a model "
                                           f"file holds only .npy arrays).")
            headers = {i.filename[:-4]: _header(zf, i, path) for i in infos}
        if METADATA_KEY not in headers:
            raise ModelFileError(path, "no 'metadata' array: not a poswise model file.")
        mdtype, mshape, _ = headers[METADATA_KEY]
        if mdtype != np.uint8 or len(mshape) != 1 or mshape[0] > _MAX_METADATA_BYTES:
            raise ModelFileError(path, f"'metadata' must be a 1-D uint8 array; got dtype "
                                       f"{mdtype}, shape {mshape}.")

        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as npz:
                meta = _parse_metadata(npz[METADATA_KEY], path)
                sizes, dt = meta["sizes"], np.dtype(meta["dtype"])
                L = len(sizes) - 1
                expected = {}
                for l in range(L):
                    expected[_weight_key(l)] = (sizes[l + 1], sizes[l])
                    expected[_bias_key(l)] = (sizes[l + 1],)
                for name in meta["extra_arrays"]:
                    expected[EXTRA_PREFIX + name] = None
                missing = sorted(set(expected) - set(headers))
                if missing:
                    raise ModelFileError(path, f"missing arrays {missing[:5]} (the file is "
                                               f"truncated or was edited).")
                unexpected = sorted(set(headers) - set(expected) - {METADATA_KEY})
                if unexpected:
                    raise ModelFileError(path, f"unexpected arrays {unexpected[:5]}.")
                for key, shape in expected.items():
                    hdt, hshape, _ = headers[key]
                    if shape is not None and (hshape != shape or hdt.kind != "f"
                                              or hdt.itemsize != dt.itemsize):
                        raise ModelFileError(
                            path, f"array {key!r} has dtype {hdt} and shape {hshape}; the "
                                  f"metadata (sizes {sizes}, dtype {dt.name}) says "
                                  f"{dt.name} {shape}.")
                    if shape is None and hdt.kind not in _EXTRA_KINDS:
                        raise ModelFileError(path, f"array {key!r} has unsupported dtype "
                                                   f"{hdt}.")
                data = {key: npz[key] for key in expected}
        except ModelFileError:
            raise
        except _CORRUPTION as exc:
            raise ModelFileError(path, f"the archive is corrupted ({type(exc).__name__}: "
                                       f"{exc}).") from None

    if _digest(meta, data) != meta["sha256"]:
        raise ModelFileError(path, "integrity check failed: the sha256 of the contents does "
                                   "not match the one recorded when the file was written "
                                   "(the file was modified or corrupted).")
    weights = [data[_weight_key(l)].astype(dt, copy=False) for l in range(L)]
    biases = [data[_bias_key(l)].astype(dt, copy=False) for l in range(L)]
    for l in range(L):
        if not (np.isfinite(weights[l]).all() and np.isfinite(biases[l]).all()):
            raise ModelFileError(path, f"weights_{l} or biases_{l} contain NaN or inf.")
    try:
        net = MLP.from_config({k: meta[k] for k in CONFIG_FIELDS}, weights, biases)
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from None
    extras = {key[len(EXTRA_PREFIX):]: np.asarray(data[key], order="C") for key in data
              if key.startswith(EXTRA_PREFIX)}
    return net, meta["user"], extras


# The file format owns files: MLP.save writes through this module (see the module doc).
MLP._writer = staticmethod(save_model)


def load_model(path):
    """Load the MLP stored in a poswise model file (or checkpoint) at ``path``.

    See :func:`read_model_file` for the errors; extra arrays and user metadata are
    verified and ignored.
    """
    return read_model_file(path)[0]
