"""pytest configuration of the poswise benchmarks.

Environment switches (read by ``_bench_common``):

- ``POSWISE_BENCH_SMOKE=1``: small shapes, a couple of epochs per round (the smoke test);
- ``POSWISE_BENCH_SCALE=x``: multiply every per-round time budget by ``x``;
- ``POSWISE_BENCH_THREADS=n``: limit BLAS (threadpoolctl) and torch to ``n`` threads;
- ``POSWISE_DATA``: where ``poswise.datasets`` finds the real cat / MNIST files.

The JSON written by ``--benchmark-json`` gets, in ``machine_info["poswise"]``, the command
line that produced it, the library versions, ``threadpool_info()``, torch's parallel
configuration and the load average before and after the run; ``scripts/bench_report.py``
turns it into ``docs/performance.md``.
"""
import os
import platform
import shlex
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import _bench_common as common  # noqa: E402

_START = {}


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def pytest_configure(config):
    _START["loadavg"] = _loadavg()
    _START["time"] = time.time()


@pytest.fixture(scope="session", autouse=True)
def _thread_limits():
    if common.THREADS is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=common.THREADS):
        yield


def _command(config):
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in (
        "PYTHONPATH", "POSWISE_DATA", "POSWISE_BENCH_SMOKE", "POSWISE_BENCH_SCALE",
        "POSWISE_BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        if os.environ.get(k))
    args = " ".join(shlex.quote(a) for a in config.invocation_params.args)
    cmd = f"python -m pytest {args}"
    return (env + " " + cmd).strip()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions():
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "poswise", "torch", "sklearn", "threadpoolctl",
                 "pytest_benchmark"):
        mod = common.optional_import(name)
        out[name] = getattr(mod, "__version__", None) if mod is not None else None
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    info = {
        "command": _command(config),
        "cwd": str(config.invocation_params.dir),
        "smoke": common.SMOKE,
        "scale": common.SCALE,
        "threads": common.THREADS,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "versions": _versions(),
        "threadpool_info": common.threadpool_info(),
        "loadavg_start": _START.get("loadavg"),
        "loadavg_end": _loadavg(),
        "wall_s": time.time() - _START.get("time", time.time()),
    }
    torch = common.optional_import("torch")
    if torch is not None:
        info["torch_parallel_info"] = torch.__config__.parallel_info()
        info["torch_threads"] = torch.get_num_threads()
    machine_info["poswise"] = info
