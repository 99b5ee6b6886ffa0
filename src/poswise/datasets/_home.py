"""Where dataset files are looked for: the data home and the system folders.

``path`` given to a loader may be the folder holding the files themselves or a *data
home* holding one subfolder per dataset. Without ``path`` the data home is the folder
named by ``POSWISE_DATA``, else a per-user cache folder. Some datasets are also looked for
where a system package installs them (``SYSTEM_DIRS``).
"""
import os
from pathlib import Path

from ._base import check_path

#: Environment variable naming the data home.
ENV_VAR = "POSWISE_DATA"

#: Folders where operating-system packages install datasets, searched after the data
#: home when no ``path`` is given (Debian: ``apt install dataset-fashion-mnist``).
SYSTEM_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


def get_data_home(path=None):
    """Return the data home folder.

    Parameters
    ----------
    path : str or os.PathLike, optional
        If given, it is returned (with ``~`` expanded).

    Returns
    -------
    pathlib.Path
        ``path`` if given; else the folder named by the ``POSWISE_DATA`` environment
        variable if it is set and not empty; else ``$XDG_CACHE_HOME/poswise`` if
        ``XDG_CACHE_HOME`` is set; else ``~/.cache/poswise``. The folder is not created.
    """
    path = check_path(path, "get_data_home")
    if path is not None:
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "poswise"


def candidate_dirs(path, subdirs, system=()):
    """Folders to search, in order: ``path`` itself, then ``path/<sub>`` for each sub.

    Without ``path`` the data home is used (its subfolders first, then itself), then the
    ``system`` folders.
    """
    base = get_data_home(path)
    subs = [base / s for s in subdirs]
    dirs = [base] + subs if path is not None else subs + [base] + [Path(s) for s in system]
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def env_state():
    value = os.environ.get(ENV_VAR)
    return f"{ENV_VAR}={value!r}" if value else f"{ENV_VAR} is not set"


def where_hint(folder_name, home):
    return (f"Place the files in one of these folders, pass path=<folder>, or set the "
            f"{ENV_VAR} environment variable to a data home holding a '{folder_name}/' "
            f"subfolder ({env_state()}; data home {str(home)!r}).")


def missing_error(title, expected, dirs, best_missing, home, folder_name, download_hint,
                  extra=""):
    msg = (f"{title} files not found. Expected {', '.join(expected)} in one of these "
           f"folders: {', '.join(repr(str(d)) for d in dirs)}.")
    if best_missing is not None:
        folder, missing = best_missing
        msg += f" Folder {str(folder)!r} lacks {', '.join(missing)}."
    msg += " " + where_hint(folder_name, home)
    if download_hint:
        msg += " Or pass download=True to fetch them."
    return FileNotFoundError(msg + extra)
