"""fit(..., comm=): data-parallel training through the public API, on simulated ranks
(poswise.distributed.run_ranks, threads with mpi4py's collective signatures) and under a
real mpirun when it is installed. The reference is the single-process fit."""
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import poswise
from poswise import MLP, SCHEDULES
from poswise.distributed import DistributedError, rows_for_rank, run_ranks
from conftest import make_problem, rel_err


def _problem(loss="cross_entropy", K=3, N=61, D=9, seed=0):
    rng = np.random.default_rng(seed)
    return make_problem(N, D, K, loss, rng)


def _fit_on_ranks(K, schedule, update, *, epochs=20, reduction="allreduce", loss="cross_entropy",
                  val=False, sw=None, first_layer="auto", threads=1, **fit_kw):
    X, y = _problem(loss, 1 if loss == "bce" else 3)
    Xv, yv = _problem(loss, 1 if loss == "bce" else 3, N=17, seed=5)
    net0 = MLP((X.shape[1], 7, 5, 1 if loss == "bce" else 3), rng=4)
    cls = SCHEDULES[schedule]

    def rank(comm):
        r = rows_for_rank(X.shape[0], comm.Get_rank(), comm.Get_size())
        rv = rows_for_rank(Xv.shape[0], comm.Get_rank(), comm.Get_size())
        net = MLP((X.shape[1], 7, 5, 1 if loss == "bce" else 3),
                  rng=comm.Get_rank() + 100)        # other weights: rank 0's are broadcast
        for dst, src in zip(net.weights + net.biases, net0.weights + net0.biases):
            dst[...] = src if comm.Get_rank() == 0 else dst
        h = cls(0.05 if update != "adam" else 0.005, loss=loss, update=update,
                first_layer=first_layer, threads=threads).fit(
            net, X[r], y[r], epochs=epochs, comm=comm, reduction=reduction,
            validation_data=(Xv[rv], yv[rv]) if val else None,
            sample_weight=None if sw is None else sw[r], **fit_kw)
        return net, h

    results = run_ranks(K, rank)
    ref = net0.copy()
    h_ref = cls(0.05 if update != "adam" else 0.005, loss=loss, update=update,
                threads=threads, first_layer="primal").fit(
        ref, X, y, epochs=epochs, validation_data=(Xv, yv) if val else None,
        sample_weight=sw, **fit_kw)
    return results, ref, h_ref


@pytest.mark.parametrize("K", [1, 2, 3, 4])
@pytest.mark.parametrize("schedule", ["gd", "pwo", "layerwise"])
@pytest.mark.parametrize("update", ["sgd", "momentum", "adam"])
def test_ranks_match_one_process(K, schedule, update):
    results, ref, h_ref = _fit_on_ranks(K, schedule, update)
    for net, h in results:
        assert h.epochs == 20 and h.stopped_reason == "max_epochs"
        for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
            assert rel_err(a, b) <= 1e-12
        np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-12)
    first = results[0][0]
    for net, _ in results[1:]:                 # identical bits on every rank
        for a, b in zip(net.weights + net.biases, first.weights + first.biases):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("update", ["rmsprop", "adamw", "nesterov"])
def test_ordered_reduction_validation_and_weights(update):
    """The rank-order reduction, global validation losses and weighted samples."""
    sw = np.random.default_rng(1).integers(0, 3, 61).astype(float)
    sw[:4] = 1
    results, ref, h_ref = _fit_on_ranks(3, "pwo", update, reduction="ordered", val=True,
                                        sw=sw, epochs=8)
    for net, h in results:
        for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
            assert rel_err(a, b) <= 1e-12
        np.testing.assert_allclose(h.val_loss, h_ref.val_loss, rtol=1e-12)
        np.testing.assert_allclose(h.val_accuracy, h_ref.val_accuracy, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::poswise.DivergenceWarning")
def test_target_and_divergence_are_global():
    results, ref, h_ref = _fit_on_ranks(2, "gd", "sgd", epochs=500, target_loss=0.9)
    assert {h.epochs_to_target for _, h in results} == {h_ref.epochs_to_target}
    X, y = _problem()
    X[0] *= 1e200

    def rank(comm):
        r = rows_for_rank(X.shape[0], comm.Get_rank(), comm.Get_size())
        net = MLP((9, 7, 5, 3), rng=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = poswise.GradientDescent(0.1, loss="cross_entropy").fit(
                net, X[r], y[r], epochs=5, comm=comm)
        return h, net
    out = run_ranks(2, rank)       # rank 0 holds the huge row; every rank stops alike
    for h, net in out:
        assert h.stopped_reason == "diverged" and h.epochs == 0
        for a, b in zip(net.weights, MLP((9, 7, 5, 3), rng=0).weights):
            np.testing.assert_array_equal(a, b)


def test_ranks_that_disagree_get_the_same_error():
    X, y = _problem()

    def rank(comm):
        r = rows_for_rank(X.shape[0], comm.Get_rank(), comm.Get_size())
        lr = 0.1 if comm.Get_rank() != 1 else 0.2
        return poswise.PositionWise(lr, loss="cross_entropy").fit(
            MLP((9, 7, 5, 3), rng=0), X[r], y[r], epochs=2, comm=comm)
    out = run_ranks(3, rank, return_exceptions=True)
    assert all(isinstance(e, DistributedError) for e in out)
    assert len({str(e) for e in out}) == 1 and "trainer.lr" in str(out[0])


def test_mini_batches_are_refused_with_comm():
    X, y = _problem()

    def rank(comm):
        return poswise.GradientDescent(0.1, loss="cross_entropy", batch_size=8).fit(
            MLP((9, 7, 5, 3), rng=0), X, y, epochs=2, comm=comm)
    out = run_ranks(2, rank, return_exceptions=True)
    assert all(isinstance(e, ValueError) and "full batch" in str(e) for e in out)


def test_checkpoint_written_by_rank_0_resumes(tmp_path):
    path = tmp_path / "ck.npz"
    results, ref, h_ref = _fit_on_ranks(2, "pwo", "adam", epochs=6, checkpoint=path)
    assert path.exists()
    X, y = _problem()
    net = results[0][0]
    h = poswise.PositionWise(0.005, loss="cross_entropy", update="adam",
                             threads=1).fit(net.copy(), X, y, epochs=10, resume=path)
    assert h.epochs == 10


MPI_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, poswise
    from mpi4py import MPI
    from poswise.distributed import rows_for_rank
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X = rng.standard_normal((61, 9)); y = rng.integers(0, 3, 61)
    r = rows_for_rank(61, comm.Get_rank(), comm.Get_size())
    net = poswise.MLP((9, 7, 5, 3), rng=4)
    sched, update = sys.argv[1], sys.argv[2]
    poswise.SCHEDULES[sched](0.05, loss="cross_entropy", update=update, threads=1).fit(
        net, X[r], y[r], epochs=20, comm=comm)
    flat = np.concatenate([a.ravel() for a in net.weights + net.biases])
    everyone = comm.gather(flat)
    if comm.Get_rank() == 0:
        np.save(sys.argv[3], np.stack(everyone))
""")


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("schedule,update", [("gd", "momentum"), ("pwo", "adam")])
def test_real_mpirun(tmp_path, K, schedule, update):
    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    if not Path(mpirun).exists():
        pytest.skip("no mpirun")
    script = tmp_path / "run.py"
    script.write_text(MPI_SCRIPT)
    out = tmp_path / "w.npy"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(poswise.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([mpirun, "--oversubscribe", "-n", str(K), sys.executable,
                           str(script), schedule, update, str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    W = np.load(out)
    for k in range(1, K):
        np.testing.assert_array_equal(W[k], W[0])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((61, 9))
    y = rng.integers(0, 3, 61)
    net = MLP((9, 7, 5, 3), rng=4)
    SCHEDULES[schedule](0.05, loss="cross_entropy", update=update, threads=1).fit(
        net, X, y, epochs=20)
    ref = np.concatenate([a.ravel() for a in net.weights + net.biases])
    assert rel_err(W[0], ref) <= 1e-12


@pytest.mark.parametrize("kind", ["memmap32", "hdf5", "npyrows"])
@pytest.mark.parametrize("schedule", ["gd", "pwo"])
def test_fit_streams_X_from_disk(tmp_path, kind, schedule):
    """X on disk that would have to be converted (another dtype, an HDF5 dataset) is read
    in blocks by fit: the weights of the in-memory run, GD and PWO."""
    X, y = _problem(N=300, D=9)
    X32 = X.astype(np.float32)
    if kind == "memmap32":
        path = tmp_path / "X.npy"
        np.save(path, X32)
        Xd = np.load(path, mmap_mode="r")
    elif kind == "hdf5":
        h5py = pytest.importorskip("h5py")
        f = h5py.File(tmp_path / "X.h5", "w")
        f.create_dataset("X", data=X32, chunks=(64, 9))
        Xd = f["X"]
    else:
        from poswise._streaming import NpyRows
        np.save(tmp_path / "X.npy", X32)
        Xd = NpyRows(tmp_path / "X.npy")
    a, b = MLP((9, 7, 5, 3), rng=1), MLP((9, 7, 5, 3), rng=1)
    tr = SCHEDULES[schedule](0.05, loss="cross_entropy", update="momentum", threads=1)
    from poswise import _streaming
    h = tr.fit(a, Xd, y, epochs=12)
    h_ref = tr.fit(b, X32.astype(np.float64), y, epochs=12)
    np.testing.assert_allclose(h.loss, h_ref.loss, rtol=1e-12)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert rel_err(p, q) <= 1e-12
    with pytest.raises(ValueError, match="full batch"):
        SCHEDULES[schedule](0.05, loss="cross_entropy", batch_size=10).fit(
            MLP((9, 7, 5, 3), rng=1), Xd, y, epochs=1)
    del _streaming


def test_cli_refuses_uncoordinated_copies(monkeypatch, tmp_path, capsys):
    """Under an MPI launcher without --mpi, every command refuses before any output."""
    from poswise.cli import main
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    code = main(["train", "--epochs", "2", "--save", str(tmp_path / "m.npz")])
    assert code == 2 and "without --mpi" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_train_mpi(tmp_path):
    """mpirun -n 2 poswise train --mpi: one model, written by rank 0, equal to the
    single-process run of the same command."""
    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    if not Path(mpirun).exists():
        pytest.skip("no mpirun")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(Path(poswise.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH")) if p))
    args = ["-m", "poswise", "train", "--epochs", "15", "--optimizer", "pwo", "--update",
            "momentum", "--threads", "1", "--quiet"]
    proc = subprocess.run([mpirun, "--oversubscribe", "-n", "2", sys.executable, *args,
                           "--mpi", "--save", str(tmp_path / "mpi.npz")], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "--save", str(tmp_path / "one.npz")],
                         env=env, capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = poswise.load(tmp_path / "mpi.npz"), poswise.load(tmp_path / "one.npz")
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert rel_err(p, q) <= 1e-12
