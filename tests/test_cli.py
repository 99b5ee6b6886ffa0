"""Tests of ``poswise compare``/``reproduce`` and the argument parser, in-process
(``main``) and as a subprocess (``poswise train``: test_cli_train.py)."""
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from poswise.cli import main  # noqa: E402
from poswise.experiments import DEFAULT_PATIENCE  # noqa: E402

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
    """The rows of the results table: (lr, schedule, rule) -> list of cells."""
    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 11 and re.fullmatch(r"[0-9.e-]+", cells[0]) and cells[1] in (
                "GD", "PWO", "layer-wise GD"):
            rows[(float(cells[0]), cells[1], cells[2])] = cells
    return rows


def trainers_take_update():
    from poswise import GradientDescent
    return "update" in inspect.signature(GradientDescent).parameters


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def default_sigint():
    # A shell's background job inherits SIGINT as ignored, and Python keeps it ignored:
    # give the child the default disposition so that it installs its Ctrl-C handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def assert_no_traceback(stderr):
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- compare

@pytest.mark.parametrize("flags, patience, stall", [
    ([], DEFAULT_PATIENCE, "flat"),
    (["--patience", "none"], None, None),
    (["--patience", "7", "--stall", "no_improvement"], 7, "no_improvement"),
])
def test_compare_stopping_flags(tmp_path, flags, patience, stall):
    # A learning rate at which nothing moves: the patience rule, when on, ends each run.
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), "--lr", "1e-12", "--seeds", "1",
                 "--max-epochs", "300", "--quiet", *flags]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["patience"] == patience and res["settings"]["stall"] == stall
    for r in res["runs"]:
        if patience is None or patience >= 300:
            assert r["stopped_reason"] == "max_epochs" and r["epochs"] == 300
        else:
            assert r["stopped_reason"] == stall and r["epochs"] < 300
    entries = res["summary"]["by_lr"]
    assert all(e["n_stalled"] == (0 if patience is None or patience >= 300 else 1)
               for e in entries)


def test_compare_in_process(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert set(rows) == {(0.1, "GD", "SGD"), (0.1, "PWO", "SGD")}
    assert rows[(0.1, "GD", "SGD")][3] == "2/2"
    assert "lr  schedule  rule  reached  epochs  seconds" in captured.out
    assert f"Wrote to {out.resolve()}" in captured.out
    assert captured.err == ""                       # --quiet
    res = json.loads((out / "results.json").read_text())
    assert set(res) == {"settings", "runs", "summary", "interrupted"}
    s = res["settings"]
    assert s["dataset"] == "synthetic" and s["hidden"] == [20, 7, 5] and s["loss"] == "bce"
    assert s["lr"] == [0.1] and s["target_loss"] == 0.1 and s["seeds"] == [0, 1]
    assert s["threads"] is None                     # BLAS default: N > D / 2
    assert s["command"].startswith("poswise compare --out")
    assert s["optimizers"] == ["gd", "pwo"] and s["updates"] == ["sgd"]
    assert len(res["runs"]) == 4
    for r in res["runs"]:
        assert len(r["loss"]) == len(r["seconds"]) == r["epochs"] + 1
    # Same seed, same initial network for both optimizers.
    for seed in (0, 1):
        digests = {r["init_digest"] for r in res["runs"] if r["seed"] == seed}
        assert len(digests) == 1
    gd = res["summary"]["by_lr"][0]
    assert rows[(0.1, "GD", "SGD")][4] == f"{gd['epochs_to_target']:.0f}"
    assert (out / "table.txt").read_text().startswith("$ poswise compare")
    check_png(out / "comparison.png")


def test_compare_sweep_writes_all_figures(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["compare", "--lr", "0.1,0.2", "--thresholds", "0.5",
                 "--paper-loss-thresholds", "0.3", "--hidden", "8,4", "--out", str(out),
                 "--format", "png,pdf,svg", *FAST])
    assert code == 0
    text = capsys.readouterr().out
    assert set(table_rows(text)) == {(lr, o, "SGD") for lr in (0.1, 0.2)
                                     for o in ("GD", "PWO")}
    assert "Each at its best lr" in text
    for name in ("comparison", "lr_sweep", "comparison_lr0p1", "comparison_lr0p2",
                 "comparison_paper_loss"):
        check_png(out / f"{name}.png")
        assert (out / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:1000]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["sizes"] == [20, 8, 4, 1]
    assert set(res["summary"]["best"]) == {"gd+sgd", "pwo+sgd"}
    assert all("paper_loss" in r for r in res["runs"])


def test_compare_subprocess_default_out(tmp_path):
    proc = run_cli("compare", "--seeds", "1", "--max-epochs", "300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr)
    assert set(table_rows(proc.stdout)) == {(0.1, "GD", "SGD"), (0.1, "PWO", "SGD")}
    # Per-run lines on stderr; no live progress line (stderr is not a terminal).
    assert "[1/2] seed 0 lr 0.1 GD:" in proc.stderr and "\r" not in proc.stderr
    out = tmp_path / "poswise-out"
    assert json.loads((out / "results.json").read_text())["runs"]
    check_png(out / "comparison.png")


@pytest.mark.parametrize("args, message", [
    (["compare", "--lr", "-0.1"], "argument --lr: expected a learning rate > 0"),
    (["compare", "--lr", "abc"], "argument --lr"),
    (["compare", "--hidden", "20,0"], "argument --hidden: expected comma-separated"),
    (["compare", "--seeds", "0"], "argument --seeds"),
    (["compare", "--max-epochs", "1.5"],
     "argument --max-epochs/--epochs: expected an integer >= 1"),
    (["compare", "--target-loss", "-1"], "argument --target-loss"),
    (["compare", "--dataset", "imagenet"], "argument --dataset: invalid choice"),
    (["compare", "--dtype", "float16"], "argument --dtype: invalid choice"),
    (["train", "--optimizer", "adam"], "argument --optimizer: invalid choice"),
    (["reproduce", "svhn"], "invalid choice"),
    ([], "required"),
    # No prefix matching: a prefix is an unknown option, not a guess at a longer one.
    (["compare", "--data-d", "x"], "unrecognized arguments: --data-d"),
    (["compare", "--max-ep", "3"], "unrecognized arguments: --max-ep"),
    (["compare", "--targ", "0.1"], "unrecognized arguments: --targ"),
    (["--vers", "compare"], "unrecognized arguments: --vers"),
    (["compare", "--update", "lion"], "argument --update: expected update rules among"),
    (["compare", "--update", "sgd,sgd"], "argument --update"),
    (["compare", "--optimizers", "gd,adam"], "argument --optimizers: expected schedules"),
    (["compare", "--betas", "0.9"], "argument --betas: expected two numbers in [0, 1)"),
    (["compare", "--momentum", "1.5"], "argument --momentum: expected a number in [0, 1)"),
    (["compare", "--format", "gif"], "argument --format: expected figure formats among"),
    (["compare", "--quiet", "--progress"], "not allowed with argument"),
    (["compare", "--lr", "0.04:0.005:sqrt2"], "argument --lr: expected a learning rate"),
    (["compare", "--lr", "0.005:0.04:1"], "argument --lr"),
    (["compare", "--lr", "0.01,0.005:0.04:sqrt2"], "argument --lr"),     # 0.01 twice
    (["compare", "--min-reach", "1.5"], "argument --min-reach: expected a number in (0, 1]"),
    (["compare", "--patience", "0"],
     "argument --patience: expected an integer >= 1 or 'none'"),
    (["compare", "--report-lrs", "some"], "argument --report-lrs: invalid choice"),
])
def test_bad_arguments_in_process(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: poswise" in err and message in err


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "0.1,0.2"], "--lr takes one learning rate for 'train'"),
    (["train", "--update", "sgd,adam"], "--update takes one rule for 'train'"),
    (["compare", "--update", "sgd", "--betas", "0.8,0.9"],
     "betas apply to none of the rules sgd"),
    (["compare", "--dataset", "cat", "--data", "x.npz"], "either --dataset or --data"),
    (["compare", "--name", "mine"], "--name names the data of --data FILE"),
    (["train", "--name", "mine"], "--name names the data of --data FILE"),
    (["compare", "--seeds", "0,1", "--select-seeds", "1,2"], "must not overlap 'seeds'"),
    (["compare", "--report-lrs", "best"], "report_lrs='best' needs select_seeds"),
    (["train", "--dataset", "cat", "--data", "x.npz"], "either --dataset or --data"),
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
    assert "path=" not in err and "download=True" not in err   # no Python advice
    assert not (tmp_path / "o" / "results.json").exists()
    assert main(["reproduce", "cifar10", "--data-dir", str(empty), "--quiet"]) == 1
    assert "CIFAR-10 files not found" in capsys.readouterr().err
    proc = run_cli("train", "--dataset", "mnist", "--data-dir", str(empty), cwd=tmp_path)
    assert proc.returncode == 1 and "MNIST" in proc.stderr
    assert "--download" in proc.stderr and "download=True" not in proc.stderr
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
    code = main(["compare", "--dataset", "cat", "--data-dir", str(data_home), "--lr",
                 "0.01",
                 "--target-loss", "0.1", "--max-epochs", "5000", "--seeds", "2", "--out",
                 str(out), "--quiet"])
    assert code == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows[(0.01, "GD", "SGD")][3] == "2/2" and rows[(0.01, "PWO", "SGD")][3] == "2/2"
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


# --------------------------------------------------------------------------- results

def test_results_json_thins_long_curves(tmp_path):
    from poswise.experiments import MAX_CURVE_POINTS, for_json as _for_json
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
    xs, ys = fig.axes[0].get_lines()[0].get_data()
    assert xs[0] == 0 and xs[-1] == n - 1          # epochs, not indices of kept entries
    np.testing.assert_allclose(np.interp(kept, xs, ys), np.asarray(loss)[kept], rtol=1e-6)


def test_am_softmax_drops_the_presets_target(tmp_path, capsys):
    out = tmp_path / "am"
    assert main(["compare", "--loss", "am_softmax", "--lr", "0.01", "--seeds", "1",
                 "--max-epochs", "5", "--quiet", "--out", str(out)]) == 0
    s = json.loads((out / "results.json").read_text())["settings"]
    assert s["loss"] == "am_softmax" and s["target_loss"] is None
    assert s["sizes"][-1] == 2
    assert "No target loss" in capsys.readouterr().out




# --------------------------------------------------------------------------- new options

def test_epochs_is_an_alias_of_max_epochs(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", "--epochs", "7", "--target-loss", "none", "--seeds", "1",
                 "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["max_epochs"] == 7
    assert all(r["epochs"] == 7 for r in res["runs"])


def test_own_data_file_with_a_name(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 6))
    y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64)
    path = tmp_path / "mine.npz"
    np.savez(path, X_train=X[:60], y_train=y[:60], X_test=X[60:], y_test=y[60:])
    out = tmp_path / "o"
    assert main(["compare", "--data", str(path), "--name", "my-data", "--hidden", "5",
                 "--lr", "0.1", "--epochs", "20", "--seeds", "1", "--quiet", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "Dataset my-data (60 train / 30 validation samples, 6 features)" in text
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["dataset"] == "my-data" and res["settings"]["sizes"] == [6, 5, 1]
    assert res["settings"]["dataset_key"] == "file"


def test_dataset_choices_are_the_registry(capsys):
    from poswise.datasets import DATASETS
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "nope"])
    err = capsys.readouterr().err
    assert "fashion_mnist" in DATASETS
    for name in DATASETS:
        assert name in err


@pytest.mark.skipif(not trainers_take_update(), reason="trainers without update rules")
def test_compare_schedules_times_rules(tmp_path, capsys):
    out = tmp_path / "rules"
    assert main(["compare", "--update", "sgd,momentum,adam", "--lr", "0.05,0.1",
                 "--momentum", "0.8", "--betas", "0.85,0.99", "--epochs", "30", "--seeds",
                 "2", "--quiet", "--out", str(out)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert set(rows) == {(lr, o, u) for lr in (0.05, 0.1) for o in ("GD", "PWO")
                         for u in ("SGD", "momentum", "Adam")}
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2 * 2 * 2 * 3
    params = {r["update"]: r["update_params"] for r in res["runs"]}
    assert params["momentum"]["momentum"] == 0.8
    assert params["adam"]["betas"] == [0.85, 0.99]
    assert len(res["summary"]["by_lr"]) == 2 * 2 * 3


def test_output_folder_problems_are_found_before_training(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    t0 = time.perf_counter()
    assert main(["compare", "--out", str(afile), "--epochs", "100000", "--target-loss",
                 "none"]) == 1
    err = capsys.readouterr().err
    assert "--out" in err and "afile" in err and "Comparing" not in err
    out = tmp_path / "o"
    (out / "results.json").mkdir(parents=True)
    assert main(["compare", "--out", str(out), "--epochs", "100000", "--target-loss",
                 "none"]) == 1
    err = capsys.readouterr().err
    assert "results.json" in err and "is a folder" in err and "Comparing" not in err
    assert time.perf_counter() - t0 < 30          # nothing was trained
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_write_text_cleans_up_its_temporaries(tmp_path, monkeypatch):
    from poswise.cli import _common
    target = tmp_path / "results.json"
    # A temporary left by a killed writer (a process that no longer exists).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".results.json.{dead}-0123456789ab.tmp"
    stale.write_text("half")
    _common.write_text(target, "one")
    assert target.read_text() == "one" and not stale.exists()

    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(_common.os, "replace", fail)
    with pytest.raises(OSError):
        _common.write_text(target, "two")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_broken_pipe_is_quiet_and_results_are_written(tmp_path):
    """``poswise compare | head -0``: the reader is gone before the table is printed."""
    proc = subprocess.Popen([sys.executable, "-m", "poswise", "compare", "--seeds", "1",
                             "--epochs", "200"], cwd=tmp_path, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 0, err
    assert_no_traceback(err)
    assert "BrokenPipe" not in err and "Exception ignored" not in err
    out = tmp_path / "poswise-out"
    assert json.loads((out / "results.json").read_text())["runs"]
    check_png(out / "comparison.png")


def test_compare_sigterm_keeps_finished_runs_and_exits_143(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "poswise", "compare", "--seeds", "50", "--epochs", "3000",
         "--target-loss", "none", "--hidden", "8"], cwd=tmp_path, env=child_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            line = proc.stderr.readline()
            assert line, "compare ended before its first run"
            if line.startswith("[2/"):
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert_no_traceback(err)
    res = json.loads((tmp_path / "poswise-out" / "results.json").read_text())
    assert res["interrupted"] is True and 2 <= len(res["runs"]) < 100
    assert "INTERRUPTED" in out


def test_readme_commands_parse():
    """Every ``poswise`` command of the README's command-line section uses options that
    exist (running them is the job of the examples' own tests above)."""
    import shlex
    from poswise.cli import build_parser
    readme = Path(SRC).parent / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not beside the package (installed package)")
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## The command line"):]
    block = section[section.index("```bash") + 7:]
    block = block[:block.index("```")].replace("\\\n", " ")
    commands = [line.split("#")[0] for line in block.splitlines()
                if line.startswith("poswise ")]
    assert len(commands) >= 5
    parser = build_parser()
    for cmd in commands:
        args = parser.parse_args(shlex.split(cmd)[1:])
        assert args.command in ("compare", "train", "reproduce")
    assert "../shared" not in text and "/work/" not in text


def test_lr_grid_and_selection_seeds(tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(["compare", "--lr", "0.05:0.2:sqrt2", "--seeds", "2", "--select-seeds",
                 "2", "--report-lrs", "best", "--optimizers", "gd,layerwise,pwo",
                 "--hidden", "8,4", "--out", str(out), *FAST])
    assert code == 0
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    s = res["settings"]
    assert s["lr"] == [0.05, 0.0707107, 0.1, 0.141421, 0.2]
    assert s["seeds"] == [0, 1] and s["select_seeds"] == [2, 3]
    chosen = sorted({c["lr"] for c in res["summary"]["chosen"].values()})
    # The table shows the report seeds, at the chosen rates only.
    assert {k[0] for k in table_rows(text)} == set(chosen)
    assert "chosen on the selection seeds 2, 3" in text and "CI" in text
    check_png(out / "reach.png")
    check_png(out / "lr_sweep.png")
