"""Family 3 of issue 12: Ctrl-C at every point of fit. A KeyboardInterrupt is raised
before and after the k-th call of every engine method (for every k of a short run), at
every line that fit executes (``sys.settrace``), in progress displays and in checkpoint
writes. After each: either fit returned a History whose lists agree (epochs + 1 entries)
with a network equal to an undisturbed run of ``history.epochs`` epochs, or -- only if
training had not started -- the interrupt propagated with the network untouched and no
file written. A checkpoint left on disk resumes to the undisturbed run's end."""
import json
import os
import sys
import warnings

import pytest

import poswise
import poswise._checkpoint
import poswise.session
from poswise import io as pio
from reliability_helpers import (MODE_IDS, assert_consistent, data, hook_engines,
                                 make_trainer, new_net, params, record_run)

pytestmark = [pytest.mark.filterwarnings("ignore:The checkpoint .* not:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

E = 4            # epochs of the runs interrupted
EVERY = 2        # checkpoint period


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Hundreds of checkpoints are written here; their durability is tested elsewhere."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


class Case:
    """One mode's problem, its undisturbed run, and the checks of an interrupted one."""

    def __init__(self, mode, monkeypatch, tmp_path, validation=True, epochs=E):
        self.mode, self.mp, self.dir, self.E = mode, monkeypatch, tmp_path, epochs
        self.X, self.y = data()
        self.val = (self.X[:7], self.y[:7]) if validation else None
        self.net0 = new_net()
        self.ref, self.ref_hist = record_run(self.trainer(), self.net0, self.X, self.y,
                                             epochs, validation_data=self.val)
        self.n = 0
        self.verified = set()

    def trainer(self):
        return make_trainer(self.mode, self.mp)

    def fit(self, net, path, resume=None):
        return self.trainer().fit(net, self.X, self.y, epochs=self.E, validation_data=self.val,
                                  checkpoint=path, checkpoint_every=EVERY, resume=resume)

    def new_path(self):
        self.n += 1
        return self.dir / f"ck{self.n}.npz"

    def check(self, net, outcome, path, before=None, what=""):
        """``outcome``: the History returned, or the KeyboardInterrupt that escaped."""
        before = self.ref[0] if before is None else before
        if isinstance(outcome, KeyboardInterrupt):
            assert params(net) == before, f"{what}: escaped with the network changed"
            assert net._trainer is None and net.weights[0].flags.writeable, what
            return "propagated"
        hist = outcome
        assert hist.stopped_reason in ("interrupted", "max_epochs"), what
        assert_consistent(hist, validation=self.val is not None)
        k = hist.epochs
        assert params(net) == self.ref[k], f"{what}: network != undisturbed run of {k}"
        assert hist.loss == self.ref_hist.loss[:k + 1], what
        if self.val is not None:
            assert hist.val_loss == self.ref_hist.val_loss[:k + 1], what
        assert net._trainer is None and net.weights[0].flags.writeable, what
        if os.path.exists(path):
            self.check_checkpoint(path, what)
        return k

    def check_checkpoint(self, path, what):
        """The file is a checkpoint of a recorded epoch; resuming it (once per distinct
        training state) ends as the undisturbed run."""
        cnet, meta, arrays = pio.read_model_file(path)
        info = meta["checkpoint"]
        k = info["history"]["epochs"]
        assert params(cnet) == self.ref[k], f"{what}: checkpoint network != epoch {k}"
        assert info["history"]["loss"] == self.ref_hist.loss[:k + 1], what
        key = (k, json.dumps(info["rng"], sort_keys=True),
               tuple(sorted((n, a.tobytes()) for n, a in arrays.items())))
        if key not in self.verified:
            self.check_resume(path, what)
            self.verified.add(key)

    def check_resume(self, path, what):
        net = self.net0.copy()
        hist = self.fit(net, None, resume=path)
        assert hist.stopped_reason == "max_epochs" and hist.epochs == self.E, what
        assert params(net) == self.ref[self.E], f"{what}: resumed run differs"
        assert hist.loss == self.ref_hist.loss, what


def _run(case, net, path, resume=None):
    try:
        return case.fit(net, path, resume=resume)
    except KeyboardInterrupt as exc:
        return exc


def _count_calls(case, monkeypatch):
    counts = {}

    def count(role, name, when):
        if when == "after":
            counts[(role, name)] = counts.get((role, name), 0) + 1
    hook_engines(monkeypatch, count)
    case.fit(case.net0.copy(), case.new_path())
    return counts


@pytest.mark.parametrize("mode", MODE_IDS)
def test_interrupt_at_every_engine_call(monkeypatch, tmp_path, mode):
    case = Case(mode, monkeypatch, tmp_path)
    counts = _count_calls(case, monkeypatch)
    assert counts[("train", "forward")] >= 1 and counts[("val", "accuracy")] == E + 1
    epochs_left = set()
    for (role, name), total in sorted(counts.items()):
        for k in range(1, total + 1):
            for when in ("before", "after"):
                seen = {"n": 0}

                def hook(r, m, w, role=role, name=name, k=k, when=when):
                    if (r, m, w) == (role, name, when):
                        seen["n"] += 1
                        if seen["n"] == k:
                            raise KeyboardInterrupt
                hook_engines(monkeypatch, hook)
                net, path = case.net0.copy(), case.new_path()
                outcome = _run(case, net, path)
                monkeypatch.undo()
                epochs_left.add(case.check(net, outcome, path,
                                           what=f"{role}.{name} call {k} {when}"))
    # (interrupts in the engines' set-up, before training, propagate)
    assert {0, 1, E - 1} <= epochs_left


class _LineInterrupt:
    """Raise KeyboardInterrupt at the k-th line executed in the given source files
    (k = 0: never; the lines executed are listed in ``seen``)."""

    def __init__(self, files, k):
        self.files, self.k, self.seen = files, k, []

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename not in self.files:
            return None
        return self.local

    def local(self, frame, event, arg):
        if event == "line":
            self.seen.append((frame.f_code.co_filename, frame.f_lineno))
            if len(self.seen) == self.k:
                raise KeyboardInterrupt
        return self.local


SOURCES = {poswise.session.__file__, poswise._checkpoint.__file__}


def _traced(fn, k):
    tracer = _LineInterrupt(SOURCES, k)
    sys.settrace(tracer)
    try:
        return fn(), tracer.seen
    except KeyboardInterrupt as exc:
        return exc, tracer.seen
    finally:
        sys.settrace(None)


def _points(seen, repeats=2):
    """The line events to interrupt at: each line's first ``repeats`` executions (so
    loop bodies are cut in their first and in a later epoch)."""
    count, ks = {}, []
    for k, where in enumerate(seen, 1):
        count[where] = count.get(where, 0) + 1
        if count[where] <= repeats:
            ks.append(k)
    return ks


@pytest.mark.parametrize("mode, resume", [
    ("GD-dual", False), ("PWO-direct", False), ("PWO-mini-primal", False),
    ("GD-dual", True), pytest.param("PWO-mini-primal", True, marks=pytest.mark.slow)])
def test_interrupt_at_every_line(monkeypatch, tmp_path, mode, resume):
    """Every line of session.py and _checkpoint.py that a short fit (or a resumed one)
    executes, interrupted in turn (the modes cover the dual and direct first layers and
    mini-batch shuffling; the lines are otherwise shared)."""
    case = Case(mode, monkeypatch, tmp_path, epochs=3)
    start, before = None, None
    if resume:                       # a checkpoint of epoch 1, resumed to 3
        start = case.new_path()
        case.trainer().fit(case.net0.copy(), case.X, case.y, epochs=1,
                           validation_data=case.val, checkpoint=start)
        before = case.ref[0]
    seen = _traced(lambda: _run(case, case.net0.copy(), case.new_path(), start), 0)[1]
    ks = _points(seen)
    assert len(set(seen)) > 100 and len(ks) < len(seen)
    outcomes = set()
    for k in ks:
        net, path = case.net0.copy(), case.new_path()
        outcome, _ = _traced(lambda: _run(case, net, path, start), k)
        if isinstance(outcome, KeyboardInterrupt):
            assert not os.path.exists(path), f"line {seen[k - 1]}: escaped after writing"
        outcomes.add(case.check(net, outcome, path, before=before,
                                what=f"line {seen[k - 1]}"))
    assert "propagated" in outcomes and case.E in outcomes
    if resume:
        assert 1 in outcomes


@pytest.mark.parametrize("where", ["update", "close"])
def test_interrupt_in_progress_display(tmp_path, monkeypatch, where):
    case = Case("PWO-primal", monkeypatch, tmp_path)
    for k in range(1, E + 2):
        calls = {"n": 0}

        class Bar:
            def update(self, epoch, loss, force=False):
                if where == "update":
                    calls["n"] += 1
                    if calls["n"] == k:
                        raise KeyboardInterrupt

            def close(self):
                if where == "close":
                    raise KeyboardInterrupt

        net, path = case.net0.copy(), case.new_path()
        hist = case.trainer().fit(net, case.X, case.y, epochs=E, validation_data=case.val,
                                  checkpoint=path, checkpoint_every=EVERY, progress=Bar())
        case.check(net, hist, path, what=f"progress {where} {k}")
        assert hist.stopped_reason == "interrupted"


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError, ValueError, TypeError])
def test_failing_checkpoint_writes_never_lose_the_history(tmp_path, monkeypatch, error):
    """The k-th write fails (1: the periodic write of epoch 2, 2: the final one): fit
    returns the History (warning for a failed write; an interrupted periodic write is an
    interrupt of the loop); the file on disk is a complete checkpoint, resumable."""
    case = Case("GD-primal", monkeypatch, tmp_path)
    real = pio.save_model
    for k in (1, 2):
        calls = {"n": 0}

        def save(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise error("the disk said no")
            return real(*args, **kwargs)
        monkeypatch.setattr(pio, "save_model", save)
        net, path = case.net0.copy(), case.new_path()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            hist = case.fit(net, path)
        monkeypatch.setattr(pio, "save_model", real)
        warned = [str(w.message) for w in rec if "checkpoint" in str(w.message)]
        assert len(warned) == (0 if (error, k) == (KeyboardInterrupt, 1) else 1), warned
        assert case.check(net, hist, path, what=f"write {k}") == (
            EVERY if (error, k) == (KeyboardInterrupt, 1) else E)
        assert hist.stopped_reason == ("interrupted" if error is KeyboardInterrupt
                                       else "max_epochs")
        assert os.path.exists(path) and calls["n"] == 2


def test_interrupt_before_epoch_zero_returns_epoch_zero(monkeypatch, tmp_path):
    """The issue's example: Ctrl-C during the initial forward pass gives a History of
    epoch 0 (not an empty one) and a resumable checkpoint."""
    case = Case("GD-primal", monkeypatch, tmp_path)
    n = {"k": 0}

    def hook(role, name, when):
        if (role, name, when) == ("train", "forward", "after") and n["k"] == 0:
            n["k"] = 1
            raise KeyboardInterrupt
    hook_engines(monkeypatch, hook)
    net, path = case.net0.copy(), case.new_path()
    hist = case.fit(net, path)
    monkeypatch.undo()
    assert hist.stopped_reason == "interrupted" and hist.epochs == 0
    assert len(hist.loss) == len(hist.val_loss) == 1
    assert case.check(net, hist, path) == 0 and os.path.exists(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case.check_resume(path, "resume from epoch 0")
