"""poswise.distributed: row ownership, launch detection, collectives, the MPI epoch runner.

Most cases run on simulated ranks (threads, poswise.distributed.run_ranks); a few run
under a real ``mpirun`` (skipped when mpirun or mpi4py is missing).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import poswise
import poswise.datasets
import poswise.updates
from dist_cases import ENGINES, LRS, RULES, make_case, rel_err, train, train_rank
from mpi_train import ENGINE, REDUCTIONS_OF
from poswise.distributed import (DistributedError, MPILaunchError, Reduction,
                                 broadcast_network, check_agreement, check_launch,
                                 collective_call, default_threads, launch_info,
                                 launched_under_mpi, load_dataset_rows, load_h5_rows,
                                 load_npy_rows, load_rows, rows_for_rank, run_ranks)

HERE = Path(__file__).resolve().parent
# the poswise being tested (an installed copy, or the source tree with in-place builds)
SRC = Path(poswise.__file__).resolve().parents[1]


# ------------------------------------------------------------------ rows

@pytest.mark.parametrize("n", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_rows_for_rank_partition(n, size):
    parts = [rows_for_rank(n, r, size) for r in range(size)]
    covered = np.concatenate([np.arange(n)[s] for s in parts])
    np.testing.assert_array_equal(covered, np.arange(n))          # in order, exactly once
    lengths = [s.stop - s.start for s in parts]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)


@pytest.mark.parametrize("args, match", [((5, 2, 2), "'rank'.*< size"),
                                         ((5, -1, 2), "'rank'"),
                                         ((5, 0, 0), "'size'"),
                                         ((-1, 0, 1), "'n'"),
                                         ((5.0, 0, 1), "'n'")])
def test_rows_for_rank_errors(args, match):
    with pytest.raises(ValueError, match=match):
        rows_for_rank(*args)


def test_loaders_read_each_rank_rows(tmp_path):
    import h5py
    X = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    np.save(tmp_path / "x.npy", X)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X
    for size in (1, 2, 3, 4):
        parts = {
            "npy": [load_npy_rows(tmp_path / "x.npy", rank=r, size=size) for r in range(size)],
            "mmap": [load_npy_rows(tmp_path / "x.npy", rank=r, size=size, mmap=True)
                     for r in range(size)],
            "h5": [load_h5_rows(tmp_path / "x.h5", "X", rank=r, size=size)
                   for r in range(size)],
            "rows": [load_rows(tmp_path / "x.h5", key="X", rank=r, size=size)
                     for r in range(size)],
        }
        for kind, p in parts.items():
            np.testing.assert_array_equal(np.concatenate(p), X, err_msg=kind)
        assert isinstance(parts["mmap"][0], np.memmap)
        assert not isinstance(parts["npy"][0], np.memmap)
    # with a communicator
    got = run_ranks(3, lambda c: load_npy_rows(tmp_path / "x.npy", c))
    np.testing.assert_array_equal(np.concatenate(got), X)


def test_loader_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="fewer than the 3 ranks"):
        load_npy_rows(tmp_path / "x.npy", rank=0, size=3)
    with pytest.raises(ValueError, match="key="):
        load_rows(tmp_path / "x.h5", rank=0, size=1)
    with pytest.raises(ValueError, match="suffix '.csv'"):
        load_rows(tmp_path / "x.csv", rank=0, size=1)
    with pytest.raises(ValueError, match="comm.*or both rank= and size="):
        load_npy_rows(tmp_path / "x.npy", rank=0)


def test_dataset_rows():
    whole = poswise.datasets.make_synthetic(n_samples=50, n_features=4, rng=3)
    parts = [load_dataset_rows("synthetic", rank=r, size=3, n_samples=50, n_features=4,
                               rng=3) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p.X_train for p in parts]), whole.X_train)
    np.testing.assert_array_equal(np.concatenate([p.y_train for p in parts]), whole.y_train)
    for p in parts:
        np.testing.assert_array_equal(p.X_test, whole.X_test)
    with pytest.raises(ValueError, match="'name'"):
        load_dataset_rows("imagenet", rank=0, size=1)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_grid_shares(size):
    from poswise.distributed import gather_shares, share_of
    tasks = [f"task{i}" for i in range(7)]

    def rank(comm):
        mine = share_of(tasks, comm)
        return mine, gather_shares(comm, [(i, t.upper()) for i, t in mine])

    out = run_ranks(size, rank)
    assert sorted(i for mine, _ in out for i, _ in mine) == list(range(7))   # each once
    assert out[0][1] == [t.upper() for t in tasks]
    assert all(res is None for _, res in out[1:])


# ------------------------------------------------------------------ launch

@pytest.mark.parametrize("env, launcher, size", [
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI", 4),
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, "MPICH/Hydra (PMI)", 2),
    ({"MV2_COMM_WORLD_RANK": "0", "MV2_COMM_WORLD_SIZE": "3"}, "MVAPICH2", 3),
    ({"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "8", "SLURM_JOB_ID": "7"},
     "Slurm srun", 8),
])
def test_launch_detection(env, launcher, size):
    info = launch_info(env)
    assert (info.launcher, info.size) == (launcher, size)
    assert launched_under_mpi(env)
    with pytest.raises(MPILaunchError, match=f"{re.escape(launcher)}.*{size} processes.*without --mpi"):
        check_launch(False, env)
    check_launch(True, env)                     # --mpi given


@pytest.mark.parametrize("env", [
    {}, {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"},
    # an sbatch script runs once; srun sets SLURM_STEP_NUM_TASKS
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "7"},
    {"PMIX_RANK": "0"},
])
def test_not_launched(env):
    assert not launched_under_mpi(env)
    check_launch(False, env)


def test_launched_under_real_mpirun_is_detected():
    mpirun = _mpirun_or_skip()
    code = ("from poswise.distributed import MPILaunchError, check_launch\n"
            "try:\n"
            "    check_launch(False)\n"
            "except MPILaunchError as exc:\n"
            "    print('refused:', exc)\n")
    r = subprocess.run(_mpi_cmd(mpirun, 2) + [sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("refused:" in x and "without --mpi" in x for x in lines)
    assert {"this is rank 0" in x for x in lines} == {True, False}


def test_default_threads():
    cores = len(os.sched_getaffinity(0))
    assert default_threads(environ={}) == cores
    assert default_threads(environ={"OMPI_COMM_WORLD_LOCAL_SIZE": str(cores)}) == 1
    assert default_threads(environ={"OMPI_COMM_WORLD_LOCAL_SIZE": str(8 * cores)}) == 1


# ------------------------------------------------------------------ collectives

@pytest.mark.parametrize("method", ["allreduce", "ordered"])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_reduction(method, size):
    rng = np.random.default_rng(size)
    parts = rng.standard_normal((size, 1000)) * 10.0 ** rng.integers(-8, 8, (size, 1000))

    def rank(comm):
        red = Reduction(comm, method)
        buf = parts[comm.Get_rank()].copy()
        red(buf)
        red(buf2 := parts[comm.Get_rank()].copy())   # second call reuses the buffers
        return buf, buf2, list(comm.calls)

    out = run_ranks(size, rank)
    expect = parts[0].copy()
    for p in parts[1:]:
        expect += p                                  # rank-order sum
    for buf, buf2, calls in out:
        np.testing.assert_array_equal(buf, out[0][0])        # same bits on every rank
        np.testing.assert_array_equal(buf2, buf)
        if method == "ordered":
            np.testing.assert_array_equal(buf, expect)
        else:
            np.testing.assert_allclose(buf, parts.sum(axis=0), rtol=1e-12, atol=0)
        if size > 1:
            assert calls == (["Allreduce"] * 2 if method == "allreduce"
                             else ["Gather", "Bcast"] * 2)


def test_reduction_name_checked():
    with pytest.raises(ValueError, match="'reduction'.*'ordered'"):
        run_ranks(1, lambda c: Reduction(c, "tree"))


def test_collective_call_raises_on_every_rank():
    def rank(comm):
        def work():
            if comm.Get_rank() in (1, 2):
                raise OSError(f"disk full on rank {comm.Get_rank()}")
            return comm.Get_rank()
        return collective_call(comm, work)

    out = run_ranks(4, rank, return_exceptions=True)
    assert isinstance(out[1], OSError)               # the first failing rank: its own error
    for r in (0, 2, 3):
        assert isinstance(out[r], DistributedError)
        assert "rank 1 failed: OSError: disk full on rank 1" in str(out[r])
    assert run_ranks(3, lambda c: collective_call(c, lambda: c.Get_rank())) == [0, 1, 2]


class _Trainer:
    def __init__(self, lr=0.1, update="adam", loss="bce", rng=None, threads=None):
        self.lr, self.update, self.loss, self.rng, self.threads = lr, update, loss, rng, threads
        self._private = object()


@pytest.mark.parametrize("case, match", [
    ("lr", r"trainer.lr: ranks \[0, 2\]: 0.1; ranks \[1\]: 0.2"),
    ("rule", r"trainer.update: ranks \[0, 1\]: 'adam'; ranks \[2\]: 'sgd'"),
    ("hyper", r"trainer.update: .*weight_decay.*0.5"),
    ("sizes", r"network sizes: ranks \[0, 1\]: \(4, 3, 1\); ranks \[2\]: \(4, 2, 1\)"),
    ("activation", r"activation: ranks \[0, 1\]: relu; ranks \[2\]: tanh"),
    ("dtype", r"network dtype: .*float64.*float32"),
    ("features", r"n_features: ranks \[0, 1\]: 4; ranks \[2\]: 5"),
    ("Xdtype", r"X dtype: ranks \[0, 1\]: float64; ranks \[2\]: float32"),
    ("empty", r"rows: ranks \[2\] own no rows"),
])
def test_agreement_errors(case, match):
    def rank(comm):
        r = comm.Get_rank()
        odd = r == (1 if case == "lr" else 2)
        kw = dict(rng=r)
        if odd and case == "sizes":
            kw["sizes"] = (4, 2, 1)
        if odd and case == "activation":
            kw["activation"] = "tanh"
        if odd and case == "dtype":
            kw["dtype"] = np.float32
        net = poswise.MLP(kw.pop("sizes", (4, 3, 1)), **kw)
        X = np.zeros((0 if odd and case == "empty" else 3, 5 if odd and case == "features"
                      else 4), dtype=np.float32 if odd and case == "Xdtype" else np.float64)
        trainer = _Trainer(lr=0.2 if odd and case == "lr" else 0.1, threads=r, rng=r)
        if odd and case == "rule":
            trainer.update = "sgd"
        if odd and case == "hyper":
            trainer.update = poswise.updates.Adam(weight_decay=0.5)
        return check_agreement(comm, net, X, trainer)

    out = run_ranks(3, rank, return_exceptions=True)
    assert all(isinstance(e, DistributedError) for e in out), out
    assert len({str(e) for e in out}) == 1                       # the same message everywhere
    assert "do not agree" in str(out[0])

    assert re.search(match, str(out[0])), str(out[0])


def test_agreement_passes_and_broadcasts():
    def rank(comm):
        r = comm.Get_rank()
        net = poswise.MLP((4, 3, 2), rng=r)          # different initial weights
        n = check_agreement(comm, net, np.zeros((r + 1, 4)),
                            _Trainer(update=poswise.updates.Adam(), threads=r))
        broadcast_network(comm, net)
        return n, net
    out = run_ranks(3, rank)
    ref = poswise.MLP((4, 3, 2), rng=0)
    for n, net in out:
        assert n == 1 + 2 + 3
        for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ epoch runner

SCHEDULES = {"gd": poswise.GradientDescent, "pwo": poswise.PositionWise}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
@pytest.mark.parametrize("loss, update", [("bce", "sgd"), ("mse", "sgd")]
                         + [("cross_entropy", r) for r in RULES])
def test_runner_matches_trainer(schedule, loss, update, engine):
    """One process: the runner over each engine gives poswise's trainer (numpy backend),
    weights and History losses (initial loss first)."""
    sizes = (6, 5, 4, 1 if loss == "bce" else 3)
    X, y, W, b = make_case(sizes=sizes, loss=loss)
    Wr, br, losses = train(X, y, W, b, schedule=schedule, update=update, epochs=15,
                           loss=loss, engine=engine)
    net = poswise.MLP.from_arrays(W, b)
    hist = SCHEDULES[schedule](LRS[update], loss=loss, update=update, backend="numpy",
                               first_layer="primal").fit(net, X, y, epochs=15)
    assert rel_err(Wr + br, net.weights + net.biases) < 1e-12
    np.testing.assert_allclose(losses, hist.loss, rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("update", RULES)
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_ranks_match_single_process(schedule, update, engine):
    """K = 1..4 simulated ranks, both reductions: the single process's weights (1e-12) and
    losses, the same bits on every rank; the test engine and poswise's two."""
    X, y, W, b = make_case()
    W1, b1, loss1 = train(X, y, W, b, schedule=schedule, update=update, epochs=20,
                          engine=engine)
    for K in (1, 2, 3, 4):
        for red in ("allreduce", "ordered"):
            out = run_ranks(K, train_rank, X, y, W, b, schedule=schedule, update=update,
                            epochs=20, reduction=red, engine=engine)
            for Wk, bk, lk in out:
                assert rel_err(Wk + bk, W1 + b1) <= 1e-12, (K, red)
                np.testing.assert_allclose(lk, loss1, rtol=1e-12)
                for a, c in zip(Wk + bk, out[0][0] + out[0][1]):
                    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("schedule, per_epoch", [("gd", 1), ("pwo", 3)])
def test_one_reduction_per_span(schedule, per_epoch):
    from dist_cases import RefEngine, spans_of
    from poswise.distributed import EpochRunner
    X, y, W, b = make_case()

    def rank(comm):
        rows = rows_for_rank(len(y), comm.Get_rank(), 2)
        eng = RefEngine([w.copy() for w in W], [v.copy() for v in b], "cross_entropy")
        eng.set_data(X[rows], y[rows], n_total=len(y))
        run = EpochRunner(comm)
        for _ in range(5):
            run(eng, spans_of(schedule, 3), 0.1)
        n = len(comm.calls)
        run.reset()                                   # after a rollback: primes again
        run(eng, spans_of(schedule, 3), 0.1)
        return n, len(comm.calls) - n

    for n, after_reset in run_ranks(2, rank):
        assert n == 1 + 5 * per_epoch                 # + the priming reduction
        assert after_reset == 1 + per_epoch


def test_stop_request_is_agreed_after_the_same_epoch():
    """A stop asked on one rank (a signal handler) stops every rank after the same epoch."""
    from dist_cases import RefEngine, spans_of
    from poswise.distributed import EpochRunner
    X, y, W, b = make_case()

    def rank(comm):
        rows = rows_for_rank(len(y), comm.Get_rank(), comm.Get_size())
        eng = RefEngine([w.copy() for w in W], [v.copy() for v in b], "cross_entropy")
        eng.set_data(X[rows], y[rows], n_total=len(y))
        run = EpochRunner(comm)
        for epoch in range(1, 20):
            if comm.Get_rank() == 2 and epoch == 4:
                run.request_stop()
            run(eng, spans_of("pwo", 3), 0.1)
            if run.stop_agreed:
                return epoch
        return None

    assert run_ranks(3, rank) == [4, 4, 4]


def test_float32_ranks_agree():
    X, y, W, b = make_case(dtype=np.float32)
    W1, b1, _ = train(X, y, W, b, schedule="pwo", update="adam", epochs=10)
    out = run_ranks(3, train_rank, X, y, W, b, schedule="pwo", update="adam", epochs=10)
    for Wk, bk, _ in out:
        assert Wk[0].dtype == np.float32
        assert rel_err(Wk + bk, W1 + b1) <= 1e-5
        for a, c in zip(Wk + bk, out[0][0] + out[0][1]):
            np.testing.assert_array_equal(a, c)


# ------------------------------------------------------------------ real MPI

def _mpirun_or_skip():
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("mpirun is not installed")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed")
    return mpirun


def _mpi_cmd(mpirun, k):
    cmd = [mpirun, "-n", str(k)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd + ["--oversubscribe"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def test_missing_mpirun_skips(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.skip.Exception, match="mpirun is not installed"):
        _mpirun_or_skip()


@pytest.fixture(scope="module")
def single_runs():
    X, y, W, b = make_case()
    return {(s, r): train(X, y, W, b, schedule=s, update=r, epochs=20, engine=ENGINE)
            for s in ("gd", "pwo") for r in RULES}


@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_mpirun_matches_single_process(K, tmp_path, single_runs):
    mpirun = _mpirun_or_skip()
    r = subprocess.run(_mpi_cmd(mpirun, K) + [sys.executable, str(HERE / "mpi_train.py"),
                                              str(tmp_path), "train"],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{k}.npz") for k in range(K)]
    for (schedule, rule), (W1, b1, loss1) in single_runs.items():
        for red in REDUCTIONS_OF[rule]:
            key = f"{schedule}_{rule}_{red}"
            params = [[res[f"{key}_{p}{l}"] for p in "Wb" for l in range(3)] for res in ranks]
            assert rel_err(params[0], W1 + b1) <= 1e-12, key
            np.testing.assert_allclose(ranks[0][f"{key}_loss"], loss1, rtol=1e-12)
            for other in params[1:]:                  # identical on every rank
                for a, c in zip(other, params[0]):
                    np.testing.assert_array_equal(a, c)


def test_mpirun_agreement(tmp_path):
    mpirun = _mpirun_or_skip()
    r = subprocess.run(_mpi_cmd(mpirun, 3) + [sys.executable, str(HERE / "mpi_train.py"),
                                              str(tmp_path), "agree"],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    msgs = [(tmp_path / f"rank{k}.txt").read_text() for k in range(3)]
    assert len(set(msgs)) == 1
    assert "trainer.lr: ranks [0, 2]: 0.1; ranks [1]: 0.2" in msgs[0]
    ref = poswise.MLP((4, 3, 1), rng=0)
    for k in range(3):
        got = np.load(tmp_path / f"net{k}.npz")
        assert int(got["n"]) == 2 + 3 + 4
        for i, a in enumerate(ref.weights + ref.biases):
            np.testing.assert_array_equal(got[f"arr_{i}"], a)
