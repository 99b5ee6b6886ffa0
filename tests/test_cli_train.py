"""Tests of ``poswise train``: saving, checkpoints and resume, outputs checked before
training, Ctrl-C and SIGTERM, progress."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from poswise.cli import main

from test_cli import assert_no_traceback, child_env, default_sigint, trainers_take_update

QUIET = ["--quiet"]


def test_train_saves_model_and_history(tmp_path, capsys):
    from poswise.datasets import load
    from poswise.io import load_model
    save = tmp_path / "m" / "model.npz"
    assert main(["train", "--optimizer", "gd", "--epochs", "30", "--target-loss",
                 "none", "--save", str(save), "--seed", "3", *QUIET]) == 0
    out = capsys.readouterr().out
    assert "GD ran its 30 epochs" in out and str(save) in out
    net = load_model(save)
    assert net.sizes == (20, 20, 7, 5, 1)
    hist = json.loads((tmp_path / "m" / "model.history.json").read_text())
    assert hist["optimizer"] == "gd" and hist["epochs"] == 30
    assert hist["stopped_reason"] == "max_epochs" and len(hist["loss"]) == 31
    assert hist["settings"]["seed"] == 3 and hist["model_file"] == "model.npz"
    assert hist["settings"]["update"] == "sgd"
    # The saved network is the trained one: its loss is the history's last entry.
    ds = load("synthetic")
    p = np.clip(net.predict_proba(ds.X_train)[:, 0], 1e-300, 1)
    q = np.clip(1 - net.predict_proba(ds.X_train)[:, 0], 1e-300, 1)
    bce = -np.mean(ds.y_train * np.log(p) + (1 - ds.y_train) * np.log(q))
    assert bce == pytest.approx(hist["loss"][-1], rel=1e-6)
    assert sorted(x.name for x in (tmp_path / "m").iterdir()) == [
        "model.history.json", "model.npz"]          # no temporaries left


def test_train_checkpoint_and_resume_match_a_straight_run(tmp_path, capsys):
    common = ["train", "--optimizer", "pwo", "--target-loss", "none", *QUIET]
    assert main([*common, "--epochs", "40", "--save", str(tmp_path / "full.npz")]) == 0
    assert main([*common, "--epochs", "20", "--save", str(tmp_path / "half.npz"),
                 "--checkpoint-every", "10"]) == 0
    ckpt = tmp_path / "half.ckpt.npz"
    assert ckpt.is_file()
    assert main([*common, "--epochs", "40", "--save", str(tmp_path / "resumed.npz"),
                 "--resume", str(ckpt)]) == 0
    capsys.readouterr()
    full = json.loads((tmp_path / "full.history.json").read_text())
    resumed = json.loads((tmp_path / "resumed.history.json").read_text())
    assert resumed["epochs"] == 40
    np.testing.assert_allclose(resumed["loss"], full["loss"], rtol=1e-12)
    # A checkpoint made with other settings is refused with a message, no traceback.
    code = main([*common, "--lr", "0.3", "--epochs", "40", "--save",
                 str(tmp_path / "x.npz"), "--resume", str(ckpt)])
    assert code == 1
    assert "other trainer settings" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    save = tmp_path / "m.npz"
    ckpt = tmp_path / "m.ckpt.npz"
    assert main(["train", "--epochs", "2000", "--target-loss", "0.3", "--save", str(save),
                 "--checkpoint", str(ckpt), *QUIET]) == 0
    hist = json.loads((tmp_path / "m.history.json").read_text())
    assert hist["stopped_reason"] == "target_reached"
    capsys.readouterr()
    before = save.read_bytes()
    assert main(["train", "--epochs", "2000", "--target-loss", "0.3", "--save", str(save),
                 "--resume", str(ckpt), *QUIET]) == 0
    out = capsys.readouterr().out
    assert "Nothing to do" in out and "already reached the target loss 0.3" in out
    assert f"epoch {hist['epochs_to_target']}" in out
    assert save.read_bytes() == before               # nothing retrained or rewritten
    # Its epoch budget spent: say so too.
    assert main(["train", "--epochs", str(hist["epochs"]), "--target-loss", "none",
                 "--save", str(save), "--resume", str(ckpt), *QUIET]) in (0, 1)
    out = capsys.readouterr()
    assert "already ran" in out.out or "other trainer settings" in out.err


@pytest.mark.parametrize("extra, message, code", [
    (["--checkpoint", "{save}"], "is the same file as --save", 2),
    (["--checkpoint", "{tmp}/m.history.json"], "is the same file as the history file", 2),
    (["--save", "{tmp}"], "is a folder", 1),
    (["--save", "{tmp}/afile/model.npz"], "cannot create the folder", 1),
])
def test_train_outputs_are_checked_before_training(tmp_path, capsys, extra, message, code):
    (tmp_path / "afile").write_text("x")
    save = tmp_path / "m.npz"
    extra = [e.format(save=save, tmp=tmp_path) for e in extra]
    args = ["train", "--epochs", "100000000", "--target-loss", "none", "--save", str(save),
            *extra]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Training" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_train_rules(tmp_path, capsys):
    save = tmp_path / "m.npz"
    if not trainers_take_update():
        # Plain SGD only: asking for another rule is a clear error before training.
        assert main(["train", "--update", "adam", "--save", str(save), *QUIET]) == 2
        assert "adam" in capsys.readouterr().err
        return
    assert main(["train", "--update", "adam", "--betas", "0.8,0.99", "--epochs", "10",
                 "--target-loss", "none", "--save", str(save), *QUIET]) == 0
    hist = json.loads((tmp_path / "m.history.json").read_text())
    assert hist["settings"]["update"] == "adam"
    assert hist["settings"]["update_params"]["betas"] == [0.8, 0.99]


def test_train_heartbeat_off_a_terminal(tmp_path, capsys, monkeypatch):
    import poswise.progress as progress
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.01)
    assert main(["train", "--epochs", "300", "--target-loss", "none", "--save",
                 str(tmp_path / "m.npz")]) == 0
    err = capsys.readouterr().err
    beats = [line for line in err.splitlines() if " epochs/s  ETA " in line]
    assert beats and "\r" not in err
    assert all(line.startswith("PWO  epoch ") for line in beats)
    epochs = [int(line.split()[2].split("/")[0]) for line in beats]
    assert epochs == sorted(epochs) and all(e <= 300 for e in epochs)


def _run_and_signal(tmp_path, sig):
    save = tmp_path / "model.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "poswise", "train", "--epochs", "100000000",
         "--target-loss", "none", "--save", str(save), "--checkpoint-every", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
        preexec_fn=default_sigint)
    try:
        # The line is printed from inside the training loop's interrupt handler.
        first = proc.stderr.readline()
        assert first.startswith("Training PWO"), first
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"),
                                             (signal.SIGTERM, 143, "SIGTERM")])
def test_train_interrupt_saves_and_exits(tmp_path, sig, code, name):
    """SIGINT or SIGTERM to a running ``poswise train``: model, history and checkpoint
    saved at the last completed epoch; exit 130 or 143."""
    from poswise.io import load_model, read_model_file
    returncode, out, err = _run_and_signal(tmp_path, sig)
    assert returncode == code, err
    assert_no_traceback(err)
    assert f"Interrupted ({name})" in err and "was interrupted after epoch" in out
    net = load_model(tmp_path / "model.npz")
    assert net.sizes == (20, 20, 7, 5, 1)
    hist = json.loads((tmp_path / "model.history.json").read_text())
    assert hist["stopped_reason"] == "interrupted"
    assert hist["epochs"] == len(hist["loss"]) - 1 >= 0
    _, meta, _ = read_model_file(tmp_path / "model.ckpt.npz")
    assert meta["checkpoint"]["history"]["epochs"] == hist["epochs"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_in_process_interrupt_restores_the_signal_handlers(tmp_path, capsys):
    import threading
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def stop(epoch, history):
        if epoch == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return False
    import poswise.cli.train as train_mod
    original = train_mod.make_trainer

    def patched(*args, **kwargs):
        tr = original(*args, **kwargs)
        fit = tr.fit

        def fit_with_stop(*a, callbacks=(), **k):
            return fit(*a, callbacks=[*callbacks, stop], **k)
        tr.fit = fit_with_stop
        return tr
    train_mod.make_trainer = patched
    try:
        code = main(["train", "--epochs", "1000", "--target-loss", "none", "--save",
                     str(tmp_path / "m.npz"), *QUIET])
    finally:
        train_mod.make_trainer = original
    assert code == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    hist = json.loads((tmp_path / "m.history.json").read_text())
    assert hist["stopped_reason"] == "interrupted" and hist["epochs"] == 3


def test_train_refuses_a_fifo_as_save_before_training(tmp_path, capsys):
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    assert main(["train", "--epochs", "100000000", "--target-loss", "none", "--save",
                 str(fifo)]) == 1
    err = capsys.readouterr().err
    assert "is not a regular file" in err and "Training" not in err
