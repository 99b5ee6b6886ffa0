"""``poswise compare --mpi``: the experiment's runs spread over MPI ranks
(poswise.experiments.spread) give the results of the single process, on simulated ranks
and under a real ``mpirun``."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import poswise
from poswise.distributed import DistributedError, run_ranks
from poswise.experiments import CompareError, compare
from poswise.experiments import spread
from poswise.experiments.spread import compare_spread, grid_of

# Clock readings and facts about the process: the only things allowed to differ.
_MACHINE = {"date", "threadpools", "mpi_ranks", "platform", "python", "cpu_count"}


def _timeless(obj):
    """``obj`` without its clock readings (keys naming seconds or times)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items()
                if "second" not in k and "time" not in k and k not in _MACHINE}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def _data(n=70, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    k = n * 3 // 4
    return X[:k], y[:k], X[k:], y[k:]


SETTINGS = dict(hidden=(5, 3), max_epochs=12, seeds=2, lr=[0.05, 0.2],
                update=["sgd", "adam"], update_params={"momentum": 0.5}, threads=1,
                target_loss=0.45, thresholds=[0.6])


def test_grid_is_compares_order():
    """The grid: seed-major, then lr, then rule, then schedule (compare's run order)."""
    ref = compare(_data(), **{**SETTINGS, "update": ["sgd", "momentum"], "max_epochs": 1,
                              "warmup": False})
    grid = grid_of(seeds=2, lr=[0.05, 0.2], update=["sgd", "momentum"],
                   update_params={"momentum": 0.5})
    assert [(s, lr, o, u) for s, lr, o, u, _ in grid] == [
        (r["seed"], r["lr"], r["optimizer"], r["update"]) for r in ref["runs"]]
    assert grid[-1][4].hyper() == ref["runs"][-1]["update_params"]


@pytest.mark.parametrize("K", [1, 3, 20])
def test_spread_equals_single_process(K):
    """Any number of simulated ranks (20: more ranks than runs) gives the single process's
    runs in its order, its settings and its summary, up to the clock."""
    data = _data()
    ref = compare(data, **SETTINGS)
    out = run_ranks(K, lambda comm: compare_spread(comm, data, **SETTINGS))
    assert all(r is None for r in out[1:])
    got = out[0]
    assert len(got["runs"]) == len(ref["runs"]) == 16
    assert _timeless(got["runs"]) == _timeless(ref["runs"])
    assert _timeless(got["settings"]) == _timeless(ref["settings"])
    assert got["settings"]["mpi_ranks"] == K
    assert _timeless(got["summary"]) == _timeless(ref["summary"])
    assert got["interrupted"] is ref["interrupted"] is False
    # the runs really were trained: not all alike, and some reached the target
    assert len({tuple(r["loss"]) for r in got["runs"]}) == 16
    assert any(r["epochs_to_target"] is not None for r in got["runs"])


def test_invalid_setting_fails_on_every_rank():
    """A bad setting raises the single process's CompareError on every rank, also on a
    rank that has no run of its own."""
    with pytest.raises(CompareError) as ref:
        compare(_data(), hidden=(5,), loss="mse", seeds=1, max_epochs=2)
    errors = run_ranks(3, lambda comm: compare_spread(comm, _data(), hidden=(5,), loss="mse",
                                                      seeds=1, max_epochs=2,
                                                      optimizers=["gd", "pwo"]),
                       return_exceptions=True)
    assert all(isinstance(e, CompareError) and str(e) == str(ref.value) for e in errors)
    errors = run_ranks(2, lambda comm: compare_spread(comm, _data(), seeds=[1, 1]),
                       return_exceptions=True)
    assert all(isinstance(e, CompareError) and "repeat" in str(e) for e in errors)


def test_failure_on_one_rank_reaches_every_rank(monkeypatch):
    """A failure on one rank: that rank raises it, the others a DistributedError naming
    it, and nobody hangs in a collective."""
    real = spread.compare

    def failing(dataset, *, seeds, **kw):
        if seeds == [1]:
            raise MemoryError("no room for seed 1")
        return real(dataset, seeds=seeds, **kw)
    monkeypatch.setattr(spread, "compare", failing)
    errors = run_ranks(2, lambda comm: compare_spread(comm, _data(), seeds=2, max_epochs=2,
                                                      optimizers=["gd"]),
                       return_exceptions=True)
    assert isinstance(errors[1], MemoryError)
    assert isinstance(errors[0], DistributedError)
    assert "rank 1" in str(errors[0]) and "no room for seed 1" in str(errors[0])


def test_interrupt_keeps_the_finished_runs(monkeypatch):
    """Ctrl-C on one rank stops its remaining runs; the root still gets every finished
    run, in order, and the results say interrupted."""
    real = spread.compare

    def interrupted(dataset, *, seeds, **kw):
        if seeds == [2]:
            raise KeyboardInterrupt
        return real(dataset, seeds=seeds, **kw)
    monkeypatch.setattr(spread, "compare", interrupted)
    got = run_ranks(2, lambda comm: compare_spread(comm, _data(), seeds=4, max_epochs=3,
                                                   optimizers=["pwo"]))[0]
    assert got["interrupted"] is True
    assert [r["seed"] for r in got["runs"]] == [0, 1, 3]     # rank 0 stopped at seed 2


def test_cli_compare_refuses_under_a_launcher(monkeypatch, tmp_path, capsys):
    from poswise.cli import main
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    assert main(["compare", "--max-epochs", "2", "--out", str(tmp_path / "o")]) == 2
    assert "without --mpi" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _mpirun():
    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    if not Path(mpirun).exists():
        pytest.skip("no mpirun")
    return mpirun


def test_cli_compare_mpi(tmp_path):
    """mpirun -n 2 poswise compare --mpi writes the results of the same command run by one
    process (rank 0 writes; the table lists every run)."""
    mpirun = _mpirun()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(poswise.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH")) if p))
    args = ["-m", "poswise", "compare", "--max-epochs", "15", "--seeds", "2", "--lr",
            "0.05,0.1", "--update", "sgd,momentum", "--threads", "1", "--quiet",
            "--format", "svg"]
    proc = subprocess.run([mpirun, "--oversubscribe", "-n", "2", sys.executable, *args,
                           "--mpi", "--out", str(tmp_path / "mpi")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Wrote to") == 1            # one rank reports
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("mpi", "one"))
    assert len(a["runs"]) == 16 and a["settings"]["mpi_ranks"] == 2
    assert _timeless(a["runs"]) == _timeless(b["runs"])
    assert (sorted(p.name for p in (tmp_path / "mpi").iterdir())
            == sorted(p.name for p in (tmp_path / "one").iterdir()))
