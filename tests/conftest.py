import os
from pathlib import Path

import numpy as np
import pytest


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
