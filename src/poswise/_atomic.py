"""Atomic file writes: readers see the old file or the new one, never a mix.

:func:`atomic_write` writes to a temporary file next to the destination, flushes and
fsyncs it, then moves it over the destination with ``os.replace`` (and fsyncs the
folder). On any failure, ``KeyboardInterrupt`` included, the temporary file is removed and
the previous file is left untouched.

Temporary names are ``.<start of the name>.<pid>-<12 hex>.tmp``: the start of the name is
cut so that the whole stays within the file system's ``NAME_MAX`` (a legal 240-character
destination works). A writer killed by SIGKILL cannot clean up; the next write to the same
destination removes temporaries whose writer process no longer exists (those of live
writers, i.e. concurrent saves, are left alone).
"""
import errno
import os
import secrets

def _fsync_dir(dirname):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_TMP_SUFFIX = ".tmp"


def _name_max(dirname):
    try:
        return int(os.pathconf(dirname, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def _temp_prefix(dirname, basename):
    """``.<start of basename>.``: short enough for ``<pid>-<12 hex>.tmp`` to follow
    within the file-system's name limit (a 240-character destination is legal)."""
    room = _name_max(dirname) - len(".") - len(".") - 20 - 1 - 12 - len(_TMP_SUFFIX)
    stem = os.fsencode(basename)[:max(room, 1)].decode(errors="ignore") or "m"
    return f".{stem}."


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True          # exists (owned by someone else) or cannot tell: keep it
    return True


def _remove_stale_temps(dirname, prefix):
    """Delete temporaries of this destination whose writer process is gone (a save that
    was killed); temporaries of live writers (concurrent saves) are left alone."""
    try:
        names = os.listdir(dirname)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        tag = name[len(prefix):-len(_TMP_SUFFIX)]
        pid, _, token = tag.partition("-")
        if not (pid.isdigit() and len(token) == 12) or _pid_alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(dirname, name))
        except OSError:
            pass


def _open_temp(dirname, basename):
    """Create a new file next to the destination, with the mode a plain ``open`` would
    give it (mkstemp's 0600 would survive the rename)."""
    prefix = _temp_prefix(dirname, basename)
    _remove_stale_temps(dirname, prefix)
    for _ in range(100):
        tmp = os.path.join(dirname, f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"
                                    f"{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", dirname)


def atomic_write(path, write):
    """Write ``path`` atomically; ``write(fh)`` writes the content to a binary file."""
    path = os.fsdecode(os.fspath(path))
    dirname, basename = os.path.split(os.path.abspath(path))
    tmp, fd = _open_temp(dirname, basename)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # KeyboardInterrupt included: never leave a partial temporary file behind.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)
