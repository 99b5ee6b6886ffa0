import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: POSWISE_ISA values and the class code each selects (pw_active_isa).
ISAS = {"avx512": 2, "avx2": 1, "none": 0}


def rel_err(a, b):
    """Norm-wise relative error max|a - b| / max|b| (0 when both are 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    return diff / scale if scale > 0 else diff


@pytest.fixture
def data_home():
    """The real-data home ($POSWISE_DATA), or skip."""
    path = os.environ.get("POSWISE_DATA")
    if not path or not Path(path).is_dir():
        pytest.skip("POSWISE_DATA is not set to a data folder")
    return Path(path)


def make_problem(N, D, K, loss, rng):
    """Random inputs and labels for ``loss`` with K outputs."""
    X = rng.standard_normal((N, D))
    if loss == "bce":
        y = (rng.random(N) > 0.5).astype(np.int64)
    elif loss == "mse":
        y = rng.standard_normal((N, K))
    else:
        y = rng.integers(0, K, size=N)
        y[:K] = np.arange(K)[:N] if N >= K else y[:K]
    return X, y


def isolate_downloads(monkeypatch, tmp_path):
    """No proxy for loopback requests, and a cache home that is never the real one."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def isa_env(isa):
    """The environment of a child process with ``POSWISE_ISA=isa`` (read once per
    process) that imports the package under test."""
    from poswise._kernels import _core
    src = str(Path(_core.__file__).resolve().parents[2])
    return dict(os.environ, POSWISE_ISA=isa,
                PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_isa_child(code, isa, stdin=None, timeout=300):
    """Run ``code`` in a fresh interpreter with ``isa_env(isa)``; return its last line of
    output, parsed as JSON."""
    env = isa_env(isa)
    res = subprocess.run([sys.executable, "-c", code], input=stdin, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@functools.cache
def best_isa():
    """The best class this CPU has (what POSWISE_ISA=auto selects)."""
    return run_isa_child("import ctypes; from poswise._kernels import _core; "
                         "print(ctypes.CDLL(_core.__file__).pw_active_isa())", "auto")


def skip_unless_isa(isa):
    """Skip the test when this CPU lacks the class ``isa`` (a key of ISAS)."""
    if ISAS[isa] > best_isa():
        pytest.skip(f"this CPU does not have {isa}")
