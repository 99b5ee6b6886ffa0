"""Checks shared by every file reader (datasets and model files): what a file declares
is compared with what it holds before anything is allocated.

The functions raise :class:`FileProblem` with the problem only; each reader turns it
into its own error class naming the file (``DatasetError``, ``ModelFileError``).
"""
import math
import os
import stat
import struct
import zipfile

import numpy as np

#: A compressed member or stream may expand to at most this many times its stored size
#: (deflate's own ceiling is ~1032; real arrays and images compress 1-10 times).
MAX_DECOMPRESSION_RATIO = 256
#: Expanded sizes up to this many bytes are always allowed (a small array of zeros
#: compresses far beyond any ratio, harmlessly).
SMALL_EXPANDED_BYTES = 1 << 20


def max_expanded(stored):
    """The most bytes ``stored`` compressed bytes may declare (see the two constants)."""
    return max(MAX_DECOMPRESSION_RATIO * int(stored), SMALL_EXPANDED_BYTES)


class FileProblem(Exception):
    """What is wrong with a file (without its name: the caller adds it)."""


class ObjectArrayProblem(FileProblem):
    """A ``.npy`` array holds Python objects (``dtype`` says which)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(f"it holds Python objects (dtype {dtype}); reading them would "
                         f"need pickle, which can run arbitrary code")


def open_regular(path):
    """Open ``path`` for binary reading, refusing at once what is not a regular file (a
    FIFO would block forever, a device would never end)."""
    st = os.stat(path)          # FileNotFoundError / PermissionError as usual
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise FileProblem(f"it is {kind}, not a regular file")
    # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not block
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileProblem("it is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_zip(zf, archive_size):
    """Every member of ``zf`` must fit in the archive: stored members as large as they
    declare, deflated members within ``MAX_DECOMPRESSION_RATIO``, no other methods."""
    for info in zf.infolist():
        name = info.filename
        if info.header_offset + info.compress_size > archive_size:
            raise FileProblem(f"member {name!r} declares {info.compress_size} stored bytes "
                              f"beyond the end of the {archive_size}-byte archive")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise FileProblem(f"member {name!r} is stored uncompressed but declares "
                                  f"{info.file_size} bytes in {info.compress_size}")
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > max_expanded(info.compress_size):
                raise FileProblem(f"member {name!r} declares {info.file_size} bytes "
                                  f"compressed into {info.compress_size}, more than "
                                  f"{MAX_DECOMPRESSION_RATIO} times; refused as corrupt")
        else:
            raise FileProblem(f"member {name!r} uses compression method "
                              f"{info.compress_type}; only stored and deflated are read")


def read_npy_header(f):
    """``(dtype, shape, fortran_order, header_length)`` of the ``.npy`` at ``f``'s
    position, read without its data; object dtypes are refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
    except (ValueError, TypeError, EOFError, OSError, SyntaxError, struct.error,
            OverflowError, zipfile.BadZipFile) as exc:
        raise FileProblem(f"not a valid .npy array ({exc})") from None
    if dtype.hasobject:
        raise ObjectArrayProblem(dtype)
    return dtype, tuple(int(s) for s in shape), fortran, f.tell()


def nbytes(dtype, shape):
    """Bytes declared by ``shape`` of ``dtype`` (Python ints: no overflow)."""
    return math.prod(shape) * np.dtype(dtype).itemsize
