"""The IDX format (MNIST, Fashion-MNIST): one reader, two datasets.

An IDX file is a 4-byte magic number (``0x0000 08 ndim``: unsigned bytes, ``ndim``
dimensions), ``ndim`` big-endian uint32 dimensions, then the bytes, row-major. Files may
be gzipped. The reader checks the magic number and the declared size *before* it
allocates: gzip is decompressed as a stream, header first, into a buffer of exactly the
declared size, whose total is capped by ``MAX_DECOMPRESSION_RATIO`` times the compressed
size and by the memory limit.
"""
import os
import zlib
from dataclasses import dataclass

import numpy as np

from .._layout import check_dtype
from ._base import (MAX_DECOMPRESSION_RATIO, DatasetError, check_alloc, check_bool,
                    max_expanded,
                    check_labels, check_path, declared_bytes, make_dataset, open_regular,
                    pixels_to_float, src)
from ._download import check_base_urls, download
from ._home import SYSTEM_DIRS, candidate_dirs, get_data_home, missing_error

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

MNIST_CLASSES = tuple(str(k) for k in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class IdxSpec:
    """An IDX dataset: its name, title, classes and the data-home subfolders."""
    name: str
    title: str
    classes: tuple
    subdirs: tuple


SPECS = {
    "mnist": IdxSpec("mnist", "MNIST", MNIST_CLASSES, ("mnist",)),
    "fashion_mnist": IdxSpec("fashion_mnist", "Fashion-MNIST", FASHION_MNIST_CLASSES,
                             ("fashion_mnist", "fashion-mnist")),
}


# ----------------------------------------------------------------------- reader

class _Stream:
    """Bytes of a file, decompressed on the fly when it is gzipped."""

    def __init__(self, f, fname):
        self.f, self.fname = f, fname
        self.size = os.fstat(f.fileno()).st_size
        head = f.read(2)
        f.seek(0)
        self.gzip = head == _GZIP_MAGIC
        self.dec = zlib.decompressobj(wbits=31) if self.gzip else None
        self.pending = b""

    def _more(self, n):
        """Decompress at most ``n`` more bytes into ``pending``; False at the end."""
        while True:
            if self.dec.eof:
                # end of a gzip member: another member may follow (multi-member files);
                # zero padding after the last one is allowed, as gzip allows it
                data = self.dec.unused_data.lstrip(b"\0")
                while not data:
                    data = self.f.read(_CHUNK)
                    if not data:
                        return False
                    data = data.lstrip(b"\0")
                self.dec = zlib.decompressobj(wbits=31)
            elif self.dec.unconsumed_tail:
                data = self.dec.unconsumed_tail
            else:
                data = self.f.read(_CHUNK)
                if not data:
                    raise DatasetError(f"{src(self.fname)} is a corrupt or truncated "
                                       f"gzip file: it ends inside a compressed stream.")
            out = self.dec.decompress(data, n)
            if out:
                self.pending += out
                return True

    def read(self, n):
        """Up to ``n`` bytes (fewer only at the end)."""
        if not self.gzip:
            return self.f.read(n)
        try:
            while len(self.pending) < n and self._more(n - len(self.pending)):
                pass
        except zlib.error as exc:
            raise DatasetError(f"{src(self.fname)} is a corrupt or truncated gzip file: "
                               f"{exc}") from None
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def readinto(self, buf):
        """Fill ``buf`` (a uint8 array); return the number of bytes written."""
        if not self.gzip:
            return self.f.readinto(memoryview(buf).cast("B"))
        n, view = 0, memoryview(buf).cast("B")
        while n < len(view):
            chunk = self.read(min(_CHUNK, len(view) - n))
            if not chunk:
                break
            view[n:n + len(chunk)] = chunk
            n += len(chunk)
        return n


def read_idx(fname, magic):
    """Read an IDX file (gzipped or not) whose magic number must be ``magic``."""
    with open_regular(fname) as f:
        stream = _Stream(f, fname)
        what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        head = stream.read(4)
        if len(head) < 4:
            raise DatasetError(f"{src(fname)} is too short to be an IDX file "
                               f"({len(head)} bytes).")
        got = int.from_bytes(head, "big")
        if got != magic:
            raise DatasetError(f"{src(fname)} has IDX magic number 0x{got:08x}; expected "
                               f"0x{magic:08x} ({what}).")
        ndim = magic & 0xFF
        raw_dims = stream.read(4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise DatasetError(f"{src(fname)} is truncated: its IDX header is cut short.")
        dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
        header = 4 + 4 * ndim
        nbytes = declared_bytes(dims, 1)       # Python ints: no overflow
        if stream.gzip:
            cap = max_expanded(stream.size)
            if nbytes > cap:
                raise DatasetError(
                    f"{src(fname)}: its IDX header declares dimensions {dims} "
                    f"({nbytes} bytes) but the file is a {stream.size}-byte gzip; more "
                    f"than {MAX_DECOMPRESSION_RATIO} times its size is refused as "
                    f"corrupt.")
        elif header + nbytes != stream.size:
            raise DatasetError(f"{src(fname)} has {stream.size} bytes but its IDX header "
                               f"declares dimensions {dims}, i.e. {header + nbytes} bytes.")
        check_alloc(nbytes, fname, f"the IDX {what} {dims}")
        if dims[0] == 0:
            raise DatasetError(f"{src(fname)}: its IDX header declares no {what} "
                               f"(dimensions {dims}).")
        out = np.empty(nbytes, dtype=np.uint8)
        got_n = stream.readinto(out)
        if got_n < nbytes:
            raise DatasetError(f"{src(fname)} is truncated: {header + got_n} bytes of data, "
                               f"but its IDX header declares dimensions {dims}, i.e. "
                               f"{header + nbytes} bytes.")
        if stream.gzip and stream.read(1):
            raise DatasetError(f"{src(fname)} holds more bytes than its IDX header "
                               f"declares (dimensions {dims}, {header + nbytes} bytes).")
    return out.reshape(dims)


# ---------------------------------------------------------------------- loaders

def _variants(base):
    """File names accepted for one IDX file, in order of preference."""
    dotted = base.replace("-idx", ".idx", 1)
    return [base, dotted, base + ".gz", dotted + ".gz"]


def _find_file(d, base):
    return next((d / n for n in _variants(base) if (d / n).is_file()), None)


def _load_split(images, labels, dtype, n_classes):
    img = read_idx(images, IDX_IMAGES_MAGIC)
    check_alloc(img.size * np.dtype(dtype).itemsize, images, "the float images")
    lab = read_idx(labels, IDX_LABELS_MAGIC)
    if lab.shape[0] != img.shape[0]:
        raise DatasetError(f"{src(labels)} holds {lab.shape[0]} labels but "
                           f"{src(images)} holds {img.shape[0]} images.")
    X = pixels_to_float(img, dtype, src(images))
    y = check_labels(lab, img.shape[0], n_classes, src(labels))
    return X, y


def load_idx_dataset(spec, path, dtype, download_, base_url, owner):
    """Find (or download) and read the four IDX files of ``spec``."""
    dtype = check_dtype(dtype, owner)
    path = check_path(path, owner)
    download_ = check_bool(download_, "download", owner)
    dirs = candidate_dirs(path, spec.subdirs, SYSTEM_DIRS.get(spec.name, ()))

    def scan():
        found = []
        for d in dirs:
            files = {k: _find_file(d, v) for k, v in _FILES.items()}
            found.append((d, files))
            if all(files.values()):
                return d, files, found
        return None, None, found

    folder, files, found = scan()
    if folder is None and download_:
        urls = check_base_urls(base_url, spec.name, owner)
        home = get_data_home(path)
        partial = [(d, f) for d, f in found if any(f.values())
                   and (d == home or home in d.parents)]
        target = partial[0][0] if partial else home / spec.subdirs[0]
        present = dict(partial[0][1]) if partial else {}
        for key, base in _FILES.items():
            if present.get(key) is None:
                download(base + ".gz", urls, target, spec.title, spec.subdirs[0], path,
                         spec.name)
        folder, files, found = scan()
    if folder is None:
        partial = [(d, f) for d, f in found if any(f.values())]
        best = None
        if partial:
            d, f = max(partial, key=lambda p: sum(v is not None for v in p[1].values()))
            best = (d, [_FILES[k] + "[.gz]" for k, v in f.items() if v is None])
        expected = [v + "[.gz]" for v in _FILES.values()]
        extra = ""
        if spec.name == "fashion_mnist":
            extra = " On Debian/Ubuntu: apt install dataset-fashion-mnist."
        raise missing_error(spec.title, expected, dirs, best, get_data_home(path),
                            spec.subdirs[0], True, extra)

    n = len(spec.classes)
    Xtr, ytr = _load_split(files["train_images"], files["train_labels"], dtype, n)
    Xte, yte = _load_split(files["test_images"], files["test_labels"], dtype, n)
    return make_dataset(Xtr, ytr, Xte, yte, spec.name, spec.classes, src(folder))


_DOC = """Load {title} ({what}, 10 classes).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Folder holding the four IDX files, or a data home holding a {subdirs}
        subfolder. Default: the data home (see :func:`get_data_home`){system}.
    dtype : {{np.float64, np.float32}}, default=np.float64
        Float dtype of ``X_train`` and ``X_test``.
    download : bool, default=False
        If True, download the files that are missing (from the mirrors in
        ``BASE_URLS[{name!r}]``, in order) and check their md5 checksums. They go to the
        data-home folder that already holds some of them, else to
        ``<data home>/{subdir}``.
    base_url : str or sequence of str, optional
        Mirror(s) to download from instead of ``BASE_URLS[{name!r}]``.

    Returns
    -------
    Dataset
        60000 training and 10000 test samples of 784 features (row-major 28x28),
        scaled to [0, 1]; ``name={name!r}``; ``classes`` are {classes}.

    Raises
    ------
    FileNotFoundError
        If some of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` are missing (each may be
        gzipped, ``.gz``, and may use the ``train-images.idx3-ubyte`` spelling) and
        ``download`` is False.
    DatasetError
        If a file is corrupt: wrong IDX magic number, truncated gzip, size not matching
        the header (or beyond the limits), label count not matching the image count,
        labels out of range, or a downloaded file whose md5 does not match.
    DownloadError
        If ``download`` is True and no mirror gave the file within the limits.
    """


def load_mnist(path=None, *, dtype=np.float64, download=False, base_url=None):
    return load_idx_dataset(SPECS["mnist"], path, dtype, download, base_url, "load_mnist")


def load_fashion_mnist(path=None, *, dtype=np.float64, download=False, base_url=None):
    return load_idx_dataset(SPECS["fashion_mnist"], path, dtype, download, base_url,
                            "load_fashion_mnist")


load_mnist.__doc__ = _DOC.format(
    title="MNIST", what="28x28 grayscale digits", subdirs="``mnist/``", subdir="mnist",
    system="", name="mnist", classes="``('0', ..., '9')``")
load_fashion_mnist.__doc__ = _DOC.format(
    title="Fashion-MNIST", what="28x28 grayscale clothing images",
    subdirs="``fashion_mnist/`` (or ``fashion-mnist/``)", subdir="fashion_mnist",
    system=", then ``/usr/share/datasets/fashion-mnist`` (where Debian's "
           "``dataset-fashion-mnist`` package installs the files)",
    name="fashion_mnist",
    classes="``('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', "
            "'Shirt', 'Sneaker', 'Bag', 'Ankle boot')``")
