"""Checksummed, bounded downloads of the dataset files.

A file is streamed into a temporary file next to its destination, checked and only then
renamed into place; on any failure the temporary file is removed. Every download is
bounded (issue 12, family 6):

- in size: a body longer than the file's expected size plus a margin
  (``DOWNLOAD_SIZE_MARGIN``) is cut off, and a ``Content-Length`` beyond it is refused
  before reading;
- in time: each socket operation waits at most ``DOWNLOAD_TIMEOUT`` seconds, the whole
  file must arrive within ``DOWNLOAD_DEADLINE`` seconds, and after the first
  ``DOWNLOAD_TIMEOUT`` seconds at least ``DOWNLOAD_MIN_RATE`` bytes per second on
  average (a server trickling a byte at a time is stopped quickly);
- a body shorter than announced (or than the published size) is reported as an
  incomplete download, not as a checksum mismatch.

The settings are read from the ``poswise.datasets`` namespace at call time, so
``poswise.datasets.DOWNLOAD_DEADLINE = 60`` (or a test's ``monkeypatch``) changes them.
"""
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from .._layout import format_bytes
from ._base import DatasetError, DownloadError
from ._home import ENV_VAR, env_state, get_data_home

#: Base URLs tried in order by the downloaders; a file name is appended to each one.
#: Change an entry (or pass ``base_url=``) to download from a mirror.
BASE_URLS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
    "cifar10": [
        "https://www.cs.toronto.edu/~kriz/",
    ],
}

#: Published md5 checksums of the downloadable files, by *file key*: the file name,
#: prefixed by ``<dataset>/`` where two datasets publish files of the same name
#: (Fashion-MNIST reuses MNIST's names). See :func:`file_key`.
MD5_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "fashion_mnist/train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "fashion_mnist/train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "fashion_mnist/t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
}

#: Sizes in bytes of the published files (same keys as ``MD5_CHECKSUMS``):
#: the size cap is this plus ``DOWNLOAD_SIZE_MARGIN``, and a short body is reported
#: against it.
EXPECTED_SIZES = {
    "train-images-idx3-ubyte.gz": 9_912_422,
    "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877,
    "t10k-labels-idx1-ubyte.gz": 4_542,
    "fashion_mnist/train-images-idx3-ubyte.gz": 26_421_880,
    "fashion_mnist/train-labels-idx1-ubyte.gz": 29_515,
    "fashion_mnist/t10k-images-idx3-ubyte.gz": 4_422_102,
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": 5_148,
    "cifar-10-python.tar.gz": 170_498_071,
}

#: Seconds to wait for a server (connection or any single read) before giving up.
DOWNLOAD_TIMEOUT = 30.0
#: Seconds a whole file may take to download.
DOWNLOAD_DEADLINE = 3600.0
#: Minimum average transfer rate (bytes per second) after the first DOWNLOAD_TIMEOUT s.
DOWNLOAD_MIN_RATE = 20_000
#: A body may exceed the expected size by this fraction (plus 64 kB) before it is cut.
DOWNLOAD_SIZE_MARGIN = 0.05
#: The size cap of a file that has no expected size.
DOWNLOAD_MAX_BYTES = 1 << 30

_CHUNK = 1 << 16
_SLACK = 1 << 16

_SETTINGS = ("BASE_URLS", "MD5_CHECKSUMS", "EXPECTED_SIZES", "DOWNLOAD_TIMEOUT",
             "DOWNLOAD_DEADLINE", "DOWNLOAD_MIN_RATE", "DOWNLOAD_SIZE_MARGIN",
             "DOWNLOAD_MAX_BYTES")


def setting(name):
    """The current value of a download setting (the package's attribute if set there)."""
    pkg = sys.modules.get(__package__)
    if pkg is not None and hasattr(pkg, name):
        return getattr(pkg, name)
    return globals()[name]


def file_key(dataset, fname):
    """The key of a published file in ``MD5_CHECKSUMS``/``EXPECTED_SIZES``."""
    prefixed = f"{dataset}/{fname}"
    return prefixed if prefixed in setting("MD5_CHECKSUMS") else fname


def size_cap(key):
    expected = setting("EXPECTED_SIZES").get(key)
    if expected is None:
        return int(setting("DOWNLOAD_MAX_BYTES"))
    return int(expected * (1 + setting("DOWNLOAD_SIZE_MARGIN"))) + _SLACK


def check_base_urls(base_url, key, owner):
    if base_url is None:
        urls = setting("BASE_URLS")[key]
        urls = [urls] if isinstance(urls, str) else list(urls)
    elif isinstance(base_url, str):
        urls = [base_url]
    else:
        try:
            urls = list(base_url)
        except TypeError:
            urls = None
        if not urls or not all(isinstance(u, str) for u in urls):
            urls = None
    if not urls:
        raise ValueError(f"The 'base_url' parameter of {owner} must be a str, a non-empty "
                         f"sequence of str or None. Got {base_url!r} instead.")
    return [u if u.endswith("/") else u + "/" for u in urls]


def verify_md5(fname, key=None):
    """Check a file already on disk against ``MD5_CHECKSUMS`` (if listed there)."""
    expected = setting("MD5_CHECKSUMS").get(key or Path(fname).name)
    if expected is None:
        return
    md5 = hashlib.md5()
    with open(fname, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
    if md5.hexdigest() != expected:
        raise DatasetError(f"{str(fname)!r} has md5 {md5.hexdigest()}, not the published "
                           f"checksum {expected}; delete it and download it again.")


class _Failure(Exception):
    """One mirror failed; ``kind`` is 'network', 'checksum' or 'limit'."""

    def __init__(self, kind, text):
        super().__init__(text)
        self.kind = kind


class _Watchdog:
    """Shuts the connections of one download down when its deadline passes, so that
    the deadline also holds while a server trickles its status line or headers (where
    no poswise code runs between socket reads)."""

    def __init__(self, seconds):
        self.fired = False
        self._socks = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def add(self, sock):
        with self._lock:
            self._socks.append(sock)
            fired = self.fired
        if fired:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fire(self):
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


def _opener(watchdog):
    """A urllib opener (proxies, redirects as usual) whose connections ``watchdog`` sees."""
    def watched(base):
        class Connection(base):
            def connect(self):
                super().connect()
                watchdog.add(self.sock)
        return Connection

    http_conn = watched(http.client.HTTPConnection)
    https_conn = watched(http.client.HTTPSConnection)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_conn, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_conn, req, context=self._context)

    return urllib.request.build_opener(Handler(), SecureHandler())


def _fetch(url, out, md5, cap):
    """Stream ``url`` into ``out``; return (bytes received, bytes announced or None).
    Raise _Failure."""
    timeout = float(setting("DOWNLOAD_TIMEOUT"))
    deadline = float(setting("DOWNLOAD_DEADLINE"))
    min_rate = float(setting("DOWNLOAD_MIN_RATE"))
    t0 = time.monotonic()
    received = 0
    declared = None
    watchdog = _Watchdog(deadline)

    def too_late():
        return _Failure("limit", f"not finished after the {deadline:g} s deadline "
                                 f"({format_bytes(received)} received)")
    try:
        with watchdog, _opener(watchdog).open(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.strip().isdigit():
                declared = int(length)
                if declared > cap:
                    raise _Failure("limit", f"the server announces {format_bytes(declared)}"
                                            f", more than the {format_bytes(cap)} allowed "
                                            f"for this file")
            while True:
                # read1: returns after one socket read, so the clock is checked often
                # even when a server trickles bytes.
                chunk = resp.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > cap:
                    raise _Failure("limit", f"the body exceeds the {format_bytes(cap)} "
                                            f"allowed for this file; stopped")
                md5.update(chunk)
                out.write(chunk)
                elapsed = time.monotonic() - t0
                if elapsed > deadline:
                    raise too_late()
                if elapsed > timeout and received < min_rate * (elapsed - timeout):
                    raise _Failure("limit", f"too slow: {format_bytes(received)} in "
                                            f"{elapsed:.0f} s, below the minimum of "
                                            f"{format_bytes(min_rate)}/s")
    except _Failure:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError/HTTPError, socket errors and timeouts are OSErrors;
        # ValueError covers malformed URLs.
        if watchdog.fired:
            raise too_late() from None
        raise _network_failure(exc, received) from None
    if watchdog.fired:        # a shut-down socket reads as a (false) end of the body
        raise too_late()
    if declared is not None and received < declared:
        raise _Failure("network", f"incomplete download: received {received} of the "
                                  f"{declared} bytes announced")
    return received, declared


def _network_failure(exc, received):
    """The _Failure describing an exception of urllib, http.client or a socket."""
    if isinstance(exc, http.client.IncompleteRead):
        return _Failure("network", f"incomplete download: the connection closed after "
                                   f"{received + len(exc.partial)} bytes")
    reason = getattr(exc, "reason", None) or exc
    what = f"{type(exc).__name__}: {reason}"
    if received:
        what = f"incomplete download after {received} bytes ({what})"
    return _Failure("network", what)


def download(fname, urls, target, title, folder_name, path, dataset):
    """Download ``fname`` from the first working mirror into ``target``, atomically.

    Returns the path of the file. Raises :class:`DownloadError` when no mirror gave a
    complete file within the limits, :class:`DatasetError` when a complete file did not
    match its published checksum.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    key = file_key(dataset, fname)
    expected_md5 = setting("MD5_CHECKSUMS").get(key)
    expected_size = setting("EXPECTED_SIZES").get(key)
    cap = size_cap(key)
    final = target / fname
    failures, bad_checksum = [], False
    for base in urls:
        url = base + fname
        fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=target)
        try:
            md5 = hashlib.md5()
            try:
                with os.fdopen(fd, "wb") as out:
                    received, declared = _fetch(url, out, md5, cap)
            except _Failure as exc:
                failures.append(f"{url} ({exc})")
                continue
            digest = md5.hexdigest()
            if expected_md5 is not None and digest != expected_md5:
                # without a Content-Length, a body shorter than the published file is
                # reported as what it most likely is: a cut connection
                if declared is None and expected_size is not None \
                        and received < expected_size:
                    failures.append(f"{url} (incomplete download: received {received} "
                                    f"bytes, the published file has {expected_size})")
                    continue
                bad_checksum = True
                failures.append(f"{url} (md5 {digest} does not match the published "
                                f"checksum {expected_md5})")
                continue
            os.replace(tmp, final)
            tmp = None
            return final
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
    home = get_data_home(path)
    msg = (f"Downloading {title} failed: could not fetch {fname!r}. Tried: "
           f"{'; '.join(failures)}. To install the data manually, download {fname!r} "
           f"yourself and put it in {str(target)!r}; or put the files in "
           f"'<folder>/{folder_name}/' and set the {ENV_VAR} environment variable to "
           f"<folder> ({env_state()}; data home {str(home)!r}), or pass path=<folder>.")
    if bad_checksum:
        raise DatasetError(msg)
    raise DownloadError(msg)
