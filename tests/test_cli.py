"""Tests of the ``poswise`` command, in-process (``main``) and as a subprocess."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from poswise.cli import main  # noqa: E402

import poswise  # noqa: E402

# Subprocesses import the same poswise as this process (the source tree with its built
# extensions, or the installed package).
SRC = str(Path(poswise.__file__).resolve().parents[1])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--seeds", "2", "--max-epochs", "400", "--quiet"]


def run_cli(*args, cwd=None, env_extra=None, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "poswise", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def check_png(path):
    import matplotlib.image as mpimg
    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size < 200_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100


def table_rows(text):
    """The rows of the results table: (lr, optimizer) -> list of cells."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 9 and cells[1] in ("GD", "PWO"):
            rows[(float(cells[0]), cells[1])] = cells
    return rows


def assert_no_traceback(stderr):
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- compare

def test_compare_in_process(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert set(rows) == {(0.1, "GD"), (0.1, "PWO")}
    assert rows[(0.1, "GD")][2] == "2/2"
    assert "lr  opt  reached  epochs  seconds" in captured.out
    assert f"Wrote to {out.resolve()}" in captured.out
    assert captured.err == ""                       # --quiet
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"settings", "runs", "summary", "interrupted"}
    s = res["settings"]
    assert s["dataset"] == "synthetic" and s["hidden"] == [20, 7, 5] and s["loss"] == "bce"
    assert s["lr"] == [0.1] and s["target_loss"] == 0.1 and s["seeds"] == [0, 1]
    assert s["threads"] is None                     # BLAS default: N > D / 2
    assert s["command"].startswith("poswise compare --out")
    assert len(res["runs"]) == 4
    for r in res["runs"]:
        assert len(r["loss"]) == len(r["seconds"]) == r["epochs"] + 1
    # Same seed, same initial network for both optimizers.
    for seed in (0, 1):
        digests = {r["init_digest"] for r in res["runs"] if r["seed"] == seed}
        assert len(digests) == 1
    gd = res["summary"]["by_lr"][0]
    assert rows[(0.1, "GD")][3] == f"{gd['epochs_to_target']:.0f}"
    assert (out / "table.txt").read_text().startswith("$ poswise compare")
    check_png(out / "comparison.png")


def test_compare_sweep_writes_all_figures(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["compare", "--lr", "0.1,0.2", "--thresholds", "0.5",
                 "--paper-loss-thresholds", "0.3", "--hidden", "8,4", "--out", str(out),
                 *FAST])
    assert code == 0
    text = capsys.readouterr().out
    assert set(table_rows(text)) == {(0.1, "GD"), (0.1, "PWO"), (0.2, "GD"), (0.2, "PWO")}
    assert "Each at its best lr" in text
    for name in ("comparison.png", "lr_sweep.png", "comparison_lr0p1.png",
                 "comparison_lr0p2.png", "comparison_paper_loss.png"):
        check_png(out / name)
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["sizes"] == [20, 8, 4, 1]
    assert set(res["summary"]["best"]) == {"gd", "pwo"}
    assert all("paper_loss" in r for r in res["runs"])


def test_compare_subprocess_default_out(tmp_path):
    proc = run_cli("compare", "--seeds", "1", "--max-epochs", "300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr)
    assert set(table_rows(proc.stdout)) == {(0.1, "GD"), (0.1, "PWO")}
    # Per-run lines on stderr; no progress bar (stderr is not a terminal).
    assert "[1/2] seed 0 lr 0.1  GD:" in proc.stderr and "\r" not in proc.stderr
    out = tmp_path / "poswise-out"
    assert json.loads((out / "results.json").read_text())["runs"]
    check_png(out / "comparison.png")


@pytest.mark.parametrize("args, message", [
    (["compare", "--lr", "-0.1"], "argument --lr: expected a learning rate > 0"),
    (["compare", "--lr", "abc"], "argument --lr"),
    (["compare", "--hidden", "20,0"], "argument --hidden: expected comma-separated"),
    (["compare", "--seeds", "0"], "argument --seeds"),
    (["compare", "--max-epochs", "1.5"], "argument --max-epochs: expected an integer >= 1"),
    (["compare", "--target-loss", "-1"], "argument --target-loss"),
    (["compare", "--dataset", "imagenet"], "argument --dataset: invalid choice"),
    (["compare", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["train", "--optimizer", "adam"], "argument --optimizer: invalid choice"),
    (["reproduce", "svhn"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_in_process(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: poswise" in err and message in err


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "0.1,0.2"], "--lr takes one learning rate for 'train'"),
    (["compare", "--loss", "am_softmax", "--hidden", "none", "--batch-size", "3",
      "--threads", "1", "--init", "he_normal", "--seeds", "1", "--max-epochs", "1",
      "--lr", "1e-400"], "--lr"),
])
def test_bad_combinations_exit_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_arguments_subprocess(tmp_path):
    for args in (["compare", "--lr", "-1"], ["compare", "--loss", "bce", "--dataset",
                                                     "mnist", "--data-dir", str(tmp_path)]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode in (1, 2)
        assert "error:" in proc.stderr
        assert_no_traceback(proc.stderr)
    proc = run_cli("compare", "--lr", "-1", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""


def test_missing_data_exits_1_with_the_loaders_message(tmp_path, capsys):
    empty = tmp_path / "nodata"
    empty.mkdir()
    assert main(["compare", "--dataset", "cat", "--data-dir", str(empty),
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "poswise compare: error: Cat files not found" in err
    assert "CatClassificationTrain.h5" in err and "--data-dir" in err
    assert main(["reproduce", "cifar10", "--data-dir", str(empty), "--quiet"]) == 1
    assert "CIFAR-10 files not found" in capsys.readouterr().err
    proc = run_cli("train", "--dataset", "mnist", "--data-dir", str(empty), cwd=tmp_path)
    assert proc.returncode == 1 and "MNIST" in proc.stderr
    assert_no_traceback(proc.stderr)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "poswise" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0 and "--target-loss" in capsys.readouterr().out


# --------------------------------------------------------------------------- real data

@pytest.fixture
def data_home():
    path = os.environ.get("POSWISE_DATA")
    if not path or not (Path(path) / "cat").is_dir():
        pytest.skip("POSWISE_DATA does not point to a data home with cat/")
    return Path(path)


def test_compare_cat(data_home, tmp_path, capsys):
    out = tmp_path / "cat"
    code = main(["compare", "--dataset", "cat", "--data-dir", str(data_home), "--lr", "0.01",
                 "--target-loss", "0.1", "--max-epochs", "5000", "--seeds", "2", "--out",
                 str(out), "--quiet"])
    assert code == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[(0.01, "GD")][2] == "2/2" and rows[(0.01, "PWO")][2] == "2/2"
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["sizes"] == [12288, 20, 7, 5, 1]
    assert res["settings"]["n_train"] == 209 and res["settings"]["n_test"] == 50
    # N << D: the Gram-matrix first layer (its BLAS thread limit is the trainers').
    assert res["settings"]["threads"] is None
    assert {r["first_layer"] for r in res["runs"]} == {"dual"}
    for r in res["runs"]:
        assert r["final_loss"] < 0.1 and r["stopped_reason"] == "target_reached"
    check_png(out / "comparison.png")


def test_reproduce_cat_uses_the_papers_settings(data_home, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["reproduce", "cat", "--data-dir", str(data_home), "--seeds", "1",
                 "--out", str(out), "--quiet"]) == 0
    s = json.loads((out / "results.json").read_text())["settings"]
    assert (s["hidden"], s["loss"], s["lr"], s["target_loss"], s["init"], s["dtype"]) == (
        [20, 7, 5], "bce", [0.01], 0.1, "xavier_normal", "float64")


# --------------------------------------------------------------------------- train

def test_train_saves_model_and_history(tmp_path, capsys):
    from poswise.io import load_model
    save = tmp_path / "m" / "model.npz"
    assert main(["train", "--optimizer", "gd", "--max-epochs", "30", "--target-loss",
                 "none", "--save", str(save), "--seed", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "GD ran its 30 epochs" in out and str(save) in out
    net = load_model(save)
    assert net.sizes == (20, 20, 7, 5, 1)
    hist = json.loads((tmp_path / "m" / "model.history.json").read_text())
    assert hist["optimizer"] == "gd" and hist["epochs"] == 30
    assert hist["stopped_reason"] == "max_epochs" and len(hist["loss"]) == 31
    assert hist["settings"]["seed"] == 3 and hist["model_file"] == "model.npz"
    # The saved network is the trained one: its loss is the history's last entry.
    from poswise.datasets import make_synthetic
    from poswise.cli import SYNTHETIC
    ds = make_synthetic(**SYNTHETIC)
    p = np.clip(net.predict_proba(ds.X_train)[:, 0], 1e-300, 1)
    q = np.clip(1 - net.predict_proba(ds.X_train)[:, 0], 1e-300, 1)
    bce = -np.mean(ds.y_train * np.log(p) + (1 - ds.y_train) * np.log(q))
    assert bce == pytest.approx(hist["loss"][-1], rel=1e-6)


def test_train_checkpoint_and_resume_match_a_straight_run(tmp_path, capsys):
    from poswise.cli import _fit_supports
    if not _fit_supports("checkpoint", "checkpoint_every", "resume"):
        pytest.skip("the trainers do not support checkpoints yet")
    common = ["train", "--optimizer", "pwo", "--target-loss", "none", "--quiet"]
    assert main([*common, "--max-epochs", "40", "--save", str(tmp_path / "full.npz")]) == 0
    assert main([*common, "--max-epochs", "20", "--save", str(tmp_path / "half.npz"),
                 "--checkpoint-every", "10"]) == 0
    ckpt = tmp_path / "half.ckpt.npz"
    assert ckpt.is_file()
    assert main([*common, "--max-epochs", "40", "--save", str(tmp_path / "resumed.npz"),
                 "--resume", str(ckpt)]) == 0
    capsys.readouterr()
    full = json.loads((tmp_path / "full.history.json").read_text())
    resumed = json.loads((tmp_path / "resumed.history.json").read_text())
    assert resumed["epochs"] == 40
    np.testing.assert_allclose(resumed["loss"], full["loss"], rtol=1e-12)
    # A checkpoint made with other settings is refused with a message, no traceback.
    code = main([*common, "--lr", "0.3", "--max-epochs", "40", "--save",
                 str(tmp_path / "x.npz"), "--resume", str(ckpt)])
    assert code == 1
    assert "other trainer settings" in capsys.readouterr().err


def test_train_ctrl_c_saves_and_exits_130(tmp_path):
    """SIGINT to a running ``poswise train``: exit 130, model and history saved."""
    pytest.importorskip("poswise.io")
    from poswise.io import load_model
    save = tmp_path / "model.npz"
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "poswise", "train", "--max-epochs", "100000000",
         "--target-loss", "none", "--save", str(save)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # The line is printed from inside the training loop's Ctrl-C handler.
        first = proc.stderr.readline()
        assert first.startswith("Training PWO"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert_no_traceback(err)
    assert "Interrupted" in err and "was interrupted after epoch" in out
    net = load_model(save)
    assert net.sizes == (20, 20, 7, 5, 1)
    hist = json.loads((tmp_path / "model.history.json").read_text())
    assert hist["stopped_reason"] == "interrupted"
    assert hist["epochs"] == len(hist["loss"]) - 1 >= 0


def test_results_json_thins_long_curves(tmp_path):
    from poswise.cli import MAX_CURVE_POINTS, _for_json
    from poswise.plots import plot_comparison
    n = 3 * MAX_CURVE_POINTS + 7
    loss = list(np.linspace(1.0, 0.05, n))
    run = {"optimizer": "gd", "seed": 0, "lr": 0.1, "epochs": n - 1,
           "epochs_to_target": 12345, "seconds_to_target": 1.0, "final_loss": loss[-1],
           "final_seconds": 2.0, "stopped_reason": "target_reached", "loss": loss,
           "val_loss": loss, "val_accuracy": [0.5] * n,
           "seconds": list(np.linspace(0.0, 2.0, n))}
    short = dict(run, optimizer="pwo", epochs=9, epochs_to_target=None, loss=loss[:10],
                 val_loss=loss[:10], val_accuracy=[0.5] * 10, seconds=[0.1] * 10)
    results = {"settings": {"lr": [0.1], "seeds": [0], "target_loss": None,
                            "dataset": "x", "sizes": [2, 1], "loss": "bce",
                            "dtype": "float64"},
               "runs": [run, short], "summary": {"by_lr": [], "best": {}}}
    out = _for_json(results)
    kept = out["runs"][0]["curve_epochs"]
    assert kept[0] == 0 and kept[-1] == n - 1 and 12345 in kept
    assert len(kept) <= MAX_CURVE_POINTS + 2
    assert len(out["runs"][0]["loss"]) == len(out["runs"][0]["seconds"]) == len(kept)
    assert out["runs"][0]["loss"][kept.index(12345)] == pytest.approx(loss[12345], rel=1e-6)
    assert "curve_epochs" not in out["runs"][1] and out["runs"][1]["loss"] == pytest.approx(
        loss[:10], rel=1e-6)
    assert results["runs"][0]["loss"] is loss               # the input is not modified
    fig = plot_comparison(json.loads(json.dumps(out)))
    xs = fig.axes[0].get_lines()[0].get_xdata()
    np.testing.assert_array_equal(xs, kept)


def test_am_softmax_drops_the_presets_target(tmp_path, capsys):
    out = tmp_path / "am"
    assert main(["compare", "--loss", "am_softmax", "--lr", "0.01", "--seeds", "1",
                 "--max-epochs", "5", "--quiet", "--out", str(out)]) == 0
    s = json.loads((out / "results.json").read_text())["settings"]
    assert s["loss"] == "am_softmax" and s["target_loss"] is None
    assert s["sizes"][-1] == 2
    assert "No target loss" in capsys.readouterr().out


def test_progress_bar_only_on_a_terminal_for_long_runs(monkeypatch):
    from types import SimpleNamespace
    from poswise.cli import _progress_wanted, _threads
    mnist_like = SimpleNamespace(n_train=60000, n_features=784)
    cat_like = SimpleNamespace(n_train=209, n_features=12288)
    small = SimpleNamespace(n_train=500, n_features=20)
    args = SimpleNamespace(quiet=False, first_layer="auto", batch_size=None, threads=None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert _progress_wanted(args, mnist_like)
    assert not _progress_wanted(args, cat_like) and not _progress_wanted(args, small)
    assert not _progress_wanted(SimpleNamespace(**{**vars(args), "quiet": True}),
                                mnist_like)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not _progress_wanted(args, mnist_like)
    # --threads is passed on; without it the trainers choose (see test_trainers.py).
    assert _threads(args, cat_like) is None
    assert _threads(SimpleNamespace(**{**vars(args), "threads": 2}), cat_like) == 2
